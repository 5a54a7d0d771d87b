"""Driver cost of a rewrite run: a synthetic Parquet source of N rows, each rewritten `per_source`
times by the instant fake engine of bench_driver.py (answers on the next poll), so everything
measured is the driver's: counting the source when the recipe loads, reading it window by window,
rendering, committing, writing shards. The script prints

  1. loading: the recipe's one streaming pass over the source (seconds, peak RSS);
  2. the run: wall time, CPU µs per document (the fake engine's share apart), peak RSS, before and
     after (the driver's memory must not grow with the source);
  3. resume start: a second run killed (SIGKILL) once half its documents are committed, then, in a
     fresh process, the time from loading the recipe to the resumed run's first submission.

    .venv/bin/python bench/bench_source.py [--rows 100000] [--per-source 1] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_driver import (FirstSubmission, InstantEngine, StopAtSubmit, cpu_s, kill_at_half,  # noqa: E402
                          peak_rss_mb)

RECIPE = """
name: source-bench
seed: 5
roots: [{root}, {work}]
source: {{path: {work}/source, id_field: id, per_source: {per_source}}}
grid:
  audience: {root}/topics/audiences.yaml
templates:
  - path: {root}/prompts/rewrite/rewrite_summary.j2
  - path: {root}/prompts/rewrite/rewrite_textbook.j2
  - path: {root}/prompts/rewrite/rewrite_faq.j2
sampling: {{temperature: 0.8, top_p: 0.95, max_tokens: 256}}
engine: {{backend: ray}}
scoring: {{enabled: false}}
"""
WORDS = [f"s{i:x}" for i in range(8192)]
ROWS_PER_FILE = 250_000


def write_source(work: Path, rows: int) -> None:
    """`rows` documents of about 100 words in Parquet files of ROWS_PER_FILE rows, written in batches."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = work / "source"
    if (folder / "rows.txt").is_file() and (folder / "rows.txt").read_text() == str(rows):
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for f, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        with pq.ParquetWriter(folder / f"part-{f:04d}.parquet", pa.schema([("id", pa.string()),
                                                                            ("text", pa.string())])) as w:
            for lo in range(start, min(start + ROWS_PER_FILE, rows), 50_000):
                n = min(50_000, rows - lo, start + ROWS_PER_FILE - lo)
                picks = rng.integers(0, len(WORDS), size=(n, 100))
                texts = [" ".join(WORDS[j] for j in row) + "." for row in picks]
                w.write_table(pa.table({"id": [f"doc{lo + i}" for i in range(n)], "text": texts}),
                              row_group_size=10_000)
    (folder / "rows.txt").write_text(str(rows))


def load_plan(work: Path, per_source: int):
    from generator.recipe import load_recipe

    path = work / "recipe.yaml"
    path.write_text(RECIPE.format(root=ROOT, work=work, per_source=per_source))
    return load_recipe(path)


def measure_run(work: Path, per_source: int) -> None:
    from generator.run import controller

    rss0, started = peak_rss_mb(), time.perf_counter()
    plan = load_plan(work, per_source)
    loaded, rss_loaded = time.perf_counter() - started, peak_rss_mb()
    docs = plan.recipe.size.num_docs
    print(f"## load: {plan.source.num_rows:,} rows, {plan.source.num_units:,} units, "
          f"{docs:,} documents to make")
    print(f"load_recipe (one pass over the source)  {loaded:7.2f} s   peak RSS {rss_loaded:6.0f} MB "
          f"(before: {rss0:.0f} MB)")
    engine = InstantEngine()
    started, cpu0 = time.perf_counter(), cpu_s()
    summary = controller.run(plan, work / "run", engine, force=True)
    wall, cpu = time.perf_counter() - started, cpu_s() - cpu0
    driver = cpu - engine.busy_s
    print(f"\n## run: {summary['num_docs']:,} documents, sources complete {summary['sources']['complete']:,} "
          f"of {summary['sources']['units']:,}")
    print(f"wall time          {wall:9.1f} s   ({docs / wall:,.0f} documents/s)")
    print(f"CPU, whole process {cpu:9.1f} s   {1e6 * cpu / docs:7.0f} µs/document")
    fake = 1e6 * engine.busy_s / docs
    print(f"CPU, fake engine   {engine.busy_s:9.1f} s   {fake:7.0f} µs/document (texts)")
    print(f"CPU, driver        {driver:9.1f} s   {1e6 * driver / docs:7.0f} µs/document")
    print(f"peak RSS           {peak_rss_mb():9.0f} MB  (after loading: {rss_loaded:.0f} MB)")


def run_child(work: Path, per_source: int) -> None:
    from generator.run import controller
    controller.run(load_plan(work, per_source), work / "killed", InstantEngine(), force=True)


def resume_child(work: Path, per_source: int) -> dict:
    from generator.run import controller

    started = time.perf_counter()
    plan = load_plan(work, per_source)
    loaded = time.perf_counter()
    try:
        controller.run(plan, work / "killed", StopAtSubmit(), resume=True)
    except FirstSubmission:
        pass
    state = json.loads((work / "killed" / "state.json").read_text())["counters"]
    return {"load_s": loaded - started, "first_submission_s": time.perf_counter() - loaded,
            "num_docs": state["num_docs"], "peak_rss_mb": peak_rss_mb()}


def measure_resume(work: Path, per_source: int, docs: int) -> None:
    args = ["--rows", "0", "--per-source", str(per_source), "--work", str(work)]
    kill_at_half([sys.executable, __file__, "--child-run", *args], work / "killed", docs)
    done = subprocess.run([sys.executable, __file__, "--child-resume", *args], check=True,
                          capture_output=True, text=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n## resume start (killed with SIGKILL at {r['num_docs']:,} committed documents; fresh process)")
    print(f"load_recipe (counts the source)                      {r['load_s']:6.2f} s")
    print(f"controller.run(resume=True) to the first submission  {r['first_submission_s']:6.2f} s")
    print(f"peak RSS of that process                             {r['peak_rss_mb']:6.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-source", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-resume", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-source-"))
    if a.child_run:
        return run_child(work, a.per_source)
    if a.child_resume:
        return print(json.dumps(resume_child(work, a.per_source)))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_source(work, a.rows)
    took = time.perf_counter() - started
    print(f"# source: {a.rows:,} rows in {work / 'source'} (written in {took:.0f} s)\n")
    measure_run(work, a.per_source)
    measure_resume(work, a.per_source, a.rows * a.per_source)


if __name__ == "__main__":
    main()
