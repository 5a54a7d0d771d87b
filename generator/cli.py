"""`generator` command line: run, render, score, calibrate, export, card, verify.

Every command checks its arguments and inputs before any heavy step. User errors print one
line `error: ... (fix: ...)` and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
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
                            description="Sample N prompts from the recipe's grid and templates and "
                                        "print them.")
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
                          description="Write a Hugging Face dataset card (README.md) with plots for "
                                      "a run folder.")
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
    parser.add_argument("run_dir",
                        help="a run folder (or NAME=PATH:WEIGHT); its name is the folder name, weight 1")
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
    import generator

    if not 0 < args.n <= MAX_RENDER:
        raise UserError(f"-n {args.n}: must be {'positive' if args.n <= 0 else f'at most {MAX_RENDER}'}",
                        fix=f"e.g. -n 5 (at most -n {MAX_RENDER})")
    plan = generator.load_recipe(args.recipe, args.overrides)
    for start in range(0, args.n, 1000):
        for p in generator.render(plan, min(1000, args.n - start), start=start):
            cells = ", ".join(f"{k}={v}" for k, v in p.cell)
            print(f"--- sample {p.index} · template {p.template} · id {p.id}\n[{cells}]")
            if p.system:
                print(f"[system] {p.system}")
            print(p.prompt + "\n")
    return 0


class RunDisplay:
    """`generator.run`'s progress on the terminal: the header once the inputs are checked, a live
    line for each slow step (model conversion, engine start, scoring, the card), one bar per
    pilot round and one for the corpus."""

    def __init__(self, plan, out: Path):
        from generator.recipe import pilot_size
        self.plan, self.out = plan, out
        self.bars = terminal.RunProgress(plan.recipe.size.num_docs, pilot_size(plan.recipe))
        self.step = contextlib.ExitStack()

    def __call__(self, p) -> None:
        if p.stage in ("pilot", "generate"):
            self.step.close()
            self.bars.show(p)
            return
        self.close()
        r = self.plan.recipe
        if p.stage == "start":
            say(f"recipe {r.name} ({self.plan.recipe_hash}) · model {r.model} · "
                f"backend {r.engine.backend} · {r.size.num_docs} documents → {self.out}")
            return
        desc = {"prepare": f"preparing {r.model} (once) and starting the {r.engine.backend} engine",
                "engine": f"starting {r.engine.backend} engine",
                "score": f"scoring ({r.scoring.judge} judge)", "card": "writing the dataset card"}[p.stage]
        self.step.enter_context(terminal.long_step(desc))

    def close(self) -> None:
        self.step.close()
        self.bars.close()


def cmd_run(args: argparse.Namespace) -> int:
    import generator
    from generator.recipe import read_recipe

    resume_from = None  # a resume reuses the source count its run folder recorded
    if args.resume:
        resume_from = args.out or Path("runs") / read_recipe(args.recipe, args.overrides).name
    plan = generator.load_recipe(args.recipe, args.overrides, resume_from=resume_from)
    out = args.out or Path("runs") / plan.recipe.name
    display = RunDisplay(plan, out)
    try:
        result = generator.run(plan, out, resume=args.resume, force=args.force, score=not args.no_score,
                               on_progress=display)
    finally:
        display.close()
    if result.stopped:
        say(f"error: run stopped: {result.stopped}")
        return 1
    print(run_lines(result))
    return 0


def run_lines(result) -> str:
    """What `generator run` prints of a finished run (a generator.results.RunResult)."""
    e, out = result.endings, result.out
    lines = [f"wrote {result.num_docs} documents ({result.completion_tokens} tokens, "
             f"{result.tokens_per_s} tok/s, "
             f"{result.num_failed} failed; endings: {e.eos} at EOS, {e.trimmed} trimmed, {e.cut} cut) "
             f"to {out / 'data'}"]
    if result.rejected:
        gates = ", ".join(f"{gate} {n}" for gate, n in result.rejected)
        lines.append(f"quality gates rejected {sum(n for _, n in result.rejected)} documents ({gates}), "
                     f"each replaced by a new sample → {out / 'rejected.jsonl'}")
    if result.diversity is not None:
        d = result.diversity
        lines.append(f"diversity ({d.judge} judge, K={d.k}): D = {d.score:.3f} ± {d.half_width:.3f} "
                     f"→ {out / 'diversity.json'}")
    t = result.target
    if t is not None:
        if t.reference_score is not None:
            low, high = t.reference_ci
            lines.append(f"reference D = {t.reference_score:.3f} [{low:.3f}, {high:.3f}]; "
                         f"achieved {t.relative:.3f} × reference, MMD² {t.shift:.4f} (bound {t.max_shift})")
        lines.append(f"target {t.score:g} ± {t.tolerance}: achieved {t.achieved:.3f} "
                     f"[{t.ci_low:.3f}, {t.ci_high:.3f}] "
                     f"in {t.pilot_rounds} pilot + {t.main_rounds} main rounds; calibration cost "
                     f"{t.calibration_ratio:.1%} of corpus tokens")
        if t.out_of_reach:
            lines.append(f"out of reach: {t.out_of_reach}")
    if result.card is not None:
        lines.append(f"dataset card → {result.card}")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    import dataclasses

    import generator
    from generator.export.formats import format_weights

    result = generator.export(args.run_dir, args.out, to=args.to, mix=args.mix, tokenizer=args.tokenizer,
                              max_repetition=args.max_repetition, total_tokens=args.total_tokens,
                              seed=args.seed, text_field=args.text_field)
    print(format_weights({"sources": [dataclasses.asdict(s) for s in result.sources]}))
    print(f"wrote a {args.to} export of {result.total_tokens} tokens to {args.out}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    import generator
    print(f"wrote {generator.write_card(args.run_dir)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import generator
    result = generator.verify(args.run_dir)
    for problem in result.problems:
        print(problem.line)
    if not result.ok:
        say(f"error: {args.run_dir}: {len(result.problems)} problem(s); each line above gives its repair")
        return 2
    print(result.line)
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
