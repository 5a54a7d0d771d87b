"""The CPU build's speed levers, each measured on plain vLLM and on the pipeline, side by side.

vLLM's CPU documentation names four levers: tcmalloc preloaded, Intel OpenMP preloaded, OpenMP
threads bound to cores, and the scheduler's `max_num_seqs`; a fifth is the dtype (bfloat16 where
the CPU has AVX512_BF16 or AMX, which `dtype: auto` picks, against float32). Each configuration
runs in a fresh process (a preload must be in place before the process starts): plain vLLM given
every prompt in one `LLM.chat` call, then `generator run` on the same samples with the same
environment and engine arguments. Both see the first `--docs` quickstart samples (the seeds and
sampling settings the recipe gives them). The script prints tokens/s for each configuration and its ratio to the
default configuration measured in the same run.

tcmalloc comes from Debian's `libtcmalloc-minimal4`; Intel OpenMP from the venv (`libiomp5.so`,
installed with vLLM's CPU build). A configuration whose library is missing is skipped, said so.

    .venv/bin/python bench/bench_cpu_levers.py [--docs 32] [--max-tokens 256] [--configs default iomp ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
IOMP = ROOT / ".venv" / "lib" / "libiomp5.so"

CONFIGS = {  # name: (environment additions, recipe overrides)
    "default": ({}, []),
    "tcmalloc": ({"LD_PRELOAD": str(TCMALLOC)}, []),
    "iomp": ({"LD_PRELOAD": str(IOMP)}, []),
    "tcmalloc+iomp": ({"LD_PRELOAD": f"{TCMALLOC}:{IOMP}"}, []),
    "bind": ({"VLLM_CPU_OMP_THREADS_BIND": "0-1"}, []),
    "seqs64": ({}, ["engine.max_num_seqs=64"]),
    "seqs512": ({}, ["engine.max_num_seqs=512"]),
    "float32": ({}, ["engine.dtype=float32"]),
    "bfloat16": ({}, ["engine.dtype=bfloat16"]),
}


def child(config: str, docs: int, max_tokens: int, mode: str) -> dict:
    """One measurement in this (fresh) process: plain vLLM or the pipeline."""
    import time

    sys.path.insert(0, str(ROOT))
    from generator.recipe import load_recipe
    from generator.sampling.requests import plan_samples

    from generator.backends import engine_options

    overrides = [f"size.num_docs={docs}", f"sampling.max_tokens={max_tokens}", "scoring.enabled=false",
                 "dedup.exact=false", "dedup.near=false", "keep_truncated=keep", *CONFIGS[config][1]]
    plan = load_recipe(ROOT / "recipes" / "quickstart.yaml", overrides)
    samples = plan_samples(plan, 0, docs)
    if mode == "plain":  # the same engine arguments the pipeline's engine gets from the recipe
        from vllm import LLM, SamplingParams

        from generator.backends import vllm as vllm_backend
        from generator.records import chat_messages
        engine = engine_options(plan.recipe.engine, "vllm")
        path, options = vllm_backend.engine_options(plan.recipe.model, **engine)
        t0 = time.perf_counter()
        llm = LLM(path, **options)
        start = time.perf_counter() - t0
        params = [SamplingParams(temperature=s.request.temperature, top_p=s.request.top_p,
                                 max_tokens=s.request.max_tokens, seed=s.request.seed) for s in samples]
        t0 = time.perf_counter()
        outs = llm.chat([chat_messages(s.request) for s in samples], sampling_params=params, use_tqdm=False)
        secs = time.perf_counter() - t0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        return {"tokens": tokens, "secs": secs, "start": start}
    from generator.api import run
    from generator.backends import open_backend
    t0 = time.perf_counter()
    backend = open_backend("ray", plan.recipe.model, **engine_options(plan.recipe.engine, "ray"))
    backend.generate([s.request for s in samples[:1]])  # the engine is up before the clock starts
    start = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run(plan, Path(tmp) / "run", backend=backend, score=False, card=False)
        secs = time.perf_counter() - t0
    backend.close()
    return {"tokens": result.completion_tokens, "secs": secs, "start": start}


def measure(config: str, docs: int, max_tokens: int, mode: str) -> dict | None:
    env_add, _ = CONFIGS[config]
    for lib in env_add.get("LD_PRELOAD", "").split(":"):
        if lib and not Path(lib).exists():
            print(f"{config:14s} {mode:8s} skipped: {lib} is not installed", flush=True)
            return None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", **env_add}
    cmd = [sys.executable, __file__, "--child", config, mode, "--docs", str(docs), "--max-tokens", str(max_tokens)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"{config:14s} {mode:8s} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}", flush=True)
        return None
    r = json.loads(lines[-1][len("RESULT "):])
    print(f"{config:14s} {mode:8s} {r['tokens']:6d} tokens in {r['secs']:6.1f} s = {r['tokens'] / r['secs']:6.1f} tok/s"
          f" (engine start {r['start']:.1f} s)", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--modes", nargs="+", default=["plain", "pipeline"], choices=["plain", "pipeline"])
    ap.add_argument("--repeats", type=int, default=1, help="rounds over every configuration (median kept)")
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = child(args.child[0], args.docs, args.max_tokens, args.child[1])
        print("RESULT " + json.dumps(result), flush=True)
        return
    import statistics
    runs: dict = {}
    for _ in range(args.repeats):  # rounds, so that a slow minute of the machine hits every configuration
        for config in args.configs:
            for mode in args.modes:
                r = measure(config, args.docs, args.max_tokens, mode)
                if r:
                    runs.setdefault((config, mode), []).append(r["tokens"] / r["secs"])
    rates = {key: statistics.median(values) for key, values in runs.items()}
    sys.path.insert(0, str(ROOT))
    from generator.backends.vllm import cpu_dtype, cpu_flags
    print(f"\ndocs={args.docs} max_tokens={args.max_tokens} repeats={args.repeats} (median) "
          f"load={os.getloadavg()[0]:.1f}; dtype auto here: {cpu_dtype(cpu_flags())}")
    print("| configuration | plain vLLM tok/s | vs default | pipeline tok/s | vs default | pipeline / plain |")
    print("|---|---|---|---|---|---|")
    base_p, base_g = rates.get(("default", "plain")), rates.get(("default", "pipeline"))
    for config in args.configs:
        p, g = rates.get((config, "plain")), rates.get((config, "pipeline"))
        cells = [f"{p:.1f}" if p else "—", f"{p / base_p:.2f}" if p and base_p else "—",
                 f"{g:.1f}" if g else "—", f"{g / base_g:.2f}" if g and base_g else "—",
                 f"{g / p:.2f}" if g and p else "—"]
        print(f"| {config} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
