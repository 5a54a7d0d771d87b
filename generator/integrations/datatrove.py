"""datatrove pipeline steps: generate a recipe's documents, and score the diversity of a corpus.

    pipeline=[GenerateDocuments("recipes/quickstart.yaml"), JsonlWriter("out/")]
    pipeline=[JsonlReader("corpus/"), DiversityStats("stats/diversity"), LambdaFilter(...),
              ParquetWriter(...)]
    then [DiversityMerger("stats/diversity")] in a second executor (depends=the first) for one merged report

Each datatrove task does its share: `GenerateDocuments` generates the contiguous block of sample
indices `rank` owns (the same documents whatever the number of tasks); `DiversityStats` scores the
documents that reach it in that task. Needs the `export` extra (datatrove).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

try:
    from datatrove.data import Document, DocumentsPipeline
    from datatrove.io import DataFolderLike, get_datafolder
    from datatrove.pipeline.base import PipelineStep
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("generator.integrations.datatrove needs datatrove, which is not installed; install the "
                      "export extra: pip install 'generator[export]'") from err

from generator.errors import UserError
from generator.results import DiversityReport, Ruler

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_DOCS = 20_000  # most documents a task keeps for its report and the merged one


def task_share(num_docs: int, rank: int, world_size: int) -> range:
    """The sample indices task `rank` of `world_size` generates: contiguous blocks covering 0..num_docs-1."""
    return range(num_docs * rank // world_size, num_docs * (rank + 1) // world_size)


class GenerateDocuments(PipelineStep):
    """Generate the recipe's documents (no steering, no deduplication: datatrove's own dedup steps
    do that). Documents from earlier steps pass through first. Each document's text and id are the
    generated row's; every other column of a run's row (template, grid values, seed, finish_reason,
    recipe_hash, ...) is in its metadata. A failed or dropped answer yields nothing and counts in
    the step's stats. `backend`: any object of the generation protocol (default: the recipe's
    engine, opened in each task); `batch_size`: requests in flight per task."""

    name = "🧪 generate from a recipe"
    type = "🧪 - GENERATOR"

    def __init__(self, recipe: str | Path, overrides: Sequence[str] = (), *, backend=None,
                 batch_size: int = 256):
        super().__init__()
        self.recipe, self.overrides = str(recipe), tuple(overrides)
        self.backend, self.batch_size = backend, batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from generator.api import load_recipe, open_engine
        from generator.records import generate_all
        from generator.run.parts import with_parts
        from generator.sampling.requests import plan_samples

        if data:
            yield from data
        plan = load_recipe(self.recipe, self.overrides)
        if plan.recipe.target is not None:
            raise UserError(f"{self.recipe}: GenerateDocuments does not steer to a target "
                            "(each task sees only its share)",
                            fix="drop target: from the recipe, or generate with generator.run")
        share = task_share(plan.recipe.size.num_docs, rank, world_size)
        engine = self.backend if self.backend is not None else open_engine(plan, lambda progress: None)
        backend = with_parts(engine, plan.templates, plan.recipe.keep_truncated)
        try:
            for start in range(share.start, share.stop, self.batch_size):
                samples = plan_samples(plan, start, min(self.batch_size, share.stop - start))
                with self.track_time(unit="batch"):
                    results = generate_all(backend, [s.request for s in samples])
                for sample, result in zip(samples, results):
                    document = datatrove_document(plan, sample, result, backend.name)
                    self.stat_update("generated" if document is not None else "failed")
                    if document is not None:
                        self.update_doc_stats(document)
                        yield document
        finally:
            if self.backend is None:
                engine.close()


def datatrove_document(plan, sample, result, backend_name: str) -> Document | None:
    """The datatrove Document a result becomes under the recipe's truncation policy (None: no document)."""
    from generator.run.documents import finish_result, to_document
    outcome = finish_result(result, plan.recipe.keep_truncated)
    if isinstance(outcome, str):
        return None
    text, finish_reason = outcome
    row = dataclasses.asdict(to_document(sample, result, plan=plan, backend=backend_name, round=0,
                                         text=text, finish_reason=finish_reason))
    return Document(text=row.pop("text"), id=row.pop("id"), metadata=row)


class DiversityStats(PipelineStep):
    """Score the diversity of the documents passing through, which go on unchanged. Each task keeps
    a uniform sample of its documents (at most `max_docs`, seeded by the ruler's seed and the rank),
    writes it to `output_folder/samples/{rank:05d}.jsonl` and its report to
    `output_folder/{rank:05d}.json` (the DiversityReport's JSON with `num_docs_seen`; a task that
    saw fewer than K documents writes no report). `judge`: any object with `cluster(batches)`
    (default: the ruler's judge, opened in each task)."""

    name = "🌈 diversity"
    type = "📊 - STATS"

    def __init__(self, output_folder: DataFolderLike, *, ruler: Ruler = Ruler(), judge=None,
                 max_docs: int = DEFAULT_SAMPLE_DOCS, proxies: bool = False):
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.ruler, self.judge, self.max_docs, self.proxies = ruler, judge, max_docs, proxies

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rng = np.random.default_rng([self.ruler.seed, rank])
        sample: list[str] = []
        seen = 0
        for document in data or ():
            with self.track_time():
                seen += 1
                if len(sample) < self.max_docs:
                    sample.append(document.text)
                elif (slot := rng.integers(seen)) < self.max_docs:  # reservoir sampling
                    sample[slot] = document.text
            yield document
        with self.output_folder.open(f"samples/{rank:05d}.jsonl", "wt") as f:
            f.write(json.dumps({"num_docs_seen": seen}) + "\n")
            f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in sample)
        self.stat_update("documents", value=seen, unit="task")
        k = self.ruler.k or 10
        if len(sample) < k:
            log.warning("task %d saw %d documents, fewer than K=%d: no report of its own", rank, seen, k)
            return
        report = score_sample(sample, self.ruler, self.judge, self.proxies)
        with self.output_folder.open(f"{rank:05d}.json", "wt") as f:
            json.dump({**report.to_dict(), "num_docs_seen": seen}, f)


def score_sample(texts: list[str], ruler: Ruler, judge, proxies: bool) -> DiversityReport:
    from generator.api import score
    return score(texts, ruler=ruler, judge=judge, proxies=proxies)


def merge_diversity(folder: DataFolderLike, *, ruler: Ruler = Ruler(), judge=None, proxies: bool = False,
                    seed: int = 0) -> DiversityReport:
    """Score every task's sample of `folder` (written by DiversityStats) as one corpus, each task
    weighted by the documents it saw, and write the report to `folder/diversity.json`."""
    folder = get_datafolder(folder)
    tasks = []
    for path in sorted(folder.list_files("samples", glob_pattern="*.jsonl")):
        with folder.open(path, "rt") as f:
            lines = [json.loads(line) for line in f]
        tasks.append((lines[0]["num_docs_seen"], [line["text"] for line in lines[1:]]))
    if not tasks:
        raise UserError(f"{folder.path}: no samples/*.jsonl",
                        fix="run DiversityStats with this output_folder first")
    rate = min(len(texts) / seen for seen, texts in tasks if seen)  # the smallest share any task kept
    rng = np.random.default_rng(seed)
    texts = [sample[i] for seen, sample in tasks
             for i in np.sort(rng.choice(len(sample), round(rate * seen), replace=False))]
    report = score_sample(texts, ruler, judge, proxies)
    with folder.open("diversity.json", "wt") as f:
        num_seen = sum(seen for seen, _ in tasks)
        json.dump({**report.to_dict(), "num_docs_seen": num_seen, "tasks": len(tasks)}, f)
    return report


class DiversityMerger(PipelineStep):
    """Run `merge_diversity` on `folder` in a later stage (one task): one report for the whole corpus."""

    name = "🌈 diversity, merged"
    type = "📊 - STATS"

    def __init__(self, folder: DataFolderLike, *, ruler: Ruler = Ruler(), judge=None, proxies: bool = False):
        super().__init__()
        self.folder, self.ruler, self.judge, self.proxies = folder, ruler, judge, proxies

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        if rank == 0:
            merge_diversity(self.folder, ruler=self.ruler, judge=self.judge, proxies=self.proxies,
                            seed=self.ruler.seed)
