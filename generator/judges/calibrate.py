"""Fit the embedding judge's cuts to an LLM judge's clusterings.

Both judges see the same random K-batches. The LLM judge's partitions are the reference. With
both views (the default judge), every pair of a subject cut and a form cut on a grid clusters
each batch as the judge would, and the pair whose partitions agree best with the reference
(mean adjusted Rand index over batches by default, or pairwise same-cluster agreement) is
chosen; subject-only, the subject tree is cut at every threshold of the grid. The agreement
curve is returned (with both views: the best form cut at each subject cut), with the embedding
judge's score D beside the LLM judge's D, so one can see how well and at what scale they match.

`separating_threshold` is the pair rule behind `embed_judge.DEFAULT_THRESHOLD`: the distance
cut that best separates pairs with the same label from pairs with different labels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from generator.judges.protocol import BatchClustering, Judge, ScoreError, batch_score, check_batch_inputs, sample_batches
from generator.judges.embedding import (DEFAULT_FORM_THRESHOLD, EmbeddingJudge, average_linkage, clusters_at,
                                        combined_distances)

THRESHOLD_GRID = tuple(round(0.30 + 0.02 * i, 2) for i in range(36))  # 0.30 .. 1.00
FORM_GRID = tuple(round(0.04 + 0.02 * i, 2) for i in range(24))  # 0.04 .. 0.50
Metric = Literal["adjusted_rand", "pair_agreement"]
METRICS = ("adjusted_rand", "pair_agreement")


def labels_of(clusters: Sequence[Sequence[int]], k: int) -> np.ndarray:
    labels = np.full(k, -1, dtype=np.int64)
    for label, members in enumerate(clusters):
        labels[list(members)] = label
    return labels


def pair_agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], k: int) -> float:
    """Fraction of the K(K-1)/2 pairs that both partitions put together or both keep apart."""
    la, lb = labels_of(a, k), labels_of(b, k)
    rows, cols = np.triu_indices(k, 1)
    return float(np.mean((la[rows] == la[cols]) == (lb[rows] == lb[cols])))


def adjusted_rand_index(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], k: int) -> float:
    """Hubert-Arabie adjusted Rand index of two partitions of range(k); 1.0 when both are the
    same trivial partition (all singletons or one cluster), where the formula is 0/0."""
    la, lb = labels_of(a, k), labels_of(b, k)
    table = np.zeros((la.max() + 1, lb.max() + 1), dtype=np.int64)
    np.add.at(table, (la, lb), 1)
    pairs = lambda n: n * (n - 1) / 2  # noqa: E731
    together = pairs(table).sum()
    in_a, in_b = pairs(table.sum(axis=1)).sum(), pairs(table.sum(axis=0)).sum()
    expected = in_a * in_b / pairs(k)
    best = (in_a + in_b) / 2
    return 1.0 if best == expected else float((together - expected) / (best - expected))


def fit_threshold(reference: Sequence[Sequence[Sequence[int]]], trees: Sequence[np.ndarray], k: int, *,
                  thresholds: Sequence[float] = THRESHOLD_GRID,
                  metric: Metric = "adjusted_rand") -> tuple[float, list[dict]]:
    """The threshold whose cuts of `trees` agree best with the `reference` partitions (the
    middle one when several tie), and the curve: one row per threshold."""
    check_metric(metric)
    curve = [{"threshold": float(t), **agreement_row(reference, [clusters_at(tree, t) for tree in trees], k)}
             for t in thresholds]
    return best_row(curve, metric)["threshold"], curve


def fit_cuts(reference: Sequence[Sequence[Sequence[int]]], distances: Sequence[dict[str, np.ndarray]],
             k: int, *, thresholds: Sequence[float] = THRESHOLD_GRID,
             form_thresholds: Sequence[float] = FORM_GRID,
             metric: Metric = "adjusted_rand") -> tuple[float, float, list[dict]]:
    """The (subject, form) cuts whose two-view clusterings of the batches (`distances`: each
    batch's condensed "subject" and "form" distances) agree best with the `reference`
    partitions, the middle one when several tie; and the curve: at each subject cut, the best
    form cut and its agreement."""
    check_metric(metric)
    curve, everything = [], []
    for t in thresholds:
        rows = []
        for f in form_thresholds:
            cuts = [clusters_at(average_linkage(combined_distances(d["subject"], d["form"], t, f)), 1.0)
                    for d in distances]
            rows.append({"threshold": float(t), "form_threshold": float(f),
                         **agreement_row(reference, cuts, k)})
        curve.append(best_row(rows, metric))
        everything.extend(rows)
    values = np.array([row[metric] for row in everything])
    tied = [row for row, value in zip(everything, values) if value >= values.max() - 1e-12]
    middle = sorted({row["threshold"] for row in tied})[len({row["threshold"] for row in tied}) // 2]
    # the middle of each cut's ties
    best = best_row([row for row in tied if row["threshold"] == middle], metric)
    curve = [best if row["threshold"] == best["threshold"] else row for row in curve]
    return best["threshold"], best["form_threshold"], curve


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ScoreError(f"unknown agreement metric {metric!r}", fix=f"use one of {list(METRICS)}")


def agreement_row(reference: Sequence[Sequence[Sequence[int]]], cuts: Sequence[Sequence[Sequence[int]]],
                  k: int) -> dict:
    """Mean agreement of `cuts` with `reference` under both metrics, and the cuts' D."""
    agree = {"adjusted_rand": adjusted_rand_index, "pair_agreement": pair_agreement}
    return {**{name: float(np.mean([f(ref, cut, k) for ref, cut in zip(reference, cuts)]))
               for name, f in agree.items()},
            "embed_score": float(np.mean([batch_score(c) for c in cuts]))}


def best_row(rows: Sequence[dict], metric: str) -> dict:
    """The row with the highest `metric`; the middle one of those tied at the top."""
    values = np.array([row[metric] for row in rows])
    ties = np.flatnonzero(values >= values.max() - 1e-12)
    return rows[int(ties[len(ties) // 2])]


@dataclass(frozen=True)
class Calibration:
    threshold: float  # the subject cut
    metric: str
    agreement: float  # the metric at the chosen threshold
    llm_judge: str
    llm_score: float  # the LLM judge's D on the scored batches
    embed_score: float  # the embedding judge's D at the chosen threshold, same batches
    k: int
    num_batches: int  # scored by the LLM judge
    num_failed: int
    curve: tuple[dict, ...]
    calls: int = 0  # LLM judge calls, prompt and completion tokens spent on the scored batches
    prompt_tokens: int = 0
    completion_tokens: int = 0
    form_threshold: float | None = None  # the form cut (None: fitted subject-only)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["curve"] = [dict(row) for row in self.curve]
        return out


def calibrate_threshold(texts: Sequence[str], llm_judge: Judge, *, k: int = 10, num_batches: int = 50,
                        rng: np.random.Generator, thresholds: Sequence[float] = THRESHOLD_GRID,
                        metric: Metric = "adjusted_rand",
                        embed: Callable[[Sequence[str]], np.ndarray] | None = None,
                        views: Literal["both", "subject"] = "both",
                        form_thresholds: Sequence[float] = FORM_GRID) -> Calibration:
    """Run `llm_judge` and the embedding judge on the same `num_batches` random K-batches and
    fit the embedding judge's cuts to the LLM judge's partitions: the subject and form cuts of
    the default two-view judge (`views="both"`), or the subject-only ruler's threshold."""
    if views not in ("both", "subject"):
        raise ScoreError(f"unknown views {views!r}", fix="use both or subject")
    check_batch_inputs(len(texts), k, 1, num_batches)
    rows = sample_batches(len(texts), k, num_batches, rng)
    batches = [[texts[i] for i in row] for row in rows]
    reference: list[BatchClustering] = llm_judge.cluster(batches)
    kept = [i for i, ref in enumerate(reference) if not ref.failed]
    if not kept:
        raise ScoreError(f"judge {llm_judge.name} failed on all {num_batches} calibration batches",
                         fix="check the judge model or endpoint")
    partitions = [reference[i].clusters for i in kept]
    judged = [batches[i] for i in kept]
    form_threshold = None
    if views == "subject":
        trees = EmbeddingJudge(embed=embed, form_threshold=None).linkages(judged)
        threshold, curve = fit_threshold(partitions, trees, k, thresholds=thresholds, metric=metric)
    else:
        judge = EmbeddingJudge(embed=embed, form_threshold=DEFAULT_FORM_THRESHOLD)
        judge.embed([t for batch in judged for t in batch])
        threshold, form_threshold, curve = fit_cuts(partitions, [judge.distances(b) for b in judged], k,
                                                    thresholds=thresholds, form_thresholds=form_thresholds,
                                                    metric=metric)
    chosen = next(row for row in curve if row["threshold"] == threshold)
    return Calibration(threshold=threshold, form_threshold=form_threshold, metric=metric,
                       agreement=chosen[metric], llm_judge=llm_judge.name,
                       llm_score=float(np.mean([batch_score(p) for p in partitions])),
                       embed_score=chosen["embed_score"], k=k, num_batches=len(kept),
                       num_failed=num_batches - len(kept), curve=tuple(curve), calls=sum(r.calls for r in reference),
                       prompt_tokens=sum(r.prompt_tokens for r in reference),
                       completion_tokens=sum(r.completion_tokens for r in reference))


@dataclass(frozen=True)
class Confirmation:
    """The LLM judge's D of a corpus, estimated from paired batches: the embedding judge's D
    (measured on its own, larger sample) plus the mean difference LLM − embedding D_i over
    batches both judges scored. Unbiased for the LLM judge's D whatever the embedding judge
    does; the closer the two agree batch by batch, the fewer LLM batches reach a precision."""

    score: float
    ci_low: float  # 95%: the two independent halves' intervals added in quadrature
    ci_high: float
    half_width: float
    embed_score: float
    embed_half_width: float
    mean_difference: float
    difference_half_width: float
    llm_score: float  # mean LLM D_i over the paired batches alone (its own, wider interval)
    llm_half_width: float
    num_batches: int  # scored by both judges
    num_failed: int  # LLM batches that failed (excluded)
    llm_judge: str
    calls: int
    prompt_tokens: int
    completion_tokens: int


def confirm_score(texts: Sequence[str], llm_judge: Judge, embed_judge: Judge, embed_score: float,
                  embed_half_width: float, *, k: int, rng: np.random.Generator, precision: float,
                  max_batches: int, min_batches: int = 20, chunk_size: int = 10) -> Confirmation:
    """Judge random K-batches with both judges, a chunk at a time, until the mean difference's
    95% half-width is within `precision` (after at least `min_batches`; the embedding judge's D
    was measured to its own precision) or `max_batches` are spent."""
    check_batch_inputs(len(texts), k, 1, max_batches)
    llm, diff, failed, cost = [], [], 0, [0, 0, 0]
    spent = 0
    while spent < max_batches:
        rows = sample_batches(len(texts), k, min(chunk_size, max_batches - spent), rng)
        spent += len(rows)
        batches = [[texts[i] for i in row] for row in rows]
        for a, b in zip(llm_judge.cluster(batches), embed_judge.cluster(batches)):
            cost = [cost[0] + a.calls, cost[1] + a.prompt_tokens, cost[2] + a.completion_tokens]
            if a.failed:
                failed += 1
                continue
            llm.append(batch_score(a.clusters))
            diff.append(llm[-1] - batch_score(b.clusters))
        if len(diff) >= min_batches and mean_half_width(diff) <= precision:  # the embedding half has its own
            break
    hw = float(np.hypot(embed_half_width, mean_half_width(diff))) if diff else float("inf")
    if not diff:
        raise ScoreError(f"judge {llm_judge.name} failed on all {spent} confirmation batches",
                         fix="check the judge model or endpoint")
    score = embed_score + float(np.mean(diff))
    return Confirmation(score=score, ci_low=score - hw, ci_high=score + hw, half_width=hw, embed_score=embed_score,
                        embed_half_width=embed_half_width, mean_difference=float(np.mean(diff)),
                        difference_half_width=mean_half_width(diff), llm_score=float(np.mean(llm)),
                        llm_half_width=mean_half_width(llm),
                        num_batches=len(diff), num_failed=failed, llm_judge=llm_judge.name, calls=cost[0],
                        prompt_tokens=cost[1], completion_tokens=cost[2])


def mean_half_width(values: Sequence[float]) -> float:
    """95% t-interval half-width of the mean of `values` (inf below two values)."""
    from generator.judges.intervals import _t_quantile

    if len(values) < 2:
        return float("inf")
    return _t_quantile(0.95, len(values) - 1) * float(np.std(values, ddof=1)) / float(np.sqrt(len(values)))


def separating_threshold(vectors: np.ndarray, labels: Sequence[str], *,
                         thresholds: Sequence[float] = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))
                         ) -> tuple[float, float]:
    """The cosine-distance cut that best separates same-label pairs (distance <= cut) from
    different-label pairs, by balanced accuracy; returns (cut, balanced accuracy)."""
    from generator.judges.embedding import cosine_distances

    labels = np.asarray(labels)
    rows, cols = np.triu_indices(len(labels), 1)
    distance = cosine_distances(vectors)
    same = labels[rows] == labels[cols]
    if same.all() or not same.any():
        raise ValueError("separating_threshold needs pairs with the same label and pairs with different labels")
    scores = [(np.mean(distance[same] <= t) + np.mean(distance[~same] > t)) / 2 for t in thresholds]
    best = int(np.argmax(scores))
    return float(thresholds[best]), float(scores[best])


def format_calibration(calibration: Calibration) -> str:
    """The chosen threshold and the agreement curve, as plain text."""
    form = calibration.form_threshold
    cuts = f"threshold {calibration.threshold:g}" + (f", form threshold {form:g}" if form is not None else "")
    lines = [f"{cuts} ({calibration.metric} {calibration.agreement:.3f}) · "
             f"LLM D {calibration.llm_score:.3f} vs embedding D {calibration.embed_score:.3f} · "
             f"{calibration.num_batches} batches, {calibration.num_failed} failed"]
    for row in calibration.curve:
        form_cut = f"  form t={row['form_threshold']:.2f}" if "form_threshold" in row else ""
        lines.append(f"  t={row['threshold']:.2f}{form_cut}  ARI {row['adjusted_rand']:.3f}  "
                     f"pairs {row['pair_agreement']:.3f}  embed D {row['embed_score']:.3f}")
    return "\n".join(lines)
