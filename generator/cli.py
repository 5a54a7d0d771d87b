"""`generator` command line: run, render, score, calibrate.

User errors print one line `error: ... (fix: ...)` and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from generator.errors import UserError


def _common_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path of a YAML recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, dotted for nested keys (e.g. size.num_docs=50); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generator", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate a corpus from a recipe",
                         description="Generate the recipe's corpus into --out (Parquet shards under data/).")
    _common_recipe_args(run)
    run.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<recipe name>)")
    run.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    run.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    run.add_argument("--no-score", action="store_true", help="skip scoring the corpus at the end")

    render = sub.add_parser("render", help="print sampled prompts without a model",
                            description="Sample N prompts from the recipe's grid and templates and print them.")
    _common_recipe_args(render)
    render.add_argument("-n", type=int, default=5, help="number of prompts (default 5)")

    from generator import scoring
    score = sub.add_parser("score", help="measure the diversity of a corpus",
                           description="Score a corpus (Parquet file/folder, JSONL, or saved HF dataset).")
    scoring.add_score_arguments(score)
    calibrate = sub.add_parser("calibrate", help="fit the embedding judge's threshold to an LLM judge",
                               description="Run both judges on the same batches and pick the threshold "
                                           "at which the embedding judge agrees best with the LLM judge.")
    scoring.add_calibrate_arguments(calibrate)
    from generator import export
    export.add_export_arguments(sub.add_parser(
        "export", help="mix runs and real corpora at token weights into a trainer's format",
        description="Mix generated runs with real corpora at token weights and write them in a "
                    "pretraining framework's format (datatrove, megatron, nanotron, olmo)."))
    card = sub.add_parser("card", help="write RUN_DIR/README.md, a dataset card with plots",
                          description="Write a Hugging Face dataset card (README.md) with plots for a run folder.")
    card.add_argument("run_dir", type=Path)
    return parser


def cmd_render(args: argparse.Namespace) -> int:
    import numpy as np

    from generator.generation import plan_samples
    from generator.recipe import load_recipe

    if args.n <= 0:
        raise UserError(f"-n {args.n}: must be positive", fix="e.g. -n 5")
    plan = load_recipe(args.recipe, args.overrides)
    samples = plan_samples(plan, 0, args.n, np.random.default_rng([plan.recipe.seed, 0]))
    for s in samples:
        cells = ", ".join(f"{k}={v}" for k, v in s.values.items())
        print(f"--- sample {s.index} · template {s.template} · id {s.request.id}\n[{cells}]")
        if s.request.system:
            print(f"[system] {s.request.system}")
        print(s.request.prompt + "\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from generator import controller
    from generator.backends import engine_options, open_backend
    from generator.recipe import load_recipe

    plan = load_recipe(args.recipe, args.overrides)
    out = args.out or Path("runs") / plan.recipe.name
    controller.check_output(out, plan, resume=args.resume, force=args.force)
    r = plan.recipe
    print(f"recipe {r.name} ({plan.recipe_hash}) · model {r.model} · backend {r.engine.backend} · "
          f"{r.size.num_docs} documents → {out}", file=sys.stderr)
    backend = open_backend(r.engine.backend, r.model, **engine_options(r.engine))
    bar = tqdm(total=r.size.num_docs, unit="doc", desc="generating", dynamic_ncols=True)

    def on_batch(state: controller.RunState) -> None:
        bar.set_description(f"pilot round {state.round} ({state.round_docs} docs)" if state.phase == "pilot"
                            else "generating")
        bar.n = state.num_docs
        rate = state.completion_tokens / state.generate_s if state.generate_s else 0.0
        bar.set_postfix_str(f"{rate:.0f} tok/s, {state.num_failed} failed")
        bar.refresh()

    try:
        summary = controller.run(plan, out, backend, resume=args.resume, force=args.force,
                                 on_batch=on_batch)
    except controller.RunStopped as exc:
        bar.close()
        print(f"error: run stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        backend.close()
    print(f"wrote {summary['num_docs']} documents ({summary['completion_tokens']} tokens, "
          f"{summary['tokens_per_s']} tok/s, {summary['num_failed']} failed) to {out / 'data'}")
    if r.scoring.enabled and not args.no_score:
        from generator.scoring import score_run
        report = score_run(out, judge=r.scoring.judge, k=r.scoring.k, seed=r.seed,
                           num_batches=r.scoring.num_batches)
        print(f"diversity ({report['judge']} judge, K={report['k']}): "
              f"D = {report['score']:.3f} ± {report['half_width']:.3f} → {out / 'diversity.json'}")
    if "achieved" in summary:
        a, t = summary["achieved"], summary["target"]
        print(f"target {t['score']} ± {t['tolerance']}: achieved {a['score']:.3f} "
              f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}] in {summary['rounds']['pilot']} pilot + "
              f"{summary['rounds']['main']} main rounds; calibration cost "
              f"{summary['cost']['calibration_ratio']:.1%} of corpus tokens")
    from generator.card import write_card
    print(f"dataset card → {write_card(out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    commands = {"run": cmd_run, "render": cmd_render}
    try:
        if args.command in commands:
            return commands[args.command](args)
        if args.command == "export":
            from generator.export import run_export
            return run_export(args)
        if args.command == "card":
            from generator.card import write_card
            print(f"wrote {write_card(args.run_dir)}")
            return 0
        from generator import scoring
        return {"score": scoring.run_score, "calibrate": scoring.run_calibrate}[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed batches are on disk, continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
