"""The docs site's generated reference pages against the code they are generated from.

`mkdocs build --strict` (the first test here, and `make docs`) checks links and the API blocks;
the others check that the generated pages name everything they must, so a new recipe key, option
or public name cannot go undocumented.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from pathlib import Path

import pytest
import yaml

import generator
from generator.cli import build_parser
from generator.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"reference/recipe.md", "reference/cli.md", "reference/api.md"}


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return load_generator()


def records(cls: type) -> list[type]:
    """Every dataclass reachable from `cls` through its field types (independent of the generator's walk)."""
    found, todo = [], [cls]
    while todo:
        c = todo.pop()
        if c in found:
            continue
        found.append(c)
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            stack = [hints[f.name]]
            while stack:
                tp = stack.pop()
                if dataclasses.is_dataclass(tp):
                    todo.append(tp)
                stack += typing.get_args(tp)
    return found


def sections(page: str) -> dict[str, str]:
    """Class name -> the text of its section (each section names its class as *module.Class*)."""
    parts = re.split(r"^\*[\w.]+\.(\w+)\*$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_docs_site_builds_strict(tmp_path):
    """The whole site, as `make docs` builds it: a broken link, a missing page or an API block
    that names nothing fails the build."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_recipe_reference_names_every_field_of_every_record(gen):
    by_class = sections(gen.recipe_reference())
    assert {c.__name__ for c in records(Recipe)} == set(by_class)
    for cls in records(Recipe):
        rows = dict(re.findall(r"^\| `(\w+)` \|.*\| (.*) \|$", by_class[cls.__name__], flags=re.M))
        public = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
        assert list(rows) == public, cls.__name__
        undocumented = [name for name, meaning in rows.items() if not meaning.strip()]
        assert not undocumented, (f"{cls.__name__}: write a comment beside {undocumented} in the dataclass "
                                  "(or a line in NOTES of docs/gen_reference.py)")


def test_recipe_reference_leaves_out_internal_fields(gen):
    assert "`path` | str | `\"\"`" not in sections(gen.recipe_reference())["Recipe"]


def test_every_note_names_a_field_that_exists(gen):
    fields = {f"{c.__name__}.{f.name}" for c in records(Recipe) for f in dataclasses.fields(c)}
    assert set(gen.NOTES) <= fields, sorted(set(gen.NOTES) - fields)


def test_recipe_reference_shows_types_and_defaults(gen):
    page = gen.recipe_reference()
    assert '| `keep_truncated` | "trim" \\| "keep" \\| "drop" | `"trim"` |' in page
    assert "| `num_docs` | int | **required** |" in page
    assert "| `enforce_eager` | bool | `true` |" in page
    assert "## `grid.<name>`" in page and "## `templates[]`" in page


def test_cli_reference_names_every_subcommand_and_option(gen):
    page = gen.cli_reference()
    for name, sub in gen.subcommands(build_parser()).items():
        assert f"## `generator {name}`" in page
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, (name, option)


def test_api_reference_names_every_exported_name(gen):
    page = gen.api_reference()
    for name in getattr(generator, "__all__", []):
        assert re.search(rf"^::: generator\.[\w.]+\.{name}$", page, flags=re.M), name


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def entries(node):
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [e for v in node.values() for e in entries(v)]
        return [e for item in node for e in entries(item)]

    nav = set(entries(config["nav"]))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert nav == pages | GENERATED
    assert not pages & GENERATED, "a generated page must not also be written by hand"


def test_readme_stays_a_ten_minute_read():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
