"""The datatrove steps, run for real by LocalPipelineExecutor with two tasks: generation on the fake
backend, scoring with the embedding judge on hashed bag-of-words vectors (tests/fakes.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

pytest.importorskip("datatrove")
from datatrove.data import Document  # noqa: E402
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.filters import LambdaFilter  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter  # noqa: E402

import generator  # noqa: E402
from conftest import ROOT, SMALL_RECIPE, write_recipe  # noqa: E402
from fakes import Crash, FakeBackend, fake_embed  # noqa: E402
from generator.integrations.datatrove import (DiversityMerger, DiversityStats, GenerateDocuments,  # noqa: E402
                                              task_share)
from generator.integrations.datatrove_rewrite import RewriteDocuments, task_seed  # noqa: E402
from generator.judges.embedding import EmbeddingJudge  # noqa: E402


def read_jsonl(folder):
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl*")) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("num_docs, world_size", [(20, 2), (7, 3), (2, 4), (0, 2)])
def test_task_shares_cover_every_index_once(num_docs, world_size):
    shares = [task_share(num_docs, rank, world_size) for rank in range(world_size)]
    assert [i for share in shares for i in share] == list(range(num_docs))


def test_two_tasks_generate_the_recipes_documents_as_one_run_would(tmp_path):
    recipe = write_recipe(tmp_path, SMALL_RECIPE)
    overrides = ["size.num_docs=21", "dedup.exact=false", "dedup.near=false"]  # the fake answers repeat words
    LocalPipelineExecutor([GenerateDocuments(recipe, overrides, backend=FakeBackend(), batch_size=4),
                           JsonlWriter(str(tmp_path / "docs"), compression=None)],
                          tasks=2, workers=1, logging_dir=str(tmp_path / "logs")).run()
    docs = read_jsonl(tmp_path / "docs")
    assert len(docs) == 21 and len(list((tmp_path / "docs").glob("*.jsonl"))) == 2  # one file per task
    assert sorted(d["metadata"]["sample_index"] for d in docs) == list(range(21))
    run = generator.run(generator.load_recipe(recipe, overrides), tmp_path / "run", backend=FakeBackend(), card=False)
    import pyarrow.parquet as pq
    rows = pq.read_table(tmp_path / "run" / "data").to_pylist()
    assert run.num_docs == 21
    by_index = {d["metadata"]["sample_index"]: d for d in docs}
    for row in rows:  # the same document, id and columns as the run's row
        doc = by_index[row["sample_index"]]
        assert (doc["id"], doc["text"]) == (row["id"], row["text"])
        assert {k: doc["metadata"][k] for k in ("template", "topic", "seed", "recipe_hash")} == \
               {k: row[k] for k in ("template", "topic", "seed", "recipe_hash")}


def test_generation_refuses_a_steered_recipe(tmp_path):
    recipe = write_recipe(tmp_path, SMALL_RECIPE + "target: {score: 3}\n")
    with pytest.raises(generator.UserError, match="does not steer"):
        list(GenerateDocuments(recipe, ["size.num_docs=200"], backend=FakeBackend()).run(None))


def test_scoring_passes_documents_through_and_writes_task_and_merged_reports(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"id": str(i), "text": f"topic {i % 6} " + " ".join(["word"] * (i % 4))} for i in range(60)]
    for part in range(2):
        (corpus / f"part{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[part::2]))
    ruler = generator.Ruler(k=5, num_batches=30, seed=1)
    judge = EmbeddingJudge(0.5, embed=lambda texts: fake_embed(list(texts)))
    stats = tmp_path / "diversity"
    first = LocalPipelineExecutor([JsonlReader(str(corpus)), DiversityStats(str(stats), ruler=ruler, judge=judge),
                                   LambdaFilter(lambda doc: doc.text.startswith("topic 1")),
                                   JsonlWriter(str(tmp_path / "kept"), compression=None)],
                                  tasks=2, workers=1, logging_dir=str(tmp_path / "logs1"))
    LocalPipelineExecutor([DiversityMerger(str(stats), ruler=ruler, judge=judge)], tasks=1, workers=1,
                          logging_dir=str(tmp_path / "logs2"), depends=first).run()
    kept = read_jsonl(tmp_path / "kept")
    assert sorted(d["id"] for d in kept) == sorted(r["id"] for r in rows if r["text"].startswith("topic 1"))
    assert {d["text"] for d in kept} == {r["text"] for r in rows if r["text"].startswith("topic 1")}  # unchanged
    tasks = [json.loads((stats / f"{rank:05d}.json").read_text()) for rank in range(2)]
    assert [t["num_docs_seen"] for t in tasks] == [30, 30] and all(t["k"] == 5 for t in tasks)
    merged = json.loads((stats / "diversity.json").read_text())
    assert merged["num_docs"] == merged["num_docs_seen"] == 60 and merged["tasks"] == 2
    in_task_order = [r["text"] for r in rows[0::2] + rows[1::2]]  # task 0 read part0, task 1 part1
    direct = generator.score(in_task_order, ruler=ruler, judge=judge, proxies=False)
    assert 1 / 5 <= merged["score"] < 5 and merged["score"] == pytest.approx(direct.score)


def test_a_missing_datatrove_names_the_extra_to_install():
    code = ("import sys; sys.modules['datatrove'] = None\n"
            "try:\n    import generator.integrations.datatrove\nexcept ImportError as e:\n    print(e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "pip install 'generator[export]'" in done.stdout, done.stderr


def test_the_merged_sample_weights_each_task_by_the_documents_it_saw(tmp_path):
    """Task 0 saw 30 documents and task 1 saw 10, each keeping 5: the merge takes every task at the
    smaller rate (1/6), so 5 of task 0 and 2 of task 1, not 5 and 5."""
    from datatrove.data import Document

    from generator.integrations.datatrove import merge_diversity

    ruler = generator.Ruler(k=5, num_batches=10)
    judge = EmbeddingJudge(0.5, embed=lambda texts: fake_embed(list(texts)))
    for rank, count in enumerate((30, 10)):
        step = DiversityStats(str(tmp_path), ruler=ruler, judge=judge, max_docs=5)
        docs = [Document(text=f"task {rank} doc {i}", id=str(i)) for i in range(count)]
        assert [d.id for d in step.run(iter(docs), rank, 2)] == [d.id for d in docs]
    report = merge_diversity(str(tmp_path), ruler=ruler, judge=judge)
    merged = json.loads((tmp_path / "diversity.json").read_text())
    assert report.num_docs == merged["num_docs"] == 7 and merged["num_docs_seen"] == 40


# RewriteDocuments: every document reaching a task rewritten per_source times by a rewrite run

REWRITE = ROOT / "recipes" / "rewrite.yaml"
KJV = ROOT / "recipes" / "data" / "kjv" / "seeds.jsonl"
REWRITE_OVERRIDES = ["source.per_source=2", "size.shard_rows=4", "scoring.k=5", "scoring.num_batches=20"]


def kjv_corpus(tmp_path, num_docs: int = 12):
    """The first `num_docs` KJV passages (public domain) in two JSONL files, one per task."""
    rows = [json.loads(line) for line in KJV.read_text().splitlines()[:num_docs]]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for part in range(2):
        (corpus / f"part{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[part::2]))
    return rows


class CrashingFake(FakeBackend):
    """Answers 2 requests a poll and raises Crash on poll `crash_on_poll` (a killed task)."""

    answer = 2

    def __init__(self, crash_on_poll: int):
        super().__init__()
        self.crash_on_poll, self.polls = crash_on_poll, 0

    def poll(self, timeout_s: float):
        self.polls += 1
        if self.polls == self.crash_on_poll:
            raise Crash()
        return super().poll(timeout_s)


def rewrite_executor(tmp_path, backend, logs: str = "logs"):
    judge = EmbeddingJudge(0.5, embed=lambda texts: fake_embed(list(texts)))
    return LocalPipelineExecutor([
        JsonlReader(str(tmp_path / "corpus")),
        RewriteDocuments(REWRITE, tmp_path / "work", REWRITE_OVERRIDES, backend=backend, judge=judge),
        JsonlWriter(str(tmp_path / "all"), compression=None),
        LambdaFilter(lambda doc: doc.metadata["rewrite"] == 0),
        ParquetWriter(str(tmp_path / "first"))], tasks=2, workers=1, logging_dir=str(tmp_path / logs))


def test_two_tasks_rewrite_every_document_exactly_twice_and_a_rerun_gives_the_same_rows(tmp_path):
    rows = kjv_corpus(tmp_path)
    rewrite_executor(tmp_path, FakeBackend()).run()
    docs = read_jsonl(tmp_path / "all")
    assert Counter(d["metadata"]["source_id"] for d in docs) == {r["id"]: 2 for r in rows}
    assert len({d["id"] for d in docs}) == 24
    for d in docs:
        m = d["metadata"]
        assert d["id"] == f"{m['source_id']}/0/{m['rewrite']}" and m["chunk"] == 0
        assert m["template"].startswith("rewrite_") and m["sample_id"] and "prompt" not in m
    assert {(d["metadata"]["source_id"], d["metadata"]["rewrite"]) for d in docs} == \
           {(r["id"], k) for r in rows for k in (0, 1)}
    import pyarrow.parquet as pq
    first = pq.read_table(tmp_path / "first").to_pylist()  # the filter kept rewrite 0 of each
    assert sorted(d["id"] for d in first) == sorted(f"{r['id']}/0/0" for r in rows)
    [step] = [s["stats"] for s in json.loads((tmp_path / "logs" / "stats.json").read_text())
              if s["name"].endswith(RewriteDocuments.name)]
    total = {key: v if isinstance(v, (int, float)) else v["total"] for key, v in step.items()}
    counts = (total["documents_in"], total["rewrites_out"], total["failed"], total["short_units"])
    assert counts == (12, 24, 0, 0)
    assert step["diversity"]["n"] == 2 and 0 < step["diversity"]["min"]  # one score per task
    written = {p.name: p.read_text() for p in (tmp_path / "all").glob("*.jsonl")}
    failing = FakeBackend(fail_every=1)  # any request it gets fails: a rerun must not generate
    rewrite_executor(tmp_path, failing).run()  # both tasks completed: nothing runs
    (tmp_path / "logs" / "completions" / "00001").unlink()
    (tmp_path / "all" / "00001.jsonl").unlink()
    rewrite_executor(tmp_path, failing).run()  # task 1 again: its finished run folder is read back
    assert {p.name: p.read_text() for p in (tmp_path / "all").glob("*.jsonl")} == written


def test_a_killed_task_resumes_its_run_folder_and_writes_the_rows_of_an_uninterrupted_run(tmp_path):
    for folder in ("whole", "cut"):
        (tmp_path / folder).mkdir()
        kjv_corpus(tmp_path / folder)
    rewrite_executor(tmp_path / "whole", FakeBackend()).run()
    with pytest.raises(Crash):
        rewrite_executor(tmp_path / "cut", CrashingFake(crash_on_poll=5)).run()
    assert len(list((tmp_path / "cut" / "work" / "00000" / "run" / "data").glob("shard-*.parquet"))) >= 1
    rewrite_executor(tmp_path / "cut", FakeBackend()).run()
    assert read_jsonl(tmp_path / "cut" / "all") == read_jsonl(tmp_path / "whole" / "all")


def test_the_rank_enters_the_seed_and_the_same_rank_draws_the_same_rewrites(tmp_path):
    docs = [Document(text=r["text"], id=r["id"]) for r in map(json.loads, KJV.read_text().splitlines()[:4])]

    def draws(rank, folder):
        step = RewriteDocuments(REWRITE, tmp_path / folder, ["source.per_source=2", "scoring.enabled=false"],
                                backend=FakeBackend())
        return [(d.id, d.metadata["template"], d.metadata["seed"], d.text)
                for d in step.run(iter(docs), rank, 2)]

    assert draws(0, "a") == draws(0, "b")
    assert draws(0, "a") != draws(1, "a") and {d[0] for d in draws(0, "a")} == {d[0] for d in draws(1, "a")}
    assert task_seed(41, 0) != task_seed(41, 1) and task_seed(41, 1) == task_seed(41, 1) < 2**32


def test_a_task_without_documents_yields_nothing(tmp_path):
    step = RewriteDocuments(REWRITE, tmp_path / "work", backend=FakeBackend())
    assert list(step.run(iter(()), 0, 2)) == [] and step.stats["documents_in"].total == 0


def test_the_step_refuses_an_override_of_the_source_it_sets(tmp_path):
    step = RewriteDocuments(REWRITE, tmp_path / "work", ["source.path=elsewhere.jsonl"],
                            backend=FakeBackend())
    with pytest.raises(generator.UserError, match="source.path=elsewhere.jsonl.*sets a key the step sets"):
        list(step.run(iter([Document(text="In the beginning.", id="a")]), 0, 1))


def test_a_work_dir_of_other_documents_is_refused_with_the_folder_to_delete(tmp_path):
    rows = [json.loads(line) for line in KJV.read_text().splitlines()[:6]]

    def run(rows):
        step = RewriteDocuments(REWRITE, tmp_path / "work", ["scoring.enabled=false"], backend=FakeBackend())
        return list(step.run(iter(Document(text=r["text"], id=r["id"]) for r in rows), 0, 1))

    assert len(run(rows)) == 4 * 6
    with pytest.raises(generator.UserError, match="holds a rewrite run of other documents") as err:
        run(rows[:3])
    assert str(tmp_path / "work" / "00000") in err.value.fix


def test_a_run_that_stops_fails_the_task_with_where_to_look(tmp_path):
    step = RewriteDocuments(REWRITE, tmp_path / "work", ["scoring.enabled=false"],
                            backend=FakeBackend(fail_every=1))
    with pytest.raises(generator.UserError, match="rewrite run in .* stopped") as err:
        list(step.run(iter([Document(text="In the beginning God created the heaven.", id="a")]), 0, 1))
    assert "failures.jsonl" in err.value.fix


def test_the_rewrite_step_survives_the_pickling_slurm_uses(tmp_path):
    import dill

    step = dill.loads(dill.dumps(RewriteDocuments(REWRITE, tmp_path / "work", ["source.per_source=2"])))
    assert (step.recipe, step.work_dir, step.overrides) == \
           (str(REWRITE), tmp_path / "work", ("source.per_source=2",))
