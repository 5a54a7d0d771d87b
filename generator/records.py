"""The records every stage passes around, the one protocol behind all generation, and the
vocabulary they share: grid columns, weights, chat messages, derived seeds.

A backend takes a list of `Request` and returns one `Result` per request, in the same
order. A row that fails (engine error, timeout, unparsable reply) comes back as a `Result`
with `finish_reason="error"` and the reason in `error`; it never raises for one bad row.
"""
from __future__ import annotations

import dataclasses
import hashlib
import queue
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import pyarrow as pa


@dataclass(frozen=True)
class Request:
    """One chat completion to run. `prompt` is the user message; the backend applies the
    model's chat template. `json_schema` (JSON text) constrains the answer when set. `parts`
    (the prompts of a `parts: topics` template) makes it one request per part, `max_tokens`
    each, whose answers are joined (`backends.parts`); `prompt` then shows them all."""

    id: str
    prompt: str
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    system: str | None = None
    json_schema: str | None = None
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    id: str
    text: str
    finish_reason: str  # "stop" | "length" | "error"
    num_prompt_tokens: int = 0
    num_tokens: int = 0
    error: str | None = None
    # the duplicate-index keys (little-endian uint64) of the document this result becomes,
    # computed beside the engine (generator.run.beside); None: the driver computes them
    dedup_keys: bytes | None = None
    # the quality gates' verdict on that document, made beside the engine: () passed,
    # (gate, rule, reason) rejected; None: the driver checks it
    verdict: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"


# Result fields made beside the engine for this run's settings: never stored with a result (the
# journal, the judge's cache), so a result read back gets them made again
BESIDE_FIELDS = ("dedup_keys", "verdict")


def failed_result(request: Request, reason: str) -> Result:
    return Result(id=request.id, text="", finish_reason="error", error=reason)


class Backend(Protocol):
    """Anything that turns requests into results.

    Streaming is the core: `submit` hands requests over and returns at once; `poll` returns
    the results that finished since the last call (any order, matched by request id), waiting
    up to `timeout_s` for the first one. `capacity` is how many requests the backend can
    usefully hold in flight (e.g. the engines' `max_num_seqs` summed, with some headroom);
    `in_flight` is how many it holds now. `generate` runs a list to completion and returns
    one result per request, in request order (see `generate_all`).

    Optional: `generated_tokens`, the completion tokens the engines have produced so far,
    requests finished or still running (a progress rate); a backend that cannot see inside a
    running request counts the tokens of the results it has finished. Readers fall back on the
    results they received when a backend lacks it.
    """

    name: str
    model: str

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def submit(self, requests: Sequence[Request]) -> None: ...

    def poll(self, timeout_s: float) -> list[Result]: ...

    def generate(self, requests: Sequence[Request]) -> list[Result]: ...

    def close(self) -> None: ...


def take_finished(outbox: "queue.Queue[Result] | queue.SimpleQueue[Result]", timeout_s: float) -> list[Result]:
    """The results waiting in a backend's outbox: the first waited for up to `timeout_s`, the
    rest taken without waiting ([] when none came)."""
    out: list[Result] = []
    try:
        out.append(outbox.get(timeout=max(timeout_s, 0.0)))
        while True:
            out.append(outbox.get_nowait())
    except queue.Empty:
        return out


def generate_all(backend: Backend, requests: Sequence[Request]) -> list[Result]:
    """Submit every request at once and wait for all of them; results in request order. The
    backend must hold nothing else in flight (ids are matched, and equal ids share a result)."""
    if not requests:
        return []
    if backend.in_flight:
        raise RuntimeError(f"{backend.name}: generate() called with {backend.in_flight} requests still in flight")
    backend.submit(requests)
    wanted = {r.id for r in requests}
    got: dict[str, Result] = {}
    while len(got) < len(wanted):
        for result in backend.poll(1.0):
            if result.id in wanted:
                got[result.id] = result
    return [got[r.id] for r in requests]


def chat_messages(request: Request) -> list[dict[str, str]]:
    """The chat a request stands for: an optional system message, then the user prompt."""
    return ([{"role": "system", "content": request.system}] if request.system else []) + [
        {"role": "user", "content": request.prompt}]


def derive_seed(*parts: object) -> int:
    """A 31-bit seed derived from its parts (the run seed first), e.g. (seed, sample index)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


STANDARD_AXES = ("domain", "topic", "persona", "style", "audience")  # grid axes with a column of their own
GRID_COLUMNS = (*STANDARD_AXES, "template")  # the columns per-cell attribution and weights speak of
Weights = Mapping[str, Mapping[str, float]]  # axis (or "template") -> value -> weight


@dataclass(frozen=True)
class Document:
    """One generated row; the field names are the Parquet columns."""

    id: str
    text: str
    prompt: str
    system: str  # the system message ("" when the model's default was used)
    template: str
    domain: str
    topic: str
    persona: str
    style: str
    audience: str
    grid_values: str  # JSON of every axis value, custom axes included
    model: str
    backend: str
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    finish_reason: str
    num_tokens: int
    num_prompt_tokens: int
    sample_index: int
    round: int
    epoch: int  # the weight epoch the sample was drawn under (state.json lists them)
    recipe_hash: str
    source_id: str = ""  # a rewrite run's source document ("" in a grid run)
    chunk: int = -1  # the chunk of it rewritten (-1 in a grid run)
    rewrite: int = -1  # which of that chunk's per_source rewrites, 0..k-1 (-1 in a grid run)


PROVENANCE = ("source_id", "chunk", "rewrite")  # columns of a rewrite run's rows only
SOURCE_SCHEMA = pa.schema([
    (f.name, {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}[f.type])
    for f in dataclasses.fields(Document)
])
SCHEMA = pa.schema([f for f in SOURCE_SCHEMA if f.name not in PROVENANCE])  # a grid run's columns
