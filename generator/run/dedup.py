"""Duplicate removal inside a run: exact (hash of the normalised text) and near duplicates
(MinHash LSH over word 5-gram shingles, `datasketch`). The index grows as documents are kept,
so generation continues until the requested number of *distinct* documents exists."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable

from generator.measure.minhash import MinHashIndex

_NON_WORD = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    """Lowercase words separated by single spaces: punctuation and spacing do not make a
    document new."""
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def text_hash(text: str) -> str:
    return hashlib.sha1(normalise(text).encode()).hexdigest()


def shingles(text: str, n: int = 5) -> set[bytes]:
    words = normalise(text).split()
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


@dataclass
class Deduper:
    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    shingle_n: int = 5
    seed: int = 1
    counts: dict = field(default_factory=lambda: {"exact": 0, "near": 0})

    def __post_init__(self):
        self._hashes: dict[str, str] = {}
        self._near = MinHashIndex(self.threshold, num_perm=self.num_perm, seed=self.seed) if self.near else None

    def check(self, doc_id: str, text: str, *, count: bool = True) -> str | None:
        """None if the text is new (it is then indexed), else the reason it is a duplicate."""
        h = text_hash(text)
        if self.exact and h in self._hashes:
            if count:
                self.counts["exact"] += 1
            return f"exact duplicate of {self._hashes[h]}"
        if self._near is not None:
            sketch = self._near.sketch(shingles(text, self.shingle_n))
            similar = self._near.matches(sketch)
            if similar:
                if count:
                    self.counts["near"] += 1
                return f"near duplicate of {similar[0]}"
            self._near.insert(doc_id, sketch)
        self._hashes.setdefault(h, doc_id)
        return None

    def index(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add already-kept documents (after --resume) without counting them."""
        for doc_id, text in pairs:
            self.check(doc_id, text, count=False)
