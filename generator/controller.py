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
from generator import growth, steering
from generator.dedup import Deduper
from generator.recipe import Plan, pilot_size, recipe_dict
from generator.records import Backend
from generator.writers import append_failures, read_documents, shard_paths, write_json, write_shard, write_yaml

log = logging.getLogger(__name__)
OUR_FILES = ("data", "pilot", "duplicates.jsonl", "plots", "criteria.json", "recipe.resolved.yaml", "state.json", "summary.json", "failures.jsonl",
             "diversity.json", "controller.jsonl", "weights.yaml", "grid.added.yaml")


@dataclass
class RunState:
    next_index: int = 0  # the sample index the next batch starts at
    num_docs: int = 0
    num_attempted: int = 0
    num_failed: int = 0
    num_truncated: int = 0  # kept as cut at max_tokens
    num_trimmed: int = 0  # cut at max_tokens, trimmed back to a complete sentence
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batches: int = 0
    round: int = 0
    weights: dict = field(default_factory=dict)
    generate_s: float = 0.0
    stopped: str = ""
    # Steering to a target (empty/defaults when the recipe has none)
    phase: str = "fill"  # "fill" | "pilot" | "main" | "done"
    concentration: float = 1.0
    history: list = field(default_factory=list)  # [c, pilot score] per pilot round
    round_end_docs: int = 0  # the main-phase round in progress ends at this many documents
    pilot_docs: int = 0
    pilot_tokens: int = 0  # prompt + completion tokens of every pilot round
    discarded_pilot_tokens: int = 0  # of pilot rounds not kept in the corpus
    judge_calls: int = 0
    judge_tokens: int = 0
    added_topics: dict = field(default_factory=dict)  # domain → topics added by grid growth
    round_docs: int = 0  # documents generated in the current pilot round
    round_tokens: int = 0  # tokens spent in the current pilot round
    num_duplicates: int = 0  # generated documents dropped as exact or near duplicates
    duplicates_exact: int = 0
    duplicates_near: int = 0
    num_shards: int = 0  # shards in data/ that this state accounts for


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
        state = RunState(**json.loads(state_file.read_text())) if state_file.is_file() else RunState()
        return reconcile(out, state)
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


def reconcile(out: Path, state: RunState) -> RunState:
    """After a crash: drop shards written after the last saved state (their batch is redone
    with the same sample indices), and restart an unfinished pilot round from scratch."""
    for extra in shard_paths(out)[state.num_shards:]:
        log.warning("removing %s, written after the last saved state", extra)
        extra.unlink()
    if state.phase == "pilot" and state.round_docs:
        shutil.rmtree(pilot_dir(out, state.round), ignore_errors=True)
        state = dataclasses.replace(state, pilot_docs=state.pilot_docs - state.round_docs, round_docs=0,
                                    discarded_pilot_tokens=state.discarded_pilot_tokens + state.round_tokens,
                                    round_tokens=0)
    return state


def pilot_dir(out: Path, round: int) -> Path:
    return out / "pilot" / f"round-{round:02d}"


def generate_batch(plan: Plan, out: Path, backend: Backend, state: RunState, n: int,
                   deduper: Deduper | None = None) -> RunState:
    """Generate `n` samples in one engine call and persist the documents (into the pilot folder
    of the current round during the pilot phase). Returns the new state, also in state.json."""
    rng = np.random.default_rng([plan.recipe.seed, state.next_index])
    samples = plan_samples(plan, state.next_index, n, rng, state.weights)
    t0 = time.perf_counter()
    results = backend.generate([s.request for s in samples])
    elapsed = time.perf_counter() - t0
    docs, failures = split_results(samples, results, plan=plan, backend=backend.name, round=state.round)
    docs, duplicates = drop_duplicates(docs, deduper)
    pilot = state.phase == "pilot"
    if docs:
        write_shard(pilot_dir(out, state.round) if pilot else out, docs)
    append_failures(out, failures)
    append_failures(out, duplicates, name="duplicates.jsonl")
    tokens = sum(r.num_prompt_tokens + r.num_tokens for r in results)
    new = dataclasses.replace(
        state, next_index=state.next_index + n,
        num_docs=state.num_docs + (0 if pilot else len(docs)),
        pilot_docs=state.pilot_docs + (len(docs) if pilot else 0),
        round_docs=state.round_docs + (len(docs) if pilot else 0),
        round_tokens=state.round_tokens + (tokens if pilot else 0),
        num_shards=state.num_shards + (1 if docs and not pilot else 0),
        pilot_tokens=state.pilot_tokens + (tokens if pilot else 0),
        num_attempted=state.num_attempted + n, num_failed=state.num_failed + len(failures),
        num_duplicates=state.num_duplicates + len(duplicates),
        duplicates_exact=state.duplicates_exact + sum(d["reason"].startswith("exact") for d in duplicates),
        duplicates_near=state.duplicates_near + sum(d["reason"].startswith("near") for d in duplicates),
        num_truncated=state.num_truncated + sum(d.finish_reason == "length" for d in docs),
        num_trimmed=state.num_trimmed + sum(d.finish_reason == "trimmed" for d in docs),
        prompt_tokens=state.prompt_tokens + sum(r.num_prompt_tokens for r in results),
        completion_tokens=state.completion_tokens + sum(r.num_tokens for r in results),
        batches=state.batches + 1, generate_s=state.generate_s + elapsed)
    save_state(out, new)
    return new


def drop_duplicates(docs: list, deduper: Deduper | None) -> tuple[list, list[dict]]:
    if deduper is None:
        return docs, []
    kept, dropped = [], []
    for d in docs:
        reason = deduper.check(d.id, d.text)
        if reason is None:
            kept.append(d)
        else:
            dropped.append({"id": d.id, "sample_index": d.sample_index, "round": d.round,
                            "template": d.template, "reason": reason, "text": d.text[:300]})
    return kept, dropped


def open_deduper(plan: Plan, out: Path) -> Deduper | None:
    """The run's duplicate index, holding every document already kept (for --resume)."""
    d = plan.recipe.dedup
    if not (d.exact or d.near):
        return None
    deduper = Deduper(exact=d.exact, near=d.near, threshold=d.threshold, num_perm=d.num_perm,
                      seed=plan.recipe.seed)
    for root in [out, *sorted((out / "pilot").glob("round-*"))]:
        table = read_documents(root, columns=["id", "text"])
        deduper.index(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    return deduper


def save_state(out: Path, state: RunState) -> None:
    write_json(out / "state.json", dataclasses.asdict(state))


def check_failure_rate(plan: Plan, state: RunState) -> str:
    """A reason to stop when too many attempted rows failed (after a first full batch)."""
    if state.num_attempted < plan.recipe.size.batch_size:
        return ""
    rate = state.num_failed / state.num_attempted
    if rate > plan.recipe.max_failure_rate:
        return (f"failure rate {rate:.1%} ({state.num_failed}/{state.num_attempted} rows) is above "
                f"max_failure_rate {plan.recipe.max_failure_rate:.0%}; see failures.jsonl")
    dup_rate = state.num_duplicates / state.num_attempted
    if dup_rate > plan.recipe.dedup.max_duplicate_rate:
        return (f"duplicate rate {dup_rate:.1%} ({state.num_duplicates}/{state.num_attempted} rows) is above "
                f"dedup.max_duplicate_rate {plan.recipe.dedup.max_duplicate_rate:.0%}: the model keeps "
                "repeating itself; see duplicates.jsonl (raise temperature or widen the grid)")
    return ""


def fill(plan: Plan, out: Path, backend: Backend, state: RunState, until_docs: int,
         on_batch: Callable[[RunState], None] | None = None, deduper: Deduper | None = None) -> RunState:
    """Generate batches until `until_docs` documents exist (in the corpus, or in the current
    pilot round during the pilot phase), or the failure rate stops the run."""
    def have(s: RunState) -> int:
        return s.round_docs if s.phase == "pilot" else s.num_docs

    while have(state) < until_docs and not state.stopped:
        n = min(plan.recipe.size.batch_size, until_docs - have(state))
        state = generate_batch(plan, out, backend, state, n, deduper)
        if on_batch:
            on_batch(state)
        reason = check_failure_rate(plan, state)
        if reason:
            state = dataclasses.replace(state, stopped=reason)
    return state


def run(plan: Plan, out: Path, backend: Backend, *, resume: bool = False, force: bool = False,
        on_batch: Callable[[RunState], None] | None = None, judge=None) -> dict:
    """Generate the recipe's corpus into `out`; return the summary (also in summary.json).
    With a `target` in the recipe, steer the sampling weights until the corpus scores within
    tolerance of it (see `steer`); `judge` overrides the recipe's judge (tests)."""
    started = time.perf_counter()
    state = prepare_output(out, plan, resume=resume, force=force)
    deduper = open_deduper(plan, out)
    if plan.recipe.target is None:
        state = fill(plan, out, backend, state, plan.recipe.size.num_docs, on_batch, deduper)
        extra = {}
    else:
        state, extra = steer(plan, out, backend, state, judge=judge, on_batch=on_batch, deduper=deduper)
    summary = write_summary(out, plan, state, time.perf_counter() - started, backend, extra)
    if state.stopped:
        raise RunStopped(state.stopped)
    return summary


def write_summary(out: Path, plan: Plan, state: RunState, wall_s: float, backend: Backend,
                  extra: dict | None = None) -> dict:
    summary = {
        "recipe": plan.recipe.name, "recipe_hash": plan.recipe_hash, "model": plan.recipe.model,
        "backend": backend.name, "num_docs": state.num_docs, "requested_docs": plan.recipe.size.num_docs,
        "num_attempted": state.num_attempted, "num_failed": state.num_failed,
        "failure_rate": state.num_failed / max(1, state.num_attempted),
        "num_truncated": state.num_truncated, "num_trimmed": state.num_trimmed,
        "duplicates": {"exact": state.duplicates_exact, "near": state.duplicates_near},
        "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens, "batches": state.batches,
        "generate_s": round(state.generate_s, 3), "wall_s": round(wall_s, 3),
        "tokens_per_s": round(state.completion_tokens / state.generate_s, 2) if state.generate_s else 0.0,
        "stopped": state.stopped or None,
        **(extra or {}),
    }
    write_json(out / "summary.json", summary)
    return summary


def steer(plan: Plan, out: Path, backend: Backend, state: RunState, *, judge=None,
          on_batch: Callable[[RunState], None] | None = None,
          deduper: Deduper | None = None) -> tuple[RunState, dict]:
    """Pilot rounds → score → move the concentration knob, until a pilot is within half the
    tolerance (or the pilot budget is spent); then the rest of the corpus in rounds, scoring the
    whole corpus after each and correcting; finally an independent re-measure of the corpus."""
    t, seed = plan.recipe.target, plan.recipe.seed
    plan = growth.with_added_topics(plan, state.added_topics)
    orders = steering.axis_orders(plan.grid, seed)
    judge = judge or steering.open_judge(plan, out)
    if state.phase == "fill":
        state = dataclasses.replace(state, phase="pilot", concentration=1.0,
                                    weights=steering.concentration_weights(orders, 1.0))
    growth_rounds = sum(1 for h in state.history if h[2] == "grow")
    while state.phase == "pilot" and not state.stopped:
        this_round = state.round
        state = fill(plan, out, backend, state, pilot_size(plan.recipe), on_batch, deduper)
        if state.stopped:
            break
        report, _ = steering.measure(steering.read_texts(pilot_dir(out, state.round)), judge, t,
                                     np.random.default_rng([seed, 101, state.round]))
        state = steering.add_judge_cost(state, report)
        c, score = state.concentration, report.score
        history = [*state.history, [c, score, "pilot"]]
        state = dataclasses.replace(state, history=history)
        points = [(h[0], h[1]) for h in history if h[2] == "pilot"]
        close = abs(score - t.score) <= min(t.tolerance, max(t.tolerance / 2, report.half_width))
        best_c, best_score = min(points, key=lambda p: abs(p[1] - t.score))
        if close or (len(points) >= t.max_pilot_rounds and best_c == c):
            action = f"accept c={c:.3f}" if close else f"pilot budget spent; keep the closest, c={c:.3f}"
            state = dataclasses.replace(steering.accept_pilot(out, state), phase="main")
        elif len(points) >= t.max_pilot_rounds or steering.bracket_width(points, t.score) < steering.MIN_BRACKET:
            why = "pilot budget spent" if len(points) >= t.max_pilot_rounds else "converged on c"
            action = f"{why}; continue at the closest, c={best_c:.3f} (D={best_score:.2f})"
            state = dataclasses.replace(steering.next_pilot_round(out, state), phase="main", concentration=best_c,
                                        weights=steering.concentration_weights(orders, best_c))
        else:
            nxt = steering.next_concentration(points, t.score, floor=1 / t.k)
            if nxt is None and score < t.score and t.grow_grid and growth_rounds < t.max_growth_rounds:
                added = growth.grow_topics(plan, backend, out, rng=np.random.default_rng([seed, 202, state.round]))
                merged = growth.merge_added(state.added_topics, added)
                growth.write_added(out, merged)
                plan = growth.with_added_topics(plan, merged)
                orders = steering.axis_orders(plan.grid, seed)
                growth_rounds += 1
                action = f"grid growth: +{sum(len(v) for v in added.values())} topics"
                state = dataclasses.replace(state, added_topics=merged, history=[*history[:-1], [c, score, "grow"]],
                                            weights=steering.concentration_weights(orders, 1.0))
            elif nxt is None:
                lo, hi = min(p[1] for p in points), max(p[1] for p in points)
                side = "above" if score < t.score else "below"
                action = "stop"
                state = dataclasses.replace(state, phase="done", stopped=(
                    f"target {t.score} is {side} what this grid reaches with judge {judge.name} "
                    f"(measured {lo:.2f}..{hi:.2f}); best reachable score {hi if side == 'above' else lo:.2f}"))
            else:
                action = f"pilot again at c={nxt:.3f}"
                state = dataclasses.replace(state, concentration=nxt,
                                            weights=steering.concentration_weights(orders, nxt))
            if state.phase == "pilot":
                state = steering.next_pilot_round(out, state)
        steering.log_round(out, this_round, state, report, t, action, phase="pilot", concentration=c)
        save_state(out, state)
    num_docs = plan.recipe.size.num_docs
    while state.phase == "main" and state.num_docs < num_docs and not state.stopped:
        left = num_docs - state.num_docs
        rounds_left = max(1, t.num_rounds - sum(1 for h in state.history if h[2] == "main"))
        end = state.round_end_docs if state.round_end_docs > state.num_docs else \
            state.num_docs + -(-left // rounds_left)
        state = dataclasses.replace(state, round_end_docs=end)
        this_round, round_c = state.round, state.concentration
        state = fill(plan, out, backend, state, end, on_batch, deduper)
        texts, metadata = steering.read_corpus(out)
        report, attribution = steering.measure(texts, judge, t, np.random.default_rng([seed, 303, state.round]),
                                               metadata=metadata)
        state = steering.add_judge_cost(state, report)
        action = "keep"
        if abs(report.score - t.score) > t.tolerance / 2 and state.num_docs < num_docs:
            pilots = [(h[0], h[1]) for h in state.history if h[2] == "pilot"]  # pure, not mixtures
            c = steering.correct_concentration(pilots, state.concentration, report.score, t.score)
            weights = steering.concentration_weights(orders, c)
            if t.reweight_rate > 0 and attribution:
                weights = steering.update_weights(weights, attribution, rate=t.reweight_rate,
                                                  direction=1 if report.score < t.score else -1)
            action = f"correct c {state.concentration:.3f} → {c:.3f}, reweight cells"
            state = dataclasses.replace(state, concentration=c, weights=weights)
        state = dataclasses.replace(state, history=[*state.history, [round_c, report.score, "main"]],
                                    round=state.round + 1)
        steering.log_round(out, this_round, state, report, t, action, phase="main", concentration=round_c)
        save_state(out, state)
    return finish(plan, out, state, judge)


def finish(plan: Plan, out: Path, state: RunState, judge) -> tuple[RunState, dict]:
    """Re-measure the finished corpus as a whole (fresh batches), write weights and plots."""
    from generator.plots import plot_trajectory, plot_weights

    t = plan.recipe.target
    extra: dict = {"target": {"score": t.score, "tolerance": t.tolerance, "judge": judge.name, "k": t.k}}
    if not state.stopped and state.num_docs:
        texts, _ = steering.read_corpus(out)
        report, _ = steering.measure(texts, judge, t, np.random.default_rng([plan.recipe.seed, 909]))
        state = steering.add_judge_cost(state, report)
        extra["achieved"] = {"score": report.score, "ci_low": report.ci_low, "ci_high": report.ci_high,
                             "half_width": report.half_width, "num_batches": report.num_scored,
                             "within_tolerance": abs(report.score - t.score) <= t.tolerance}
    corpus_tokens = max(1, state.prompt_tokens + state.completion_tokens - state.discarded_pilot_tokens)
    extra["rounds"] = {"pilot": sum(h[2] != "main" for h in state.history),
                       "main": sum(h[2] == "main" for h in state.history)}
    extra["cost"] = {"pilot_tokens": state.pilot_tokens, "discarded_pilot_tokens": state.discarded_pilot_tokens,
                     "judge_calls": state.judge_calls, "judge_tokens": state.judge_tokens,
                     "corpus_tokens": corpus_tokens,
                     "calibration_ratio": (state.discarded_pilot_tokens + state.judge_tokens) / corpus_tokens}
    extra["final_concentration"] = state.concentration
    write_yaml(out / "weights.yaml", steering.weights_file(state.weights))
    plot_trajectory(out / "controller.jsonl", out / "plots" / "score_trajectory.png")
    plot_weights(state.weights, out / "plots" / "weights.png")
    return dataclasses.replace(state, phase="done" if not state.stopped else state.phase), extra
