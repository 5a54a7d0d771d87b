"""How much does a pilot's D move with which documents it happens to draw?

A steered run picks its concentration c from pilot rounds of `pilot_docs` documents. The
judge's interval on a pilot resamples K-batches of those same documents; it says nothing of
the spread between two pilots drawn at the same c. This script measures that spread on a
finished run folder:

- per round (pilot rounds from OUT/pilot/round-NN, main rounds from OUT/data by the `round`
  column): its c, documents and D with the judge's 95% interval;
- for every set of rounds generated at one c: D of random disjoint halves, repeated. With
  n documents per half, sd(D_A - D_B) / sqrt(2) is the between-draw sd of an n-document
  sample, judge noise included; the judge's own share is taken out with the batch sd.

Usage: python bench/draw_noise.py runs/mod-free [--threshold 0.6] [--splits 20] [--num-batches 2000]
"""
from __future__ import annotations

import argparse
import glob
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from generator.judges.embedding import EmbeddingJudge
from generator.judges.protocol import score_corpus


def read_rows(folder: Path) -> list[dict]:
    files = sorted(glob.glob(str(folder / "data" / "*.parquet")))
    return [r for f in files for r in pq.read_table(f, columns=["text", "round"]).to_pylist()]


def rounds_of(run: Path) -> dict[tuple[str, int], list[str]]:
    """(phase, round) -> texts; pilot rounds whose documents were kept appear in the corpus."""
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for folder in sorted((run / "pilot").glob("round-*")):
        groups[("pilot", int(folder.name.split("-")[1]))] = [r["text"] for r in read_rows(folder)]
    for row in read_rows(run):
        groups[("corpus", int(row["round"]))].append(row["text"])
    return {key: texts for key, texts in groups.items() if texts}


def score(texts, judge, num_batches, seed):
    report = score_corpus(texts, judge, k=10, rng=np.random.default_rng(seed), num_batches=num_batches)
    return report.score, report.ci_low, report.ci_high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--num-batches", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    log = [json.loads(line) for line in open(args.run / "controller.jsonl")]
    c_of = {r["round"]: round(r["concentration"], 3) for r in log}
    judge = EmbeddingJudge(args.threshold)
    groups = rounds_of(args.run)
    out = {"run": str(args.run), "rounds": [], "halves": []}
    print(f"{'round':>12} {'c':>6} {'docs':>5}  D [95%]")
    by_c: dict[float, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for (phase, r), texts in sorted(groups.items(), key=lambda kv: kv[0][1]):
        d, lo, hi = score(texts, judge, args.num_batches, seed=r)
        print(f"{phase:>6} {r:>5} {c_of.get(r, float('nan')):>6} {len(texts):>5}  {d:.3f} [{lo:.3f}, {hi:.3f}]")
        out["rounds"].append(dict(phase=phase, round=r, c=c_of.get(r), docs=len(texts), d=d, ci=[lo, hi]))
        fresh = [t for t in texts if t not in seen]
        seen.update(fresh)
        by_c[c_of.get(r)].extend(fresh)
    rng = np.random.default_rng(0)
    print("\nrandom disjoint halves of the documents generated at one c:")
    for c, texts in sorted(by_c.items()):
        if len(texts) < 100:
            continue
        half = len(texts) // 2
        diffs, halves = [], []
        for s in range(args.splits):
            order = rng.permutation(len(texts))
            a = score([texts[i] for i in order[:half]], judge, args.num_batches, seed=1000 + 2 * s)
            b = score([texts[i] for i in order[half:2 * half]], judge, args.num_batches, seed=1001 + 2 * s)
            diffs.append(a[0] - b[0])
            halves += [a, b]
        judge_sd = float(np.mean([(h[2] - h[1]) / (2 * 1.96) for h in halves]))
        total_sd = float(np.std(diffs, ddof=1) / np.sqrt(2))
        draw_sd = float(np.sqrt(max(total_sd ** 2 - judge_sd ** 2, 0.0)))
        print(f"c={c}: {len(texts)} docs, halves of {half}: sd of a half's D {total_sd:.3f} "
              f"(judge {judge_sd:.3f}, draw {draw_sd:.3f}); mean D {np.mean([h[0] for h in halves]):.3f}")
        out["halves"].append(dict(c=c, docs=len(texts), half=half, sd=total_sd, judge_sd=judge_sd, draw_sd=draw_sd,
                                  splits=args.splits))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
