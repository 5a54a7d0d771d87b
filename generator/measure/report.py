"""The diversity report of a corpus: what `generator score` prints and a run's diversity.json.

The judge's score D with its interval, the proxies, the shift from a reference corpus, and a
per-cell attribution of the grid columns (template, domain, topic, persona, style, audience,
model): how often two documents sharing a value land in the same cluster, against the corpus
baseline.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from generator.judges.embedding import EmbeddingJudge
from generator.judges.protocol import MAX_FAILURE_SHARE, Judge, attribute_cells, score_corpus
from generator.readers import load_corpus
from generator.records import GRID_COLUMNS
from generator.files import MEASURE_ROWS, count_documents, read_json, read_rows, write_json
from generator.figures import pyplot, save_figure

log = logging.getLogger(__name__)

MAX_PROXY_DOCS = 2000  # proxies and the shift test run on a random sample of this many documents
SAMPLE_STREAM = 717  # the random stream that picks the rows `score_run` scores in a large run
VIEW_STREAM = 718  # the random stream of the views' intervals (D's own stream stays as it was)


def score_texts(texts: Sequence[str], metadata: dict[str, Sequence[str]] | None = None, *, judge: Judge,
                k: int = 10, seed: int = 0, precision: float | None = None, max_calls: int | None = None,
                num_batches: int = 200, reference_texts: Sequence[str] | None = None, proxies: bool = True,
                budget=None, audit=None, max_failure_share: float = MAX_FAILURE_SHARE,
                topics: Sequence[str] | None = None) -> dict:
    """Everything `generator score` reports, as one JSON-ready dict: the diversity report
    (top-level keys judge, k, score, half_width, ...), and when available the proxies, the
    shift from `reference_texts` and the per-cell attribution of the grid columns. `judge`
    comes from `generator.judges.open_judge`; a `budget` (judges.calls.CallBudget) shared with
    that judge replaces `max_calls`, and `audit` receives every judge call and batch. With a
    `topic` column, the on-topic fidelity against `topics` (the grid's; default: the corpus's)."""
    from generator.judges.calls import CallBudget

    rng = np.random.default_rng(seed)
    scorer = judge
    budget = budget or CallBudget(max_calls)
    if audit is not None:
        audit.write({"type": "run", "judge": scorer.name, "k": k, "num_docs": len(texts), "seed": seed,
                     "precision": precision, "max_calls": budget.max_calls,
                     "invalid_policy": getattr(getattr(scorer, "config", None), "invalid_policy", None)})
    report = score_corpus(texts, scorer, k=k, rng=rng, max_calls=budget.left, precision=precision,
                          num_batches=num_batches, min_batches=min(30, num_batches),
                          max_failure_share=max_failure_share, audit=audit)
    result = report.to_dict()
    grid = {c: metadata[c] for c in (*GRID_COLUMNS, "model")
            if metadata and c in metadata and len(set(metadata[c]) - {""}) > 1}
    if isinstance(scorer, EmbeddingJudge):
        result["judge_kind"], result["threshold"] = "embed", scorer.threshold
        if scorer.form_threshold is not None:
            result["form_threshold"] = scorer.form_threshold
            view_rng = np.random.default_rng([seed, VIEW_STREAM])
            result["views"], by_view = score_views(report, texts, scorer, view_rng, grid)
    elif hasattr(scorer, "criteria"):
        result["judge_kind"], result["criteria"] = "llm", json.loads(scorer.criteria.to_json())
        result["calls_total"] = budget.spent  # criteria written in this run included
    else:
        result["judge_kind"] = "custom"  # a caller's own judge (any object with cluster(batches))
    if grid:
        result["attribution"] = attribute_cells(report, grid)
        if "views" in result:
            result["attribution"]["by_view"] = by_view
    if metadata and any(metadata.get("topic") or []):
        result["fidelity"] = measure_corpus_fidelity(texts, metadata, topics, scorer)
    if proxies or reference_texts is not None:
        sample = _sample(texts, rng)
        embed = scorer.embed if isinstance(scorer, EmbeddingJudge) else _embed  # reuse the judge's cache
        vectors = embed(sample)
        if proxies:
            from generator.measure.proxies import compute_proxies

            result["proxies"] = compute_proxies(sample, vectors, seed=seed)
        if reference_texts is not None:
            from generator.measure.shift import shift_report

            result["shift"] = shift_report(vectors, embed(_sample(reference_texts, rng)), rng=rng)
    return result


def score_views(report, texts: Sequence[str], judge: EmbeddingJudge, rng: np.random.Generator,
                grid: dict) -> tuple[dict, dict]:
    """(D_subject and D_form: each view of the two-view judge alone on the batches D was
    scored on, with its interval and with grid columns its own attribution; per grid value,
    whether it keeps documents apart in subject, in form, or both: `attribution.attribute_views`)."""
    from generator.judges.attribution import attribute_views
    from generator.judges.embedding import view_reports

    keys = ("judge", "score", "std_error", "ci_low", "ci_high", "half_width", "cluster_ratio", "num_scored")
    out = {}
    parts = view_reports(report, texts, judge, rng)
    for view, part in parts.items():
        full = part.to_dict(include_batches=False)
        out[view] = {key: full[key] for key in keys}
        if grid:
            out[view]["attribution"] = attribute_cells(part, grid)
    return out, attribute_views(parts, grid) if grid else {}


def measure_corpus_fidelity(texts: Sequence[str], metadata, topics: Sequence[str] | None, judge=None) -> dict:
    """On-topic fidelity (measure/fidelity.py) with the judge's embeddings when it has them."""
    from generator.measure.fidelity import corpus_topics, measure_fidelity

    embed = judge.embed if isinstance(judge, EmbeddingJudge) else _embed
    return measure_fidelity(texts, metadata, list(topics or corpus_topics(metadata["topic"])), embed=embed).to_dict()


def _sample(texts: Sequence[str], rng: np.random.Generator) -> list[str]:
    if len(texts) <= MAX_PROXY_DOCS:
        return list(texts)
    return [texts[i] for i in np.sort(rng.choice(len(texts), size=MAX_PROXY_DOCS, replace=False))]


def _embed(texts: Sequence[str]) -> np.ndarray:
    from generator.measure.embeddings import embed_texts

    return embed_texts(texts)


def end_of_run_ruler(recipe) -> dict:
    """The judge settings a finished run is scored with (kept in diversity.json as `ruler`):
    the target's judge, threshold and K when the recipe steers to a target with the judge kind
    it is scored with, so the end-of-run D and the steered D are on one ruler; else the
    scoring's judge and K at the judge's default threshold (0)."""
    t, s = recipe.target, recipe.scoring
    if t is not None and t.judge == s.judge:
        return {"settings_from": "target", "judge": t.judge, "threshold": t.threshold, "k": t.k}
    return {"settings_from": "scoring", "judge": s.judge, "threshold": 0.0, "k": s.k}


def score_finished_run(plan, out: Path) -> dict:
    """Score a finished run of `plan` at `end_of_run_ruler` (what `generator run` does at the end)."""
    from generator.judges import judge_for_target, open_judge

    r, ruler = plan.recipe, end_of_run_ruler(plan.recipe)
    judge = (judge_for_target(plan, out) if ruler["settings_from"] == "target" else
             open_judge(r.scoring.judge, settings=r.judge, criteria_path=out / "criteria.json", seed=r.seed))
    from generator.measure.fidelity import grid_topics
    return score_run(out, judge=judge, k=ruler["k"], seed=r.seed, num_batches=r.scoring.num_batches,
                     reference_texts=plan.reference_texts or None, ruler=ruler, topics=grid_topics(plan.grid))


def score_run(out: str | Path, *, judge: Judge, k: int = 10, seed: int = 0, num_batches: int = 200,
              ruler: dict | None = None, **options) -> dict:
    """Score a finished run folder (its Parquet shards under data/) and write OUT/diversity.json
    (with `ruler`, the settings it was scored at, when given), and its on-topic fidelity into
    OUT/summary.json when that has none (e.g. an unsteered run).
    Above MEASURE_ROWS documents it scores a uniform sample of that many (seeded by `seed`):
    `num_docs` stays the corpus's count, `sampled_docs` is the sample's and batch document
    numbers are rows of the corpus."""
    out = Path(out)
    total = count_documents(out)
    if total <= MEASURE_ROWS:
        texts, metadata = load_corpus(out / "data")
        result = score_texts(texts, metadata, judge=judge, k=k, seed=seed, num_batches=num_batches, **options)
    else:
        rows = np.sort(np.random.default_rng([seed, SAMPLE_STREAM]).choice(total, size=MEASURE_ROWS, replace=False))
        table = read_rows(out, rows, columns=["text", *GRID_COLUMNS, "model"])
        metadata = {c: table.column(c).to_pylist() for c in (*GRID_COLUMNS, "model")}
        result = score_texts(table.column("text").to_pylist(), metadata, judge=judge, k=k, seed=seed,
                             num_batches=num_batches, **options)
        for batch in result.get("batches", []):
            batch["docs"] = [int(rows[i]) for i in batch["docs"]]
        result.update(num_docs=total, sampled_docs=MEASURE_ROWS)
    if ruler is not None:
        result["ruler"] = ruler
    write_json(out / "diversity.json", result)
    summary = read_json(out / "summary.json") if (out / "summary.json").is_file() else None
    if result.get("fidelity") and isinstance(summary, dict) and not summary.get("fidelity"):
        write_json(out / "summary.json", {**summary, "fidelity": result["fidelity"]})  # the final corpus's
    return result


def format_result(result: dict, source: str) -> str:
    """A plain-text table of a `score_texts` result."""
    lines = [f"corpus         {source} ({result['num_docs']} documents)",
             f"judge          {result['judge']}   K={result['k']}",
             f"diversity D    {result['score']:.3f}   95% CI [{result['ci_low']:.3f}, {result['ci_high']:.3f}]   "
             f"bootstrap sd {result['bootstrap_std']:.3f}" if result["ci_low"] is not None else
             f"diversity D    {result['score']:.3f}   (one batch: no interval)",
             f"cluster ratio  {result['cluster_ratio']:.3f}",
             f"batches        {result['num_scored']} scored, {result['num_failed']} failed, "
             f"stopped by {result['stop_reason']}",
             f"judge calls    {result['calls']}" + (f" ({result['prompt_tokens']} prompt + "
                                                 f"{result['completion_tokens']} completion tokens)"
                                                 if result["prompt_tokens"] else "")]
    if result.get("failures"):
        lines.append(f"failures       {result['failure_share']:.1%} of batches: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(result["failures"].items()))
                     + f"; D would span [{result['score_failed_low']:.3f}, {result['score_failed_high']:.3f}] "
                       "had they scored 1/K or K")
    lines[3:3] = [f"D {view:<12} {part['score']:.3f}   95% CI [{part['ci_low']:.3f}, {part['ci_high']:.3f}]"
                  if part["ci_low"] is not None else f"D {view:<12} {part['score']:.3f}"
                  for view, part in result.get("views", {}).items()]  # each view alone, on D's batches
    if any(result["repairs"].values()):
        lines.append("repairs        " + ", ".join(f"{k} {v}" for k, v in result["repairs"].items()))
    if any(result.get("fixes", {}).values()):
        lines.append("fixes          " + ", ".join(f"{k} {v}" for k, v in result["fixes"].items() if v))
    fidelity = result.get("fidelity")
    if fidelity and fidelity["num_docs"]:
        per_template = ", ".join(f"{g['value']} {g['topic_share']:.2f}" for g in fidelity["groups"]
                                 if g["column"] == "template" and g["num_docs"])
        lines.append(f"on topic       {fidelity['topic_share']:.2f} of {fidelity['num_docs']} documents "
                     f"(own topic in the top {fidelity['top_r']} of {fidelity['num_topics']})"
                     + (f"; by template: {per_template}" if per_template else ""))
    if result.get("proxies"):
        lines.append("proxies")
        lines.extend(f"  {name:<24} {value:.4g}" for name, value in result["proxies"].items())
    for name, value in result.get("shift", {}).items():
        if isinstance(value, (int, float)):
            lines.append(f"  shift {name:<18} {value:.4g}")
    attribution = result.get("attribution")
    if attribution:
        lines.append(f"most redundant cells (same-cluster rate; baseline "
                     f"{attribution['baseline']['same_cluster_rate']:.3f})")
        cells = [(stats["same_cluster_rate"], column, value, stats["pairs"])
                 for column, values in attribution["columns"].items()
                 for value, stats in values.items() if stats["pairs"] >= 5]
        for rate, column, value, pairs in sorted(cells, reverse=True)[:10]:
            lines.append(f"  {rate:.3f}  {column}={value[:60]}  ({pairs} pairs)")
        lines.extend(view_lines(attribution.get("by_view") or {}))
    return "\n".join(lines)


VIEW_COLUMNS = ("template", "style", "persona")  # the columns whose values' views the report lists


def view_lines(by_view: dict, per_column: int = 8) -> list[str]:
    """What each template, style and persona adds, by view (`attribution.attribute_views`):
    `apart` under each view, the values that add most first."""
    lines = []
    for column in (c for c in VIEW_COLUMNS if by_view.get(c)):
        if not lines:
            lines.append("what each value adds (apart: 1 never clustered with other values, 0 as any pair)")
        values = sorted(by_view[column].items(), key=lambda kv: -max(_apart(s) for s in kv[1].values()
                                                                     if isinstance(s, dict)))
        for value, stats in values[:per_column]:
            views = [v for v in stats if v != "adds"]
            apart = ", ".join(f"{v} {stats[v]['apart']:.2f}" if stats[v]["apart"] is not None else f"{v} n/a"
                              for v in views)
            added = " and ".join(stats["adds"]) or "neither"
            lines.append(f"  {column}={value[:40]}  adds {added}  (apart: {apart})")
    return lines


def _apart(stats: dict) -> float:
    return stats["apart"] if stats.get("apart") is not None else -math.inf


def format_recomputed(result: dict) -> str:
    return (f"recomputed     {result['recomputed_from']} under invalid policy {result['invalid_policy']} (0 calls)\n"
            f"diversity D    {result['score']:.3f}   95% CI [{result['ci_low']:.3f}, {result['ci_high']:.3f}]\n"
            f"batches        {result['num_scored']} scored, {result['num_failed']} failed")


def format_comparison(results: Sequence[dict], names: Sequence[str]) -> str:
    """One table for several corpora scored on one ruler (same judge, K and criteria)."""
    width = max(12, *(len(n) for n in names))
    lines = [f"judge {results[0]['judge']}   K={results[0]['k']}   (one ruler for every corpus)",
             f"{'corpus':<{width}} {'docs':>7} {'D':>7} {'95% CI':>17} {'cluster ratio':>14} {'failed':>7}"]
    for name, r in zip(names, results):
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None else "n/a"
        lines.append(f"{name:<{width}} {r['num_docs']:>7} {r['score']:>7.3f} {ci:>17} "
                     f"{r['cluster_ratio']:>14.3f} {r['num_failed']:>7}")
    return "\n".join(lines)


def plot_comparison(results: Sequence[dict], names: Sequence[str], png: Path) -> Path:
    """D of each corpus with its 95% interval, side by side."""
    plt = pyplot()

    scores = [r["score"] for r in results]
    low = [r["score"] - (r["ci_low"] if r["ci_low"] is not None else r["score"]) for r in results]
    high = [(r["ci_high"] if r["ci_high"] is not None else r["score"]) - r["score"] for r in results]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(results) + 2), 3.6))
    ax.bar(range(len(results)), scores, yerr=[low, high], capsize=6, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(results)), [Path(n).name or n for n in names], rotation=20, ha="right")
    ax.set_ylabel(f"D (K = {results[0]['k']})")
    ax.set_title(f"diversity on one ruler: {results[0]['judge']}", fontsize=9)
    return save_figure(fig, png, dpi=120)
