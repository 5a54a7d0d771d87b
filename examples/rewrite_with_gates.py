"""Rewrite a real corpus k times per document behind quality gates, then print its coverage.

    python examples/rewrite_with_gates.py --out runs/rewrite                 # 20 KJV passages × 2
    python examples/rewrite_with_gates.py --max-sources 100 --per-source 4   # the whole worked example

It runs `recipes/rewrite.yaml` (public-domain King James Bible passages, rewritten as FAQs,
tutorials, summaries, ...) on its own engine (the embedded SmolLM2 through vLLM on CPU), with two
of datatrove's gates added: a minimum length and Gopher's repetition filter. A rewrite a gate
rejects is replaced by another try of the same passage, so every passage still ends with its k
rewrites. `main` takes a generation backend of one's own, e.g. `main(argv, backend=my_backend)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import generator

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "rewrite.yaml"
GATES = ["quality.min_tokens=40", "quality.gopher_repetition=true", "quality.max_rejection_rate=0.8"]


def main(argv: list[str] | None = None, *, backend=None) -> generator.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="a recipe with a source: section")
    parser.add_argument("--out", type=Path, default=Path("runs/rewrite"), help="run folder")
    parser.add_argument("--max-sources", type=int, default=20, help="source documents to rewrite")
    parser.add_argument("--per-source", type=int, default=2, help="rewrites of each source document")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--no-card", action="store_true", help="skip the dataset card")
    args = parser.parse_args(argv)

    yours = {pair.split("=", 1)[0] for pair in args.set}  # a --set of a gate's key replaces the default
    gates = [pair for pair in GATES if pair.split("=", 1)[0] not in yours]
    overrides = [f"source.max_sources={args.max_sources}", f"source.per_source={args.per_source}", *gates,
                 *args.set]
    plan = generator.load_recipe(args.recipe, overrides)
    result = generator.run(plan, args.out, backend=backend, force=args.force, card=not args.no_card)
    if not result.ok:
        print(f"stopped: {result.stopped}")
        return result
    print(f"{result.num_docs} rewrites in {result.out / 'data'}")
    rejected = ", ".join(f"{gate} {n}" for gate, n in result.rejected) or "none"
    print(f"rejected by the gates and replaced: {rejected}")
    c = result.sources
    print(f"sources: {c.complete} of {c.units} with all {c.per_source} rewrites, {c.short} short, "
          f"{c.not_reached} not reached")
    if result.diversity is not None:
        print(f"D {result.diversity.score:.3f} ({result.diversity.judge}, K={result.diversity.k})")
    return result


if __name__ == "__main__":
    main()
