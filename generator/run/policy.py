"""What the controller does next: one pure function of the measured rounds and the goal (no I/O).

`decide(history, goal)` reads the round just measured (the last of `history`) and returns a
`Decision`. A pilot round is a sweep: several concentrations measured at once. After a sweep:
accept its point closest to the target, sweep again around the fitted crossing (at most once
more by default, and only within the calibration budget), go on at the fitted c, grow the grid,
settle at the best point under the shift bound, or stop with a reason; where pilots lie close
either side of the target, the c gone on at is where the chord between them meets it, and
`main_lookahead` says how far main rounds draw ahead of their corrections. After a main round:
keep the weights, or correct c (and reweight cells by attribution), and, over the shift bound,
move c and weight away from the reference's far side. A target c cannot reach (D beyond it with
c held at 0 or 1) is named with the fix in `out_of_reach`: the run stops, or, for a rewrite run
and at c = 1, goes on at that end of the range. `controller.py` applies a decision.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Sequence

from generator.run import knobs, shift_bound
from generator.run.state import Round

Action = Literal["accept", "pilot", "go_on", "grow", "settle", "stop", "keep", "correct"]


@dataclass(frozen=True)
class Goal:
    """What the steering aims at: the target, its bound and its budgets."""

    score: float
    tolerance: float
    k: int
    num_docs: int  # documents of the finished corpus
    max_pilot_rounds: int  # pilot rounds (sweeps)
    max_shift: float | None = None  # None without a reference corpus
    can_grow: bool = False  # the grid has a topic axis and target.grow_grid is on
    max_growth_rounds: int = 0
    judge: str = "judge"  # the judge's name, for a stop message
    pilot_docs: int = 100  # samples per sweep point
    max_discarded: int = 0  # pilot documents the calibration may discard in all (a refining sweep must fit)
    discarded: int = 0  # pilot documents discarded so far, and those of the sweep just measured but one point
    num_rounds: int = 0  # main rounds (0: none to rely on for a correction, so a sweep refines when it can)
    lookahead: int = 0  # samples drawn past a main round's end before its correction takes effect
    rewrite: bool = False  # a rewrite run: c steers the rewrite axes; the source's documents stay fixed
    relative_to: float = 0.0  # the reference's D when target.relative sets the score (0: an absolute target)

    @property
    def rounds_correct(self) -> bool:
        """Main rounds can still correct the corpus after the sweeps: the first correction takes
        effect within its first half. Then a refining sweep is not worth its barrier (every engine
        waits for the sweep's slowest sample); on a shallower corpus the sweep's c decides it."""
        return bool(self.num_rounds) and self.num_docs / self.num_rounds + self.lookahead <= self.num_docs / 2

    @property
    def floor(self) -> float:
        """The lowest score the judge can give (every document its own cluster is 1; all in one is 1/K)."""
        return 1 / self.k


@dataclass(frozen=True)
class Decision:
    """What comes next. `concentration`: the c to generate at; `reweight`: the direction of the
    attribution reweighting (+1 raise diversity, -1 lower it, 0 none); `away_from_far`: move
    weight away from values whose documents lie far from the reference; `keep`: the point of
    the last sweep (its c) whose documents go into the corpus (accept, or a settle at it);
    `binding`: the constraint that binds; `points`: the concentrations of the next sweep;
    `out_of_reach`: why c cannot bring D to the target, with the fix ("" when it may)."""

    action: Action
    concentration: float
    reason: str
    reweight: int = 0
    away_from_far: bool = False
    keep: float | None = None
    binding: str = ""
    points: tuple[float, ...] = ()
    out_of_reach: str = ""


def decide(history: Sequence[Round], goal: Goal) -> Decision:
    """The next step after the last round of `history` (a pilot or a main round)."""
    if not history:
        raise ValueError("decide needs the round just measured")
    return decide_main(history, goal) if history[-1].kind == "main" else decide_pilot(history, goal)


def over_bound(r: Round, goal: Goal) -> bool:
    return shift_bound.above(r.shift, r.shift_se, goal.max_shift)


def shift_note(r: Round, goal: Goal) -> str:
    return f"MMD² {r.shift:.4f} ± {r.shift_se:.4f} over max_shift {goal.max_shift}"


CALIBRATION_SHARE = 0.05  # pilot documents a run may discard, as a share of the corpus (refining sweeps)
# the first pilot round's concentrations; the judge's floor stands in at c = 0
FIRST_SWEEP = (1.0, 0.65, 0.4, 0.2)
MIN_C = 0.02  # no pilot point below this c (at c = 0 the judge's floor is known without generating)
MAX_STEP = 0.2  # the most a main round moves c
REFINE_POINTS = 3  # points of the refining sweep around the fitted crossing


def sweep_points(fit, goal: Goal) -> tuple[float, ...]:
    """The refining sweep: the fitted c and one point each side, as far as the fit's interval
    reaches in c (at least 0.05), inside [MIN_C, 1]."""
    half = max(0.05, (fit.high - fit.low) / 2 / max(fit.slope, knobs.MIN_SLOPE))
    points = {round(min(max(fit.concentration + k * half, MIN_C), 1.0), 4) for k in (-1, 0, 1)}
    return tuple(sorted(points, reverse=True))[:REFINE_POINTS]


def decide_pilot(history: Sequence[Round], goal: Goal) -> Decision:
    """After a sweep (the last pilot round's points): accept its point closest to the target
    when within tolerance; sweep again around where a fit of D(c) through every point meets
    the target, or go on at that c; grow the grid; settle at the best point under the shift
    bound; or stop. A point over the shift bound is never accepted."""
    decision = _pilot_step(history, goal)
    last = [h for h in history if h.kind == "pilot" and h.sweep == history[-1].sweep]
    far = [h for h in last if over_bound(h, goal)]
    if far and decision.action not in ("stop", "accept"):  # an accepted point is never over the bound
        worst = max(far, key=lambda h: h.shift)
        reason = f"{decision.reason}; {shift_note(worst, goal)}: weight moved away from far values"
        return dataclasses.replace(decision, reason=reason, away_from_far=True)
    return decision


def _pilot_step(history: Sequence[Round], goal: Goal) -> Decision:
    pilots = [h for h in history if h.kind == "pilot"]
    sweep = [h for h in pilots if h.sweep == history[-1].sweep]
    points = [(h.concentration, h.score, h.spread) for h in pilots]
    # D at each c on the line through every point: with its neighbours, not the lucky draw alone
    close = []
    for h in sweep:
        level, _ = knobs.level_at(points, h.concentration, goal.score, floor=goal.floor)
        allowed = min(goal.tolerance, max(goal.tolerance / 2, h.half_width))
        miss = max(abs(h.score - goal.score), abs(level - goal.score))
        if miss <= allowed and not over_bound(h, goal):
            close.append((miss, h))
    chord = knobs.bracket_crossing(points, goal.score)
    if close:
        best = min(close, key=lambda m: m[0])[1]
        # pilots close either side: go on where the chord between them meets the target
        c = chord[0] if chord is not None and goal.max_shift is None else best.concentration
        reason = f"accept c={best.concentration:.3f} (D={best.score:.2f})"
        if c != best.concentration:
            reason += f"; its documents kept, continue at c={c:.3f} between the closest points"
        return Decision("accept", c, reason, keep=best.concentration)
    sweeps = len({h.sweep for h in pilots})
    spent = sweeps >= goal.max_pilot_rounds
    if spent and goal.max_shift is not None:
        return settle(pilots, sweep, goal, "pilot budget spent")
    nearest = min(sweep, key=lambda h: abs(h.score - goal.score))
    fit = knobs.fit_concentration(points, goal.score, floor=goal.floor, start=nearest.concentration)
    if fit is not None and goal.max_shift is not None:
        bounded = shift_bound.limit_fit(fit, pilots, goal.max_shift)
        if bounded != fit and any(abs(bounded.concentration - p[0]) < knobs.MIN_BRACKET for p in points):
            return settle(pilots, sweep, goal, f"next c={fit.concentration:.3f} is past max_shift's limit "
                                               f"c={bounded.concentration:.3f}, already measured",
                          limited=True)
        limited = bounded != fit
        fit = bounded
    else:
        limited = False
    grown = len({h.sweep for h in history if h.kind == "grow"})
    if fit is None and nearest.score < goal.score and goal.can_grow and grown < goal.max_growth_rounds:
        return Decision("grow", 1.0, "grid growth", points=FIRST_SWEEP)
    if fit is None:
        return stop_out_of_reach(pilots, nearest.score, goal)
    fitted = f"fitted D={fit.score:.2f} [{fit.low:.2f}, {fit.high:.2f}]"
    binds = dict(binding="max_shift") if limited else {}  # the bound's limit on c, not the target, decided
    if limited:
        fitted += f"; max_shift binds (c at most {fit.concentration:.3f})"
    within = fit.within(goal.score, goal.tolerance)
    refine = sweep_points(fit, goal)
    if fit.concentration < min(c for c, _, _ in points) and not any(c <= 0.0 for c, _, _ in points):
        # only the judge's floor says the target is reachable down there: measure c = 0 as well
        refine = (max(fit.concentration, MIN_C), 0.0)
    affordable = goal.pilot_docs * (len(refine) - 1) <= goal.max_discarded - goal.discarded
    if spent or within or not affordable or goal.rounds_correct:
        why = ("pilot budget spent" if spent else "fit within tolerance" if within
               else "a second sweep would exceed the calibration budget" if not affordable
               else "main rounds correct the rest")
        c = fit.concentration
        if chord is not None and not limited:  # pilots close either side: the chord between them
            c, fitted = chord[0], f"{fitted}; between the closest points c={chord[0]:.3f}"
        return Decision("go_on", c, f"{why}: {fitted}; continue at c={c:.3f}", **binds)
    listed = ", ".join(f"{c:.3f}" for c in refine)
    return Decision("pilot", fit.concentration, f"sweep again at c = {listed} ({fitted})", points=refine,
                    **binds)


def main_lookahead(history: Sequence[Round], goal: Goal) -> int:
    """Samples drawn under a main round's weights past its end. The full `goal.lookahead`, so
    the engines stay full, where the pilots bracket the target so closely that the 95% interval
    of D at the chord's crossing, where the main phase went on, lies within half the tolerance
    (the other half is the corpus's own draw and the pilots' estimated spread being an
    estimate) and no shift bound may call for a retreat: no correction is needed. Else
    `knobs.round_lookahead`: on a shallow corpus, cut so that the first correction lands by the
    corpus's middle (the engines then run short at each round's end)."""
    points = [(h.concentration, h.score, h.spread) for h in history if h.kind == "pilot"]
    chord = knobs.bracket_crossing(points, goal.score)
    if goal.max_shift is None and chord is not None and chord[1] <= goal.tolerance / 2:
        return goal.lookahead
    return knobs.round_lookahead(goal.lookahead, goal.num_docs, goal.num_rounds)


def settle(pilots: Sequence[Round], sweep: Sequence[Round], goal: Goal, why: str,
           limited: bool = False) -> Decision:
    """Leave the pilots without one that met the target and the bound: continue at the best
    pilot under the bound (its documents kept when it is a point of the last sweep), or stop
    when none is under it."""
    best, binding = shift_bound.settle_pilots(pilots, goal.score, goal.tolerance, goal.max_shift, limited)
    if best is None:
        binding, message = shift_bound.stop_message(pilots, goal)
        return Decision("stop", pilots[-1].concentration, message, binding=binding)
    b = pilots[best]
    under = " under max_shift" if goal.max_shift else ""
    binds = f"; {binding} binds" if binding and goal.max_shift else ""
    reason = f"{why}; continue at the closest{under}, c={b.concentration:.3f} (D={b.score:.2f}){binds}"
    kept = b.concentration if any(h is b for h in sweep) else None
    return Decision("settle", b.concentration, reason, keep=kept, binding=binding)


def stop_out_of_reach(pilots: Sequence[Round], score: float, goal: Goal) -> Decision:
    lo, hi = min(p.score for p in pilots), max(p.score for p in pilots)
    side = "above" if score < goal.score else "below"
    best = hi if side == "above" else lo
    reason = (f"target {goal.score:.4g} is {side} what {knob_name(goal)} reaches with judge {goal.judge} "
              f"(measured {lo:.2f}..{hi:.2f}); best reachable score {best:.2f}; "
              f"fix: {reach_fix(goal, side, best)}")
    return Decision("stop", pilots[-1].concentration, reason, out_of_reach=reason)


FLOOR_C = 0.05  # c at or below this keeps about one value of each axis (of 12 values, 12 ** 0.05 = 1.13)


def knob_name(goal: Goal) -> str:
    return "reweighting the rewrite axes" if goal.rewrite else "this grid"


def reach_fix(goal: Goal, side: str, best: float) -> str:
    """How to ask for a target the knob reaches: one whose tolerance takes in `best`, the
    nearest D measured at the end of c's range (rounded inwards to two decimals)."""
    edge = best - goal.tolerance if side == "below" else best + goal.tolerance
    key, value = ("target.relative", edge / goal.relative_to) if goal.relative_to else ("target.score", edge)
    hundredths = round(value * 100, 6)  # 9.8 / 10 * 100 is 98.00000000000001
    value = (math.ceil(hundredths) if side == "below" else math.floor(hundredths)) / 100
    if side == "below":
        more = ("rewrite a source whose documents are more alike" if goal.rewrite
                else "lower sampling.temperature")
        return f"raise {key} to {value:.2f} or more, or {more}"
    more = ("add templates or values of the grid's axes to rewrite with" if goal.rewrite
            else "add values to the grid's axes")
    return f"lower {key} to {value:.2f} or less, or {more}"


def main_out_of_reach(history: Sequence[Round], goal: Goal, decision: Decision) -> str:
    """After a main round: why c cannot bring D to the target ("" when it may). The round was
    generated with c at an end of its range (within FLOOR_C of 0 or 1) and the decision keeps
    it there, yet the corpus's D with its interval lies beyond the tolerance on the far side,
    and so does D at that end as the pilots' line, moved by how far the corpus scored from it,
    predicts for the rest of the corpus."""
    last, pilots = history[-1], [h for h in history if h.kind == "pilot"]
    offset = corpus_offset(history, goal)
    for end, sign, side in ((0.0, 1, "below"), (1.0, -1, "above")):
        held = abs(last.concentration - end) <= FLOOR_C and abs(decision.concentration - end) <= FLOOR_C
        measured = last.score - sign * last.half_width  # the interval's end nearest the target
        rest = last.score if offset is None else predicted(pilots, end, goal) + offset
        beyond = min(sign * (measured - goal.score), sign * (rest - goal.score)) > goal.tolerance
        if held and beyond:
            where = "its floor, about one value per axis" if end == 0.0 else "1, every value"
            low, high = last.score - last.half_width, last.score + last.half_width
            return (f"target {goal.score:.4g} is {side} what {knob_name(goal)} reaches with judge "
                    f"{goal.judge}: the corpus scores D {last.score:.2f} [{low:.2f}, {high:.2f}] with c at "
                    f"{where} (c = {last.concentration:.3f}); fix: {reach_fix(goal, side, measured)}")
    return ""


def decide_main(history: Sequence[Round], goal: Goal) -> Decision:
    """After a main round (measured on the corpus's first `docs` documents): aim the rest of the
    corpus where it brings the whole to the target, and keep c when the pilots' D(c), offset by
    how far the corpus scored from what its own concentrations predict, already lands there;
    otherwise move c along it (at most MAX_STEP, clamped under the shift bound), reweighting
    cells when the corpus so far missed. Over the bound, also retreat c towards smaller shift.
    The last round changes nothing."""
    last, pilots = history[-1], [h for h in history if h.kind == "pilot"]
    c, left = last.concentration, 1 - last.docs / goal.num_docs
    if left <= 0:
        return Decision("keep", c, "keep")
    decision = Decision("keep", c, "keep")
    missed = abs(last.score - goal.score) > goal.tolerance / 2
    # the rest of the corpus aims past the target by as much as the corpus so far missed it,
    # weighted by their sizes, so the whole lands on it (not only the documents still to come)
    aim = goal.score + (goal.score - last.score) * last.docs / (goal.num_docs - last.docs)
    aim = min(max(aim, goal.floor), 2 * goal.score)
    offset = corpus_offset(history, goal)
    drifted = offset is not None and abs(predicted(pilots, c, goal) + offset - aim) > goal.tolerance / 2
    if missed or drifted:
        now = last.score if offset is None else predicted(pilots, c, goal) + offset  # D at c for the rest
        moved = along_pilots(pilots, c, now, aim, goal)
        moved = min(max(moved, c - MAX_STEP), c + MAX_STEP)
        moved = shift_bound.clamp_concentration(moved, pilots, goal.max_shift)
        reweight = (1 if last.score < goal.score else -1) if missed else 0
        if moved != c or reweight:  # at the end of c's range, reweighting cells is the lever left
            cells = ", reweight cells" if reweight else ""
            reason = f"correct c {c:.3f} → {moved:.3f}{cells}"
            decision = Decision("correct", moved, reason, reweight=reweight)
    note = main_out_of_reach(history, goal, decision)
    end = 0.0 if decision.concentration <= FLOOR_C else 1.0
    if note and end == 0.0 and not goal.rewrite:  # the rest would be one cell's documents: not worth making
        return Decision("stop", 0.0, note, out_of_reach=note)
    if note:  # the rest at that end of c's range is the closest the run gets (a rewrite run: every
        # source keeps its k rewrites; at c = 1 the whole grid)
        decision = Decision("go_on", end, f"{decision.reason}; {note}", reweight=decision.reweight,
                            out_of_reach=note)
    if over_bound(last, goal):
        moved = shift_bound.retreat(decision.concentration, pilots, goal.max_shift,
                                    _Shift(last.shift, last.shift_se), left)
        reason = (f"{decision.reason}; MMD² {last.shift:.4f} ± {last.shift_se:.4f} over max_shift: "
                  f"c → {moved:.3f}, weight moved away from far values")
        decision = Decision("correct", moved, reason, reweight=decision.reweight, away_from_far=True,
                            out_of_reach=decision.out_of_reach)
    return decision


def predicted(pilots: Sequence[Round], c: float, goal: Goal) -> float:
    """D at `c` on the line through the pilots' points (and the judge's floor)."""
    points = [(h.concentration, h.score, h.spread) for h in pilots]
    return knobs.level_at(points, c, goal.score, floor=goal.floor)[0]


def corpus_offset(history: Sequence[Round], goal: Goal) -> float | None:
    """How far the corpus so far scored from what the pilots predict for it: its D less the
    document-weighted D of the concentrations its documents were drawn at (where the round
    records them; else each main round's c over the documents since the round before). None
    without pilots."""
    pilots = [h for h in history if h.kind == "pilot"]
    if not pilots:
        return None
    mains = [h for h in history if h.kind == "main"]
    last, before, expected = mains[-1], 0, 0.0
    if last.drawn:
        total = sum(d.docs for d in last.drawn)
        for d in last.drawn:  # -1: an epoch that does not record its c counts at the round's
            c = d.concentration if d.concentration >= 0 else last.concentration
            expected += d.docs / max(total, 1) * predicted(pilots, c, goal)
        return last.score - expected
    for h in mains:
        share = (min(h.docs, last.docs) - before) / max(last.docs, 1)
        expected += share * predicted(pilots, h.concentration, goal)
        before = max(before, min(h.docs, last.docs))
    if before == 0:
        expected = predicted(pilots, last.concentration, goal)
    return last.score - expected


def along_pilots(pilots: Sequence[Round], c: float, now: float, aim: float, goal: Goal) -> float:
    """The c where the pilots' fitted D(c), shifted by how far `now` (D expected at `c`) lies
    from it, reaches `aim`; without a fit, a step along the pilots' slope."""
    points = [(h.concentration, h.score, h.spread) for h in pilots]
    if points:
        fit = knobs.fit_concentration(points, aim - (now - predicted(pilots, c, goal)), floor=goal.floor,
                                      start=c)
        if fit is not None:
            return fit.concentration
    measured = [(h.concentration, h.score) for h in pilots]
    return knobs.correct_concentration(measured, c, now, aim, gain=1.0)


@dataclass(frozen=True)
class _Shift:
    mmd2: float
    se: float
