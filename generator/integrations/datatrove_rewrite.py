"""A datatrove step that rewrites the documents flowing into it with a recipe's rewrite run.

    pipeline=[JsonlReader("corpus/"), RewriteDocuments("recipes/rewrite.yaml", "work/rewrite"),
              LambdaFilter(...), ParquetWriter("rewrites/")]

Each task writes the documents that reach it to WORK_DIR/{rank:05d}/source.parquet, runs the
recipe with that file as its `source:` (every document rewritten `per_source` times) into the run
folder WORK_DIR/{rank:05d}/run, and yields one Document per rewrite. A task run again resumes its
run folder. Needs the `export` extra (datatrove).
"""
from __future__ import annotations

import json
import logging
import os
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

import generator.integrations.datatrove  # noqa: F401 (names the extra to install when datatrove is missing)
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from generator.errors import UserError

log = logging.getLogger(__name__)

SPOOL_ROWS = 1024  # documents written to the task's source file at once
# recipe keys the step sets itself: the source is the task's documents, every one of them
STEP_KEYS = ("source.path", "source.text_field", "source.id_field", "source.max_sources",
             "source.budget_tokens", "size.num_docs")


def task_seed(seed: int, rank: int) -> int:
    """The seed task `rank` runs the recipe with: a function of the recipe's seed and the rank,
    under 2**32 (near-duplicate removal seeds numpy's legacy generator with it)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def task_overrides(recipe: str | Path, overrides: Sequence[str], source: Path, rank: int) -> list[str]:
    """The overrides task `rank` loads the recipe with: the caller's, then `source:` replaced by
    the task's file (columns `id` and `text`, every document), the task's seed, and the file's
    folder added to the recipe's roots."""
    from generator.recipe import read_recipe

    given = {pair.split("=", 1)[0].strip(): pair for pair in overrides}
    if taken := sorted(set(given) & set(STEP_KEYS)):
        raise UserError(f"RewriteDocuments: the override {given[taken[0]]!r} sets a key the step sets "
                        "(the source is the documents that reach each task)",
                        fix=f"drop {', '.join(taken)} from the overrides")
    base = read_recipe(recipe, list(overrides))
    kept = [pair for key, pair in given.items() if key not in ("seed", "roots")]
    roots = [*base.roots, str(source.parent)]
    return [*kept, f"source.path={json.dumps(str(source))}", "source.text_field=text",
            "source.id_field=id", "source.max_sources=0", "source.budget_tokens=0", "size.num_docs=0",
            f"seed={task_seed(base.seed, rank)}", f"roots={json.dumps(roots)}"]


def spool_documents(data: Iterable[Document], path: Path) -> tuple[int, int]:
    """Write the id and text of each document with text to the Parquet file `path`, SPOOL_ROWS at
    a time (into a temporary file renamed at the end); (documents written, documents without text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    tmp = path.with_name(f".{path.name}.tmp")
    written = empty = 0
    documents = iter(data)
    with pq.ParquetWriter(tmp, schema) as writer:
        while batch := list(islice(documents, SPOOL_ROWS)):
            kept = [d for d in batch if d.text and d.text.strip()]
            if kept:
                writer.write_table(pa.table({"id": [str(d.id) for d in kept], "text": [d.text for d in kept]},
                                            schema=schema))
            written, empty = written + len(kept), empty + len(batch) - len(kept)
    os.replace(tmp, path)
    return written, empty


def check_run_folder(run_dir: Path, plan, task_dir: Path) -> bool:
    """Whether the task resumes `run_dir` (True) or starts it (False); UserError when it holds a
    run of other documents or another recipe."""
    from generator.run.resume import holds_anything, same_recipe

    if not holds_anything(run_dir):
        return False
    if not same_recipe(run_dir, plan):
        raise UserError(f"{run_dir}: holds a rewrite run of other documents or another recipe",
                        fix=f"delete {task_dir} to start this task over, or give the step a new work_dir")
    return True


def rewrite_documents(run_dir: Path) -> Iterator[Document]:
    """The run's rows as datatrove Documents, shard by shard: id `source_id/chunk/rewrite`, the
    row's text, and every other column but the prompt in the metadata (grid_values as one key per
    axis, the row's own id as `sample_id`)."""
    import pyarrow.parquet as pq

    from generator.files import shard_paths

    for path in shard_paths(run_dir):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=SPOOL_ROWS):
            for row in batch.to_pylist():
                yield rewrite_document(row)


def rewrite_document(row: dict) -> Document:
    text, sample_id = row.pop("text"), row.pop("id")
    del row["prompt"]  # the source's text again: the run folder keeps it
    axes = {axis: value for axis, value in json.loads(row.pop("grid_values")).items()
            if not axis.startswith("seed_doc")}  # the source's text and id are the source_id already
    metadata = {**axes, **row, "sample_id": sample_id}
    return Document(text=text, id=f"{row['source_id']}/{row['chunk']}/{row['rewrite']}", metadata=metadata)


class RewriteDocuments(PipelineStep):
    """Rewrite every document that reaches the step `per_source` times with the recipe's rewrite
    templates, yielding one Document per rewrite (see `rewrite_document`). The recipe's own
    `source:` is replaced by the task's documents (`doc.text`, `doc.id`: ids should be unique);
    its seed is mixed with the task's rank. `work_dir`: a local or shared folder that keeps each
    task's source file and run folder (a task run again resumes it). `overrides`: recipe
    `KEY=VALUE`s (e.g. `source.per_source=2`). `backend`: any object of the generation protocol
    (default: the recipe's engine, opened in each task). `judge`: scores each task's rewrites at
    the recipe's `scoring:` (default: its judge, opened in each task)."""

    name = "✍️ rewrite with a recipe"
    type = "🧪 - GENERATOR"

    def __init__(self, recipe: str | Path, work_dir: str | Path, overrides: Sequence[str] = (), *,
                 backend=None, judge=None):
        super().__init__()
        self.recipe, self.work_dir, self.overrides = str(recipe), Path(work_dir), tuple(overrides)
        self.backend, self.judge = backend, judge

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from generator.api import load_recipe

        task_dir = self.work_dir / f"{rank:05d}"
        task_dir.mkdir(parents=True, exist_ok=True)
        source = task_dir / "source.parquet"
        written, empty = spool_documents(data or (), source)
        self.stat_update("documents_in", value=written + empty)
        self.stat_update("without_text", value=empty)
        if written == 0:
            log.warning("task %d received no document with text: nothing to rewrite", rank)
            return
        with self.track_time(unit="task"):
            plan = load_recipe(self.recipe, task_overrides(self.recipe, self.overrides, source, rank))
            self.rewrite(plan, task_dir / "run", task_dir)
        for document in rewrite_documents(task_dir / "run"):
            self.stat_update("rewrites_out")
            self.update_doc_stats(document)
            yield document

    def rewrite(self, plan, run_dir: Path, task_dir: Path) -> None:
        """Run (or resume) the task's rewrite run, then record its failures and diversity."""
        from generator.api import run

        resume = check_run_folder(run_dir, plan, task_dir)
        result = run(plan, run_dir, backend=self.backend, resume=resume, score=False, card=False)
        if result.stopped:
            raise UserError(f"the rewrite run in {run_dir} stopped: {result.stopped}",
                            fix=f"see {run_dir}/failures.jsonl, fix the cause and run the executor again "
                                "(the task resumes)")
        sources = json.loads((run_dir / "summary.json").read_text())["sources"]
        self.stat_update("failed", value=result.num_failed)
        self.stat_update("short_units", value=sources["short"])
        if plan.recipe.scoring.enabled:
            self.score(plan, run_dir, result.num_docs)

    def score(self, plan, run_dir: Path, num_docs: int) -> None:
        from generator.api import score
        from generator.results import Ruler

        s = plan.recipe.scoring
        if num_docs < s.k:
            log.warning("%s holds %d rewrites, fewer than K=%d: not scored", run_dir, num_docs, s.k)
            return
        ruler = Ruler(judge=s.judge, k=s.k, seed=plan.recipe.seed, num_batches=s.num_batches,
                      settings=plan.recipe.judge)
        report = score(run_dir, ruler=ruler, judge=self.judge, proxies=False)
        self.stat_update("diversity", value=report.score)
