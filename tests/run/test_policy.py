"""The steering policy as a table: measured rounds and a goal in, the next step out."""
import pytest

from generator.run.policy import Goal, decide
from generator.run.state import Round

GOAL = Goal(score=3.0, tolerance=0.2, k=5, num_docs=1000, max_pilot_rounds=4)
BOUND = Goal(score=3.0, tolerance=0.2, k=5, num_docs=1000, max_pilot_rounds=4, max_shift=0.05)
GROWS = Goal(score=3.0, tolerance=0.2, k=5, num_docs=1000, max_pilot_rounds=4, can_grow=True, max_growth_rounds=2)


def pilot(c, d, shift=None, hw=0.05):
    return Round(c, d, "pilot", shift, hw)


def main(c, d, docs, shift=None):
    return Round(c, d, "main", shift, 0.05, docs=docs)


CASES = [
    # (why, history, goal, action, check on the decision)
    ("a pilot within tolerance is accepted", [pilot(1.0, 4.0), pilot(0.6, 3.05)], GOAL, "accept",
     lambda d: d.concentration == 0.6),
    ("above the target: pilot again lower", [pilot(1.0, 4.5)], GOAL, "pilot", lambda d: 0 < d.concentration < 1),
    ("the whole grid below the target: grow", [pilot(1.0, 2.0)], GROWS, "grow", lambda d: d.concentration == 1.0),
    ("growth spent: stop with the reach", [pilot(1.0, 1.9, hw=0.01), Round(1.0, 2.0, "grow"), Round(1.0, 2.0, "grow"),
                                           pilot(1.0, 2.0, hw=0.01)], GROWS, "stop",
     lambda d: "above what this grid reaches" in d.reason),
    ("no growth: stop", [pilot(1.0, 2.0)], GOAL, "stop", lambda d: "best reachable score 2.00" in d.reason),
    ("the budget spent: go on at the fit", [pilot(1.0, 4.0), pilot(0.5, 2.5), pilot(0.7, 3.4), pilot(0.6, 2.6)],
     GOAL, "go_on", lambda d: 0.6 < d.concentration < 0.7 and "pilot budget spent" in d.reason),
    ("the budget spent under a bound: settle at the best under it",
     [pilot(1.0, 4.0, 0.01), pilot(0.5, 2.5, 0.01), pilot(0.7, 3.4, 0.01), pilot(0.6, 2.6, 0.01)], BOUND, "settle",
     lambda d: d.concentration == 0.7 and not d.keep_last),
    ("within tolerance but over the bound: pilot again, weight away from far values",
     [pilot(1.0, 4.0, 0.01), pilot(0.6, 3.0, 0.09)], BOUND, "pilot",
     lambda d: d.away_from_far and d.concentration == 0.6),
    ("no pilot under the bound when the budget is spent: stop, max_shift binds",
     [pilot(c, 4.0, 0.09) for c in (1.0, 0.9, 0.8, 0.7)], BOUND, "stop", lambda d: d.binding == "max_shift"),
    ("a main round within half the tolerance keeps the weights", [pilot(1.0, 4.0), pilot(0.6, 3.05),
                                                                  main(0.6, 3.05, 300)], GOAL, "keep",
     lambda d: d.concentration == 0.6 and not d.reweight),
    ("a main round below: c up, redundant cells down", [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 2.7, 300)],
     GOAL, "correct", lambda d: d.concentration > 0.6 and d.reweight == 1),
    ("a main round above: c down, redundant cells up", [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 3.3, 300)],
     GOAL, "correct", lambda d: d.concentration < 0.6 and d.reweight == -1),
    ("the last main round changes nothing", [pilot(1.0, 4.0), pilot(0.6, 3.05), main(0.6, 2.0, 1000)], GOAL, "keep",
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
