"""Score two (or more) corpora on one ruler with the Python API and compare them.

    python examples/score_corpora.py                                  # the two bundled KJV corpora
    python examples/score_corpora.py a.jsonl runs/quickstart --k 10 --num-batches 300

A corpus is a Parquet file or folder, a JSONL file, a saved Hugging Face dataset or a run folder.
Every corpus is judged by one judge at one K and seed, so their D values compare. The default
judge is the embedding judge (all-MiniLM-L6-v2, offline); `main(argv, judge=...)` takes any
object with `cluster(batches)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import generator

DATA = Path(__file__).resolve().parents[1] / "recipes" / "data" / "kjv"


def main(argv: list[str] | None = None, *, judge=None) -> tuple[generator.DiversityReport, ...]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="*", default=[DATA / "reference.jsonl", DATA / "seeds.jsonl"])
    parser.add_argument("--k", type=int, default=10, help="documents per judged batch")
    parser.add_argument("--num-batches", type=int, default=200, help="most batches per corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-field", default="text")
    args = parser.parse_args(argv)

    ruler = generator.Ruler(judge="embed", k=args.k, num_batches=args.num_batches, seed=args.seed)
    reports = generator.compare(args.corpora, ruler=ruler, judge=judge, text_field=args.text_field,
                                proxies=False)
    width = max(len(r.corpus) for r in reports)
    print(f"judge {reports[0].judge}, K={reports[0].k}")
    for r in sorted(reports, key=lambda r: r.score, reverse=True):
        interval = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else "(one batch)"
        print(f"{r.corpus:<{width}}  {r.num_docs:>6} docs  D = {r.score:.3f} {interval}")
    return reports


if __name__ == "__main__":
    main()
