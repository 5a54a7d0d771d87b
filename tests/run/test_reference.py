"""A reference corpus in the recipe: measured once, relative targets, and the shift bound, on
the echo backend (documents echo their topic), a judge that clusters by topic, and a fake
embedder that places documents by domain. The reference holds documents on the topics of
three domains, so the whole grid lies far from it."""
import json

import numpy as np
import pytest

from conftest import ECHO_TEMPLATE, write_recipe
from fakes import CountingJudge, EchoBackend, TopicEmbed
from generator.errors import UserError
from generator.recipe import load_recipe
from generator.run import controller, knobs
from generator.run.reference import open_reference
from test_controller import RECIPE, topic_of

NEAR_DOMAINS = 3


def grid_topics(root):
    from generator.sampling.grid import load_axis
    return load_axis(root / "topics" / "topics.yaml", "topic").values


def write_reference(tmp_path, root, num_docs=150):
    values = grid_topics(root)
    domains = sorted({v.domain for v in values})[:NEAR_DOMAINS]
    near = [v.value for v in values if v.domain in domains]
    rows = [{"text": f"{near[i % len(near)]}\nreal document {i}", "id": f"r{i}"} for i in range(num_docs)]
    path = tmp_path / "real.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make(tmp_path, root, target: str, reference: str | None = "reference: {path: real.jsonl, num_docs: 120}\n"):
    write_reference(tmp_path, root)
    tpl = tmp_path / "echo.j2"
    tpl.write_text(ECHO_TEMPLATE)
    body = (RECIPE.replace("@TOPICS@", str(root / "topics" / "topics.yaml")).replace("@TPL@", str(tpl))
            .replace("target: {score: @SCORE@, tolerance: 0.3, pilot_docs: 100}\n", f"target: {target}\n"))
    return write_recipe(tmp_path, body + (reference or ""), name="ref.yaml")


def run(tmp_path, root, target, name="run", judge=None):
    plan = load_recipe(make(tmp_path, root, target))
    embed = TopicEmbed({v.value: v.domain for v in grid_topics(root)})
    out = tmp_path / name
    summary = controller.run(plan, out, EchoBackend(), judge=judge or CountingJudge(topic_of), embed=embed)
    return summary, out


def test_relative_target_is_the_reference_score_times_the_factor(tmp_path, root):
    summary, out = run(tmp_path, root, "{relative: 0.5, tolerance: 0.3, pilot_docs: 100}")
    ref = json.loads((out / "reference.json").read_text())
    assert ref["num_docs"] == 120 and ref["k"] == 10 and "proxies" in ref and ref["embedding"]["bandwidth"] > 0
    assert (out / "reference.npy").is_file()
    assert summary["reference"]["score"] == pytest.approx(ref["score"])
    assert summary["target"]["relative"] == 0.5
    assert summary["target"]["score"] == pytest.approx(0.5 * ref["score"])
    assert abs(summary["achieved"]["relative"] - 0.5) <= 0.3 / ref["score"] + 1e-9
    assert summary["achieved"]["relative_ci_low"] <= summary["achieved"]["relative"] <= summary["achieved"]["relative_ci_high"]
    rows = [json.loads(line) for line in (out / "controller.jsonl").read_text().splitlines()]
    assert all(r["reference_score"] == pytest.approx(ref["score"]) and r["shift"] is not None for r in rows)


def test_the_reference_is_measured_once_and_reused(tmp_path, root):
    plan = load_recipe(make(tmp_path, root, "{relative: 0.5, tolerance: 0.3, pilot_docs: 100}"))
    out = tmp_path / "out"
    out.mkdir()
    embed = TopicEmbed({v.value: v.domain for v in grid_topics(root)})
    judge = CountingJudge(topic_of)
    first, cost = open_reference(out, plan, judge, embed, np.random.default_rng(0))
    assert cost["calls"] > 0 and judge.batches > 0 and embed.calls == 120
    batches, embedded = judge.batches, embed.calls
    again, cost = open_reference(out, plan, judge, embed, np.random.default_rng(1))
    assert cost["calls"] == 0 and judge.batches == batches and embed.calls == embedded
    assert again.score == first.score and np.array_equal(again.vectors, first.vectors)


def test_shift_bound_keeps_the_corpus_closer_to_the_reference(tmp_path, root):
    free, _ = run(tmp_path, root, "{score: 2.0, tolerance: 0.3, pilot_docs: 100}", name="free")
    bound = 0.6 * free["achieved"]["shift"]
    bounded, out = run(tmp_path, root, f"{{score: 2.0, tolerance: 0.3, pilot_docs: 100, max_shift: {bound}}}",
                       name="bounded")
    assert bounded["achieved"]["shift"] < free["achieved"]["shift"]
    # On this grid reweighting alone cannot bring the target's c under the bound (before the
    # fix, the run met D at MMD² 0.25 > bound 0.16 and reported nothing): the bound holds, binds,
    # and D stays above the target.
    assert bounded["achieved"]["within_shift_bound"] and bounded["binding"] == "max_shift"
    assert bounded["achieved"]["score"] > 2.0 + 0.3
    rows = [json.loads(line) for line in (out / "controller.jsonl").read_text().splitlines()]
    assert any("weight moved away from far values" in r["action"] for r in rows)
    assert any("max_shift binds" in r["action"] for r in rows)


def test_bound_that_cannot_hold_stops_with_the_best_trade_off(tmp_path, root):
    with pytest.raises(controller.RunStopped, match=r"cannot both hold: max_shift binds.*best trade-off c="):
        run(tmp_path, root, "{score: 6.0, tolerance: 0.3, pilot_docs: 100, max_shift: 0.0001}")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["binding"] == "max_shift" and summary["stopped"]


@pytest.mark.parametrize("target, reference, match", [
    ("{relative: 1.2}", None, "target.relative needs a reference corpus"),
    ("{score: 2.0, max_shift: 0.05}", None, "target.max_shift needs a reference corpus"),
    ("{score: 2.0, max_shift: 0}", "reference: {path: real.jsonl}\n", "target.max_shift must be > 0"),
    ("{score: 2.0, max_shift: -0.1}", "reference: {path: real.jsonl}\n", "target.max_shift must be > 0"),
    ("{score: 2.0, relative: 1.2}", "reference: {path: real.jsonl}\n", "exactly one of score"),
    ("{tolerance: 0.3}", "reference: {path: real.jsonl}\n", "exactly one of score"),
    ("{relative: 0}", "reference: {path: real.jsonl}\n", "target.relative must be > 0"),
    ("{score: 2.0}", "reference: {path: missing.jsonl}\n", "reference: .*missing.jsonl: no such file"),
    ("{score: 2.0}", "reference: {path: real.jsonl, text_field: body}\n", "no text field 'body'.*reference.text_field"),
    ("{score: 2.0}", "reference: {path: real.jsonl, num_docs: 5}\n", "too few to measure D at K = 10"),
    ("{score: 2.0, k: 100}", "reference: {path: real.jsonl}\n", "too few to measure D at K = 100"),
])
def test_bad_reference_and_targets_fail_at_load(tmp_path, root, target, reference, match):
    with pytest.raises(UserError, match=match):
        load_recipe(make(tmp_path, root, target + "", reference))


def test_empty_and_unreadable_references_fail_at_load(tmp_path, root):
    recipe = make(tmp_path, root, "{score: 2.0}")
    (tmp_path / "real.jsonl").write_text("")
    with pytest.raises(UserError, match="reference: .*empty"):
        load_recipe(recipe)
    (tmp_path / "real.jsonl").write_bytes(b"\xff\xfe not json\n")
    with pytest.raises(UserError, match="reference: .*not valid UTF-8"):
        load_recipe(recipe)


def test_recipes_without_a_reference_keep_their_hash(tmp_path, root):
    """The new keys are hashed only when set (regression guard for golden rows)."""
    plain = load_recipe(make(tmp_path, root, "{score: 2.0}", reference=None))
    with_ref = load_recipe(make(tmp_path, root, "{score: 2.0}"))
    assert plain.recipe_hash != with_ref.recipe_hash and plain.reference_texts == ()
    assert len(with_ref.reference_texts) == 120


# ---- the pure rules --------------------------------------------------------------------------

def test_shift_factors_move_weight_from_far_values_to_near_ones():
    weights = {"topic": {"far": 1.0, "near": 1.0, "mid": 1.0, "off": 0.0, "few": 1.0}}
    witness = {"topic": {"far": (0.30, 10), "near": (-0.10, 10), "mid": (0.10, 10), "off": (0.9, 10),
                         "few": (0.9, 1)}}
    factors = knobs.shift_factors(weights, witness)["topic"]
    assert factors["far"] < 1.0 < factors["near"] and factors["mid"] == pytest.approx(1.0)
    assert "off" not in factors and "few" not in factors  # inactive, too few documents
    assert knobs.shift_factors(weights, {"topic": {"far": (0.2, 10), "near": (0.2, 10)}}) == {}
    merged = knobs.merge_factors({"topic": {"far": 0.5}}, {"topic": {"far": 0.5, "near": 2.0}})
    assert merged["topic"] == {"far": 0.25, "near": 2.0}
    assert knobs.apply_factors(weights, merged)["topic"]["far"] == 0.25


def test_best_trade_off_names_the_binding_constraint():
    # (score, shift) with target 3 ± 0.3 and bound 0.1
    assert knobs.best_tradeoff([(3.1, 0.5), (2.0, 0.05), (2.5, 0.08)], 3.0, 0.3, 0.1) == (2, "max_shift")
    assert knobs.best_tradeoff([(1.0, 0.5), (2.0, 0.3)], 3.0, 0.3, 0.1) == (1, "target")
    assert knobs.best_tradeoff([(1.0, 0.5), (5.0, 0.3)], 3.0, 0.3, 0.1) == (1, "max_shift")  # bracketed


def test_witness_is_high_where_the_corpus_is_far_from_the_reference():
    from generator.measure.shift import mmd_rbf, witness
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (200, 4))
    corpus = np.vstack([rng.normal(0, 1, (100, 4)), rng.normal(4, 1, (100, 4))])
    w = witness(corpus, reference, bandwidth=2.0)
    assert w[100:].mean() > w[:100].mean()
    assert mmd_rbf(corpus[:100], reference, bandwidth=2.0) < mmd_rbf(corpus, reference, bandwidth=2.0)


def test_shift_plot_and_card_rows_of_a_bounded_run(tmp_path, root):
    from generator.export.card import write_card
    summary, out = run(tmp_path, root, "{relative: 0.5, tolerance: 0.3, pilot_docs: 100, max_shift: 0.5}")
    assert (out / "plots" / "shift_trajectory.png").read_bytes()[:4] == b"\x89PNG"
    card = write_card(out, embed=TopicEmbed({v.value: v.domain for v in grid_topics(root)})).read_text()
    assert "plots/reference_map.png" in card and (out / "plots" / "reference_map.png").stat().st_size > 1000
    assert "| reference D |" in card and "shift from reference (MMD²)" in card and "bound 0.5" in card
    assert "plots/shift_trajectory.png" in card


def test_relative_target_outside_the_judges_range_fails_before_generating(tmp_path, root):
    backend = EchoBackend()
    plan = load_recipe(make(tmp_path, root, "{relative: 50, tolerance: 0.3, pilot_docs: 100}"))
    embed = TopicEmbed({v.value: v.domain for v in grid_topics(root)})
    with pytest.raises(UserError, match=r"target.relative 50.0 × reference D .* is outside \[1/K, K\]"):
        controller.run(plan, tmp_path / "out", backend, judge=CountingJudge(topic_of), embed=embed)
    assert backend.calls == []
