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
