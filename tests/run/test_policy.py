"""The steering policy as a table: measured rounds and a goal in, the next step out."""
import pytest

from generator.run.policy import Goal, decide
from generator.run.state import Round

GOAL = Goal(score=3.0, tolerance=0.2, k=5, num_docs=10_000, max_pilot_rounds=2, max_discarded=500)
BOUND = Goal(score=3.0, tolerance=0.2, k=5, num_docs=10_000, max_pilot_rounds=2, max_shift=0.05,
             max_discarded=500)
GROWS = Goal(score=3.0, tolerance=0.2, k=5, num_docs=10_000, max_pilot_rounds=2, can_grow=True,
             max_growth_rounds=2, max_discarded=500)
DEEP = Goal(score=3.0, tolerance=0.2, k=5, num_docs=100_000, max_pilot_rounds=2, max_discarded=5000,
            num_rounds=4, lookahead=18_000)  # the first correction lands at 43% of the corpus
SHALLOW = Goal(score=3.0, tolerance=0.2, k=5, num_docs=20_000, max_pilot_rounds=2, max_discarded=1000,
               num_rounds=4, lookahead=18_000)  # the lookahead alone runs past the corpus's middle
POOR = Goal(score=3.0, tolerance=0.2, k=5, num_docs=1_000, max_pilot_rounds=2, max_discarded=50)


def pilot(c, d, shift=None, hw=0.05, sweep=0):
    return Round(c, d, "pilot", shift, hw, sweep=sweep)


def sweep(*points, shift=None, n=0):
    """One pilot round's points: (c, D) pairs, or (c, D, shift) with a shift bound."""
    return [pilot(p[0], p[1], p[2] if len(p) > 2 else shift, sweep=n) for p in points]


def main(c, d, docs, shift=None):
    return Round(c, d, "main", shift, 0.05, docs=docs)


FIRST = sweep((1.0, 4.0), (0.45, 3.05), (0.2, 2.2))  # its middle point lands
MISSED = sweep((1.0, 4.5), (0.45, 3.6), (0.2, 2.4))  # the crossing lies between 0.2 and 0.45

CASES = [
    # (why, history, goal, action, check on the decision)
    ("a sweep's point within tolerance is accepted, its documents kept", FIRST, GOAL, "accept",
     lambda d: d.concentration == 0.45 and d.keep == 0.45),
    ("of two points within tolerance the closer is kept", sweep((1.0, 3.15), (0.45, 3.02), (0.2, 2.2)), GOAL,
     "accept", lambda d: d.keep == 0.45),
    ("no point lands: sweep again around the fitted crossing", MISSED, GOAL, "pilot",
     lambda d: len(d.points) == 3 and 0.2 < d.concentration < 0.45 and min(d.points) < d.concentration
     < max(d.points) and d.keep is None),
    ("main rounds correct a deep corpus: go on at the fit, no second sweep's barrier", MISSED, DEEP,
     "go_on", lambda d: 0.2 < d.concentration < 0.45 and "main rounds correct" in d.reason and not d.points),
    ("a shallow corpus: its corrections come too late, so sweep again", MISSED, SHALLOW, "pilot",
     lambda d: len(d.points) == 3),
    ("a second sweep would exceed the calibration budget: go on at the fit", MISSED, POOR, "go_on",
     lambda d: 0.2 < d.concentration < 0.45 and "calibration budget" in d.reason and not d.points),
    ("the whole grid below the target: grow, then sweep from c = 1",
     sweep((1.0, 2.0), (0.45, 1.5), (0.2, 1.1)), GROWS, "grow", lambda d: d.points[0] == 1.0),
    ("growth spent: stop with the reach",
     [*[Round(c, 1.9, "grow", sweep=k) for k in (0, 1) for c in (1.0, 0.45)],
      *sweep((1.0, 2.0), (0.45, 1.5), n=2)], GROWS, "stop",
     lambda d: "above what this grid reaches" in d.reason),
    ("no growth: stop", sweep((1.0, 2.0), (0.45, 1.5)), GOAL, "stop",
     lambda d: "best reachable score 2.00" in d.reason),
    ("the budget spent: go on at the fit", [*MISSED, *sweep((0.35, 3.4), (0.3, 3.3), (0.25, 2.6), n=1)],
     GOAL, "go_on", lambda d: 0.25 < d.concentration < 0.35 and "pilot budget spent" in d.reason),
    ("the budget spent under a bound: settle at the best point under it, kept when in the last sweep",
     [*sweep((1.0, 4.5, 0.01), (0.45, 3.6, 0.01), (0.2, 2.4, 0.01)),
      *sweep((0.35, 3.4, 0.01), (0.3, 3.25, 0.01), (0.25, 2.6, 0.01), n=1)], BOUND, "settle",
     lambda d: d.concentration == 0.3 and d.keep == 0.3),
    ("within tolerance but over the bound: not accepted; weight away from far values",
     sweep((1.0, 4.5, 0.01), (0.45, 3.0, 0.09), (0.2, 2.4, 0.01)), BOUND, "pilot",
     lambda d: d.away_from_far and d.keep is None),
    ("a point within tolerance under the bound is accepted beside one over it",
     sweep((1.0, 4.5, 0.09), (0.45, 3.0, 0.01), (0.2, 2.4, 0.01)), BOUND, "accept",
     lambda d: d.keep == 0.45 and not d.away_from_far),
    ("no point under the bound when the budget is spent: stop, max_shift binds",
     [*sweep(*[(c, 4.0, 0.09) for c in (1.0, 0.45, 0.2)]),
      *sweep(*[(c, 4.0, 0.09) for c in (0.1, 0.05)], n=1)],
     BOUND, "stop", lambda d: d.binding == "max_shift"),
    ("a main round within half the tolerance keeps the weights",
     [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 3.05, 300)], GOAL, "keep",
     lambda d: d.concentration == 0.6 and not d.reweight),
    ("a main round below: c up, redundant cells down",
     [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 2.7, 300)],
     GOAL, "correct", lambda d: d.concentration > 0.6 and d.reweight == 1),
    ("a main round above: c down, redundant cells up",
     [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 3.3, 300)],
     GOAL, "correct", lambda d: d.concentration < 0.6 and d.reweight == -1),
    ("the corpus on target but its c set to aim past it: c back to where the rest lands on the target",
     [pilot(1.0, 4.0), pilot(0.6, 3.05), pilot(0.2, 2.0), main(0.6, 2.55, 3000), main(0.2, 2.95, 6000)],
     GOAL, "correct", lambda d: d.concentration > 0.35 and not d.reweight),
    ("the corpus on target and its c landing the rest there: keep",
     [pilot(1.0, 4.0), pilot(0.6, 3.05), pilot(0.2, 2.0), main(0.6, 2.95, 3000), main(0.6, 3.0, 6000)],
     GOAL, "keep", lambda d: d.concentration == 0.6),
    ("the last main round changes nothing",
     [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 2.0, 10_000)], GOAL, "keep",
     lambda d: d.concentration == 0.6),
    ("a main round over the bound retreats c and moves weight away", [
        pilot(1.0, 4.0, 0.02), pilot(0.6, 3.05, 0.04), main(0.6, 3.0, 500, shift=0.07)], BOUND, "correct",
     lambda d: d.concentration > 0.6 and d.away_from_far and not d.reweight),
]


@pytest.mark.parametrize("why, history, goal, action, check", CASES, ids=[c[0] for c in CASES])
def test_decide(why, history, goal, action, check):
    decision = decide(history, goal)
    assert decision.action == action, decision
    assert check(decision), decision


def test_decide_needs_a_measured_round():
    with pytest.raises(ValueError, match="the round just measured"):
        decide([], GOAL)
