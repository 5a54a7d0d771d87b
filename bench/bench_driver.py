"""Driver scale: the run loop at 10^6 documents, with an engine that answers at once.

A fake engine in this process (streaming protocol, results ready on the next poll, texts of
about 150 words derived from each request) drives `controller.run` on a recipe without a
target, so everything measured is the driver's own cost: sampling and rendering, commits in
index order, duplicate checks, Parquet shards, state. The script prints

  1. the run: wall time, CPU seconds per document (the fake's own share reported apart), peak
     RSS, shards and the manifest;
  2. one measurement's read on that corpus: the sampled reader (MEASURE_ROWS rows) against
     reading every text, each in a fresh process (time, peak RSS, row groups read);
  3. resume start: a second run of the same recipe killed (SIGKILL) once half its documents
     are committed, then the time from `--resume` to the first new submission, in a fresh
     process (folder check, duplicate index load, pipeline construction), with its peak RSS.

`--profile` instead runs cProfile over one run and lists the top costs per document.

    .venv/bin/python bench/bench_driver.py [--docs 1000000] [--work DIR]
    .venv/bin/python bench/bench_driver.py --profile [--docs 100000]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.records import Request, Result  # noqa: E402

RECIPE = """
name: driver-bench
seed: 5
roots: [{root}]
grid:
  topic: {root}/topics/topics.yaml
  persona: {root}/topics/personas.yaml
  style: {root}/topics/styles.yaml
  audience: {root}/topics/audiences.yaml
templates:
  - path: {root}/prompts/topic_style_persona.j2
    weight: 2
  - path: {root}/prompts/topic_style.j2
  - path: {root}/prompts/textbook.j2
size: {{num_docs: {docs}}}
sampling: {{temperature: 0.8, top_p: 0.95, max_tokens: 256}}
engine: {{backend: ray}}
scoring: {{enabled: false}}
"""
VOCABULARY = [f"w{i:x}" for i in range(4096)]  # pseudo-words the fake's texts are made of
WORDS_PER_DOC = 150


class InstantEngine:
    """The streaming protocol with no model: every submitted request is answered on the next
    poll by ~150 pseudo-words drawn from a generator seeded by the request id (which hashes
    the request's seed and prompt), so every sample gets its own text and dedup keeps it.
    `busy_s` is the CPU time spent making texts (the fake's share, not the driver's)."""

    name = "instant"
    model = "fake"

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self.queue: list[Request] = []
        self.busy_s = 0.0
        self.beside = None

    def set_beside(self, beside) -> None:
        """Work an engine actor does on its results (duplicate keys): counted as the engine's."""
        self.beside = beside

    @property
    def in_flight(self) -> int:
        return len(self.queue)

    def submit(self, requests: Sequence[Request]) -> None:
        self.queue.extend(requests)

    def poll(self, timeout_s: float) -> list[Result]:
        batch, self.queue = self.queue, []
        return self.generate(batch)

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        started = time.process_time()
        out = []
        for r in requests:
            words = random.Random(r.id).choices(VOCABULARY, k=WORDS_PER_DOC)
            text = " ".join(w + ("." if i % 12 == 11 else "") for i, w in enumerate(words)) + "."
            out.append(Result(id=r.id, text=text, finish_reason="stop", num_prompt_tokens=len(r.prompt.split()),
                              num_tokens=WORDS_PER_DOC * 4 // 3))
        out = self.beside(out) if self.beside is not None else out
        self.busy_s += time.process_time() - started
        return out

    def close(self) -> None:
        pass


class FirstSubmission(Exception):
    """Raised by `StopAtSubmit` when the resumed run sends its first request."""


class StopAtSubmit(InstantEngine):
    def submit(self, requests: Sequence[Request]) -> None:
        raise FirstSubmission


def load_plan(work: Path, docs: int):
    from generator.recipe import load_recipe

    path = work / f"recipe-{docs}.yaml"
    path.write_text(RECIPE.format(root=ROOT, docs=docs))
    return load_recipe(path)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM where /proc has it (ru_maxrss of a process
    started from a larger one keeps that one's peak across exec), else ru_maxrss (KiB on Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_run(work: Path, docs: int) -> Path:
    """Section 1: one whole run in this process."""
    from generator.files import read_manifest
    from generator.run import controller

    plan, out, engine = load_plan(work, docs), work / "run", InstantEngine()
    rss_before = peak_rss_mb()
    started, cpu0 = time.perf_counter(), cpu_s()
    summary = controller.run(plan, out, engine, force=True)
    wall, cpu = time.perf_counter() - started, cpu_s() - cpu0
    manifest = read_manifest(out)
    print(f"## run: {docs:,} documents requested, {summary['num_docs']:,} written "
          f"({summary['duplicates']['exact']} exact + {summary['duplicates']['near']} near duplicates redrawn)")
    print(f"wall time             {wall:9.1f} s   ({docs / wall:,.0f} documents/s)")
    print(f"CPU, whole process    {cpu:9.1f} s   {1e6 * cpu / docs:7.0f} µs/document")
    print(f"CPU, fake engine      {engine.busy_s:9.1f} s   {1e6 * engine.busy_s / docs:7.0f} µs/document (texts)")
    driver = cpu - engine.busy_s
    print(f"CPU, driver           {driver:9.1f} s   {1e6 * driver / docs:7.0f} µs/document")
    print(f"peak RSS              {peak_rss_mb():9.0f} MB  (before the run: {rss_before:.0f} MB)")
    print(f"shards                {len(manifest):9d}     {sum(s['bytes'] for s in manifest) / 2**20:,.0f} MB, "
          f"{sum(s['rows'] for s in manifest):,} rows, {summary['commits']} commits")
    print("manifest (name, rows, MB, sample indices):")
    for s in manifest:
        print(f"  {s['name']}  {s['rows']:6d}  {s['bytes'] / 2**20:6.1f}  {s['first_index']}..{s['last_index']}")
    return out


def child(args: list[str]) -> dict:
    """Run this script in a fresh process; its last stdout line is JSON."""
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_in_child(how: str, out: Path) -> dict:
    """Section 2, in the fresh process: one measurement's read of the corpus."""
    import numpy as np
    import pyarrow.parquet as pq

    from generator.files import MEASURE_ROWS
    from generator.run.rounds import read_corpus

    groups = []
    original = pq.ParquetFile.read_row_groups

    def counted(self, row_groups, *a, **k):
        groups.extend(row_groups)
        return original(self, row_groups, *a, **k)

    pq.ParquetFile.read_row_groups = counted
    started = time.perf_counter()
    if how == "sampled":
        texts, _ = read_corpus(out, rng=np.random.default_rng(0), max_rows=MEASURE_ROWS)
    else:
        texts, _ = read_corpus(out)  # every text and grid column, as a measurement read before
    return {"seconds": time.perf_counter() - started, "rows": len(texts), "peak_rss_mb": peak_rss_mb(),
            "row_groups": len(groups)}


def measure_reads(out: Path) -> None:
    from generator.files import shard_paths
    import pyarrow.parquet as pq

    total_groups = sum(pq.ParquetFile(p).num_row_groups for p in shard_paths(out))
    print("\n## one measurement's read (fresh process each; text and grid columns)")
    for how in ("sampled", "full"):
        r = child(["--child-read", how, str(out)])
        groups = f"{r['row_groups']} of {total_groups} row groups" if how == "sampled" else "every row group"
        print(f"{how:8s} {r['rows']:9,d} rows  {r['seconds']:6.2f} s  peak RSS {r['peak_rss_mb']:6.0f} MB  ({groups})")


def resume_in_child(work: Path, docs: int) -> dict:
    """Section 3, in the fresh process: time from --resume to the first new submission."""
    from generator.run import controller
    from generator.run.dedup import open_deduper
    from generator.run.loop import Pipeline
    from generator.run.resume import prepare_output

    plan, out = load_plan(work, docs), work / "killed"
    started = time.perf_counter()
    state = prepare_output(out, plan, resume=True, force=False)
    prepared = time.perf_counter()
    deduper = open_deduper(plan, out)
    loaded = time.perf_counter()
    Pipeline(plan, out, InstantEngine(), deduper, shard_rows=plan.recipe.size.shard_rows)
    built = time.perf_counter()
    del deduper
    started_run = time.perf_counter()
    try:
        controller.run(plan, out, StopAtSubmit(), resume=True)
    except FirstSubmission:
        pass
    return {"prepare_s": prepared - started, "dedup_s": loaded - prepared, "pipeline_s": built - loaded,
            "first_submission_s": time.perf_counter() - started_run, "num_docs": state.counters.num_docs,
            "next_index": state.counters.next_index, "peak_rss_mb": peak_rss_mb()}


def kill_at_half(command: list[str], out: Path, docs: int) -> None:
    """Run `command`, and SIGKILL it once the run in `out` has committed half of `docs`."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    committed = 0
    while proc.poll() is None and committed < docs // 2:
        time.sleep(0.5)
        try:
            committed = json.loads((out / "state.json").read_text())["counters"]["num_docs"]
        except (OSError, ValueError, KeyError):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def measure_resume(work: Path, docs: int) -> None:
    kill_at_half([sys.executable, __file__, "--child-run", "--docs", str(docs), "--work", str(work)],
                 work / "killed", docs)
    r = child(["--child-resume", "--docs", str(docs), "--work", str(work)])
    print(f"\n## resume start (run killed with SIGKILL at {r['num_docs']:,} committed documents, "
          f"next sample {r['next_index']:,}; fresh process)")
    print(f"prepare_output (check, reconcile)   {r['prepare_s']:6.2f} s")
    print(f"open_deduper (load stored index)    {r['dedup_s']:6.2f} s")
    print(f"Pipeline construction               {r['pipeline_s']:6.2f} s")
    print(f"controller.run(resume=True) to the first new submission   {r['first_submission_s']:6.2f} s")
    print(f"peak RSS of that process            {r['peak_rss_mb']:6.0f} MB")


COSTS = {  # each stage of the run, by the (file, function) whose cumulative time it is
    "plan_samples (draw cells, render, build requests)": ("requests.py", "plan_samples"),
    "finish_result": ("documents.py", "finish_result"),
    "to_document": ("documents.py", "to_document"),
    "dedup: one search of the index per commit": ("dedup.py", "look_up"),
    "dedup: each document's check (keys made beside)": ("dedup.py", "check_keys"),
    "dedup flush (index rows to disk)": ("dedup.py", "flush"),
    "write_shard (Parquet)": ("files.py", "write_shard"),
    "save_state": ("state.py", "save_state"),
    "corpus_endings (summary)": ("summary.py", "corpus_endings"),
    "fake engine texts and keys (not the driver)": ("bench_driver.py", "generate"),
}


def profile(work: Path, docs: int) -> None:
    from generator.run import controller

    plan = load_plan(work, docs)
    profiler = cProfile.Profile()
    profiler.enable()
    controller.run(plan, work / "profiled", InstantEngine(), force=True)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
    total = sum(v[3] for (f, _, n), v in entries.items() if n == "run" and Path(f).name == "controller.py")
    print(f"## cProfile of one run, {docs:,} documents: µs per document (wall clock under the profiler, which "
          "inflates call-heavy Python code) and share of controller.run")
    print("by stage (cumulative time of the named function):")
    for label, (file, name) in COSTS.items():
        cum = sum(v[3] for (f, _, n), v in entries.items() if n == name and Path(f).name == file)
        print(f"  {label:50s} {1e6 * cum / docs:8.1f}  {cum / total:6.1%}")
    print(f"  {'controller.run, in all':50s} {1e6 * total / docs:8.1f}")
    print("top functions by own time:")
    top = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    for (f, line, name), v in top:
        where = f"{Path(f).name}:{line}" if f != "~" else "builtin"
        print(f"  {1e6 * v[2] / docs:8.1f}  {v[2] / total:6.1%}  {v[0]:9d} calls  {name} ({where})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=None, help="documents (default 10^6; 10^5 with --profile)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--profile", action="store_true", help="cProfile one run instead")
    ap.add_argument("--child-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-resume", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-read", nargs=2, metavar=("HOW", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    docs = args.docs or (100_000 if args.profile else 1_000_000)
    if args.child_read:
        print(json.dumps(read_in_child(args.child_read[0], Path(args.child_read[1]))))
        return
    if args.child_run:
        from generator.run import controller
        controller.run(load_plan(args.work, docs), args.work / "killed", InstantEngine(), force=True)
        return
    if args.child_resume:
        print(json.dumps(resume_in_child(args.work, docs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.profile:
            profile(work, docs)
            return
        out = measure_run(work, docs)
        measure_reads(out)
        measure_resume(work, docs)


if __name__ == "__main__":
    main()
