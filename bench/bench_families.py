"""The seed paper's prompt-family table on the embedded model: for each recipe, D with its 95%
interval (embedding judge, as `generator score`), on-topic fidelity overall and per template,
style-format share where checkable, and the main proxies.

    nice -n 10 .venv/bin/python bench/bench_families.py --docs 60 --out runs/families
    nice -n 10 .venv/bin/python bench/bench_families.py --out runs/families --score-only   # re-score
    ... --recipes recipes/paper/grid-t10-g10.yaml recipes/quickstart.yaml     # other recipes

Runs go to OUT/<recipe stem>; an existing run is re-scored, not regenerated, unless --force.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
FAMILIES = [ROOT / "recipes" / "paper" / f"{name}.yaml"
            for name in ("topic", "topic_style", "topic_style_persona", "multitopic_style_persona")]
PROXIES = ("distinct_2", "vendi", "mean_cosine_distance", "self_repetition")


def grid_topics(plan) -> list[str]:
    return [v.value for v in plan.grid.axes["topic"].values]


def generate(plan, out: Path, backend) -> None:
    from generator import controller

    controller.run(plan, out, backend)


def measure(plan, out: Path, *, num_batches: int, seed: int) -> dict:
    from generator.embeddings import embed_texts
    from generator.fidelity import measure_fidelity, plot_fidelity
    from generator.scoring import load_corpus, score_texts

    texts, metadata = load_corpus(out / "data")
    report = score_texts(texts, metadata, judge="embed", k=10, seed=seed, num_batches=num_batches)
    fidelity = measure_fidelity(texts, metadata, grid_topics(plan), embed=embed_texts,
                                doc_vectors=embed_texts(texts))
    plot_fidelity(fidelity, out / "fidelity.png")
    (out / "fidelity.json").write_text(json.dumps(fidelity.to_dict(), indent=1, default=str))
    return {"docs": len(texts), "score": report["score"], "half_width": report["half_width"],
            "fidelity": fidelity, "proxies": report.get("proxies", {}),
            "finish_stop": sum(m == "stop" for m in metadata.get("finish_reason", [])) / len(texts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", type=Path, nargs="+", default=FAMILIES)
    ap.add_argument("--docs", type=int, default=200, help="documents per recipe (the recipes say 200)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "families")
    ap.add_argument("--num-batches", type=int, default=1000, help="K-batches judged per score")
    ap.add_argument("--score-only", action="store_true", help="never generate; score existing runs")
    ap.add_argument("--force", action="store_true", help="regenerate runs that exist")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from generator.backends import open_backend
    from generator.recipe import load_recipe

    backend = None
    rows = []
    for path in args.recipes:
        plan = load_recipe(path, [f"size.num_docs={args.docs}"])
        out = args.out / path.stem
        if not (out / "summary.json").exists() or args.force:
            if args.score_only:
                raise SystemExit(f"{out}: no run to score (drop --score-only)")
            shutil.rmtree(out, ignore_errors=True)
            backend = backend or open_backend("vllm", plan.recipe.model, max_model_len=1024)
            generate(plan, out, backend)
        rows.append((path.stem, measure(plan, out, num_batches=args.num_batches, seed=plan.recipe.seed)))
    if backend is not None:
        backend.close()
    print_table(rows)


def print_table(rows) -> None:
    print(f"| recipe | docs | D ± 95% | on-topic | style format | ended at EOS | "
          + " | ".join(PROXIES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(PROXIES))
    for name, m in rows:
        f = m["fidelity"]
        style = f"{f.style_share:.2f} (n={f.num_style_docs})" if f.style_share is not None else "–"
        proxies = " | ".join(f"{m['proxies'].get(p, float('nan')):.3f}" for p in PROXIES)
        print(f"| {name} | {m['docs']} | {m['score']:.2f} ± {m['half_width']:.2f} | {f.topic_share:.2f} | "
              f"{style} | {m['finish_stop']:.2f} | {proxies} |")
    print("\non-topic share per template / style:")
    for name, m in rows:
        for g in m["fidelity"].groups:
            if g.column in ("template", "style"):
                extra = f", style format {g.style_share:.2f}" if g.style_share is not None else ""
                print(f"  {name}: {g.column}={g.value}: {g.topic_share:.2f} (n={g.num_docs}){extra}")


if __name__ == "__main__":
    main()
