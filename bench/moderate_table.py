"""The "Moderate diversity, minimal shift" tables of BENCHMARKS.md from finished run folders:
one row per run (reference D, target, achieved D with its interval, absolute and relative,
shift against the bound, the binding constraint, rounds, calibration cost), then each run's
rounds from its controller.jsonl.

    .venv/bin/python bench/moderate_table.py runs/moderate-free runs/moderate runs/moderate-ungrounded
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    s = json.loads((run / "summary.json").read_text())
    ref, t, a, r, c = s["reference"], s["target"], s.get("achieved") or {}, s["rounds"], s["cost"]
    achieved = (f"{a['score']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] = {a['relative']:.2f}× "
                f"[{a['relative_ci_low']:.2f}, {a['relative_ci_high']:.2f}]" if a else f"stopped: {s['stopped']}")
    bound = t.get("max_shift")
    shift = f"{a['shift']:.4f}" + (f" (≤ {bound:g}: {a['within_shift_bound']})" if bound else "") if a else "—"
    return (f"| {run.name} | {ref['score']:.3f} [{ref['ci_low']:.3f}, {ref['ci_high']:.3f}] | {t['relative']}× = "
            f"{t['score']:.3f} ± {t['tolerance']} | {achieved} | {shift} | {bound or 'none'} | "
            f"{s.get('binding', '')} | {r['pilot']} + {r['main']} | {c['calibration_ratio']:.1%} | {s['num_docs']} |")


def rounds(run: Path) -> list[str]:
    lines = [f"\n{run.name}:\n", "| round | phase | c | D [95%] | MMD² | action |", "|---|---|---|---|---|---|"]
    for line in (run / "controller.jsonl").read_text().splitlines():
        x = json.loads(line)
        phase = x["phase"] + (f" ({x['docs']} docs)" if x["phase"] == "main" else "")
        lines.append(f"| {x['round']} | {phase} | {x['concentration']:.3f} | {x['score']:.2f} "
                     f"[{x['ci_low']:.2f}, {x['ci_high']:.2f}] | {x.get('shift', float('nan')):.4f} | {x['action']} |")
    return lines


if __name__ == "__main__":
    print("| run | reference D [95%] | target | achieved D [95%] | MMD² from reference | max_shift | binds | "
          "pilot + main rounds | calibration cost | docs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
    for arg in sys.argv[1:]:
        print("\n".join(rounds(Path(arg))))
