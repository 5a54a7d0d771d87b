"""Cost per document of the quality gates (generator/quality/gates.py) at 10^4 documents.

    .venv/bin/python bench/bench_quality.py [--docs 10000] [--repeats 2]
    .venv/bin/python bench/bench_quality.py --corpus runs/quickstart [--kept kept.jsonl]

Documents are built from the 300 King James Bible passages in recipes/data/kjv (real prose,
about 170 words each), in the shapes a small generator produces: a passage with the start of
another after it (prose), the same split into one sentence per line, a passage that loops on its
first sentence, a numbered list of short lines, and a heading cut short ("#11. Title\\n\\n#12.").
Nearly every text is distinct (short shapes repeat; the count is printed). The evaluation set for
decontamination is the 150 passages of reference.jsonl, so prose built from them is contaminated.

Each gate is timed alone (its own tokenizing included), then all together in recipe order, where
the gates after the first reuse datatrove's tokenization of the same text; CPU seconds (the
machine is shared) and wall seconds are printed, with the share each gate rejects.

With `--corpus RUN_DIR` it instead judges a run's documents: the share each gate (alone, with
datatrove's defaults) and the gates of recipes/quality.yaml reject, per template; `--kept FILE`
writes the documents those gates keep as JSONL, for `generator score FILE`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.quality.config import C4, FineWebQuality, GopherQuality, GopherRepetition, Quality  # noqa
from generator.quality.evalsets import read_eval_set  # noqa: E402
from generator.quality.gates import build_gates  # noqa: E402

KJV = ROOT / "recipes" / "data" / "kjv"
SHAPES = ("prose", "lines", "loop", "list", "heading")
SHARE = (0.55, 0.15, 0.15, 0.1, 0.05)  # of documents per shape


def passages() -> list[str]:
    return [json.loads(line)["text"] for name in ("seeds.jsonl", "reference.jsonl")
            for line in (KJV / name).read_text(encoding="utf-8").splitlines()]


def make_documents(num_docs: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(texts, shapes): `num_docs` distinct documents in the shapes above."""
    texts, shapes, source = [], [], passages()
    for i, shape in enumerate(rng.choice(SHAPES, size=num_docs, p=SHARE)):
        a, b = (source[j] for j in rng.integers(len(source), size=2))
        cut = int(rng.integers(80, 400))
        sentences = [s.strip() + "." for s in a.split(".") if s.strip()]
        if shape == "prose":
            text = f"{a} {b[:cut].rsplit(' ', 1)[0]}."
        elif shape == "lines":
            text = "\n".join(sentences) + f"\n{b[:cut].rsplit(' ', 1)[0]}."
        elif shape == "loop":
            text = " ".join([sentences[0]] * int(rng.integers(4, 12)) + sentences[1:3])
        elif shape == "list":
            text = "\n".join(f"{n + 1}. {w}" for n, w in enumerate(a.split()[:int(rng.integers(8, 30))]))
        else:
            text = f"#{i % 40 + 1}. {' '.join(a.split()[:int(rng.integers(3, 8))])}\n\n#{i % 40 + 2}."
        texts.append(text)
        shapes.append(str(shape))
    return texts, shapes


GATES = {
    "min_tokens": Quality(min_tokens=40),
    "gopher_quality": Quality(gopher_quality=GopherQuality()),
    "gopher_repetition": Quality(gopher_repetition=GopherRepetition()),
    "fineweb_quality": Quality(fineweb_quality=FineWebQuality()),
    "c4": Quality(c4=C4()),
    "decontaminate": Quality(decontaminate=[str(KJV / "reference.jsonl")]),
    "all": Quality(min_tokens=40, gopher_quality=GopherQuality(), gopher_repetition=GopherRepetition(),
                   fineweb_quality=FineWebQuality(), c4=C4(), decontaminate=[str(KJV / "reference.jsonl")]),
}


def time_gate(quality: Quality, texts: list[str], eval_sets) -> dict:
    started = time.perf_counter()
    gates = build_gates(quality, eval_sets)
    build_s = time.perf_counter() - started
    cpu, wall = time.process_time(), time.perf_counter()
    verdicts = [gates.check(t) for t in texts]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"build_s": build_s, "cpu_us": 1e6 * cpu / len(texts), "wall_us": 1e6 * wall / len(texts),
            "verdicts": verdicts}


def judge_corpus(run: Path, kept_path: Path | None) -> None:
    """The rejection table of a run's documents under each gate and the example recipe's gates."""
    from generator.files import read_documents
    from generator.recipe import read_recipe

    table = read_documents(run, columns=["text", "template"]).to_pydict()
    texts, templates = table["text"], table["template"]
    example = read_recipe(ROOT / "recipes" / "quality.yaml").quality
    gates = {name: q for name, q in GATES.items() if name not in ("decontaminate", "all")}
    gates["recipes/quality.yaml"] = example
    names = sorted(set(templates))
    print(f"{len(texts)} documents of {run}\n")
    print("| gates | rejected | " + " | ".join(names) + " | rules (first to reject) |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for name, quality in gates.items():
        built = build_gates(quality, [read_eval_set(Path(p), "bench") for p in quality.decontaminate])
        verdicts = [built.check(t) for t in texts]
        shares = [np.mean([v is not None for v, t in zip(verdicts, templates) if t == n]) for n in names]
        rules: dict[str, int] = {}
        for v in verdicts:
            if v is not None:
                rules[f"{v.gate}: {v.rule}"] = rules.get(f"{v.gate}: {v.rule}", 0) + 1
        print(f"| {name} | {np.mean([v is not None for v in verdicts]):.1%} | "
              + " | ".join(f"{x:.0%}" for x in shares) + " | "
              + ", ".join(f"{r} {n}" for r, n in sorted(rules.items(), key=lambda kv: -kv[1])) + " |")
    if kept_path is not None:
        with open(kept_path, "w", encoding="utf-8") as f:
            for text, verdict in zip(texts, verdicts):
                if verdict is None:
                    f.write(json.dumps({"text": text}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, help="judge this run folder's documents instead")
    parser.add_argument("--kept", type=Path, help="with --corpus: write the kept documents here (JSONL)")
    args = parser.parse_args()
    if args.corpus is not None:
        return judge_corpus(args.corpus, args.kept)
    from generator.recipe import read_recipe
    GATES["recipes/quality.yaml"] = read_recipe(ROOT / "recipes" / "quality.yaml").quality
    texts, shapes = make_documents(args.docs, np.random.default_rng(args.seed))
    eval_sets = [read_eval_set(KJV / "reference.jsonl", "bench")]  # also the example recipe's
    words = np.array([len(t.split()) for t in texts])
    print(f"{len(texts)} documents ({len(set(texts))} distinct), words mean {words.mean():.0f}, "
          f"median {np.median(words):.0f}; shapes: " + ", ".join(f"{s} {shapes.count(s)}" for s in SHAPES))
    build_gates(Quality(min_tokens=1))  # spaCy's import and first load, outside every timing
    print("\n| gate | build (s) | CPU µs per doc | wall µs per doc | rejected | rejected per shape |")
    print("|---|---|---|---|---|---|")
    for name, quality in GATES.items():
        runs = [time_gate(quality, texts, eval_sets) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["cpu_us"])
        rejected = [v is not None for v in best["verdicts"]]
        per_shape = ", ".join(
            f"{s} {np.mean([r for r, sh in zip(rejected, shapes) if sh == s]):.0%}" for s in SHAPES)
        print(f"| {name} | {best['build_s']:.2f} | {best['cpu_us']:.0f} | {best['wall_us']:.0f} | "
              f"{np.mean(rejected):.1%} | {per_shape} |")
        if name in ("all", "recipes/quality.yaml"):
            by_gate: dict[str, int] = {}
            for v in best["verdicts"]:
                if v is not None:
                    by_gate[v.gate] = by_gate.get(v.gate, 0) + 1
            print(f"\n{name}, first to reject: " + ", ".join(f"{g} {n}" for g, n in by_gate.items()) + "\n")


if __name__ == "__main__":
    main()
