import json

import pytest

from fakes import FakeBackend, RepeatingBackend
from generator.run import controller
from generator.run.loop import open_deduper
from generator.run.dedup import Deduper, normalise
from generator.recipe import load_recipe
from generator.files import read_documents

BASE = ("The tide pool is a shallow basin of seawater left behind on a rocky shore when the tide "
        "goes out, home to anemones, crabs, snails and small fish that endure waves, heat and air.")


def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("Hello,   WORLD!\n") == normalise("hello world") == "hello world"


def test_exact_near_and_distinct():
    d = Deduper()
    assert d.check("a", BASE) is None
    assert d.check("b", BASE.upper() + "  ") == "exact duplicate of a"
    near = BASE.replace("heat and air.", "heat and wind.")  # Jaccard of 5-gram sets 30/32
    assert d.check("c", near) == "near duplicate of a"
    assert d.check("d", "A completely different text about the economics of medieval wool trade routes.") is None
    assert d.counts == {"exact": 1, "near": 1}


def test_near_detection_can_be_switched_off():
    d = Deduper(near=False)
    assert d.check("a", BASE) is None
    assert d.check("c", BASE.replace("small fish", "tiny fish")) is None


def test_run_keeps_generating_until_enough_distinct_documents(small_recipe, tmp_path):
    out = tmp_path / "run"
    summary = controller.run(load_recipe(small_recipe), out, RepeatingBackend())
    texts = read_documents(out).column("text").to_pylist()
    assert len(texts) == 20 == len({normalise(t) for t in texts})
    assert summary["duplicates"]["exact"] > 0
    dups = [json.loads(l) for l in (out / "duplicates.jsonl").read_text().splitlines()]
    assert len(dups) == summary["duplicates"]["exact"] + summary["duplicates"]["near"]
    assert summary["num_attempted"] == 20 + len(dups)


def test_mode_collapse_stops_the_run_with_a_summary(small_recipe, tmp_path):
    with pytest.raises(controller.RunStopped, match="duplicate rate .* the model keeps repeating itself"):
        controller.run(load_recipe(small_recipe), tmp_path / "run", FakeBackend(collapse=True))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_docs"] == 1 and summary["duplicates"]["exact"] == summary["num_attempted"] - 1


def test_dedup_index_is_rebuilt_on_resume(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    out = tmp_path / "run"
    controller.run(plan, out, FakeBackend())
    deduper = open_deduper(plan, out)
    kept = read_documents(out).to_pylist()[0]
    assert deduper.check("new", kept["text"]).startswith("exact duplicate of")
