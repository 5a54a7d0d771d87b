"""The bounded YAML loader: every refusal is one line naming the file and line, and comes fast."""
from __future__ import annotations

import pytest

from generator import yamlfiles
from generator.errors import UserError
from generator.yamlfiles import load_yaml_text, read_yaml

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_reads_plain_yaml_with_anchors_and_merge_keys():
    text = "base: &b {x: 1, y: 2}\nmore:\n  <<: *b\n  x: 3\nlist: [*b]\n"
    assert load_yaml_text(text, "r.yaml") == {"base": {"x": 1, "y": 2}, "more": {"x": 3, "y": 2},
                                             "list": [{"x": 1, "y": 2}]}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text, line, match", [
    # billion laughs: 9^9 strings if expanded; refused at the alias that crosses the bound
    (LAUGHS, 5, r"aliases stand for more than 10000 nodes"),
    ("a: &a [1, *a]\n", 1, r"alias \*a is inside its own anchor"),
    ("[" * 5000 + "]" * 5000, 1, r"nested deeper than 64 levels"),
    ("".join("  " * i + f"k{i}:\n" for i in range(100)), 64, r"nested deeper than 64 levels"),
    # a chain of aliases, each one level deeper: shallow text, deep structure
    ("a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100)), 63,
     r"alias \*a61 nests deeper than 64 levels"),
    ("name: a\nseed: 1\nname: b\n", 3, r"duplicate key 'name' \(first given on line 1\)"),
    ("{a: 1, a: 2}", 1, r"duplicate key 'a'"),
    ("seed: " + "9" * 5000 + "\n", 1, r"an integer of more than 100 digits"),
    ("day: 2024-13-45\n", 1, r"cannot read the value '2024-13-45'"),
    ("a: [1, 2\nb: 3\n", 2, r"invalid YAML \(expected ',' or ']'"),
    ("a: !!python/object:os.system x\n", 1, r"invalid YAML \(could not determine a constructor"),
    ("a: 1\nb: \x07\n", 2, r"invalid YAML \(character #x0007 is not allowed\)"),
])
def test_refusals_name_the_file_and_line(text, line, match):
    with pytest.raises(UserError, match=match) as info:
        load_yaml_text(text, "r.yaml")
    assert str(info.value).startswith(f"r.yaml:{line}: ")
    assert "\n" not in str(info.value) and len(str(info.value)) < 300  # nothing expanded into the message


def test_a_merge_key_may_be_overridden_but_a_key_not_repeated():
    assert load_yaml_text("b: &b {x: 1}\nc: {<<: *b, x: 2}\n", "r") == {"b": {"x": 1}, "c": {"x": 2}}
    with pytest.raises(UserError, match=r"r:3: duplicate key 'x' \(first given on line 2\)"):
        load_yaml_text("c:\n  x: 1\n  x: 2\n", "r")


def test_first_line_shifts_the_reported_line():
    with pytest.raises(UserError, match=r"^t.j2:5: duplicate key 'a'"):
        load_yaml_text("a: 1\na: 2\n", "t.j2", first_line=4)


def test_too_many_nodes_and_too_many_bytes_are_refused(monkeypatch):
    monkeypatch.setattr(yamlfiles, "MAX_NODES", 100)
    with pytest.raises(UserError, match=r"^r:1: more than 100 values"):
        load_yaml_text("[" + "1, " * 200 + "1]", "r")
    monkeypatch.setattr(yamlfiles, "MAX_YAML_BYTES", 1000)
    with pytest.raises(UserError, match=r"^r: larger than"):
        load_yaml_text("a: " + "x" * 2000, "r")


def test_read_yaml_refuses_missing_binary_and_directory_paths(tmp_path):
    with pytest.raises(UserError, match=r"grid file not found \(fix: check the path\)"):
        read_yaml(tmp_path / "nope.yaml", "grid", "check the path")
    with pytest.raises(UserError, match="grid file not found"):
        read_yaml(tmp_path, "grid", "check the path")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(UserError, match=r"not UTF-8 text \(fix: save the grid as UTF-8\)"):
        read_yaml(tmp_path / "bin.yaml", "grid", "check the path")
    (tmp_path / "ok.yaml").write_text("axis: style\n")
    assert read_yaml(tmp_path / "ok.yaml", "grid", "") == {"axis": "style"}
