"""From results to documents: which results become rows, and how an answer cut at max_tokens
is handled (trimmed back to its last complete sentence, kept as cut, or dropped)."""
from __future__ import annotations

import json
import re
from typing import Sequence

from generator.recipe import Plan
from generator.records import STANDARD_AXES, Document, Result
from generator.sampling.requests import Sample


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
        is_list_marker = (re.fullmatch(r"\(?(\d+|[a-z])[.)]", word)
                          and not text[line_start:m.start() + 1 - len(word)].strip())
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


_GRID_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)  # json.dumps with these, built once


def to_document(sample: Sample, result: Result, *, plan: Plan, backend: str, round: int, epoch: int = 0,
                text: str | None = None, finish_reason: str | None = None) -> Document:
    req = sample.request
    return Document(
        id=req.id, text=result.text.strip() if text is None else text, prompt=req.prompt,
        system=req.system or "",
        template=sample.template,
        **{axis: sample.values.get(axis, "") for axis in STANDARD_AXES},
        grid_values=_GRID_JSON.encode(dict(sample.values)),
        model=plan.recipe.model, backend=backend, temperature=req.temperature, top_p=req.top_p,
        max_tokens=req.max_tokens, seed=req.seed, finish_reason=finish_reason or result.finish_reason,
        num_tokens=result.num_tokens, num_prompt_tokens=result.num_prompt_tokens,
        sample_index=sample.index, round=round, epoch=epoch, recipe_hash=plan.recipe_hash,
        source_id=sample.source_id, chunk=sample.chunk, rewrite=sample.rewrite)


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
