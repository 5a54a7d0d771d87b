from pathlib import Path

import numpy as np
import pytest

from generator.errors import UserError
from generator.sampling.grid import Axis, AxisValue, Grid, load_axis, load_grid, sample_cells, template_variables


def grid_files(root: Path) -> dict[str, Path]:
    return {a: root / "topics" / f"{a}s.yaml" for a in ("topic", "persona", "style", "audience")}


def test_shipped_grids_meet_the_minimum_sizes(root):
    grid = load_grid(grid_files(root))
    topics = grid.axes["topic"]
    assert len(topics.values) >= 300
    assert len(topics.domains()) >= 20
    assert len(grid.axes["persona"].values) >= 60
    assert len(grid.axes["style"].values) >= 10
    assert len(grid.axes["audience"].values) >= 5
    styles = {v.value for v in grid.axes["style"].values}
    assert {"textbook narrative", "textbook academic", "blog post", "wikiHow", "story", "forum Q&A",
            "lecture transcript", "news explainer", "FAQ", "dialogue"} <= styles


def test_sampling_is_seeded(root):
    grid = load_grid(grid_files(root))
    a = sample_cells(grid, 50, np.random.default_rng(1))
    b = sample_cells(grid, 50, np.random.default_rng(1))
    c = sample_cells(grid, 50, np.random.default_rng(2))
    assert a == b
    assert a != c


def test_weights_steer_sampling_and_zero_weight_deactivates():
    axis = Axis("persona", tuple(AxisValue(v) for v in "abcd"))
    grid = Grid({"persona": axis})
    cells = sample_cells(grid, 4000, np.random.default_rng(0),
                         weights={"persona": {"a": 3.0, "b": 1.0, "c": 0.0, "d": 0.0}})
    counts = {v: sum(c.values["persona"] == v for c in cells) for v in "abcd"}
    assert counts["c"] == counts["d"] == 0
    # P(a) = 0.75; with n=4000 the standard deviation of the share is 0.007, so 0.72..0.78 fails
    # with probability far below 1e-4.
    assert 0.72 < counts["a"] / 4000 < 0.78


def test_huge_grid_samples_without_materialising():
    # 10 axes of 10 values: 10^10 cells; sampling 1000 must not enumerate them.
    axes = {f"axis{i}": Axis(f"axis{i}", tuple(AxisValue(f"v{i}_{j}") for j in range(10)))
            for i in range(10)}
    grid = Grid(axes)
    cells = sample_cells(grid, 1000, np.random.default_rng(0))
    assert len(cells) == 1000 and len(cells[0].values) == 10


def test_domain_weight_spreads_over_its_topics(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("axis: topic\ndomains:\n  - name: A\n    weight: 3\n    topics: [a1, a2, a3]\n"
                 "  - name: B\n    topics: [b1]\n")
    axis = load_axis(f)
    cells = sample_cells(Grid({"topic": axis}), 4000, np.random.default_rng(0))
    share_a = sum(c.values["domain"] == "A" for c in cells) / 4000
    assert 0.72 < share_a < 0.78  # domain A carries 3/4 of the mass, not 3 topics of 4


def test_multi_topic_cells_have_distinct_topics(root):
    grid = load_grid(grid_files(root))
    cells = sample_cells(grid, 20, np.random.default_rng(0), num_topics=3)
    for c in cells:
        topics = template_variables(grid, c)["topics"]
        assert len(topics) == 3 and len(set(topics)) == 3


@pytest.mark.parametrize("body,match", [
    ("axis: persona\nvalues: []\n", "has no values"),
    ("axis: persona\nvalues: [a, A]\n", "duplicate value"),
    ("axis: persona\nvalues: [{value: a, weight: -1}]\n", "must be a positive number"),
    ("axis: persona\nvalues: [{value: a, colour: red}]\n", "unknown key"),
    ("axis: persona\nvalues: [a\n", "invalid YAML"),
    ("axis: persona\nitems: [a]\n", "unknown key"),
    ("- a\n- b\n", "expected a mapping"),
    ("axis: topic\ndomains: [{name: X}]\n", "needs 'name' and 'topics'"),
    # weights: never zero, negative, NaN, infinite, text or a boolean; a domain's weight likewise
    ("axis: p\nvalues: [{value: a, weight: 0}]\n", r"values\[0\]: weight of 'a' must be a positive number, got 0 "
                                                 r"\(fix: remove the entry to never draw it"),
    ("axis: p\nvalues: [{value: a, weight: .nan}]\n", "must be a positive number, got nan"),
    ("axis: p\nvalues: [{value: a, weight: .inf}, b]\n", r"weight of 'a' is inf, outside 1e-09 .. 1e\+09"),
    ("axis: p\nvalues: [{value: a, weight: 1.0e+10}]\n", r"outside 1e-09 .. 1e\+09"),
    ("axis: p\nvalues: [{value: a, weight: '2'}]\n", r"got '2' \(fix: write `weight: 2` without quotes\)"),
    ("axis: p\nvalues: [{value: a, weight: 1e3}]\n", r"got '1e3' \(fix: write `weight: 1000` \(YAML reads 1e3 as text"),
    ("axis: p\nvalues: [{value: a, weight: true}]\n", "must be a positive number, got True"),
    ("axis: p\nvalues: [{value: a, weight: " + "9" * 99 + "}]\n", r"weight of 'a' is 9+…, outside"),
    ("axis: t\ndomains: [{name: X, weight: -1, topics: [a]}]\n", r"domains\[0\]: weight of domain 'X' must be a positive"),
    ("axis: t\ndomains: [{name: X, weight: lots, topics: [a]}]\n", "weight of domain 'X' must be a positive number"),
    # containers: a mapping or a text where a list belongs, empty domains, both kinds of axis
    ("axis: p\nvalues: {a nurse: 1, a pilot: 2}\n", r"values is a mapping; it must be a list"),
    ("axis: t\ndomains: {Physics: [a]}\n", r"domains is a mapping; it must be a list"),
    ("axis: p\nvalues: a nurse\n", r"values must be a list, got 'a nurse'"),
    ("axis: t\ndomains: [{name: X, topics: Physics}]\n", r"domains\[0\]: topics must be a list, got 'Physics'"),
    ("axis: t\ndomains: [{name: X, topics: []}]\n", "domain 'X' has no topics"),
    ("axis: t\nvalues: [a]\ndomains: [{name: X, topics: [b]}]\n", "both 'values' and 'domains'"),
    ("axis: t\ndomains: [{name: X, topics: [a]}, {name: x, topics: [b]}]\n", "duplicate domain name 'x'"),
    ("axis: t\ndomains: [{name: X, topics: [a], colour: red}]\n", r"domains\[0\]: unknown key\(s\) \['colour'\]"),
    # values: never null, a number, a list or a mapping
    ("axis: p\nvalues: [{value: null}]\n", r"values\[0\]: value is empty \(YAML null\)"),
    ("axis: p\nvalues: [~]\n", r"value is empty \(YAML null\)"),
    ("axis: p\nvalues: [1984]\n", r"value must be text, got the int 1984 \(fix: quote it to keep it as text: \"1984\"\)"),
    ("axis: t\ndomains: [{name: 5, topics: [a]}]\n", r"domains\[0\]: name must be text, got the int 5"),
    ("axis: p\nvalues: [{value: a, description: [x]}]\n", "description must be one text, got a list"),
    ("axis: [a]\nvalues: [a]\n", "axis name must be text"),
    ("axis: p\nvalues: [a, b, A]\n", r"duplicate value 'A' on axis 'p': values\[2\] repeats values\[0\]"),
    # the YAML loader's bounds and duplicate keys apply to grid files
    ("axis: p\nvalues: [a]\nvalues: [b]\n", r"g.yaml:3: duplicate key 'values' \(first given on line 2\)"),
    ("axis: p\nvalues: " + "[" * 200 + "]" * 200 + "\n", r"g.yaml:2: nested deeper than 64 levels"),
])
def test_bad_grid_files_are_rejected(tmp_path, body, match):
    f = tmp_path / "g.yaml"
    f.write_text(body)
    with pytest.raises(UserError, match=match) as info:
        load_axis(f)
    assert "\n" not in str(info.value) and "(fix: " in str(info.value)


def test_fixes_of_grid_errors_load(tmp_path):
    """The fix each weight and value message gives, applied, loads."""
    f = tmp_path / "g.yaml"
    f.write_text("axis: p\nvalues: [{value: a, weight: 1000}, {value: '1984', weight: 2}, {value: b, weight: 1.0e-3}]\n")
    axis = load_axis(f)
    assert [(v.value, v.weight) for v in axis.values] == [("a", 1000.0), ("1984", 2.0), ("b", 0.001)]


def test_missing_and_non_utf8_grid_files(tmp_path):
    with pytest.raises(UserError, match="grid file not found"):
        load_axis(tmp_path / "nope.yaml")
    f = tmp_path / "latin1.yaml"
    f.write_bytes("axis: persona\nvalues: [caf\xe9]\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_axis(f)


# ---- seed-document axes ---------------------------------------------------------------------

def seed_recipe(tmp_path, root, rows, spec="text_field: body, max_chars: 120"):
    import json
    from conftest import write_recipe
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = f"""
name: grounded
seed: 5
roots: [@ROOT@]
grid:
  seed_doc: {{path: seeds.jsonl, {spec}}}
  audience: @ROOT@/topics/audiences.yaml
templates:
  - path: @ROOT@/prompts/seed_summary.j2
  - path: @ROOT@/prompts/seed_simpler.j2
size: {{num_docs: 10, shard_rows: 5}}
"""
    return write_recipe(tmp_path, body)


def test_seed_document_axis_grounds_prompts_and_keeps_provenance(tmp_path, root):
    from generator.recipe import load_recipe
    from generator.sampling.requests import plan_samples
    long = "word " * 100
    rows = [{"id": "doc-a", "body": "Alpha facts about rivers."}, {"id": "doc-b", "body": long},
            {"id": "doc-c", "body": "   "}]
    plan = load_recipe(seed_recipe(tmp_path, root, rows))
    axis = plan.grid.axes["seed_doc"]
    assert axis.documents and [v.value for v in axis.values] == ["doc-a", "doc-b"]  # the empty one skipped
    assert len(axis.values[1].description) <= 122 and axis.values[1].description.endswith("…")
    samples = plan_samples(plan, 0, 20)
    for s in samples:
        text = {"doc-a": "Alpha facts about rivers.", "doc-b": axis.values[1].description}[s.values["seed_doc"]]
        assert text in s.request.prompt
        assert s.values["seed_doc_source"] == "seeds.jsonl"
    assert {s.values["seed_doc"] for s in samples} == {"doc-a", "doc-b"}


def test_seed_documents_without_ids_get_content_hashes(tmp_path, root):
    plan = __import__("generator.recipe", fromlist=["load_recipe"]).load_recipe(
        seed_recipe(tmp_path, root, [{"body": "one"}, {"body": "two"}]))
    ids = [v.value for v in plan.grid.axes["seed_doc"].values]
    assert len(ids) == 2 and all(len(i) == 12 for i in ids) and ids[0] != ids[1]


@pytest.mark.parametrize("spec, match", [("text_field: text", "grid.seed_doc: .*no text field 'text'"),
                                         ("text_field: body, max_chars: 10", r"max_chars .* must be (at least 100|in \[100,)")])
def test_bad_seed_document_axes_fail_at_load(tmp_path, root, spec, match):
    from generator.recipe import load_recipe
    with pytest.raises(UserError, match=match):
        load_recipe(seed_recipe(tmp_path, root, [{"body": "one"}], spec))
