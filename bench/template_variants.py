"""Prompt variants on the same grid cells: which wording keeps the embedded model on topic?

    nice -n 10 .venv/bin/python bench/template_variants.py --out runs/variants.jsonl

Two experiments, one engine (vLLM CPU build in-process, SmolLM2-135M):

- `tsp`: the topic_style_persona cells among the quickstart's first 200 samples (111 cells),
  without and with the system message now in prompts/topic_style_persona.j2, at temperature
  0.8 and 0.7; one document per cell. `ts` (not run by default): the same for the topic_style
  cells (46), at 0.7 only.
- `mt`: the first 40 cells of recipes/paper/multitopic_style_persona.yaml (T = 0.7), written
  as one answer (the single-prompt template, and the same under a JSON schema whose keys are
  the three subjects) or in parts (one request per subject, max_tokens 96 each), with and
  without the system message and with the other subjects named or not.

Every document is scored by the shipped on-topic rule (`measure.fidelity.document_fidelity`);
for documents in parts, each part is also scored alone against its own subject. Samples are
drawn by the product's own sampler, so cell i is the same in every variant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYSTEM = "You are a writer who always writes about exactly the subject you are asked about."
OLD_TSP = """Write a {style} about {topic}.
Author: {persona}.
Format: {fmt}
Explain {topic} with one concrete example, in about {words} words."""
OLD_TS = """Write a {style} about {topic}.
Format: {fmt}
Explain {topic} with one concrete example, in about {words} words."""
PART_ALONE = """Write one paragraph of a {style} about {topic}.
Author: {persona}.
Format: {fmt}
Explain {topic} with one concrete example, in about {words} words."""
PART_NAMING_OTHERS = """A {style} by {persona} connects three subjects: {a}; {b}; {c}.
Format: {fmt}
Write only its paragraph about {topic}: explain {topic} with one concrete example, in about {words} words."""
PART_AS_TSP = OLD_TSP
JSON_PROMPT = """Write a {style} by {persona} that covers three subjects, one paragraph each: {a}; {b}; {c}.
Format: {fmt}
Answer as JSON: each key is a subject, its value is that subject's paragraph (about {words} words)."""
# (name, part prompt or None for one answer, system message)
MT_VARIANTS = [("connected", None, None), ("json sections", "json", None),
               ("parts, alone", PART_ALONE, None), ("parts, alone + system", PART_ALONE, SYSTEM),
               ("parts, naming the others", PART_NAMING_OTHERS, None),
               ("parts, topic_style_persona wording", PART_AS_TSP, None),
               ("parts, topic_style_persona wording + system", PART_AS_TSP, SYSTEM)]


def style_format(plan, style: str) -> str:
    axis = plan.grid.axes["style"]
    return next((v.description or v.value) for v in axis.values if v.value == style)


def quickstart_requests(n_samples: int, template: str, temperatures=(0.8, 0.7)):
    """The quickstart's cells of one template, as that template read before the system
    messages (`template` as the experiment name), with and without SYSTEM."""
    from generator.recipe import load_recipe
    from generator.sampling.requests import plan_samples

    plan = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    out = []
    for s in plan_samples(plan, 0, n_samples):
        if s.template != template:
            continue
        v = s.values
        prompt = (OLD_TSP if template == "topic_style_persona" else OLD_TS).format(
            style=v["style"], topic=v["topic"], persona=v.get("persona"), fmt=style_format(plan, v["style"]), words=110)
        for t in temperatures:
            for system in (None, SYSTEM):
                name = f"T={t}" + (" + system" if system else "")
                r = dataclasses.replace(s.request, prompt=prompt, system=system, temperature=t, max_tokens=192,
                                        id=f"{s.request.id}-{name}")
                out.append(({"experiment": template, "variant": name, "index": s.index, "topics": [v["topic"]]}, [r]))
    return out


def mt_requests(n_samples: int):
    from generator.recipe import load_recipe
    from generator.sampling.requests import plan_samples

    plan = load_recipe(ROOT / "recipes" / "paper" / "multitopic_style_persona.yaml")
    connected = (ROOT / "bench" / "variants" / "mt_connected.j2")
    from generator.sampling.templates import load_template
    single = load_template(connected)
    out = []
    for s in plan_samples(plan, 0, n_samples):
        v, topics = s.values, s.values["topic"].split("; ")
        fill = dict(style=v["style"], persona=v["persona"], fmt=style_format(plan, v["style"]),
                    a=topics[0], b=topics[1], c=topics[2])
        for name, part, system in MT_VARIANTS:
            meta = {"experiment": "mt", "variant": name, "index": s.index, "topics": topics}
            base = dataclasses.replace(s.request, system=system, parts=(), max_tokens=256)
            if part is None:
                prompt = single.render({"topics": topics, "style": v["style"], "persona": v["persona"],
                                        "style_description": fill["fmt"], "num_words": 140})
                out.append((meta, [dataclasses.replace(base, prompt=prompt, id=f"{s.request.id}-{name}")]))
            elif part == "json":
                schema = {"type": "object", "required": topics, "additionalProperties": False,
                          "properties": {t: {"type": "string", "minLength": 80, "maxLength": 350} for t in topics}}
                out.append((meta, [dataclasses.replace(base, prompt=JSON_PROMPT.format(**fill, words=60),
                                                       json_schema=json.dumps(schema), id=f"{s.request.id}-{name}")]))
            else:
                out.append((meta, [dataclasses.replace(base, prompt=part.format(**fill, topic=t, words=50), max_tokens=96,
                                                       seed=s.request.seed + j, id=f"{s.request.id}-{name}-{j}")
                                   for j, t in enumerate(topics)]))
    return out


def document_parts(meta: dict, results) -> list[str]:
    if meta["variant"] == "json sections":
        try:
            answer = json.loads(results[0].text)
            return [str(answer.get(t, "")) for t in meta["topics"]]
        except (json.JSONDecodeError, AttributeError):
            return [results[0].text]
    return [r.text.strip() for r in results]


def score(rows: list[dict]) -> None:
    import numpy as np

    from generator.measure.embeddings import embed_texts
    from generator.measure.fidelity import document_fidelity, wilson_interval
    from generator.recipe import load_recipe

    topics = [v.value for v in load_recipe(ROOT / "recipes" / "quickstart.yaml").grid.axes["topic"].values]
    groups = defaultdict(list)
    for row in rows:
        groups[(row["experiment"], row["variant"])].append(row)
    print("| experiment | variant | documents | on-topic [95%] | parts on their own subject |")
    print("|---|---|---|---|---|")
    for (experiment, variant), members in groups.items():
        texts = ["\n\n".join(r["parts"]) for r in members]
        on, _ = document_fidelity(texts, ["; ".join(r["topics"]) for r in members], [""] * len(texts), topics,
                                  embed=embed_texts)
        share = float(np.mean(on))
        per_part = "–"
        split = [(p, t) for r in members if len(r["parts"]) == len(r["topics"]) > 1 for p, t in zip(r["parts"], r["topics"])]
        if split:
            on_p, _ = document_fidelity([p for p, _ in split], [t for _, t in split], [""] * len(split), topics,
                                        embed=embed_texts)
            per_part = f"{float(np.mean(on_p)):.2f} (n={len(split)})"
        lo, hi = wilson_interval(share, len(texts))
        print(f"| {experiment} | {variant} | {len(texts)} | {share:.2f} [{lo:.2f}, {hi:.2f}] | {per_part} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "variants.jsonl")
    ap.add_argument("--tsp-samples", type=int, default=200, help="quickstart samples to take topic_style_persona cells from")
    ap.add_argument("--mt-samples", type=int, default=40)
    ap.add_argument("--experiments", nargs="+", default=["tsp", "mt"], choices=["tsp", "ts", "mt"],
                    help="tsp: topic_style_persona cells; ts: topic_style cells (T = 0.7 only); mt: multi-topic")
    ap.add_argument("--score-only", action="store_true", help="score an existing --out file")
    args = ap.parse_args()
    if not args.score_only:
        from generator.backends import open_backend

        jobs = []
        if "tsp" in args.experiments:
            jobs += quickstart_requests(args.tsp_samples, "topic_style_persona")
        if "ts" in args.experiments:
            jobs += quickstart_requests(args.tsp_samples, "topic_style", temperatures=(0.7,))
        if "mt" in args.experiments:
            jobs += mt_requests(args.mt_samples)
        backend = open_backend("vllm", "embedded:smollm2-135m", max_model_len=1024)
        results = backend.generate([r for _, requests in jobs for r in requests])
        backend.close()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as f:
            at = 0
            for meta, requests in jobs:
                got = results[at:at + len(requests)]
                at += len(requests)
                f.write(json.dumps({**meta, "parts": document_parts(meta, got),
                                    "finish": [r.finish_reason for r in got]}) + "\n")
    score([json.loads(line) for line in args.out.read_text().splitlines()])


if __name__ == "__main__":
    main()
