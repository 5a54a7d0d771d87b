"""Attribution of a clustering to the grid's values, over pairs of documents judged in one batch.

`attribute_column`: for each value, how often two documents sharing it land in one cluster
(`protocol.attribute_cells` builds the record from it). `attribute_mates`: for each value, how
often its documents share a cluster with any batch-mate, whatever the mate's value (what the
controller reweights by). `attribute_views`: with the two-view
judge, what each value adds under each view alone: how rarely its documents share a cluster
with documents of the column's other values, against the view's baseline, as

    apart = 1 - (same-cluster rate of pairs with one document of the value and one of another)
                / (same-cluster rate of all pairs)

1: its documents never share a cluster with the others'; 0: as often as any two documents;
negative: more often. A value adds a view's diversity when its `apart` under that view is at
least APART over at least MIN_PAIRS such pairs: a style that adds only form writes the same
subjects in a form of its own, one that adds only subject is written like the rest but about
something else. The functions take any object with `k`, `batch_docs` and `batches` (a
`protocol.DiversityReport`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

APART = 0.5  # the least `apart` under a view for a value to add that view's diversity
MIN_PAIRS = 20  # mixed pairs a value needs before it is said to add anything


def pair_arrays(report) -> tuple[np.ndarray, np.ndarray]:
    """(B, K) document indices and cluster labels of the scored batches."""
    rows = [(docs, b) for docs, b in zip(report.batch_docs, report.batches)
            if not b.failed and sum(map(len, b.clusters)) == report.k]  # "drop" leaves partial batches
    docs = np.array([d for d, _ in rows], dtype=np.int64).reshape(len(rows), report.k)
    labels = np.zeros_like(docs)
    for row, (_, batch) in enumerate(rows):
        for label, cluster in enumerate(batch.clusters):
            labels[row, list(cluster)] = label
    return docs, labels


def value_codes(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(names, code of each document); a missing value is the empty name."""
    return np.unique(np.asarray([v if v is not None else "" for v in values], dtype=object).astype(str),
                     return_inverse=True)


def attribute_column(values: Sequence[str], docs: np.ndarray, left: np.ndarray, right: np.ndarray,
                     same: np.ndarray, baseline: float) -> dict:
    """value -> pairs sharing it, how many of them share a cluster, that rate and its lift over
    `baseline`. Empty values are skipped."""
    names, codes = value_codes(values)
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


def attribute_mates(report, metadata: Mapping[str, Sequence[str]]) -> dict:
    """column -> value -> {mates, same_cluster, mate_rate, mate_lift}: over every pair judged in
    one batch, counted once from each end, the pairs a document of the value takes part in, how
    many of them share a cluster, that rate and its lift over the baseline rate of all pairs.
    Up to a constant this is the gradient of the pairs' same-cluster rate in the value's weight:
    pairs within the value count with the value's share, pairs with other values (subject or
    form apart, under whatever views the judge clusters on) with theirs. Empty values are skipped
    as values but count as mates."""
    docs, labels = pair_arrays(report)
    left, right = np.triu_indices(report.k, 1)
    same = (labels[:, left] == labels[:, right]).ravel()
    baseline = float(same.mean()) if same.size else float("nan")
    out: dict = {}
    for column, values in metadata.items():
        names, codes = value_codes(values)
        ends = np.concatenate([codes[docs][:, left].ravel(), codes[docs][:, right].ravel()])
        mates = np.bincount(ends, minlength=len(names))
        together = np.bincount(ends, weights=np.concatenate([same, same]), minlength=len(names))
        out[column] = {}
        for i, name in enumerate(names):
            if name == "" or mates[i] == 0:
                continue
            rate = float(together[i] / mates[i])
            out[column][name] = {"mates": int(mates[i]), "same_cluster": int(together[i]), "mate_rate": rate,
                                 "mate_lift": rate / baseline if baseline > 0 else None}
    return out


def apart_column(values: Sequence[str], report) -> tuple[float, dict]:
    """(the view's baseline rate, value -> its mixed pairs, their same-cluster rate and `apart`)
    for one clustering `report`. Pairs with an empty value count in the baseline only."""
    docs, labels = pair_arrays(report)
    left, right = np.triu_indices(report.k, 1)
    same = labels[:, left] == labels[:, right]
    baseline = float(same.mean()) if same.size else float("nan")
    names, codes = value_codes(values)
    a, b = codes[docs][:, left], codes[docs][:, right]
    mixed = (a != b) & (names[a] != "") & (names[b] != "")
    out = {}
    for i, name in enumerate(names):
        if name == "":
            continue
        mine = mixed & ((a == i) | (b == i))
        pairs = int(mine.sum())
        rate = float(same[mine].mean()) if pairs else None
        apart = 1 - rate / baseline if pairs and baseline > 0 else None
        out[name] = {"mixed_pairs": pairs, "mixed_rate": rate, "apart": apart}
    return baseline, out


def attribute_views(reports: Mapping[str, object], metadata: Mapping[str, Sequence[str]]) -> dict:
    """column -> value -> {view: {mixed_pairs, mixed_rate, apart}, "adds": the views whose
    diversity it adds}, from each view's clustering of the same batches (`reports`: view ->
    report)."""
    out: dict = {}
    for column, values in metadata.items():
        per_view = {view: apart_column(values, report)[1] for view, report in reports.items()}
        names = sorted({name for stats in per_view.values() for name in stats})
        out[column] = {name: {**{view: per_view[view][name] for view in per_view},
                              "adds": [view for view in per_view if adds(per_view[view][name])]}
                       for name in names}
    return out


def adds(stats: dict) -> bool:
    """Whether a value's pairs with other values show it apart under one view."""
    return stats["apart"] is not None and stats["mixed_pairs"] >= MIN_PAIRS and stats["apart"] >= APART
