"""--resume never destroys: a missing state is rebuilt from the manifest and the shards, a damaged
one (or a damaged committed shard) is refused before anything in the folder changes, and a folder
that holds no run is refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SMALL_RECIPE, echo_recipe, write_recipe
from fakes import Crash, CrashingEcho, EchoBackend, KeyJudge, SeededFaultsBackend
from generator.errors import UserError
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.run import controller


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    return load_recipe(write_recipe(tmp, SMALL_RECIPE), ["size.shard_rows=6", "max_failure_rate=0.5"])


@pytest.fixture(scope="module")
def finished(plan, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    controller.run(plan, out, SeededFaultsBackend())
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_finished_run_without_its_state_is_rebuilt_not_regenerated(plan, finished, run_dir):
    """Regression: the state's absence once made --resume delete every shard and generate them again."""
    state = json.loads((run_dir / "state.json").read_text())["counters"]
    (run_dir / "state.json").unlink()
    backend = SeededFaultsBackend()
    summary = controller.run(plan, run_dir, backend, resume=True)
    assert backend.calls == []  # nothing generated again
    assert snapshot(run_dir / "data") == snapshot(finished / "data")
    rebuilt = json.loads((run_dir / "state.json").read_text())["counters"]
    for key in ("next_index", "num_docs", "num_shards", "num_attempted", "num_failed", "duplicates_exact"):
        assert rebuilt[key] == state[key], key
    assert summary["num_docs"] == 20


def test_a_missing_state_mid_run_resumes_to_the_uninterrupted_corpus(plan, finished, run_dir):
    for name in ("shard-00002.parquet", "shard-00003.parquet"):  # as if killed after two shards
        (run_dir / "data" / name).unlink()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({"shards": manifest["shards"][:2], "rows": 12}))
    (run_dir / "state.json").unlink()
    controller.run(plan, run_dir, SeededFaultsBackend(), resume=True)
    assert read_documents(run_dir).to_pydict() == read_documents(finished).to_pydict()
    assert (run_dir / "failures.jsonl").read_text() == (finished / "failures.jsonl").read_text()


@pytest.mark.parametrize("damage, message", [
    (lambda out: ((out / "state.json").unlink(), (out / "state.json").mkdir()), r"state.json: a folder where"),
    (lambda out: (out / "state.json").write_text(json.dumps({**json.loads((out / "state.json").read_text()),
                                                             "counters": {"num_shards": -3}})),
     r"counters.num_shards: expected a non-negative integer, got -3 \(fix: move it aside and resume again"),
    (lambda out: (out / "state.json").write_text('{"layout": 2, "counters": '), r"cannot be read as JSON"),
    (lambda out: (out / "state.json").write_text("[]"), r"state.json: expected a mapping, got list"),
    (lambda out: (out / "data" / "shard-00001.parquet").write_bytes(b"PAR1"),
     r"cannot resume: data/shard-00001.parquet: 4 bytes, manifest.json records \d+"),
    (lambda out: (out / "manifest.json").write_text("{"), r"manifest.json: cannot be read as JSON"),
])
def test_a_damaged_folder_is_refused_before_anything_changes(plan, run_dir, damage, message):
    damage(run_dir)
    before = snapshot(run_dir)
    with pytest.raises(UserError, match=message):
        controller.run(plan, run_dir, SeededFaultsBackend(), resume=True)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("make, message", [
    (lambda out: None, r"cannot resume, no such folder \(fix: run without --resume to start it"),
    (lambda out: out.mkdir(), r"cannot resume, the folder holds no run"),
    (lambda out: (out.mkdir(), (out / ".state.json.tmp").write_text("{}")), r"the folder holds no run"),
])
def test_resume_of_a_folder_without_a_run_says_so(plan, tmp_path, make, message):
    out = tmp_path / "run"
    make(out)
    with pytest.raises(UserError, match=message):
        controller.run(plan, out, SeededFaultsBackend(), resume=True)


def test_a_lost_resolved_recipe_is_written_again_when_the_shards_prove_the_recipe(plan, finished, run_dir):
    (run_dir / "recipe.resolved.yaml").unlink()
    controller.run(plan, run_dir, SeededFaultsBackend(), resume=True)
    assert (run_dir / "recipe.resolved.yaml").read_text() == (finished / "recipe.resolved.yaml").read_text()
    assert snapshot(run_dir / "data") == snapshot(finished / "data")


def test_a_steered_run_without_its_state_is_refused(tmp_path):
    recipe = echo_recipe(tmp_path, "steered", 11, "{num_docs: 120, shard_rows: 30}",
                         "{score: 3.0, tolerance: 0.3, k: 5, pilot_docs: 20, num_rounds: 2, num_batches: 40}")
    plan, out = load_recipe(recipe), tmp_path / "run"
    judge = KeyJudge(lambda t: t.splitlines()[0])
    with pytest.raises(Crash):  # killed during the first pilot rounds
        controller.run(plan, out, CrashingEcho(4), judge=judge)
    assert list((out / "pilot").rglob("*.parquet"))
    (out / "state.json").unlink()
    before = snapshot(out)
    with pytest.raises(UserError, match=r"state.json: missing, and a run with a target keeps its steering history"):
        controller.run(plan, out, EchoBackend(), resume=True, judge=judge)
    assert snapshot(out) == before



@pytest.mark.parametrize("state, message", [(None, "cannot resume, no such folder"),
                                            ("a folder", "state.json: a folder where")])
def test_run_resume_of_no_run_or_a_damaged_state_exits_2_before_any_engine_starts(
        state, message, finished, tmp_path, capsys, monkeypatch):
    import generator.backends
    from generator.cli import main
    monkeypatch.setattr(generator.backends, "open_backend", lambda *a, **k: pytest.fail("an engine started"))
    out = tmp_path / "run"
    if state is not None:
        shutil.copytree(finished, out)
        (out / "state.json").unlink()
        (out / "state.json").mkdir()
    recipe = write_recipe(tmp_path, SMALL_RECIPE)
    argv = ["run", str(recipe), "--out", str(out), "--set", "size.shard_rows=6", "--set", "max_failure_rate=0.5"]
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "(fix: " in err, err
    assert out.exists() == (state is not None)
