"""Documents made of several answers: a `parts: topics` template asks one request per topic,
and the document is the answers joined by blank lines.

`PartsBackend` wraps any backend: a request with `parts` goes out as one sub-request per part
(`max_tokens` each, seeds derived from the request's), and comes back as one result once every
part has returned. Requests without parts pass through. The generation loop, resume and the
duplicate index see one request and one result per document, as for any other template.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from generator.records import Backend, Request, Result, derive_seed, generate_all
from generator.run.documents import trim_to_sentence

PART_BREAK = "\n\n"  # between the answers of a document's parts


def split_request(request: Request) -> list[Request]:
    """The sub-requests of a request with parts (ids `<id>/<j>`), or the request itself."""
    if not request.parts:
        return [request]
    return [dataclasses.replace(request, id=f"{request.id}/{j}", prompt=prompt, parts=(),
                                seed=derive_seed(request.seed, "part", j))
            for j, prompt in enumerate(request.parts)]


def join_results(request: Request, results: Sequence[Result], policy: str) -> Result:
    """One result from the results of a request's parts, in part order. A failed part fails the
    document. A part cut at max_tokens is trimmed to its last sentence under the "trim" policy
    (the document then ends "trimmed"; a part with no complete sentence fails it), kept as cut
    under "keep", and makes the whole document "length" (dropped) under "drop"."""
    tokens = dict(num_prompt_tokens=sum(r.num_prompt_tokens for r in results),
                  num_tokens=sum(r.num_tokens for r in results))
    texts, cut = [], False
    for j, r in enumerate(results):
        if not r.ok:
            return Result(id=request.id, text="", finish_reason="error", error=f"part {j + 1}: {r.error}",
                          **tokens)
        text = r.text.strip()
        if r.finish_reason == "length":
            cut = True
            if policy == "trim":
                text = trim_to_sentence(text)
                if not text:
                    return Result(id=request.id, text="", finish_reason="error", **tokens,
                                  error=f"part {j + 1} truncated at max_tokens ({r.num_tokens} tokens) "
                                        "with no complete sentence to keep")
        if not text:
            return Result(id=request.id, text="", finish_reason="error", error=f"part {j + 1}: empty answer",
                          **tokens)
        texts.append(text)
    finish = "stop" if not cut else "trimmed" if policy == "trim" else "length"
    return Result(id=request.id, text=PART_BREAK.join(texts), finish_reason=finish, **tokens)


class PartsBackend:
    """A backend that sends each part of a request as its own request (see the module text)."""

    def __init__(self, inner: Backend, *, width: int, policy: str):
        self.inner, self.width, self.policy = inner, width, policy
        self.name, self.model = inner.name, inner.model
        self._waiting: dict[str, tuple[Request, dict[int, Result]]] = {}  # request id -> parts back
        self._in_flight = 0
        self._part_tokens = 0  # tokens of the parts returned, for an inner backend that does not count
        self._documents, self._requests = 0, 0  # submitted so far: documents, and the requests they became

    @property
    def parts_per_document(self) -> float:
        """Requests per document submitted so far (`width` before the first)."""
        return self._requests / self._documents if self._documents else float(self.width)

    @property
    def capacity(self) -> int:
        """Documents in flight that fill the inner backend: those out, plus the inner backend's free
        room over the requests per document so far. Most recipes mix one-part templates with
        multi-part ones, so dividing by the widest would leave the engines mostly empty."""
        room = max(0, self.inner.capacity - self.inner.in_flight)
        return max(1, self._in_flight + int(room / self.parts_per_document))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def generated_tokens(self) -> int:
        """The inner backend's count of generated tokens (every part's, running ones included),
        or the tokens of the parts it has returned."""
        return getattr(self.inner, "generated_tokens", self._part_tokens)

    def submit(self, requests: Sequence[Request]) -> None:
        out = []
        for r in requests:
            if r.parts:
                self._waiting[r.id] = (r, {})
            out.extend(split_request(r))
        self._in_flight += len(requests)
        self._documents, self._requests = self._documents + len(requests), self._requests + len(out)
        self.inner.submit(out)

    def poll(self, timeout_s: float) -> list[Result]:
        done = []
        for result in self.inner.poll(timeout_s):
            self._part_tokens += result.num_tokens
            parent, _, part = result.id.rpartition("/")
            if parent not in self._waiting:
                done.append(result)
                continue
            request, got = self._waiting[parent]
            got[int(part)] = result
            if len(got) == len(request.parts):
                del self._waiting[parent]
                done.append(join_results(request, [got[j] for j in range(len(request.parts))], self.policy))
        self._in_flight -= len(done)
        return done

    def set_beside(self, beside) -> None:
        """Pass work beside the engines on (a joined document's keys are not among it: the
        result `join_results` builds carries none, so the driver computes them)."""
        if hasattr(self.inner, "set_beside"):
            self.inner.set_beside(beside)

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return generate_all(self, requests)

    def close(self) -> None:
        self.inner.close()


def with_parts(backend: Backend, templates, policy: str) -> Backend:
    """`backend` wrapped for the plan's templates when any of them has parts, else itself (also
    when it joins parts already: `joins_parts`)."""
    width = max((t.num_topics for t in templates if t.parts), default=0)
    joined = getattr(backend, "joins_parts", False)
    return PartsBackend(backend, width=width, policy=policy) if width and not joined else backend
