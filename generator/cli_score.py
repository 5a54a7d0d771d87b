"""`generator score` and `generator calibrate`: their options, checks and commands.

The LLM judge's settings come from one place, `judges.config.JudgeSettings`: a recipe's
`judge:` section (`--recipe`), `--set judge.KEY=VALUE`, and the flags that name its most used keys.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from generator.errors import UserError
from generator.judges.embedding import DEFAULT_THRESHOLD
from generator.judges.intervals import MIN_PRECISION
from generator.judges.protocol import INVALID_POLICIES, MAX_FAILURE_SHARE


def add_judge_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        parser.add_argument("data", type=Path, nargs="+",
                            help="corpora (Parquet file or folder, JSONL file, or saved HF dataset folder); "
                                 "several are scored on one ruler and compared in one table")
    else:
        parser.add_argument("data", type=Path, help="Parquet file or folder, JSONL file, or saved HF dataset folder")
    parser.add_argument("--judge-model", default=None, metavar="MODEL",
                        help="LLM judge model (judge.model), run in-process with vLLM unless judge.backend says otherwise")
    parser.add_argument("--judge-endpoint", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint serving --judge-model (judge.endpoint, judge.backend openai)")
    parser.add_argument("--recipe", type=Path, default=None, metavar="FILE",
                        help="take the LLM judge's settings from this recipe's judge: section")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="judge.KEY=VALUE",
                        help="set one LLM-judge setting (e.g. judge.max_model_len=8192, judge.verify=false); "
                             "keys as in a recipe's judge: section; repeatable")
    parser.add_argument("--criteria", type=Path, default=None, metavar="FILE",
                        help="frozen LLM-judge criteria JSON: read if it exists, else written there")
    parser.add_argument("--k", type=int, default=None, help="documents per batch, K (judge.k; default 10)")
    parser.add_argument("--text-field", default="text", help="column holding the documents (default text)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch sampling (default 0)")


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    add_judge_arguments(parser, many=True)
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG",
                        help="with several corpora: a bar chart of D with 95%% intervals")
    parser.add_argument("--judge", choices=("embed", "embed-subject", "llm"), default="embed",
                        help="clustering judge: embed (subject and form views, default), embed-subject (the "
                             "subject view alone, the ruler of reports before the form view) or llm")
    parser.add_argument("--precision", type=float, default=None, metavar="P",
                        help="stop once the 95%% half-width of D is at most P")
    parser.add_argument("--max-calls", type=int, default=None, metavar="N", help="judge call budget")
    parser.add_argument("--num-batches", type=int, default=200, metavar="N", help="most batches to judge (default 200)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"embedding judge's subject cut, a cosine distance "
                             f"(default {DEFAULT_THRESHOLD})")
    parser.add_argument("--regenerate-criteria", action="store_true",
                        help="write new criteria even if --criteria exists")
    parser.add_argument("--reference", type=Path, default=None, metavar="PATH",
                        help="reference corpus: also report the distribution shift from it")
    parser.add_argument("--no-proxies", action="store_true", help="skip the lexical and embedding proxies")
    parser.add_argument("--invalid-policy", choices=INVALID_POLICIES, default=None,
                        help="an LLM-judge cluster found invalid is split into singletons, dropped, or kept "
                             "(judge.invalid_policy; default split)")
    parser.add_argument("--max-failure-share", type=float, default=MAX_FAILURE_SHARE, metavar="S",
                        help=f"refuse the score when more than this share of batches failed (default {MAX_FAILURE_SHARE})")
    parser.add_argument("--audit", type=Path, default=None, metavar="FILE",
                        help="JSONL of every judge call and batch (default: beside --json as OUT.audit.jsonl)")
    parser.add_argument("--judge-cache", type=Path, default=None, metavar="FILE",
                        help="SQLite cache of LLM-judge calls: a re-run repeats none of them")
    parser.add_argument("--recompute", type=Path, default=None, metavar="AUDIT",
                        help="rebuild D from an audit file under --invalid-policy, with no judge call")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    add_judge_arguments(parser)
    parser.add_argument("--num-batches", type=int, default=50, metavar="N", help="batches both judges see (default 50)")
    parser.add_argument("--metric", choices=("adjusted_rand", "pair_agreement"), default="adjusted_rand",
                        help="agreement to maximise (default adjusted_rand)")


def judge_settings(args: argparse.Namespace):
    """The LLM judge's settings: the --recipe's judge: section, then --set judge.KEY=VALUE, then
    the flags --judge-model, --judge-endpoint, --k and --invalid-policy."""
    from generator.judges.config import read_settings
    from generator.recipe_checks import non_finite
    from generator.yamlfiles import read_yaml
    from generator.schema import parse_overrides

    base, where = {}, "score"
    if args.recipe is not None:
        data = read_yaml(args.recipe, "recipe", "pass the path of a YAML recipe")
        base, where = (data.get("judge") if isinstance(data, dict) else None), f"{args.recipe}"
    pairs = parse_overrides(args.overrides)
    if set(pairs) - {"judge"}:
        raise UserError(f"--set {sorted(set(pairs) - {'judge'})[0]}...: score takes only judge.KEY=VALUE",
                        fix="e.g. --set judge.max_model_len=8192")
    flags = {"model": args.judge_model, "k": args.k, "invalid_policy": getattr(args, "invalid_policy", None)}
    if args.judge_endpoint:
        flags.update(endpoint=args.judge_endpoint, backend="openai")
    if not isinstance(pairs.get("judge", {}), dict):
        raise UserError(f"--set judge={pairs['judge']!r}: judge is a section",
                        fix="set its keys: --set judge.KEY=VALUE")
    over = {**pairs.get("judge", {}), **{key: v for key, v in flags.items() if v is not None}}
    settings = read_settings(base, over, f"{where}: judge")
    bad = next(non_finite(settings), None)
    if bad is not None:
        raise UserError(f"{where}: judge.{bad[0]} must be a finite number, got {bad[1]}",
                        fix=f"set judge.{bad[0]} to a number (not nan or inf), "
                            "or leave it out for the default")
    return settings


def check_judge_args(args: argparse.Namespace) -> None:
    """Reject impossible `score`/`calibrate` options before any corpus, model or engine loads;
    resolves the judge's settings into `args.settings` (and K into `args.k`)."""
    def fail(what: str, fix: str):
        raise UserError(what, fix=fix)

    args.settings = judge_settings(args)
    args.k = args.settings.k

    if not 1 <= args.num_batches <= 10**6:
        fail(f"--num-batches {args.num_batches}: must be in [1, 1000000]", "e.g. --num-batches 200")
    if getattr(args, "precision", None) is not None and not args.precision >= MIN_PRECISION:
        fail(f"--precision {args.precision}: must be at least {MIN_PRECISION:g} (a half-width of D)",
             "e.g. --precision 0.05")
    if getattr(args, "max_calls", None) is not None and args.max_calls < 1:
        fail(f"--max-calls {args.max_calls}: must be positive", "e.g. --max-calls 4000")
    share = getattr(args, "max_failure_share", None)
    if share is not None and not 0 <= share < 1:
        fail(f"--max-failure-share {share}: must be in [0, 1)", "e.g. --max-failure-share 0.2")
    threshold = getattr(args, "threshold", None)
    if threshold is not None and not 0 < threshold <= 2:
        fail(f"--threshold {threshold}: a cosine distance lies in (0, 2]", f"e.g. the default --threshold {DEFAULT_THRESHOLD}")
    if not 0 <= args.seed < 2**63:
        fail(f"--seed {args.seed}: must be in [0, 2**63 - 1]", "e.g. --seed 0")
    corpora = args.data if isinstance(args.data, list) else [args.data]
    for flag, path in [*(("corpus", p) for p in corpora), ("--reference", getattr(args, "reference", None))]:
        if path is not None and not Path(path).exists():
            fail(f"{flag} {path}: no such file or folder", "check the corpus path")
    check_output_files(args, [*corpora, *([args.reference] if getattr(args, "reference", None) else [])])
    if getattr(args, "judge", "llm") == "llm":
        if args.judge_endpoint and not args.settings.model:
            fail("--judge-endpoint needs the name of the model it serves", "add --judge-model NAME")
        if not args.settings.model:
            fail("the llm judge needs a model", "pass --judge-model M, --set judge.model=M or --recipe FILE")


def check_output_files(args: argparse.Namespace, inputs: list) -> None:
    """--json, --plot and --audit (and the audit file beside --json) can be written, outside the inputs."""
    from generator.outputs import check_out_file
    json_path, audit = getattr(args, "json", None), getattr(args, "audit", None)
    if audit is None and json_path is not None and hasattr(args, "audit"):  # score writes one beside --json
        audit = json_path.with_suffix(".audit.jsonl")
    for flag, path in (("--json", json_path), ("--plot", getattr(args, "plot", None)), ("--audit", audit)):
        if path is not None:
            check_out_file(path, flag, inputs=inputs)


def ruler_of(args: argparse.Namespace):
    """The ruler the checked `score`/`calibrate` options describe."""
    from generator.results import Ruler
    return Ruler(judge=getattr(args, "judge", "llm"), k=args.k, threshold=getattr(args, "threshold", 0.0),
                 seed=args.seed, num_batches=args.num_batches, precision=getattr(args, "precision", None),
                 max_calls=getattr(args, "max_calls", None),
                 max_failure_share=getattr(args, "max_failure_share", None), settings=args.settings,
                 criteria=args.criteria, regenerate_criteria=getattr(args, "regenerate_criteria", False))


def cmd_score(args: argparse.Namespace) -> int:
    import generator
    from generator.files import write_json
    from generator.judges.audit import recompute
    from generator.measure.report import format_recomputed

    if args.recompute:
        check_output_files(args, [args.recompute])
        result = recompute(args.recompute, args.invalid_policy or "split", seed=args.seed)
        print(format_recomputed(result))
        if args.json:
            write_json(args.json, result)
        return 0
    check_judge_args(args)
    if args.plot is not None and len(args.data) < 2:
        raise UserError("--plot compares several corpora", fix="pass two or more corpora, or drop --plot")
    audit_path = args.audit or (args.json.with_suffix(".audit.jsonl") if args.json else None)
    reports = generator.compare(args.data, ruler=ruler_of(args), reference=args.reference,
                                proxies=not args.no_proxies, text_field=args.text_field, audit=audit_path,
                                judge_cache=args.judge_cache)
    results = [r.to_dict() for r in reports]
    context = results[0].get("judge_context")
    if context:
        print(f"llm judge {args.settings.model} on {args.settings.backend}: K={args.k}, context "
              f"{context['max_model_len']} tokens (model's own {context['model_context']}), documents cut at "
              f"{context['max_doc_tokens']} tokens")
    write_score_outputs(args, results, audit_path)
    return 0


def write_score_outputs(args: argparse.Namespace, results: list[dict], audit_path) -> None:
    from generator.files import write_json
    from generator.measure.report import format_comparison, format_result, plot_comparison

    names = [str(p) for p in args.data]
    if len(results) == 1:
        print(format_result(results[0], names[0]))
    else:
        print(format_comparison(results, names))
    if args.json:
        write_json(args.json, results[0] if len(results) == 1 else
                   {"corpora": [{"corpus": n, **r} for n, r in zip(names, results)]})
        print(f"wrote {args.json}")
    if args.plot is not None:
        print(f"wrote {plot_comparison(results, names, args.plot)}")
    if audit_path:
        print(f"wrote {audit_path}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    import generator
    from generator.files import write_json
    from generator.judges.calibrate import format_calibration

    check_judge_args(args)
    calibration = generator.calibrate(args.data, ruler=ruler_of(args), metric=args.metric,
                                      text_field=args.text_field)
    print(format_calibration(calibration))
    if args.json:
        write_json(args.json, calibration.to_dict())
        print(f"wrote {args.json}")
    return 0
