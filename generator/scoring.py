"""Corpus loading and the bodies of `generator score` and `generator calibrate`.

A corpus is a Parquet file, a folder of Parquet files (searched recursively, so a run folder
works), a JSONL file, or a folder written by `datasets.Dataset.save_to_disk`. Its text column
is scored; its other string columns are metadata, and the grid columns among them (template,
domain, topic, persona, style, audience, model) get a per-cell attribution: how often two
documents sharing a value land in the same cluster, against the corpus baseline.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from generator.diversity import INVALID_POLICIES, MAX_FAILURE_SHARE, ScoreError, attribute_cells, score_corpus
from generator.embed_judge import DEFAULT_THRESHOLD, EmbeddingJudge
from generator.writers import write_json

log = logging.getLogger(__name__)

GRID_COLUMNS = ("template", "domain", "topic", "persona", "style", "audience", "model")
MAX_PROXY_DOCS = 2000  # proxies and the shift test run on a random sample of this many documents


def load_corpus(path: str | Path, text_field: str = "text") -> tuple[list[str], dict[str, list[str]]]:
    """(texts, metadata): the text column and every other all-string column (None -> "")."""
    path = Path(path)
    if not path.exists():
        raise ScoreError(f"{path}: no such file or folder", fix="check the corpus path")
    columns = _read_columns(path)
    if not columns or not len(next(iter(columns.values()))):
        raise ScoreError(f"{path}: the corpus is empty (0 documents)", fix="point at a corpus with documents")
    if text_field not in columns:
        raise ScoreError(f"{path}: no text field {text_field!r}; available columns: {', '.join(columns) or 'none'}",
                         fix="pass --text-field NAME")
    texts = columns.pop(text_field)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ScoreError(f"{path}: row {bad + 1}: {text_field!r} is {type(texts[bad]).__name__}, not text",
                         fix="drop rows without text or pick another --text-field")
    metadata = {name: ["" if v is None else v for v in values] for name, values in columns.items()
                if all(v is None or isinstance(v, str) for v in values)}
    return texts, metadata


def _read_columns(path: Path) -> dict[str, list]:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _read_saved_dataset(path)
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise ScoreError(f"{path}: folder holds no .parquet files and no saved dataset",
                             fix="point at a Parquet file or folder, a JSONL file, or a save_to_disk folder")
        return _read_parquet(files)
    if path.suffix == ".parquet":
        return _read_parquet([path])
    if path.suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    raise ScoreError(f"{path}: unknown corpus format {path.suffix or '(no extension)'!r}",
                     fix="use .parquet, .jsonl, a folder of .parquet files or a saved HF dataset folder")


def _read_parquet(files: Sequence[Path]) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (pa.ArrowException, OSError) as exc:
        raise ScoreError(f"{files[0].parent}: cannot read Parquet ({exc})", fix="check the files are Parquet") from None
    return table.to_pydict()


def _read_jsonl(path: Path) -> dict[str, list]:
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScoreError(f"{path}:{number}: not valid UTF-8 (byte {exc.start})",
                             fix="re-encode the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScoreError(f"{path}:{number}: not JSON ({exc.msg})", fix="write one JSON object per line") from None
        if not isinstance(row, dict):
            raise ScoreError(f"{path}:{number}: expected a JSON object", fix="write one JSON object per line")
        rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _read_saved_dataset(path: Path) -> dict[str, list]:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if len(data) != 1:
            raise ScoreError(f"{path}: saved dataset has splits {sorted(data)}",
                             fix=f"point at one split, e.g. {path / sorted(data)[0]}")
        data = next(iter(data.values()))
    return data.to_dict()


def score_texts(texts: Sequence[str], metadata: dict[str, Sequence[str]] | None = None, *, judge: str = "embed",
                k: int = 10, seed: int = 0, precision: float | None = None, max_calls: int | None = None,
                num_batches: int = 200, threshold: float = DEFAULT_THRESHOLD, backend=None, criteria=None,
                agent_config=None, reference_texts: Sequence[str] | None = None, proxies: bool = True,
                budget=None, audit=None, max_failure_share: float = MAX_FAILURE_SHARE) -> dict:
    """Everything `generator score` reports, as one JSON-ready dict: the diversity report
    (top-level keys judge, k, score, half_width, ...), and when available the proxies, the
    shift from `reference_texts` and the per-cell attribution of the grid columns.
    judge="llm" needs a `backend` and frozen `criteria` (see cluster_agent). A `budget`
    (judge_calls.CallBudget) shared with criteria writing replaces `max_calls`; `audit`
    receives every judge call and batch."""
    from generator.judge_calls import CallBudget

    rng = np.random.default_rng(seed)
    budget = budget or CallBudget(max_calls)
    if judge == "embed":
        scorer = EmbeddingJudge(threshold)
    elif judge == "llm":
        if backend is None or criteria is None:
            raise ScoreError("the llm judge needs a judge backend and criteria",
                             fix="pass --judge-model M or --judge-endpoint URL (criteria are written if missing)")
        from generator.cluster_agent import ClusterAgentConfig, ClusterAgentJudge

        scorer = ClusterAgentJudge(backend, criteria, agent_config or ClusterAgentConfig(seed=seed),
                                   budget=budget, audit=audit)
    else:
        raise ScoreError(f"unknown judge {judge!r}", fix="use --judge embed or --judge llm")
    if audit is not None:
        audit.write({"type": "run", "judge": scorer.name, "k": k, "num_docs": len(texts), "seed": seed,
                     "precision": precision, "max_calls": budget.max_calls,
                     "invalid_policy": getattr(getattr(scorer, "config", None), "invalid_policy", None)})
    report = score_corpus(texts, scorer, k=k, rng=rng, max_calls=budget.left, precision=precision,
                          num_batches=num_batches, min_batches=min(30, num_batches),
                          max_failure_share=max_failure_share, audit=audit)
    result = report.to_dict()
    result["judge_kind"] = judge
    if judge == "embed":
        result["threshold"] = threshold
    else:
        result["criteria"] = json.loads(criteria.to_json())
        result["calls_total"] = budget.spent  # criteria written in this run included
    grid = {c: metadata[c] for c in GRID_COLUMNS if metadata and c in metadata and len(set(metadata[c]) - {""}) > 1}
    if grid:
        result["attribution"] = attribute_cells(report, grid)
    if proxies or reference_texts is not None:
        sample = _sample(texts, rng)
        embed = scorer.embed if isinstance(scorer, EmbeddingJudge) else _embed  # reuse the judge's cache
        vectors = embed(sample)
        if proxies:
            from generator.proxies import compute_proxies

            result["proxies"] = compute_proxies(sample, vectors, seed=seed)
        if reference_texts is not None:
            from generator.shift import shift_report

            result["shift"] = shift_report(vectors, embed(_sample(reference_texts, rng)), rng=rng)
    return result


def _sample(texts: Sequence[str], rng: np.random.Generator) -> list[str]:
    if len(texts) <= MAX_PROXY_DOCS:
        return list(texts)
    return [texts[i] for i in np.sort(rng.choice(len(texts), size=MAX_PROXY_DOCS, replace=False))]


def _embed(texts: Sequence[str]) -> np.ndarray:
    from generator.embeddings import embed_texts

    return embed_texts(texts)


def score_run(out: str | Path, *, judge: str = "embed", k: int = 10, seed: int = 0, num_batches: int = 200,
              **options) -> dict:
    """Score a finished run folder (its Parquet shards under data/) and write OUT/diversity.json."""
    out = Path(out)
    texts, metadata = load_corpus(out / "data")
    result = score_texts(texts, metadata, judge=judge, k=k, seed=seed, num_batches=num_batches, **options)
    write_json(out / "diversity.json", result)
    return result


# ---- command line ------------------------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="Parquet file or folder, JSONL file, or saved HF dataset folder")
    parser.add_argument("--judge-model", default=None, metavar="MODEL",
                        help="LLM judge run in-process with vLLM (e.g. a HF id)")
    parser.add_argument("--judge-endpoint", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint serving --judge-model (e.g. http://host:8000/v1)")
    parser.add_argument("--criteria", type=Path, default=None, metavar="FILE",
                        help="frozen LLM-judge criteria JSON: read if it exists, else written there")
    parser.add_argument("--k", type=int, default=10, help="documents per batch, K (default 10)")
    parser.add_argument("--text-field", default="text", help="column holding the documents (default text)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch sampling (default 0)")


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--judge", choices=("embed", "llm"), default="embed", help="clustering judge (default embed)")
    parser.add_argument("--precision", type=float, default=None, metavar="P",
                        help="stop once the 95%% half-width of D is at most P")
    parser.add_argument("--max-calls", type=int, default=None, metavar="N", help="judge call budget")
    parser.add_argument("--num-batches", type=int, default=200, metavar="N", help="most batches to judge (default 200)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"embedding judge cosine-distance threshold (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--regenerate-criteria", action="store_true",
                        help="write new criteria even if --criteria exists")
    parser.add_argument("--reference", type=Path, default=None, metavar="PATH",
                        help="reference corpus: also report the distribution shift from it")
    parser.add_argument("--no-proxies", action="store_true", help="skip the lexical and embedding proxies")
    parser.add_argument("--invalid-policy", choices=INVALID_POLICIES, default="split",
                        help="an LLM-judge cluster found invalid is split into singletons, dropped, or kept "
                             "(default split)")
    parser.add_argument("--max-failure-share", type=float, default=MAX_FAILURE_SHARE, metavar="S",
                        help=f"refuse the score when more than this share of batches failed "
                             f"(default {MAX_FAILURE_SHARE})")
    parser.add_argument("--audit", type=Path, default=None, metavar="FILE",
                        help="JSONL of every judge call and batch (default: beside --json as OUT.audit.jsonl)")
    parser.add_argument("--judge-cache", type=Path, default=None, metavar="FILE",
                        help="SQLite cache of LLM-judge calls: a re-run repeats none of them")
    parser.add_argument("--recompute", type=Path, default=None, metavar="AUDIT",
                        help="rebuild D from an audit file under --invalid-policy, with no judge call")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--num-batches", type=int, default=50, metavar="N", help="batches both judges see (default 50)")
    parser.add_argument("--metric", choices=("adjusted_rand", "pair_agreement"), default="adjusted_rand",
                        help="agreement to maximise (default adjusted_rand)")


def open_judge_backend(args: argparse.Namespace):
    from generator.backends import open_backend

    if args.judge_endpoint:
        if not args.judge_model:
            raise ScoreError("--judge-endpoint needs the name of the model it serves", fix="add --judge-model NAME")
        backend = open_backend("openai", args.judge_model, base_url=args.judge_endpoint)
    elif args.judge_model:
        backend = open_backend("vllm", args.judge_model)
    else:
        raise ScoreError("the llm judge needs a model",
                         fix="pass --judge-model M or --judge-endpoint URL --judge-model M")
    if getattr(args, "judge_cache", None):
        from generator.judge_cache import CachedBackend

        backend = CachedBackend(backend, args.judge_cache)
    return backend


def obtain_criteria(args: argparse.Namespace, backend, texts: Sequence[str], *, budget=None, audit=None):
    """Frozen criteria from --criteria (refused if written by another judge model or for
    another K), or new ones within `budget` (written to --criteria when given)."""
    from generator.cluster_agent import ClusterAgentConfig, generate_criteria, load_criteria

    if args.criteria and args.criteria.exists() and not getattr(args, "regenerate_criteria", False):
        return load_criteria(args.criteria, judge_model=backend.model, k=args.k)
    criteria = generate_criteria(backend, texts, rng=np.random.default_rng([args.seed, 1]),
                                 config=ClusterAgentConfig(seed=args.seed), k=args.k, budget=budget, audit=audit)
    if args.criteria:
        args.criteria.parent.mkdir(parents=True, exist_ok=True)
        args.criteria.write_text(criteria.to_json() + "\n", encoding="utf-8")
        print(f"wrote criteria to {args.criteria}")
    return criteria


def run_score(args: argparse.Namespace) -> int:
    from generator.judge_audit import AuditLog, recompute
    from generator.judge_calls import CallBudget

    if args.recompute:
        result = recompute(args.recompute, args.invalid_policy, seed=args.seed)
        print(format_recomputed(result))
        if args.json:
            write_json(args.json, result)
        return 0
    texts, metadata = load_corpus(args.data, args.text_field)
    reference = load_corpus(args.reference, args.text_field)[0] if args.reference else None
    audit_path = args.audit or (args.json.with_suffix(".audit.jsonl") if args.json else None)
    audit = AuditLog(audit_path) if audit_path else None
    budget = CallBudget(args.max_calls)
    backend = criteria = config = None
    try:
        if args.judge == "llm":
            from generator.cluster_agent import ClusterAgentConfig

            backend = open_judge_backend(args)
            criteria = obtain_criteria(args, backend, texts, budget=budget, audit=audit)
            config = ClusterAgentConfig(seed=args.seed, invalid_policy=args.invalid_policy)
        result = score_texts(texts, metadata, judge=args.judge, k=args.k, seed=args.seed, precision=args.precision,
                             num_batches=args.num_batches, threshold=args.threshold, backend=backend,
                             criteria=criteria, agent_config=config, reference_texts=reference,
                             proxies=not args.no_proxies, budget=budget, audit=audit,
                             max_failure_share=args.max_failure_share)
    finally:
        if backend is not None:
            backend.close()
        if audit is not None:
            audit.close()
    print(format_result(result, str(args.data)))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if audit_path:
        print(f"wrote {audit_path}")
    return 0


def format_recomputed(result: dict) -> str:
    return (f"recomputed     {result['recomputed_from']} under invalid policy {result['invalid_policy']} (0 calls)\n"
            f"diversity D    {result['score']:.3f}   95% CI [{result['ci_low']:.3f}, {result['ci_high']:.3f}]\n"
            f"batches        {result['num_scored']} scored, {result['num_failed']} failed")


def run_calibrate(args: argparse.Namespace) -> int:
    from generator.calibrate import calibrate_threshold
    from generator.cluster_agent import ClusterAgentConfig, ClusterAgentJudge

    texts, _ = load_corpus(args.data, args.text_field)
    backend = open_judge_backend(args)
    try:
        criteria = obtain_criteria(args, backend, texts)
        judge = ClusterAgentJudge(backend, criteria, ClusterAgentConfig(seed=args.seed))
        calibration = calibrate_threshold(texts, judge, k=args.k, num_batches=args.num_batches,
                                          rng=np.random.default_rng(args.seed), metric=args.metric)
    finally:
        backend.close()
    print(f"threshold {calibration.threshold:g} ({calibration.metric} {calibration.agreement:.3f}) · "
          f"LLM D {calibration.llm_score:.3f} vs embedding D {calibration.embed_score:.3f} · "
          f"{calibration.num_batches} batches, {calibration.num_failed} failed")
    for row in calibration.curve:
        print(f"  t={row['threshold']:.2f}  ARI {row['adjusted_rand']:.3f}  pairs {row['pair_agreement']:.3f}  "
              f"embed D {row['embed_score']:.3f}")
    if args.json:
        write_json(args.json, calibration.to_dict())
        print(f"wrote {args.json}")
    return 0


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
    if any(result["repairs"].values()):
        lines.append("repairs        " + ", ".join(f"{k} {v}" for k, v in result["repairs"].items()))
    if any(result.get("fixes", {}).values()):
        lines.append("fixes          " + ", ".join(f"{k} {v}" for k, v in result["fixes"].items() if v))
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
    return "\n".join(lines)
