"""Regression: in a main round over the shift bound, `reweight_for_shift` rebuilt the weights from
c and the shift factors right after `correct` applied the attribution reweighting, losing it."""
import dataclasses
from types import SimpleNamespace

import pytest

from generator.recipe import Target
from generator.run import controller
from generator.run.reference import Shift
from generator.run.state import Round, RunState, Steering

ORDERS = {"topic": ["a", "b", "c", "d"]}
ATTRIBUTION = {"columns": {"topic": {"a": {"pairs": 50, "lift": 3.0}, "b": {"pairs": 50, "lift": 1.0},
                                     "c": {"pairs": 50, "lift": 1.0}, "d": {"pairs": 50, "lift": 1.0}}}}


@pytest.mark.xfail(strict=True, reason="issue 24: the attribution reweighting is lost")
def test_a_shift_reweight_keeps_the_attribution_reweighting_of_the_same_round():
    target = Target(score=3.0, tolerance=0.2, max_shift=0.05, reweight_rate=1.0)
    pilots = (Round(1.0, 3.6, "pilot", 0.04), Round(0.5, 2.6, "pilot", 0.08))
    ctx = SimpleNamespace(orders=ORDERS, target=target, reference=object(),
                          plan=SimpleNamespace(recipe=SimpleNamespace(target=target)))
    state = RunState(steering=Steering(phase="main", concentration=1.0, history=pilots,
                                       weights={"topic": dict.fromkeys("abcd", 1.0)}))
    report = SimpleNamespace(score=2.5)  # below target: raise diversity, so the redundant "a" loses weight
    state, _ = controller.correct(ctx, state, report, ATTRIBUTION)
    assert state.steering.weights["topic"]["a"] < state.steering.weights["topic"]["b"]
    shift = Shift(0.06, {"topic": {}}, 0.0)  # over the bound; no value's witness differs
    state = controller.reweight_for_shift(ctx, state, shift, share_left=0.5)
    weights = state.steering.weights["topic"]
    assert weights["a"] < weights["b"]
