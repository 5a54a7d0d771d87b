"""Reading a large corpus: a measurement reads a uniform sample of rows, from the Parquet row
groups that hold them only; a corpus at or under the budget is read whole, as before."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import FakeBackend, fake_embed
from generator import files
from generator.files import count_documents, read_documents, read_rows, read_sample, shard_paths
from generator.recipe import load_recipe
from generator.records import GRID_COLUMNS
from generator.run import controller
from generator.run.rounds import read_corpus

NUM_DOCS, SHARD_ROWS, GROUP_ROWS = 300, 100, 10
COLUMNS = ["text", "sample_index", *GRID_COLUMNS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """A run of 300 documents in shards of at most 100 rows, in row groups of 10."""
    tmp = tmp_path_factory.mktemp("scale")
    body = SMALL_RECIPE.replace("size: {num_docs: 20, shard_rows: 8}",
                                f"size: {{num_docs: {NUM_DOCS}, shard_rows: {SHARD_ROWS}}}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "ROW_GROUP_ROWS", GROUP_ROWS)
        controller.run(load_recipe(write_recipe(tmp, body)), tmp / "run", FakeBackend())
    return tmp / "run"


def groups_holding(corpus, positions) -> list[list[int]]:
    """Per shard holding any of the rows at `positions`, the row groups that hold them."""
    wanted, start = [], 0
    for shard in shard_paths(corpus):
        rows = pq.ParquetFile(shard).metadata.num_rows
        groups = sorted({(p - start) // GROUP_ROWS for p in positions if start <= p < start + rows})
        wanted += [groups] if groups else []
        start += rows
    return wanted


def test_the_corpus_has_several_shards_of_several_row_groups(corpus):
    shards = [pq.ParquetFile(p) for p in shard_paths(corpus)]
    assert len(shards) > 1 and max(s.num_row_groups for s in shards) > 1
    assert all(s.num_row_groups == -(-s.metadata.num_rows // GROUP_ROWS) for s in shards)


def test_a_sample_holds_exactly_n_distinct_rows_below_the_mark_in_index_order(corpus):
    table = read_sample(corpus, 40, np.random.default_rng(1), columns=COLUMNS, below=250)
    index = table.column("sample_index").to_pylist()
    assert len(index) == 40 == len(set(index))
    assert all(i < 250 for i in index) and index == sorted(index)
    assert table.column_names == COLUMNS


def test_sampled_rows_are_the_rows_read_documents_holds(corpus):
    table = read_sample(corpus, 40, np.random.default_rng(2), columns=COLUMNS)
    whole = {row["sample_index"]: row for row in read_documents(corpus, columns=COLUMNS).to_pylist()}
    assert all(row == whole[row["sample_index"]] for row in table.to_pylist())


def test_the_same_seed_draws_the_same_rows_and_another_seed_others(corpus):
    def draw(seed):
        return read_sample(corpus, 40, np.random.default_rng(seed), columns=["sample_index"], below=250) \
            .column("sample_index").to_pylist()

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_every_row_below_the_mark_can_be_drawn(corpus):
    """Uniform over the rows below the mark: 200 draws of 40 from 250 rows miss a given row
    with probability (1 - 40/250)^200 < 1e-15, so every row turns up (fixed seed)."""
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(200):
        table = read_sample(corpus, 40, rng, columns=["sample_index"], below=250)
        seen.update(table.column("sample_index").to_pylist())
    assert seen == set(range(250))


def test_only_the_row_groups_holding_drawn_rows_are_read(corpus, monkeypatch):
    reads = []
    original = pq.ParquetFile.read_row_groups

    def spy(self, row_groups, *args, **kwargs):
        reads.append(list(row_groups))
        return original(self, row_groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    positions = np.array([3, 4, 57, 150, 151, 299])
    table = read_rows(corpus, positions, columns=["sample_index"])
    assert table.column("sample_index").to_pylist() == read_documents(corpus).column("sample_index").take(
        positions).to_pylist()
    assert reads == groups_holding(corpus, positions)
    assert reads[0] == [0, 5]  # rows 3 and 4 share group 0 of the first shard (100 rows); row 57 is in group 5


def test_a_sample_reads_fewer_row_groups_than_the_corpus_holds(corpus, monkeypatch):
    read = []
    original = pq.ParquetFile.read_row_groups

    def spy(self, row_groups, *args, **kwargs):
        read.extend(row_groups)
        return original(self, row_groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    table = read_sample(corpus, 5, np.random.default_rng(6), columns=["sample_index"])
    row_of = {i: row for row, i in enumerate(read_documents(corpus).column("sample_index").to_pylist())}
    wanted = groups_holding(corpus, [row_of[i] for i in table.column("sample_index").to_pylist()])
    assert len(read) == sum(map(len, wanted)) <= 5 < NUM_DOCS // GROUP_ROWS


@pytest.mark.parametrize("below", [None, 250, 100, 37])
def test_a_corpus_within_the_budget_is_read_whole_as_before(corpus, below):
    want = read_documents(corpus, columns=COLUMNS, below=below)
    assert read_sample(corpus, NUM_DOCS, np.random.default_rng(0), columns=COLUMNS, below=below).equals(want)
    assert read_corpus(corpus, below, rng=np.random.default_rng(0)) == read_corpus(corpus, below)


@pytest.mark.parametrize("below", [None, 0, 1, 100, 137, 300, 10_000])
def test_count_documents_agrees_with_the_documents(corpus, below, tmp_path):
    want = read_documents(corpus, columns=["id"], below=below).num_rows
    assert count_documents(corpus, below) == want
    for shard in shard_paths(corpus):  # a folder without manifest (a pilot round) counts from its shards
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / shard.name).write_bytes(shard.read_bytes())
    assert count_documents(tmp_path, below) == want


def test_read_corpus_reads_at_most_max_rows(corpus):
    texts, metadata = read_corpus(corpus, 250, rng=np.random.default_rng(7), max_rows=60)
    assert len(texts) == 60 and all(len(metadata[c]) == 60 for c in GRID_COLUMNS)
    whole = read_documents(corpus, columns=["text"], below=250).column("text").to_pylist()
    assert set(texts) <= set(whole)


def test_score_run_above_the_budget_scores_a_sample_and_names_corpus_rows(corpus, monkeypatch):
    from generator.judges.embedding import EmbeddingJudge
    from generator.measure import report

    monkeypatch.setattr(report, "MEASURE_ROWS", 120)
    result = report.score_run(corpus, judge=EmbeddingJudge(embed=fake_embed), k=5, seed=0, num_batches=20,
                              proxies=False)
    assert result["num_docs"] == NUM_DOCS and result["sampled_docs"] == 120
    sampled = np.random.default_rng([0, report.SAMPLE_STREAM]).choice(NUM_DOCS, size=120, replace=False)
    docs = {d for batch in result["batches"] for d in batch["docs"]}
    assert docs and docs <= set(sampled.tolist())  # corpus rows, not positions in the sample


def test_the_card_map_embeds_the_same_texts_read_from_their_row_groups(corpus, monkeypatch):
    from generator.export import card, card_plots

    monkeypatch.setattr(card_plots, "MAX_MAP_DOCS", 50)
    embedded = []

    def embed(texts):
        embedded.append(list(texts))
        return fake_embed(texts)

    card.write_card(corpus, embed=embed, seed=0)
    texts = read_documents(corpus, columns=["text"]).column("text").to_pylist()
    idx = np.sort(np.random.default_rng(0).choice(NUM_DOCS, size=50, replace=False))
    assert embedded[0] == [texts[i] for i in idx]
