"""The LLM score gate in the stream of results: a backend wrapper that holds each finished
document until the judge has scored it, scoring in batches of concurrent calls.

`ScoredBackend` implements `records.Backend` over the generation backend (with the plan's
multi-part templates joined inside it, so the judge sees whole documents). A result comes back
from `poll` carrying the gates' verdict (`Result.verdict`): the verdict made beside the engine
when there is one, else the other gates' verdict made here, and for a document they pass, the
judge's. Documents wait until `batch_docs` of them are ready, the engines hold nothing more, or
a poll brings nothing new; then one batch goes to the judge while the engines keep generating.
Waiting documents count as in flight and add as much to the capacity, so the engines stay full.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from generator.records import Backend, Request, Result, generate_all
from generator.run.beside import Beside
from generator.run.documents import finish_result
from generator.run.parts import with_parts


class ScoredBackend:
    """A backend whose results carry the LLM score gate's verdict (see the module text)."""

    joins_parts = True  # the plan's parts are joined inside: the run does not wrap it again

    def __init__(self, inner: Backend, plan, gate):
        self.inner = with_parts(inner, plan.templates, plan.recipe.keep_truncated)
        self.name, self.model = inner.name, inner.model
        self.gate, self.policy = gate, plan.recipe.keep_truncated
        self.beside = Beside(self.policy, None, plan.recipe.quality, plan.eval_sets)
        self.batch_docs = plan.recipe.quality.llm_score.batch_docs
        self.waiting: list[Result] = []  # passed every other gate, not scored yet

    @property
    def capacity(self) -> int:
        return self.inner.capacity + len(self.waiting)

    @property
    def in_flight(self) -> int:
        return self.inner.in_flight + len(self.waiting)

    @property
    def generated_tokens(self) -> int | None:
        return getattr(self.inner, "generated_tokens", None)

    def set_beside(self, beside: Beside) -> None:
        """The run's work beside the engines: done by the inner backend where it can, else here."""
        self.beside = beside
        if hasattr(self.inner, "set_beside"):
            self.inner.set_beside(beside)

    def submit(self, requests: Sequence[Request]) -> None:
        self.inner.submit(requests)

    def poll(self, timeout_s: float) -> list[Result]:
        got = self.inner.poll(timeout_s)
        ready = []
        for result in got:
            if result.verdict is None:
                result = self.beside([result])[0]  # a failed result stays without a verdict
            (self.waiting if result.verdict == () else ready).append(result)
        if self.waiting and (not got or len(self.waiting) >= self.batch_docs or not self.inner.in_flight):
            ready += self._score()
        return ready

    def _score(self) -> list[Result]:
        """Every waiting result with the judge's verdict, in batches of `batch_docs`."""
        scored = []
        while self.waiting:
            batch = self.waiting[:self.batch_docs]
            scored += self._judged(batch)
            self.waiting = self.waiting[len(batch):]
        return scored

    def _judged(self, batch: list[Result]) -> list[Result]:
        texts = [finish_result(r, self.policy)[0] for r in batch]
        return [dataclasses.replace(result, verdict=() if rejection is None else
                                    (rejection.gate, rejection.rule, rejection.reason))
                for result, rejection in zip(batch, self.gate.score(texts))]

    def judge_finished(self, results: Sequence[Result]) -> list[Result]:
        """`results` that finished before a restart (read back from the run's journal, which keeps
        no verdict) with the verdict `poll` would have given them: the other gates', then for a
        document they pass the judge's (an answer its cache holds costs no call)."""
        checked = [self.beside([r])[0] if r.verdict is None else r for r in results]
        passed = [r for r in checked if r.verdict == ()]
        judged = {}
        for start in range(0, len(passed), self.batch_docs):
            judged.update((r.id, r) for r in self._judged(passed[start:start + self.batch_docs]))
        return [judged.get(r.id, r) for r in checked]

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return generate_all(self, requests)

    def close(self) -> None:
        self.inner.close()


def with_score_gate(backend: Backend, plan, gate) -> Backend:
    """`backend` with the LLM score gate `gate` in its stream, or itself when there is none."""
    return backend if gate is None else ScoredBackend(backend, plan, gate)
