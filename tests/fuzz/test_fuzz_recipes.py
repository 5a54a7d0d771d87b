"""Fuzz: hostile recipes (SMALL_RECIPE with values replaced: NaN, infinities, negative, huge,
strings, lists, mappings, null, deep nesting, alias bombs, duplicate or missing keys), `--set`
strings, grid files and templates, fed to `generator run` and `generator render` (engines are
budgeted FakeBackends, embeddings hashed, see harness.py).

Invariants, every case: exit 0 (or the recipe was valid and its generation began), or exit 2
with exactly one stderr line starting `error: ` and nothing written under the case's folder;
never exit 1, never an uncaught exception, never more than 10 s of CPU (the case runs in a forked
child that is killed then; 30 s of wall time if it blocks).

180 generated cases per run (EXAMPLES; derandomized, no example database), about 16 s of CPU."""
from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SMALL_RECIPE
from harness import check_outcome, fakes_installed, run_cli, snapshot
from strategies import grid_files, hostile_recipes, set_strings, templates

EXAMPLES = {"recipes": 60, "set": 40, "grids": 40, "templates": 40}


def fuzz_settings(name: str) -> settings:
    return settings(max_examples=EXAMPLES[name], deadline=timedelta(seconds=40), derandomize=True,
                    database=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def fakes():
    with fakes_installed():
        yield


@pytest.fixture(scope="module")
def cases_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-recipes")


def run_case(folder: Path, argv: list[str]) -> None:
    """Run `argv` and check the invariants, with `folder` as what a refusal must leave alone."""
    before = snapshot(folder)
    check_outcome(run_cli(argv), folder, before)


def small_recipe(folder: Path, replaced: str = "", by: str = "") -> Path:
    """SMALL_RECIPE in `folder` (also one of its roots), with the file `replaced` by `folder / by`."""
    body = SMALL_RECIPE.replace(replaced, str(folder / by)) if replaced else SMALL_RECIPE
    path = folder / "recipe.yaml"
    body = body.replace("@ROOT@", str(ROOT)).replace(f"roots: [{ROOT}]", f"roots: [{ROOT}, {folder}]")
    path.write_text(body)
    return path


@fuzz_settings("recipes")
@given(text=hostile_recipes(str(ROOT)), command=st.sampled_from(["run", "run", "render"]))
def test_hostile_recipe_values(cases_root, text, command):
    with tempfile.TemporaryDirectory(dir=cases_root) as tmp:
        folder = Path(tmp)
        (folder / "recipe.yaml").write_text(text)
        tail = ["--out", str(folder / "out")] if command == "run" else ["-n", "3"]
        run_case(folder, [command, str(folder / "recipe.yaml"), *tail])


@fuzz_settings("set")
@given(pairs=set_strings(), command=st.sampled_from(["run", "render"]))
def test_hostile_set_strings(cases_root, pairs, command):
    with tempfile.TemporaryDirectory(dir=cases_root) as tmp:
        folder = Path(tmp)
        tail = ["--out", str(folder / "out")] if command == "run" else ["-n", "2"]
        run_case(folder, [command, str(small_recipe(folder)), *tail, *(f"--set={p}" for p in pairs)])


@fuzz_settings("grids")
@given(grid=grid_files())
def test_hostile_grid_files(cases_root, grid):
    with tempfile.TemporaryDirectory(dir=cases_root) as tmp:
        folder = Path(tmp)
        (folder / "personas.yaml").write_text(grid)
        recipe = small_recipe(folder, "@ROOT@/topics/personas.yaml", "personas.yaml")
        run_case(folder, ["run", str(recipe), "--out", str(folder / "out")])


@fuzz_settings("templates")
@given(template=templates(), n=st.sampled_from([None, None, 3, 0, -1, 10**8]))
def test_hostile_templates(cases_root, template, n):
    with tempfile.TemporaryDirectory(dir=cases_root) as tmp:
        folder = Path(tmp)
        (folder / "bad.j2").write_text(template)
        recipe = small_recipe(folder, "@ROOT@/prompts/textbook.j2", "bad.j2")
        tail = ["--out", str(folder / "out")] if n is None else ["-n", str(n)]
        run_case(folder, ["run" if n is None else "render", str(recipe), *tail])


SLOW_TEMPLATE = ("{# variables: [topic] #}{% for i in range(10000) %}{% for j in range(90) %}{% endfor %}"
                 "{% endfor %}{{ topic }}")  # 900,000 loop steps, about 1 s: just under the sandbox's limits


def test_in5_slow_template_is_refused_within_the_probe_budget(cases_root):
    """IN5: a template just under the per-render limit made loading the recipe take minutes
    (one render per probe cell)."""
    with tempfile.TemporaryDirectory(dir=cases_root) as tmp:
        folder = Path(tmp)
        (folder / "slow.j2").write_text(SLOW_TEMPLATE)
        recipe = small_recipe(folder, "@ROOT@/prompts/textbook.j2", "slow.j2")
        before = snapshot(folder)
        check_outcome(run_cli(["render", str(recipe), "-n", "1"], cpu_s=3, wall_s=20), folder, before)


def test_the_unmutated_recipe_runs(cases_root):
    """The base every mutation starts from runs to the end (else every case would be a refusal)."""
    with tempfile.TemporaryDirectory(dir=cases_root) as tmp:
        outcome = run_cli(["run", str(small_recipe(Path(tmp))), "--out", str(Path(tmp) / "out")])
        assert outcome.code == 0, outcome.describe()
        assert len(list((Path(tmp) / "out" / "data").glob("shard-*.parquet"))) == 3


def test_the_harness_reports_a_hang_and_a_crash(monkeypatch):
    """A case stuck past its time is killed and reported; an escaping exception is reported."""
    import time

    import generator.cli
    monkeypatch.setattr(generator.cli, "main", lambda argv: time.sleep(60))
    hung = run_cli(["render"], wall_s=0.5)
    assert hung.hung and hung.seconds < 5
    monkeypatch.setattr(generator.cli, "main", lambda argv: sum(range(10**12)))
    busy = run_cli(["render"], cpu_s=1)
    assert busy.hung == "killed after 1 s of CPU", busy.describe()
    monkeypatch.setattr(generator.cli, "main", lambda argv: {}["groups"])
    crashed = run_cli(["card"])
    assert crashed.code is None and crashed.error.startswith("KeyError: 'groups'")
    with pytest.raises(AssertionError, match="raised KeyError"):
        check_outcome(crashed, Path("/nonexistent"), {})
