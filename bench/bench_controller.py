"""Calibration cost of steering to a target, at scale, with the fake backend.

The fake answers with the prompt's first line (the topic), so a judge that groups documents by
topic scores a known function of the sampling distribution. For each corpus size and target the
script runs the whole controller (pilot rounds, main rounds, final re-measure) and prints the
calibration cost: tokens of discarded pilot rounds plus judge tokens, over corpus tokens.
Goal: <= 10% for corpora of 10k documents or more.

    .venv/bin/python bench/bench_controller.py [--sizes 2000 10000 50000] [--targets 1.5 3.0 6.0]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

RECIPE = """
name: bench-steer
seed: 5
roots: [{root}, {tmp}]
grid:
  topic: {root}/topics/topics.yaml
  persona: {root}/topics/personas.yaml
templates:
  - path: {tmp}/echo.j2
size: {{num_docs: {n}, shard_rows: 500}}
sampling: {{max_tokens: 300}}
target: {{score: {score}, tolerance: 0.15}}
dedup: {{near: false}}
scoring: {{enabled: false}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000])
    ap.add_argument("--targets", type=float, nargs="+", default=[1.5, 3.0, 6.0])
    args = ap.parse_args()

    from fakes import EchoBackend, KeyJudge
    from generator.run import controller
    from generator.recipe import load_recipe

    class LongEcho(EchoBackend):
        """Echo with a realistic length: 300 completion tokens per document."""
        def generate(self, requests):
            from generator.records import Result
            return [Result(id=r.id, text=r.text, finish_reason="stop", num_prompt_tokens=120, num_tokens=300)
                    for r in super().generate(requests)]

    print(f"{'docs':>7} {'target':>6} {'achieved':>9} {'pilots':>6} {'main':>4} {'pilot docs':>10} "
          f"{'discarded tok':>13} {'corpus tok':>11} {'calibration':>11} {'wall s':>7}")
    for n in args.sizes:
        for score in args.targets:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "echo.j2").write_text("{# variables: [topic, persona] #}{{ topic }}\n{{ persona }}")
                recipe = Path(tmp) / "r.yaml"
                recipe.write_text(RECIPE.format(root=ROOT, tmp=tmp, n=n, score=score))
                t0 = time.perf_counter()
                s = controller.run(load_recipe(recipe), Path(tmp) / "run", LongEcho(),
                                   judge=KeyJudge(lambda t: t.splitlines()[0], name="topic"))
                c = s["cost"]
                print(f"{n:7d} {score:6.2f} {s['achieved']['score']:9.3f} {s['rounds']['pilot']:6d} "
                      f"{s['rounds']['main']:4d} {c['pilot_tokens'] // 420:10d} {c['discarded_pilot_tokens']:13d} "
                      f"{c['corpus_tokens']:11d} {c['calibration_ratio']:11.2%} {time.perf_counter() - t0:7.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
