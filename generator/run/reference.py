"""The recipe's reference corpus inside a run: measured once, kept in the run folder, and the
yardstick of each round's distribution shift. A rewrite run's reference is its source: a sample
of SOURCE_DOCS of its units spread over the seeded order (`reference_texts`).

    OUT/reference.json   its D (same judge and K as the target) with interval, proxies,
                         embedding statistics (bandwidth, centroid norm), keyed by recipe hash
    OUT/reference.npy    its embeddings (reused on --resume; MMD² of every round is against them)

The shift is the unbiased RBF MMD² at a bandwidth fixed by the reference (its median pairwise
distance), so values of different rounds are comparable.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from generator.files import write_json
from generator.run import knobs
from generator.run.rounds import measure

MAX_SHIFT_DOCS = 1000  # each side of an MMD² is subsampled to at most this many documents
SOURCE_DOCS = 500  # a rewrite run's reference: this many of its source's units (reference.num_docs' default)


@dataclass(frozen=True)
class ReferenceStats:
    """What a run knows about its reference corpus."""

    score: float
    ci_low: float
    ci_high: float
    half_width: float
    num_docs: int
    bandwidth: float
    vectors: np.ndarray
    is_source: bool = False  # a rewrite run's source, not a reference: section

    def summary(self) -> dict:
        return {"score": self.score, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "half_width": self.half_width, "num_docs": self.num_docs,
                **({"is_source": True} if self.is_source else {})}


@dataclass(frozen=True)
class Shift:
    """A round's distance from the reference: MMD², its standard error over the round's
    documents, and the mean witness of each grid value."""

    mmd2: float
    by_value: dict
    se: float = 0.0


def open_reference(out: Path, plan, judge, embed: Callable,
                   rng: np.random.Generator) -> tuple[ReferenceStats, dict]:
    """The reference's statistics: read from OUT/reference.json/.npy when they were measured for
    this recipe, else measured now and written there. Returns them and the judge cost spent."""
    info_path, vectors_path = out / "reference.json", out / "reference.npy"
    if info_path.is_file() and vectors_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("recipe_hash") == plan.recipe_hash:
            return _stats(info, np.load(vectors_path)), {"calls": 0, "tokens": 0}
    from generator.measure.proxies import compute_proxies
    from generator.measure.shift import self_bandwidth

    texts = reference_texts(plan)
    report, _ = measure(texts, judge, plan.recipe.target, rng)
    vectors = np.asarray(embed(texts), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    path = plan.recipe.reference.path if plan.recipe.reference else plan.recipe.source.path
    info = {"recipe_hash": plan.recipe_hash, "path": path, "is_source": plan.recipe.reference is None,
            "num_docs": len(texts),
            "judge": report.judge, "k": report.k, "score": report.score, "ci_low": report.ci_low,
            "ci_high": report.ci_high, "half_width": report.half_width, "num_batches": report.num_scored,
            "calls": report.calls, "proxies": compute_proxies(texts, vectors, seed=plan.recipe.seed),
            "embedding": {"dim": int(vectors.shape[1]), "bandwidth": self_bandwidth(vectors),
                          "centroid_norm": float(np.linalg.norm(vectors.mean(0))),
                          "mean_norm": float(norms.mean())}}
    np.save(vectors_path, vectors)
    write_json(info_path, info)
    cost = {"calls": report.calls, "tokens": report.prompt_tokens + report.completion_tokens}
    return _stats(info, vectors), cost


def has_reference(plan) -> bool:
    """The run is measured against a reference: the recipe's, or a rewrite run's source."""
    return bool(plan.reference_texts) or plan.source is not None


def reference_texts(plan) -> list[str]:
    """The reference documents: the recipe's, else SOURCE_DOCS units of the rewrite run's source."""
    if plan.reference_texts:
        return list(plan.reference_texts)
    from generator.sources.units import sample_texts
    return sample_texts(plan.source, SOURCE_DOCS)


def _stats(info: dict, vectors: np.ndarray) -> ReferenceStats:
    return ReferenceStats(score=info["score"], ci_low=info["ci_low"], ci_high=info["ci_high"],
                          half_width=info["half_width"], num_docs=info["num_docs"],
                          bandwidth=info["embedding"]["bandwidth"], vectors=vectors,
                          is_source=bool(info.get("is_source")))


def measure_shift(texts: Sequence[str], columns: Mapping[str, Sequence[str]], reference: ReferenceStats,
                  embed: Callable, rng: np.random.Generator) -> Shift:
    """MMD² of `texts` against the reference (both subsampled to MAX_SHIFT_DOCS with `rng`), its
    standard error and the mean witness of each grid value in `columns` (one value per text).

    The standard error is the first-order (delta-method) one of the U-statistic over the
    corpus's documents: 2·sd(witness)/√n. The reference is the same sample in every round, so
    only the corpus side varies between a pilot and the corpus that follows it."""
    from generator.measure.shift import mmd_rbf, witness

    idx = np.arange(len(texts))
    if len(idx) > MAX_SHIFT_DOCS:
        idx = np.sort(rng.choice(len(idx), MAX_SHIFT_DOCS, replace=False))
    y = reference.vectors
    if len(y) > MAX_SHIFT_DOCS:
        y = y[np.sort(rng.choice(len(y), MAX_SHIFT_DOCS, replace=False))]
    x = np.asarray(embed([texts[i] for i in idx]), dtype=np.float64)
    mmd2 = mmd_rbf(x, y, bandwidth=reference.bandwidth)
    w = witness(x, y, reference.bandwidth)
    by_value = knobs.value_witness({a: [v[i] for i in idx] for a, v in columns.items()}, w)
    se = 2 * float(np.std(w, ddof=1)) / np.sqrt(len(w)) if len(w) > 1 else 0.0
    return Shift(mmd2=float(mmd2), by_value=by_value, se=se)


def grid_columns(grid_values: Sequence[str], templates: Sequence[str]) -> dict[str, list[str]]:
    """One column per grid axis (custom and seed-document axes included) from the rows'
    grid_values JSON, plus the template column; "" where a row did not use an axis."""
    rows = [json.loads(g) if g else {} for g in grid_values]
    axes = sorted({a for r in rows for a in r if not a.endswith("_source")})
    return {"template": list(templates), **{a: [r.get(a, "") for r in rows] for a in axes}}


def read_shift_inputs(root: Path, below: int | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """Texts under `root` (of samples below index `below`) and their grid columns (see `grid_columns`),
    in sample-index order."""
    from generator.files import read_documents

    table = read_documents(root, columns=["text", "template", "grid_values", "sample_index"], below=below)
    table = table.sort_by("sample_index")
    return table.column("text").to_pylist(), grid_columns(table.column("grid_values").to_pylist(),
                                                          table.column("template").to_pylist())


def resolve_target(plan, reference: ReferenceStats):
    """A relative target becomes an absolute score: relative × the reference's D."""
    t = plan.recipe.target
    if t.relative is None:
        return plan
    score = t.relative * reference.score
    if not 1 / t.k <= score <= t.k:
        from generator.errors import UserError
        raise UserError(f"{plan.recipe.path}: target.relative {t.relative} × reference D "
                        f"{reference.score:.3f} = {score:.3f} is outside [1/K, K] = [{1 / t.k:.2f}, {t.k}]",
                        fix="pick a relative target the judge can produce at this k")
    return dataclasses.replace(
        plan, recipe=dataclasses.replace(plan.recipe, target=dataclasses.replace(t, score=score)))
