"""From grid cells to requests, and from results to documents: plain functions.

Sample `i` of a run is fully determined by the recipe, the weights in force and the run seed:
its request seed derives from (seed, i), and its id is a hash of the request content.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from generator.grid import sample_cells, template_variables
from generator.recipe import Plan
from generator.templates import words_for_tokens
from generator.records import Request, Result
from generator.writers import Document

Weights = Mapping[str, Mapping[str, float]]  # axis (or "template") → value → weight
STANDARD_AXES = ("domain", "topic", "persona", "style", "audience")


@dataclass(frozen=True)
class Sample:
    index: int
    template: str
    values: Mapping[str, str]  # grid values, with `topic` joined by "; " for multi-topic
    request: Request


def derive_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def request_id(prompt: str, model: str, seed: int, temperature: float, top_p: float, max_tokens: int) -> str:
    key = json.dumps([prompt, model, seed, temperature, top_p, max_tokens])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def template_probabilities(plan: Plan, weights: Weights | None) -> np.ndarray:
    w = np.array([t.weight for t in plan.recipe.templates], dtype=float)
    chosen = (weights or {}).get("template")
    if chosen:
        w = np.array([chosen.get(t.name, wi) for t, wi in zip(plan.templates, w)], dtype=float)
    return w / w.sum()


def plan_samples(plan: Plan, start_index: int, n: int, rng: np.random.Generator,
                 weights: Weights | None = None) -> list[Sample]:
    """Draw `n` samples (template + grid cell), render their prompts, build their requests."""
    r = plan.recipe
    template_ids = rng.choice(len(plan.templates), size=n, p=template_probabilities(plan, weights))
    num_topics = max(t.num_topics for t in plan.templates)
    cells = sample_cells(plan.grid, n, rng, weights=weights, num_topics=num_topics)
    samples = []
    for offset, (t_id, cell) in enumerate(zip(template_ids, cells)):
        template = plan.templates[t_id]
        variables = {**template_variables(plan.grid, cell), "num_words": words_for_tokens(r.sampling.max_tokens)}
        prompt = template.render(variables)
        index = start_index + offset
        seed = derive_seed(r.seed, index)
        values = used_values(template.variables, cell.values)
        if template.num_topics > 1 and "topics" in variables:
            values["topic"] = "; ".join(variables["topics"][: template.num_topics])  # type: ignore[index]
        s = r.sampling
        request = Request(id=request_id(prompt, r.model, seed, s.temperature, s.top_p, s.max_tokens),
                          prompt=prompt, max_tokens=s.max_tokens, temperature=s.temperature,
                          top_p=s.top_p, seed=seed, system=r.system_prompt or None)
        samples.append(Sample(index=index, template=template.name, values=values, request=request))
    return samples


def used_values(variables: Sequence[str], values: Mapping[str, str]) -> dict[str, str]:
    """The grid values a template actually used (provenance must not list unused axes)."""
    used = set(variables)
    keep = {axis for axis in values
            if axis in used or f"{axis}_description" in used or f"{axis}s" in used}
    if "topic" in keep:
        keep.add("domain")
    return {axis: v for axis, v in values.items() if axis in keep}


def failure_reason(result: Result, *, keep_truncated: bool = True) -> str | None:
    """Why a result cannot become a document, or None if it can."""
    if not result.ok:
        return result.error or "engine error"
    if not result.text.strip():
        return "empty answer"
    if result.finish_reason == "length" and not keep_truncated:
        return f"truncated at max_tokens ({result.num_tokens} tokens)"
    return None


def to_document(sample: Sample, result: Result, *, plan: Plan, backend: str, round: int) -> Document:
    req = sample.request
    return Document(
        id=req.id, text=result.text.strip(), prompt=req.prompt, template=sample.template,
        **{axis: sample.values.get(axis, "") for axis in STANDARD_AXES},
        grid_values=json.dumps(dict(sample.values), sort_keys=True, ensure_ascii=False),
        model=plan.recipe.model, backend=backend, temperature=req.temperature, top_p=req.top_p,
        max_tokens=req.max_tokens, seed=req.seed, finish_reason=result.finish_reason,
        num_tokens=result.num_tokens, num_prompt_tokens=result.num_prompt_tokens,
        sample_index=sample.index, round=round, recipe_hash=plan.recipe_hash)


def split_results(samples: Sequence[Sample], results: Sequence[Result], *, plan: Plan,
                  backend: str, round: int) -> tuple[list[Document], list[dict]]:
    if len(results) != len(samples):
        raise RuntimeError(f"backend returned {len(results)} results for {len(samples)} requests")
    docs, failures = [], []
    for sample, result in zip(samples, results):
        if result.id != sample.request.id:
            raise RuntimeError(f"backend returned results out of order at sample {sample.index}")
        reason = failure_reason(result, keep_truncated=plan.recipe.keep_truncated)
        if reason is None:
            docs.append(to_document(sample, result, plan=plan, backend=backend, round=round))
        else:
            failures.append({"id": sample.request.id, "sample_index": sample.index, "round": round,
                             "template": sample.template, "reason": reason,
                             "finish_reason": result.finish_reason, "prompt": sample.request.prompt})
    return docs, failures
