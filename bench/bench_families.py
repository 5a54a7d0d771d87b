"""The seed paper's prompt-family table on the embedded model: for each recipe, D with its 95%
interval (embedding judge, as `generator score`), on-topic fidelity overall and per template,
style-format share where checkable, and the main proxies.

    nice -n 10 .venv/bin/python bench/bench_families.py --docs 60 --out runs/families
    nice -n 10 .venv/bin/python bench/bench_families.py --out runs/families --score-only   # re-score
    ... --recipes recipes/paper/grid-t10-g10.yaml recipes/quickstart.yaml     # other recipes

    ... --set sampling.temperature=0.7          # any recipe override, for every recipe
    ... --fit-rule    # agreement of the on-topic rule with hand labels (tests/data/fidelity)
    ... --grids --out runs/grids   # the topic-count x generations-per-topic grid (recipes/paper/grid-*)

--grids generates grid-t{10,20,40}-g30 only: the g10 and g20 recipes draw the same samples (sample
i depends on the seed, i and the weights only, and no recipe here steers), so their corpora are
the first 10·t and 20·t documents of the g30 run. Each document's request id is checked against
what the smaller recipe itself would draw before it is measured.

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
    from generator.run import controller

    controller.run(plan, out, backend)


def measure(plan, out: Path, *, num_batches: int, seed: int, texts=None, metadata=None) -> dict:
    """Score the run in `out` (or the given texts), writing fidelity and diversity files there."""
    from generator.judges import open_judge
    from generator.measure.embeddings import embed_texts
    from generator.measure.fidelity import measure_fidelity, plot_fidelity
    from generator.measure.report import score_texts
    from generator.readers import load_corpus

    if texts is None:
        texts, metadata = load_corpus(out / "data")
    out.mkdir(parents=True, exist_ok=True)
    report = score_texts(texts, metadata, judge=open_judge("embed"), k=10, seed=seed, num_batches=num_batches)
    fidelity = measure_fidelity(texts, metadata, grid_topics(plan), embed=embed_texts,
                                doc_vectors=embed_texts(texts))
    plot_fidelity(fidelity, out / "fidelity.png")
    (out / "fidelity.json").write_text(json.dumps(fidelity.to_dict(), indent=1, default=str))
    (out / "diversity.json").write_text(json.dumps(report, indent=1, default=str))
    return {"docs": len(texts), "score": report["score"], "half_width": report["half_width"],
            "fidelity": fidelity, "proxies": report.get("proxies", {}),
            "finish_stop": sum(m == "stop" for m in metadata.get("finish_reason", [])) / len(texts)}


GRID_T, GRID_G = (10, 20, 40), (10, 20, 30)


def grid_prefix(plan, out: Path) -> tuple[list[str], dict]:
    """The first size.num_docs documents (by sample index) of the run in `out`, after checking
    that each is the request `plan` itself draws at that index."""
    import pyarrow.parquet as pq

    from generator.sampling.requests import plan_samples

    table = pq.read_table(sorted((out / "data").glob("*.parquet"))).sort_by("sample_index")
    table = table.slice(0, plan.recipe.size.num_docs)
    if table.num_rows < plan.recipe.size.num_docs:
        raise SystemExit(f"{out}: {table.num_rows} documents, {plan.recipe.name} needs {plan.recipe.size.num_docs}")
    for index, doc_id in zip(table.column("sample_index").to_pylist(), table.column("id").to_pylist()):
        if plan_samples(plan, index, 1)[0].request.id != doc_id:
            raise SystemExit(f"{out}: sample {index} is not the request {plan.recipe.name} draws there")
    metadata = {c: ["" if v is None else v for v in table.column(c).to_pylist()]
                for c in ("template", "topic", "style", "persona", "domain", "finish_reason")}
    return table.column("text").to_pylist(), metadata


def run_grids(args) -> None:
    """Generate grid-t*-g30, measure every (t, g) recipe on its prefix, print the grid table."""
    from generator.backends import open_backend
    from generator.recipe import load_recipe

    backend, rows = None, []
    for t in args.grid_t:
        full = load_recipe(ROOT / "recipes" / "paper" / f"grid-t{t}-g{max(GRID_G)}.yaml", ["engine.backend=vllm", *args.overrides])
        out = args.out / f"t{t}"
        if not (out / "summary.json").exists() or args.force:
            shutil.rmtree(out, ignore_errors=True)
            backend = backend or open_backend("vllm", full.recipe.model, max_model_len=1024)
            generate(full, out, backend)
        for g in GRID_G:
            plan = load_recipe(ROOT / "recipes" / "paper" / f"grid-t{t}-g{g}.yaml", ["engine.backend=vllm", *args.overrides])
            texts, metadata = grid_prefix(plan, out)
            m = measure(plan, out / f"g{g}", num_batches=args.num_batches, seed=plan.recipe.seed,
                        texts=texts, metadata=metadata)
            rows.append((f"t{t}-g{g}", m))
    if backend is not None:
        backend.close()
    print_table(rows)


def fit_rule() -> None:
    """Agreement of (rank <= r and cosine >= c) with hand labels of 60 quickstart documents."""
    import numpy as np
    import yaml

    from generator.measure.embeddings import embed_texts
    from generator.measure.fidelity import topic_ranks

    data = ROOT / "tests" / "data"
    grid = yaml.safe_load((ROOT / "topics" / "topics.yaml").read_text())
    topics = [t if isinstance(t, str) else t["value"] for d in grid["domains"] for t in d["topics"]]
    docs = [json.loads(line) for line in (data / "judge" / "generated_quickstart.jsonl").open()]
    labels = [json.loads(line) for line in (data / "fidelity" / "labels_quickstart.jsonl").open()]
    truth = np.array([lab["on_topic"] for lab in labels])
    vectors, topic_vectors = embed_texts([docs[lab["line"] - 1]["text"] for lab in labels]), embed_texts(topics)
    own = [topics.index(lab["topic"]) for lab in labels]
    ranks, cosines = topic_ranks(vectors, topic_vectors, own), (vectors * topic_vectors[own]).sum(axis=1)
    print(f"{len(labels)} labelled documents, {truth.sum()} on topic; {len(topics)} grid topics")
    print("| top r | min cosine | agreement | on-topic kept | off-topic caught |\n|---|---|---|---|---|")
    for r in (1, 3, 5, 10, 523):
        for c in (0.0, 0.3, 0.4, 0.45, 0.5):
            on = (ranks <= r) & (cosines >= c)
            print(f"| {r} | {c} | {np.mean(on == truth):.3f} | {on[truth].mean():.2f} | {(~on[~truth]).mean():.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", type=Path, nargs="+", default=FAMILIES)
    ap.add_argument("--docs", type=int, help="documents per recipe (default: the recipe's own size.num_docs)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "families")
    ap.add_argument("--num-batches", type=int, default=1000, help="K-batches judged per score")
    ap.add_argument("--score-only", action="store_true", help="never generate; score existing runs")
    ap.add_argument("--force", action="store_true", help="regenerate runs that exist")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override for every recipe, e.g. sampling.temperature=0.7")
    ap.add_argument("--fit-rule", action="store_true", help="only print the on-topic rule's fit to hand labels")
    ap.add_argument("--grids", action="store_true", help="the topic-count x generations-per-topic grid (see above)")
    ap.add_argument("--grid-t", type=int, nargs="+", default=list(GRID_T), choices=GRID_T, help="topic counts to run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.fit_rule:
        return fit_rule()
    if args.grids:
        return run_grids(args)
    from generator.backends import open_backend
    from generator.recipe import load_recipe

    backend = None
    rows = []
    for path in args.recipes:
        size = [f"size.num_docs={args.docs}"] if args.docs else []
        plan = load_recipe(path, [*size, "engine.backend=vllm", *args.overrides])
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
