"""The shift bound's rules over measured pilots (pure functions, no I/O).

A pilot is a `Round` with a concentration c, a score D and a shift (MMD² from the reference).
`settle_pilots` picks the pilot the main phase continues at when no pilot met both the target
and the bound; `allowed_concentrations` is the range of c that the pilots' (c, shift) points
keep under the bound, and `clamp_concentration` keeps the
controller's later choices of c inside it; `retreat` moves c towards smaller shift when the
corpus itself is over the bound.

A shift counts as under the bound only with a margin for its noise: its one-sided 95% upper
bound, MMD² + 1.645·se, must be under it. A 50-document pilot's MMD² has a standard error
comparable to the distance between a pilot just under the bound and the corpus that follows it
(BENCHMARKS.md, issue 13).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from generator.run.state import Round

MARGIN_Z = 1.645  # one-sided 95%: the margin for a shift's noise, in standard errors


def upper(shift: float, se: float) -> float:
    """A shift's one-sided 95% upper bound."""
    return shift + MARGIN_Z * se


def above(shift: float | None, se: float, max_shift: float | None) -> bool:
    """Not surely under the bound: the shift's upper bound is over it."""
    return shift is not None and max_shift is not None and upper(shift, se) > max_shift


def reaches(points: Sequence[Round], target: float, tolerance: float) -> bool:
    """A point within tolerance of the target, or points on both sides of it."""
    scores = [p.score for p in points]
    return bool(scores) and (any(abs(d - target) <= tolerance for d in scores)
                             or min(scores) < target < max(scores))


def settle_pilots(pilots: Sequence[Round], target: float, tolerance: float,
                  max_shift: float | None, limited: bool = False) -> tuple[int | None, str]:
    """The index of the pilot to continue at and the constraint that binds ("" when none does).

    Without a bound: the pilot closest to the target. With one: the closest among the pilots
    under the bound (None when no pilot is under it: the run cannot continue). `max_shift`
    binds when all pilots reach the target (one within tolerance, or a bracket) but those under
    the bound do not, or when none is under the bound; `target` binds when the chosen pilot
    misses the target for another reason (out of reach, or the pilot budget ran out). `limited`:
    the pilots ended because the bound's limit on c stopped the fit's next step towards the
    target, so the bound binds even when one pilot's own draw scored within tolerance."""
    closest = lambda idx: min(idx, key=lambda i: abs(pilots[i].score - target))  # noqa: E731
    everyone = range(len(pilots))
    if max_shift is None:
        return closest(everyone), ""
    under = [i for i in everyone
             if pilots[i].shift is not None and not above(pilots[i].shift, pilots[i].shift_se, max_shift)]
    if not under:
        return None, "max_shift"
    best = closest(under)
    if limited:  # the fit through every pilot put the target past the limit, whatever one pilot's draw scored
        return best, "max_shift"
    if abs(pilots[best].score - target) <= tolerance:
        return best, ""
    kept, nearest = [pilots[i] for i in under], closest(everyone)
    bound_binds = (abs(pilots[nearest].score - target) < abs(pilots[best].score - target)
                   or reaches(pilots, target, tolerance) and not reaches(kept, target, tolerance))
    return best, "max_shift" if bound_binds else "target"


def allowed_concentrations(pilots: Sequence[Round], max_shift: float | None) -> tuple[float, float]:
    """The range of c the pilots' (c, shift upper bound) points keep under the bound. The sign of a
    least-squares line through them says on which side of c the shift grows; the limit on
    that side is where a straight line between the nearest pilot under the bound and the
    nearest one over it, beyond it, crosses the bound (the end of [0, 1] when none is over it
    there; the other end of [0, 1], where the shift is smaller, when no pilot is under it).
    [0, 1] without a bound, with fewer than two distinct c, or with a flat line."""
    points = sorted((p.concentration, upper(p.shift, p.shift_se)) for p in pilots if p.shift is not None)
    if max_shift is None or len({c for c, _ in points}) < 2:
        return 0.0, 1.0
    slope = float(np.polyfit(*np.array(points, dtype=float).T, 1)[0])
    if abs(slope) < 1e-12:
        return 0.0, 1.0
    if slope > 0:  # mirror, so that the shift grows towards small c
        # margins added
        lo, hi = allowed_concentrations([Round(1.0 - c, 0.0, "pilot", s) for c, s in points], max_shift)
        return 1.0 - hi, 1.0 - lo
    under = [(c, s) for c, s in points if s <= max_shift]
    if not under:
        return 1.0, 1.0
    c_u, s_u = under[0]
    over = [(c, s) for c, s in points if c < c_u and s > max_shift]
    if not over:
        return 0.0, 1.0
    c_o, s_o = over[-1]
    return float(c_o + (s_o - max_shift) / (s_o - s_u) * (c_u - c_o)), 1.0


def limit_fit(fit, pilots: Sequence[Round], max_shift: float | None):
    """A fit of D(c) (`knobs.Fit`) with its c moved inside `allowed_concentrations`; its D and
    interval are moved along the fit's local slope to that c."""
    bounded = clamp_concentration(fit.concentration, pilots, max_shift)
    step = fit.slope * (bounded - fit.concentration)
    return dataclasses.replace(fit, concentration=bounded, score=fit.score + step, low=fit.low + step,
                               high=fit.high + step)


def clamp_concentration(c: float, pilots: Sequence[Round], max_shift: float | None) -> float:
    """c moved into `allowed_concentrations(pilots, max_shift)`."""
    lo, hi = allowed_concentrations(pilots, max_shift)
    return float(min(max(c, lo), hi))


def retreat(c: float, pilots: Sequence[Round], max_shift: float | None, shift, share_left: float) -> float:
    """c moved towards smaller shift (the side a least-squares line through the pilots' (c,
    shift) points falls towards) far enough that the rest of the corpus, `share_left` of it,
    brings the whole under the bound: the rest must lie lower by excess / share_left, where the
    excess is the corpus's upper bound over the bound. MMD² is convex in the mixing share, so
    reading the mixture as linear overestimates the whole's shift (this step is on the safe
    side). Unchanged when the corpus is under, nothing is left, or the pilots give no line."""
    points = np.array([(p.concentration, p.shift) for p in pilots if p.shift is not None], dtype=float)
    excess = upper(shift.mmd2, shift.se) - max_shift if max_shift is not None else 0.0
    if excess <= 0 or share_left <= 0 or len(points) < 2 or len(set(points[:, 0])) < 2:
        return c
    slope = float(np.polyfit(points[:, 0], points[:, 1], 1)[0])
    if abs(slope) < 1e-12:
        return c
    return float(np.clip(c - excess / share_left / slope, 0.0, 1.0))


def final_binding(binding: str, max_shift: float | None, achieved: dict | None) -> str:
    """The constraint that binds, for summary.json: "none" without a bound or when the finished
    corpus meets both the target and the bound; "max_shift" when it is over the bound; else
    the one recorded when the pilots ended ("target" when none was)."""
    if max_shift is None:
        return "none"
    if not achieved:  # the run stopped before its corpus was measured
        return binding or "none"
    if achieved.get("within_shift_bound") is False:
        return "max_shift"
    return "none" if achieved["within_tolerance"] else (binding or "target")


def stop_message(pilots: Sequence[Round], target) -> tuple[str, str]:
    """When no pilot is under the bound: the binding constraint and the stop message naming the
    pilot with the smallest shift. The bound binds; the message says whether the target alone
    was reachable."""
    pilots = [p for p in pilots if p.shift is not None]
    b = min(pilots, key=lambda p: p.shift)
    why = ("the target alone is reachable, but not under the bound"
           if reaches(pilots, target.score, target.tolerance)
           else "no pilot is under the bound, and none reached or bracketed the target either")
    return "max_shift", (f"target D={target.score:.3f} and max_shift={target.max_shift} cannot both hold: "
                         f"max_shift binds ({why}); best trade-off c={b.concentration:.3f}, D={b.score:.3f}, "
                         f"MMD²={b.shift:.4f}")


def relative_fields(report, shift, reference_score: float, max_shift: float | None) -> dict:
    """The achieved score relative to the reference's D (interval: the achieved interval over
    the reference's D), and the final shift against the bound."""
    ref = reference_score
    return {"relative": report.score / ref, "relative_ci_low": report.ci_low / ref,
            "relative_ci_high": report.ci_high / ref, "shift": shift.mmd2, "shift_se": shift.se,
            "within_shift_bound": None if max_shift is None else shift.mmd2 <= max_shift}


def shift_fields(shift, target, reference) -> dict:
    """The controller.jsonl fields of the shift bound (none without a reference)."""
    if shift is None:
        return {}
    return {"shift": shift.mmd2, "shift_se": shift.se, "max_shift": target.max_shift,
            "reference_score": reference.score, "relative_target": target.relative}


EFFECT_COLUMNS = ("template", "style", "audience", "persona")  # the values whose effects summary.json lists


def value_effects(attribution: dict | None, shift, min_docs: int = 3) -> dict:
    """summary.json's `by_value`: per column and value of the finished corpus (templates first),
    what it adds compared with the column's other values. `lift`: the same-cluster rate of pairs
    sharing the value over the corpus's, divided by the column's pair-weighted mean lift (below 1:
    its documents fall apart from each other more than other values' do, so it adds diversity);
    `shift`: the mean MMD witness of its documents less the column's document-weighted mean (the
    slope of MMD² in the value's share; above 0: its documents lie farther from the reference
    than the rest, so it adds shift). None for a value with fewer than `min_docs` documents or
    pairs, or a measure not taken."""
    columns = (attribution or {}).get("columns", {})
    witness = shift.by_value if shift is not None else {}
    out: dict = {}
    for column in (c for c in EFFECT_COLUMNS if c in columns or c in witness):
        stats, lifts = witness.get(column, {}), _relative_lifts(columns.get(column, {}), min_docs)
        docs = sum(n for _, n in stats.values())
        mean = sum(g * n for g, n in stats.values()) / docs if docs else 0.0
        rows = {}
        for value in sorted(set(columns.get(column, {})) | set(stats)):
            g, n = stats.get(value, (0.0, 0))
            lift, slope = lifts.get(value), g - mean if n >= min_docs else None
            adds = [name for name, yes in (("diversity", lift is not None and lift < 1),
                                           ("shift", slope is not None and slope > 0)) if yes]
            rows[value] = {"docs": n, "lift": lift, "shift": slope, "adds": adds}
        out[column] = rows
    return out


def _relative_lifts(values: dict, min_pairs: int) -> dict:
    """Each value's lift over the pair-weighted mean lift of the values with `min_pairs` pairs."""
    kept = {v: s for v, s in values.items() if s.get("pairs", 0) >= min_pairs and s.get("lift") is not None}
    pairs = sum(s["pairs"] for s in kept.values())
    mean = sum(s["lift"] * s["pairs"] for s in kept.values()) / pairs if pairs else 0.0
    return {v: s["lift"] / mean for v, s in kept.items()} if mean > 0 else {}
