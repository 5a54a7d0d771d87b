"""The feedback loop on a fake backend whose diversity responds to the grid in a known way:
documents echo their topic, and a judge groups them by topic (or domain, or not at all)."""
import json

import numpy as np
import pytest
import yaml

from conftest import ECHO_TEMPLATE, write_recipe
from fakes import Crash, CrashingEcho, EchoBackend, KeyJudge
from generator.run import controller, knobs as steering
from generator.errors import UserError
from generator.sampling.grid import Axis, AxisValue, Grid
from generator.recipe import load_recipe
from generator.files import read_documents

RECIPE = """
name: steer
seed: 11
roots: [@ROOT@, .]
grid:
  topic: @TOPICS@
  persona: @ROOT@/topics/personas.yaml
templates:
  - path: @TPL@
size: {num_docs: 600, shard_rows: 100}
target: {score: @SCORE@, tolerance: 0.3, pilot_docs: 100}
scoring: {enabled: false}
"""


def make_recipe(tmp_path, root, score, topics=None, extra=""):
    tpl = tmp_path / "echo.j2"
    tpl.write_text(ECHO_TEMPLATE)
    body = (RECIPE.replace("@TOPICS@", str(topics or root / "topics" / "topics.yaml"))
            .replace("@TPL@", str(tpl)).replace("@SCORE@", str(score))) + extra
    return write_recipe(tmp_path, body, name=f"steer-{score}.yaml")


def topic_of(text):
    return text.splitlines()[0]


def run(tmp_path, root, score, judge=None, name="run", **kw):
    plan = load_recipe(make_recipe(tmp_path, root, score, **kw))
    out = tmp_path / name
    summary = controller.run(plan, out, EchoBackend(), judge=judge or KeyJudge(topic_of))
    return summary, out


@pytest.mark.parametrize("score", [1.0, 3.0, 6.0])
def test_targets_inside_the_range_converge(tmp_path, root, score):
    summary, out = run(tmp_path, root, score)
    achieved = summary["achieved"]
    assert abs(achieved["score"] - score) <= 0.3, achieved
    assert achieved["within_tolerance"]
    assert summary["num_docs"] == 600
    assert summary["rounds"]["pilot"] <= 2 and summary["rounds"]["main"] <= 4
    rows = [json.loads(l) for l in (out / "controller.jsonl").read_text().splitlines()]
    assert len(rows) == summary["rounds"]["pilot_points"] + summary["rounds"]["main"]
    assert {"round", "docs", "score", "ci_low", "ci_high", "weights", "action"} <= set(rows[0])
    assert (out / "plots" / "score_trajectory.png").stat().st_size > 1000
    assert (out / "plots" / "weights.png").stat().st_size > 1000
    weights = yaml.safe_load((out / "weights.yaml").read_text())["weights"]
    assert set(weights) == {"topic", "persona"}


def test_low_and_high_targets_end_on_the_right_sides(tmp_path, root):
    low, _ = run(tmp_path, root, 1.5, name="low")
    high, _ = run(tmp_path, root, 5.0, name="high")
    assert low["achieved"]["score"] < high["achieved"]["score"]
    assert low["final_concentration"] < high["final_concentration"]


def test_target_above_reach_tries_growth_then_stops_with_best_score(tmp_path, root):
    grid = load_recipe(make_recipe(tmp_path, root, 3.0)).grid
    domain_of = {v.value: v.domain for v in grid.axes["topic"].values}
    judge = KeyJudge(lambda t: domain_of.get(topic_of(t), "added"), name="domain")
    with pytest.raises(controller.RunStopped, match=r"above what this grid reaches.*best reachable score"):
        run(tmp_path, root, 9.5, judge=judge)
    added = yaml.safe_load((tmp_path / "run" / "grid.added.yaml").read_text())
    assert added["axis"] == "topic" and added["domains"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"] and summary["rounds"]["pilot"] <= 3


def test_growth_lifts_a_small_grid_to_the_target(tmp_path, root):
    topics = tmp_path / "few.yaml"
    topics.write_text("axis: topic\ndomains:\n  - name: Chemistry\n    topics: [acids, bases, salts]\n")
    summary, out = run(tmp_path, root, 2.0, topics=topics)
    added = yaml.safe_load((out / "grid.added.yaml").read_text())
    assert len(added["domains"][0]["topics"]) >= 3
    assert summary["achieved"]["within_tolerance"]


def test_target_below_reach_stops(tmp_path, root):
    every_text_distinct = KeyJudge(lambda t: t, name="distinct")
    with pytest.raises(controller.RunStopped, match="below what this grid reaches"):
        run(tmp_path, root, 3.0, judge=every_text_distinct)


def test_noisy_judge_cannot_make_the_loop_run_forever(tmp_path, root):
    rng = np.random.default_rng(0)
    noisy = KeyJudge(lambda t: int(rng.integers(0, 4)), name="noise")
    try:
        summary, _ = run(tmp_path, root, 6.0, judge=noisy)
    except controller.RunStopped:
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds"]["pilot"] <= 2 + 2 and summary["rounds"]["main"] <= 4


def test_calibration_cost_is_reported(tmp_path, root):
    summary, _ = run(tmp_path, root, 3.0)
    cost = summary["cost"]
    assert cost["corpus_tokens"] > 0 and cost["pilot_tokens"] >= cost["discarded_pilot_tokens"]
    assert cost["calibration_ratio"] == pytest.approx(
        (cost["discarded_pilot_tokens"] + cost["judge_tokens"]) / cost["corpus_tokens"])


@pytest.mark.parametrize("overrides, pilot_docs", [
    ([], 100),  # the recipe's pilot_docs
    (["target.pilot_docs=0"], 50),  # derived: 1% of 600 is below 5 batches of K = 10, so 50
    (["target.pilot_docs=0", "target.k=5"], 25),
    (["target.pilot_docs=0", "size.num_docs=20000"], 200),  # 1%
    (["target.pilot_docs=0", "size.num_docs=50000"], 400),  # 1% capped at 400
])
def test_valid_targets_load_with_their_derived_pilot_size(tmp_path, root, overrides, pilot_docs):
    from generator.recipe import pilot_size
    recipe = load_recipe(make_recipe(tmp_path, root, 3.0), overrides).recipe
    assert recipe.target.score == 3.0 and pilot_size(recipe) == pilot_docs


@pytest.mark.parametrize("override,match", [
    ("target.score=0.05", r"outside \[1/K, K\]"),
    ("target.score=10.5", r"outside \[1/K, K\]"),
    ("target.tolerance=0", "tolerance must be > 0"),
    ("target.tolerance=-1", "tolerance must be > 0"),
    ("target.judge=llm", "target.judge is llm but judge.model is not set"),
    ("size.num_docs=50", "smaller than one pilot round"),
])
def test_bad_targets_fail_at_load(tmp_path, root, override, match):
    with pytest.raises(UserError, match=match):
        load_recipe(make_recipe(tmp_path, root, 3.0), [override])


# ---- the pure update rules ------------------------------------------------------------------

def small_grid():
    return Grid({"topic": Axis("topic", tuple(AxisValue(f"t{i}") for i in range(100)))})


def test_concentration_is_monotone_in_active_values():
    orders = steering.axis_orders(small_grid(), seed=1)
    active = [sum(w > 0 for w in steering.concentration_weights(orders, c)["topic"].values())
              for c in np.linspace(0, 1, 11)]
    assert active[0] == 1 and active[-1] == 100
    assert all(a <= b for a, b in zip(active, active[1:]))
    # nested: a smaller c keeps a subset of the values a larger c keeps
    small = {v for v, w in steering.concentration_weights(orders, 0.3)["topic"].items() if w > 0}
    large = {v for v, w in steering.concentration_weights(orders, 0.7)["topic"].items() if w > 0}
    assert small < large


def test_concentration_switches_a_value_on_gradually():
    orders = steering.axis_orders(small_grid(), seed=1)
    for c in np.linspace(0, 1, 23):
        weights = sorted(steering.concentration_weights(orders, c)["topic"].values(), reverse=True)
        assert sum(weights) == pytest.approx(100 ** c)  # the active mass grows smoothly with c
        assert sum(w not in (0.0, 1.0) for w in weights) <= 1  # only the value being switched on is partial


def test_update_weights_moves_relatively_redundant_cells_by_direction():
    weights = {"topic": {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}}
    # pair-weighted mean mate lift over active a, b (d has too few pairs): (3*10 + 1*10) / 20 = 2
    attribution = {"mates": {"topic": {"a": {"mates": 10, "mate_lift": 3.0},
                                       "b": {"mates": 10, "mate_lift": 1.0},
                                       "c": {"mates": 10, "mate_lift": 9.0},
                                       "d": {"mates": 1, "mate_lift": 9.0}}}}
    up = steering.update_weights(weights, attribution, direction=1)
    down = steering.update_weights(weights, attribution, direction=-1)
    assert up["topic"]["a"] == pytest.approx(np.exp(-0.5)) and down["topic"]["a"] == pytest.approx(np.exp(0.5))
    assert up["topic"]["b"] == pytest.approx(np.exp(0.5)) and down["topic"]["b"] == pytest.approx(np.exp(-0.5))
    assert up["topic"]["c"] == down["topic"]["c"] == 0.0  # inactive stays inactive
    assert up["topic"]["d"] == down["topic"]["d"] == 1.0  # too few pairs to judge
    uniform = {"mates": {"topic": {"a": {"mates": 10, "mate_lift": 7.0},
                                   "b": {"mates": 10, "mate_lift": 7.0}}}}
    same = steering.update_weights(weights, uniform, direction=1)
    assert same["topic"]["a"] == same["topic"]["b"] == pytest.approx(1.0)  # equal redundancy: no move
    extreme = {"mates": {"topic": {"a": {"mates": 10, "mate_lift": 50.0},
                                   "b": {"mates": 990, "mate_lift": 1.0}}}}
    assert steering.update_weights(weights, extreme, direction=1)["topic"]["a"] == pytest.approx(0.5)  # clipped
    with pytest.raises(ValueError, match="direction"):
        steering.update_weights(weights, attribution, direction=0)


def test_next_concentration_brackets_and_detects_unreachable_ends():
    assert steering.next_concentration([(1.0, 5.0)], 3.0) == 0.0  # above at c=1: try the low end
    assert steering.next_concentration([(1.0, 2.0)], 3.0) is None  # below at c=1: unreachable
    assert steering.next_concentration([(0.0, 1.0)], 0.5) is None  # above at c=0: unreachable
    c = steering.next_concentration([(1.0, 5.0), (0.0, 1.0)], 3.0)
    assert 0.0 < c < 1.0 and c == pytest.approx(0.5)
    c = steering.next_concentration([(1.0, 5.0), (0.0, 1.0)], 4.9)
    assert c == pytest.approx(0.9)  # clamped inside the bracket so it keeps shrinking
    # first step with a floor: interpolate towards (0, floor) without measuring c = 0
    assert steering.next_concentration([(1.0, 5.1)], 2.6, floor=0.1) == pytest.approx(0.5)
    assert steering.next_concentration([(1.0, 5.1)], 0.2, floor=0.1) == pytest.approx(0.05)  # clamped
    assert steering.next_concentration([(1.0, 5.1), (0.5, 3.0)], 2.0, floor=0.1) == 0.0
    assert steering.next_concentration([(0.5, 3.0), (0.495, 2.0)], 2.5) is None  # bracket below 0.01
    assert steering.bracket_width([(0.5, 3.0), (0.495, 2.0)], 2.5) == pytest.approx(0.005)


@pytest.mark.parametrize("crash_on_call", [2, 4, 6, 9])
def test_resume_continues_the_controller_state(tmp_path, root, crash_on_call):
    plan = load_recipe(make_recipe(tmp_path, root, 2.0))
    full = controller.run(plan, tmp_path / "full", EchoBackend(), judge=KeyJudge(topic_of))
    out = tmp_path / "run"
    with pytest.raises(Crash):
        controller.run(plan, out, CrashingEcho(crash_on_call), judge=KeyJudge(topic_of))
    saved = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else None
    summary = controller.run(plan, out, EchoBackend(), resume=True, judge=KeyJudge(topic_of))
    final = json.loads((out / "state.json").read_text())
    # the round counter and the measured history continue from where the crash left them
    if saved is not None:
        assert final["steering"]["round"] >= saved["steering"]["round"]
        assert final["steering"]["history"][: len(saved["steering"]["history"])] == saved["steering"]["history"]
    ids = read_documents(out).column("id").to_pylist()
    assert len(ids) == summary["num_docs"] == 600 and len(set(ids)) == 600
    # exactly the corpus and the steering of the run that was never interrupted
    assert ids == read_documents(tmp_path / "full").column("id").to_pylist()
    assert final == json.loads((tmp_path / "full" / "state.json").read_text()) | {"counters": final["counters"]}
    assert summary["achieved"] == full["achieved"]


def test_min_fidelity_stops_a_run_whose_documents_ignore_their_topics(tmp_path, root):
    from fakes import EmbeddingKeyJudge, FakeBackend
    plan = load_recipe(make_recipe(tmp_path, root, 7.0), ["target.min_fidelity=0.6", "target.tolerance=3"])
    with pytest.raises(controller.RunStopped, match=r"on-topic share 0\.\d+ .*below min_fidelity 0\.6.*target\.min_fidelity"):
        controller.run(plan, tmp_path / "run", FakeBackend(), judge=EmbeddingKeyJudge(lambda t: t.split()[0]))
    rows = [json.loads(l) for l in (tmp_path / "run" / "controller.jsonl").read_text().splitlines()]
    assert rows[-1]["phase"] == "main" and rows[-1]["fidelity"] < 0.6 and rows[-1]["fidelity_action"] == "stop"


def test_documents_that_follow_their_topics_pass_min_fidelity(tmp_path, root):
    from fakes import EmbeddingKeyJudge
    plan = load_recipe(make_recipe(tmp_path, root, 3.0), ["target.min_fidelity=0.6"])
    summary = controller.run(plan, tmp_path / "run", EchoBackend(), judge=EmbeddingKeyJudge(topic_of))
    rows = [json.loads(l) for l in (tmp_path / "run" / "controller.jsonl").read_text().splitlines()]
    main = [r for r in rows if r["phase"] == "main"]
    assert summary["num_docs"] == 600 and main and all(r["fidelity"] >= 0.6 for r in main)


THREE_PARTS = """{#
variables: [topic, topics, persona, part, num_parts]
num_topics: 3
parts: topics
#}
{{ topic }}
part {{ part }} of {{ num_parts }} ({{ topics | join(', ') }}) by {{ persona }}"""


def test_the_lookahead_counts_documents_at_the_template_mix(tmp_path, root):
    """Regression: the lookahead was counted in documents of the widest template. With a
    three-part template beside a one-part one, equally weighted, a document makes two requests
    on average, so 32 documents fill an engine of 64 requests, not 21. On the cluster recipe the
    lookahead came to 0.9 of the engines' capacity, less than they finish while a round's
    slowest sample runs, so they ran empty at every main round's end. It is 2.5 capacities
    counted at the template mix."""
    (tmp_path / "parts.j2").write_text(THREE_PARTS)
    templates = f"  - path: {tmp_path / 'echo.j2'}\n  - path: {tmp_path / 'parts.j2'}\n"
    body = make_recipe(tmp_path, root, 3.0).read_text()
    body = body.replace(f"  - path: {tmp_path / 'echo.j2'}\n", templates)
    (tmp_path / "mix.yaml").write_text(body.replace("num_docs: 600", "num_docs: 300"))
    plan = load_recipe(tmp_path / "mix.yaml")
    from generator.run.parts import with_parts
    backend = with_parts(EchoBackend(), plan.templates, plan.recipe.keep_truncated)
    assert backend.capacity == 64 // 3 and controller.document_capacity(plan, backend) == 32
    assert controller.document_capacity(plan, EchoBackend()) == 64  # no parts: the backend's own count
    controller.run(plan, tmp_path / "run", EchoBackend(), judge=KeyJudge(topic_of))
    state = json.loads((tmp_path / "run" / "state.json").read_text())["steering"]
    assert state["lookahead"] == 80


@pytest.mark.parametrize("lookahead, num_docs, num_rounds, want", [
    (16_905, 100_000, 4, 16_905),  # deep: the first correction lands at 42% with the engines full
    (16_905, 20_000, 4, 5_000),  # shallow: cut so that the first correction lands at the middle
    (16_905, 20_000, 2, 16_905),  # no correction can reach the first half: the engines stay full
    (160, 2_000, 4, 160),
])
def test_a_shallow_corpus_cuts_the_lookahead_so_its_first_correction_lands_by_the_middle(
        lookahead, num_docs, num_rounds, want):
    assert steering.round_lookahead(lookahead, num_docs, num_rounds) == want


def test_main_rounds_are_measured_while_the_engine_keeps_working(tmp_path, root):
    """Steering without draining: a main round's measurement runs in a thread while requests are
    in flight; new weights apply from the round's end plus the lookahead, and every row names the
    weight epoch it was drawn under."""
    import threading

    import time

    class SlowEcho(EchoBackend):
        answer = 8  # 8 requests per poll, each poll taking engine time, so requests stay in flight

        def poll(self, timeout_s):
            time.sleep(0.02)
            return super().poll(timeout_s)

    backend = SlowEcho()
    seen = []

    class WatchingJudge(KeyJudge):
        def cluster(self, batches):
            seen.append((threading.current_thread() is threading.main_thread(), backend.in_flight))
            return super().cluster(batches)

    plan = load_recipe(make_recipe(tmp_path, root, 3.0))
    out = tmp_path / "run"
    summary = controller.run(plan, out, backend, judge=WatchingJudge(topic_of))
    assert summary["num_docs"] == 600 and summary["rounds"]["main"] >= 2
    beside = [in_flight for main_thread, in_flight in seen if not main_thread]
    assert beside and max(beside) > 0  # measured beside generation, with requests out
    state = json.loads((out / "state.json").read_text())["steering"]
    starts = [e["start"] for e in state["epochs"]]
    assert starts == sorted(starts) and len(starts) >= 3
    table = read_documents(out)
    for index, epoch in zip(table.column("sample_index").to_pylist(), table.column("epoch").to_pylist()):
        assert starts[epoch] <= index < (starts[epoch + 1] if epoch + 1 < len(starts) else float("inf"))
    rows = [json.loads(l) for l in (out / "controller.jsonl").read_text().splitlines()]
    main_rows = [r for r in rows if r["phase"] == "main"]
    assert all(r["docs"] < 600 for r in main_rows)  # rounds steer; the finished corpus is measured at the end
    assert summary["achieved"]["num_batches"] > 0


def test_main_rounds_record_the_c_their_documents_were_drawn_at(tmp_path, root):
    """Each main round's history entry lists the corpus's documents by the concentration of the
    epoch they were drawn under: the kept pilot point's at its own c, a lookahead's at the c
    before the correction that followed it."""
    summary, out = run(tmp_path, root, 3.0)
    state = json.loads((out / "state.json").read_text())["steering"]
    by_epoch = {}
    for epoch in read_documents(out).column("epoch").to_pylist():
        by_epoch[epoch] = by_epoch.get(epoch, 0) + 1
    mains = [h for h in state["history"] if h["kind"] == "main"]
    assert mains and all(sum(d["docs"] for d in h["drawn"]) == h["docs"] for h in mains)
    drawn_cs = {d["concentration"] for h in mains for d in h["drawn"]}
    assert drawn_cs <= {e["concentration"] for e in state["epochs"]} and -1.0 not in drawn_cs
    assert {state["epochs"][e]["concentration"] for e in by_epoch} >= drawn_cs
