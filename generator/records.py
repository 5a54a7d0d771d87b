"""The records every stage passes around, and the one protocol behind all generation.

A backend takes a list of `Request` and returns one `Result` per request, in the same
order. A row that fails (engine error, timeout, unparsable reply) comes back as a `Result`
with `finish_reason="error"` and the reason in `error`; it never raises for one bad row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Request:
    """One chat completion to run. `prompt` is the user message; the backend applies the
    model's chat template. `json_schema` (JSON text) constrains the answer when set."""

    id: str
    prompt: str
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    system: str | None = None
    json_schema: str | None = None


@dataclass(frozen=True)
class Result:
    id: str
    text: str
    finish_reason: str  # "stop" | "length" | "error"
    num_prompt_tokens: int = 0
    num_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"


def failed_result(request: Request, reason: str) -> Result:
    return Result(id=request.id, text="", finish_reason="error", error=reason)


class Backend(Protocol):
    """Anything that turns requests into results, one per request, same order."""

    name: str
    model: str

    def generate(self, requests: Sequence[Request]) -> list[Result]: ...

    def close(self) -> None: ...
