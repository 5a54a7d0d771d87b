"""Pipeline throughput against raw vLLM, side by side in one run.

The pipeline (`generator run` path: sampling, Jinja rendering, the Ray actor pool, Parquet shards)
and a raw in-process `vllm.LLM.generate` on the *same* prompts, model, engine settings, sampling
parameters and batch size run alternately, `--repeats` times each; the script prints generated
tokens/s of both and their ratio (median over repeats). Goal: ratio >= 0.9 on CPU.

    .venv/bin/python bench/bench_pipeline.py [--docs 128] [--batch 64] [--max-tokens 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    from vllm import LLM, SamplingParams

    from generator.run import controller
    from generator.backends import open_backend
    from generator.backends.vllm import VllmBackend
    from generator.sampling.requests import plan_samples
    from generator.recipe import load_recipe

    overrides = [f"size.num_docs={args.docs}", f"size.batch_size={args.batch}",
                 f"sampling.max_tokens={args.max_tokens}", "scoring.enabled=false"]
    plan = load_recipe(ROOT / "recipes" / "quickstart.yaml", overrides)
    # The exact requests the pipeline will send, batch by batch.
    batches = []
    for start in range(0, args.docs, args.batch):
        n = min(args.batch, args.docs - start)
        batches.append(plan_samples(plan, start, n, np.random.default_rng([plan.recipe.seed, start])))

    pipeline = open_backend("ray", plan.recipe.model, num_replicas=1)
    raw = VllmBackend(plan.recipe.model)  # same engine settings as the actor's engine
    llm: LLM = raw.llm
    tok = raw.tokenizer

    def run_raw() -> tuple[int, float]:
        t0 = time.perf_counter()
        tokens = 0
        for batch in batches:
            prompts = [tok.apply_chat_template([{"role": "user", "content": s.request.prompt}],
                                               add_generation_prompt=True, tokenize=False) for s in batch]
            params = [SamplingParams(temperature=s.request.temperature, top_p=s.request.top_p,
                                     max_tokens=s.request.max_tokens, seed=s.request.seed) for s in batch]
            outs = llm.generate(prompts, params, use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        return tokens, time.perf_counter() - t0

    def run_pipeline() -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = controller.run(plan, Path(tmp) / "run", pipeline)
            return summary["completion_tokens"], time.perf_counter() - t0

    run_raw()  # warm-up both engines once
    run_pipeline()
    raw_rates, pipe_rates = [], []
    for i in range(args.repeats):
        for name, fn, rates in (("raw vllm", run_raw, raw_rates), ("pipeline", run_pipeline, pipe_rates)):
            tokens, secs = fn()
            rates.append(tokens / secs)
            print(f"repeat {i}: {name:9s} {tokens:6d} tokens in {secs:6.1f} s = {tokens / secs:7.1f} tok/s",
                  flush=True)
    r, p = statistics.median(raw_rates), statistics.median(pipe_rates)
    print(f"\ndocs={args.docs} batch={args.batch} max_tokens={args.max_tokens} repeats={args.repeats}")
    print(f"raw vllm.LLM.generate : {r:7.1f} tok/s (median)")
    print(f"pipeline (Ray+Parquet): {p:7.1f} tok/s (median)")
    print(f"ratio pipeline/raw    : {p / r:.3f}  (goal >= 0.9)")
    pipeline.close()
    raw.close()


if __name__ == "__main__":
    main()
