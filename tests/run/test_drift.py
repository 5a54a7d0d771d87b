"""Reweighting away from drift: factors from per-group on-topic shares (run/drift.py), and a
steered run whose documents leave their topic under one template only."""
import json

import pytest
import yaml

from conftest import ECHO_TEMPLATE, write_recipe
from fakes import EchoBackend, EmbeddingKeyJudge
from generator.files import read_documents
from generator.measure.fidelity import FidelityReport, GroupShare, check_fidelity
from generator.recipe import load_recipe
from generator.run import controller, drift
from generator.sampling.grid import Axis, AxisValue, Grid


def report_with(topic_share, groups):
    return FidelityReport(num_docs=100, num_topics=50, top_r=3, min_cosine=0.4, topic_share=topic_share,
                          num_style_docs=0, style_share=None, groups=tuple(groups))


def group(value, share, n=20, column="template"):
    return GroupShare(column=column, value=value, num_docs=n, topic_share=share, num_style_docs=0, style_share=None)


def test_the_column_that_explains_drift_loses_weight_where_a_sibling_stays_on_topic():
    report = report_with(0.7, [group("topic", 0.95), group("persona", 0.4), group("tiny", 0.0, n=2),
                               group("blog", 0.0, column="style"), group("wikihow", 0.9, column="style"),
                               group("Science", 0.5, column="domain"), group("Arts", 0.6, column="domain")])
    assert drift.drift_factors(report, 0.8) == {"style": {"blog": drift.FLOOR, "wikihow": 1.0}}  # style explains most
    report = report_with(0.7, [group("topic", 0.95), group("persona", 0.4), group("tiny", 0.0, n=2),
                               group("blog", 0.6, column="style"), group("wikihow", 0.82, column="style")])
    assert drift.drift_factors(report, 0.8) == {"template": {"topic": 1.0, "persona": 0.5}}  # "tiny": too few docs


def test_a_drifting_domain_lowers_each_of_its_topics():
    grid = Grid(axes={"topic": Axis("topic", (AxisValue("lava", domain="Science"), AxisValue("reefs", domain="Science"),
                                              AxisValue("poems", domain="Arts")))})
    report = report_with(0.6, [group("Science", 0.2, column="domain"), group("Arts", 0.9, column="domain")])
    assert drift.drift_factors(report, 0.8, grid) == {"topic": {"lava": 0.25, "reefs": 0.25, "poems": 1.0}}
    assert drift.describe(drift.drift_factors(report, 0.8, grid)) == "topic=2 values ×0.25"


def test_nothing_to_move_weight_to_gives_no_factors():
    assert drift.drift_factors(report_with(0.3, [group("a", 0.3), group("b", 0.2)]), 0.8) == {}
    assert drift.drift_factors(report_with(0.9, [group("a", 0.9), group("b", 0.85)]), 0.8) == {}


RECIPE = """
name: drift
seed: 5
roots: [@ROOT@, .]
grid:
  topic: @ROOT@/topics/topics.yaml
  persona: @ROOT@/topics/personas.yaml
templates:
  - path: on_topic.j2
  - path: drifting.j2
size: {num_docs: 600, shard_rows: 100}
target: {score: 3.0, tolerance: 3, pilot_docs: 100, min_fidelity: 0.7}
scoring: {enabled: false}
dedup: {exact: false, near: false}  # echoed prompts near-duplicate each other; every draw is kept
"""


def drift_recipe(tmp_path):
    # EchoBackend answers with the prompt's first line: the topic, or the same off-topic line for any topic
    (tmp_path / "on_topic.j2").write_text(ECHO_TEMPLATE)
    (tmp_path / "drifting.j2").write_text("{# variables: [topic, persona] #}my weekend at the lake\n{{ topic }} {{ persona }}")
    return write_recipe(tmp_path, RECIPE, name="drift.yaml")


def test_a_run_moves_weight_away_from_the_template_that_drifts(tmp_path):
    plan = load_recipe(drift_recipe(tmp_path))
    out = tmp_path / "run"
    summary = controller.run(plan, out, EchoBackend(), judge=EmbeddingKeyJudge(lambda t: t.split("\n")[0]))
    assert summary["num_docs"] == 600 and summary["stopped"] is None
    fidelity = {g["value"]: g for g in summary["fidelity"]["groups"] if g["column"] == "template"}  # the final corpus
    assert fidelity["on_topic"]["topic_share"] > 0.95 and fidelity["drifting"]["topic_share"] < 0.05
    assert fidelity["drifting"]["num_docs"] + fidelity["on_topic"]["num_docs"] == summary["fidelity"]["num_docs"] == 600
    assert summary["fidelity"]["ci_low"] < summary["fidelity"]["topic_share"] < summary["fidelity"]["ci_high"]
    main = [r for r in (json.loads(l) for l in (out / "controller.jsonl").read_text().splitlines()) if r["phase"] == "main"]
    assert main[0]["fidelity"] < 0.7 and main[0]["fidelity_action"].startswith("reweight template=drifting ×")
    assert main[-1]["fidelity"] > main[0]["fidelity"]  # the corpus recovers as on-topic documents dominate
    weights = yaml.safe_load((out / "weights.yaml").read_text())["weights"]["template"]
    assert weights["drifting"] < 0.2 * weights["on_topic"]
    table = read_documents(out)
    first_no = min(table.column("epoch").to_pylist())  # the first epoch in the corpus (sweep points before it)
    first_epoch = [t for t, e in zip(table.column("template").to_pylist(), table.column("epoch").to_pylist())
                   if e == first_no]
    last_epoch_no = max(table.column("epoch").to_pylist())
    last = [t for t, e in zip(table.column("template").to_pylist(), table.column("epoch").to_pylist()) if e == last_epoch_no]
    share = lambda rows: rows.count("drifting") / len(rows)  # noqa: E731
    assert share(first_epoch) > 0.35 and share(last) < share(first_epoch) / 2
    # the last epoch draws the drifting template at its weight's share, within 3 binomial sd
    p = weights["drifting"] / (weights["drifting"] + weights["on_topic"])
    assert last.count("drifting") <= len(last) * p + 3 * (len(last) * p * (1 - p)) ** 0.5


def test_a_run_whose_every_template_drifts_stops(tmp_path):
    (tmp_path / "t.j2").write_text("{# variables: [topic] #}my weekend at the lake\n{{ topic }}")
    body = RECIPE.replace("  - path: on_topic.j2\n  - path: drifting.j2", "  - path: t.j2")
    plan = load_recipe(write_recipe(tmp_path, body, name="all.yaml"), ["target.score=9"])  # every text its own cluster
    with pytest.raises(controller.RunStopped, match=r"below min_fidelity 0\.7.*no template, style or domain is on topic"):
        controller.run(plan, tmp_path / "run", EchoBackend(), judge=EmbeddingKeyJudge(lambda t: t))
    rows = [json.loads(l) for l in (tmp_path / "run" / "controller.jsonl").read_text().splitlines()]
    assert rows[-1]["phase"] == "main" and rows[-1]["fidelity_action"] == "stop"
