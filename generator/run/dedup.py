"""Duplicate removal inside a run: exact (64-bit hash of the normalised text) and near duplicates
(MinHash LSH over word 5-gram shingles). The index grows as documents are kept, so generation
continues until the requested number of *distinct* documents exists.

The index holds integers only: per document its id, one exact key and one key per LSH band,
each key with the document's row number (insertion order). `flush` stores the rows added since
the previous flush in one file; `Deduper.load` rebuilds the index from those files without
sketching any text again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from generator.errors import UserError
from generator.files import read_documents, shard_paths
from generator.measure.minhash import band_keys, band_layout, minhash_permutations, sketch_shingles

if TYPE_CHECKING:
    from generator.recipe import Plan

_NON_WORD = re.compile(r"[^\w]+")
FORMAT = 1  # bump when the keys' meaning changes: files of another format are refused
FLUSH_SUFFIX = ".dedup.npz"
REBUILD = "delete the *.dedup.npz files so the index is rebuilt from the documents"
ID_BLOCK = 1 << 16  # ids are kept as Python strings until this many, then packed into bytes


def normalise(text: str) -> str:
    """Lowercase words separated by single spaces: punctuation and spacing do not make a
    document new."""
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def exact_key(normalised: str) -> int:
    """The 64-bit exact-duplicate key of a normalised text (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(normalised.encode(), digest_size=8).digest(), "little")


def shingles(words: list[str], n: int = 5) -> set[bytes]:
    """Word n-grams; a text shorter than n words is one shingle, an empty one has none."""
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class KeySettings:
    """How a text becomes its index keys (small and picklable, so the keys can be computed
    beside the engines: `generator.run.beside`)."""
    exact: bool
    near: bool
    num_perm: int
    shingle_n: int
    seed: int
    bands: int
    rows: int

    def keys(self, text: str) -> np.ndarray:
        """The uint64 keys of a text: exact key, then band keys, each only when switched on."""
        norm = normalise(text)
        exact = np.array([exact_key(norm)] if self.exact else [], dtype=np.uint64)
        if not self.near:
            return exact
        signature = sketch_shingles(shingles(norm.split(), self.shingle_n),
                                    minhash_permutations(self.num_perm, self.seed))
        return np.concatenate([exact, band_keys(signature, self.bands, self.rows)])


def index_path(shard: Path) -> Path:
    """Where the index rows of a shard are stored: OUT/dedup/shard-00012.dedup.npz for
    OUT/data/shard-00012.parquet (outside data/, which readers take as all Parquet)."""
    return shard.parent.parent / "dedup" / (shard.name.split(".")[0] + FLUSH_SUFFIX)


def find_flushes(folder: Path) -> list[Path]:
    """The complete flush files in a folder, in name order. A file still being written has a
    hidden temporary name and is not listed."""
    return sorted(p for p in folder.glob("*" + FLUSH_SUFFIX) if not p.name.startswith("."))


def flush_problem(path: Path) -> str:
    """What keeps `Deduper.load` from reading the flush file `path` ("" when nothing): not a
    regular file, not a complete .npz (every member is read and checked against its CRC), or
    without the arrays a flush writes."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file"
        with zipfile.ZipFile(path) as archive:
            bad, names = archive.testzip(), set(archive.namelist())
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as exc:
        return f"not a readable .npz ({type(exc).__name__})"
    if bad is not None:
        return f"not a readable .npz ({bad} fails its checksum)"
    missing = sorted({"settings.npy", "ids.npy", "keys.npy"} - names)
    return f"not a duplicate index (no {missing[0]})" if missing else ""


class KeyTable:
    """uint64 keys -> int32 row numbers. Most entries sit in a few sorted numpy levels
    (searched with `np.searchsorted`), oldest first; the newest sit in a dict until it holds
    `buffer_size` keys (or `compact` is called), which then become a new level. A level is
    merged into the one before it while it holds at least 1/4 as many keys, so each key is
    copied O(log n) times in all."""

    def __init__(self, buffer_size: int = 1 << 16):
        self.buffer_size = buffer_size
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys, rows)
        self._recent: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self.levels) + len(self._recent)

    @property
    def nbytes(self) -> int:
        """Bytes of the sorted levels (the dict of recent keys is not counted)."""
        return sum(k.nbytes + r.nbytes for k, r in self.levels)

    def rows_of(self, keys: np.ndarray) -> list[int]:
        """For each key the earliest row holding it, or -1."""
        found = [-1] * len(keys)
        for level_keys, level_rows in self.levels:
            at = level_keys.searchsorted(keys)
            hit = level_keys.take(at, mode="clip") == keys
            if hit.any():
                for j in np.flatnonzero(hit).tolist():
                    if found[j] < 0:
                        found[j] = int(level_rows[at[j]])
        if self._recent:
            get = self._recent.get
            found = [f if f >= 0 else get(k, -1) for f, k in zip(found, keys.tolist())]
        return found

    def add(self, keys: np.ndarray, row: int) -> None:
        for key in keys.tolist():
            self._recent.setdefault(key, row)
        if len(self._recent) >= self.buffer_size:
            self.compact()

    def add_many(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Add keys in bulk, with rows after every row already held, as one new level."""
        self.compact()
        self._push(np.asarray(keys, np.uint64), np.asarray(rows, np.int32))

    def compact(self) -> None:
        """Move the recent keys into the sorted levels."""
        n = len(self._recent)
        self._push(np.fromiter(self._recent.keys(), np.uint64, n),
                   np.fromiter(self._recent.values(), np.int32, n))
        self._recent = {}

    def _push(self, keys: np.ndarray, rows: np.ndarray) -> None:
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")  # equal keys keep the lower row first
        self.levels.append((keys[order], rows[order]))
        while len(self.levels) > 1 and 4 * len(self.levels[-1][0]) >= len(self.levels[-2][0]):
            newer = self.levels.pop()
            self.levels[-1] = _merge(self.levels[-1], newer)


def _merge(older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]):
    """Two sorted levels as one; on equal keys the older entry comes first."""
    (ok, orow), (nk, nrow) = older, newer
    at = np.searchsorted(ok, nk, side="right") + np.arange(len(nk))
    keys, rows = np.empty(len(ok) + len(nk), np.uint64), np.empty(len(ok) + len(nk), np.int32)
    from_older = np.ones(len(keys), bool)
    from_older[at] = False
    keys[at], rows[at] = nk, nrow
    keys[from_older], rows[from_older] = ok, orow
    return keys, rows


@dataclass
class Deduper:
    """`check` decides and indexes. A document's keys are its exact key (when `exact`) then
    one key per LSH band (when `near`). A candidate near duplicate is a kept document sharing
    any band key, and that band collision is the decision, as in datasketch's MinHashLSH: no
    signatures are kept to confirm it. Memory: 12 bytes per key (8 key + 4 row), plus the id.
    Row numbers are int32: at most 2^31 documents."""
    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    shingle_n: int = 5
    seed: int = 1
    counts: dict = field(default_factory=lambda: {"exact": 0, "near": 0})

    def __post_init__(self):
        if self.near and not 0 < self.threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {self.threshold}")
        self.bands, self.rows = band_layout(self.threshold, self.num_perm) if self.near else (0, 0)
        self.key_settings = KeySettings(self.exact, self.near, self.num_perm, self.shingle_n, self.seed,
                                        self.bands, self.rows)
        self._table = KeyTable()
        self._ids = np.array([], dtype="S1")  # ids of the older rows, utf-8
        self._new_ids: list[str] = []  # ids of the newest rows, packed into _ids in blocks
        self._unflushed = _Rows(int(self.exact) + self.bands)
        self._flushed = 0  # rows [0, _flushed) are in flush files (or came from them)
        self._looked_up: dict[str, tuple[bytes, list[int]]] = {}  # `look_up`: id -> (keys, rows then)
        self._since: dict[int, int] = {}  # key -> row of the keys added since the last `look_up`

    def __len__(self) -> int:
        return len(self._ids) + len(self._new_ids)

    @property
    def settings(self) -> dict:
        """What decides the stored keys; a flush file made with other settings is refused."""
        return {"format": FORMAT, "exact": self.exact, "near": self.near, "threshold": self.threshold,
                "num_perm": self.num_perm, "shingle_n": self.shingle_n, "seed": self.seed,
                "bands": self.bands, "rows": self.rows}

    @property
    def nbytes(self) -> int:
        """Bytes of the sorted key arrays and the ids. Not counted: the keys of rows not yet
        flushed and the dict of recent keys (at most 65,536), both emptied by `flush`; the
        newest ids (at most 65,536) count as their utf-8 bytes."""
        return self._table.nbytes + self._ids.nbytes + sum(len(i.encode()) for i in self._new_ids)

    def keys(self, text: str) -> np.ndarray:
        """The uint64 keys of a text: exact key, then band keys, each only when switched on."""
        return self.key_settings.keys(text)

    def check(self, doc_id: str, text: str, *, count: bool = True) -> str | None:
        """None if the text is new (it is then indexed), else the reason it is a duplicate."""
        return self.check_keys(doc_id, self.keys(text), count=count)

    def look_up(self, docs: list[tuple[str, np.ndarray]]) -> None:
        """Find the rows of the keys of documents about to be checked, (id, keys) each, in one
        search of the index: `check_keys` of those documents then looks only at the rows added
        since (an id not in the latest `look_up` is searched as usual)."""
        self._looked_up, self._since = {}, {}
        if not docs:
            return
        width = len(docs[0][1])
        if any(len(k) != width for _, k in docs):
            return
        keys = np.concatenate([k for _, k in docs])
        order = np.argsort(keys)  # searched in key order: the levels are read front to back
        rows = np.empty(len(keys), np.int64)
        rows[order] = self._table.rows_of(keys[order])
        for j, (doc_id, keys) in enumerate(docs):
            self._looked_up[doc_id] = (keys.tobytes(), rows[j * width:(j + 1) * width].tolist())

    def _rows_of(self, doc_id: str, keys: np.ndarray) -> list[int]:
        """For each key the earliest row holding it, or -1."""
        found = self._looked_up.pop(doc_id, None)
        if found is None or found[0] != keys.tobytes():
            return self._table.rows_of(keys)
        get = self._since.get  # rows added since are later than every row found then
        return [r if r >= 0 else get(k, -1) for r, k in zip(found[1], keys.tolist())]

    def check_keys(self, doc_id: str, keys: np.ndarray, *, count: bool = True) -> str | None:
        """`check` for keys laid out as `keys` returns them."""
        rows = self._rows_of(doc_id, keys)
        if self.exact and rows[0] >= 0:
            if count:
                self.counts["exact"] += 1
            return f"exact duplicate of {self.id_of(rows[0])}"
        near = [r for r in rows[int(self.exact):] if r >= 0]
        if near:
            if count:
                self.counts["near"] += 1
            return f"near duplicate of {self.id_of(min(near))}"
        row = len(self)
        if self._looked_up:
            for key in keys.tolist():
                self._since.setdefault(key, row)
        self._table.add(keys, row)
        self._unflushed.append(keys)
        self._new_ids.append(doc_id)
        if len(self._new_ids) >= ID_BLOCK:
            self._pack_ids()
        return None

    def id_of(self, row: int) -> str:
        return self._ids[row].decode() if row < len(self._ids) else self._new_ids[row - len(self._ids)]

    def index(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add already-kept documents by their text (a run without flush files) without
        counting them; they are written by the next `flush`."""
        for doc_id, text in pairs:
            self.check(doc_id, text, count=False)

    def flush(self, path: Path) -> None:
        """Write the rows added since the previous flush (or since load) to `path`, atomically:
        a crash leaves either the complete file or none under that name."""
        ids = np.array([self.id_of(r).encode() for r in range(self._flushed, len(self))], dtype="S")
        tmp = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, settings=np.array(json.dumps(self.settings)), ids=ids, keys=self._unflushed.rows())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._unflushed.clear()
        self._flushed = len(self)
        self._table.compact()

    @classmethod
    def load(cls, paths: list[Path], **settings) -> Deduper:
        """A Deduper with `settings` (the constructor's arguments) holding the rows of the
        flush files `paths`, in that order."""
        deduper = cls(**settings)
        ids, keys = [], []
        for path in paths:
            try:
                with np.load(path, allow_pickle=False) as f:
                    stored, file_ids, file_keys = json.loads(str(f["settings"])), f["ids"], f["keys"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                raise UserError(f"duplicate index {path} cannot be read ({e})", fix=REBUILD) from None
            deduper._check_settings(path, stored)
            ids.append(file_ids)
            keys.append(file_keys)
        if paths:
            ids, keys = np.concatenate(ids), np.concatenate(keys)
            deduper.add_rows(ids, keys)
        return deduper

    def _check_settings(self, path: Path, stored: dict) -> None:
        differ = {k: (stored.get(k), now) for k, now in self.settings.items() if stored.get(k) != now}
        if differ:
            what = ", ".join(f"{k} {old!r} there, {now!r} now" for k, (old, now) in differ.items())
            raise UserError(f"duplicate index {path} was written with other dedup settings ({what})",
                            fix=f"resume with the recipe's original dedup settings and seed, or {REBUILD}")

    def add_rows(self, ids: np.ndarray, keys: np.ndarray) -> None:
        """Append rows in bulk without checking them (utf-8 ids, keys as `keys` lays them
        out, one row per document); they count as flushed, so call it before any `check`."""
        if self._flushed != len(self):
            raise RuntimeError("add_rows would hide rows that were not flushed yet")
        self._pack_ids()
        rows = np.arange(len(self), len(self) + len(ids), dtype=np.int32)
        self._table.add_many(keys.ravel(), np.repeat(rows, keys.shape[1]))
        self._ids = np.concatenate([self._ids, ids]) if len(self._ids) else ids
        self._flushed = len(self)

    def _pack_ids(self) -> None:
        if self._new_ids:
            self._ids = np.concatenate([self._ids, np.array([i.encode() for i in self._new_ids])])
            self._new_ids = []


class _Rows:
    """A growing uint64 array of `width` columns: the keys of the rows not yet flushed."""

    def __init__(self, width: int):
        self.width = width
        self.clear()

    def append(self, keys: np.ndarray) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n] = keys
        self.n += 1

    def rows(self) -> np.ndarray:
        return self.data[:self.n]

    def clear(self) -> None:
        self.n = 0
        self.data = np.empty((1024, self.width), np.uint64)


def open_deduper(plan: Plan, out: Path) -> Deduper | None:
    """The run's duplicate index: loaded from the index files stored beside the shards (corpus,
    then pilot rounds), or rebuilt from the documents of a folder that has none."""
    d = plan.recipe.dedup
    if not (d.exact or d.near):
        return None
    settings = dict(exact=d.exact, near=d.near, threshold=d.threshold, num_perm=d.num_perm,
                    seed=plan.recipe.seed)
    roots = [out, *sorted((out / "pilot").glob("round-*"))]
    stored = [path for root in roots for path in find_flushes(root / "dedup")]
    if stored or not any(shard_paths(root) for root in roots):
        return Deduper.load(stored, **settings)
    deduper = Deduper(**settings)
    for root in roots:
        table = read_documents(root, columns=["id", "text"])
        deduper.index(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    return deduper
