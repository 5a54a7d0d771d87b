"""The cluster-based diversity score, shared by both judges (LLM cluster-agent and embeddings).

Protocol (Chen et al. 2024, arXiv 2410.15226, restated in CLUSTER_AGENT.md): draw random
batches of K documents, let a judge partition each batch into clusters, and score batch i by
D_i = C_i / S_i, where C_i is the number of clusters and S_i the mean cluster size. For a
partition S_i = K / C_i, so D_i = C_i² / K, bounded in [1/K, K]. The corpus score D is the mean
of D_i; higher means more diverse. Scores are only comparable at the same K, judge and criteria.

With a precision target, scoring is two-stage (see `generator.judges.intervals`): a pilot sample
plans the size of a fresh main sample, and D and its interval come from the main sample only.
Chunks are sized so that the judge's worst case per batch cannot overrun the call budget.
Batches the judge failed on are counted by kind and excluded; the report gives the range D
would span had they scored 1/K or K, and past `max_failure_share` the score is refused.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Mapping, Protocol, Sequence

import numpy as np

from generator.errors import UserError
from generator.judges.attribution import attribute_column, pair_arrays
from generator.judges.intervals import MIN_PRECISION

log = logging.getLogger(__name__)

REPAIR_KINDS = ("out_of_range", "duplicate", "unassigned", "invalid_dissolved")
FIX_KINDS = ("zero_based", "empty_cluster", "invalid_dropped")  # counted beside the repairs
INVALID_POLICIES = ("split", "drop", "keep")  # what an invalid cluster becomes: singletons, nothing, itself
NUM_BOOTSTRAP = 1000
MAX_FAILURE_SHARE = 0.2


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
    failure: str | None = None  # kind of failure: length, json, schema, engine, budget, dropped
    fixes: dict[str, int] = field(default_factory=dict)
    proposal: tuple[tuple[int, ...], ...] = ()  # the partition before verification (LLM judge)
    verdicts: tuple[tuple[int, bool], ...] = ()  # (cluster index in proposal, valid)


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


def apply_policy(proposal: Sequence[Sequence[int]], verdicts: Sequence[tuple[int, bool]], policy: str,
                 repairs: Mapping[str, int] | None = None, fixes: Mapping[str, int] | None = None):
    """(clusters, repairs, fixes) after verification: an invalid cluster is split into
    singletons, dropped from the batch, or kept, by `policy`."""
    invalid = {j for j, valid in verdicts if not valid}
    repairs = {**dict.fromkeys(REPAIR_KINDS, 0), **(repairs or {})}
    fixes = {**dict.fromkeys(FIX_KINDS, 0), **(fixes or {})}
    clusters: list[tuple[int, ...]] = []
    for j, cluster in enumerate(proposal):
        if j not in invalid or policy == "keep":
            clusters.append(tuple(cluster))
        elif policy == "split":
            clusters.extend((m,) for m in cluster)
            repairs["invalid_dissolved"] += 1
        else:
            fixes["invalid_dropped"] += 1
    return tuple(clusters), repairs, fixes


def batch_score(clusters: Sequence[Sequence[int]]) -> float:
    """D_i = C_i / S_i with S_i the mean cluster size (= C_i² / K for a partition of K;
    = C_i² / n when a policy dropped clusters and n documents remain)."""
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
    score: float  # D = mean_i C_i² / K over the scored batches of the main sample
    std_error: float
    ci_low: float  # studentised bootstrap, 95%
    ci_high: float
    half_width: float  # (ci_high - ci_low) / 2
    bootstrap_std: float  # spread of D over bootstrap resamples of the scored batches
    bootstrap_low: float  # 2.5% and 97.5% percentiles of those resamples
    bootstrap_high: float
    cluster_ratio: float  # mean_i C_i / K, in [1/K, 1]
    num_scored: int  # scored batches behind D (the main sample)
    num_failed: int  # failed batches, pilot included
    stop_reason: str  # "precision" | "max_calls" | "num_batches"
    calls: int
    prompt_tokens: int
    completion_tokens: int
    repairs: dict[str, int]
    batch_docs: tuple[tuple[int, ...], ...]  # every sampled batch, failed ones included
    batches: tuple[BatchClustering, ...]  # same order as batch_docs
    num_pilot: int = 0  # the first num_pilot batches planned the main sample and are not in D
    failures: dict[str, int] = field(default_factory=dict)  # failed batches by kind
    failure_share: float = 0.0  # failed / judged batches
    score_failed_low: float = math.nan  # D had every failed main batch scored 1/K
    score_failed_high: float = math.nan  # ... or K
    fixes: dict[str, int] = field(default_factory=dict)

    def to_dict(self, *, include_batches: bool = True) -> dict:
        out = {f.name: _finite(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("batch_docs", "batches")}
        out["repairs"] = dict(self.repairs)
        errors = [b.error for b in self.batches if b.failed and b.error]
        out["errors"] = sorted(set(errors))[:10]
        if include_batches:
            out["batches"] = [
                {"docs": list(docs), "failed": b.failed, "failure": b.failure, "error": b.error,
                 "clusters": [list(c) for c in b.clusters],
                 "score": None if b.failed else batch_score(b.clusters)}
                for docs, b in zip(self.batch_docs, self.batches)]
        return out


class RefusedScoreError(ScoreError):
    """The judge failed on too large a share of batches for D to mean anything."""


def score_corpus(texts: Sequence[str], judge: Judge, *, k: int = 10, rng: np.random.Generator,
                 max_calls: int | None = None, precision: float | None = None,
                 min_batches: int = 30, num_batches: int = 200, chunk_size: int = 32,
                 max_failure_share: float = MAX_FAILURE_SHARE, audit=None) -> DiversityReport:
    """Score `texts` with `judge` on random K-batches drawn from `rng`.

    Without `precision`: `num_batches` batches, all sent to the judge at once. With it: a
    pilot of `min_batches` batches plans a fresh main sample (`intervals.planned_batches`)
    that D and its interval come from. Either way at most `num_batches` batches are drawn,
    and chunks are cut so that `max_calls` holds even if every batch costs the judge's worst
    case (`judge.max_calls_per_batch`, else the most seen so far). Every batch is written to
    `audit` (anything with `write(dict)`) when given.
    """
    from generator.judges.intervals import planned_batches

    check_batch_inputs(len(texts), k, min_batches, num_batches, precision)
    run = _Run(texts, judge, k, rng, max_calls, audit)
    if precision is None:
        stop_reason = run.judge_batches(num_batches, num_batches, stage="main")
    else:
        stop_reason = run.judge_batches(min(min_batches, num_batches), chunk_size, stage="pilot")
        run.num_pilot = len(run.results)
        if stop_reason == "done":
            wanted = planned_batches(_scores(run.results), precision, k=k)
            left = num_batches - run.num_pilot
            stop_reason = run.judge_batches(min(wanted, left), chunk_size, stage="main")
            stop_reason = "num_batches" if stop_reason == "done" and wanted > left else stop_reason
    if stop_reason == "budget_too_small":
        raise ScoreError(f"max_calls={max_calls} does not allow judging a single batch",
                         fix=f"raise --max-calls (this judge may spend {run.worst_case()} calls per batch)")
    stop_reason = {"done": "precision" if precision is not None else "num_batches"}.get(stop_reason, stop_reason)
    report = _build_report(judge.name, k, len(texts), run, stop_reason, rng)
    _refuse_if_failing(report, max_failure_share)
    return report


class _Run:
    """The batches judged so far, and how many more the call budget affords."""

    def __init__(self, texts, judge, k, rng, max_calls, audit):
        self.texts, self.judge, self.k, self.rng, self.max_calls, self.audit = texts, judge, k, rng, max_calls, audit
        self.docs: list[tuple[int, ...]] = []
        self.results: list[BatchClustering] = []
        self.num_pilot = 0

    def worst_case(self) -> int:
        declared = getattr(self.judge, "max_calls_per_batch", None)
        return int(declared or max((r.calls for r in self.results), default=2) or 1)

    def affordable(self) -> int | None:
        if self.max_calls is None:
            return None
        return max(self.max_calls - sum(r.calls for r in self.results), 0) // self.worst_case()

    def judge_batches(self, count: int, chunk_size: int, *, stage: str) -> str:
        """Judge `count` more batches; "done", "max_calls", or "budget_too_small"."""
        target = len(self.results) + count
        while len(self.results) < target:
            size = min(chunk_size, target - len(self.results))
            affordable = self.affordable()
            if affordable is not None:
                size = min(size, affordable)
            if size == 0:
                return "max_calls" if self.results else "budget_too_small"
            chunk = sample_batches(len(self.texts), self.k, size, self.rng)
            clustered = self.judge.cluster([[self.texts[i] for i in row] for row in chunk])
            if len(clustered) != size:
                raise RuntimeError(f"judge {self.judge.name} returned {len(clustered)} clusterings for {size} batches")
            for row, batch in zip(chunk, clustered):
                self.docs.append(tuple(int(i) for i in row))
                self.results.append(batch)
                if self.audit is not None:
                    self.audit.write(batch_record(len(self.results) - 1, stage, self.docs[-1], batch))
            log.info("%s: %d batches judged (%d failed)", self.judge.name, len(self.results),
                     sum(r.failed for r in self.results))
        return "done"


def batch_record(index: int, stage: str, docs: Sequence[int], batch: BatchClustering) -> dict:
    """One audit line per judged batch: enough to rescore it under another invalid policy."""
    return {"type": "batch", "index": index, "stage": stage, "docs": list(docs), "failed": batch.failed,
            "failure": batch.failure, "error": batch.error,
            "proposal": [list(c) for c in (batch.proposal or batch.clusters)],
            "verdicts": [[j, v] for j, v in batch.verdicts], "clusters": [list(c) for c in batch.clusters],
            "repairs": batch.repairs, "fixes": batch.fixes, "calls": batch.calls,
            "prompt_tokens": batch.prompt_tokens, "completion_tokens": batch.completion_tokens}


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
                         fix=f"pass --k {num_docs} or less, or score a larger corpus" if num_docs >= 2 else
                         "score a corpus of 2 or more documents (K is at least 2)")
    if num_batches < 1 or min_batches < 1:
        raise ScoreError(f"num_batches={num_batches} and min_batches={min_batches} must be at least 1",
                         fix="raise the batch counts")
    if precision is not None and not precision >= MIN_PRECISION:
        raise ScoreError(f"precision {precision} must be at least {MIN_PRECISION:g}",
                         fix="pass e.g. --precision 0.1")


def _scores(results: Sequence[BatchClustering]) -> np.ndarray:
    return np.array([batch_score(r.clusters) for r in results if not r.failed], dtype=np.float64)


def summarize_scores(scores: np.ndarray, num_failed: int, k: int, rng: np.random.Generator) -> dict:
    """D, its studentised-bootstrap interval, percentile bootstrap, and the range D would
    span had `num_failed` more batches scored 1/K or K."""
    from generator.judges.intervals import bootstrap_t_interval

    n = len(scores)
    mean = float(scores.mean())
    std_error = float(np.std(scores, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    low, high = bootstrap_t_interval(scores, rng)
    boot = scores[rng.integers(0, n, size=(NUM_BOOTSTRAP, n))].mean(axis=1)
    total = float(scores.sum())
    return dict(score=mean, std_error=std_error, ci_low=low, ci_high=high, half_width=(high - low) / 2,
                bootstrap_std=float(boot.std()), bootstrap_low=float(np.percentile(boot, 2.5)),
                bootstrap_high=float(np.percentile(boot, 97.5)),
                score_failed_low=(total + num_failed / k) / (n + num_failed),
                score_failed_high=(total + num_failed * k) / (n + num_failed))


def _build_report(judge_name: str, k: int, num_docs: int, run: _Run, stop_reason: str,
                  rng: np.random.Generator) -> DiversityReport:
    results = run.results
    if not any(not r.failed for r in results):
        errors = sorted({r.error or "unknown" for r in results})[:3]
        raise ScoreError(f"judge {judge_name} failed on all {len(results)} batches; first errors: {errors}",
                         fix="check the judge model/endpoint and its logs, or raise --max-calls")
    main = results[run.num_pilot:]
    sample = main if sum(not r.failed for r in main) >= 2 else results  # budget spent right after the pilot
    scored = [r for r in sample if not r.failed]
    failures: dict[str, int] = {}
    for r in results:
        if r.failed:
            failures[r.failure or "engine"] = failures.get(r.failure or "engine", 0) + 1
    return DiversityReport(
        judge=judge_name, k=k, num_docs=num_docs,
        **summarize_scores(_scores(sample), len(sample) - len(scored), k, rng),
        cluster_ratio=float(np.mean([len(r.clusters) / k for r in scored])),
        num_scored=len(scored), num_failed=sum(failures.values()), stop_reason=stop_reason,
        calls=sum(r.calls for r in results), prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        repairs={kind: sum(r.repairs.get(kind, 0) for r in results) for kind in REPAIR_KINDS},
        fixes={kind: sum(r.fixes.get(kind, 0) for r in results) for kind in FIX_KINDS},
        batch_docs=tuple(run.docs), batches=tuple(results), num_pilot=run.num_pilot if sample is main else 0,
        failures=failures, failure_share=sum(failures.values()) / len(results))


def _refuse_if_failing(report: DiversityReport, max_share: float) -> None:
    if report.failure_share <= max_share:
        return
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.failures.items()))
    raise RefusedScoreError(
        f"judge {report.judge} failed on {report.num_failed} of {len(report.batches)} batches "
        f"({report.failure_share:.0%} > {max_share:.0%}: {kinds}); D is refused: it could lie anywhere in "
        f"[{report.score_failed_low:.3f}, {report.score_failed_high:.3f}]",
        fix="give the judge a larger answer budget or context, a stronger model, or raise --max-failure-share")


def attribute_cells(report: DiversityReport, metadata: Mapping[str, Sequence[str]]) -> dict:
    """Which metadata values make documents land in the same cluster.

    Over all pairs of documents judged in the same (scored) batch: the baseline same-cluster
    rate, and for each column and value, the pairs sharing that value and how often they were
    put in the same cluster. A value whose rate is far above the baseline (lift > 1) marks a
    redundant grid cell. Empty values are skipped. What each value adds under each view of the
    two-view judge: `attribution.attribute_views`.
    """
    docs, labels = pair_arrays(report)
    left, right = np.triu_indices(report.k, 1)
    same = labels[:, left] == labels[:, right]
    out = {"baseline": {"pairs": int(same.size), "same_cluster": int(same.sum()),
                        "same_cluster_rate": float(same.mean()) if same.size else math.nan},
           "columns": {}}
    for column, values in metadata.items():
        if len(values) != report.num_docs:
            raise ScoreError(f"metadata column {column!r} has {len(values)} values for {report.num_docs} documents",
                             fix="pass one value per document, in corpus order")
        out["columns"][column] = attribute_column(values, docs, left, right, same,
                                                  out["baseline"]["same_cluster_rate"])
    return out
