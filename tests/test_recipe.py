import pytest

from conftest import SMALL_RECIPE, write_recipe
from generator.cli import main
from generator.errors import UserError
from generator.recipe import load_recipe, parse_overrides, read_recipe


def test_small_recipe_loads_and_hash_is_stable(small_recipe):
    a = load_recipe(small_recipe)
    b = load_recipe(small_recipe)
    assert a.recipe_hash == b.recipe_hash and len(a.recipe_hash) == 16
    assert a.recipe.size.num_docs == 20
    assert [t.name for t in a.templates] == ["topic_style_persona", "textbook"]
    assert a.recipe.engine.backend == "ray"


def test_overrides_change_the_recipe_and_its_hash(small_recipe):
    base = load_recipe(small_recipe)
    changed = load_recipe(small_recipe, ["size.num_docs=7", "sampling.temperature=0.1"])
    assert changed.recipe.size.num_docs == 7 and changed.recipe.sampling.temperature == 0.1
    assert changed.recipe_hash != base.recipe_hash


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["a.b.c=3", "d=x"]) == {"a": {"b": {"c": 3}}, "d": "x"}
    with pytest.raises(UserError, match="expected key=value"):
        parse_overrides(["nonsense"])


BAD = [
    ("name: [unclosed", "invalid YAML"),
    (SMALL_RECIPE + "colour: blue\n", "unknown key 'colour'"),
    (SMALL_RECIPE.replace("size: {num_docs: 20", "size: {num_docs: 0"), "size.num_docs must be positive"),
    (SMALL_RECIPE.replace("size: {num_docs: 20", "size: {num_docs: -5"), "size.num_docs must be positive"),
    (SMALL_RECIPE.replace("size: {num_docs: 20", "size: {num_docs: many"), "expected int"),
    (SMALL_RECIPE.replace("name: small\n", ""), "missing required key 'name'"),
    (SMALL_RECIPE.replace("engine: {backend: ray}", "engine: {backend: tpu}"), "'tpu' is not allowed"),
    (SMALL_RECIPE.replace("engine: {backend: ray}", "engine: {backend: openai}"), "base_url"),
    (SMALL_RECIPE + "model: embedded:gpt-17\n", "not a known embedded model"),
    (SMALL_RECIPE.replace("topic_style_persona.j2", "missing.j2"), "template file not found"),
    (SMALL_RECIPE.replace("topics/personas.yaml", "topics/nobody.yaml"), "grid file not found"),
    (SMALL_RECIPE.replace("  persona: @ROOT@/topics/personas.yaml\n", ""), r"uses \['persona'\]"),
    (SMALL_RECIPE.replace("top_p: 0.9", "top_p: 1.5"), r"top_p must be in \(0, 1\]"),
    (SMALL_RECIPE.replace("sampling: {", "sampling: {colour: 1, "), "unknown key 'colour'"),
    (SMALL_RECIPE + "target: {score: 11}\n", r"outside \[1/K, K\]"),
    (SMALL_RECIPE + "target: {score: 3, tolerance: 0}\n", "tolerance must be > 0"),
    ("- just\n- a list\n", "a recipe must be a mapping"),
]


@pytest.mark.parametrize("body,match", BAD)
def test_bad_recipes_fail_at_load(tmp_path, body, match):
    with pytest.raises(UserError, match=match):
        load_recipe(write_recipe(tmp_path, body))


@pytest.mark.parametrize("body,match", BAD)
def test_cli_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, body, match):
    recipe = write_recipe(tmp_path, body)
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "(fix: " in err and "Traceback" not in err
    assert not out.exists()


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["render", str(tmp_path / "none.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_render_prints_n_prompts_without_a_model(small_recipe, capsys):
    assert main(["render", str(small_recipe), "-n", "4"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 4


def test_render_rejects_non_positive_n(small_recipe, capsys):
    assert main(["render", str(small_recipe), "-n", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("name, grounded", [("moderate.yaml", True), ("moderate-ungrounded.yaml", False)])
def test_moderate_recipes_load_with_their_reference(root, name, grounded):
    plan = load_recipe(root / "recipes" / name)
    t = plan.recipe.target
    assert t.relative == 2.3 and t.score is None and t.max_shift > 0
    assert len(plan.reference_texts) == plan.recipe.reference.num_docs == 150
    assert ("seed_doc" in plan.grid.axes) == grounded
    if grounded:
        assert len(plan.grid.axes["seed_doc"].values) == 150
        assert not set(plan.reference_texts) & {v.description for v in plan.grid.axes["seed_doc"].values}
    unbounded = load_recipe(root / "recipes" / name, ["target.max_shift=null"])
    assert unbounded.recipe.target.max_shift is None and unbounded.recipe_hash != plan.recipe_hash


def test_the_llm_judge_example_recipe_loads_with_its_judge_section(root):
    recipe = read_recipe(root / "recipes" / "judge-llm.yaml")
    assert recipe.scoring.judge == "llm" and recipe.judge.model == "embedded:smollm2-135m"
    assert (recipe.judge.k, recipe.judge.num_criteria_calls, recipe.judge.invalid_policy) == (10, 8, "split")
    overridden = read_recipe(root / "recipes" / "judge-llm.yaml", ["judge.verify=false", "judge.max_model_len=6000"])
    assert overridden.judge.verify is False and overridden.judge.max_model_len == 6000


def test_a_default_judge_section_leaves_the_recipe_hash_unchanged(root):
    from generator.recipe import hash_recipe
    base = read_recipe(root / "recipes" / "quickstart.yaml")
    assert hash_recipe(base) == hash_recipe(read_recipe(root / "recipes" / "quickstart.yaml", ["judge.k=10"]))
    assert hash_recipe(base) != hash_recipe(read_recipe(root / "recipes" / "quickstart.yaml", ["judge.k=5"]))


@pytest.mark.parametrize("pairs, match", [
    (["size={a"], r"--set 'size=\{a': invalid YAML"),
    (["a..b=1"], r"the key 'a..b' has an empty part"),
    ([".a=1"], r"the key '.a' has an empty part"),
    (["=1"], r"the key '' has an empty part"),
    (["a=1", "a=2"], r"a is also set by --set 'a=1'"),
    (["a=1", "a.b=2"], r"--set 'a.b=2' conflicts with --set 'a=1'"),
    (["a.b=2", "a=1"], r"--set 'a=1' conflicts with --set 'a.b=2'"),
    (["a=&x [*x]"], r"--set 'a=&x \[\*x\]': .*alias \*x is inside its own anchor"),
])
def test_parse_overrides_refuses_bad_syntax_and_conflicts(pairs, match):
    with pytest.raises(UserError, match=match):
        parse_overrides(pairs)


def test_parse_overrides_keeps_sibling_keys_and_empty_values():
    assert parse_overrides(["a.b=1", "a.c=x", "d="]) == {"a": {"b": 1, "c": "x"}, "d": ""}


def test_merge_overrides_refuses_a_key_path_through_a_value():
    from generator.schema import merge_overrides
    assert merge_overrides({"a": {"b": 1, "c": 2}, "t": None}, {"a": {"b": 3}, "t": {"k": 1}}) == \
        {"a": {"b": 3, "c": 2}, "t": {"k": 1}}
    with pytest.raises(UserError, match=r"--set a.b.x: a.b is the value 1 in the recipe, not a section"):
        merge_overrides({"a": {"b": 1}}, {"a": {"b": {"x": 2}}})
    with pytest.raises(UserError, match=r"--set l.0: l is a list in the recipe"):
        merge_overrides({"l": [1]}, {"l": {"0": 2}})


def test_every_non_finite_float_is_found_in_nested_records(small_recipe):
    import dataclasses
    from generator.recipe_checks import non_finite
    r = read_recipe(small_recipe)
    assert list(non_finite(r)) == []
    bad = dataclasses.replace(r, sampling=dataclasses.replace(r.sampling, top_p=float("nan")),
                              templates=[dataclasses.replace(r.templates[0], weight=float("inf"))])
    assert [key for key, _ in non_finite(bad)] == ["templates[0].weight", "sampling.top_p"]


def test_probe_cells_hold_every_value_of_every_axis(small_recipe):
    from generator.recipe import probe_cells
    plan = load_recipe(small_recipe)
    cells = probe_cells(plan.grid, 3)
    for name, axis in plan.grid.axes.items():
        assert {c.values[name] for c in cells} == {v.value for v in axis.values}, name
    assert all(len(set(c.extra_topics) | {c.values["topic"]}) == 3 for c in cells)


def test_num_topics_within_the_axis_loads(tmp_path):
    (tmp_path / "topics3.yaml").write_text("axis: topic\ndomains:\n  - name: Physics\n    topics: [light, heat, sound]\n")
    (tmp_path / "multi.j2").write_text("{#\nvariables: [topics]\nnum_topics: 3\n#}\nAbout {{ topics | join(', ') }}.")
    recipe = write_recipe(tmp_path, f"name: multi\nroots: [{tmp_path}]\ngrid:\n  topic: {tmp_path}/topics3.yaml\n"
                                    f"templates:\n  - path: {tmp_path}/multi.j2\nsize: {{num_docs: 20}}\n")
    assert load_recipe(recipe).templates[0].num_topics == 3
    with pytest.raises(UserError, match=r"num_topics 4 is more than .*has 3 topics .*fix: set num_topics: 3 or less"):
        (tmp_path / "multi.j2").write_text("{#\nvariables: [topics]\nnum_topics: 4\n#}\n{{ topics | join(', ') }}")
        load_recipe(recipe)


def test_the_fix_of_a_scoring_k_above_the_corpus_loads(small_recipe):
    """Every fix of the K-vs-size message is a value the checks accept."""
    with pytest.raises(UserError, match=r"fix: set scoring.k: 20 or less"):
        read_recipe(small_recipe, ["scoring.enabled=true", "scoring.k=500"])
    assert read_recipe(small_recipe, ["scoring.enabled=true", "scoring.k=20"]).scoring.k == 20
    assert read_recipe(small_recipe, ["scoring.enabled=false", "scoring.k=500"]).scoring.k == 500


def test_render_streams_up_to_its_bound(small_recipe, capsys):
    from generator.cli import MAX_RENDER
    assert main(["render", str(small_recipe), "-n", "1001"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 1001 and "--- sample 1000 " in out
    from generator.sampling.requests import plan_samples
    whole = plan_samples(load_recipe(small_recipe), 0, 1001)  # printed in chunks, drawn as one run draws them
    assert [f"id {s.request.id}" in out for s in whole] == [True] * 1001
    assert main(["render", str(small_recipe), "-n", str(MAX_RENDER + 1)]) == 2
    assert f"must be at most {MAX_RENDER}" in capsys.readouterr().err
