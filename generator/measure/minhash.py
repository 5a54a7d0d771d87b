"""MinHash for near-duplicate detection, in two forms.

`MinHashIndex` (datasketch MinHash + LSH, candidates optionally verified against stored
sketches) serves the near-duplicate proxy (measure/proxies.py). The compact functions below
serve a run's deduplication (run/dedup.py), which keeps no sketches: `sketch_shingles` gives
the same signature as datasketch's default `affine32` scheme, `band_layout` the same bands as
`MinHashLSH`, and `band_keys` turns each band into one 64-bit key, so an index only has to
store `bands` integers per document.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Callable, Hashable, Iterable

import numpy as np


class MinHashIndex:
    """Shingles go in (text shingles as bytes, or integer shingle ids with `hashfunc=int`);
    `matches` returns the keys of indexed documents whose estimated Jaccard similarity may
    reach the threshold: the LSH candidates, each verified against its stored sketch when
    `verify` is on (which costs one stored sketch per document)."""

    def __init__(self, threshold: float, *, num_perm: int = 128, seed: int = 1,
                 weights: tuple[float, float] = (0.5, 0.5), hashfunc: Callable | None = None,
                 verify: bool = False):
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        from datasketch import MinHash, MinHashLSH
        self.threshold, self.num_perm, self.seed, self.hashfunc, self.verify = threshold, num_perm, seed, hashfunc, verify
        self._lsh = MinHashLSH(num_perm=num_perm, params=band_layout(threshold, num_perm, tuple(weights)))
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


_EMPTY = np.uint32(0xFFFFFFFF)  # the signature value of a set without shingles


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser on uint32 arrays (a bijection; products wrap)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=8)
def minhash_permutations(num_perm: int, seed: int) -> np.ndarray:
    """The (2, num_perm) uint32 multipliers and offsets of datasketch's `affine32` scheme for
    `seed`: its permutations come from the legacy `RandomState(seed)` stream, reproduced here
    so that signatures do not depend on the installed datasketch version. That stream takes
    seeds below 2**32; a recipe's seed may be up to 2**63 - 1, so larger seeds are folded in
    (the seeds under 2**32, every recipe's so far, keep their permutations)."""
    gen = np.random.RandomState(seed % (1 << 32))
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    perms = np.array([a, b])
    perms.flags.writeable = False
    return perms


def sketch_shingles(shingles: Iterable[bytes], perms: np.ndarray) -> np.ndarray:
    """The MinHash signature (uint32, one value per permutation) of a set of byte shingles:
    SHA-1's first 4 bytes, MurmurHash3's finaliser, then h -> a*h + b mod 2^32 per
    permutation, as `datasketch.MinHash(scheme="affine32")` computes it."""
    digests = b"".join([hashlib.sha1(s).digest() for s in shingles])
    if not digests:
        return np.full(perms.shape[1], _EMPTY, dtype=np.uint32)
    h = _fmix32(np.frombuffer(digests, dtype="<u4")[::5])  # first 4 of each 20-byte digest
    values = np.multiply.outer(perms[0], h)
    values += perms[1][:, None]
    return values.min(axis=1)


@lru_cache(maxsize=32)
def band_layout(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows per band) for a Jaccard threshold, as `datasketch.MinHashLSH` picks them:
    the layout minimising the weighted sum of false positive and false negative probabilities."""
    from datasketch.lsh import _optimal_param
    return _optimal_param(threshold, num_perm, *weights)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per band of `rows` consecutive signature values (the last axis holds the
    signature; values past bands*rows are unused, as in MinHashLSH): BLAKE2b-64 of the band's
    bytes, salted with the band's number, so equal bands give equal keys and any other pair
    of bands collides with probability 2^-64."""
    sig = np.ascontiguousarray(signatures, dtype="<u4")
    data = memoryview(sig.reshape(-1, sig.shape[-1])).cast("B")
    step, width, salts = 4 * sig.shape[-1], 4 * rows, _band_salts(bands)
    digests = b"".join([hashlib.blake2b(data[s + i * width:s + (i + 1) * width], digest_size=8, salt=salts[i]).digest()
                        for s in range(0, len(data), step) for i in range(bands)])
    return np.frombuffer(digests, dtype="<u8").reshape(*sig.shape[:-1], bands)


@lru_cache(maxsize=8)
def _band_salts(bands: int) -> list[bytes]:
    return [i.to_bytes(4, "little") for i in range(bands)]
