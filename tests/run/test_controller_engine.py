"""The feedback loop on the real stack: SmolLM2-135M through vLLM's CPU build in a Ray actor,
scored by the embedding judge.

`make test` runs one small steered run that checks the plumbing on real text: pilot rounds are
generated and measured, the loop moves the concentration toward a low target, and the corpus and
its rounds are recorded. Whether runs land within tolerance is a statistical question answered on
fakes (tests/run/test_controller.py) and in bench/; the two-target landing run here is marked
`slow` and runs under `make test-all`.

At 100 documents the corpus itself is a noisy draw: D near 2.0 moves by 0.3-0.4 between
corpora at the same concentration, so the D = 2.0 run is held to 0.5 rather than the
controller's 0.3; the D = 0.6 run to the 0.3."""
import json

import pytest

from conftest import SMALL_RECIPE, write_recipe
from generator.run import controller
from generator.recipe import load_recipe

pytestmark = pytest.mark.integration

TARGETED = (SMALL_RECIPE
            .replace("size: {num_docs: 20, shard_rows: 8}", "size: {num_docs: 100, shard_rows: 40}")
            .replace("max_tokens: 32", "max_tokens: 48")
            .replace("  - path: @ROOT@/prompts/textbook.j2\n", "")
            + "target: {score: @SCORE@, tolerance: 0.3, pilot_docs: 40, num_batches: 200, max_pilot_rounds: 5,"
              " num_rounds: 2}\nkeep_truncated: keep\n")

SMALL_STEERED = (SMALL_RECIPE
                 .replace("size: {num_docs: 20, shard_rows: 8}", "size: {num_docs: 30, shard_rows: 15}")
                 .replace("max_tokens: 32", "max_tokens: 24")
                 .replace("  - path: @ROOT@/prompts/textbook.j2\n", "")
                 + "target: {score: 0.6, tolerance: 0.3, pilot_docs: 15, num_batches: 100, max_pilot_rounds: 2,"
                   " num_rounds: 1}\nkeep_truncated: keep\n")


def test_a_steered_run_on_the_real_engine_measures_its_pilots_and_concentrates(tmp_path, ray_engine):
    plan = load_recipe(write_recipe(tmp_path, SMALL_STEERED))
    out = tmp_path / "run"
    summary = controller.run(plan, out, ray_engine)
    assert summary["num_docs"] == 30
    assert 1 <= summary["rounds"]["pilot"] <= 2
    assert summary["cost"]["pilot_tokens"] > 0 and summary["cost"]["corpus_tokens"] > 0
    rounds = [json.loads(line) for line in (out / "controller.jsonl").read_text().splitlines() if line.strip()]
    assert rounds and all(1 / 10 <= r["score"] <= 10 for r in rounds if r.get("score") is not None)
    # far below what an even grid scores, so the loop must concentrate sampling
    assert summary["final_concentration"] < 1.0
    assert 1 / 10 <= summary["achieved"]["score"] <= 10


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, ray_engine):
    out = {}
    for score in (0.6, 2.0):
        tmp = tmp_path_factory.mktemp(f"target{score}")
        plan = load_recipe(write_recipe(tmp, TARGETED.replace("@SCORE@", str(score))))
        out[score] = controller.run(plan, tmp / "run", ray_engine)
    return out


@pytest.mark.slow
def test_two_targets_land_on_the_right_sides_within_tolerance(two_runs):
    low, high = two_runs[0.6], two_runs[2.0]
    assert low["num_docs"] == high["num_docs"] == 100
    assert low["achieved"]["score"] < high["achieved"]["score"]
    assert abs(low["achieved"]["score"] - 0.6) <= 0.3, low["achieved"]
    assert abs(high["achieved"]["score"] - 2.0) <= 0.5, high["achieved"]
    assert low["final_concentration"] < high["final_concentration"]
    for s in (low, high):
        assert s["rounds"]["pilot"] <= 5 and s["rounds"]["main"] <= 2
        assert s["cost"]["pilot_tokens"] > 0 and s["cost"]["corpus_tokens"] > 0
