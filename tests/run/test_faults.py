"""Faults on the real stack: a run killed with SIGKILL mid-way resumes to exactly the corpus of an
uninterrupted run, and an engine actor killed with requests in flight is replaced and its requests retried."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SMALL_RECIPE, write_recipe
from generator.run import controller
from generator.recipe import load_recipe
from generator.files import read_documents

pytestmark = pytest.mark.integration


def vllm_pids() -> set[int]:
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"VLLM::") or b"EngineActor" in (d / "cmdline").read_bytes():
                    pids.add(int(d.name))
            except OSError:
                pass
    return pids


def kill_leftovers(marker: str, keep: set[int]) -> None:
    """Kill what the killed run left behind: its Ray processes (their command lines name its
    RAY_TMPDIR) and orphaned engine processes that were not running before the test."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            pid = int(d.name)
            if marker.encode() in cmd or (pid in vllm_pids() - keep and ppid == 1):
                left.append(pid)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_corpus(tmp_path, ray_engine):
    """kill -9 of a real run (Ray actor, vLLM CPU engine) after 6 committed documents; --resume
    gives exactly the sample indices and ids of a run that was never interrupted, and nothing
    committed before the kill changes. (Every write step and kill point, resumes of resumed runs
    included, is covered on the fake engine by tests/run/test_kill_points.py; `--resume` on the
    command line by tests/fuzz/test_fuzz_runfolders.py and tests/test_bad_inputs.py.)"""
    recipe = write_recipe(tmp_path, SMALL_RECIPE.replace("size: {num_docs: 20, shard_rows: 8}",
                                                         "size: {num_docs: 16, shard_rows: 2}")
                          .replace("max_tokens: 32", "max_tokens: 12")
                          .replace("engine: {backend: ray}", "engine: {backend: ray, max_num_seqs: 2}")  # a few at a time
                          + "keep_truncated: keep\n")
    full = controller.run(load_recipe(recipe), tmp_path / "full", ray_engine)  # never interrupted
    out = tmp_path / "run"
    # Ray's unix sockets live under RAY_TMPDIR and their paths must stay short.
    ray_dir = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    env = dict(os.environ, RAY_TMPDIR=str(ray_dir), RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "generator.cli", "run", str(recipe), "--out", str(out), "--no-score"]
    state_file, kept_ids = out / "state.json", []
    for attempt, kill_at_docs in enumerate((6,)):
        before = vllm_pids()
        log = open(tmp_path / f"killed-run-{attempt}.log", "w")
        proc = subprocess.Popen([*cmd, *(["--resume"] if attempt else [])], env=env, start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        try:
            while time.monotonic() < deadline:
                if state_file.is_file() and json.loads(state_file.read_text())["counters"]["num_docs"] >= kill_at_docs:
                    break
                assert proc.poll() is None, (tmp_path / f"killed-run-{attempt}.log").read_text()[-3000:]
                time.sleep(0.05)
            else:
                pytest.fail(f"the run did not commit {kill_at_docs} documents in 400 s")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            log.close()
            kill_leftovers(str(ray_dir), before)
        killed = json.loads(state_file.read_text())["counters"]
        assert kill_at_docs <= killed["num_docs"] < 16
        ids_now = read_documents(out).column("id").to_pylist()[: killed["num_docs"]]
        assert ids_now[: len(kept_ids)] == kept_ids  # the resumed run kept what the first kill left
        kept_ids = ids_now

    # the resume on the session's engine: what it redraws depends on the folder, not on the process
    controller.run(load_recipe(recipe), out, ray_engine, resume=True)
    table, reference = read_documents(out), read_documents(tmp_path / "full")
    ids = table.column("id").to_pylist()
    assert len(ids) == 16 == full["num_docs"] and len(set(ids)) == 16
    assert ids[: len(kept_ids)] == kept_ids  # nothing written before a kill was lost or changed
    assert ids == reference.column("id").to_pylist()
    assert table.column("sample_index").to_pylist() == reference.column("sample_index").to_pylist()
    shutil.rmtree(ray_dir, ignore_errors=True)


def test_killed_engine_actor_is_replaced_and_the_run_completes(small_recipe, tmp_path, ray_engine):
    import ray

    plan = load_recipe(small_recipe, ["size.num_docs=16", "size.shard_rows=16", "sampling.max_tokens=24",
                                      "keep_truncated=keep"])
    victim = ray_engine.actors[0]
    restarts = ray_engine.restarts
    handed_out = []

    def kill_after_first_chunk(slot: int) -> None:  # the engine dies with its chunk in flight
        handed_out.append(slot)
        if len(handed_out) == 1:
            ray.kill(victim, no_restart=True)

    ray_engine.on_submit = kill_after_first_chunk
    try:
        summary = controller.run(plan, tmp_path / "run", ray_engine)
    finally:
        ray_engine.on_submit = None
    assert handed_out[:2] == [0, 0]  # the chunk went out, the actor died, and it went out again
    assert ray_engine.restarts == restarts + 1 and ray_engine.actors[0] is not victim
    ids = read_documents(tmp_path / "run").column("id").to_pylist()
    assert summary["num_docs"] == 16 == len(set(ids)) and summary["num_failed"] == 0
