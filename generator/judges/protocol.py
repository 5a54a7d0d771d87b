"""The cluster-based diversity score, shared by both judges (LLM cluster-agent and embeddings).

Protocol (Chen et al. 2024, arXiv 2410.15226, restated in CLUSTER_AGENT.md): draw random
batches of K documents, let a judge partition each batch into clusters, and score batch i by
D_i = C_i / S_i, where C_i is the number of clusters and S_i the mean cluster size. For a
partition S_i = K / C_i, so D_i = C_i² / K, bounded in [1/K, K]. The corpus score D is the mean
of D_i; higher means more diverse. Scores are only comparable at the same K, judge and criteria.

Batches are drawn and judged in chunks, so scoring stops as soon as the 95% half-width of D
reaches the requested precision, or before a chunk would overrun the call budget. Batches the
judge failed on are counted and excluded, never scored.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Mapping, Protocol, Sequence

import numpy as np

from generator.errors import UserError

log = logging.getLogger(__name__)

REPAIR_KINDS = ("out_of_range", "duplicate", "unassigned", "invalid_dissolved")
Z_95 = 1.959963984540054
NUM_BOOTSTRAP = 1000


class ScoreError(UserError, ValueError):
    """A bad scoring input (empty corpus, K too large, unreadable data, no usable batch)."""


@dataclass(frozen=True)
class BatchClustering:
    """One judged batch. `clusters` is a partition of range(K) (0-based positions in the
    batch) after repair and verification; a failed batch has no clusters and is not scored."""

    clusters: tuple[tuple[int, ...], ...]
    failed: bool = False
    error: str | None = None
    repairs: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Judge(Protocol):
    """Partitions each batch of documents into clusters of alike documents."""

    name: str

    def cluster(self, batches: Sequence[Sequence[str]]) -> list[BatchClustering]: ...


def repair_partition(groups: Sequence[Sequence[int]], k: int) -> tuple[tuple[tuple[int, ...], ...], dict[str, int]]:
    """Turn proposed groups of 0-based positions into a partition of range(k): drop
    out-of-range positions, keep a position only in its first group, give each unassigned
    position its own singleton. Returns the partition and the count of each repair."""
    repairs = {kind: 0 for kind in REPAIR_KINDS}
    seen: set[int] = set()
    clusters: list[tuple[int, ...]] = []
    for group in groups:
        members = []
        for index in group:
            if not 0 <= index < k:
                repairs["out_of_range"] += 1
            elif index in seen:
                repairs["duplicate"] += 1
            else:
                seen.add(index)
                members.append(index)
        if members:
            clusters.append(tuple(members))
    missing = [i for i in range(k) if i not in seen]
    repairs["unassigned"] = len(missing)
    clusters.extend((i,) for i in missing)
    return tuple(clusters), repairs


def batch_score(clusters: Sequence[Sequence[int]]) -> float:
    """D_i = C_i / S_i with S_i the mean cluster size (= C_i² / K for a partition of K)."""
    num_clusters = len(clusters)
    mean_size = sum(len(c) for c in clusters) / num_clusters
    return num_clusters / mean_size


def sample_batches(num_docs: int, k: int, num_batches: int, rng: np.random.Generator) -> np.ndarray:
    """(num_batches, k) document indices; no repeats within a batch, independent batches."""
    return np.stack([rng.choice(num_docs, size=k, replace=False) for _ in range(num_batches)]) \
        if num_batches else np.zeros((0, k), dtype=np.int64)


@dataclass(frozen=True)
class DiversityReport:
    judge: str
    k: int
    num_docs: int
    score: float  # D = mean_i C_i² / K over scored batches
    std_error: float
    ci_low: float  # normal approximation, 95%
    ci_high: float
    half_width: float
    bootstrap_std: float  # spread of D over bootstrap resamples of the scored batches
    bootstrap_low: float  # 2.5% and 97.5% percentiles of those resamples
    bootstrap_high: float
    cluster_ratio: float  # mean_i C_i / K, in [1/K, 1]
    num_scored: int
    num_failed: int
    stop_reason: str  # "precision" | "max_calls" | "num_batches"
    calls: int
    prompt_tokens: int
    completion_tokens: int
    repairs: dict[str, int]
    batch_docs: tuple[tuple[int, ...], ...]  # every sampled batch, failed ones included
    batches: tuple[BatchClustering, ...]  # same order as batch_docs

    def to_dict(self, *, include_batches: bool = True) -> dict:
        out = {f.name: _finite(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("batch_docs", "batches")}
        out["repairs"] = dict(self.repairs)
        errors = [b.error for b in self.batches if b.failed and b.error]
        out["errors"] = sorted(set(errors))[:10]
        if include_batches:
            out["batches"] = [
                {"docs": list(docs), "failed": b.failed, "error": b.error,
                 "clusters": [list(c) for c in b.clusters],
                 "score": None if b.failed else batch_score(b.clusters)}
                for docs, b in zip(self.batch_docs, self.batches)]
        return out


def score_corpus(texts: Sequence[str], judge: Judge, *, k: int = 10, rng: np.random.Generator,
                 max_calls: int | None = None, precision: float | None = None,
                 min_batches: int = 20, num_batches: int = 200, chunk_size: int = 32) -> DiversityReport:
    """Score `texts` with `judge` on random K-batches drawn from `rng`.

    Stops at the first of: the 95% half-width of D is at most `precision` (checked once
    `min_batches` batches are scored), the next chunk would overrun `max_calls` judge calls,
    `num_batches` batches have been drawn. With a precision target, batches are judged in
    chunks of at most `chunk_size` (the first holds `min_batches`, so the interval means
    something when it is first checked).
    """
    check_batch_inputs(len(texts), k, min_batches, num_batches, precision)
    docs: list[tuple[int, ...]] = []
    results: list[BatchClustering] = []
    stop_reason = "num_batches"
    while len(docs) < num_batches:
        size = _next_chunk_size(results, max_calls, precision, min_batches, num_batches, chunk_size)
        if size == 0 and not results:
            raise ScoreError(f"max_calls={max_calls} does not allow judging a single batch",
                             fix="raise --max-calls (the LLM judge spends about 2 calls per batch)")
        if size == 0:
            stop_reason = "max_calls"
            break
        chunk = sample_batches(len(texts), k, size, rng)
        clustered = judge.cluster([[texts[i] for i in row] for row in chunk])
        if len(clustered) != size:
            raise RuntimeError(f"judge {judge.name} returned {len(clustered)} clusterings for {size} batches")
        docs.extend(tuple(int(i) for i in row) for row in chunk)
        results.extend(clustered)
        log.info("%s: %d batches judged (%d failed), half-width %.3f", judge.name, len(results),
                 sum(r.failed for r in results), _half_width(_scores(results)))
        if precision is not None and _half_width(_scores(results)) <= precision \
                and sum(not r.failed for r in results) >= min_batches:
            stop_reason = "precision"
            break
        if max_calls is not None and sum(r.calls for r in results) >= max_calls:
            stop_reason = "max_calls"
            break
    return _build_report(judge.name, k, len(texts), docs, results, stop_reason, rng)


def _finite(value):
    """JSON has no infinity or NaN: report them as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def check_batch_inputs(num_docs: int, k: int, min_batches: int, num_batches: int,
                       precision: float | None = None) -> None:
    """Fail fast, with the fix, on inputs no batch can be drawn from."""
    if num_docs == 0:
        raise ScoreError("the corpus is empty: nothing to score", fix="point at a corpus with documents")
    if k < 2:
        raise ScoreError(f"K={k} documents per batch is too small", fix="use --k 2 or more (10 is standard)")
    if k > num_docs:
        raise ScoreError(f"K={k} documents per batch but the corpus has only {num_docs}",
                         fix=f"pass --k {num_docs} or less, or score a larger corpus")
    if num_batches < 1 or min_batches < 1:
        raise ScoreError(f"num_batches={num_batches} and min_batches={min_batches} must be at least 1",
                         fix="raise the batch counts")
    if precision is not None and not precision > 0:
        raise ScoreError(f"precision {precision} must be positive", fix="pass e.g. --precision 0.1")


def _next_chunk_size(results: Sequence[BatchClustering], max_calls: int | None,
                     precision: float | None, min_batches: int, num_batches: int, chunk_size: int) -> int:
    """How many batches to judge next. Without a precision target: all that are left, in one
    call, so a batching backend sees them together. With one: min_batches first, then enough
    to reach the precision at the current spread, capped by chunk_size. Never more than the
    call budget affords at the calls per batch seen so far (2 assumed before any: clustering +
    verification)."""
    drawn = len(results)
    left = num_batches - drawn
    if precision is None:
        size = left
    elif drawn == 0:
        size = min(min_batches, left)
    else:
        size = min(chunk_size, left)
        scores = _scores(results)
        if len(scores) >= 2:
            needed = math.ceil((Z_95 * float(np.std(scores, ddof=1)) / precision) ** 2)
            size = min(size, max(needed - len(scores), 1))
    if max_calls is not None:
        spent = sum(r.calls for r in results)
        per_batch = spent / drawn if drawn and spent else 2.0
        size = min(size, int((max_calls - spent) // per_batch))
    return max(size, 0)


def _scores(results: Sequence[BatchClustering]) -> np.ndarray:
    return np.array([batch_score(r.clusters) for r in results if not r.failed], dtype=np.float64)


def _half_width(scores: np.ndarray) -> float:
    if len(scores) < 2:
        return math.inf
    return Z_95 * float(np.std(scores, ddof=1)) / math.sqrt(len(scores))


def _build_report(judge_name: str, k: int, num_docs: int, docs: list[tuple[int, ...]],
                  results: list[BatchClustering], stop_reason: str, rng: np.random.Generator) -> DiversityReport:
    scored = [r for r in results if not r.failed]
    if not scored:
        errors = sorted({r.error or "unknown" for r in results})[:3]
        raise ScoreError(f"judge {judge_name} failed on all {len(results)} batches; first errors: {errors}",
                         fix="check the judge model/endpoint and its logs, or raise --max-calls")
    scores = _scores(results)
    mean = float(scores.mean())
    std_error = float(np.std(scores, ddof=1)) / math.sqrt(len(scores)) if len(scores) > 1 else math.inf
    half = Z_95 * std_error
    boot = scores[rng.integers(0, len(scores), size=(NUM_BOOTSTRAP, len(scores)))].mean(axis=1)
    repairs = {kind: sum(r.repairs.get(kind, 0) for r in results) for kind in REPAIR_KINDS}
    return DiversityReport(
        judge=judge_name, k=k, num_docs=num_docs, score=mean, std_error=std_error,
        ci_low=mean - half, ci_high=mean + half, half_width=half,
        bootstrap_std=float(boot.std()), bootstrap_low=float(np.percentile(boot, 2.5)),
        bootstrap_high=float(np.percentile(boot, 97.5)),
        cluster_ratio=float(np.mean([len(r.clusters) / k for r in scored])),
        num_scored=len(scored), num_failed=len(results) - len(scored), stop_reason=stop_reason,
        calls=sum(r.calls for r in results), prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results), repairs=repairs,
        batch_docs=tuple(docs), batches=tuple(results))


def attribute_cells(report: DiversityReport, metadata: Mapping[str, Sequence[str]]) -> dict:
    """Which metadata values make documents land in the same cluster.

    Over all pairs of documents judged in the same (scored) batch: the baseline same-cluster
    rate, and for each column and value, the pairs sharing that value and how often they were
    put in the same cluster. A value whose rate is far above the baseline (lift > 1) marks a
    redundant grid cell. Empty values are skipped.
    """
    docs, labels = _pair_arrays(report)
    left, right = np.triu_indices(report.k, 1)
    same = labels[:, left] == labels[:, right]
    out = {"baseline": {"pairs": int(same.size), "same_cluster": int(same.sum()),
                        "same_cluster_rate": float(same.mean()) if same.size else math.nan},
           "columns": {}}
    for column, values in metadata.items():
        if len(values) != report.num_docs:
            raise ScoreError(f"metadata column {column!r} has {len(values)} values for {report.num_docs} documents",
                             fix="pass one value per document, in corpus order")
        out["columns"][column] = _attribute_column(values, docs, left, right, same,
                                                   out["baseline"]["same_cluster_rate"])
    return out


def _pair_arrays(report: DiversityReport) -> tuple[np.ndarray, np.ndarray]:
    """(B, K) document indices and cluster labels of the scored batches."""
    rows = [(docs, b) for docs, b in zip(report.batch_docs, report.batches) if not b.failed]
    docs = np.array([d for d, _ in rows], dtype=np.int64).reshape(len(rows), report.k)
    labels = np.zeros_like(docs)
    for row, (_, batch) in enumerate(rows):
        for label, cluster in enumerate(batch.clusters):
            labels[row, list(cluster)] = label
    return docs, labels


def _attribute_column(values: Sequence[str], docs: np.ndarray, left: np.ndarray, right: np.ndarray,
                      same: np.ndarray, baseline: float) -> dict:
    names, codes = np.unique(np.asarray([v if v is not None else "" for v in values], dtype=object).astype(str),
                             return_inverse=True)
    batch_codes = codes[docs]
    shared = batch_codes[:, left] == batch_codes[:, right]
    code = batch_codes[:, left][shared]
    pairs = np.bincount(code, minlength=len(names))
    together = np.bincount(code, weights=same[shared], minlength=len(names))
    column = {}
    for i, name in enumerate(names):
        if name == "" or pairs[i] == 0:
            continue
        rate = float(together[i] / pairs[i])
        column[name] = {"pairs": int(pairs[i]), "same_cluster": int(together[i]), "same_cluster_rate": rate,
                        "lift": rate / baseline if baseline > 0 else None}
    return column
