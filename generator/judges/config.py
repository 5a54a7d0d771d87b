"""The LLM judge's settings (a recipe's `judge:` section; `generator score --set judge.KEY=VALUE`)
and the context they need.

`plan_context` turns the settings into the two numbers an engine and the prompts need: the
context length the judge engine opens with and the tokens each document keeps. It counts the
clustering (and verification) prompt with the judge model's tokenizer, criteria at the longest
the schema allows, and the answer budget; it caps the context at the model's own and fails
before any engine starts when K documents cannot fit.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from generator.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_DOC_TOKENS = 512  # tokens a document keeps when neither the cap nor the context is given
MIN_DOC_TOKENS = 64  # fewer and a document no longer shows what it is about
DOC_SLACK_TOKENS = 8  # per document: its "[...]" mark and the tokens its tags may merge with
FILLER = "the documents share one subject, purpose and register of writing, "  # stands in for criteria text


@dataclass(frozen=True)
class JudgeSettings:
    """The LLM judge: its model, where it runs, its context and the protocol's parameters
    (CLUSTER_AGENT.md). `target.judge` / `scoring.judge` choose between it and the embedding judge."""

    model: str = ""  # a Hugging Face id, local path or embedded:smollm2-135m; the served name for openai
    backend: Literal["vllm", "ray", "openai"] = "vllm"  # in-process engine, Ray pool, or `endpoint`
    endpoint: str = ""  # OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (backend openai)
    tokenizer: str = ""  # counts prompt tokens; empty: the model's own
    max_model_len: int = 0  # context of the judge engine; 0: enough for K documents, capped by the model's
    max_doc_tokens: int = 0  # tokens each document keeps in a prompt; 0: what the context leaves
    k: int = 10  # K, documents per clustering call
    docs_per_criteria_call: int = 5  # J
    num_criteria_calls: int = 100  # M
    num_kept: int = 4  # k metadata and k metrics kept for the criteria
    verify: bool = True  # the self-verification call after each clustering
    invalid_policy: Literal["split", "drop", "keep"] = "split"  # what a cluster judged invalid becomes
    answer: Literal["full", "compact"] = "full"  # compact: members and a short reason per cluster only
    cluster_max_tokens: int = 3072  # answer budget of a clustering call
    verify_max_tokens: int = 1024
    criteria_max_tokens: int = 1024
    num_replicas: int = 1  # engines in the Ray pool (backend ray)
    timeout_s: float = 600.0  # per request to an endpoint (backend openai)


def check_settings(s: JudgeSettings, where: str = "judge") -> None:
    """Reject impossible values, naming the key and the fix."""
    def need(cond: bool, key: str, what: str, fix: str):
        if not cond:
            raise UserError(f"{where}.{key} {what}", fix=fix)

    need(s.k >= 2, "k", f"({s.k}) must be at least 2", "use the paper's k: 10")
    for key in ("docs_per_criteria_call", "num_criteria_calls", "num_kept", "cluster_max_tokens",
                "verify_max_tokens", "criteria_max_tokens", "num_replicas"):
        need(getattr(s, key) >= 1, key, f"({getattr(s, key)}) must be at least 1", f"set {key} to 1 or more")
    need(s.max_model_len >= 0, "max_model_len", f"({s.max_model_len}) must be >= 0", "use 0 to derive it")
    need(s.max_doc_tokens == 0 or s.max_doc_tokens >= MIN_DOC_TOKENS, "max_doc_tokens",
         f"({s.max_doc_tokens}) is below {MIN_DOC_TOKENS}, too little of a document to judge it",
         f"use 0 to derive it, or at least {MIN_DOC_TOKENS}")
    need(s.timeout_s > 0, "timeout_s", "must be positive", "use e.g. 600")
    need(s.backend != "openai" or bool(s.endpoint), "endpoint", "is required for backend openai",
         "set judge.endpoint: http://host:8000/v1")
    need(s.backend == "openai" or not s.endpoint, "backend", f"is {s.backend} but an endpoint is set",
         "set judge.backend: openai to use the endpoint, or drop judge.endpoint")


def read_settings(base: JudgeSettings | dict | None, overrides: dict[str, Any], where: str) -> JudgeSettings:
    """`base` (settings, or a parsed `judge:` mapping) with `overrides` (key -> value) applied, checked."""
    from generator.schema import build_record
    data = dict(vars(base)) if isinstance(base, JudgeSettings) else base or {}
    settings = build_record(JudgeSettings, {**data, **overrides} if isinstance(data, dict) else data, where)
    check_settings(settings, where)
    return settings


@dataclass(frozen=True)
class ContextPlan:
    """What the judge engine opens with and what each document keeps."""

    max_model_len: int  # the judge engine's context
    max_doc_tokens: int  # tokens each document keeps
    model_context: int  # the model's own maximum (or the server's)
    prompt_tokens: int  # the clustering prompt without documents, criteria at their longest
    answer_tokens: int  # the larger of the clustering and verification answer budgets, with their prompts

    def fixed_tokens(self) -> int:
        return self.prompt_tokens + self.answer_tokens


class TokenCounter:
    """Counts a user prompt's tokens as an engine sees it (chat template applied) and cuts a
    document to a number of tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def count_prompt(self, prompt: str) -> int:
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def cut(self, text: str, max_tokens: int) -> str:
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text if len(offsets) <= max_tokens else text[:offsets[max_tokens - 1][1]].rstrip() + " [...]"


def _longest_criteria(num_kept: int):
    from generator.judges.cluster_agent import NAME, PROSE, Criteria
    name = (FILLER * 4)[:NAME["maxLength"]]
    prose = (FILLER * 10)[:PROSE["maxLength"]]
    pairs = tuple((f"{i}{name}"[:NAME["maxLength"]], prose) for i in range(num_kept))
    return Criteria(metadata=pairs, metrics=pairs, sentences=pairs + pairs)


def fixed_prompt_tokens(settings: JudgeSettings, counter: TokenCounter, criteria=None) -> tuple[int, int]:
    """(prompt, answer) tokens of a clustering call's worst case without its documents: the
    clustering prompt, or the verification prompt listing K/2 clusters with reasons at their
    longest, whichever needs more with its answer."""
    from generator.judges.cluster_agent import PROSE, SHORT, ClusterAgentConfig, render_prompt
    config, k, compact = ClusterAgentConfig(), settings.k, settings.answer == "compact"
    criteria = criteria or _longest_criteria(settings.num_kept)
    docs = [""] * k
    cluster = counter.count_prompt(render_prompt("cluster", config, criteria=list(criteria.sentences),
                                                 metadata=list(criteria.metadata), metrics=list(criteria.metrics),
                                                 documents=docs, compact=compact))
    best = (cluster, settings.cluster_max_tokens)
    if settings.verify:
        longest = (SHORT if compact else PROSE)["maxLength"]
        shown = [{"id": j + 1, "members": [2 * j + 1, 2 * j + 2], "reason": (FILLER * 10)[:longest]}
                 for j in range(k // 2)]
        verify = counter.count_prompt(render_prompt("verify", config, criteria=list(criteria.sentences),
                                                    documents=docs, clusters=shown))
        if verify + settings.verify_max_tokens > sum(best):
            best = (verify, settings.verify_max_tokens)
    return best


def plan_context(settings: JudgeSettings, counter: TokenCounter, model_context: int) -> ContextPlan:
    """The judge engine's context and the per-document cap; UserError when K documents do not fit."""
    k, given = settings.k, settings.max_model_len
    if given > model_context:
        raise UserError(f"judge.max_model_len {given} is above the judge model's own context of {model_context} "
                        f"tokens ({settings.model})", fix=f"use at most {model_context}, or 0 to derive it")
    prompt, answer = fixed_prompt_tokens(settings, counter)
    wanted = settings.max_doc_tokens or DEFAULT_DOC_TOKENS
    context = given or min(model_context, prompt + answer + k * (wanted + DOC_SLACK_TOKENS))
    room = (context - prompt - answer) // k - DOC_SLACK_TOKENS
    doc_tokens = min(wanted, room)
    if doc_tokens < (settings.max_doc_tokens or MIN_DOC_TOKENS):
        need = prompt + answer + k * ((settings.max_doc_tokens or MIN_DOC_TOKENS) + DOC_SLACK_TOKENS)
        raise UserError(
            f"judge: K={k} documents at {settings.max_doc_tokens or MIN_DOC_TOKENS} tokens each do not fit: a "
            f"{prompt}-token prompt without documents + {k} x {(settings.max_doc_tokens or MIN_DOC_TOKENS)} document "
            f"tokens (+{DOC_SLACK_TOKENS} each for tags) + a {answer}-token answer = {need} tokens, over the "
            f"context of {context} (the model's own: {model_context})",
            fix="lower judge.k, judge.max_doc_tokens or judge.cluster_max_tokens, raise judge.max_model_len, "
                "or use a judge model with a longer context")
    return ContextPlan(max_model_len=context, max_doc_tokens=doc_tokens, model_context=model_context,
                       prompt_tokens=prompt, answer_tokens=answer)


def doc_tokens_for(plan: ContextPlan, settings: JudgeSettings, counter: TokenCounter, criteria) -> int:
    """The per-document cap under the actual criteria: the planned one, lowered if these
    criteria take more room than the longest the plan allowed for."""
    prompt, answer = fixed_prompt_tokens(settings, counter, criteria)
    room = (plan.max_model_len - prompt - answer) // settings.k - DOC_SLACK_TOKENS
    if room < plan.max_doc_tokens:
        log.warning("judge criteria are longer than planned: documents keep %d tokens, not %d",
                    room, plan.max_doc_tokens)
    return max(min(plan.max_doc_tokens, room), 1)


def load_counter(settings: JudgeSettings) -> TokenCounter:
    from generator.backends.models import resolve_model
    name = settings.tokenizer or settings.model
    try:
        from transformers import AutoTokenizer
        return TokenCounter(AutoTokenizer.from_pretrained(resolve_model(name)))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer of {name!r} to count the judge's prompt tokens "
                        f"({type(exc).__name__})", fix="set judge.tokenizer to a local tokenizer folder") from None


def model_context(settings: JudgeSettings) -> int:
    """The judge model's own maximum context: its config's, or the server's for an endpoint."""
    if settings.backend == "openai":
        served = served_context(settings.endpoint, settings.model)
        if served or settings.max_model_len:
            return served or settings.max_model_len
        raise UserError(f"endpoint {settings.endpoint} does not report the context of {settings.model!r}",
                        fix="set judge.max_model_len to the server's context length")
    from generator.backends.models import resolve_model
    path = Path(resolve_model(settings.model))
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text())
        else:
            from transformers import AutoConfig
            config = AutoConfig.from_pretrained(str(path)).to_dict()
    except (OSError, ValueError) as exc:
        config = {}
        log.warning("cannot read the config of %s (%s)", settings.model, exc)
    found = next((int(config[key]) for key in ("max_position_embeddings", "max_sequence_length", "n_positions",
                                                "seq_length") if isinstance(config.get(key), int)), 0)
    if found or settings.max_model_len:
        return found or settings.max_model_len
    raise UserError(f"cannot read the context length of judge model {settings.model!r}",
                    fix="set judge.max_model_len")


def served_context(endpoint: str, model: str) -> int:
    """`max_model_len` as a vLLM server reports it under /models (0: not reported)."""
    import httpx
    try:
        data = httpx.get(endpoint.rstrip("/") + "/models", timeout=10.0).json().get("data", [])
    except httpx.HTTPError as exc:
        raise UserError(f"endpoint {endpoint} is unreachable ({type(exc).__name__})",
                        fix="start the server or correct judge.endpoint / --judge-endpoint") from None
    except (ValueError, AttributeError):
        return 0
    return next((int(m["max_model_len"]) for m in data if isinstance(m, dict) and m.get("id") == model
                 and isinstance(m.get("max_model_len"), int)), 0)


def backend_options(settings: JudgeSettings, plan: ContextPlan) -> dict[str, Any]:
    """`open_backend` options for the judge engine."""
    if settings.backend == "openai":
        return dict(base_url=settings.endpoint, timeout_s=settings.timeout_s)
    options = dict(max_model_len=plan.max_model_len)
    return dict(options, num_replicas=settings.num_replicas) if settings.backend == "ray" else options
