"""The `quality:` recipe section: gate shorthands, paths, the hash, and the resolved recipe."""
from __future__ import annotations

import json

import pytest

from conftest import SMALL_RECIPE, write_recipe
from generator.quality.config import C4, GopherRepetition, Quality
from generator.recipe import hash_recipe, load_recipe, read_recipe, recipe_dict, recipe_inputs


@pytest.mark.parametrize("section, gates", [
    ("{gopher_repetition: true}", ["gopher_repetition"]),
    ("{gopher_repetition: , min_tokens: 3}", ["min_tokens"]),  # null: off, as the resolved recipe writes it
    ("{gopher_repetition: {}, c4: false, min_tokens: 9}", ["min_tokens", "gopher_repetition"]),
    ("{c4: {min_num_sentences: 3}, fineweb_quality: true, gopher_quality: true}",
     ["gopher_quality", "fineweb_quality", "c4"]),
])
def test_a_gate_named_with_true_takes_datatrove_s_defaults(tmp_path, section, gates):
    recipe = read_recipe(write_recipe(tmp_path, SMALL_RECIPE + f"quality: {section}\n"))
    assert recipe.quality.gates() == gates
    if "gopher_repetition" in gates:
        assert recipe.quality.gopher_repetition == GopherRepetition()
    if recipe.quality.c4 is not None:
        assert recipe.quality.c4 == C4(min_num_sentences=3)


def test_set_overrides_reach_the_gates(tmp_path):
    path = write_recipe(tmp_path, SMALL_RECIPE + "quality: {min_tokens: 5}\n")
    recipe = read_recipe(path, ["quality.gopher_repetition.dup_line_frac=0.5",
                                "quality.max_rejection_rate=0.1"])
    assert recipe.quality.gopher_repetition.dup_line_frac == 0.5
    assert recipe.quality.max_rejection_rate == 0.1
    assert read_recipe(path, ["quality.c4=true"]).quality.c4 == C4()


def test_evaluation_sets_resolve_against_the_recipe_and_their_contents_enter_the_hash(tmp_path):
    (tmp_path / "evals").mkdir()
    evals = tmp_path / "evals" / "arc.txt"
    evals.write_text("which gas do plants take in from the air to make their food\n")
    path = write_recipe(tmp_path, SMALL_RECIPE + "quality: {decontaminate: [evals/arc.txt]}\n")
    plan = load_recipe(path)
    assert plan.recipe.quality.decontaminate == [str(evals.resolve())]
    assert [(s.name, len(s.items)) for s in plan.eval_sets] == [("arc", 1)]
    assert str(evals.resolve()) in recipe_inputs(plan.recipe)
    before = plan.recipe_hash
    evals.write_text("another question entirely, about the moon and the tides of the sea\n")
    assert hash_recipe(read_recipe(path)) != before


def test_quality_is_hashed_only_when_set(tmp_path):
    """The golden runs (tests/data/golden) pin the hash of recipes without the section."""
    recipe = read_recipe(write_recipe(tmp_path, SMALL_RECIPE))
    assert recipe.quality is None
    gated = read_recipe(write_recipe(tmp_path, SMALL_RECIPE + "quality: {min_tokens: 5}\n", name="g.yaml"))
    assert hash_recipe(gated) != hash_recipe(recipe)


def test_the_resolved_recipe_loads_to_the_same_quality_and_hash(tmp_path):
    import yaml
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "what is the boiling point of water at sea"}) + "\n")
    section = "quality: {gopher_repetition: true, decontaminate: [qa.jsonl]}\n"
    path = write_recipe(tmp_path, SMALL_RECIPE + section)
    plan = load_recipe(path)
    resolved = tmp_path / "again" / "recipe.resolved.yaml"
    resolved.parent.mkdir()
    d = recipe_dict(plan.recipe)
    resolved.write_text(yaml.safe_dump(d))
    again = load_recipe(resolved)
    assert again.recipe.quality == plan.recipe.quality
    assert again.recipe_hash == plan.recipe_hash


def test_quality_defaults():
    q = Quality(min_tokens=1)
    assert (q.max_rejection_rate, q.decontaminate_n, q.gates()) == (0.5, 13, ["min_tokens"])


def test_gates_without_spacy_installed_fail_at_load_naming_the_install(tmp_path, monkeypatch):
    import importlib.util

    from generator.errors import UserError
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "spacy" else real(name, *a))
    path = write_recipe(tmp_path, SMALL_RECIPE + "quality: {min_tokens: 5}\n")
    with pytest.raises(UserError, match=r"need datatrove and spaCy .*fix: pip install "
                                        r"'datatrove\[io\]>=0.10' 'spacy>=3.7,<4'"):
        load_recipe(path)


def test_an_evaluation_set_of_an_unknown_format_is_refused(tmp_path):
    from generator.errors import UserError
    (tmp_path / "qa.csv").write_text("q,a\n")
    path = write_recipe(tmp_path, SMALL_RECIPE + "quality: {decontaminate: [qa.csv]}\n")
    with pytest.raises(UserError, match=r"decontaminate\[0\] .*qa.csv\): unknown format '.csv' "
                                        r"\(fix: convert"):
        load_recipe(path)


def test_the_example_recipe_loads_with_its_gates(root):
    plan = load_recipe(root / "recipes" / "quality.yaml")
    q = plan.recipe.quality
    assert q.gates() == ["min_tokens", "gopher_quality", "gopher_repetition", "fineweb_quality",
                         "decontaminate"]
    assert q.gopher_quality.min_doc_words == 30 and [s.name for s in plan.eval_sets] == ["reference"]
