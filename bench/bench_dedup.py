"""Memory, speed and stored size of a run's duplicate index (generator/run/dedup.py).

    .venv/bin/python bench/bench_dedup.py [--docs 1000000] [--texts 20000] [--shard-docs 5000]

1. Index: `--docs` documents with random keys (no text) through `check_keys`, flushed every
   `--shard-docs` documents as a run does per shard; every 1000th document repeats the keys
   of the one 500 before it, so the count of duplicates found is checked too.
2. Resume: `Deduper.load` of all flush files.
3. Sketching: `Deduper.keys` on synthetic texts (Zipf pseudo-words, 100-300 words), split
   into normalising + shingling and the signature, against datasketch's `MinHash` (the
   signature the old index computed), and the memory of the old index (a dict of SHA-1 hex
   digests plus datasketch's MinHashLSH) on the same texts, from tracemalloc.
Peak RSS is the process's (getrusage), printed after each step; it only grows.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_proxies import make_words  # noqa: E402
from generator.measure.minhash import MinHashIndex, sketch_shingles  # noqa: E402
from generator.run.dedup import Deduper, find_flushes, index_path, normalise, shingles  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_texts(num_texts: int, rng: np.random.Generator) -> list[str]:
    words = make_words(20_000)
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    return [" ".join(rng.choice(words, int(rng.integers(100, 301)), p=p / p.sum())) for _ in range(num_texts)]


def bench_sketching(texts: list[str], repeats: int = 3) -> None:
    """Per-document times, each the fastest of `repeats` passes taken in turn."""
    d = Deduper()
    parts = [shingles(normalise(t).split(), d.shingle_n) for t in texts]
    old = MinHashIndex(d.threshold, num_perm=d.num_perm, seed=d.seed)
    steps = {
        "normalise + 5-gram shingles": lambda: [shingles(normalise(t).split(), d.shingle_n) for t in texts],
        "signature, numpy (this index)": lambda: [sketch_shingles(s, d._perms) for s in parts],
        "signature, datasketch MinHash": lambda: [old.sketch(s) for s in parts],
        "Deduper.keys (all: shingles, signature, exact and band keys)": lambda: [d.keys(t) for t in texts],
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        d.check(f"{i:020x}", t)
    best["Deduper.check (keys + lookup + insert), once"] = time.perf_counter() - t0
    print(f"sketching, {len(texts):,} texts of 100-300 words, per document (best of {repeats}):")
    for name, seconds in best.items():
        print(f"  {name:<62} {seconds / len(texts) * 1e6:7.1f} us")


def old_index_bytes(texts: list[str]) -> float:
    """Bytes per document of the index this one replaced, from tracemalloc."""
    import hashlib
    old = MinHashIndex(0.8, num_perm=128, seed=1)
    sketches = [old.sketch(shingles(normalise(t).split())) for t in texts]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    hashes = {}
    for i, (t, s) in enumerate(zip(texts, sketches)):
        old.insert(f"{i:020x}", s)
        hashes[hashlib.sha1(normalise(t).encode()).hexdigest()] = f"{i:020x}"
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return grown / len(texts)


def random_keys(rng: np.random.Generator, n: int, width: int) -> tuple[np.ndarray, int]:
    """Keys of n documents, every 1000th a repeat of the one 500 before it; and the number
    of repeats."""
    keys = rng.integers(0, 2**64, (n, width), dtype=np.uint64, endpoint=False)
    repeats = np.arange(999, n, 1000)
    keys[repeats] = keys[repeats - 500]
    return keys, len(repeats)


def bench_index(num_docs: int, shard_docs: int, folder: Path, seed: int) -> Deduper:
    d = Deduper()
    rng = np.random.default_rng(seed)
    width = 1 + d.bands
    check_s = flush_s = 0.0
    planted = 0
    for shard, start in enumerate(range(0, num_docs, shard_docs)):
        keys, repeats = random_keys(rng, min(shard_docs, num_docs - start), width)
        planted += repeats
        t0 = time.perf_counter()
        for i, k in enumerate(keys):
            d.check_keys(f"{start + i:020x}", k)
        t1 = time.perf_counter()
        d.flush(index_path(folder / f"shard-{shard:05d}.parquet"))
        flush_s += time.perf_counter() - t1
        check_s += t1 - t0
    disk = sum(p.stat().st_size for p in find_flushes(folder))
    print(f"index, {num_docs:,} documents of random keys ({d.bands} bands + exact), "
          f"flushed every {shard_docs:,}:")
    print(f"  check + insert                   {check_s / num_docs * 1e6:8.1f} us/doc")
    print(f"  flush                            {flush_s / num_docs * 1e6:8.1f} us/doc "
          f"({len(find_flushes(folder))} files)")
    print(f"  index arrays + ids               {d.nbytes / len(d):8.1f} bytes/doc ({d.nbytes / 2**20:.0f} MiB)")
    print(f"  flush files on disk              {disk / len(d):8.1f} bytes/doc ({disk / 2**20:.0f} MiB)")
    print(f"  kept {len(d):,}, repeats found {d.counts['exact']:,} (planted {planted:,}), "
          f"near {d.counts['near']}, sorted levels {[len(k) for k, _ in d._table.levels]}")
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--shard-docs", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"peak RSS at start: {peak_rss_mb():.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        live = bench_index(args.docs, args.shard_docs, Path(tmp), args.seed)
        print(f"peak RSS after indexing: {peak_rss_mb():.0f} MiB")
        live_len = len(live)
        del live
        t0 = time.perf_counter()
        loaded = Deduper.load(find_flushes(Path(tmp)))
        load_s = time.perf_counter() - t0
    assert len(loaded) == live_len
    print(f"load {len(loaded):,} documents from flush files: {load_s:.2f} s "
          f"({loaded.nbytes / len(loaded):.1f} bytes/doc after load)")
    print(f"peak RSS after loading: {peak_rss_mb():.0f} MiB")
    del loaded
    texts = make_texts(args.texts, np.random.default_rng(args.seed))
    bench_sketching(texts)
    old = old_index_bytes(texts[:5000])
    print(f"old index (hex SHA-1 dict + datasketch MinHashLSH), {min(5000, len(texts)):,} texts: {old:,.0f} bytes/doc")
    print(f"peak RSS at the end (sketching holds every text's shingles): {peak_rss_mb():.0f} MiB")

if __name__ == "__main__":
    main()
