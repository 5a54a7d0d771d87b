"""A simulated continuous-batching engine with the interface of `EngineActor`, so it can stand in
for a vLLM engine as `RayBackend(..., actor_class=SimEngine, **options)`.

The engine advances in decode steps. A step takes `step_base_s + step_per_seq_s × live` seconds
and emits one token for every live sequence; at most `max_num_seqs` sequences are live and the
rest wait in arrival order. A request's output length is drawn from a lognormal (median
`median_tokens`, shape `sigma`) seeded by the request's seed and capped at its `max_tokens`;
its text repeats the prompt's first line, then words drawn from the same seed (about 0.75 words
per token). Steps sleep rather than compute; `time_scale` shrinks every step (0.1: ten times
shorter) and the engine keeps a simulated clock, so a late wake-up is made up by the next steps
instead of slowing the engine down. Prefill and memory limits are not simulated.
"""
from __future__ import annotations

import heapq
import math
import os
import threading
import time
from collections import deque

import numpy as np

from generator.records import Request, Result

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
VOCAB = [a + b for a in SYLLABLES for b in SYLLABLES]  # 4,900 made-up words
WORDS_PER_TOKEN = 0.75
SENTENCE_WORDS = 12
IN_FLIGHT_FACTOR = 1.1  # the same headroom as VllmBackend.capacity

# Assumed, not measured: an 8B model decoding on one H100-class GPU.
DEFAULTS = dict(step_base_s=0.006, step_per_seq_s=0.00005, max_num_seqs=1024, median_tokens=350.0,
                sigma=0.6, time_scale=1.0)


def output_tokens(request: Request, median_tokens: float, sigma: float) -> int:
    """How many tokens the engine generates for `request` (deterministic per request seed)."""
    rng = np.random.default_rng([request.seed, 0])
    return int(min(request.max_tokens, max(1, round(rng.lognormal(math.log(median_tokens), sigma)))))


def output_text(request: Request, num_tokens: int) -> str:
    """The prompt's first line, then about 0.75 words per token drawn from the request seed."""
    rng = np.random.default_rng([request.seed, 1])
    ids = rng.integers(len(VOCAB), size=max(1, round(num_tokens * WORDS_PER_TOKEN)))
    words = [VOCAB[i] + ("." if n % SENTENCE_WORDS == SENTENCE_WORDS - 1 else "") for n, i in enumerate(ids)]
    return request.prompt.split("\n", 1)[0] + "\n" + " ".join(words)


class SimEngine:
    """Ray actor methods: `capacity()`, `submit(requests)`, `take(wait_s)`, `pid()`; plus
    `stats()` (steps, simulated seconds, tokens) for the benchmark."""

    def __init__(self, model: str, options: dict):
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown SimEngine options {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
        o = {**DEFAULTS, **options}
        self.model = model
        self.step_base_s, self.step_per_seq_s = float(o["step_base_s"]), float(o["step_per_seq_s"])
        self.max_num_seqs, self.time_scale = int(o["max_num_seqs"]), float(o["time_scale"])
        self.median_tokens, self.sigma = float(o["median_tokens"]), float(o["sigma"])
        self._cond = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._live: list[tuple[int, int, Request, int]] = []  # heap of (finish step, serial, request, tokens)
        self._outbox: list[Result] = []
        self._serial = 0
        self.steps, self.sim_s, self.tokens = 0, 0.0, 0
        self._beside = None  # done to results before they are returned (`set_beside`)
        self._thread = threading.Thread(target=self._step_forever, name="sim-step", daemon=True)
        self._thread.start()

    def capacity(self) -> int:
        return math.ceil(IN_FLIGHT_FACTOR * self.max_num_seqs)

    def submit(self, requests: list[Request]) -> None:
        with self._cond:
            self._waiting.extend(requests)
            self._cond.notify_all()

    def set_beside(self, beside) -> None:
        """What to do to results here before returning them (generator.run.beside), as EngineActor."""
        self._beside = beside

    def take(self, wait_s: float, gather_s: float = 0.0) -> tuple[list[Result], int]:
        """The results finished since the last call (waiting up to `wait_s` for the first, then
        `gather_s` more for others), and the tokens the engine's steps have emitted so far,
        running requests included."""
        with self._cond:
            if self._cond.wait_for(lambda: self._outbox, timeout=wait_s) and gather_s > 0:
                deadline = time.monotonic() + gather_s  # others finishing meanwhile join this answer
                while (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(timeout=left)
            out, self._outbox, tokens = self._outbox, [], self.tokens
        return (self._beside(out) if self._beside else out), tokens

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict:
        with self._cond:
            return {"steps": self.steps, "sim_s": self.sim_s, "tokens": self.tokens}

    def _admit(self) -> None:
        while self._waiting and len(self._live) < self.max_num_seqs:
            request = self._waiting.popleft()
            n = output_tokens(request, self.median_tokens, self.sigma)
            self._serial += 1
            heapq.heappush(self._live, (self.steps + n, self._serial, request, n))

    def _step_forever(self) -> None:
        anchor_real, anchor_sim = time.monotonic(), 0.0
        while True:
            with self._cond:
                if not self._live and not self._waiting:
                    self._cond.wait_for(lambda: self._waiting)
                    anchor_real, anchor_sim = time.monotonic(), self.sim_s  # idle time is not made up later
                self._admit()
                live = len(self._live)
                self.sim_s += self.step_base_s + self.step_per_seq_s * live
                due = anchor_real + (self.sim_s - anchor_sim) * self.time_scale
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._cond:
                self.steps += 1
                self.tokens += live
                finished = []
                while self._live and self._live[0][0] <= self.steps:
                    finished.append(heapq.heappop(self._live))
            if finished:  # texts are built outside the lock, so submit and take never wait on them
                results = [finish(request, n) for _, _, request, n in finished]
                with self._cond:
                    self._outbox.extend(results)
                    self._cond.notify_all()


def finish(request: Request, num_tokens: int) -> Result:
    return Result(id=request.id, text=output_text(request, num_tokens),
                  finish_reason="length" if num_tokens >= request.max_tokens else "stop",
                  num_prompt_tokens=round(len(request.prompt.split()) / WORDS_PER_TOKEN), num_tokens=num_tokens)
