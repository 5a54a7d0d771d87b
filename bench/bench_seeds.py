"""Does steering land, seed after seed? The simulated steered run of bench_cluster.py, many seeds.

For each recipe seed (`--base-seed` + i) `controller.run` steers bench_cluster.py's recipe to
`--target` (tolerance 0.3, four main rounds) with an engine in this process that answers every
request on the next poll (capacity about eight simulated engines') with the prompt's first line
(topic and style) followed by pseudo-words. The judge clusters a K-batch by the texts' first
lines, so D follows the grid weights and carries the draw noise of which documents were sampled,
and puts each document alone with probability `--split` (an LLM judge's noise; its own rng per
run). Each finished corpus is then scored again by `score_corpus` on `--batches` fresh K-batches
with a fresh judge; a seed lands when that D is within target ± tolerance. Prints one markdown
row per seed and the count landed. Every run stays under `--work` (controller.jsonl, summary.json).

    .venv/bin/python bench/bench_seeds.py [--seeds 20] [--docs 20000] [--target 8.0] [--split 0.05]
                                          [--batches 1000] [--base-seed 20261121] [--work /tmp/bench_seeds]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_cluster import recipe_text  # noqa: E402
from bench_driver import InstantEngine  # noqa: E402
from generator.judges.protocol import BatchClustering, score_corpus  # noqa: E402

CAPACITY = 9000  # about eight simulated engines' in-flight requests


class KeyedEngine(InstantEngine):
    """InstantEngine whose every text starts with its prompt's first line (what the judge keys on)."""

    name = "keyed-instant"

    def generate(self, requests):
        return [dataclasses.replace(result, text=request.prompt.split("\n", 1)[0] + "\n" + result.text)
                for request, result in zip(requests, super().generate(requests))]


class FirstLineJudge:
    """Clusters each batch by its texts' first lines; each document goes alone with probability
    `split`, drawn from `rng` (one stream per judge, so per run)."""

    name = "first-line-split"

    def __init__(self, split: float, rng: np.random.Generator):
        self.split, self.rng = split, rng

    def cluster(self, batches):
        out = []
        for batch in batches:
            alone = self.rng.random(len(batch)) < self.split
            groups: dict = {}
            for i, text in enumerate(batch):
                groups.setdefault(f"alone {i}" if alone[i] else text.split("\n", 1)[0], []).append(i)
            out.append(BatchClustering(clusters=tuple(tuple(g) for g in groups.values()), calls=1))
        return out


def load_plan(work: Path, seed: int, args):
    from generator.recipe import load_recipe
    body = recipe_text(args.docs, 1024, seed=seed, target=args.target, tolerance=args.tolerance)
    path = work / f"recipe-{seed}.yaml"
    path.write_text(body)
    return load_recipe(path)


def run_seed(work: Path, seed: int, args) -> dict:
    """One steered run and the independent re-score of its corpus: a table row."""
    from generator.run import controller
    from generator.run.rounds import read_corpus

    out = work / f"seed-{seed}"
    started = time.perf_counter()
    judge = FirstLineJudge(args.split, np.random.default_rng([seed, 0]))
    summary = controller.run(load_plan(work, seed, args), out, KeyedEngine(CAPACITY), force=True, judge=judge)
    texts, _ = read_corpus(out)
    report = score_corpus(texts, FirstLineJudge(args.split, np.random.default_rng([seed, 1])), k=10,
                          rng=np.random.default_rng([seed, 2]), num_batches=args.batches)
    rounds, cost = summary["rounds"], summary["cost"]
    return {"seed": seed, "sweeps": rounds["pilot"], "points": rounds["pilot_points"], "main": rounds["main"],
            "c": summary["final_concentration"], "achieved": summary["achieved"]["score"],
            "rescored": report.score, "low": report.ci_low, "high": report.ci_high,
            "landed": abs(report.score - args.target) <= args.tolerance,
            "calibration": cost["calibration_ratio"], "discarded": cost["discarded_pilot_docs"],
            "docs": summary["num_docs"], "wall_s": time.perf_counter() - started}


def print_row(r: dict) -> None:
    print(f"| {r['seed']} | {r['sweeps']} | {r['points']} | {r['main']} | {r['c']:.3f} | {r['achieved']:.2f} | "
          f"{r['rescored']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | {'yes' if r['landed'] else '**no**'} | "
          f"{r['calibration']:.1%} | {r['discarded']} / {r['docs']} | {r['wall_s']:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="runs, recipe seeds base-seed + i")
    ap.add_argument("--base-seed", type=int, default=20261121)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--target", type=float, default=8.0)
    ap.add_argument("--tolerance", type=float, default=0.3)
    ap.add_argument("--split", type=float, default=0.05, help="share of documents the judge puts alone at random")
    ap.add_argument("--batches", type=int, default=1000, help="K-batches of the independent re-score")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_seeds"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    print(f"{args.seeds} seeds from {args.base_seed}, {args.docs} documents, target {args.target} ± "
          f"{args.tolerance}, judge split {args.split}, re-score on {args.batches} batches; "
          f"load average {os.getloadavg()[0]:.1f}\n", flush=True)
    print("| seed | sweeps | pilot points | main rounds | final c | achieved D | re-scored D [95%] | landed "
          "| calibration ratio | discarded pilot / corpus docs | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    started = time.perf_counter()
    rows = []
    for i in range(args.seeds):
        rows.append(run_seed(args.work, args.base_seed + i, args))
        print_row(rows[-1])
    landed = sum(r["landed"] for r in rows)
    print(f"\nlanded within {args.target} ± {args.tolerance}: {landed} of {len(rows)} "
          f"(failing seeds: {[r['seed'] for r in rows if not r['landed']] or 'none'})")
    print(f"wall time {time.perf_counter() - started:.0f} s; load average at the end {os.getloadavg()[0]:.1f}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
