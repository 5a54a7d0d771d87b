"""The pipeline against plain vLLM given every prompt in one call, side by side in one run.

Plain vLLM is what a user would otherwise run at its best: one `vllm.LLM` built in this process's
main thread (the same engine arguments as the pipeline's engines) and one `LLM.chat` call with
all the prompts and their seeds, so the engine schedules everything at once. The pipeline is
`generator run` on the same recipe (sampling, rendering, the Ray actor pool with its streaming
engine, in-order commits, Parquet shards). Both see exactly the same chats, seeds and sampling
settings, on the same engine settings; runs alternate, `--repeats` times each; the script prints
generated tokens/s of both, their ratio (median over repeats), and how the answers ended.
`--words N` asks every template for N words instead of the length derived from max_tokens, so
that most answers end at EOS well before the cap.

    .venv/bin/python bench/bench_pipeline.py [--docs 32] [--max-tokens 1024] [--words 80] [--repeats 2]
    .venv/bin/python bench/bench_pipeline.py --recipe recipes/rewrite.yaml --docs 96 --max-tokens 160
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--words", type=int, default=80, help="length every template asks for (0: derived from max tokens)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--recipe", type=Path, default=None,
                    help="another recipe as it is (e.g. recipes/rewrite.yaml); --words does not apply to it")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))

    from vllm import LLM, SamplingParams

    from generator.backends import open_backend
    from generator.backends.vllm import engine_options
    from generator.files import read_documents
    from generator.recipe import load_recipe
    from generator.records import chat_messages
    from generator.run import controller
    from generator.sampling.requests import plan_samples

    # No dedup and keep every answer, so the pipeline generates exactly the first `docs` samples.
    overrides = [f"size.num_docs={args.docs}", f"sampling.max_tokens={args.max_tokens}", "scoring.enabled=false",
                 "dedup.exact=false", "dedup.near=false", "keep_truncated=keep"]
    if args.recipe:  # a rewrite run's size is its sources × per_source
        per_source = __import__("yaml").safe_load(args.recipe.read_text()).get("source", {}).get("per_source", 1)
        overrides[0] = f"source.max_sources={-(-args.docs // per_source)}"
    plan = load_recipe(args.recipe or bench_recipe(work, args.words), overrides)
    samples = plan_samples(plan, 0, args.docs)
    chats = [chat_messages(s.request) for s in samples]
    params = [SamplingParams(temperature=s.request.temperature, top_p=s.request.top_p,
                             max_tokens=s.request.max_tokens, seed=s.request.seed) for s in samples]

    pipeline = open_backend("ray", plan.recipe.model, num_replicas=1)
    path, options = engine_options(plan.recipe.model)  # the same engine arguments as the actor's engine
    plain = LLM(path, **options)
    endings: Counter = Counter()

    def run_plain() -> tuple[int, float]:
        t0 = time.perf_counter()
        outs = plain.chat(chats, sampling_params=params, use_tqdm=False)
        secs = time.perf_counter() - t0
        endings.update(o.outputs[0].finish_reason for o in outs)
        return sum(len(o.outputs[0].token_ids) for o in outs), secs

    def run_pipeline() -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = controller.run(plan, Path(tmp) / "run", pipeline)
            secs = time.perf_counter() - t0
            ids = read_documents(Path(tmp) / "run").column("id").to_pylist()
            assert ids == [s.request.id for s in samples], "the pipeline generated other samples"
            return summary["completion_tokens"], secs

    warm = min(8, args.docs)
    plain.chat(chats[:warm], sampling_params=params[:warm], use_tqdm=False)  # warm both engines
    pipeline.generate([s.request for s in samples[:warm]])
    plain_rates, pipe_rates = [], []
    for i in range(args.repeats):
        for name, fn, rates in (("plain vllm", run_plain, plain_rates), ("pipeline", run_pipeline, pipe_rates)):
            tokens, secs = fn()
            rates.append(tokens / secs)
            print(f"repeat {i}: {name:10s} {tokens:6d} tokens in {secs:6.1f} s = {tokens / secs:7.1f} tok/s",
                  flush=True)
    r, p = statistics.median(plain_rates), statistics.median(pipe_rates)
    total = sum(endings.values())
    print(f"\ndocs={args.docs} max_tokens={args.max_tokens} repeats={args.repeats} load={os.getloadavg()[0]:.1f}")
    print(f"answers ending at EOS: {endings['stop'] / total:.0%}, cut at max_tokens: {endings['length'] / total:.0%}")
    print(f"plain vLLM, one chat call : {r:7.1f} tok/s (median)")
    print(f"pipeline (generator run)  : {p:7.1f} tok/s (median)")
    print(f"ratio pipeline/plain      : {p / r:.3f}  (goal >= 0.95)")
    pipeline.close()


def bench_recipe(work: Path, words: int) -> Path:
    """The quickstart recipe; with `words`, its templates ask for that many words."""
    import yaml
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    if not words:
        return ROOT / "recipes" / "quickstart.yaml"
    (work / "prompts").mkdir(parents=True)
    for t in recipe["templates"]:
        src = (ROOT / "recipes" / t["path"]).resolve()
        (work / "prompts" / src.name).write_text(src.read_text().replace("{{ num_words }}", str(words))
                                                   .replace(", num_words]", "]"))
        t["path"] = str(work / "prompts" / src.name)
    recipe["grid"] = {axis: str((ROOT / "recipes" / path).resolve()) for axis, path in recipe["grid"].items()}
    recipe["roots"] = [str(ROOT), str(work)]
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return work / "recipe.yaml"


if __name__ == "__main__":
    main()
