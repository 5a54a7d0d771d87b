"""Steering with an LLM judge at an affordable cost: the whole controller at 10k documents with
the LLM judge served over HTTP on localhost (the scripted judge server of tests/fakes.py, which
clusters documents by a hidden label with a share `noise` split off alone) and the embedding
judge calibrated to it.

Documents come from the simulated engine's text model (bench/sim_engine.py: the prompt's first
line, then a lognormal number of tokens, median 350, as made-up words; no timing), so document
tokens and the judge's prompt tokens (characters / 4 at the server) are on one scale. The
embedder is the fake topic embedder of tests/fakes.py (each topic its own direction), not
all-MiniLM-L6-v2: embedding 10k documents on two shared cores takes longer than this benchmark
should. Criteria are frozen for the study and given (their cost is not part of a run).

    .venv/bin/python bench/bench_llm_steering.py [--docs 10000] [--targets 2.0 4.0] [--noise 0.02]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

RECIPE = """
name: bench-llm-steer
seed: 8
roots: [{root}, {tmp}]
grid:
  topic: {tmp}/topics.yaml
  persona: {root}/topics/personas.yaml
templates:
  - path: {tmp}/echo.j2
size: {{num_docs: {n}, shard_rows: 2000}}
sampling: {{max_tokens: 1000}}
target: {{score: {score}, tolerance: 0.3, judge: llm, llm_batches: {llm_batches}, llm_share: {llm_share}}}
judge: {{model: scripted-judge}}
dedup: {{near: false}}
scoring: {{enabled: false}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[10000])
    ap.add_argument("--targets", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--llm-batches", type=int, default=40)
    ap.add_argument("--llm-share", type=float, default=0.05, help="target.llm_share (0: llm_batches every use)")
    ap.add_argument("--topics", type=int, default=200)
    args = ap.parse_args()

    import sim_engine
    from fakes import JUDGE_CRITERIA, FakeBackend, ScriptedJudgeServer, TopicEmbed
    from generator.backends.openai import OpenAIBackend
    from generator.judges import CriteriaJudge
    from generator.judges.config import JudgeSettings
    from generator.judges.cache import CachedBackend
    from generator.recipe import load_recipe
    from generator.run import controller

    class SimText(FakeBackend):
        """The simulated engine's documents, answered at once."""

        def generate(self, requests):
            return [sim_engine.finish(r, sim_engine.output_tokens(r, 350.0, 0.6)) for r in requests]

    print(f"{'docs':>6} {'target':>6} {'LLM D [95% CI]':>22} {'in tol':>6} {'embed D':>7} {'offset c1/end':>13} "
          f"{'pilots':>6} {'pilot docs':>10} {'LLM batches':>11} {'judge tok':>10} {'corpus tok':>11} "
          f"{'judge/corpus':>12} {'wall s':>6}")
    for n in args.docs:
        for score in args.targets:
            with tempfile.TemporaryDirectory() as tmp, ScriptedJudgeServer(noise=args.noise, seed=3) as server:
                topics = ", ".join(f'"subject {i} [label {i}]"' for i in range(args.topics))
                (Path(tmp) / "topics.yaml").write_text(f"axis: topic\ndomains:\n  - name: All\n    topics: [{topics}]\n")
                (Path(tmp) / "echo.j2").write_text("{# variables: [topic, persona] #}{{ topic }}\nas told by {{ persona }}")
                recipe = Path(tmp) / "r.yaml"
                recipe.write_text(RECIPE.format(root=ROOT, tmp=tmp, n=n, score=score, llm_batches=args.llm_batches,
                                                 llm_share=args.llm_share))
                backend = CachedBackend(OpenAIBackend(server.model, base_url=server.base_url, concurrency=16,
                                                      max_retries=0), Path(tmp) / "judge-cache.sqlite")
                judge = CriteriaJudge(backend, None, 8, JUDGE_CRITERIA, settings=JudgeSettings(model=server.model, k=10))
                t0 = time.perf_counter()
                s = controller.run(load_recipe(recipe), Path(tmp) / "run", SimText(), judge=judge, embed=TopicEmbed({}))
                backend.close()
                conf, cal, cost = s["confirmation"], s["calibration"], s["cost"]
                batches = f"{cal['num_batches']}+{cal['offset_batches']}+{conf['num_batches']}"
                print(f"{n:6d} {score:6.2f} {conf['score']:6.3f} [{conf['ci_low']:.3f}, {conf['ci_high']:.3f}] "
                      f"{'yes' if conf['within_tolerance'] else 'NO':>6} {s['achieved']['score']:7.3f} "
                      f"{cal['offset_at_c1']:+6.2f}/{cal['offset']:+5.2f} {s['rounds']['pilot']:6d} "
                      f"{cost['pilot_docs']:10d} {batches:>11} {cost['judge_tokens']:10d} {cost['corpus_tokens']:11d} "
                      f"{cost['judge_ratio']:12.2%} {time.perf_counter() - t0:6.0f}", flush=True)


if __name__ == "__main__":
    main()
