"""Steering on the real stack at small scale: SmolLM2-135M (vLLM CPU build in a Ray actor),
embedding judge. For each target: requested vs achieved score (re-measured on the final corpus),
its interval, rounds and calibration cost.

    .venv/bin/python bench/bench_targets_real.py [--targets 0.6 1.2 2.0] [--docs 100]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.6, 1.2, 2.0])
    ap.add_argument("--docs", type=int, default=100)
    args = ap.parse_args()
    from conftest import write_recipe
    from test_controller_engine import TARGETED
    from generator.run import controller
    from generator.backends import open_backend
    from generator.recipe import load_recipe

    backend = open_backend("ray", "embedded:smollm2-135m", num_replicas=1, max_model_len=1024)
    print(f"{'target':>6} {'achieved':>9} {'95% interval':>16} {'in tol':>6} {'pilots':>6} {'main':>4} "
          f"{'final c':>7} {'pilot tok':>9} {'discarded':>9} {'corpus tok':>10} {'calibration':>11}")
    for score in args.targets:
        with tempfile.TemporaryDirectory() as tmp:
            body = TARGETED.replace("@SCORE@", str(score)).replace("num_docs: 100", f"num_docs: {args.docs}")
            s = controller.run(load_recipe(write_recipe(Path(tmp), body)), Path(tmp) / "run", backend)
            a, c = s["achieved"], s["cost"]
            print(f"{score:6.2f} {a['score']:9.3f} [{a['ci_low']:6.3f}, {a['ci_high']:6.3f}] "
                  f"{str(a['within_tolerance']):>6} {s['rounds']['pilot']:6d} {s['rounds']['main']:4d} "
                  f"{s['final_concentration']:7.3f} {c['pilot_tokens']:9d} {c['discarded_pilot_tokens']:9d} "
                  f"{c['corpus_tokens']:10d} {c['calibration_ratio']:11.1%}", flush=True)
    backend.close()


if __name__ == "__main__":
    main()
