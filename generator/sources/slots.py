"""Which rewrite slot each sample index stands for, in passes.

A slot is one (unit, rewrite): slot s = unit · k + rewrite. Pass 0 spans indices 0..U·k−1 and
index i is slot i. A sample committed without a document (failed, rejected by a gate, duplicate)
is a miss, and so is a steered run's pilot document whose sweep point was not kept (listed in
OUT/pilot/discarded.jsonl: the corpus does not hold it); once every index of a pass is committed,
the next pass lists that pass's missed slots in slot order at the following indices, until no
slot misses or `max_attempts` passes ran. The mapping is therefore a function of (unit count, k,
committed misses), and a resumed run rebuilds it from the miss rows on disk (failures, duplicates
and rejected lines carry `sample_index`).
Memory: one integer per slot retried, none per slot that succeeded first time.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.files import append_jsonl, read_documents, read_jsonl

DISCARDED = "pilot/discarded.jsonl"  # pilot documents not kept in the corpus: their slots are open again
MISS_FILES = ("failures.jsonl", "duplicates.jsonl", "rejected.jsonl", DISCARDED)


@dataclass(frozen=True)
class Pass:
    start: int
    end: int
    slots: np.ndarray | None = None  # the slot of each index start..end-1; None: pass 0 (index i is slot i)


class Passes:
    """The index → slot mapping so far and the misses of the newest pass."""

    def __init__(self, num_slots: int, max_attempts: int):
        self.passes = [Pass(0, num_slots)]
        self.starts = [0]
        self.misses: list[int] = []  # slots of the newest pass committed without a document
        self.max_attempts = max_attempts

    def slot(self, index: int) -> int:
        p = self.passes[bisect.bisect_right(self.starts, index) - 1]
        if index >= p.end:
            raise IndexError(f"sample {index} lies past the open passes (they end at {p.end})")
        return index if p.slots is None else int(p.slots[index - p.start])

    def slots(self, start: int, n: int) -> list[int]:
        return [self.slot(i) for i in range(start, start + n)]

    def miss(self, index: int) -> None:
        """Sample `index` (of the newest pass) was committed without a document."""
        self.misses.append(self.slot(index))

    @property
    def end(self) -> int:
        return self.passes[-1].end

    def submit_end(self, next_submit: int, mark: int) -> int:
        """The first index not to submit yet: the newest pass's end; a new pass opens (and its end
        is returned) once every index before it is committed and some slot of it missed."""
        if next_submit < self.end or mark < self.end or self.finished(mark):
            return self.end
        slots = np.array(sorted(self.misses), dtype=np.int64)
        self.passes.append(Pass(self.end, self.end + len(slots), slots))
        self.starts.append(self.passes[-1].start)
        self.misses = []
        return self.end

    def finished(self, mark: int) -> bool:
        """Everything is committed and no further pass will open."""
        return mark >= self.end and (not self.misses or len(self.passes) >= self.max_attempts)

    def missing(self) -> list[int]:
        """Slots without a document so far (final once `finished`)."""
        return list(self.misses)


def miss_indices(out: Path, below: int) -> list[int]:
    """Sample indices below `below` committed without a document, from the run folder."""
    found = {r["sample_index"] for name in MISS_FILES for r in read_jsonl(out / name, "sample_index", int)}
    return sorted(i for i in found if i < below)


def rebuild_passes(num_slots: int, max_attempts: int, misses: list[int], mark: int) -> Passes:
    """The passes of a run committed up to `mark` whose missed indices are `misses` (sorted)."""
    passes = Passes(num_slots, max_attempts)
    for index in misses:
        while index >= passes.end:  # the pass holding it opened when the one before it was committed
            before = passes.end
            if passes.submit_end(before, before) == before:
                return passes  # past the last pass there can be none: not a miss of this mapping
        passes.miss(index)
    if mark >= passes.end:
        passes.submit_end(mark, mark)
    return passes


def open_passes(num_slots: int, max_attempts: int, out: Path, mark: int) -> Passes:
    """The passes of the run in `out`, committed up to sample `mark` (a new run: mark 0)."""
    return rebuild_passes(num_slots, max_attempts, miss_indices(out, mark) if mark else [], mark)


def provenance(sample) -> dict:
    """The source fields of a failure, duplicate or rejection row ({} for a grid run's sample)."""
    if sample.rewrite < 0:
        return {}
    return {"source_id": sample.source_id, "chunk": sample.chunk, "rewrite": sample.rewrite}


def write_discarded(out: Path, pilot_root: Path, round_no: int) -> int:
    """List the documents left in a pilot round's folder (those not moved into the corpus) in
    OUT/pilot/discarded.jsonl, so their slots are rewritten in a later pass; how many."""
    table = read_documents(pilot_root, columns=["sample_index", "source_id", "chunk", "rewrite"])
    rows = [{**row, "round": round_no, "reason": "pilot point not kept"} for row in table.to_pylist()]
    append_jsonl(out / DISCARDED, rows)
    return len(rows)
