"""The controller's knobs: pure functions over weights and measured (c, score) points (no I/O).

- Concentration `c` in [0, 1]: on every axis with N values, the first N**c values of a fixed
  seeded order are active: the first floor(N**c) with weight 1, the next with the fractional
  part, the rest with weight 0. c = 1 is the whole grid, evenly; c = 0 is one value per axis.
  Fewer active values → more documents share a subject → lower diversity, so the score moves
  monotonically with c, and continuously (a whole value switched on at once would make D(c) a
  staircase that no fit through a few points can steer between).
- Per-cell reweighting from cluster attribution: a value whose documents share a cluster with
  their batch-mates (of its own value or any other) more often than the axis' average is
  redundant; raising diversity scales it down, lowering diversity scales it up. A value written
  in a form of its own, or about subjects of its own, rarely shares a cluster with other
  values' documents, so it gains weight when diversity must rise.
- The next concentration to try: where a fit of D(c) through every pilot measurement meets the
  target (`fit_concentration`); `next_concentration` is the older bracketing rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from generator.records import Weights
from generator.sampling.grid import Grid


AXIS_ORDER_STREAM = 4242  # the random stream of the axes' fixed orders
MIN_BRACKET = 0.01  # a bracket on c narrower than this cannot be resolved further


def axis_orders(grid: Grid, seed: int) -> dict[str, list[str]]:
    """A fixed, seeded order of each axis' values: concentration keeps a prefix of it."""
    rng = np.random.default_rng([seed, AXIS_ORDER_STREAM])
    return {name: [axis.values[i].value for i in rng.permutation(len(axis.values))]
            for name, axis in grid.axes.items()}


def concentration_weights(orders: Mapping[str, Sequence[str]], c: float) -> Weights:
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"concentration {c} is outside [0, 1]")
    weights: Weights = {}
    for axis, values in orders.items():
        active = float(len(values)) ** c  # 1 at c = 0, every value at c = 1
        whole = int(active)
        weights[axis] = {v: (1.0 if i < whole else active - whole if i == whole else 0.0)
                         for i, v in enumerate(values)}
    return weights


def sampling_weights(orders: Mapping[str, Sequence[str]], c: float,
                     *factors: Mapping[str, Mapping[str, float]]) -> Weights:
    """The weights samples are drawn under: the values active at concentration `c`, each times
    its factor in every set of `factors` (the shift bound's, drift's, the attribution's)."""
    weights = concentration_weights(orders, c)
    for f in factors:
        weights = apply_factors(weights, f)
    return weights


def attribution_factors(weights: Mapping[str, Mapping[str, float]], attribution: Mapping, *,
                        direction: int, rate: float = 1.0, min_pairs: int = 3,
                        bounds: tuple[float, float] = (0.5, 2.0)) -> Weights:
    """Per axis, a factor exp(-direction * rate * (lift / mean_lift - 1)) for each active value
    of `weights` whose documents took part in at least `min_pairs` judged pairs, where lift is
    how often they shared a cluster with a batch-mate over the baseline (`attribution["mates"]`,
    from `judges.attribution.attribute_mates`) and mean_lift the axis' pair-weighted mean: only
    redundancy *relative to the rest of the axis* moves weight. direction=+1 raises diversity
    (more redundant values lose weight), -1 lowers it. Clipped to `bounds`; the "template" axis
    (drift's, run/drift.py) gets none."""
    if direction not in (-1, 1):
        raise ValueError("direction must be +1 (raise diversity) or -1 (lower it)")
    columns = attribution.get("mates", {})
    out: Weights = {}
    for axis, values in weights.items():
        if axis == "template":
            continue
        stats = {v: s for v, s in columns.get(axis, {}).items()
                 if s["mates"] >= min_pairs and s.get("mate_lift") is not None and values.get(v, 0) > 0}
        pairs = sum(s["mates"] for s in stats.values())
        mean_lift = sum(s["mate_lift"] * s["mates"] for s in stats.values()) / pairs if pairs else 1.0
        if stats and mean_lift > 0:
            out[axis] = {v: min(max(math.exp(-direction * rate * (s["mate_lift"] / mean_lift - 1.0)),
                                    bounds[0]), bounds[1]) for v, s in stats.items()}
    return out


def update_weights(weights: Mapping[str, Mapping[str, float]], attribution: Mapping, *,
                   direction: int, rate: float = 1.0, min_pairs: int = 3,
                   bounds: tuple[float, float] = (0.5, 2.0)) -> Weights:
    """`weights` times their `attribution_factors`; inactive (zero-weight) values stay inactive."""
    factors = attribution_factors(weights, attribution, direction=direction, rate=rate, min_pairs=min_pairs,
                                  bounds=bounds)
    return apply_factors(weights, factors)


def next_concentration(history: Sequence[tuple[float, float]], target: float,
                       floor: float | None = None) -> float | None:
    """The next c to pilot, given measured (c, score) pairs (with `floor`, the lowest score the
    judge can give, the first step interpolates towards it); None when the target lies outside
    the measured range at an end of [0, 1] (c = 1 measured below it, or c = 0 above it), or
    when the bracket around it is narrower than MIN_BRACKET."""
    below = [(c, d) for c, d in history if d < target]
    above = [(c, d) for c, d in history if d >= target]
    if floor is not None and len(history) == 1 and above and floor < target:
        # First guess: interpolate towards the judge's floor (1/K) at c = 0 instead of spending
        # a pilot round measuring c = 0; later rounds measure both ends when they need to.
        (c1, d1), = above
        return float(min(max(c1 * (target - floor) / (d1 - floor), 0.05), 0.95))
    if not above:
        return None if any(c >= 1.0 for c, _ in below) else 1.0
    if not below:
        return None if any(c <= 0.0 for c, _ in above) else 0.0
    (c_lo, d_lo), (c_hi, d_hi) = max(below), min(above)
    if 0 <= c_hi - c_lo < MIN_BRACKET:
        return None  # converged as far as c can resolve: the caller keeps the closest point
    if c_hi <= c_lo:  # noisy, non-monotone measurements: bisect the latest disagreement
        return (c_lo + c_hi) / 2
    frac = (target - d_lo) / (d_hi - d_lo) if d_hi > d_lo else 0.5
    frac = min(max(frac, 0.1), 0.9)  # stay inside the bracket so it always shrinks
    return c_lo + frac * (c_hi - c_lo)


Z95 = 1.96
CURVATURE = 10.0  # |d²D/dc²| allowed for: a point Δc away may miss the local line by CURVATURE·Δc²/2
MIN_SLOPE = 0.5  # dD/dc: the score rises with c; a flatter (or falling) fit is noise
DEFAULT_SLOPE = 5.0  # dD/dc when the points give no slope
FLOOR_SD = 0.1  # how far the judge's floor 1/K may lie from the score at c = 0
MAX_BRACKET = 0.1  # the fit may end the pilots only between pilots this close in c (or closer)


@dataclass(frozen=True)
class Fit:
    """Where a local line through the measured (c, D) points meets the target."""

    concentration: float  # c where the fitted line meets the target (clipped to [0, 1])
    score: float  # fitted D at that c
    low: float  # 95% interval of the fitted D there (measurement, curvature allowance and scatter)
    high: float
    slope: float  # fitted dD/dc there
    bracket: float  # width in c of the tightest pair of pilots around the target (inf: none)

    def within(self, target: float, tolerance: float) -> bool:
        """Pilots bracket the target closely and the fit's 95% interval at its c lies inside
        target ± tolerance."""
        return (self.bracket <= MAX_BRACKET and target - tolerance <= self.low
                and self.high <= target + tolerance)


def fit_concentration(points: Sequence[tuple[float, float, float]], target: float, *,
                      floor: float | None = None, start: float = 0.5) -> Fit | None:
    """Fit D(c) through every measured (c, D, 95% half-width) point and find the c where it
    meets `target`. The fit is a weighted line centred on that c (found by iteration from
    `start`): each point weighs 1 / (its standard error² + (CURVATURE·Δc²/2)²), so near points
    decide and far ones only steady the slope; the judge's floor (1/K) enters as a loose point
    at c = 0; with three or more points the covariance is scaled up by χ²/dof when they disagree
    more than their intervals say. None when the target lies outside what the ends of [0, 1]
    measured (c = 1 below it, or c = 0 above it)."""
    if not points:
        raise ValueError("fit_concentration needs at least one measured point")
    below = [c for c, d, _ in points if d < target]
    above = [c for c, d, _ in points if d >= target]
    if not above and any(c >= 1.0 for c in below) or not below and any(c <= 0.0 for c in above):
        return None
    x, y, sd = _rows(points, target, floor)
    at = float(min(max(start, 0.0), 1.0))
    for _ in range(50):
        level, slope, se = _local_line(x, y, sd, at)
        nxt = float(min(max(at + (target - level) / slope, 0.0), 1.0))
        if abs(nxt - at) < 1e-5:
            break
        at = nxt
    at = 0.0 if at < MIN_BRACKET else at  # at the low end the judge's floor is only a bound: measure c = 0
    level, slope, se = _local_line(x, y, sd, at)
    return Fit(concentration=at, score=level, low=level - Z95 * se, high=level + Z95 * se, slope=slope,
               bracket=abs(min(above) - max(below)) if above and below else math.inf)


def level_at(points: Sequence[tuple[float, float, float]], c: float, target: float, *,
             floor: float | None = None) -> tuple[float, float]:
    """(D, its standard error) at `c` on the local line through every measured (c, D, 95%
    half-width) point: a lucky round among unlucky neighbours is pulled towards them."""
    level, _, se = _local_line(*_rows(points, target, floor), c)
    return level, se


def _rows(points, target: float, floor: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [(c, d, max(hw / Z95, 1e-3)) for c, d, hw in points]
    if floor is not None and floor < target and not any(c <= 0.0 for c, _, _ in rows):
        rows.append((0.0, floor, FLOOR_SD))
    x, y, sd = (np.array(v, dtype=float) for v in zip(*rows))
    return x, y, sd


def _local_line(x: np.ndarray, y: np.ndarray, sd: np.ndarray, at: float) -> tuple[float, float, float]:
    """(D at `at`, slope, standard error of that D) of the weighted line centred on `at`."""
    u = x - at
    w = 1.0 / (sd ** 2 + (CURVATURE * u ** 2 / 2) ** 2)
    mean_u = float((w * u).sum() / w.sum())
    spread = float((w * (u - mean_u) ** 2).sum())
    slope = float((w * (u - mean_u) * y).sum()) / spread if spread > 1e-12 else DEFAULT_SLOPE
    slope = max(slope, MIN_SLOPE)
    level = float((w * (y - slope * u)).sum() / w.sum())
    # the slope's uncertainty carried to `at`
    var = 1.0 / w.sum() + (mean_u ** 2 / spread if spread > 1e-12 else 0.0)
    if len(x) > 2:
        var *= max(1.0, float((w * (y - level - slope * u) ** 2).sum()) / (len(x) - 2))
    return level, slope, math.sqrt(var)


def bracket_crossing(points: Sequence[tuple[float, float, float]],
                     target: float) -> tuple[float, float] | None:
    """(c, 95% half-width of D there) where the chord between the closest measured (c, D, 95%
    half-width) points either side of `target` meets it. None without such a pair at most
    MAX_BRACKET apart in c, or when the point above lies below the one below in c. Between
    points that close the chord follows a curved D(c) better than a line fitted through points
    farther out: a concave D(c) pulls that line below itself at the crossing."""
    pair = _tightest_bracket(points, target)
    if pair is None:
        return None
    low, high = pair
    if not 0 < high[0] - low[0] <= MAX_BRACKET:
        return None
    w = (target - low[1]) / (high[1] - low[1])
    return low[0] + w * (high[0] - low[0]), math.hypot((1 - w) * low[2], w * high[2])


def bracket_width(history: Sequence[tuple[float, float]], target: float) -> float:
    """Width in c of the tightest bracket around the target (inf when there is none)."""
    pair = _tightest_bracket(history, target)
    return abs(pair[1][0] - pair[0][0]) if pair is not None else float("inf")


def _tightest_bracket(points: Sequence[tuple], target: float) -> tuple[tuple, tuple] | None:
    """Of points (c, D, ...): the one below `target` at the highest c and the one at or above it
    at the lowest c (ties in c broken by D, nearer the target); None unless there are both."""
    below = [p for p in points if p[1] < target]
    above = [p for p in points if p[1] >= target]
    return (max(below), min(above)) if below and above else None


def correct_concentration(history: Sequence[tuple[float, float]], c: float, score: float,
                          target: float, gain: float = 0.7) -> float:
    """During the main phase: move c against the whole-corpus error, using the slope of the
    measured (c, score) curve near c (a mixture of rounds needs the new round to overshoot)."""
    pts = sorted(set(history))
    # slopes between measurements at least 0.05 apart: closer pairs are dominated by noise
    slopes = [(d2 - d1) / (c2 - c1) for i, (c1, d1) in enumerate(pts) for c2, d2 in pts[i + 1:]
              if c2 - c1 >= 0.05 and abs(c1 - c) <= 0.3 and abs(c2 - c) <= 0.3]
    slope = max(float(np.median(slopes)), 0.5) if slopes else 5.0
    return float(min(max(c + gain * (target - score) / slope, 0.0), 1.0))


def weights_summary(weights: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per axis: active values and the effective number of values (exp of the entropy)."""
    out = {}
    for axis, values in weights.items():
        w = np.array([x for x in values.values() if x > 0], dtype=float)
        p = w / w.sum() if w.size else w
        out[axis] = {"active": int(w.size), "total": len(values),
                     "effective": float(np.exp(-(p * np.log(p)).sum())) if w.size else 0.0}
    return out


# ---- the shift bound -------------------------------------------------------------------------

def value_witness(columns: Mapping[str, Sequence[str]],
                  witness: Sequence[float]) -> dict[str, dict[str, tuple[float, int]]]:
    """Per axis and value: (mean MMD witness of its documents, number of documents). Empty
    values are skipped. The mean witness of a value is the slope of MMD² in its share."""
    w = np.asarray(witness, dtype=float)
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for axis, values in columns.items():
        if len(values) != len(w):
            raise ValueError(f"column {axis!r} has {len(values)} values for {len(w)} witness values")
        groups: dict[str, list[float]] = {}
        for value, x in zip(values, w):
            if value:
                groups.setdefault(value, []).append(float(x))
        out[axis] = {v: (float(np.mean(xs)), len(xs)) for v, xs in groups.items()}
    return out


def shift_factors(weights: Mapping[str, Mapping[str, float]], witness_by_value: Mapping, *, rate: float = 1.0,
                  min_docs: int = 3, bounds: tuple[float, float] = (0.5, 2.0)) -> Weights:
    """Per axis, a weight factor for each active value with at least `min_docs` documents:
    exp(-rate * (g - mean_g) / sd_g), g its mean witness, mean and sd over the axis' values
    (document-weighted mean), clipped to `bounds`. Values whose documents lie far from the
    reference lose weight, close ones gain it; an axis whose values all look alike is left alone."""
    out: Weights = {}
    for axis, values in weights.items():
        stats = {v: s for v, s in witness_by_value.get(axis, {}).items()
                 if s[1] >= min_docs and values.get(v, 0) > 0}
        if len(stats) < 2:
            continue
        g = np.array([s[0] for s in stats.values()])
        n = np.array([s[1] for s in stats.values()], dtype=float)
        mean, sd = float((g * n).sum() / n.sum()), float(g.std())
        if sd <= 1e-12:
            continue
        out[axis] = {v: float(min(max(math.exp(-rate * (s[0] - mean) / sd), bounds[0]), bounds[1]))
                     for v, s in stats.items()}
    return out


def apply_factors(weights: Mapping[str, Mapping[str, float]],
                  factors: Mapping[str, Mapping[str, float]]) -> Weights:
    """Weights times per-value factors (values without a factor keep their weight); an axis with
    factors but no weights (e.g. "template") is kept as its factors."""
    out = {axis: {v: w * factors.get(axis, {}).get(v, 1.0) for v, w in values.items()}
           for axis, values in weights.items()}
    return out | {axis: dict(values) for axis, values in factors.items() if axis not in out}


def merge_factors(old: Mapping[str, Mapping[str, float]], new: Mapping[str, Mapping[str, float]],
                  bounds: tuple[float, float] = (0.05, 20.0)) -> Weights:
    """Accumulated factors: the product of old and new per value, clipped to `bounds`."""
    out = {axis: dict(values) for axis, values in old.items()}
    for axis, values in new.items():
        for v, f in values.items():
            out.setdefault(axis, {})[v] = float(min(max(out.get(axis, {}).get(v, 1.0) * f, bounds[0]),
                                                    bounds[1]))
    return out


def best_tradeoff(points: Sequence[tuple[float, float]], target: float, tolerance: float,
                  max_shift: float) -> tuple[int, str]:
    """Among measured (score, shift) points: the index of the best trade-off and the constraint
    that binds. Under the bound, the point closest to the target; with none under it, the
    smallest shift. `max_shift` binds when the target alone was reachable (a point within
    tolerance, or points on both sides of it); else the target binds."""
    under = [i for i, (_, s) in enumerate(points) if s <= max_shift]
    if under:
        best = min(under, key=lambda i: abs(points[i][0] - target))
    else:
        best = min(range(len(points)), key=lambda i: points[i][1])
    scores = [d for d, _ in points]
    reachable = any(abs(d - target) <= tolerance for d in scores) or min(scores) < target < max(scores)
    return best, "max_shift" if reachable else "target"


# samples drawn past a main round's end before its correction takes effect, in backend capacities
LOOKAHEAD_CAPACITIES = 2.5


def lookahead(recipe, capacity: int) -> int:
    """Samples drawn under a main round's weights past its end: enough to keep the engines full
    until the round can be measured and the judge has run. Documents commit in sample order, so
    a round ends when its slowest sample returns; an output at max_tokens takes about 2.5 mean
    outputs' time (lognormal lengths, median 350 tokens, at max_tokens 1024), in which the
    engines finish 2.5 capacities of other samples. A correction takes effect that far past the
    round's end (on a shallow corpus less: `round_lookahead`)."""
    return max(1, int(LOOKAHEAD_CAPACITIES * capacity))


def round_lookahead(lookahead: int, num_docs: int, num_rounds: int) -> int:
    """The samples drawn under a main round's weights past its end: `lookahead` where a
    correction that far past the first round's end still reaches the corpus's first half (or
    where none could), else as many as bring the first correction to its middle. The engines
    then run short at each round's end while its slowest samples finish: a corpus that shallow
    is steered by its main rounds or not at all."""
    first = -(-num_docs // max(1, num_rounds))
    cut = num_docs // 2 - first
    return lookahead if cut <= 0 or first + lookahead <= num_docs / 2 else cut


def round_end(have: int, num_docs: int, rounds_left: int) -> int:
    """The document count a main round ends at: the rest split evenly over the rounds left."""
    return min(num_docs, have + -(-(num_docs - have) // max(1, rounds_left)))
