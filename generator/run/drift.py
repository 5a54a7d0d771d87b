"""Reweighting away from drift: when a main round's documents leave their topics, move sampling
weight from the templates, styles and domains that drift to those that stay on topic.

The corpus's on-topic share is a mixture of its groups' shares on any one column (template,
style, domain), so no reweighting of a column can lift it above that column's best group. A
drifting value is therefore reweighted only when another value of its column, with enough
documents, meets `min_fidelity`; when the overall share is below it and no column has such a
value, reweighting cannot restore it and the run stops. Only the column whose shares vary
most is reweighted: the others' differences are mostly its mixture (a domain looks drifty
when it drew the drifting template more often).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

from generator.measure.fidelity import MIN_GROUP_DOCS, FidelityCheck, FidelityReport
from generator.records import Weights
from generator.run import knobs
from generator.run.state import RunState
from generator.sampling.grid import Grid

log = logging.getLogger(__name__)

FLOOR = 0.1  # a drifting value keeps at least this factor per round (merged factors stop at 0.05)
AXIS_OF = {"template": "template", "style": "style", "domain": "topic"}  # fidelity column -> weight axis


def drift_factors(report: FidelityReport, min_fidelity: float, grid: Grid | None = None, *,
                  min_docs: int = MIN_GROUP_DOCS, floor: float = FLOOR) -> Weights:
    """Weight factors, weight axis -> value -> factor in [floor, 1), on the one column (template,
    style or domain) that explains drift best: among columns with a value (of at least
    `min_docs` documents) meeting `min_fidelity`, the one whose on-topic shares vary most
    between its values (document-weighted). Each of its values below `min_fidelity` gets
    share / min_fidelity; a domain's factor applies to each of its topics (`grid` names them).
    Its on-topic values get 1 (so the column's weights name them all). Empty when nothing
    drifts or no column has an on-topic value."""
    best, spread = None, 0.0
    for column in AXIS_OF:
        groups = [g for g in report.by(column) if g.num_docs >= min_docs]
        if (any(g.topic_share >= min_fidelity for g in groups)
                and any(g.topic_share < min_fidelity for g in groups)):
            n = sum(g.num_docs for g in groups)
            mean = sum(g.num_docs * g.topic_share for g in groups) / n
            between = sum(g.num_docs * (g.topic_share - mean) ** 2 for g in groups) / n
            if best is None or between > spread:
                best, spread = (column, groups), between
    if best is None:
        return {}
    column, groups = best
    factors = {value: max(floor, min(1.0, g.topic_share / min_fidelity))
               for g in groups for value in _weight_values(column, g.value, grid)}
    return {AXIS_OF[column]: factors}


def _weight_values(column: str, value: str, grid: Grid | None) -> Sequence[str]:
    if column != "domain":
        return [value]
    topics = grid.axes.get("topic") if grid is not None else None
    return [v.value for v in topics.values if v.domain == value] if topics is not None else []


def respond(state: RunState, check: FidelityCheck | None, min_fidelity: float,
            grid: Grid) -> tuple[RunState, str]:
    """What a main round does about its fidelity check: "ok"; "warn" (logged; the only answer
    without target.min_fidelity); "reweight ..." (merged into the drift factors, which the
    controller's weights are derived from, so later changes of c keep them); or "stop" when the
    share is below min_fidelity and no column has an on-topic value to move weight to."""
    if check is None or check.action == "ok":
        return state, "ok"
    log.warning("fidelity: %s", check.message)
    if not min_fidelity or check.report is None:
        return state, "warn"
    factors = drift_factors(check.report, min_fidelity, grid)
    if not factors:
        if check.topic_share >= min_fidelity:
            return state, "warn"
        why = "; no template, style or domain is on topic to move weight to (target.min_fidelity)"
        steering = dataclasses.replace(state.steering, phase="done")
        return dataclasses.replace(state, steering=steering, stopped=check.message + why), "stop"
    s = state.steering
    merged = knobs.merge_factors(s.drift_factors, factors)
    state = dataclasses.replace(state, steering=dataclasses.replace(s, drift_factors=merged))
    return state, "reweight " + describe(factors)


def describe(factors: Weights, limit: int = 6) -> str:
    """'template=b ×0.10, style=blog ×0.50' (a domain's topics collapse to one entry per factor)."""
    parts = []
    for axis, values in factors.items():
        by_factor: dict[float, list[str]] = {}
        for value, f in values.items():
            if f >= 1.0:
                continue
            by_factor.setdefault(round(f, 2), []).append(value)
        for f, names in sorted(by_factor.items()):
            name = names[0] if len(names) == 1 else f"{len(names)} values"
            parts.append(f"{axis}={name} ×{f:.2f}")
    return ", ".join(parts[:limit]) + (f", +{len(parts) - limit} more" if len(parts) > limit else "")
