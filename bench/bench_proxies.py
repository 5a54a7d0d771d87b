"""Time and peak memory of every diversity proxy at growing corpus sizes.

    python bench/bench_proxies.py --sizes 1000 10000 100000

Each size runs in its own subprocess (so peaks do not mix) on a seeded synthetic corpus:
Zipf-distributed pseudo-words, 100-200 words per document, 5% near-duplicate copies of
earlier documents, and random unit embeddings (dim 384) so the bench does not wait on the
embedder. `peak MB` is the resident memory a step adds on top of what was resident before it
(Linux VmHWM, reset between steps through /proc/self/clear_refs). The embedder is timed once
on real model calls over 1000 generated texts, and extrapolated linearly.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "gu", "fi", "ho", "ze", "bu", "wa"]


def make_words(vocab_size: int) -> np.ndarray:
    words = []
    for i in range(vocab_size):
        parts, i = [], i + len(SYLLABLES)  # at least two syllables
        while i:
            i, digit = divmod(i, len(SYLLABLES))
            parts.append(SYLLABLES[digit])
        words.append("".join(parts))
    return np.array(words)


def make_corpus(num_docs: int, rng: np.random.Generator, *, vocab_size: int = 50_000,
                zipf_a: float = 1.1, dup_share: float = 0.05, dim: int = 384) -> tuple[list[str], np.ndarray]:
    words = make_words(vocab_size)
    p = 1.0 / np.arange(1, vocab_size + 1) ** zipf_a
    lengths = rng.integers(100, 201, size=num_docs)
    draws = rng.choice(vocab_size, size=int(lengths.sum()), p=p / p.sum())
    ends = np.cumsum(lengths)
    docs = [words[draws[e - n : e]] for n, e in zip(lengths, ends)]
    emb = rng.normal(size=(num_docs, dim)).astype(np.float32)
    for d in np.flatnonzero(rng.random(num_docs) < dup_share)[1:]:  # near-copies of earlier docs
        src = int(rng.integers(d))
        docs[d] = docs[src].copy()
        docs[d][rng.integers(len(docs[d]), size=2)] = words[rng.integers(vocab_size, size=2)]
        emb[d] = emb[src] + 0.05 * rng.normal(size=dim)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return [" ".join(doc) for doc in docs], emb


def memory_kb() -> dict[str, int]:
    status = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmHWM", "VmRSS")}


def measure(fn) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of all threads, extra peak MB) of one call."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = memory_kb()["VmRSS"]
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall, cpu, (memory_kb()["VmHWM"] - before) / 1024


def bench_size(num_docs: int, seed: int) -> dict:
    from generator.measure import proxies as px

    rng = np.random.default_rng(seed)
    box = {}
    steps = {"build corpus": lambda: box.update(zip(("texts", "emb"), make_corpus(num_docs, rng)))}
    steps["encode_corpus"] = lambda: px.encode_corpus(box["texts"])
    steps["ngram_diversity"] = lambda: px.ngram_diversity(box["texts"])
    steps["compression_ratio"] = lambda: px.compression_ratio(box["texts"])
    steps["self_repetition"] = lambda: px.self_repetition(box["texts"])
    steps["near_duplicate_rate"] = lambda: box.update(near_dup=px.near_duplicate_rate(box["texts"]))
    steps["vendi_score"] = lambda: px.vendi_score(box["emb"])
    steps["dcscore"] = lambda: px.dcscore(box["emb"])
    steps["mean_cosine_distance"] = lambda: px.mean_pairwise_cosine_distance(box["emb"])
    steps["compute_proxies (all)"] = lambda: px.compute_proxies(box["texts"], box["emb"])
    rows = {name: measure(fn) for name, fn in steps.items()}
    words = sum(len(t.split()) for t in box["texts"])
    return {"num_docs": num_docs, "words": words, "near_dup_rate": box["near_dup"], "rows": rows,
            "rss_mb": memory_kb()["VmRSS"] / 1024}


def bench_embedder(num_texts: int, seed: int) -> dict:
    try:
        from generator.measure.embeddings import embed_texts, load_embedder
        start = time.perf_counter()
        load_embedder()
    except ImportError as err:
        return {"error": str(err)}
    load_s = time.perf_counter() - start
    texts, _ = make_corpus(num_texts, np.random.default_rng(seed))
    start = time.perf_counter()
    embed_texts(texts)
    return {"load_s": load_s, "texts": num_texts, "embed_s": time.perf_counter() - start}


def run_child(flag: str, value: int, seed: int) -> dict:
    cmd = [sys.executable, __file__, flag, str(value), "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench child {flag} {value} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    sizes = [r["num_docs"] for r in results]
    head = f"{'step':<24}" + "".join(f"{f'{n} docs: wall s':>21}{'cpu s':>8}{'peak MB':>8}" for n in sizes)
    head += "".join(f"{f'x{b // a} wall':>10}" for a, b in zip(sizes, sizes[1:]))
    print(head)
    for step in results[0]["rows"]:
        cells = [r["rows"][step] for r in results]
        line = f"{step:<24}" + "".join(f"{s:>21.3f}{cpu:>8.2f}{mb:>8.0f}" for s, cpu, mb in cells)
        line += "".join(f"{b[0] / max(a[0], 1e-9):>10.1f}" for a, b in zip(cells, cells[1:]))
        print(line)
    print("load average (1, 5, 15 min):", Path("/proc/loadavg").read_text().split()[:3])
    print("words:", ", ".join(f"{r['num_docs']}: {r['words']}" for r in results),
          "| near_dup_rate:", ", ".join(f"{r['near_dup_rate']:.3f}" for r in results),
          "| final RSS MB:", ", ".join(f"{r['rss_mb']:.0f}" for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-texts", type=int, default=1000, help="0 skips the embedder timing")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--embed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(bench_size(args.one, args.seed)))
        return
    if args.embed is not None:
        print(json.dumps(bench_embedder(args.embed, args.seed)))
        return
    results = []
    for size in args.sizes:
        results.append(run_child("--one", size, args.seed))
        print(f"# size {size} done", file=sys.stderr, flush=True)
    print_table(results)
    if args.embed_texts:
        emb = run_child("--embed", args.embed_texts, args.seed)
        if "error" in emb:
            print(f"embed_texts: skipped ({emb['error']})")
            return
        rate = emb["texts"] / emb["embed_s"]
        print(f"embed_texts: model load {emb['load_s']:.1f} s; {emb['texts']} texts in "
              f"{emb['embed_s']:.1f} s = {rate:.0f} texts/s; extrapolated: "
              + ", ".join(f"{n} docs ~{n / rate / 60:.1f} min" for n in args.sizes))


if __name__ == "__main__":
    main()
