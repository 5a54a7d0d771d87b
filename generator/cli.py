"""`generator` command line: run, render, score, calibrate.

User errors print one line `error: ... (fix: ...)` and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

from generator.errors import UserError

ERR = sys.stderr  # the terminal's stderr: progress bars and error lines (library output goes to a log)


def _common_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path of a YAML recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, dotted for nested keys (e.g. size.num_docs=50); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generator", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show library output (model loading, vLLM, Ray) and progress details on the "
                             "terminal; without it they go to a log file under the cache folder")
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


def progress(**kwargs):
    """A progress bar on the terminal (never in the library log)."""
    from tqdm import tqdm
    return tqdm(file=ERR, dynamic_ncols=True, disable=False, **kwargs)


@contextlib.contextmanager
def long_step(desc: str):
    """A live 'desc: elapsed' line for a step that reports no progress of its own."""
    bar = progress(desc=desc, total=None, bar_format="{desc}: {elapsed}")
    done = threading.Event()

    def tick():
        while not done.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


def prepare_model(model: str) -> None:
    """Convert the embedded model once (about 20 s), with its own progress line."""
    from generator.models import is_prepared, resolve_model
    if model.startswith("embedded:") and not is_prepared(model):
        with long_step(f"preparing {model} (once)"):
            resolve_model(model)


class RunProgress:
    """One bar per pilot round and one for the main corpus, fed by the run loop's callback."""

    def __init__(self, num_docs: int, pilot_docs: int):
        self.num_docs, self.pilot_docs = num_docs, pilot_docs
        self.bar, self.key = None, None

    def __call__(self, state) -> None:
        key = ("pilot", state.round) if state.phase == "pilot" else ("main", 0)
        if key != self.key:
            self.close()
            self.key = key
            desc = f"pilot round {state.round}" if key[0] == "pilot" else "generating"
            self.bar = progress(total=self.pilot_docs if key[0] == "pilot" else self.num_docs,
                                unit="doc", desc=desc)
        self.bar.n = state.round_docs if key[0] == "pilot" else state.num_docs
        rate = state.completion_tokens / state.generate_s if state.generate_s else 0.0
        self.bar.set_postfix_str(f"{rate:.0f} tok/s, {state.num_failed} failed")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args: argparse.Namespace) -> int:
    from generator import controller
    from generator.backends import engine_options, open_backend
    from generator.recipe import load_recipe, pilot_size

    plan = load_recipe(args.recipe, args.overrides)
    out = args.out or Path("runs") / plan.recipe.name
    controller.check_output(out, plan, resume=args.resume, force=args.force)
    r = plan.recipe
    print(f"recipe {r.name} ({plan.recipe_hash}) · model {r.model} · backend {r.engine.backend} · "
          f"{r.size.num_docs} documents → {out}", file=ERR)
    if r.engine.backend != "openai":
        prepare_model(r.model)
    with long_step(f"starting {r.engine.backend} engine"):
        backend = open_backend(r.engine.backend, r.model, **engine_options(r.engine))
    bars = RunProgress(r.size.num_docs, pilot_size(r))
    try:
        summary = controller.run(plan, out, backend, resume=args.resume, force=args.force, on_batch=bars)
    except controller.RunStopped as exc:
        bars.close()
        print(f"error: run stopped: {exc}", file=ERR)
        return 1
    finally:
        bars.close()
        backend.close()
    print(f"wrote {summary['num_docs']} documents ({summary['completion_tokens']} tokens, "
          f"{summary['tokens_per_s']} tok/s, {summary['num_failed']} failed; endings: "
          f"{summary['num_docs'] - summary['num_trimmed'] - summary['num_truncated']} at EOS, "
          f"{summary['num_trimmed']} trimmed, {summary['num_truncated']} cut) to {out / 'data'}")
    if r.scoring.enabled and not args.no_score:
        from generator.scoring import score_run
        with long_step(f"scoring ({r.scoring.judge} judge)"):
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
    with long_step("writing the dataset card"):
        card = write_card(out)
    print(f"dataset card → {card}")
    return 0


def log_path_for(command: str) -> Path:
    """A fresh log file for this command under the cache folder (the newest 20 are kept)."""
    from generator.models import cache_dir
    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-19]:
        old.unlink(missing_ok=True)
    return folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _on_real_terminal_fds() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False  # replaced streams (e.g. a test's capture): leave them alone


@contextlib.contextmanager
def quiet_libraries(verbose: bool, command: str):
    """Unless verbose, everything libraries write (vLLM and Ray banners, model loading,
    warnings, child processes' output) goes to a log file; the CLI's own lines and bars go to
    the terminal. Yields the log path (None when nothing is redirected)."""
    global ERR
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if verbose or not _on_real_terminal_fds():
        ERR = sys.stderr
        yield None
        return
    path = log_path_for(command)
    for name, value in {"VLLM_CONFIGURE_LOGGING": "0", "TRANSFORMERS_VERBOSITY": "warning",
                        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "RAY_DEDUP_LOGS": "0"}.items():
        os.environ.setdefault(name, value)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    old_stdout = sys.stdout
    sys.stdout = open(saved_out, "w", buffering=1, encoding="utf-8", closefd=False)
    ERR = open(saved_err, "w", buffering=1, encoding="utf-8", closefd=False)
    logging.getLogger().setLevel(logging.INFO)  # the log file gets the details
    try:
        yield path
    finally:
        sys.stdout.flush()
        ERR.flush()
        sys.stdout, ERR = old_stdout, sys.stderr
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    commands = {"run": cmd_run, "render": cmd_render, "card": cmd_card}
    with quiet_libraries(args.verbose, args.command) as log_path:
        try:
            if args.command in commands:
                return commands[args.command](args)
            if args.command == "export":
                from generator.export import run_export
                return run_export(args)
            from generator import scoring
            return {"score": scoring.run_score, "calibrate": scoring.run_calibrate}[args.command](args)
        except UserError as exc:
            print(f"error: {exc}", file=ERR)
            return 2
        except KeyboardInterrupt:
            print("interrupted; completed batches are on disk, continue with --resume", file=ERR)
            return 130
        except Exception as exc:
            if log_path is None:
                raise
            logging.getLogger(__name__).exception("%s failed", args.command)
            print(f"error: {type(exc).__name__}: {exc} (details in {log_path}; rerun with -v to see them)",
                  file=ERR)
            return 1


def cmd_card(args: argparse.Namespace) -> int:
    from generator.card import write_card
    print(f"wrote {write_card(args.run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
