"""Cluster-scale throughput, simulated: eight engines fed four ways, side by side in one run.

Every engine is a `SimEngine` actor (bench/sim_engine.py: continuous batching with an assumed
step-time model for an 8B model on one H100-class GPU) in a local Ray. The same actors serve:

  reference  every request handed over at once, each actor its share (the most any driver can get)
  batch      the earlier barrier loop: batches of `--batch` cut into one chunk per actor, each
             batch waited for before the next (engine side only, so an upper bound of that loop)
  pipeline   `controller.run` through `RayBackend` on a recipe without a target (dedup on)
  steering   the same with a target, judged by `KeyJudge` (tests/fakes.py) on each text's first line

Throughput is generated tokens per simulated second (real seconds / time scale); the pipelines
count the tokens of committed samples. Timings start after the actors are up.

    .venv/bin/python bench/bench_cluster.py [--docs 100000] [--time-scale 1.0] [--batch-docs 4096]
                                            [--modes reference batch pipeline steering]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

RECIPE = """
name: cluster-sim
model: sim/8b-instruct
seed: @SEED@
roots: [@ROOT@]
grid:
  topic: @ROOT@/topics/topics.yaml
  persona: @ROOT@/topics/personas.yaml
  style: @ROOT@/topics/styles.yaml
  audience: @ROOT@/topics/audiences.yaml
templates:
  - {path: @ROOT@/prompts/topic_style_persona.j2, weight: 3}
  - path: @ROOT@/prompts/multitopic_style_persona.j2
  - {path: @ROOT@/prompts/textbook.j2, weight: 2}
size: {num_docs: @DOCS@, shard_rows: 20000}
sampling: {temperature: 0.9, top_p: 0.95, max_tokens: @MAX_TOKENS@}
engine: {backend: ray, max_model_len: 4096}
scoring: {enabled: false}
keep_truncated: keep
"""
TARGET = "target: {score: @SCORE@, tolerance: @TOLERANCE@, num_rounds: 4}\n"
# the quality gates of the "gated" mode: the ones that fit simulated text (made-up words with
# sentence ends; Gopher's quality filter wants English stop words, so it would reject them all)
QUALITY = ("quality: {min_tokens: 40, gopher_repetition: true, fineweb_quality: true, "
           "max_rejection_rate: 0.5}\n")
SEED, TOLERANCE = 20261121, 0.3


def recipe_text(docs: int, max_tokens: int, *, seed: int = SEED, target: float | None = None,
                tolerance: float = TOLERANCE) -> str:
    """The simulated cluster's recipe (bench/bench_seeds.py steers the same one over many seeds)."""
    body = RECIPE + (TARGET if target is not None else "")
    for key, value in {"@ROOT@": ROOT, "@DOCS@": docs, "@MAX_TOKENS@": max_tokens, "@SEED@": seed,
                       "@SCORE@": target, "@TOLERANCE@": tolerance}.items():
        body = body.replace(key, str(value))
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="real seconds per simulated second; below 1 the engines speed up but the driver does not")
    ap.add_argument("--batch", type=int, default=512, help="batch size of the barrier loop")
    ap.add_argument("--batch-docs", type=int, default=4096,
                    help="documents for the barrier loop (every batch takes as long, so a prefix measures it)")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--target", type=float, default=8.0, help="target D of the steering run")
    ap.add_argument("--modes", nargs="+", default=["reference", "batch", "pipeline", "steering"],
                    choices=["reference", "batch", "pipeline", "gated", "steering"],
                    help="which ways to feed the engines, in order (gated: the pipeline with quality gates)")
    args = ap.parse_args()
    if "reference" not in args.modes:
        ap.error("--modes needs reference: every ratio is against it")

    import ray
    import sim_engine
    from generator.backends.ray import RayBackend
    from generator.sampling.requests import plan_samples

    os.environ.setdefault("RAY_worker_niceness", "0")  # as init_ray does for a local Ray
    ray.init(num_cpus=2 * args.replicas, include_dashboard=False, log_to_driver=False)  # scheduling tokens only
    ray.cloudpickle.register_pickle_by_value(sim_engine)  # workers need not find bench/ on their path
    backend = RayBackend("sim/8b-instruct", num_replicas=args.replicas, actor_class=sim_engine.SimEngine,
                         time_scale=args.time_scale)
    with tempfile.TemporaryDirectory() as tmp:
        plain, steered = write_plan(Path(tmp), args, target=None), write_plan(Path(tmp), args, target=args.target)
        gated = write_plan(Path(tmp), args, target=None, quality=True)
        requests = [s.request for s in plan_samples(plain, 0, args.docs)]
        batch_requests = requests[:min(args.docs, args.batch_docs)]
        print(f"{args.replicas} simulated engines, time scale {args.time_scale}, {args.docs} documents "
              f"({len(batch_requests)} for the barrier loop), max_tokens {args.max_tokens}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        modes = {
            "reference": lambda: run_reference(backend.actors, requests),
            "batch": lambda: run_batches(backend.actors, batch_requests, args.batch),
            "pipeline": lambda: run_pipeline(plain, Path(tmp) / "plain", backend),
            "gated": lambda: run_pipeline(gated, Path(tmp) / "gated", backend),
            "steering": lambda: run_pipeline(steered, Path(tmp) / "steer", backend, steer=True),
        }
        rows = {mode: measure(backend, args, modes[mode]) for mode in args.modes}
    backend.close()
    ray.shutdown()
    report(rows, args)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def write_plan(tmp: Path, args, target: float | None, quality: bool = False):
    from generator.recipe import load_recipe
    body = recipe_text(args.docs, args.max_tokens, target=target) + (QUALITY if quality else "")
    path = tmp / ("steer.yaml" if target is not None else "gated.yaml" if quality else "plain.yaml")
    path.write_text(body)
    return load_recipe(path)


def measure(backend, args, fn) -> dict:
    """Run `fn` (returns tokens, documents and extra fields); add wall time, simulated tokens/s,
    the driver's CPU time, and the engines' occupancy and throughput over the run."""
    import ray
    before = ray.get([a.stats.remote() for a in backend.actors])
    sampler = Sampler(backend.actors)
    cpu0, t0 = driver_cpu_s(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, driver_cpu_s() - cpu0
    timeline = sampler.stop(t0, wall, args.time_scale)
    after = ray.get([a.stats.remote() for a in backend.actors])
    steps = sum(a["steps"] - b["steps"] for a, b in zip(after, before))
    engine_tokens = sum(a["tokens"] - b["tokens"] for a, b in zip(after, before))
    busy_s = sum(a["sim_s"] - b["sim_s"] for a, b in zip(after, before)) * args.time_scale
    row = dict(out, wall_s=wall, tokens_per_s=out["tokens"] / (wall / args.time_scale), cpu_s=cpu,
               mean_live=engine_tokens / max(1, steps), busy=busy_s / (wall * len(backend.actors)),
               engine_tokens=engine_tokens, timeline=timeline)
    print(f"  {out['name']}: {row['tokens']} tokens, {row['docs']} docs in {wall:.1f} s real "
          f"-> {row['tokens_per_s']:,.0f} tok/s simulated", flush=True)
    return row


class Sampler:
    """Reads the engines' token counters every `every_s` seconds in a thread."""

    def __init__(self, actors, every_s: float = 0.2):
        import threading
        self.actors, self.every_s = actors, every_s
        self.points: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import ray
        while True:
            tokens = sum(s["tokens"] for s in ray.get([a.stats.remote() for a in self.actors]))
            self.points.append((time.perf_counter(), tokens))
            if self._stop.wait(self.every_s):
                return

    def stop(self, t0: float, wall_s: float, time_scale: float, parts: int = 10) -> list[float]:
        """Engine tokens per simulated second in each tenth of the run."""
        import numpy as np
        self._stop.set()
        self._thread.join()
        t, tokens = np.array(self.points, dtype=float).T
        edges = t0 + np.linspace(0, wall_s, parts + 1)
        at = np.interp(edges, t, tokens)
        return list(np.diff(at) / (wall_s / parts / time_scale))


def driver_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def collect(actors, owed: list[int]) -> int:
    """Keep one `take` open on every actor that owes results until each has returned `owed[i]`;
    return the tokens received."""
    import ray
    left = list(owed)
    takes = {actors[i].take.remote(1.0): i for i, n in enumerate(left) if n}
    tokens = 0
    while takes:
        done, _ = ray.wait(list(takes), num_returns=1)
        slot = takes.pop(done[0])
        results, _ = ray.get(done[0])
        left[slot] -= len(results)
        tokens += sum(r.num_tokens for r in results)
        if left[slot] > 0:
            takes[actors[slot].take.remote(1.0)] = slot
    return tokens


def split(requests: list, parts: int) -> list[list]:
    size = math.ceil(len(requests) / parts)
    return [requests[i * size:(i + 1) * size] for i in range(parts)]


def run_reference(actors, requests) -> dict:
    chunks = split(requests, len(actors))
    for actor, chunk in zip(actors, chunks):
        actor.submit.remote(chunk)
    return {"name": "reference", "tokens": collect(actors, [len(c) for c in chunks]), "docs": len(requests)}


def run_batches(actors, requests, batch_size: int) -> dict:
    tokens = 0
    for start in range(0, len(requests), batch_size):
        chunks = split(requests[start:start + batch_size], len(actors))
        for actor, chunk in zip(actors, chunks):
            if chunk:
                actor.submit.remote(chunk)
        tokens += collect(actors, [len(c) for c in chunks])
    return {"name": "batch", "tokens": tokens, "docs": len(requests)}


def run_pipeline(plan, out: Path, backend, steer: bool = False) -> dict:
    from fakes import KeyJudge
    from generator.run import controller
    judge = KeyJudge(lambda text: text.split("\n", 1)[0], name="first-line") if steer else None
    phase_start: dict[str, float] = {}

    def on_progress(state, flow) -> None:
        phase_start.setdefault(state.steering.phase, time.perf_counter())
        phase_start["last"] = time.perf_counter()  # the last progress report: generation's end

    t0 = time.perf_counter()
    summary = controller.run(plan, out, backend, judge=judge, on_progress=on_progress)
    row = {"name": "steering" if steer else "pipeline", "tokens": summary["completion_tokens"],
           "docs": summary["num_docs"], "attempted": summary["num_attempted"],
           "rejected": summary.get("rejected", {}).get("total", 0)}
    if steer:
        history = [json.loads(line) for line in (out / "controller.jsonl").read_text().splitlines()]
        row.update(rounds=summary["rounds"], achieved=summary.get("achieved", {}).get("score"), history=history,
                   pilot_s=phase_start.get("main", time.perf_counter()) - t0,
                   after_s=time.perf_counter() - phase_start.get("last", t0))
    return row


def report(rows: dict, args) -> None:
    ref = rows["reference"]["tokens_per_s"]
    print(f"\n{'mode':10s} {'tokens':>11s} {'docs':>7s} {'real s':>7s} {'sim tok/s':>10s} {'/ref':>6s} "
          f"{'live/step':>9s} {'engine busy':>11s} {'generated':>9s} {'driver CPU':>10s}")
    for name, r in rows.items():
        print(f"{name:10s} {r['tokens']:11,d} {r['docs']:7d} {r['wall_s']:7.1f} {r['tokens_per_s']:10,.0f} "
              f"{r['tokens_per_s'] / ref:6.3f} {r['mean_live']:9.0f} {r['busy']:11.1%} "
              f"{r['engine_tokens'] / r['tokens']:9.2f} {r['cpu_s'] / r['wall_s']:10.0%}")
    print("\nengine throughput per tenth of each run (thousand simulated tok/s):")
    for name, r in rows.items():
        print(f"  {name:10s} " + " ".join(f"{x / 1000:5.0f}" for x in r["timeline"]))
    print("\nratios: " + "   ".join(f"{name}/reference {r['tokens_per_s'] / ref:.3f}" for name, r in rows.items()
                                     if name != "reference"))
    if "pipeline" in rows:
        p = rows["pipeline"]
        print(f"pipeline driver CPU: {1000 * p['cpu_s'] / p['attempted']:.2f} ms per document "
              f"({p['attempted']} attempted, {p['cpu_s']:.1f} s in {p['wall_s']:.1f} s)")
    for name in ("pipeline", "gated"):
        if name in rows:
            r = rows[name]
            print(f"{name}: {r['docs']} documents kept of {r['attempted']} attempted ({r['rejected']} rejected by gates)")
    if "steering" in rows:
        s = rows["steering"]
        print(f"steering: rounds {s['rounds']}, achieved D {s['achieved']:.2f} (target {args.target}); "
              f"pilot phase {s['pilot_s']:.1f} s of {s['wall_s']:.1f} s real, "
              f"{s['after_s']:.1f} s after the last document (final measurement, plots, summary)")
        for h in s["history"]:
            print(f"  {h['phase']:5s} c={h['concentration']:.3f} D={h['score']:.2f}±{h['half_width']:.2f} "
                  f"docs={h['docs']:6d}  {h['action']}")

if __name__ == "__main__":
    main()
