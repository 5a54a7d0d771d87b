"""The generation loop: keep the backend full, commit results in sample-index order.

Requests go out as long as the backend has room (its `capacity`); results come back in any
order and wait until every sample before them has returned. The low-water mark is the first
sample index not yet committed: everything below it is deduplicated, counted and, at each
flush, written (shard, failure and duplicate lines, then `state.json`). A killed run resumes
from the last flushed mark and redraws the same samples, because sample `i` depends only on
the seed, `i` and the weights of the epoch `i` falls in.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
import time
from pathlib import Path
from typing import Callable

from generator.files import (append_jsonl, next_shard_path, read_manifest, shard_path, write_manifest,
                             write_shard)
from generator.quality.gates import add_rejections, rejected_row, rejection_stop
from generator.records import Backend, Document, Result
from generator.recipe import Plan
from generator.run.beside import Beside, gates_of, result_keys, result_verdict
from generator.run.dedup import Deduper, index_path
from generator.run.documents import finish_result, to_document
from generator.run.journal import append_results, read_journal, replay, rewrite_journal
from generator.run.parts import with_parts
from generator.run.state import (Counters, Epoch, RunState, epoch_number, next_epoch_start, save_state,
                                 weights_at)
from generator.sampling.requests import Sample, plan_samples
from generator.sources.slots import Passes, open_passes, provenance


@dataclass(frozen=True)
class Flow:
    """What the engines are doing now, beside what the state has committed."""

    in_flight: int  # requests out
    waiting: int  # results back, waiting for an earlier sample to commit in order
    # completion tokens the engines generated since the run's first request (running requests included,
    # where the backend counts them: `generated_tokens`; else those of every result back) per second
    tokens_per_s: float


OnProgress = Callable[[RunState, Flow], None]
SUBMIT_CHUNK = 256  # samples drawn and submitted at once
# requests go out once this share of the backend's capacity is free (or all that is still needed
# fits): a large pool is topped up in chunks from its headroom, not one request per finished one
REFILL_SHARE = 1 / 32
MIN_ROWS_FOR_RATES = 64  # attempted rows before the failure and duplicate rates can stop a run
FLUSH_S = 30.0  # a flush at least this often while documents wait (a crash redoes at most this much)


class Pipeline:
    """Streams one run's samples through a backend (lives for the whole run, across rounds)."""

    def __init__(self, plan: Plan, out: Path, backend: Backend, deduper: Deduper | None = None,
                 on_progress: OnProgress | None = None, *, shard_rows: int = 20_000,
                 flush_s: float = FLUSH_S):
        self.plan, self.out, self.deduper = plan, out, deduper
        self.backend = with_parts(backend, plan.templates, plan.recipe.keep_truncated)
        # work on each result: beside the engines where the backend can, else here (the gates are built
        # on the first result that comes without a verdict, so a pool of actors never loads them here)
        self.beside = Beside(plan.recipe.keep_truncated, deduper and deduper.key_settings,
                             plan.recipe.quality, plan.eval_sets)
        if (deduper is not None or plan.recipe.quality is not None) and hasattr(self.backend, "set_beside"):
            self.backend.set_beside(self.beside)
        self.on_progress = on_progress
        self.shard_rows, self.flush_s = shard_rows, flush_s
        self.pending: dict[str, tuple[Sample, int]] = {}  # request id -> (sample, epoch number)
        self.done: dict[int, tuple[Sample, int, Result]] = {}  # sample index -> returned, not committed
        self.next_submit: int | None = None
        self.hold_at: int | None = None  # no sample at or past this index goes out (one `advance`)
        self.into: Path | None = None  # the folder aside that this `advance` writes to (None: the corpus)
        self.docs: list[Document] = []
        self.failures: list[dict] = []
        self.duplicates: list[dict] = []
        self.rejected: list[dict] = []
        self.mark = 0  # the low-water mark: samples below it are committed (in memory or on disk)
        self.last_flush = time.monotonic()
        self.busy_since: float | None = None
        self.received_tokens = 0  # completion tokens of every result back, for the progress rate
        self.journaled = read_journal(out)  # request id -> result finished ahead of order before a restart
        self.tokens_before = 0  # the backend's token count when the first request went out
        self.started: float | None = None  # when the first request went out
        self.passes: Passes | None = None  # a rewrite run's index -> slot mapping (generator/sources)

    def use_plan(self, plan: Plan) -> None:
        """Draw later samples from `plan` (a grid that grew)."""
        self.plan = plan

    def reopen_passes(self) -> None:
        """Rebuild a rewrite run's index -> slot mapping from the miss rows on disk at the next
        `advance` (after a sweep's documents not kept were listed as misses)."""
        self.passes = None

    def advance(self, state: RunState, until_docs: int, *, submit_docs: int | None = None,
                beside: Callable[[], bool] | None = None, hold_at: int | None = None,
                into: Path | None = None) -> RunState:
        """Commit samples until `until_docs` documents exist (in the corpus, or with `into` in that
        folder aside: `counters.aside_docs`), the run stops, or `beside()` turns true (work running
        beside generation). Keeps requests going out for `submit_docs` documents (default
        `until_docs`), none at or past sample `hold_at`. Flushes at the end (a folder aside only then)."""
        if self.next_submit is None or self.mark != state.counters.next_index:
            self.mark = self.next_submit = state.counters.next_index
        if self.plan.source is not None and self.passes is None:
            self.passes = open_passes(self.plan.recipe.size.num_docs, self.plan.recipe.source.max_attempts,
                                      self.out, self.mark)
        want = until_docs if submit_docs is None else submit_docs
        self.hold_at, self.into = hold_at, into
        try:
            return self._advance(state, until_docs, want, beside)
        finally:
            self.hold_at, self.into = None, None

    def _advance(self, state: RunState, until_docs: int, want: int, beside) -> RunState:
        self._progress(state)
        while not state.stopped and (self.have(state) < until_docs if beside is None else not beside()):
            self._submit(state, want)
            got = self.backend.poll(0.2)
            received = self._receive(got, state)
            state = self._commit(state, until_docs)
            ahead = [(i, self.done[i][2]) for i in received if i in self.done]  # finished ahead of order
            append_results(self.out, ahead)
            reason = check_failure_rate(self.plan, state.counters)
            if reason:
                state = dataclasses.replace(state, stopped=reason)
            due = len(self.docs) >= self.shard_rows or time.monotonic() - self.last_flush >= self.flush_s
            if self.docs and due and self.into is None:
                state = self.flush(state)
            self._progress(state)
            if beside is None and not self.backend.in_flight and not self.done and self._blocked(state, want):
                break
        return self.flush(state)

    def have(self, state: RunState) -> int:
        """Documents of the current call's goal: those in the folder aside, or the corpus'."""
        return state.counters.aside_docs if self.into is not None else state.counters.num_docs

    def _blocked(self, state: RunState, want: int) -> bool:
        p = self.passes  # a rewrite run is done once its last pass is committed
        done = p is not None and p.finished(self.mark) and self.next_submit >= p.end
        held = self.hold_at is not None and self.next_submit >= self.hold_at
        return done or held or self._expected(state) >= want

    def _share(self, state: RunState) -> float:
        """The share of samples that became documents so far (1 until 20 were committed)."""
        c = state.counters
        made = c.num_attempted - c.num_failed - c.num_duplicates - c.num_rejected
        return max(0.05, made / c.num_attempted) if c.num_attempted >= 20 else 1.0

    def _expected(self, state: RunState) -> float:
        """Documents committed plus those expected from samples out or waiting."""
        return self.have(state) + self._share(state) * (self.next_submit - self.mark)

    def _submit(self, state: RunState, want: int) -> None:
        room = self.backend.capacity - self.backend.in_flight
        refill = max(1, int(self.backend.capacity * REFILL_SHARE))
        while room > 0 and self._expected(state) < want:
            needed = math.ceil((want - self._expected(state)) / self._share(state))
            if room < min(refill, needed):
                return
            end = self.next_submit + min(room, SUBMIT_CHUNK, needed)
            if self.hold_at is not None:
                end = min(end, self.hold_at)
            if self.passes is not None:  # a rewrite run submits no further than its open pass
                end = min(end, self.passes.submit_end(self.next_submit, self.mark))
            epoch_no = epoch_number(state.steering, self.next_submit)
            nxt = next_epoch_start(state.steering, self.next_submit)
            if nxt is not None:
                end = min(end, nxt)
            if end <= self.next_submit:
                return
            n = end - self.next_submit
            weights = weights_at(state.steering, self.next_submit)
            samples = plan_samples(self.plan, self.next_submit, n, weights,
                                   self.passes and self.passes.slots(self.next_submit, n))
            fresh = []
            replayed = replay(self.backend, self.journaled, [s.request for s in samples])  # through the gates
            for sample in samples:
                result = replayed.get(sample.request.id)
                if result is not None:  # finished before a restart: not generated again
                    self.done[sample.index] = (sample, epoch_no, result)
                    continue
                self.pending[sample.request.id] = (sample, epoch_no)
                fresh.append(sample.request)
            if self.busy_since is None:
                self.busy_since = time.monotonic()
            if self.started is None:
                self.started = self.busy_since
            self.backend.submit(fresh)
            room -= len(fresh)
            self.next_submit = end

    def _receive(self, results: list[Result], state: RunState) -> list[int]:
        """File returned results under their sample index; the indices filed."""
        filed = []
        for result in results:
            self.received_tokens += result.num_tokens
            entry = self.pending.pop(result.id, None)
            if entry is not None:  # None: a request of a discarded epoch
                self.done[entry[0].index] = (entry[0], entry[1], result)
                filed.append(entry[0].index)
        return filed

    def _commit(self, state: RunState, until_docs: int) -> RunState:
        """Commit returned samples in index order, up to `until_docs` documents."""
        c, s = state.counters, state.steering
        aside = self.into is not None
        counts = dict(docs=0, attempted=0, failed=0, truncated=0, trimmed=0, exact=0, near=0, prompt=0,
                      completion=0)
        full = self.shard_rows if not aside else float("inf")  # a corpus shard closes at exactly shard_rows
        rejected = []  # the gate of each document rejected in this commit
        if self.deduper is not None:  # one search of the index for the keys of every result in order
            self.deduper.look_up(self._keys_in_order())
        while (self.mark in self.done and self.have(state) + counts["docs"] < until_docs
               and len(self.docs) < full):
            sample, epoch_no, result = self.done.pop(self.mark)
            round_no = s.epochs[epoch_no].round if epoch_no < len(s.epochs) else s.round
            self.mark += 1
            counts["attempted"] += 1
            counts["prompt"] += result.num_prompt_tokens
            counts["completion"] += result.num_tokens
            outcome = finish_result(result, self.plan.recipe.keep_truncated)
            if isinstance(outcome, str):
                counts["failed"] += 1
                self.failures.append({"id": sample.request.id, "sample_index": sample.index,
                                      "round": round_no, **self._miss(sample),
                                      "template": sample.template, "reason": outcome,
                                      "finish_reason": result.finish_reason, "prompt": sample.request.prompt})
                continue
            doc = to_document(sample, result, plan=self.plan, backend=self.backend.name, round=round_no,
                              epoch=epoch_no, text=outcome[0], finish_reason=outcome[1])
            rejection = self._rejection(doc, result)
            if rejection is not None:  # before the deduper: a rejected document never enters its index
                rejected.append(rejection.gate)
                self.rejected.append({**rejected_row(doc, rejection), **self._miss(sample)})
                continue
            reason = self._duplicate(doc, result)
            if reason is not None:
                counts["exact" if reason.startswith("exact") else "near"] += 1
                self.duplicates.append({"id": doc.id, "sample_index": doc.sample_index, "round": doc.round,
                                        **self._miss(sample),
                                        "template": doc.template, "reason": reason, "text": doc.text[:300]})
                continue
            counts["docs"] += 1
            counts["truncated"] += doc.finish_reason == "length"
            counts["trimmed"] += doc.finish_reason == "trimmed"
            self.docs.append(doc)
        if not counts["attempted"]:
            return state
        now = time.monotonic()
        busy = now - self.busy_since if self.busy_since is not None else 0.0
        self.busy_since = now if self.backend.in_flight else None
        counters = dataclasses.replace(
            c, next_index=self.mark, num_docs=c.num_docs + (0 if aside else counts["docs"]),
            num_attempted=c.num_attempted + counts["attempted"], num_failed=c.num_failed + counts["failed"],
            num_truncated=c.num_truncated + counts["truncated"],
            num_trimmed=c.num_trimmed + counts["trimmed"],
            duplicates_exact=c.duplicates_exact + counts["exact"],
            duplicates_near=c.duplicates_near + counts["near"], rejected=add_rejections(c.rejected, rejected),
            prompt_tokens=c.prompt_tokens + counts["prompt"],
            completion_tokens=c.completion_tokens + counts["completion"],
            generate_s=c.generate_s + busy)
        if aside:
            tokens = counts["prompt"] + counts["completion"]
            counters = dataclasses.replace(counters, aside_docs=c.aside_docs + counts["docs"],
                                           aside_tokens=c.aside_tokens + tokens)
        return dataclasses.replace(state, counters=counters)

    def _keys_in_order(self) -> list:
        """(id, index keys) of the results from the mark on that came in order with keys."""
        found, i = [], self.mark
        while i in self.done:
            keys = result_keys(self.done[i][2])
            if keys is not None:
                found.append((self.done[i][0].request.id, keys))
            i += 1
        return found

    def _miss(self, sample: Sample) -> dict:
        """Note that `sample` made no document (a rewrite run tries its slot again); its source fields."""
        if self.passes is not None:
            self.passes.miss(sample.index)
        return provenance(sample)

    def _rejection(self, doc: Document, result: Result):
        """The quality gates' verdict on `doc` (None: kept), as made beside the engine when it
        came with the result."""
        if self.plan.recipe.quality is None:
            return None
        verdict = result_verdict(result)
        return gates_of(self.beside).check(doc.text) if verdict is False else verdict

    def _duplicate(self, doc: Document, result: Result) -> str | None:
        """Why `doc` is a duplicate (it is indexed if not), by the keys computed beside the
        engine when they came with the result."""
        if self.deduper is None:
            return None
        keys = result_keys(result)
        return self.deduper.check(doc.id, doc.text) if keys is None else self.deduper.check_keys(doc.id, keys)

    def flush(self, state: RunState) -> RunState:
        """Write what is committed in memory (failures, duplicates, a shard), then the state."""
        c = state.counters
        append_jsonl(self.out / "failures.jsonl", self.failures)
        append_jsonl(self.out / "duplicates.jsonl", self.duplicates)
        append_jsonl(self.out / "rejected.jsonl", self.rejected)
        shards = c.num_shards
        if self.docs and self.into is not None:  # one shard per epoch: a sweep's points apart
            for epoch in sorted({d.epoch for d in self.docs}):
                last = write_aside_shard(self.into, [d for d in self.docs if d.epoch == epoch])
        elif self.docs:
            manifest = read_manifest(self.out)
            for start in range(0, len(self.docs), self.shard_rows):
                last = shard_path(self.out, shards)
                manifest.append(write_shard(last, self.docs[start:start + self.shard_rows]))
                shards += 1
            write_manifest(self.out, manifest)
        if self.docs and self.deduper is not None:
            self.deduper.flush(index_path(last))  # the index rows of these documents, stored beside them
        self.docs, self.failures, self.duplicates, self.rejected = [], [], [], []
        self.last_flush = time.monotonic()
        counters = dataclasses.replace(c, num_shards=shards, batches=c.batches + 1)
        state = dataclasses.replace(state, counters=counters)
        save_state(self.out, state)
        waiting = [(i, v[2]) for i, v in sorted(self.done.items())]  # the committed ones leave the journal
        rewrite_journal(self.out, waiting)
        return state

    def drain(self) -> None:
        """Wait for every request out, and forget every sample past the mark (the end of a folder aside)."""
        while self.backend.in_flight:
            self.backend.poll(0.5)
        self.pending.clear()
        self.done.clear()
        self.next_submit = self.mark
        self.busy_since = None

    def set_epoch(self, state: RunState, start: int, weights: dict, round: int | None = None, *,
                  concentration: float = -1.0) -> RunState:
        """New weights from sample `start` on, their samples counted to controller round `round`
        (default: the current one) and labelled with the `concentration` they were derived at:
        samples at or past it that went out under older weights are discarded and drawn again."""
        s = state.steering
        number = s.round if round is None else round
        epoch = Epoch(start, weights, number, concentration)
        epochs = tuple(e for e in s.epochs if e.start < start) + (epoch,)
        self.pending = {k: v for k, v in self.pending.items() if v[0].index < start}
        self.done = {i: v for i, v in self.done.items() if i < start}
        if self.next_submit is not None and self.next_submit > start:
            self.next_submit = start
        return dataclasses.replace(state, steering=dataclasses.replace(s, epochs=epochs, weights=weights))

    def _progress(self, state: RunState) -> None:
        if self.on_progress is not None:
            generated = getattr(self.backend, "generated_tokens", None)
            tokens = self.received_tokens if generated is None else generated
            if self.started is None:  # what the backend generated before this run is not its rate
                self.tokens_before = tokens
            elapsed = time.monotonic() - self.started if self.started is not None else 0.0
            rate = (tokens - self.tokens_before) / elapsed if elapsed > 0 else 0.0
            self.on_progress(state, Flow(self.backend.in_flight, len(self.done), rate))


def write_aside_shard(root: Path, docs: list[Document]) -> Path:
    path = next_shard_path(root)
    write_shard(path, docs)
    return path


def check_failure_rate(plan: Plan, c: Counters) -> str:
    """A reason to stop when too many attempted rows failed (once enough rows were attempted)."""
    if c.num_attempted < min(MIN_ROWS_FOR_RATES, plan.recipe.size.num_docs):
        return ""
    rate = c.num_failed / c.num_attempted
    if rate > plan.recipe.max_failure_rate:
        return (f"failure rate {rate:.1%} ({c.num_failed}/{c.num_attempted} rows) is above "
                f"max_failure_rate {plan.recipe.max_failure_rate:.0%}; see failures.jsonl")
    dup_rate = c.num_duplicates / c.num_attempted
    if dup_rate > plan.recipe.dedup.max_duplicate_rate:
        return (f"duplicate rate {dup_rate:.1%} ({c.num_duplicates}/{c.num_attempted} rows) is above "
                f"dedup.max_duplicate_rate {plan.recipe.dedup.max_duplicate_rate:.0%}: the model keeps "
                "repeating itself; see duplicates.jsonl (raise temperature or widen the grid)")
    return rejection_stop(plan.recipe.quality, c.rejected, c.num_attempted)
