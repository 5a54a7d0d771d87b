"""From grid cells to requests, and from results to documents: plain functions.

Sample `i` of a run is fully determined by the recipe, the weights in force and the run seed:
its request seed derives from (seed, i), and its id is a hash of the request content.
"""
from __future__ import annotations

import hashlib
import json
import re
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


def failure_reason(result: Result) -> str | None:
    """Why a result cannot become a document, or None if it can."""
    if not result.ok:
        return result.error or "engine error"
    if not result.text.strip():
        return "empty answer"
    return None


_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]*_]*(?=\s|$)")
_ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "no.",
                  "fig.", "approx.", "cf.", "al."}


def trim_to_sentence(text: str) -> str:
    """`text` cut back to the end of its last complete sentence; "" when it has none. A list
    number ("2.") at the start of a line and common abbreviations do not end a sentence."""
    text = text.rstrip()
    for m in reversed(list(_SENTENCE_END.finditer(text))):
        head = text[:m.start() + 1]
        word = head.split()[-1].lower() if head.split() else ""
        line_start = head.rfind("\n") + 1
        is_list_marker = re.fullmatch(r"\(?(\d+|[a-z])[.)]", word) and not text[line_start:m.start() + 1 - len(word)].strip()
        if word in _ABBREVIATIONS or is_list_marker:
            continue
        return text[:m.end()]
    return ""


def finish_result(result: Result, policy: str) -> tuple[str, str] | str:
    """(text, finish_reason) of the document a result becomes under the truncation policy
    ("trim", "keep", "drop"), or the reason it becomes a failed row instead."""
    reason = failure_reason(result)
    if reason is not None:
        return reason
    text = result.text.strip()
    if result.finish_reason != "length" or policy == "keep":
        return text, result.finish_reason
    if policy == "drop":
        return f"truncated at max_tokens ({result.num_tokens} tokens)"
    trimmed = trim_to_sentence(text)
    if not trimmed:
        return f"truncated at max_tokens ({result.num_tokens} tokens) with no complete sentence to keep"
    return trimmed, "trimmed"


def to_document(sample: Sample, result: Result, *, plan: Plan, backend: str, round: int,
                text: str | None = None, finish_reason: str | None = None) -> Document:
    req = sample.request
    return Document(
        id=req.id, text=result.text.strip() if text is None else text, prompt=req.prompt, template=sample.template,
        **{axis: sample.values.get(axis, "") for axis in STANDARD_AXES},
        grid_values=json.dumps(dict(sample.values), sort_keys=True, ensure_ascii=False),
        model=plan.recipe.model, backend=backend, temperature=req.temperature, top_p=req.top_p,
        max_tokens=req.max_tokens, seed=req.seed, finish_reason=finish_reason or result.finish_reason,
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
        outcome = finish_result(result, plan.recipe.keep_truncated)
        if isinstance(outcome, tuple):
            docs.append(to_document(sample, result, plan=plan, backend=backend, round=round,
                                    text=outcome[0], finish_reason=outcome[1]))
        else:
            reason = outcome
            failures.append({"id": sample.request.id, "sample_index": sample.index, "round": round,
                             "template": sample.template, "reason": reason,
                             "finish_reason": result.finish_reason, "prompt": sample.request.prompt})
    return docs, failures
