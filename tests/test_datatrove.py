"""The datatrove steps, run for real by LocalPipelineExecutor with two tasks: generation on the fake
backend, scoring with the embedding judge on hashed bag-of-words vectors (tests/fakes.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("datatrove")
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.filters import LambdaFilter  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402

import generator  # noqa: E402
from conftest import ROOT, SMALL_RECIPE, write_recipe  # noqa: E402
from fakes import FakeBackend, fake_embed  # noqa: E402
from generator.integrations.datatrove import (DiversityMerger, DiversityStats, GenerateDocuments,  # noqa: E402
                                              task_share)
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
