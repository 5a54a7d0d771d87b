"""Steer a grid corpus to a target diversity with the Python API, then print where it landed.

    python examples/steered_grid.py --out runs/steered              # recipes/target-moderate.yaml, D = 1.4
    python examples/steered_grid.py --target 2.0 --set size.num_docs=200

It runs the recipe on its own engine (the embedded SmolLM2 through vLLM on CPU). `main` takes
a generation backend and a target judge of one's own, e.g. `main(argv, backend=my_backend)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import generator

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "target-moderate.yaml"


class ShowProgress:
    """One line per stage and per pilot round, instead of a line per document."""

    def __init__(self):
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, p: generator.Progress) -> None:
        if (p.stage, p.round) not in self.seen:
            self.seen.add((p.stage, p.round))
            print(f"{p.stage}" + (f" round {p.round}" if p.stage == "pilot" else "") + (
                f" ({p.total} documents)" if p.total else ""), flush=True)


def main(argv: list[str] | None = None, *, backend=None, judge=None) -> generator.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="a recipe with a target: section")
    parser.add_argument("--out", type=Path, default=Path("runs/steered-grid"), help="run folder")
    parser.add_argument("--target", type=float, default=None, help="target D (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--no-card", action="store_true", help="skip the dataset card")
    args = parser.parse_args(argv)

    overrides = [*args.set, *([f"target.score={args.target}"] if args.target is not None else [])]
    plan = generator.load_recipe(args.recipe, overrides)
    result = generator.run(plan, args.out, backend=backend, judge=judge, force=args.force,
                           card=not args.no_card, on_progress=ShowProgress())
    if not result.ok:
        print(f"stopped: {result.stopped}")
        return result
    print(f"{result.num_docs} documents in {result.out / 'data'}")
    t = result.target
    if t is not None:
        verdict = "within" if t.within_tolerance else "outside"
        print(f"target D {t.score:g} ± {t.tolerance:g}: achieved {t.achieved:.3f} "
              f"[{t.ci_low:.3f}, {t.ci_high:.3f}], "
              f"{verdict} tolerance after {t.pilot_rounds} pilot and {t.main_rounds} main rounds")
    if result.diversity is not None:
        print(f"end-of-run D {result.diversity.score:.3f} ({result.diversity.judge}, K={result.diversity.k})")
    return result


if __name__ == "__main__":
    main()
