"""The recipe's `source:` section: a real corpus, every document of which is rewritten k times.

    source:
      path: data/kjv/seeds.jsonl   # Parquet file or folder, JSONL, JSONL.gz, a save_to_disk folder,
                                   # or an fsspec URL (s3://…, gs://…, hf://…)
      text_field: text
      id_field: id                 # optional: without it a document's id is a hash of its text
      per_source: 4                # rewrites per unit (a document, or a chunk of one)
      chunk_tokens: 512            # optional: cut longer documents at paragraph boundaries
      max_sources: 1000            # optional: the first this many documents in the seeded order

Templates see the unit's text as `seed_doc`, its id as `seed_doc_id` and the source's file name
as `seed_doc_source` (the names of a `grid: seed_doc:` axis, so the seed templates work for
rewrites), plus `seed_doc_chunk` (chunk number) and `rewrite` (0..k−1).
"""
from __future__ import annotations

from dataclasses import dataclass

from generator.errors import UserError

DOC = "seed_doc"  # the template variable that holds the unit's text
VARIABLES = (DOC, f"{DOC}_id", f"{DOC}_source", f"{DOC}_chunk", "rewrite")


@dataclass(frozen=True)
class Source:
    """A corpus to rewrite: each unit (a document, or a chunk of one) gets exactly `per_source`
    documents, or as many as the run could make in `max_attempts` tries per rewrite."""

    path: str  # local file or folder (relative to the recipe), or an fsspec URL
    text_field: str = "text"  # the column holding the text; rows without text are skipped
    id_field: str = ""  # column with each document's id; "" = the first 16 hex digits of sha256(text)
    per_source: int = 1  # rewrites per unit (k)
    # most completion tokens the run may spend: the units are cut to budget_tokens //
    # (per_source × sampling.max_tokens); 0 = no budget
    budget_tokens: int = 0
    chunk_tokens: int = 0  # documents longer than this many tokens are cut into chunks; 0 = never cut
    max_sources: int = 0  # source documents taken, in the seeded order; 0 = all
    shuffle_window: int = 1000  # documents shuffled (seeded) within consecutive windows; 1 = stream order
    max_attempts: int = 4  # tries per rewrite (the first included) before a unit is reported short


def is_url(path: str) -> bool:
    return "://" in path


def check_source(s: Source, recipe, where: str) -> None:
    """The values of a `source:` section and what it rules out in the rest of `recipe`; a one-line
    UserError for the first problem."""
    def need(ok: bool, key: str, what: str, fix: str) -> None:
        if not ok:
            raise UserError(f"{where}: source.{key} {what}", fix=fix)

    need(bool(s.path.strip()), "path", "is empty", "give the corpus's file, folder or URL")
    need(bool(s.text_field), "text_field", "is empty", "name the column that holds the text, e.g. text")
    need(s.per_source >= 1, "per_source", f"must be at least 1, got {s.per_source}",
         "use e.g. per_source: 4 (rewrites per source document)")
    need(s.per_source <= 10_000, "per_source", f"must be at most 10000, got {s.per_source}",
         "use e.g. per_source: 4")
    need(s.budget_tokens >= 0, "budget_tokens", f"must be >= 0, got {s.budget_tokens}",
         "use 0 for no budget, or the completion tokens the run may spend")
    need(s.chunk_tokens == 0 or s.chunk_tokens >= 16, "chunk_tokens",
         f"must be 0 (no chunks) or at least 16, got {s.chunk_tokens}", "use e.g. chunk_tokens: 512")
    need(s.max_sources >= 0, "max_sources", f"must be >= 0, got {s.max_sources}", "use 0 for all")
    need(1 <= s.shuffle_window <= 1_000_000, "shuffle_window",
         f"must be in [1, 1000000], got {s.shuffle_window}", "use e.g. 1000, or 1 for stream order")
    need(1 <= s.max_attempts <= 100, "max_attempts", f"must be in [1, 100], got {s.max_attempts}",
         "use e.g. 4")
    check_source_recipe(s, recipe, where)


def check_source_recipe(s: Source, recipe, where: str) -> None:
    """What a `source:` section rules out in the rest of the recipe."""
    if DOC in recipe.grid:
        raise UserError(f"{where}: both source: and grid.{DOC} give templates `{DOC}` (a rewrite of every "
                        f"source document vs. documents sampled as a grid axis)",
                        fix=f"keep source: to rewrite every document, or remove it and keep grid.{DOC}")
    for name in VARIABLES[1:]:
        if name in recipe.grid:
            raise UserError(f"{where}: grid.{name} clashes with the variable source: gives templates",
                            fix=f"rename the grid axis {name}")
    if recipe.target is not None and recipe.reference is not None:
        raise UserError(f"{where}: a steered rewrite run is measured against its source, so reference: "
                        "beside source: and target: would give the target two meanings",
                        fix="remove reference: (target.relative and max_shift are then relative to the "
                            "source), or remove source:")
    if s.budget_tokens and s.budget_tokens < s.per_source * recipe.sampling.max_tokens:
        raise UserError(f"{where}: source.budget_tokens {s.budget_tokens} is under one source's rewrites "
                        f"(per_source × sampling.max_tokens = {s.per_source * recipe.sampling.max_tokens})",
                        fix="raise budget_tokens, or lower per_source or sampling.max_tokens")


def budget_units(s: Source, max_tokens: int) -> int:
    """Most units the token budget allows (0 = no limit)."""
    return s.budget_tokens // (s.per_source * max_tokens) if s.budget_tokens else 0
