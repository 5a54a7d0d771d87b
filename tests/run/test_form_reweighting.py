"""Regression (issue 28): steering upward under a ruler that sees form moved weight *off* a style
written in a form of its own. The reweighting looked only at pairs of documents sharing a value:
a style the model follows keeps its documents alike in form, so they share clusters with each
other more often than the documents of styles the model ignores, and it read as redundant,
although its documents never share a cluster with any other style's. The controller now
reweights by how often a value's documents share a cluster with any batch-mate
(`attribution.attribute_mates`)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import write_recipe
from fakes import EchoBackend, KeyJudge
from generator.judges.attribution import attribute_mates
from generator.judges.protocol import BatchClustering
from generator.recipe import Target, load_recipe
from generator.run import controller, knobs
from generator.run.policy import Decision
from generator.run.rounds import measure, read_corpus
from generator.run.state import RunState, Steering

TOPICS = ["tides", "glaciers", "comets", "bridges", "orchards", "printing"]
STYLES = ["numbered steps", "essay", "letter", "report"]  # only the first has a form of its own
TEMPLATE = "{# variables: [topic, style] #}{{ topic }} | {{ style }}"


def axis_file(tmp_path, name: str, values) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"axis: {name}\nvalues:\n" + "".join(f"  - value: {v}\n" for v in values))
    return str(path)


def corpus(tmp_path, num_docs: int = 400):
    """A fake-backend corpus of topics × styles (no target), read back as texts and grid columns."""
    (tmp_path / "echo.j2").write_text(TEMPLATE)
    recipe = write_recipe(tmp_path, f"""
name: forms
seed: 5
roots: [{tmp_path}]
grid:
  topic: {axis_file(tmp_path, "topic", TOPICS)}
  style: {axis_file(tmp_path, "style", STYLES)}
templates:
  - path: {tmp_path}/echo.j2
size: {{num_docs: {num_docs}, shard_rows: 100}}
scoring: {{enabled: false}}
""")
    out = tmp_path / "run"
    controller.run(load_recipe(recipe), out, EchoBackend())
    return read_corpus(out)


def subject_and_form(text: str) -> tuple[str, str]:
    """The default ruler in miniature: a document's subject is its topic; its form is numbered
    steps when its style asks for them, else prose or a list at random (the model ignores the
    other styles), drawn from the sample's seed that EchoBackend writes on the second line."""
    first, second = text.splitlines()[:2]
    topic, style = first.split(" | ")
    form = "steps" if style == "numbered steps" else ("prose", "list")[int(second.split()[-1]) % 2]
    return topic, form


def steered_up(attribution) -> dict:
    """The style weights after a main round that raises diversity at c = 1 (the controller's
    own step: `apply_after_main` with a correction that reweights cells upward)."""
    orders = {"topic": TOPICS, "style": STYLES}
    ctx = SimpleNamespace(orders=orders, target=Target(score=9.0, reweight_rate=1.0))
    state = RunState(steering=Steering(phase="main", concentration=1.0,
                                       weights=knobs.sampling_weights(orders, 1.0)))
    decision = Decision("correct", 1.0, "correct c 1.000 → 1.000, reweight cells", reweight=1)
    return controller.apply_after_main(ctx, state, decision, attribution, None).steering.weights["style"]


def test_steering_up_on_a_form_seeing_ruler_moves_weight_onto_a_style_with_a_form_of_its_own(tmp_path):
    texts, metadata = corpus(tmp_path)
    target = Target(score=9.0, tolerance=0.3, k=10, num_batches=1500)
    judge = KeyJudge(subject_and_form, name="subject+form")
    _, attribution = measure(texts, judge, target, np.random.default_rng(0), metadata=metadata)
    # the old signal: pairs within "numbered steps" share a cluster twice as often as within a
    # style the model ignores (same topic suffices, where those also need the same coin flip)
    within = attribution["columns"]["style"]
    assert within["numbered steps"]["lift"] > 1.5 * max(within[s]["lift"] for s in STYLES[1:])
    weights = steered_up(attribution)
    assert weights["numbered steps"] > 1.0 > max(weights[s] for s in STYLES[1:])  # before: 0.59 against 1.22-1.32
    # a subject-only ruler cannot tell the styles apart: no style moves far
    _, subject_only = measure(texts, KeyJudge(lambda t: subject_and_form(t)[0], name="subject"), target,
                              np.random.default_rng(0), metadata=metadata)
    assert all(0.8 < w < 1.25 for w in steered_up(subject_only).values())


def test_mates_count_every_pair_from_both_ends_and_skip_empty_values():
    # one batch of K = 4: documents 0, 1 share a cluster, 2 and 3 are alone; 3 has no style
    report = SimpleNamespace(k=4, batch_docs=((0, 1, 2, 3), (0, 1, 2, 3)),
                             batches=(BatchClustering(clusters=((0, 1), (2,), (3,))),
                                      BatchClustering(clusters=((0, 1, 2, 3),), failed=True)))
    mates = attribute_mates(report, {"style": ["a", "b", "a", ""]})["style"]
    baseline = 1 / 6  # one of the six pairs of the scored batch shares a cluster
    # "a" (documents 0 and 2): pairs 0-1 (together), 0-2, 0-3, 2-1, 2-3, and 0-2 again from 2's end
    assert mates["a"] == {"mates": 6, "same_cluster": 1, "mate_rate": pytest.approx(1 / 6),
                          "mate_lift": pytest.approx(1 / 6 / baseline)}
    assert mates["b"] == {"mates": 3, "same_cluster": 1, "mate_rate": pytest.approx(1 / 3),
                          "mate_lift": pytest.approx(2.0)}
    assert "" not in mates
