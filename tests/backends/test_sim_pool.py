"""The Ray actor pool on simulated engines (bench/sim_engine.py) in a real local Ray: one
result per request, also when an actor dies with requests in flight. Slow (starting Ray and its
workers), hence marked integration, though no model is loaded."""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from conftest import ROOT
from generator.records import Request

ray = pytest.importorskip("ray")
sys.path.insert(0, str(ROOT / "bench"))
import sim_engine  # noqa: E402

pytestmark = pytest.mark.integration

REPLICAS = 3
# Short steps, few sequences per engine: each actor holds its share of the requests for about a
# second of steps, so an actor killed after the first results still holds most of its share.
OPTIONS = dict(step_base_s=0.004, step_per_seq_s=0.0001, max_num_seqs=8, median_tokens=30.0, sigma=0.5)


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2 * REPLICAS, include_dashboard=False, log_to_driver=False)
    elif ray.available_resources().get("CPU", 0) < REPLICAS:
        pytest.skip("a Ray started by another test has no CPU left for three actors")
    ray.cloudpickle.register_pickle_by_value(sim_engine)  # the workers need not find bench/
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def pool(local_ray):
    """One pool for the module (starting actors takes most of the time); tests count restarts
    from where they find them."""
    from generator.backends.ray import RayBackend
    backend = RayBackend("sim", num_replicas=REPLICAS, actor_class=sim_engine.SimEngine, **OPTIONS)
    yield backend
    backend.close()


def make_requests(n: int) -> list[Request]:
    return [Request(id=f"r{i}", prompt=f"Write about subject {i}.\nIn detail.", max_tokens=64, seed=1000 + i)
            for i in range(n)]


def drain(backend, results: list) -> None:
    while backend.in_flight:
        results.extend(backend.poll(1.0))


def test_pool_returns_one_result_per_request(pool):
    requests, restarts, tokens = make_requests(200), pool.restarts, pool.generated_tokens
    assert pool.capacity == REPLICAS * 9  # ceil(1.1 × 8) per engine
    pool.submit(requests)
    results: list = []
    drain(pool, results)
    assert pool.generated_tokens - tokens == sum(r.num_tokens for r in results)
    assert Counter(r.id for r in results) == Counter(r.id for r in requests)
    by_id = {r.id: r for r in results}
    for request in requests:
        result = by_id[request.id]
        assert result.ok
        assert result.num_tokens == sim_engine.output_tokens(request, OPTIONS["median_tokens"], OPTIONS["sigma"])
        assert result.text == sim_engine.output_text(request, result.num_tokens)
    assert len({r.text for r in results}) == len(results)
    assert pool.restarts == restarts


def test_killed_actor_loses_and_repeats_nothing(pool):
    requests, restarts = make_requests(200), pool.restarts
    pool.submit(requests)
    results: list = []
    while len(results) < 10:
        results.extend(pool.poll(1.0))
    assert pool.in_flight > 100  # the actor killed next still holds requests
    ray.kill(pool.actors[1])
    drain(pool, results)
    assert pool.restarts == restarts + 1
    assert len(results) == len(requests)
    assert Counter(r.id for r in results) == Counter(r.id for r in requests)  # 0 lost, 0 duplicated
    assert all(r.ok for r in results)
    assert len(set(ray.get([a.pid.remote() for a in pool.actors]))) == REPLICAS


def test_a_local_ray_runs_engine_actors_at_the_drivers_priority(tmp_path):
    """Ray starts workers at niceness 15; a local Ray started by `init_ray` runs them at 0, so an
    engine does not lose its cores to whatever else runs on the machine."""
    import os
    import subprocess
    script = ("import os, ray\nfrom generator.backends.ray import init_ray\ninit_ray()\n"
              "@ray.remote\nclass Probe:\n    def niceness(self):\n        return os.nice(0)\n"
              "print('niceness', ray.get(Probe.remote().niceness.remote()), os.nice(0))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(env, RAY_AUTH_MODE="disabled"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    actor, driver = (int(x) for x in out.stdout.split("niceness")[-1].split())
    assert actor == driver


def test_actors_attach_the_drivers_duplicate_keys(pool):
    """Work beside the engines, in real actors: each result comes back with the keys the driver
    would compute for the document it becomes, and the quality gates' verdict on it, from the
    first result on, and from an actor that replaces one killed mid-run too."""
    from generator.run.beside import Beside, result_keys
    from generator.run.dedup import Deduper
    from generator.run.documents import finish_result
    from generator.quality.config import Quality
    from generator.quality.gates import build_gates
    deduper, quality = Deduper(num_perm=64), Quality(min_tokens=40)
    pool.set_beside(Beside("keep", deduper.key_settings, quality))
    try:
        results: list = []
        restarts = pool.restarts
        requests = make_requests(80)
        pool.submit(requests[:40])
        ray.kill(pool.actors[0])
        drain(pool, results)
        ray.get(pool.actors[0].capacity.remote(), timeout=120)  # the replacement is up
        pool.poll(0.0)  # and the pool knows it, so that it shares the next requests
        pool.submit(requests[40:])
        drain(pool, results)
    finally:
        pool.set_beside(None)
    assert pool.restarts == restarts + 1
    assert len(results) == 80
    gates, verdicts = build_gates(quality), set()
    for r in results:
        text = finish_result(r, "keep")[0]
        assert np.array_equal(result_keys(r), deduper.keys(text))
        rejection = gates.check(text)
        assert r.verdict == (() if rejection is None else (rejection.gate, rejection.rule, rejection.reason))
        verdicts.add(bool(r.verdict))
    assert verdicts == {True, False}  # some answers too short for the gate, some long enough


def test_a_conversion_that_fails_stops_the_actors_that_started_beside_it(local_ray, monkeypatch):
    """The embedded model converts in the driver while the engine actors start; when the
    conversion fails, its own error reaches the caller and no actor is left running."""
    from generator.backends import ray as ray_backend
    from generator.errors import UserError

    backend = object.__new__(ray_backend.RayBackend)
    backend.model, backend._actor_class, backend._engine = "sim", sim_engine.SimEngine, OPTIONS
    backend._options = dict(num_cpus=0, max_restarts=0)  # the module's pool may hold every CPU
    backend.actors = [backend._start_actor()]
    assert ray.get(backend.actors[0].capacity.remote(), timeout=120) > 0

    def broken(model):
        raise UserError(f"{model}: the packaged file is missing", fix="reinstall it")

    monkeypatch.setattr(ray_backend, "resolve_model", broken)
    with pytest.raises(UserError, match="packaged file is missing"):
        backend._prepare_beside_actors("embedded:smollm2-135m")
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(backend.actors[0].capacity.remote(), timeout=60)
