"""Judge calls needed for a given precision, against fixed budgets.

On the 200 documents SmolLM2-135M wrote for the quickstart recipe (tests/data/judge/), with the
embedding judge (one call = one K-batch; the LLM cluster-agent spends two calls per batch,
clustering + verification): the 95% half-width of D at fixed N, and the batches sequential
stopping needed to reach each precision, over several seeds.

    .venv/bin/python bench/bench_judge.py [--seeds 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    from generator.judges.protocol import score_corpus
    from generator.judges.embedding import EmbeddingJudge

    rows = [json.loads(l) for l in (ROOT / "tests/data/judge/generated_quickstart.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    judge = EmbeddingJudge()
    t0 = time.perf_counter()
    judge.embed(texts)
    print(f"{len(texts)} documents embedded in {time.perf_counter() - t0:.1f} s; judge {judge.name}, K=10\n")
    print(f"{'fixed N':>8} {'D (mean over seeds)':>20} {'half-width':>11}")
    for n in (100, 200, 1000, 5000):
        reps = [score_corpus(texts, judge, k=10, rng=np.random.default_rng(s), num_batches=n)
                for s in range(args.seeds)]
        print(f"{n:8d} {statistics.mean(r.score for r in reps):20.3f} {statistics.mean(r.half_width for r in reps):11.3f}")
    print(f"\n{'precision':>9} {'batches needed (per seed)':>40} {'mean':>7} {'LLM calls':>10}")
    for p in (0.2, 0.1, 0.05):
        reps = [score_corpus(texts, judge, k=10, rng=np.random.default_rng(s), precision=p, num_batches=50_000,
                             min_batches=20, chunk_size=10) for s in range(args.seeds)]
        assert all(r.stop_reason == "precision" for r in reps)
        needed = [r.num_scored for r in reps]
        print(f"{p:9.2f} {str(needed):>40} {statistics.mean(needed):7.0f} {2 * statistics.mean(needed):10.0f}")


if __name__ == "__main__":
    main()
