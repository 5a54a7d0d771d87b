"""What the controller does next: one pure function of the measured rounds and the goal (no I/O).

`decide(history, goal)` reads the round just measured (the last of `history`) and returns a
`Decision`. After a pilot: accept it, pilot again at a fitted c, go on at a fitted c, grow the
grid, settle at the best pilot under the shift bound, or stop with a reason. After a main round:
keep the weights, or correct c (and reweight cells by attribution), and, over the shift bound,
move c and weight away from the reference's far side. `controller.py` applies a decision.
"""
from __future__ import annotations

import dataclasses
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
    max_pilot_rounds: int
    max_shift: float | None = None  # None without a reference corpus
    can_grow: bool = False  # the grid has a topic axis and target.grow_grid is on
    max_growth_rounds: int = 0
    judge: str = "judge"  # the judge's name, for a stop message

    @property
    def floor(self) -> float:
        """The lowest score the judge can give (every document its own cluster is 1; all in one is 1/K)."""
        return 1 / self.k


@dataclass(frozen=True)
class Decision:
    """What comes next. `concentration`: the c to generate at; `reweight`: the direction of the
    attribution reweighting (+1 raise diversity, -1 lower it, 0 none); `away_from_far`: move
    weight away from values whose documents lie far from the reference; `keep_last`: a settle
    keeps the last pilot's documents in the corpus; `binding`: the constraint that binds."""

    action: Action
    concentration: float
    reason: str
    reweight: int = 0
    away_from_far: bool = False
    keep_last: bool = False
    binding: str = ""


def decide(history: Sequence[Round], goal: Goal) -> Decision:
    """The next step after the last round of `history` (a pilot or a main round)."""
    if not history:
        raise ValueError("decide needs the round just measured")
    return decide_main(history, goal) if history[-1].kind == "main" else decide_pilot(history, goal)


def over_bound(r: Round, goal: Goal) -> bool:
    return shift_bound.above(r.shift, r.shift_se, goal.max_shift)


def shift_note(r: Round, goal: Goal) -> str:
    return f"MMD² {r.shift:.4f} ± {r.shift_se:.4f} over max_shift {goal.max_shift}"


def decide_pilot(history: Sequence[Round], goal: Goal) -> Decision:
    """Accept the pilot; pilot again or go on where a fit of D(c) through every pilot meets the
    target; grow the grid; settle; stop. A pilot over the shift bound is never accepted."""
    decision = _pilot_step(history, goal)
    last = history[-1]
    if over_bound(last, goal) and decision.action != "stop":
        reason = f"{decision.reason}; {shift_note(last, goal)}: weight moved away from far values"
        return dataclasses.replace(decision, reason=reason, away_from_far=True)
    return decision


def _pilot_step(history: Sequence[Round], goal: Goal) -> Decision:
    pilots = [h for h in history if h.kind == "pilot"]
    last = history[-1]
    c, score = last.concentration, last.score
    points = [(h.concentration, h.score, h.spread) for h in pilots]
    # D at c on the line through every pilot: with its neighbours, not the lucky draw alone
    level, _ = knobs.level_at(points, c, goal.score, floor=goal.floor)
    allowed = min(goal.tolerance, max(goal.tolerance / 2, last.half_width))
    close = max(abs(score - goal.score), abs(level - goal.score)) <= allowed
    spent = len(points) >= goal.max_pilot_rounds
    if over_bound(last, goal):
        if close and not spent:
            return Decision("pilot", c, "D within tolerance but over max_shift; pilot again")
        close = False
    if close:
        return Decision("accept", c, f"accept c={c:.3f}")
    if spent and goal.max_shift is not None:
        return settle(pilots, goal, "pilot budget spent")
    fit = knobs.fit_concentration(points, goal.score, floor=goal.floor, start=c)
    if fit is not None and goal.max_shift is not None:
        bounded = shift_bound.limit_fit(fit, pilots, goal.max_shift)
        if bounded != fit and any(abs(bounded.concentration - p[0]) < knobs.MIN_BRACKET for p in points):
            return settle(pilots, goal, f"next c={fit.concentration:.3f} is past max_shift's limit "
                                        f"c={bounded.concentration:.3f}, already measured", limited=True)
        fit = bounded
    grown = sum(h.kind == "grow" for h in history)
    if fit is None and score < goal.score and goal.can_grow and grown < goal.max_growth_rounds:
        return Decision("grow", 1.0, "grid growth")
    if fit is None:
        return stop_out_of_reach(pilots, score, goal)
    fitted = f"fitted D={fit.score:.2f} [{fit.low:.2f}, {fit.high:.2f}]"
    within = fit.within(goal.score, goal.tolerance)
    if spent or within or abs(fit.concentration - c) < knobs.MIN_BRACKET:
        why = "pilot budget spent" if spent else "fit within tolerance" if within else "converged"
        return Decision("go_on", fit.concentration, f"{why}: {fitted}; continue at c={fit.concentration:.3f}")
    return Decision("pilot", fit.concentration, f"pilot again at c={fit.concentration:.3f} ({fitted})")


def settle(pilots: Sequence[Round], goal: Goal, why: str, limited: bool = False) -> Decision:
    """Leave the pilots without one that met the target and the bound: continue at the best
    pilot under the bound (its documents kept when it is the last), or stop when none is under it."""
    best, binding = shift_bound.settle_pilots(pilots, goal.score, goal.tolerance, goal.max_shift, limited)
    if best is None:
        binding, message = shift_bound.stop_message(pilots, goal)
        return Decision("stop", pilots[-1].concentration, message, binding=binding)
    b = pilots[best]
    under = " under max_shift" if goal.max_shift else ""
    binds = f"; {binding} binds" if binding and goal.max_shift else ""
    reason = f"{why}; continue at the closest{under}, c={b.concentration:.3f} (D={b.score:.2f}){binds}"
    return Decision("settle", b.concentration, reason, keep_last=best == len(pilots) - 1, binding=binding)


def stop_out_of_reach(pilots: Sequence[Round], score: float, goal: Goal) -> Decision:
    lo, hi = min(p.score for p in pilots), max(p.score for p in pilots)
    side = "above" if score < goal.score else "below"
    return Decision("stop", pilots[-1].concentration, (
        f"target {goal.score} is {side} what this grid reaches with judge {goal.judge} "
        f"(measured {lo:.2f}..{hi:.2f}); best reachable score {hi if side == 'above' else lo:.2f}"))


def decide_main(history: Sequence[Round], goal: Goal) -> Decision:
    """After a main round (measured on the corpus's first `docs` documents): keep, or move c
    against the error along the pilots' slope (clamped under the shift bound) and reweight
    cells; over the bound, also retreat c towards smaller shift. The last round changes nothing."""
    last, pilots = history[-1], [h for h in history if h.kind == "pilot"]
    c, left = last.concentration, 1 - last.docs / goal.num_docs
    if left <= 0:
        return Decision("keep", c, "keep")
    decision = Decision("keep", c, "keep")
    if abs(last.score - goal.score) > goal.tolerance / 2:
        measured = [(h.concentration, h.score) for h in pilots]  # pure, not mixtures
        moved = knobs.correct_concentration(measured, c, last.score, goal.score)
        moved = shift_bound.clamp_concentration(moved, pilots, goal.max_shift)
        decision = Decision("correct", moved, f"correct c {c:.3f} → {moved:.3f}, reweight cells",
                            reweight=1 if last.score < goal.score else -1)
    if over_bound(last, goal):
        moved = shift_bound.retreat(decision.concentration, pilots, goal.max_shift,
                                    _Shift(last.shift, last.shift_se), left)
        reason = (f"{decision.reason}; MMD² {last.shift:.4f} ± {last.shift_se:.4f} over max_shift: "
                  f"c → {moved:.3f}, weight moved away from far values")
        decision = Decision("correct", moved, reason, reweight=decision.reweight, away_from_far=True)
    return decision


@dataclass(frozen=True)
class _Shift:
    mmd2: float
    se: float
