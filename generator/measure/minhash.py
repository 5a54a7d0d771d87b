"""The one MinHash near-duplicate index (datasketch MinHash + LSH), used by a run's
deduplication (run/dedup.py) and by the near-duplicate proxy (measure/proxies.py).

Shingles go in (text shingles as bytes, or integer shingle ids with `hashfunc=int`); `matches`
returns the keys of indexed documents whose estimated Jaccard similarity may reach the
threshold: the LSH candidates, each verified against its stored sketch when `verify` is on
(which costs one stored sketch per document)."""
from __future__ import annotations

from typing import Callable, Hashable, Iterable


class MinHashIndex:
    def __init__(self, threshold: float, *, num_perm: int = 128, seed: int = 1,
                 weights: tuple[float, float] = (0.5, 0.5), hashfunc: Callable | None = None,
                 verify: bool = False):
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        from datasketch import MinHash, MinHashLSH
        self.threshold, self.num_perm, self.seed, self.hashfunc, self.verify = threshold, num_perm, seed, hashfunc, verify
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
        self._template = MinHash(num_perm=num_perm, seed=seed)  # permutations drawn once, then shared
        self._sketches: dict[Hashable, object] = {}

    def sketch(self, shingles: Iterable):
        from datasketch import MinHash
        extra = {"hashfunc": self.hashfunc} if self.hashfunc is not None else {}
        m = MinHash(num_perm=self.num_perm, seed=self.seed, permutations=self._template.permutations,
                    scheme=self._template.scheme, **extra)
        m.update_batch(list(shingles))
        return m

    def matches(self, sketch) -> list:
        candidates = self._lsh.query(sketch)
        if not self.verify:
            return candidates
        return [key for key in candidates if sketch.jaccard(self._sketches[key]) >= self.threshold]

    def insert(self, key: Hashable, sketch) -> None:
        if key in self._lsh:
            return
        self._lsh.insert(key, sketch)
        if self.verify:
            self._sketches[key] = sketch
