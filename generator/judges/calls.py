"""How the LLM judge talks to a backend: batched calls, retries, a hard call budget, failure
kinds and the audit trail.

`ask_all` sends every job of a stage in one `backend.generate` call and sends the failed ones
again, up to `max_attempts` in all. An answer cut at its token budget (`finish_reason ==
"length"`) is never parsed: it is counted as a `length` failure and retried with twice the
budget. Every failure has one kind (FAILURE_KINDS). A `CallBudget` grants calls before they are
sent, so no stage can overrun it; a job the budget refuses fails with kind `budget`. Every call,
answered or not, is written to the audit log when one is given.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from generator.records import Backend, Request, Result, derive_seed

log = logging.getLogger(__name__)

FAILURE_KINDS = ("length", "json", "schema", "engine", "budget")
MAX_JSON_STARTS = 64  # opening braces tried as the start of the answer's JSON object
PARSE_SLIPS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError)


class ReplyError(Exception):
    """A judge reply that is not the JSON asked for. `kind` is "json" (no JSON object could
    be read) or "schema" (JSON, but not the shape asked for)."""

    def __init__(self, message: str, kind: str = "schema"):
        super().__init__(message)
        self.kind = kind


class AuditSink(Protocol):
    def write(self, record: dict) -> None: ...


class CallBudget:
    """At most `max_calls` judge calls in all (None: no limit). `take(n)` grants up to n."""

    def __init__(self, max_calls: int | None = None):
        self.max_calls = max_calls
        self.spent = 0

    @property
    def left(self) -> int | None:
        return None if self.max_calls is None else max(self.max_calls - self.spent, 0)

    def take(self, wanted: int) -> int:
        granted = wanted if self.max_calls is None else min(wanted, self.left)
        self.spent += granted
        return granted


@dataclass
class Cost:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, result: Result) -> None:
        self.calls += 1
        self.prompt_tokens += result.num_prompt_tokens
        self.completion_tokens += result.num_tokens

    def absorb(self, replies: Sequence["Reply | None"]) -> "Cost":
        for reply in filter(None, replies):
            self.calls += reply.cost.calls
            self.prompt_tokens += reply.cost.prompt_tokens
            self.completion_tokens += reply.cost.completion_tokens
        return self


@dataclass(frozen=True)
class Job:
    prompt: str
    schema: dict
    parse: Callable[[object], object]  # parsed JSON -> value, raises ReplyError


@dataclass
class Reply:
    value: object = None
    error: str | None = None
    failure: str | None = None  # the kind of the last failure when value is None
    cost: Cost = field(default_factory=Cost)


def ask_all(backend: Backend, jobs: Sequence[Job], *, stage: str, max_tokens: int, temperature: float,
            seed: int, max_attempts: int = 2, budget: CallBudget | None = None,
            audit: AuditSink | None = None, max_model_len: int = 0) -> list[Reply]:
    """One reply per job: each job is sent until it parses or `max_attempts` are spent. A
    retry's doubled answer budget stays inside `max_model_len` (0: unknown) with its prompt."""
    replies = [Reply() for _ in jobs]
    tokens = [max_tokens] * len(jobs)
    pending = list(range(len(jobs)))
    for attempt in range(max_attempts):
        granted = len(pending) if budget is None else budget.take(len(pending))
        for i in pending[granted:]:
            replies[i].error, replies[i].failure = f"{stage}: call budget spent", "budget"
        pending = pending[:granted]
        if not pending:
            break
        requests = [Request(id=f"{stage}-{i}-try{attempt}", prompt=jobs[i].prompt, max_tokens=tokens[i],
                            temperature=temperature, seed=request_seed(seed, jobs[i].prompt, attempt),
                            json_schema=json.dumps(jobs[i].schema)) for i in pending]
        results = backend.generate(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"backend returned {len(results)} results for {len(requests)} requests")
        still = []
        for i, request, result in zip(pending, requests, results):
            reply = replies[i]
            reply.cost.add(result)
            _read(reply, jobs[i], result, stage)
            if audit is not None:
                audit.write(call_record(stage, i, attempt, request, result, reply))
            if reply.value is None:
                still.append(i)
                if reply.failure == "length":
                    tokens[i] *= 2
                    if max_model_len and result.num_prompt_tokens:
                        tokens[i] = max(min(tokens[i], max_model_len - result.num_prompt_tokens), 1)
        pending = still
    return replies


def _read(reply: Reply, job: Job, result: Result, stage: str) -> None:
    """Parse one result into `reply` (value, or error and failure kind). Never raises."""
    reply.value = None
    if not result.ok:
        reply.error, reply.failure = f"{stage}: backend error: {result.error}", "engine"
        return
    if result.finish_reason == "length":
        reply.error, reply.failure = f"{stage}: answer cut at {result.num_tokens} tokens", "length"
        return
    try:
        reply.value, reply.error, reply.failure = job.parse(parse_json(result.text)), None, None
    except ReplyError as exc:
        reply.error, reply.failure = f"{stage}: {exc}", exc.kind
    except PARSE_SLIPS as exc:  # a parser slip must not crash a scoring run; it is counted
        log.warning("%s: parser raised %s on a reply; counted as a schema failure", stage, type(exc).__name__)
        reply.error, reply.failure = f"{stage}: unreadable reply ({type(exc).__name__}: {exc})", "schema"


def call_record(stage: str, job: int, attempt: int, request: Request, result: Result, reply: Reply) -> dict:
    """One audit line: what was asked (hashed), what came back, how it was read."""
    parsed = reply.value if attempt == 0 or reply.value is not None else None
    return {"type": "call", "stage": stage, "job": job, "attempt": attempt,
            "prompt_sha256": hashlib.sha256(request.prompt.encode()).hexdigest(),
            "max_tokens": request.max_tokens, "seed": request.seed, "finish_reason": result.finish_reason,
            "answer": result.text, "failure": None if reply.value is not None else reply.failure,
            "parsed": _jsonable(parsed), "prompt_tokens": result.num_prompt_tokens,
            "completion_tokens": result.num_tokens}


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def request_seed(seed: int, prompt: str, attempt: int) -> int:
    """The seed of one judge request: the run's seed hasher over (seed, attempt, prompt)."""
    return derive_seed(seed, attempt, prompt)


def parse_json(text: object) -> object:
    """The first JSON object in a reply; tolerates code fences, and prose (even prose with
    braces) before or after it. Raises ReplyError(kind="json") when there is none."""
    if not isinstance(text, str):
        raise ReplyError(f"reply is {type(text).__name__}, not text", kind="json")
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    decoder = json.JSONDecoder()
    start, tries = body.find("{"), 0
    while start >= 0 and tries < MAX_JSON_STARTS:
        tries += 1
        try:
            value, _ = decoder.raw_decode(body, start)
            if isinstance(value, dict):
                return value
        except (json.JSONDecodeError, RecursionError):
            pass
        start = body.find("{", start + 1)
    raise ReplyError(f"not JSON: {text[:80]!r}", kind="json")
