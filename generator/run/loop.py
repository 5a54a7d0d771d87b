"""The generation loop: sample -> generate -> dedup -> write, batch after batch.

Each batch ends with its shard on disk and `state.json` updated, so a killed run resumes from
the last completed batch with the same sample indices and weights. During a pilot round the
shards go to the round's folder instead of the corpus.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np

from generator.files import append_jsonl, read_documents, write_json, write_shard
from generator.records import Backend, Document, Result
from generator.recipe import Plan
from generator.run.dedup import Deduper
from generator.run.documents import split_results
from generator.run.state import Counters, RunState, pilot_dir, save_state
from generator.sampling.requests import plan_samples

OnBatch = Callable[[RunState], None]


def generate_batch(plan: Plan, out: Path, backend: Backend, state: RunState, n: int,
                   deduper: Deduper | None = None) -> RunState:
    """Generate `n` samples in one engine call and persist the documents; return the new
    state (also written to state.json)."""
    c, s = state.counters, state.steering
    samples = plan_samples(plan, c.next_index, n, np.random.default_rng([plan.recipe.seed, c.next_index]), s.weights)
    t0 = time.perf_counter()
    results = backend.generate([x.request for x in samples])
    elapsed = time.perf_counter() - t0
    docs, failures = split_results(samples, results, plan=plan, backend=backend.name, round=s.round)
    docs, duplicates = drop_duplicates(docs, deduper)
    pilot = s.phase == "pilot"
    if docs:
        write_shard(pilot_dir(out, s.round) if pilot else out, docs)
    append_jsonl(out / "failures.jsonl", failures)
    append_jsonl(out / "duplicates.jsonl", duplicates)
    counters = count_batch(c, n, docs, failures, duplicates, results, elapsed, corpus=not pilot)
    if pilot:
        tokens = sum(r.num_prompt_tokens + r.num_tokens for r in results)
        s = dataclasses.replace(s, pilot_docs=s.pilot_docs + len(docs), round_docs=s.round_docs + len(docs),
                                round_tokens=s.round_tokens + tokens, pilot_tokens=s.pilot_tokens + tokens)
    new = dataclasses.replace(state, counters=counters, steering=s)
    save_state(out, new)
    return new


def count_batch(c: Counters, n: int, docs: list[Document], failures: list[dict], duplicates: list[dict],
                results: list[Result], elapsed: float, *, corpus: bool) -> Counters:
    """The counters after one batch of `n` attempted samples."""
    return Counters(
        next_index=c.next_index + n, num_docs=c.num_docs + (len(docs) if corpus else 0),
        num_attempted=c.num_attempted + n, num_failed=c.num_failed + len(failures),
        num_truncated=c.num_truncated + sum(d.finish_reason == "length" for d in docs),
        num_trimmed=c.num_trimmed + sum(d.finish_reason == "trimmed" for d in docs),
        duplicates_exact=c.duplicates_exact + sum(d["reason"].startswith("exact") for d in duplicates),
        duplicates_near=c.duplicates_near + sum(d["reason"].startswith("near") for d in duplicates),
        prompt_tokens=c.prompt_tokens + sum(r.num_prompt_tokens for r in results),
        completion_tokens=c.completion_tokens + sum(r.num_tokens for r in results),
        batches=c.batches + 1, generate_s=c.generate_s + elapsed,
        num_shards=c.num_shards + (1 if docs and corpus else 0))


def drop_duplicates(docs: list[Document], deduper: Deduper | None) -> tuple[list[Document], list[dict]]:
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
    deduper = Deduper(exact=d.exact, near=d.near, threshold=d.threshold, num_perm=d.num_perm, seed=plan.recipe.seed)
    for root in [out, *sorted((out / "pilot").glob("round-*"))]:
        table = read_documents(root, columns=["id", "text"])
        deduper.index(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    return deduper


def check_failure_rate(plan: Plan, c: Counters) -> str:
    """A reason to stop when too many attempted rows failed (after a first full batch)."""
    if c.num_attempted < plan.recipe.size.batch_size:
        return ""
    rate = c.num_failed / c.num_attempted
    if rate > plan.recipe.max_failure_rate:
        return (f"failure rate {rate:.1%} ({c.num_failed}/{c.num_attempted} rows) is above "
                f"max_failure_rate {plan.recipe.max_failure_rate:.0%}; see failures.jsonl")
    dup_rate = c.num_duplicates / c.num_attempted
    if dup_rate > plan.recipe.dedup.max_duplicate_rate:
        return (f"duplicate rate {dup_rate:.1%} ({c.num_duplicates}/{c.num_attempted} rows) is above "
                f"dedup.max_duplicate_rate {plan.recipe.dedup.max_duplicate_rate:.0%}: the model keeps "
                "repeating itself; see duplicates.jsonl (raise temperature or widen the grid)")
    return ""


def fill(plan: Plan, out: Path, backend: Backend, state: RunState, until_docs: int,
         on_batch: OnBatch | None = None, deduper: Deduper | None = None) -> RunState:
    """Generate batches until `until_docs` documents exist (in the corpus, or in the current
    pilot round during the pilot phase), or the failure rate stops the run."""
    def have(s: RunState) -> int:
        return s.steering.round_docs if s.steering.phase == "pilot" else s.counters.num_docs

    if on_batch and have(state) < until_docs:
        on_batch(state)  # progress shows from the start, before the first batch returns
    while have(state) < until_docs and not state.stopped:
        n = min(plan.recipe.size.batch_size, until_docs - have(state))
        state = generate_batch(plan, out, backend, state, n, deduper)
        if on_batch:
            on_batch(state)
        reason = check_failure_rate(plan, state.counters)
        if reason:
            state = dataclasses.replace(state, stopped=reason)
    return state


def write_summary(out: Path, plan: Plan, state: RunState, wall_s: float, backend: Backend,
                  extra: dict | None = None) -> dict:
    c = state.counters
    summary = {
        "recipe": plan.recipe.name, "recipe_hash": plan.recipe_hash, "model": plan.recipe.model,
        "backend": backend.name, "num_docs": c.num_docs, "requested_docs": plan.recipe.size.num_docs,
        "num_attempted": c.num_attempted, "num_failed": c.num_failed,
        "failure_rate": c.num_failed / max(1, c.num_attempted),
        "num_truncated": c.num_truncated, "num_trimmed": c.num_trimmed,  # generated, pilot rounds included
        "endings": corpus_endings(out),
        "duplicates": {"exact": c.duplicates_exact, "near": c.duplicates_near},
        "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "batches": c.batches,
        "generate_s": round(c.generate_s, 3), "wall_s": round(wall_s, 3),
        "tokens_per_s": round(c.completion_tokens / c.generate_s, 2) if c.generate_s else 0.0,
        "stopped": state.stopped or None,
        **(extra or {}),
    }
    write_json(out / "summary.json", summary)
    return summary


def corpus_endings(out: Path) -> dict[str, int]:
    """How the corpus's documents end: at end-of-sequence, trimmed back to a complete sentence
    after max_tokens, or cut at max_tokens."""
    reasons = read_documents(out, columns=["finish_reason"]).column("finish_reason").to_pylist()
    return {"eos": reasons.count("stop"), "trimmed": reasons.count("trimmed"), "cut": reasons.count("length")}
