"""The pilot rounds' fit of D(c) (knobs.fit_concentration) against the bracketing rule it
replaced (knobs.next_concentration), on a known curve measured with noise, and in the
controller with a fake backend and a noisy judge.

The simulations are seeded, so they are deterministic; with another seed the averages over
400 simulated runs move by a few hundredths of a round."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fakes import EchoBackend, SplittingJudge
from generator.run import knobs

K = 10


def curve(c: float) -> float:
    """A score like the embedded model's under the embedding judge: 0.2 at c = 0, 2.7 at c = 1."""
    return 0.2 + 2.5 * (1 - math.exp(-3 * c)) / (1 - math.exp(-3))


def close(d: float, target: float, tolerance: float, half_width: float) -> bool:
    """The controller's test for accepting a pilot round as it is."""
    return abs(d - target) <= min(tolerance, max(tolerance / 2, half_width))


def bracketing(target, tolerance, half_width, measure, max_rounds=8) -> tuple[int, float]:
    """The pilot loop before the fit: interpolate in the tightest bracket, keep the closest point."""
    points, c = [], 1.0
    while True:
        d = measure(c)
        points.append((c, d))
        if close(d, target, tolerance, half_width):
            return len(points), c
        best = min(points, key=lambda p: abs(p[1] - target))[0]
        if len(points) >= max_rounds or knobs.bracket_width(points, target) < knobs.MIN_BRACKET:
            return len(points), best
        nxt = knobs.next_concentration(points, target, floor=1 / K)
        if nxt is None:
            return len(points), best
        c = nxt


def fitting(target, tolerance, half_width, measure, max_rounds=8) -> tuple[int, float]:
    """The pilot loop of policy.decide_pilot: go where the fit meets the target."""
    points, c = [], 1.0
    while True:
        d = measure(c)
        points.append((c, d, half_width))
        if close(d, target, tolerance, half_width):
            return len(points), c
        fit = knobs.fit_concentration(points, target, floor=1 / K, start=c)
        if len(points) >= max_rounds or fit.within(target, tolerance) or abs(fit.concentration - c) < knobs.MIN_BRACKET:
            return len(points), fit.concentration
        c = fit.concentration


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.25])
def test_the_fit_needs_fewer_pilot_rounds_than_bracketing_and_lands_as_well(sigma):
    """Measurements scatter by `sigma` around the curve while each claims a half-width of 0.1
    (a small pilot is itself a sample); target 2.0 ± 0.15."""
    results = {}
    for name, rule in (("bracketing", bracketing), ("fit", fitting)):
        rng = np.random.default_rng(7)
        runs = [rule(2.0, 0.15, 0.1, lambda c: curve(c) + rng.normal(0, sigma)) for _ in range(400)]
        results[name] = (np.mean([r for r, _ in runs]), np.mean([abs(curve(c) - 2.0) <= 0.15 for _, c in runs]))
    assert results["fit"][0] <= results["bracketing"][0] - 1.0, results
    assert results["fit"][1] >= results["bracketing"][1] - 0.05, results
    if sigma <= 0.05:
        assert results["fit"][1] >= 0.95, results


def test_a_line_is_recovered_and_the_floor_replaces_a_pilot_at_c0():
    line = [(c, 0.5 + 3 * c, 0.02) for c in (1.0, 0.5)]
    fit = knobs.fit_concentration(line, 2.0, floor=0.1)
    assert fit.concentration == pytest.approx(0.5, abs=0.01) and fit.score == pytest.approx(2.0, abs=0.01)
    # one pilot above the target: the next c lies between the floor at c = 0 and that pilot, never at 0
    first = knobs.fit_concentration([(1.0, 5.1, 0.05)], 2.6, floor=0.1, start=1.0)
    assert first.concentration == pytest.approx(0.5, abs=0.01)
    assert knobs.next_concentration([(1.0, 5.1), (0.5, 3.0)], 2.0, floor=0.1) == 0.0  # the old rule measured c = 0
    assert 0.0 < knobs.fit_concentration([(1.0, 5.1, 0.05), (0.5, 3.0, 0.05)], 2.0, floor=0.1).concentration < 0.5


def test_out_of_reach_ends_give_no_fit():
    assert knobs.fit_concentration([(1.0, 2.0, 0.1)], 3.0, floor=0.1) is None  # c = 1 below the target
    assert knobs.fit_concentration([(0.0, 1.0, 0.1)], 0.5) is None  # c = 0 above it


def test_scattered_points_widen_the_interval_and_a_close_bracket_is_required():
    """Pilots at c = 0.532 / 0.546 / 0.554 scoring 1.63 / 1.83 / 2.18 (the embedded model's
    noisy pilots): the fit pools them instead of chasing the steep local slope."""
    noisy = [(1.0, 2.7, 0.1), (0.39, 1.1, 0.1), (0.532, 1.63, 0.1), (0.546, 1.83, 0.1), (0.554, 2.18, 0.1)]
    fit = knobs.fit_concentration(noisy, 2.0, floor=0.1, start=0.554)
    assert fit.slope < 10  # not the 30 per unit c the three close points alone suggest
    assert fit.concentration > 0.554
    calm = knobs.fit_concentration([(1.0, 2.7, 0.1), (0.39, 1.1, 0.1), (0.54, 1.88, 0.1)], 2.0, floor=0.1)
    assert fit.high - fit.low > calm.high - calm.low
    far = knobs.fit_concentration([(1.0, 2.7, 0.01), (0.3, 1.5, 0.01)], 2.0, floor=0.1)
    assert far.bracket > knobs.MAX_BRACKET and not far.within(2.0, 10.0)  # no close bracket: keep piloting


def test_the_controller_pilots_without_c0_and_lands_within_tolerance(tmp_path, root):
    from generator.run import controller
    from generator.recipe import load_recipe
    from generator.files import count_documents
    from conftest import echo_recipe

    recipe = echo_recipe(tmp_path, "fit", 4, "{num_docs: 800, shard_rows: 200}",
                         "{score: 2.5, tolerance: 0.3, pilot_docs: 100}")
    summary = controller.run(load_recipe(recipe), tmp_path / "run", EchoBackend(), judge=SplittingJudge(0.05))
    rows = [json.loads(line) for line in (tmp_path / "run" / "controller.jsonl").read_text().splitlines()]
    pilots = [r for r in rows if r["phase"] == "pilot"]
    assert all(r["concentration"] > 0 for r in pilots)
    assert len(pilots) <= 6 and summary["rounds"]["pilot_points"] == len(pilots)
    assert summary["rounds"]["pilot"] == len({r["round"] for r in pilots}) <= 2  # sweeps of several points
    assert summary["achieved"]["within_tolerance"], summary["achieved"]
    made = sum(count_documents(p) for p in (tmp_path / "run" / "pilot").glob("round-*"))  # those not kept
    assert 0 < summary["cost"]["pilot_docs"] <= 100 * len(pilots)  # 100 samples a point, duplicates dropped
    assert summary["cost"]["discarded_pilot_docs"] == made
    assert pilots[-1]["pilot_docs"] == summary["cost"]["pilot_docs"] and "judge_tokens" in pilots[-1]


def test_a_round_measured_wider_than_half_the_tolerance_warns(caplog):
    """A round's interval wider than half the tolerance steers on noise: the run says so and
    names the setting; a precise enough round does not warn."""
    import logging

    from fakes import KeyJudge
    from generator.recipe import Target
    from generator.run.rounds import measure

    texts = [f"topic {i % 7}\ndocument {i}" for i in range(200)]
    judge = KeyJudge(lambda t: t.splitlines()[0])
    with caplog.at_level(logging.WARNING, logger="generator.run.rounds"):
        measure(texts, judge, Target(score=3.0, tolerance=0.01, num_batches=30), np.random.default_rng(0))
    assert "raise target.num_batches (now 30)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="generator.run.rounds"):
        measure(texts, judge, Target(score=3.0, tolerance=5.0, num_batches=30), np.random.default_rng(0))
    assert "num_batches" not in caplog.text
