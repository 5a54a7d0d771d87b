"""The shift bound when D and the shift pull against each other: the reference holds every
topic of the grid, so the whole grid (c = 1) is closest to it and concentrating the grid (lower
c, lower D) moves the corpus away from it. Echo backend, a judge that clusters by topic, a fake
embedder that places documents by domain and topic (all seeded, no model)."""
import json

import numpy as np
import pytest

from fakes import CountingJudge, EchoBackend, TopicEmbed
from generator.recipe import load_recipe
from generator.run import controller, shift_bound
from generator.run.reference import ReferenceStats, Shift, measure_shift
from generator.run.state import Round
from test_controller import topic_of
from test_reference import grid_topics, make

TARGET = "{score: 2.0, tolerance: 0.3, pilot_docs: 100, max_pilot_rounds: 4"


def run_against_whole_grid(tmp_path, root, target, name):
    recipe = make(tmp_path, root, target)
    topics = [v.value for v in grid_topics(root)]
    rows = [{"text": f"{topics[i % len(topics)]}\nreal document {i}"} for i in range(150)]
    (tmp_path / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = load_recipe(recipe)
    embed = TopicEmbed({v.value: v.domain for v in grid_topics(root)})
    out = tmp_path / name
    summary = controller.run(plan, out, EchoBackend(), judge=CountingJudge(topic_of), embed=embed)
    rows = [json.loads(line) for line in (out / "controller.jsonl").read_text().splitlines()]
    return summary, rows


def test_a_bound_that_binds_keeps_the_corpus_under_it_and_says_so(tmp_path, root):
    free, free_rows = run_against_whole_grid(tmp_path, root, TARGET + "}", "free")
    pilots = {r["concentration"]: r["shift"] for r in free_rows if r["phase"] == "pilot"}
    assert pilots[1.0] < pilots[min(pilots)]  # concentrating moves away
    assert free["binding"] == "none"  # no bound
    bound = (pilots[1.0] + free["achieved"]["shift"]) / 2  # between the whole grid and the target's c
    bounded, rows = run_against_whole_grid(tmp_path, root, TARGET + f", max_shift: {bound}}}", "bounded")
    assert bounded["achieved"]["shift"] <= bound and bounded["achieved"]["within_shift_bound"]
    assert bounded["binding"] == "max_shift"
    assert bounded["achieved"]["score"] > free["achieved"]["score"]  # D gives way, not the bound
    assert any("max_shift binds" in r["action"] for r in rows)


def pilot(c, score, shift):
    return Round(c, score, "pilot", shift)


def test_the_closest_pilot_under_the_bound_is_chosen_not_the_closest_overall():
    """Regression: the pilot phase ending without a pilot within tolerance continued at the
    pilot closest in D (here c = 0.2, MMD² 0.09 over the bound 0.065)."""
    pilots = [pilot(1.0, 4.0, 0.050), pilot(0.2, 3.5, 0.090), pilot(0.6, 3.9, 0.060)]
    assert shift_bound.settle_pilots(pilots, 3.41, 0.05, 0.065) == (2, "max_shift")
    assert shift_bound.settle_pilots(pilots, 3.41, 0.05, None) == (1, "")
    assert shift_bound.settle_pilots(pilots, 3.41, 0.05, 0.01) == (None, "max_shift")
    # the pilots under the bound bracket the target: the pilot budget, not the bound, misses it
    assert shift_bound.settle_pilots([pilot(1.0, 4.0, 0.05), pilot(0.3, 3.0, 0.06)], 3.41, 0.05, 0.065) == (1, "target")
    assert shift_bound.settle_pilots([pilot(1.0, 3.43, 0.05)], 3.41, 0.05, 0.065) == (0, "")


def test_allowed_concentrations_end_where_the_pilots_cross_the_bound():
    pilots = [pilot(1.0, 4.0, 0.05), pilot(0.0, 2.3, 0.10)]  # shift = 0.10 - 0.05 c
    lo, hi = shift_bound.allowed_concentrations(pilots, 0.065)
    assert lo == pytest.approx(0.7) and hi == 1.0
    assert shift_bound.clamp_concentration(0.2, pilots, 0.065) == pytest.approx(0.7)
    assert shift_bound.clamp_concentration(0.2, pilots, None) == 0.2
    assert shift_bound.allowed_concentrations(pilots, 0.01) == (1.0, 1.0)  # none under: the nearer end
    # the pilots of the unbounded moderate run (BENCHMARKS): the crossing lies between c = 0.21 and 0.45
    measured = [pilot(1.0, 3.87, 0.0505), pilot(0.879, 4.45, 0.0541), pilot(0.0, 2.33, 0.1024),
                pilot(0.45, 4.66, 0.0541), pilot(0.21, 3.75, 0.0817), pilot(0.16, 3.02, 0.0873)]
    assert shift_bound.allowed_concentrations(measured, 0.065)[0] == pytest.approx(0.21 + 0.24 * 0.0167 / 0.0276, abs=1e-3)
    rising = [pilot(0.0, 2.0, 0.02), pilot(1.0, 4.0, 0.06)]
    assert shift_bound.allowed_concentrations(rising, 0.04) == pytest.approx((0.0, 0.5))
    assert shift_bound.allowed_concentrations(pilots[:1], 0.065) == (0.0, 1.0)  # one point: no line


@pytest.mark.parametrize("binding, max_shift, achieved, expected", [
    ("max_shift", 0.065, {"within_tolerance": False, "within_shift_bound": True}, "max_shift"),
    ("", 0.065, {"within_tolerance": True, "within_shift_bound": True}, "none"),
    ("", 0.065, {"within_tolerance": True, "within_shift_bound": False}, "max_shift"),
    ("", 0.065, {"within_tolerance": False, "within_shift_bound": True}, "target"),
    ("", None, {"within_tolerance": False, "within_shift_bound": None}, "none"),
    ("max_shift", 0.065, None, "max_shift"),
])
def test_final_binding_names_the_constraint_the_corpus_misses(binding, max_shift, achieved, expected):
    assert shift_bound.final_binding(binding, max_shift, achieved) == expected


def test_a_pilot_counts_as_under_the_bound_only_with_a_margin_for_its_noise():
    close = Round(1.0, 3.4, "pilot", 0.060, 0.1, 0.004)  # upper bound 0.060 + 1.645 * 0.004 = 0.0666
    sure = Round(0.8, 3.6, "pilot", 0.055, 0.1, 0.004)  # 0.0616
    assert shift_bound.settle_pilots([close], 3.41, 0.05, 0.065) == (None, "max_shift")
    assert shift_bound.settle_pilots([close, sure], 3.41, 0.05, 0.065) == (1, "max_shift")
    assert shift_bound.settle_pilots([close], 3.41, 0.05, 0.07) == (0, "")
    assert shift_bound.above(0.060, 0.004, 0.065) and not shift_bound.above(0.060, 0.0, 0.065)
    # the limit on c moves by the margin: shift = 0.10 - 0.05 c, each point 0.005 higher
    noisy = [Round(1.0, 4.0, "pilot", 0.05, 0.1, 0.005 / 1.645), Round(0.0, 2.3, "pilot", 0.10, 0.1, 0.005 / 1.645)]
    assert shift_bound.allowed_concentrations(noisy, 0.065)[0] == pytest.approx(0.8)


def test_a_corpus_over_the_bound_moves_c_towards_smaller_shift_by_what_the_rest_must_make_up():
    pilots = [pilot(1.0, 4.0, 0.05), pilot(0.0, 2.3, 0.10)]  # shift = 0.10 - 0.05 c
    over = Shift(mmd2=0.070, by_value={}, se=0.0)
    # half the corpus left: it must lie 0.005 / 0.5 = 0.01 lower, 0.2 of c along the line
    assert shift_bound.retreat(0.7, pilots, 0.065, over, share_left=0.5) == pytest.approx(0.9)
    assert shift_bound.retreat(0.7, pilots, 0.065, over, share_left=0.1) == 1.0  # clipped to [0, 1]
    assert shift_bound.retreat(0.7, pilots, 0.065, Shift(0.060, {}, 0.001), share_left=0.5) == 0.7  # under
    assert shift_bound.retreat(0.7, pilots, 0.065, over, share_left=0.0) == 0.7  # nothing left to generate
    assert shift_bound.retreat(0.7, pilots, None, over, share_left=0.5) == 0.7  # no bound
    rising = [pilot(0.0, 2.0, 0.02), pilot(1.0, 4.0, 0.06)]  # shift grows with c: c goes down
    assert shift_bound.retreat(0.5, rising, 0.035, Shift(0.040, {}, 0.0), share_left=0.5) == pytest.approx(0.25)


def test_the_shift_standard_error_matches_the_spread_of_mmd2_over_repeated_corpora():
    """2·sd(witness)/√n against the standard deviation of MMD² over 300 corpora of 50 documents
    drawn from one distribution, the reference fixed (a Gaussian in 8 dimensions, shifted by 1.0
    along one axis). Agreement within 25%: the first-order error neglects terms of order 1/n."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(150, 8))
    stats = ReferenceStats(score=1.0, ci_low=0.9, ci_high=1.1, half_width=0.1, num_docs=150,
                           bandwidth=float(np.sqrt(2 * 8)), vectors=reference)
    shift = np.zeros(8)
    shift[0] = 1.0
    values, errors = [], []
    for i in range(300):
        corpus = rng.normal(size=(50, 8)) + shift
        m = measure_shift([str(j) for j in range(50)], {}, stats, lambda texts, c=corpus: c[[int(t) for t in texts]],
                          np.random.default_rng(i))
        values.append(m.mmd2)
        errors.append(m.se)
    assert np.mean(values) > 5 * np.std(values) / np.sqrt(300)  # the shift is there
    assert np.mean(errors) == pytest.approx(np.std(values), rel=0.25)


def test_pilots_stopped_by_the_bounds_limit_on_c_name_the_bound_as_binding():
    """The worked example's bounded run: every pilot scored above the target, and the next step
    down in c was past the limit the bound set; the target was out of reach because of the bound."""
    pilots = [pilot(1.0, 4.95, 0.060), pilot(0.926, 4.24, 0.061), pilot(0.86, 4.31, 0.062)]
    assert shift_bound.settle_pilots(pilots, 3.37, 0.15, 0.08) == (1, "target")
    assert shift_bound.settle_pilots(pilots, 3.37, 0.15, 0.08, limited=True) == (1, "max_shift")
    # the rerun with draw noise: the last pilot's own draw (3.62) lay within 3.31 ± 0.35, its
    # neighbour 0.02 away in c scored 4.36, so the fit put the target at c = 0.50, past the limit
    # (0.86), and the corpus at that c ended at 4.50: the bound binds, not the target
    drawn = [pilot(1.0, 4.98, 0.060), pilot(0.857, 4.36, 0.062), pilot(0.879, 3.62, 0.060)]
    assert shift_bound.settle_pilots(drawn, 3.31, 0.35, 0.08, limited=True) == (2, "max_shift")
    assert shift_bound.settle_pilots([pilot(1.0, 3.40, 0.06)], 3.37, 0.15, 0.08) == (0, "")  # met, not limited


def test_a_fit_limited_by_the_bound_reports_the_d_expected_where_it_is_moved():
    from generator.run.knobs import Fit

    pilots = [pilot(1.0, 4.0, 0.05), pilot(0.0, 2.3, 0.10)]  # shift = 0.10 - 0.05 c: limit c >= 0.7
    fit = Fit(concentration=0.2, score=3.0, low=2.8, high=3.2, slope=2.0, bracket=float("inf"))
    moved = shift_bound.limit_fit(fit, pilots, 0.065)
    assert moved.concentration == pytest.approx(0.7)
    assert (moved.score, moved.low, moved.high) == pytest.approx((4.0, 3.8, 4.2))
    assert shift_bound.limit_fit(fit, pilots, None) == fit
