"""Reweighting away from rejection: the cells and templates whose documents the quality gates
mostly reject lose sampling weight, so a run stops spending engine time on them.

Each main round counts, per grid column (template, topic, persona, style, audience), how many
documents of each value the gates rejected (rejected.jsonl, samples below the round's mark)
against how many were kept (the measured sample of the corpus, scaled to the corpus). A value
rejected more often than its column, beyond chance (Z binomial standard deviations), gets the
factor (its kept share / the column's) ** rate, so only what is worse than the rest of its
column moves; a value needs `min_rows` rejected or kept documents to count. The factors of the
last round replace the ones before (like attribution's):
a rejection rate is re-measured each round on every document so far.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Mapping, Sequence

from generator.records import Weights

COLUMNS = ("template", "topic", "persona", "style", "audience")  # the columns that are weight axes
MIN_ROWS = 5
Z = 3.0  # a value must be rejected this many standard deviations above its column's rate to move
BOUNDS = (0.2, 1.0)  # a value keeps at least a fifth of its weight per round; none gains


def beyond_chance(rejected: float, documents: float, rate: float, z: float = Z) -> bool:
    """More than `z` binomial standard deviations more rejections than the column's `rate` gives."""
    expected = documents * rate
    return rejected - expected > z * math.sqrt(max(documents * rate * (1 - rate), 1e-9))


def rejection_counts(rows: Sequence[Mapping], below: int) -> dict[str, Counter]:
    """Column -> value -> documents rejected, of the rejected.jsonl rows below sample `below`."""
    counts: dict[str, Counter] = {c: Counter() for c in COLUMNS}
    for row in rows:
        if row.get("sample_index", below) >= below:
            continue
        cell = json.loads(row.get("grid_values") or "{}")
        cell["template"] = row.get("template", "")
        for column in COLUMNS:
            if cell.get(column):
                counts[column][str(cell[column])] += 1
    return counts


def rejection_factors(rejected: Mapping[str, Counter], kept: Mapping[str, Sequence[str]], kept_total: int, *,
                      rate: float = 1.0, min_rows: int = MIN_ROWS) -> Weights:
    """Weight axis -> value -> factor in BOUNDS for the values rejected more than their column;
    `kept` is a sample of the kept documents' columns, scaled to `kept_total` documents. Empty
    when nothing was rejected."""
    out: dict[str, dict[str, float]] = {}
    for column in COLUMNS:
        values = kept.get(column) or []
        bad = rejected.get(column, Counter())
        if not values or not sum(bad.values()):
            continue
        scale = kept_total / len(values)
        good = {v: n * scale for v, n in Counter(map(str, values)).items()}
        shares = {v: good.get(v, 0.0) / (good.get(v, 0.0) + bad[v]) for v in set(good) | set(bad)
                  if good.get(v, 0.0) + bad[v] >= min_rows}
        total_good, total = sum(good.values()), sum(good.values()) + sum(bad.values())
        column_share = total_good / total if total else 1.0
        p = 1 - column_share  # the column's rejection rate
        factors = {v: min(max((s / column_share) ** rate, BOUNDS[0]), BOUNDS[1]) for v, s in shares.items()
                   if column_share > 0 and beyond_chance(bad[v], good.get(v, 0.0) + bad[v], p)}
        if factors:
            out[column] = factors
    return out
