"""`generator` command line: run, render, score, calibrate, export, card, verify.

Every command checks its arguments and inputs before any heavy step. User errors print one
line `error: ... (fix: ...)` and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from generator import terminal
from generator.cli_score import add_calibrate_arguments, add_score_arguments, cmd_calibrate, cmd_score
from generator.errors import UserError
from generator.terminal import say
from generator.export.formats import FORMATS
from generator.export.mixes import DEFAULT_MAX_REPETITION


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generator", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show library output (model loading, vLLM, Ray) and progress details on the "
                             "terminal; without it they go to a log file under the cache folder")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate a corpus from a recipe",
                         description="Generate the recipe's corpus into --out (Parquet shards under data/).")
    add_recipe_arguments(run)
    run.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<recipe name>)")
    run.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    run.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    run.add_argument("--no-score", action="store_true", help="skip scoring the corpus at the end")
    render = sub.add_parser("render", help="print sampled prompts without a model",
                            description="Sample N prompts from the recipe's grid and templates and print them.")
    add_recipe_arguments(render)
    render.add_argument("-n", type=int, default=5, help="number of prompts (default 5)")
    add_score_arguments(sub.add_parser(
        "score", help="measure the diversity of a corpus",
        description="Score a corpus (Parquet file/folder, JSONL, or saved HF dataset)."))
    add_calibrate_arguments(sub.add_parser(
        "calibrate", help="fit the embedding judge's threshold to an LLM judge",
        description="Run both judges on the same batches and pick the threshold at which the embedding "
                    "judge agrees best with the LLM judge."))
    add_export_arguments(sub.add_parser(
        "export", help="mix runs and real corpora at token weights into a trainer's format",
        description="Mix generated runs with real corpora at token weights and write them in a "
                    "pretraining framework's format (datatrove, megatron, nanotron, olmo)."))
    card = sub.add_parser("card", help="write RUN_DIR/README.md, a dataset card with plots",
                          description="Write a Hugging Face dataset card (README.md) with plots for a run folder.")
    card.add_argument("run_dir", type=Path)
    verify = sub.add_parser("verify", help="check a run folder's shards, manifest, state and reports",
                            description="Check RUN_DIR against itself; print each problem and its repair "
                                        "(exit 2 when there is one).")
    verify.add_argument("run_dir", type=Path)
    return parser


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path of a YAML recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, dotted for nested keys (e.g. size.num_docs=50); repeatable")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run folder (or NAME=PATH:WEIGHT); its name is the folder name, weight 1")
    parser.add_argument("--to", required=True, choices=FORMATS, help="trainer format")
    parser.add_argument("--out", type=Path, required=True, help="export folder (must not exist or be empty)")
    parser.add_argument("--mix", action="append", default=[], metavar="NAME=PATH:WEIGHT",
                        help="another source: a run folder, Parquet file/folder, JSONL or saved HF dataset, "
                             "with its token weight (weights are normalised); repeatable")
    parser.add_argument("--tokenizer", default=None, metavar="PATH",
                        help="local tokenizer folder or tokenizer.json (default: the embedded model's)")
    parser.add_argument("--max-repetition", type=float, default=DEFAULT_MAX_REPETITION, metavar="R",
                        help=f"most epochs of any source (default {DEFAULT_MAX_REPETITION:g})")
    parser.add_argument("--total-tokens", type=int, default=None, metavar="N",
                        help="tokens in the mix (default: the largest mix in which no source repeats)")
    parser.add_argument("--seed", type=int, default=0, help="seed of document sampling (default 0)")
    parser.add_argument("--text-field", default="text", help="text column of real corpora (default text)")


MAX_RENDER = 10_000  # most prompts `render -n` prints (drawn and printed 1000 at a time)


def cmd_render(args: argparse.Namespace) -> int:
    from generator.recipe import load_recipe
    from generator.sampling.requests import plan_samples

    if not 0 < args.n <= MAX_RENDER:
        raise UserError(f"-n {args.n}: must be {'positive' if args.n <= 0 else f'at most {MAX_RENDER}'}",
                        fix=f"e.g. -n 5 (at most -n {MAX_RENDER})")
    plan = load_recipe(args.recipe, args.overrides)
    for start in range(0, args.n, 1000):
        for s in plan_samples(plan, start, min(1000, args.n - start)):
            cells = ", ".join(f"{k}={v}" for k, v in s.values.items())
            print(f"--- sample {s.index} · template {s.template} · id {s.request.id}\n[{cells}]")
            if s.request.system:
                print(f"[system] {s.request.system}")
            print(s.request.prompt + "\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from generator.backends import engine_options, open_backend
    from generator.recipe import load_recipe, pilot_size
    from generator.run import controller
    from generator.run.resume import check_output

    plan = load_recipe(args.recipe, args.overrides)
    r = plan.recipe
    if "llm" in (r.scoring.enabled and not args.no_score and r.scoring.judge, r.target and r.target.judge):
        from generator.judges import plan_judge
        plan_judge(r.judge)  # K documents must fit the judge's context before anything runs
    out = args.out or Path("runs") / plan.recipe.name
    check_output(out, plan, resume=args.resume, force=args.force)
    if r.engine.backend == "ray":
        from generator.backends.ray import check_ray_address
        check_ray_address()
    say(f"recipe {r.name} ({plan.recipe_hash}) · model {r.model} · backend {r.engine.backend} · "
        f"{r.size.num_docs} documents → {out}")
    if r.engine.backend != "openai":
        terminal.prepare_model(r.model)
    with terminal.long_step(f"starting {r.engine.backend} engine"):
        backend = open_backend(r.engine.backend, r.model, **engine_options(r.engine))
    bars = terminal.RunProgress(r.size.num_docs, pilot_size(r))
    try:
        summary = controller.run(plan, out, backend, resume=args.resume, force=args.force, on_progress=bars)
    except controller.RunStopped as exc:
        summary = {"stopped": str(exc)}
    finally:
        bars.close()
        backend.close()
    if "num_docs" not in summary:
        say(f"error: run stopped: {summary['stopped']}")
        return 1
    print(f"wrote {summary['num_docs']} documents ({summary['completion_tokens']} tokens, "
          f"{summary['tokens_per_s']} tok/s, {summary['num_failed']} failed; endings: {summary['endings']['eos']} at "
          f"EOS, {summary['endings']['trimmed']} trimmed, {summary['endings']['cut']} cut) to {out / 'data'}")
    if r.scoring.enabled and not args.no_score:
        from generator.measure.report import score_finished_run
        with terminal.long_step(f"scoring ({r.scoring.judge} judge)"):
            report = score_finished_run(plan, out)  # at the target's threshold and K when steered
        print(f"diversity ({report['judge']} judge, K={report['k']}): "
              f"D = {report['score']:.3f} ± {report['half_width']:.3f} → {out / 'diversity.json'}")
    if "achieved" in summary:
        a, t = summary["achieved"], summary["target"]
        if "reference" in summary:
            ref = summary["reference"]
            print(f"reference D = {ref['score']:.3f} [{ref['ci_low']:.3f}, {ref['ci_high']:.3f}]; achieved "
                  f"{a['relative']:.3f} × reference, MMD² {a['shift']:.4f} (bound {t.get('max_shift')})")
        print(f"target {t['score']:g} ± {t['tolerance']}: achieved {a['score']:.3f} "
              f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}] in {summary['rounds']['pilot']} pilot + "
              f"{summary['rounds']['main']} main rounds; calibration cost "
              f"{summary['cost']['calibration_ratio']:.1%} of corpus tokens")
    from generator.export.card import write_card
    with terminal.long_step("writing the dataset card"):
        card = write_card(out)
    print(f"dataset card → {card}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from generator.export.formats import check_out, export_mix, format_weights
    from generator.export.mixes import check_mix_options, load_source, load_tokenizer, parse_source, plan_mix

    default_name = Path(args.run_dir).resolve().name.replace(" ", "_")
    specs = [parse_source(args.run_dir, default_name=default_name), *(parse_source(m) for m in args.mix)]
    check_out(args.out, inputs=[s.path for s in specs])
    check_mix_options(args.max_repetition, args.total_tokens, args.seed)
    for spec in specs:
        if not Path(spec.path).exists():
            raise UserError(f"source {spec.name!r}: {spec.path}: no such file or folder",
                            fix="check the path of the run or corpus")
    from generator.run.verify import is_run_folder, require_intact
    for spec in specs:
        if is_run_folder(Path(spec.path)):
            require_intact(Path(spec.path), "export")
    if args.tokenizer is not None and not Path(args.tokenizer).exists():
        raise UserError(f"--tokenizer {args.tokenizer}: no such file or folder",
                        fix="pass a local tokenizer folder or its tokenizer.json")
    tokenizer = load_tokenizer(args.tokenizer)
    corpora = [load_source(s, tokenizer, text_field=args.text_field) for s in specs]
    mix = plan_mix(specs, corpora, tokenizer, rng=np.random.default_rng(args.seed), seed=args.seed,
                   max_repetition=args.max_repetition, total_tokens=args.total_tokens)
    recipe = export_mix(mix, args.out, args.to)
    print(format_weights(recipe))
    print(f"wrote a {args.to} export of {recipe['total_tokens']['achieved']} tokens to {args.out}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from generator.export.card import write_card
    from generator.run.verify import require_intact
    require_intact(args.run_dir, "card")
    print(f"wrote {write_card(args.run_dir)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from generator.run.verify import intact_line, verify_run
    problems = verify_run(args.run_dir)
    for problem in problems:
        print(problem.line)
    if problems:
        say(f"error: {args.run_dir}: {len(problems)} problem(s); each line above gives its repair")
        return 2
    print(intact_line(args.run_dir))
    return 0


COMMANDS = {"run": cmd_run, "render": cmd_render, "score": cmd_score, "calibrate": cmd_calibrate,
            "export": cmd_export, "card": cmd_card, "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with terminal.quiet_libraries(args.verbose, args.command) as log_path:
        try:
            terminal.line_interval()  # a bad GENERATOR_PROGRESS_INTERVAL fails before any work
            return COMMANDS[args.command](args)
        except UserError as exc:
            say(f"error: {exc}")
            return 2
        except KeyboardInterrupt:
            say("interrupted; completed batches are on disk, continue with --resume")
            return 130
        except Exception as exc:
            if log_path is None:
                raise
            logging.getLogger(__name__).exception("%s failed", args.command)
            say(f"error: {type(exc).__name__}: {exc} (details in {log_path}; rerun with -v to see them)")
            return 1


if __name__ == "__main__":
    sys.exit(main())
