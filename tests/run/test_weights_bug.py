"""Regression (issue 24): in a main round over the shift bound, `reweight_for_shift` rebuilt the
weights from c and the shift factors right after `correct` applied the attribution reweighting,
losing it. Weights are now derived in one place from c and every factor set."""
from types import SimpleNamespace

from generator.recipe import Target
from generator.run import controller, knobs
from generator.run.policy import Goal, decide
from generator.run.reference import Shift
from generator.run.state import Round, RunState, Steering

ORDERS = {"topic": ["a", "b", "c", "d"]}
ATTRIBUTION = {"mates": {"topic": {v: {"mates": 50, "mate_lift": 3.0 if v == "a" else 1.0} for v in "abcd"}}}
PILOTS = (Round(1.0, 3.6, "pilot", 0.04), Round(0.5, 2.6, "pilot", 0.08))


def test_a_shift_reweight_keeps_the_attribution_reweighting_of_the_same_round():
    goal = Goal(score=3.0, tolerance=0.2, k=5, num_docs=1000, max_pilot_rounds=8, max_shift=0.05)
    decision = decide((*PILOTS, Round(1.0, 2.5, "main", 0.06, 0.05, docs=500)), goal)
    assert decision.action == "correct" and decision.reweight == 1 and decision.away_from_far
    ctx = SimpleNamespace(orders=ORDERS, target=Target(score=3.0, tolerance=0.2, max_shift=0.05, reweight_rate=1.0))
    state = RunState(steering=Steering(phase="main", concentration=1.0, history=PILOTS,
                                       weights=knobs.sampling_weights(ORDERS, 1.0)))
    shift = Shift(0.06, {"topic": {}}, 0.0)  # over the bound; no value's witness differs
    weights = controller.apply_after_main(ctx, state, decision, ATTRIBUTION, shift).steering.weights["topic"]
    assert weights["a"] < weights["b"] == weights["c"] == weights["d"]  # the redundant value lost weight


def test_weights_are_c_times_every_factor_set():
    weights = knobs.sampling_weights(ORDERS, 1.0, {"topic": {"a": 0.5}}, {"topic": {"a": 0.5, "b": 2.0}},
                                     {"topic": {"c": 0.25}}, {"template": {"t": 0.1}})
    assert weights == {"topic": {"a": 0.25, "b": 2.0, "c": 0.25, "d": 1.0}, "template": {"t": 0.1}}
