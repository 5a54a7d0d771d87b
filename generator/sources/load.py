"""Loading a recipe's `source:` when the recipe loads: the source counted and checked, the
documents it makes (units × per_source), the variables it gives templates, and the room a chunk
leaves in the engine's context. Every problem is a one-line UserError before any engine starts."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from generator.errors import UserError
from generator.sources.chunks import Counter
from generator.sources.config import DOC
from generator.sources.units import SourcePlan, Unit, load_source


def open_recipe_source(recipe, where: str, resume_from: Path | None = None) -> SourcePlan:
    """The recipe's source, counted (the recipe has a `source:` section); `resume_from`: a run folder
    whose recorded count to reuse when it was made under the same key."""
    s = recipe.source
    plan = load_source(s, model=recipe.model, seed=recipe.seed, max_tokens=recipe.sampling.max_tokens,
                       where=where, resume_from=resume_from)
    total = plan.num_units * s.per_source
    if recipe.size.num_docs not in (0, total):
        raise UserError(f"{where}: size.num_docs {recipe.size.num_docs} differs from what source: makes "
                        f"({plan.num_units} units × per_source {s.per_source} = {total})",
                        fix="leave size.num_docs out: a rewrite run makes per_source documents per unit "
                            "(limit it with source.max_sources)")
    return plan


def check_steered(plan: SourcePlan, recipe, pilot_docs: int, where: str) -> None:
    """A steered rewrite run measures the source's own D (at least 2K units), pilots its first
    sweep on the first slots (the sweep must fit in units × per_source) and rewrites the slots of
    pilot documents not kept in a later pass (at least two tries per slot)."""
    from generator.run.policy import FIRST_SWEEP

    k, total = recipe.target.k, plan.num_units * recipe.source.per_source
    if recipe.source.max_attempts < 2:
        raise UserError(f"{where}: source.max_attempts 1 leaves no try for the slots of pilot documents not "
                        "kept in a steered run",
                        fix="use max_attempts: 2 or more (default 4), or remove target:")
    if plan.num_units < 2 * k:
        raise UserError(f"{where}: source: has {plan.num_units} units, too few to measure its own D at "
                        f"target.k = {k} (at least 2K = {2 * k})",
                        fix="raise source.max_sources, or lower target.k")
    if len(FIRST_SWEEP) * pilot_docs > total:
        raise UserError(f"{where}: the first pilot sweep ({len(FIRST_SWEEP)} × {pilot_docs} documents) "
                        f"is more than the run makes ({plan.num_units} units × per_source "
                        f"{recipe.source.per_source} = {total})",
                        fix=f"lower target.pilot_docs to {total // len(FIRST_SWEEP)} or less, or raise "
                            "source.max_sources or per_source")


def unit_variables(unit: Unit, source_name: str, rewrite: int) -> dict[str, object]:
    """What a template sees of the unit it rewrites."""
    return {DOC: unit.text, f"{DOC}_id": unit.source_id, f"{DOC}_source": source_name,
            f"{DOC}_chunk": unit.chunk, "rewrite": rewrite}


def check_chunk_room(source: SourcePlan, templates: Sequence, variables: dict, recipe, count: Counter | None,
                     where: str) -> None:
    """Each template's prompt around a chunk (rendered with an empty document) leaves room for it:
    chunk_tokens is at least that prompt, and prompt + chunk + max_tokens fits engine.max_model_len."""
    s = source.spec
    if not s.chunk_tokens or count is None:
        return
    for t in templates:
        prompts = t.prompts({**variables, DOC: ""}, recipe.sampling.max_tokens)
        around = max(count(prompts))
        if s.chunk_tokens < around:
            raise UserError(f"{where}: source.chunk_tokens {s.chunk_tokens} is under the prompt of template "
                            f"{t.name} ({around} tokens without the document)",
                            fix=f"use chunk_tokens: {max(around, 16) * 2} or more")
        need = around + s.chunk_tokens + recipe.sampling.max_tokens
        room = recipe.engine.max_model_len - around - recipe.sampling.max_tokens
        if need > recipe.engine.max_model_len:
            raise UserError(f"{where}: template {t.name}'s prompt ({around} tokens) + source.chunk_tokens "
                            f"{s.chunk_tokens} + sampling.max_tokens {recipe.sampling.max_tokens} = {need} "
                            f"exceeds engine.max_model_len {recipe.engine.max_model_len}",
                            fix=f"lower chunk_tokens to {room} or less, or raise engine.max_model_len")
