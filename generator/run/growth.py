"""Grid growth: when every grid value is active and evenly weighted and the corpus is still
below the target, ask the generator model for new topics in the grid's own format, drop exact
and near-duplicates (embedding cosine similarity) of what the grid has, add the rest.
Additions are written to OUT/grid.added.yaml in the topic-file format."""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from generator.sampling.grid import Axis, AxisValue, Grid
from generator.recipe import Plan
from generator.records import Backend, Request
from generator.files import write_yaml

NEAR_DUPLICATE_SIMILARITY = 0.85
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def proposal_prompt(domain: str, examples: Sequence[str], n: int) -> str:
    shown = "\n".join(f"- {e}" for e in examples)
    return (f"Here are subjects from the field of {domain}, each specific enough for a 300-word text:\n"
            f"{shown}\n\nList {n} further subjects from {domain} that are not on the list and differ "
            "from each other. One per line, no numbering, no explanations.")


def parse_proposals(text: str, max_words: int = 16) -> list[str]:
    out = []
    for line in text.splitlines():
        item = _BULLET.sub("", line).strip().strip('"').rstrip(".").strip()
        if 3 <= len(item) <= 120 and 1 <= len(item.split()) <= max_words and not item.endswith(":"):
            out.append(item)
    return out


def dedupe(candidates: Mapping[str, Sequence[str]], existing: Sequence[str],
           embed: Callable[[Sequence[str]], np.ndarray], *,
           max_similarity: float = NEAR_DUPLICATE_SIMILARITY) -> dict[str, list[str]]:
    """Keep candidates that are neither an exact (case-insensitive) nor a near duplicate of an
    existing topic or of a candidate kept before them."""
    seen = {e.casefold() for e in existing}
    flat = []
    for domain, items in candidates.items():
        for item in items:
            if item.casefold() not in seen:
                seen.add(item.casefold())
                flat.append((domain, item))
    if not flat:
        return {}
    vectors = embed([*existing, *(i for _, i in flat)])
    kept_vectors = list(vectors[: len(existing)])
    kept: dict[str, list[str]] = {}
    for (domain, item), v in zip(flat, vectors[len(existing):]):
        if kept_vectors and float(np.max(np.asarray(kept_vectors) @ v)) >= max_similarity:
            continue
        kept_vectors.append(v)
        kept.setdefault(domain, []).append(item)
    return kept


def grow_topics(plan: Plan, backend: Backend, out: Path, *, rng: np.random.Generator,
                per_domain: int | None = None, embed: Callable | None = None) -> dict[str, list[str]]:
    """One growth round: one request per domain; returns the accepted topics by domain."""
    if embed is None:
        from generator.measure.embeddings import embed_texts as embed
    axis = plan.grid.axes["topic"]
    n = per_domain or plan.recipe.target.growth_topics_per_domain
    requests = []
    for domain in axis.domains():
        topics = [v.value for v in axis.values if v.domain == domain]
        shown = [topics[i] for i in rng.choice(len(topics), size=min(8, len(topics)), replace=False)]
        prompt = proposal_prompt(domain, shown, n)
        requests.append(Request(id=hashlib.sha256(prompt.encode()).hexdigest()[:20], prompt=prompt,
                                max_tokens=24 * n, temperature=0.9, top_p=0.95,
                                seed=int(rng.integers(2**31 - 1))))
    results = backend.generate(requests)
    candidates = {d: parse_proposals(r.text)[:n] for d, r in zip(axis.domains(), results) if r.ok}
    return dedupe(candidates, [v.value for v in axis.values], embed)


def merge_added(old: Mapping[str, Sequence[str]], new: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    merged = {d: list(v) for d, v in old.items()}
    for d, items in new.items():
        merged.setdefault(d, []).extend(i for i in items if i not in merged[d])
    return merged


def with_added_topics(plan: Plan, added: Mapping[str, Sequence[str]]) -> Plan:
    """The plan with the added topics on its topic axis (each weighted like its domain's mean)."""
    if not added or "topic" not in plan.grid.axes:
        return plan
    axis = plan.grid.axes["topic"]
    values = list(axis.values)
    for domain, items in added.items():
        weights = [v.weight for v in axis.values if v.domain == domain] or [1.0]
        values += [AxisValue(i, float(np.mean(weights)), "", domain) for i in items]
    grid = Grid({**plan.grid.axes, "topic": Axis(axis.name, tuple(values), axis.source)})
    return dataclasses.replace(plan, grid=grid)


def write_added(out: Path, added: Mapping[str, Sequence[str]]) -> None:
    write_yaml(out / "grid.added.yaml", {"axis": "topic", "description": "topics added by grid growth",
                                         "domains": [{"name": d, "topics": list(t)}
                                                     for d, t in added.items()]})
