"""summary.json: what a finished (or stopped) run made, counted from its state and its corpus."""
from __future__ import annotations

from pathlib import Path

from generator.files import read_documents, write_json
from generator.quality.report import rejection_summary
from generator.recipe import Plan
from generator.records import Backend
from generator.run.state import RunState


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
        **({"rejected": rejection_summary(out, c.rejected)} if plan.recipe.quality is not None else {}),
        "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "commits": c.batches,
        "num_shards": c.num_shards, "generate_s": round(c.generate_s, 3), "wall_s": round(wall_s, 3),
        "tokens_per_s": round(c.completion_tokens / c.generate_s, 2) if c.generate_s else 0.0,
        "stopped": state.stopped or None,
        # why steering could not reach the target, with the fix (policy.Decision.out_of_reach)
        **({"out_of_reach": state.steering.out_of_reach} if state.steering.out_of_reach else {}),
        **({"sources": run_coverage(out, plan, state)} if plan.source is not None else {}),
        **(extra or {}),
    }
    write_json(out / "summary.json", summary)
    return summary


def run_coverage(out: Path, plan: Plan, state: RunState) -> dict:
    """A rewrite run's per-source coverage (generator/sources/coverage.py)."""
    from generator.sources.coverage import source_coverage
    s = plan.recipe.source
    return source_coverage(out, plan.source.num_units, s.per_source, s.max_attempts,
                           state.counters.next_index, plan.source)


def corpus_endings(out: Path) -> dict[str, int]:
    """How the corpus's documents end: at end-of-sequence, trimmed back to a complete sentence
    after max_tokens, or cut at max_tokens."""
    reasons = read_documents(out, columns=["finish_reason"]).column("finish_reason").to_pylist()
    return {"eos": reasons.count("stop"), "trimmed": reasons.count("trimmed"), "cut": reasons.count("length")}
