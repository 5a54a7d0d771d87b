"""Draw noise: how far D moves between two rounds drawn at the same settings, which the
judge's interval (K-batches resampled from the same documents) does not see.

- `rounds.draw_sd` from one round's random halves against the spread of many fresh draws;
- a pilot that lands within tolerance while its neighbours say otherwise is not accepted;
- the warning when the corpus's own draw noise is wider than the tolerance;
- the controller records each pilot's draw sd and the corpus's expected one."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fakes import EchoBackend, SplittingJudge
from generator.judges.protocol import score_corpus
from generator.recipe import Target
from generator.run import knobs
from generator.run.rounds import corpus_draw_sd, draw_sd, warn_corpus_draw
from generator.run.state import Round

TARGET = Target(score=3.0, tolerance=0.3, k=10)


def draw(rng: np.random.Generator, n: int, probs: np.ndarray) -> list[str]:
    """n documents whose first line is a key drawn from `probs` (a skewed distribution)."""
    keys = rng.choice(len(probs), size=n, p=probs)
    return [f"key {k}\ndoc {i} {rng.integers(1 << 30)}" for i, k in enumerate(keys)]


@pytest.mark.parametrize("n", [60, 100])
def test_draw_sd_from_one_round_matches_the_spread_between_fresh_rounds(n):
    """Over 30 rounds the half-split estimate averages within 30% of the sd measured across 150
    fresh draws (judge noise removed both ways), for a free judge grouping by key."""
    probs = 1.0 / np.arange(1, 41) ** 1.1
    probs /= probs.sum()
    judge = SplittingJudge(0.0, calls=0)
    rng = np.random.default_rng(7)
    fresh = [score_corpus(draw(rng, n, probs), judge, k=10, rng=rng, num_batches=500) for _ in range(150)]
    judge_var = np.mean([(r.half_width / 1.96) ** 2 for r in fresh])
    truth = float(np.sqrt(np.var([r.score for r in fresh], ddof=1) - judge_var))
    estimates = [draw_sd(draw(rng, n, probs), judge, TARGET, rng) for _ in range(30)]
    assert truth > 0.05  # the draw moves D well beyond the judge's noise here
    assert 0.7 * truth <= float(np.mean(estimates)) <= 1.3 * truth, (truth, np.mean(estimates))


def test_a_round_too_small_to_halve_into_batches_has_no_draw_sd():
    judge = SplittingJudge(0.0, calls=0)
    texts = draw(np.random.default_rng(0), 30, np.full(5, 0.2))
    assert draw_sd(texts, judge, TARGET, np.random.default_rng(0)) == 0.0


def test_a_lucky_pilot_is_pulled_towards_its_neighbours():
    """Three pilots 0.04 apart in c, the middle one 0.5 above the line through the other two:
    with a draw sd of 0.3 on each, D at the middle c is read off the line through all three,
    not from the lucky one alone; measured without the draw sd it would be the same weighted
    line, so the point's own spread decides only how much curvature is allowed for."""
    pilots = [Round(0.38, 2.8, "pilot", half_width=0.06, draw_sd=0.3), Round(0.42, 3.4, "pilot", half_width=0.06,
                                                                              draw_sd=0.3),
              Round(0.46, 3.0, "pilot", half_width=0.06, draw_sd=0.3)]
    points = [(p.concentration, p.score, p.spread) for p in pilots]
    level, se = knobs.level_at(points, 0.42, 3.4, floor=0.1)
    assert pilots[1].spread == pytest.approx(np.hypot(0.06, 1.96 * 0.3))
    assert 2.8 < level < 3.2 and se > 0.1  # a 3.4 ± 0.15 target is not met by the middle pilot
    alone, _ = knobs.level_at(points[1:2], 0.42, 3.4, floor=0.1)
    assert alone == pytest.approx(3.4)  # one pilot: its own score


def test_the_warning_names_the_settings_when_the_corpus_draw_spans_the_tolerance(caplog):
    pilots = [Round(0.5, 3.0, "pilot", draw_sd=0.3)]
    assert corpus_draw_sd(pilots, 100, 400) == pytest.approx(0.15)
    with caplog.at_level(logging.WARNING, logger="generator.run.rounds"):
        warning = warn_corpus_draw(pilots, 100, 400, 0.15)
    assert warning and "±0.29" in warning and "target.tolerance or size.num_docs" in caplog.text
    assert warn_corpus_draw(pilots, 100, 400, 0.35) is None  # 1.96 × 0.15 = 0.29 fits in ±0.35
    assert warn_corpus_draw(pilots, 100, 10_000, 0.15) is None  # a larger corpus averages the draw out
    later = Round(0.4, 2.5, "pilot", draw_sd=0.3, sweep=1)
    assert warn_corpus_draw([*pilots, later], 100, 400, 0.15) is None  # once only: at the first sweep
    beside = Round(0.4, 2.5, "pilot", draw_sd=0.3)
    assert warn_corpus_draw([*pilots, beside], 100, 400, 0.15)  # the first sweep's points together
    assert corpus_draw_sd([Round(0.5, 3.0, "pilot")], 100, 400) == 0.0  # not measured


def test_the_controller_records_each_pilots_draw_sd_and_the_corpus_expected_one(tmp_path, caplog):
    from conftest import echo_recipe
    from generator.recipe import load_recipe
    from generator.run import controller

    recipe = echo_recipe(tmp_path, "draws", 4, "{num_docs: 400, shard_rows: 200}",
                         "{score: 2.5, tolerance: 0.03, pilot_docs: 100, max_pilot_rounds: 3}")
    with caplog.at_level(logging.WARNING, logger="generator.run.rounds"):
        summary = controller.run(load_recipe(recipe), tmp_path / "run", EchoBackend(),
                                 judge=SplittingJudge(0.05))
    rows = [json.loads(line) for line in (tmp_path / "run" / "controller.jsonl").read_text().splitlines()]
    pilots = [r for r in rows if r["phase"] == "pilot"]
    assert pilots and all(r["draw_sd"] > 0 for r in pilots)
    expected = np.sqrt(np.mean([r["draw_sd"] ** 2 for r in pilots]) * 100 / 400)
    assert summary["achieved"]["draw_sd"] == pytest.approx(expected)
    assert caplog.text.count("raise target.tolerance or size.num_docs") == 1, [r["draw_sd"] for r in pilots]
