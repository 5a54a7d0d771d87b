"""The run loop: sample → generate → write, batch after batch, until the corpus is complete.

Each batch ends with its shard on disk and `state.json` updated, so a killed run resumes from
the last completed batch (`--resume`) with the same sample indices and weights.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from generator.errors import UserError
from generator.generation import plan_samples, split_results
from generator.recipe import Plan, recipe_dict
from generator.records import Backend
from generator.writers import append_failures, write_json, write_shard, write_yaml

log = logging.getLogger(__name__)
OUR_FILES = ("data", "recipe.resolved.yaml", "state.json", "summary.json", "failures.jsonl",
             "diversity.json", "controller.jsonl", "weights.yaml", "grid.added.yaml")


@dataclass
class RunState:
    next_index: int = 0  # the sample index the next batch starts at
    num_docs: int = 0
    num_attempted: int = 0
    num_failed: int = 0
    num_truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batches: int = 0
    round: int = 0
    weights: dict = field(default_factory=dict)
    generate_s: float = 0.0
    stopped: str = ""


class RunStopped(Exception):
    """The run stopped before completing (failure rate exceeded); the summary is written."""


def check_output(out: Path, plan: Plan, *, resume: bool, force: bool) -> str:
    """Decide what to do with `out` without touching it: "new", "resume" or "overwrite"."""
    if not (out.exists() and any(out.iterdir())):
        return "new"
    resolved = out / "recipe.resolved.yaml"
    previous = yaml.safe_load(resolved.read_text()) if resolved.is_file() else None
    same = isinstance(previous, dict) and previous.get("recipe_hash") == plan.recipe_hash
    if resume and same:
        return "resume"
    if resume:
        raise UserError(f"{out}: cannot resume, it is not a run of this recipe (hash differs or missing)",
                        fix="pass the same recipe, or a new --out")
    if not force:
        what = "a run of this recipe" if same else "not empty and not a run of this recipe"
        raise UserError(f"{out}: output folder is {what}",
                        fix="add --resume to continue it, --force to overwrite, or choose a new --out")
    return "overwrite"


def prepare_output(out: Path, plan: Plan, *, resume: bool, force: bool) -> RunState:
    """Check the output folder, write the resolved recipe, return the state to start from."""
    action = check_output(out, plan, resume=resume, force=force)
    if action == "resume":
        state_file = out / "state.json"
        return RunState(**json.loads(state_file.read_text())) if state_file.is_file() else RunState()
    if action == "overwrite":
        for name in OUR_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "recipe.resolved.yaml", {"recipe_hash": plan.recipe_hash, **recipe_dict(plan.recipe)})
    return RunState()


def generate_batch(plan: Plan, out: Path, backend: Backend, state: RunState, n: int) -> RunState:
    """Generate up to `n` documents in one engine call and persist them. Returns the new state."""
    rng = np.random.default_rng([plan.recipe.seed, state.next_index])
    samples = plan_samples(plan, state.next_index, n, rng, state.weights)
    t0 = time.perf_counter()
    results = backend.generate([s.request for s in samples])
    elapsed = time.perf_counter() - t0
    docs, failures = split_results(samples, results, plan=plan, backend=backend.name, round=state.round)
    if docs:
        write_shard(out, docs)
    append_failures(out, failures)
    new = dataclasses.replace(
        state, next_index=state.next_index + n, num_docs=state.num_docs + len(docs),
        num_attempted=state.num_attempted + n, num_failed=state.num_failed + len(failures),
        num_truncated=state.num_truncated + sum(d.finish_reason == "length" for d in docs),
        prompt_tokens=state.prompt_tokens + sum(r.num_prompt_tokens for r in results),
        completion_tokens=state.completion_tokens + sum(r.num_tokens for r in results),
        batches=state.batches + 1, generate_s=state.generate_s + elapsed)
    write_json(out / "state.json", dataclasses.asdict(new))
    return new


def check_failure_rate(plan: Plan, state: RunState) -> str:
    """A reason to stop when too many attempted rows failed (after a first full batch)."""
    if state.num_attempted < plan.recipe.size.batch_size:
        return ""
    rate = state.num_failed / state.num_attempted
    if rate > plan.recipe.max_failure_rate:
        return (f"failure rate {rate:.1%} ({state.num_failed}/{state.num_attempted} rows) is above "
                f"max_failure_rate {plan.recipe.max_failure_rate:.0%}; see failures.jsonl")
    return ""


def run(plan: Plan, out: Path, backend: Backend, *, resume: bool = False, force: bool = False,
        on_batch: Callable[[RunState], None] | None = None) -> dict:
    """Generate the recipe's corpus into `out`; return the summary (also in summary.json)."""
    started = time.perf_counter()
    state = prepare_output(out, plan, resume=resume, force=force)
    target = plan.recipe.size.num_docs
    while state.num_docs < target:
        n = min(plan.recipe.size.batch_size, target - state.num_docs)
        state = generate_batch(plan, out, backend, state, n)
        if on_batch:
            on_batch(state)
        reason = check_failure_rate(plan, state)
        if reason:
            state = dataclasses.replace(state, stopped=reason)
            break
    summary = write_summary(out, plan, state, time.perf_counter() - started, backend)
    if state.stopped:
        raise RunStopped(state.stopped)
    return summary


def write_summary(out: Path, plan: Plan, state: RunState, wall_s: float, backend: Backend) -> dict:
    summary = {
        "recipe": plan.recipe.name, "recipe_hash": plan.recipe_hash, "model": plan.recipe.model,
        "backend": backend.name, "num_docs": state.num_docs, "requested_docs": plan.recipe.size.num_docs,
        "num_attempted": state.num_attempted, "num_failed": state.num_failed,
        "failure_rate": state.num_failed / max(1, state.num_attempted),
        "num_truncated": state.num_truncated, "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens, "batches": state.batches,
        "generate_s": round(state.generate_s, 3), "wall_s": round(wall_s, 3),
        "tokens_per_s": round(state.completion_tokens / state.generate_s, 2) if state.generate_s else 0.0,
        "stopped": state.stopped or None,
    }
    write_json(out / "summary.json", summary)
    return summary
