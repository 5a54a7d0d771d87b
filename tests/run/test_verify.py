"""`generator verify` and the checks `card`, `export` and `score` run first: every damage of a run
folder is one problem line with its repair; the commands refuse a damaged folder with exit 2."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import FakeBackend
from generator.cli import main
from generator.files import write_json
from generator.recipe import load_recipe
from generator.run import controller
from generator.run.verify import verify_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of four shards (20 documents), with a summary."""
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "run"
    controller.run(load_recipe(write_recipe(tmp, SMALL_RECIPE), ["size.shard_rows=6"]), out, FakeBackend())
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def edit_json(name, change):
    def damage(out: Path):
        data = json.loads((out / name).read_text())
        change(data)
        (out / name).write_text(json.dumps(data))
    return damage


def write(name, text):
    def damage(out: Path):
        (out / name).write_text(text)
    return damage


def truncate(name):
    def damage(out: Path):
        path = out / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return damage


def folder_in_place(name):
    def damage(out: Path):
        (out / name).unlink()
        (out / name).mkdir()
    return damage


def fifo_in_place(name):
    def damage(out: Path):
        (out / name).unlink()
        os.mkfifo(out / name)
    return damage


def link_to_dev_zero(name):
    def damage(out: Path):
        (out / name).unlink()
        (out / name).symlink_to("/dev/zero")
    return damage


def flip_a_byte(out: Path):
    path = out / "data" / "shard-00001.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {  # name -> (damage, text of the problem line, scope)
    "state missing": (lambda out: (out / "state.json").unlink(), "state.json: missing", "resume"),
    "state is a folder": (folder_in_place("state.json"), "state.json: a folder where", "resume"),
    "state negative shard count": (edit_json("state.json", lambda d: d["counters"].update(num_shards=-1)),
                                   "counters.num_shards: expected a non-negative integer, got -1", "resume"),
    "state truncated": (truncate("state.json"), "state.json: cannot be read as JSON", "resume"),
    "state counters a list": (edit_json("state.json", lambda d: d.update(counters=[])),
                              "counters: expected a mapping, got list", "resume"),
    "state counts more shards": (edit_json("state.json", lambda d: d["counters"].update(num_shards=9)),
                                 "counts 9 shards, manifest.json lists 4", "resume"),
    "manifest truncated": (truncate("manifest.json"), "manifest.json: cannot be read as JSON", "corpus"),
    "manifest empty": (write("manifest.json", ""), "manifest.json: cannot be read as JSON", "corpus"),
    "manifest a list": (write("manifest.json", "[]"), "expected a mapping with a list of 'shards'", "corpus"),
    "manifest rows a string": (edit_json("manifest.json", lambda d: d["shards"][0].update(rows="6")),
                               "shards[0] rows: expected a non-negative integer", "corpus"),
    "manifest missing": (lambda out: (out / "manifest.json").unlink(), "missing while data/ holds shards", "resume"),
    "manifest missing, shard truncated": (lambda out: ((out / "manifest.json").unlink(), truncate(
        "data/shard-00001.parquet")(out)), "data/shard-00001.parquet: not readable as Parquet", "corpus"),
    "shard truncated": (truncate("data/shard-00002.parquet"), "data/shard-00002.parquet: ", "corpus"),
    "shard changed in place": (flip_a_byte, "sha256 differs from manifest.json's", "corpus"),
    "shard missing": (lambda out: (out / "data" / "shard-00003.parquet").unlink(),
                      "listed in manifest.json but missing", "corpus"),
    "shard not in the manifest": (lambda out: shutil.copy(out / "data" / "shard-00000.parquet",
                                                          out / "data" / "shard-00004.parquet"),
                                  "data/shard-00004.parquet: not in manifest.json", "corpus"),
    "summary truncated": (truncate("summary.json"), "summary.json: cannot be read as JSON", "corpus"),
    "summary a list": (write("summary.json", "[1, 2]"), "summary.json: expected a mapping, got list", "corpus"),
    "summary nested too deep": (write("summary.json", "[" * 100_000), "summary.json: cannot be read as JSON",
                                "corpus"),
    "summary fidelity without groups": (edit_json("summary.json", lambda d: d.update(fidelity={
        "num_docs": 3, "num_topics": 2, "top_r": 1, "min_cosine": 0.1, "topic_share": 0.5, "num_style_docs": 0,
        "style_share": None})), "summary.json: fidelity: ", "corpus"),
    "summary achieved score a string": (edit_json("summary.json", lambda d: d.update(achieved={"score": "high"})),
                                        "achieved.score: expected a number", "corpus"),
    "diversity score a string": (write("diversity.json", '{"score": "high"}'),
                                 "diversity.json: score: expected a number", "corpus"),
    "diversity without score": (write("diversity.json", '{"judge": "embed"}'), "diversity.json: missing 'score'",
                                "corpus"),
    "recipe empty": (write("recipe.resolved.yaml", ""), "recipe.resolved.yaml: not a recipe with a recipe_hash",
                     "corpus"),
    "recipe is a folder": (folder_in_place("recipe.resolved.yaml"), "recipe.resolved.yaml: cannot be read", "corpus"),
    "recipe templates a number": (write("recipe.resolved.yaml", "recipe_hash: x\ntemplates: 3\n"),
                                  "recipe.resolved.yaml: templates: expected a list, got int", "corpus"),
    "recipe template without path": (write("recipe.resolved.yaml", "recipe_hash: x\ntemplates: [{weight: 1}]\n"),
                                     "templates[0]: missing 'path'", "corpus"),
    "recipe grid a list": (write("recipe.resolved.yaml", "recipe_hash: x\ngrid: [a, b]\n"),
                           "grid: expected axis: file pairs", "corpus"),
    "recipe of another run": (write("recipe.resolved.yaml", "recipe_hash: 0123abcd\n"),
                              "rows of recipe", "corpus"),
    # RF2: a named pipe blocked every reader, /dev/zero made them read until memory ran out
    "summary a named pipe": (fifo_in_place("summary.json"), "summary.json: cannot be read as JSON "
                             "(OSError: not a regular file (a named pipe))", "corpus"),
    "recipe a named pipe": (fifo_in_place("recipe.resolved.yaml"), "recipe.resolved.yaml: cannot be read "
                            "(not a regular file (a named pipe))", "corpus"),
    "manifest a link to /dev/zero": (link_to_dev_zero("manifest.json"),
                                     "manifest.json: cannot be read as JSON (OSError: not a regular file "
                                     "(a device))", "corpus"),
    "state a link to /dev/zero": (link_to_dev_zero("state.json"), "state.json: cannot be read as JSON",
                                  "resume"),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_each_damage_is_one_problem_line_with_its_repair(name, run_dir, capsys):
    damage, text, scope = DAMAGES[name]
    damage(run_dir)
    problems = verify_run(run_dir)
    found = [p for p in problems if text in p.line]
    assert found, [p.line for p in problems]
    assert found[0].scope == scope and "(repair: " in found[0].line
    assert main(["verify", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert text in out and err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1


def test_an_intact_run_verifies_clean_with_its_checksums(run_dir, capsys):
    assert verify_run(run_dir) == ()
    assert main(["verify", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("intact: 4 shards, 20 documents, 4 checksums verified")


def test_a_summary_without_fidelity_verifies_clean(run_dir):
    """A corpus with no grid topic to check (or a run steered on another judge) records
    `fidelity: null`; that is an intact run, not a damaged one."""
    edit_json("summary.json", lambda d: d.update(fidelity=None))(run_dir)
    assert verify_run(run_dir) == ()


def test_a_run_written_before_checksums_still_verifies(run_dir, capsys):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for entry in manifest["shards"]:
        del entry["sha256"]
    write_json(run_dir / "manifest.json", manifest)
    assert verify_run(run_dir) == ()
    assert main(["verify", str(run_dir)]) == 0
    assert "no checksums recorded (an older run)" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["missing", "a file"])
def test_verify_of_no_run_folder_is_one_problem(tmp_path, target, capsys):
    path = tmp_path / "nothing"
    if target == "a file":
        path.write_text("x")
    assert main(["verify", str(path)]) == 2
    assert "pass the --out folder of `generator run`" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["card", "export", "score"])
@pytest.mark.parametrize("name", ["manifest truncated", "shard truncated", "summary fidelity without groups",
                                  "recipe is a folder"])
def test_card_export_and_score_refuse_a_damaged_run_with_one_line(command, name, run_dir, tmp_path, capsys):
    DAMAGES[name][0](run_dir)
    before = sorted(p.name for p in run_dir.rglob("*"))
    argv = {"card": ["card", str(run_dir)], "score": ["score", str(run_dir)],
            "export": ["export", str(run_dir), "--to", "datatrove", "--out", str(tmp_path / "exported")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{command} refuses a damaged run folder" in err, err
    assert f"`generator verify {run_dir}` lists every problem" in err
    assert sorted(p.name for p in run_dir.rglob("*")) == before and not (tmp_path / "exported").exists()


def test_a_missing_state_does_not_block_reading_the_corpus(run_dir):
    """state.json is needed only to resume: card, export and score read the shards."""
    from generator.run.verify import require_intact
    (run_dir / "state.json").unlink()
    require_intact(run_dir, "card")  # no UserError


def test_run_files_are_read_only_when_regular_and_bounded(tmp_path):
    """RF2: a run file is read through read_run_text: a named pipe, a device or a file larger
    than the bound is refused at once instead of blocking or filling memory."""
    from generator.files import read_run_text
    (tmp_path / "ok.json").write_text("{}")
    assert read_run_text(tmp_path / "ok.json") == "{}"
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match=r"not a regular file \(a named pipe\)"):
        read_run_text(tmp_path / "pipe")
    with pytest.raises(OSError, match=r"not a regular file \(a device\)"):
        read_run_text(Path("/dev/zero"))
    (tmp_path / "big.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(OSError, match="larger than 1 MiB"):
        read_run_text(tmp_path / "big.json", max_bytes=1 << 20)
