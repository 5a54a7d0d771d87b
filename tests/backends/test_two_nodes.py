"""Engines on a two-node Ray cluster, and a node lost mid-run.

Both nodes run on this machine: a head and a second node, one CPU each, so the two engine actors
of two replicas land one per node. The engines are simulated (bench/sim_engine.py, run by
sim_cluster_run.py): what is under test is Ray's placement and the loss of a node, and a real
engine's death and replacement is tested on vLLM in tests/run/test_faults.py. The second node's
raylet and every process under it are killed with SIGKILL while the run generates; the run must
still deliver exactly the requested corpus, the same one an uninterrupted run gives. A
RAY_ADDRESS where nothing listens is refused at once with exit code 2.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import FakeBackend
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.run import controller

NUM_DOCS = 16
RAY = str(Path(sys.executable).with_name("ray"))
TWO_ENGINES = (SMALL_RECIPE
               .replace("size: {num_docs: 20, shard_rows: 8}", f"size: {{num_docs: {NUM_DOCS}, shard_rows: 2}}")
               .replace("max_tokens: 32", "max_tokens: 24")
               .replace("engine: {backend: ray}", "engine: {backend: ray, num_replicas: 2}")
               + "keep_truncated: keep\ndedup: {exact: true, near: true}\n")
DRIVER = Path(__file__).with_name("sim_cluster_run.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every live process on the machine (zombies left out)."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                state, ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if state != "Z":
                found[int(d.name)] = (int(ppid), cmd)
    return found


def with_descendants(roots: set[int], table: dict[int, tuple[int, bytes]]) -> set[int]:
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def raylet_pid(temp_dir: Path) -> int:
    """The raylet of the node whose temp dir is `temp_dir`."""
    table = processes()
    [pid] = [pid for pid, (_, cmd) in table.items()
             if cmd.split(b"\0")[0].endswith(b"/raylet") and f"--temp_dir={temp_dir}\0".encode() in cmd]
    return pid


def engines_under(raylet: int) -> set[int]:
    """Engine actor processes started by this raylet (their title is `ray::SimEngine...`)."""
    table = processes()
    return {pid for pid in with_descendants({raylet}, table) if table[pid][1].startswith(b"ray::SimEngine")}


def kill_matching(markers: list[bytes]) -> None:
    """SIGKILL every process whose command line holds a marker, and everything under it, until
    none is left (a dying raylet's workers may outlive it for a moment)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        table = processes()
        roots = {pid for pid, (_, cmd) in table.items() if any(m in cmd for m in markers)} - {os.getpid()}
        doomed = with_descendants(roots, table)
        if not doomed:
            return
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def ray_start(*args: str, env: dict) -> None:
    done = subprocess.run([RAY, "start", "--disable-usage-stats", "--object-store-memory=200000000", *args],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def docs_so_far(out: Path) -> int:
    state = out / "state.json"
    return json.loads(state.read_text())["counters"]["num_docs"] if state.is_file() else 0


def run_command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, str(DRIVER), str(recipe), str(out), "2"]


class SimText(FakeBackend):
    """The simulated engines' documents without Ray, answered at once: the uninterrupted run."""

    name = model = "sim"

    def generate(self, requests):
        import sim_cluster_run
        import sim_engine
        median, sigma = sim_cluster_run.OPTIONS["median_tokens"], sim_cluster_run.OPTIONS["sigma"]
        return [sim_engine.finish(r, sim_engine.output_tokens(r, median, sigma)) for r in requests]


def assert_exact_corpus(out: Path) -> list[str]:
    """Exactly NUM_DOCS documents: none lost, none twice. Returns their ids in corpus order."""
    table = read_documents(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == NUM_DOCS and len(set(ids)) == NUM_DOCS
    indices = table.column("sample_index").to_pylist()
    assert indices == sorted(indices)  # committed in sample order
    rejected = [json.loads(line)["sample_index"] for name in ("duplicates.jsonl", "failures.jsonl")
                if (out / name).is_file() for line in (out / name).read_text().splitlines()]
    # every sample index from 0 on became a document or a recorded rejection, exactly once
    assert sorted(indices + rejected) == list(range(len(indices) + len(rejected)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_docs"] == NUM_DOCS == summary["requested_docs"] and summary["num_failed"] == 0
    counters = json.loads((out / "state.json").read_text())["counters"]
    assert counters["num_docs"] == NUM_DOCS and counters["next_index"] == len(indices) + len(rejected)
    return ids


@pytest.mark.integration
def test_run_survives_losing_one_of_two_nodes(tmp_path):
    recipe = write_recipe(tmp_path, TWO_ENGINES)
    # Ray's unix sockets live under the temp dirs and their paths must stay short.
    head_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    node_dir = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    out, log_path = tmp_path / "run", tmp_path / "run.log"
    proc = None
    try:
        ray_start("--head", f"--port={port}", "--num-cpus=1", '--resources={"node_a": 1}', f"--temp-dir={head_dir}",
                  "--include-dashboard=false", f"--dashboard-port={free_port()}",
                  f"--ray-client-server-port={free_port()}", env=env)
        ray_start(f"--address=127.0.0.1:{port}", "--num-cpus=1", '--resources={"node_b": 1}',
                  f"--temp-dir={node_dir}", env=env)
        head_raylet, node_raylet = raylet_pid(head_dir), raylet_pid(node_dir)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(run_command(recipe, out), env=dict(env, RAY_ADDRESS=f"127.0.0.1:{port}"),
                                    start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        while docs_so_far(out) < 2:  # the first shard: both engines are up and generating
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no shard was written in 400 s"
            time.sleep(0.2)
        # one engine actor in each node's process tree
        assert len(engines_under(head_raylet)) == 1 and len(engines_under(node_raylet)) == 1
        kill_matching([str(node_dir).encode()])  # the second node's raylet, agents, log monitor, engine
        assert docs_so_far(out) < NUM_DOCS and node_raylet not in processes()
        assert proc.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_matching([str(head_dir).encode(), str(node_dir).encode(), f":{port}\0".encode()])
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(node_dir, ignore_errors=True)
    log_text = log_path.read_text()
    assert re.search(r"engine actor \d died", log_text), log_text[-3000:]  # the lost engine's requests were retried
    ids = assert_exact_corpus(out)

    # The same recipe with nothing lost: the same documents in the same order, because sample i
    # depends only on the seed, i and the weights, not on the engines.
    controller.run(load_recipe(recipe), tmp_path / "calm", SimText())
    assert assert_exact_corpus(tmp_path / "calm") == ids


def test_cpu_engines_share_the_cores_unless_omp_num_threads_is_set(monkeypatch):
    from generator.backends.ray import engine_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [engine_threads(cpus, 2) for cpus in (1, 2, 3, 16)] == ["1", "1", "1", "8"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert engine_threads(16, 2) == "3"


def test_unreachable_ray_address_exits_2_at_once(tmp_path):
    """Regression: with nothing listening at RAY_ADDRESS, `generator run` sat in `ray.init`'s
    connection retries for many minutes. The address is now tried before anything starts."""
    recipe = write_recipe(tmp_path, SMALL_RECIPE)
    env = dict(os.environ, RAY_ADDRESS="127.0.0.1:1", RAY_AUTH_MODE="disabled")  # nothing listens on port 1
    done = subprocess.run([sys.executable, "-m", "generator.cli", "run", str(recipe), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert re.fullmatch(r"error: cannot reach the Ray cluster at RAY_ADDRESS='127.0.0.1:1' .*\(fix: .*\)", line)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["", "auto", "local"])
def test_ray_address_without_a_port_is_left_to_ray(address, monkeypatch):
    from generator.backends.ray import check_ray_address
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert check_ray_address() is None
