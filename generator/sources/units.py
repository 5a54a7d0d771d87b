"""The units a rewrite run works through, in the seeded order, and a cursor that fetches them.

The source's rows are cut into windows of `shuffle_window` consecutive rows; each window's rows
are permuted by a rng seeded with (seed, SHUFFLE_STREAM, window number); rows without text are
dropped; each remaining document becomes its chunks (one unit without `chunk_tokens`), in order.
Units are numbered 0.. in that order. `load_source` counts them in one streaming pass when the
recipe loads (checking the source on the way; `budget_tokens` ends the pass at the last whole
document it pays for, so no document is rewritten in part) and keeps, per window, its first row,
unit and document: a few integers per window, from which the cursor reads any unit by re-reading
its one window (Parquet and saved datasets seek by metadata; JSONL from the nearest row a read
noted).
"""
from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from generator.errors import UserError
from generator.sources.chunks import Counter, split_chunks, token_counter
from generator.sources.config import Source, budget_units
from generator.sources.read import Files, check_fields, find_files, iter_batches
from generator.sources.record import count_key, read_count, write_count

SHUFFLE_STREAM = 5150  # the random stream that orders the rows within a window
CACHE_WINDOWS = 4  # windows of units the cursor keeps (a rewind of the loop stays within them)


@dataclass(frozen=True)
class Unit:
    position: int  # in the seeded order
    source_id: str
    chunk: int
    num_chunks: int
    text: str


@dataclass(frozen=True)
class Window:
    row: int  # its first row in the source
    unit: int  # the position of its first unit
    doc: int  # documents (rows with text) before it


def window_units(ids: Sequence[str], texts: Sequence, *, number: int, first_unit: int, docs_left: int | None,
                 spec: Source, seed: int, count: Counter | None) -> list[Unit]:
    """The units of window `number` (its rows' ids and texts), numbered from `first_unit`;
    at most `docs_left` documents (None: all)."""
    order = (np.random.default_rng([seed, SHUFFLE_STREAM, number]).permutation(len(texts)).tolist()
             if spec.shuffle_window > 1 else range(len(texts)))
    kept: list[tuple[str, str]] = []  # (id, text) of the window's documents, in the seeded order
    for i in order:
        text = texts[i].strip() if texts[i] is not None else ""
        if not text:
            continue
        if docs_left is not None and len(kept) >= docs_left:
            break
        kept.append((ids[i], text))
    sizes = count([text for _, text in kept]) if count is not None else [0] * len(kept)  # one call a window
    units: list[Unit] = []
    for (doc_id, text), size in zip(kept, sizes):
        chunks = split_chunks(text, spec.chunk_tokens, count, tokens=size) if count is not None else [text]
        for c, chunk in enumerate(chunks):
            units.append(Unit(first_unit + len(units), doc_id, c, len(chunks), chunk))
    return units


def iter_windows(files: Files, spec: Source, start_row: int, where: str,
                 marks: dict | None = None) -> Iterator[tuple[list, list]]:
    """(ids, texts) of each window of `shuffle_window` rows from `start_row` (a window's first row)
    on; `marks`: where a JSONL source's rows lie, noted by earlier reads (`read.iter_batches`)."""
    ids: list = []
    texts: list = []
    for batch_ids, batch_texts in iter_batches(files, spec, start_row, where, marks):
        ids.extend(batch_ids)
        texts.extend(batch_texts)
        while len(texts) >= spec.shuffle_window:
            yield ids[:spec.shuffle_window], texts[:spec.shuffle_window]
            del ids[:spec.shuffle_window], texts[:spec.shuffle_window]
    if texts:
        yield ids, texts


class UnitCursor:
    """Fetches units by position: re-reads the one window a unit lies in (a few cached), keeping
    the open stream when the next window asked for follows the last one read."""

    def __init__(self, files: Files, spec: Source, seed: int, windows: tuple[Window, ...], num_units: int,
                 count: Counter | None, where: str, marks: dict | None = None):
        self.files, self.spec, self.seed, self.windows = files, spec, seed, windows
        self.marks = {} if marks is None else marks  # a JSONL source: row -> where it starts (read.py)
        self.num_units, self.count, self.where = num_units, count, where
        self.starts = [w.unit for w in windows]
        self.cache: OrderedDict[int, list[Unit]] = OrderedDict()
        self.stream: Iterator | None = None
        self.stream_window = -1  # the window the open stream yields next

    def units(self, positions: Sequence[int]) -> list[Unit]:
        out = []
        for p in positions:
            if not 0 <= p < self.num_units:
                raise IndexError(f"unit {p} is outside the source's {self.num_units} units")
            w = bisect.bisect_right(self.starts, p) - 1
            out.append(self._window(w)[p - self.starts[w]])
        return out

    def docs_before(self, position: int) -> int:
        """Documents whose first unit lies before unit `position` (re-reads at most its window)."""
        w = bisect.bisect_right(self.starts, position) - 1
        before = self._window(w)[:position - self.starts[w]]
        return self.windows[w].doc + sum(u.chunk == 0 for u in before)

    def _window(self, w: int) -> list[Unit]:
        hit = self.cache.get(w)
        if hit is not None:
            self.cache.move_to_end(w)
            return hit
        if self.stream is None or self.stream_window != w:
            self.stream = iter_windows(self.files, self.spec, self.windows[w].row, self.where, self.marks)
        ids, texts = next(self.stream)
        self.stream_window = w + 1
        left = self.spec.max_sources - self.windows[w].doc if self.spec.max_sources else None
        units = window_units(ids, texts, number=w, first_unit=self.windows[w].unit, docs_left=left,
                             spec=self.spec, seed=self.seed, count=self.count)
        self.cache[w] = units
        if len(self.cache) > CACHE_WINDOWS:
            self.cache.popitem(last=False)
        return units


@dataclass(frozen=True)
class SourcePlan:
    """A source, counted: its units and the windows the cursor seeks by."""

    spec: Source
    name: str  # the file or folder's name (`seed_doc_source`)
    num_units: int
    num_docs: int  # source documents the units come from
    num_rows: int  # rows read (those without text included)
    cursor: UnitCursor = field(compare=False, repr=False)
    key: str = ""  # what the count depends on, hashed (`record.count_key`)

    def units(self, positions: Sequence[int]) -> list[Unit]:
        return self.cursor.units(positions)

    def docs_before(self, position: int) -> int:
        """Documents whose first unit lies before unit `position` (reads at most one window)."""
        return self.num_docs if position >= self.num_units else self.cursor.docs_before(position)

    def write_count(self, out: Path) -> None:
        """Keep the count in the run folder `out` (`record.py`), for a resume to reuse."""
        totals = {"num_units": self.num_units, "num_docs": self.num_docs, "num_rows": self.num_rows}
        write_count(out, self.key, totals, [(w.row, w.unit, w.doc) for w in self.cursor.windows])


def load_source(spec: Source, *, model: str, seed: int, max_tokens: int, where: str,
                resume_from: Path | None = None) -> SourcePlan:
    """Open and count the source (one streaming pass; none when `resume_from`, a run folder, holds
    the count made under the same key); UserError when it is missing, lacks a field or holds no text."""
    files = find_files(spec, where)
    check_fields(files, spec, where)
    count = token_counter(model, where) if spec.chunk_tokens else None
    key = count_key(spec, model, seed, max_tokens)
    record = read_count(resume_from, key) if resume_from is not None else None
    if record is not None:
        windows = tuple(Window(*w) for w in record["windows"])
        cursor = UnitCursor(files, spec, seed, windows, record["num_units"], count, where)
        totals = [record[k] for k in ("num_units", "num_docs", "num_rows")]
        return SourcePlan(spec, files.name, *totals, cursor, key)
    cap = budget_units(spec, max_tokens)
    windows, units, docs, rows, over, marks = [], 0, 0, 0, False, {}
    for number, (ids, texts) in enumerate(iter_windows(files, spec, 0, where, marks)):
        if spec.max_sources and docs >= spec.max_sources or cap and units >= cap:
            break
        windows.append(Window(rows, units, docs))
        left = spec.max_sources - docs if spec.max_sources else None
        got = window_units(ids, texts, number=number, first_unit=units, docs_left=left, spec=spec, seed=seed,
                           count=count)
        rows += len(texts)
        over = bool(cap) and units + len(got) > cap
        if over:  # the budget ends at the last whole document it pays for
            got = got[:max(i for i, u in enumerate(got[:cap - units + 1]) if u.chunk == 0)]
        units += len(got)
        docs += sum(u.chunk == 0 for u in got)
        if over:
            break
    if not units and over:
        raise UserError(f"{where}: source.budget_tokens {spec.budget_tokens} pays for {cap} unit(s), fewer "
                        f"than the chunks of the first source document (each chunk costs per_source × "
                        f"sampling.max_tokens = {spec.per_source * max_tokens} tokens)",
                        fix="raise budget_tokens, or raise chunk_tokens so the document makes fewer chunks")
    if not units:
        raise UserError(f"{where}: source.path {spec.path} holds no rows with text in {spec.text_field!r} "
                        f"({rows} rows read)", fix="point source.path at a corpus with documents")
    cursor = UnitCursor(files, spec, seed, tuple(windows), units, count, where, marks)
    return SourcePlan(spec, files.name, units, docs, rows, cursor, key)


def sample_texts(source: SourcePlan, n: int) -> list[str]:
    """`n` unit texts spread evenly over the seeded order (all when there are fewer): a sample of the
    source, e.g. as the reference corpus a rewrite run is measured against."""
    spread = np.linspace(0, source.num_units - 1, min(n, source.num_units)).astype(int)
    positions = sorted(set(spread.tolist()))
    return [u.text for u in source.units(positions)]
