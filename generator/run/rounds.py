"""What a controller round reads, measures and records: the corpus or a pilot round's
documents, the judge's report with its cost, the round's line in controller.jsonl, the move
of an accepted pilot round into the corpus, and weights.yaml."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from generator.files import (MEASURE_ROWS, read_documents, read_manifest, read_sample, shard_entry,
                             shard_path, shard_paths, write_manifest)
from generator.records import GRID_COLUMNS
from generator.run.dedup import index_path

log = logging.getLogger(__name__)
from generator.run.knobs import Z95, weights_summary
from generator.run.state import Drawn, Epoch, RunState, pilot_dir


def read_corpus(root: Path, below: int | None = None, *, rng: np.random.Generator | None = None,
                max_rows: int = MEASURE_ROWS, with_index: bool = False):
    """Texts and grid columns of the documents under `root` (of samples below index `below`),
    in index order; with `with_index` also their sample indices. With `rng`, at most
    `max_rows` of them, drawn uniformly (`read_sample`)."""
    columns = ["text", *GRID_COLUMNS, *(["sample_index"] if with_index else [])]
    table = (read_documents(root, columns=columns, below=below) if rng is None
             else read_sample(root, max_rows, rng, columns=columns, below=below))
    if with_index:  # a pilot round's shards are in index order within a point, not across a resume
        table = table.sort_by("sample_index")
    found = table.column("text").to_pylist(), {c: table.column(c).to_pylist() for c in GRID_COLUMNS}
    return (*found, table.column("sample_index").to_pylist()) if with_index else found


def drawn_at(out: Path, below: int, epochs: tuple[Epoch, ...]) -> tuple[Drawn, ...]:
    """The corpus's documents of samples below index `below` by the concentration their epoch
    was drawn at (-1 where the epoch does not record it)."""
    counts: dict[float, int] = {}
    for number in read_documents(out, columns=["epoch"], below=below).column("epoch").to_pylist():
        c = epochs[number].concentration if number < len(epochs) else -1.0
        counts[c] = counts.get(c, 0) + 1
    return tuple(Drawn(c, docs) for c, docs in sorted(counts.items()))


def measure(texts, judge, target, rng: np.random.Generator, *, metadata=None):
    """Score texts with the target's judge and K; per-cell attribution when metadata is given."""
    from generator.judges.attribution import attribute_mates
    from generator.judges.protocol import attribute_cells, score_corpus
    report = score_corpus(texts, judge, k=target.k, rng=rng, num_batches=target.num_batches,
                          precision=target.precision or target.tolerance / 3,
                          min_batches=min(50, target.num_batches), chunk_size=100)
    if report.half_width > target.tolerance / 2:
        log.warning("D = %.3f ± %.3f after %d batches: the interval is wider than half the tolerance "
                    "%.3g, so rounds are steered on noise; raise target.num_batches (now %d)",
                    report.score, report.half_width, report.num_scored, target.tolerance, target.num_batches)
    attribution = None
    if metadata:
        usable = {c: v for c, v in metadata.items() if len(set(v) - {""}) > 1}
        if usable:  # "mates" is what the controller reweights by (knobs.attribution_factors)
            attribution = {**attribute_cells(report, usable), "mates": attribute_mates(report, usable)}
    return report, attribution


DRAW_SPLITS = 10  # random halvings of a pilot round for its draw sd
DRAW_BATCHES = 500  # batches per half: the judge's own share is taken out anyway


def draw_sd(texts, judge, target, rng: np.random.Generator, *, splits: int = DRAW_SPLITS) -> float:
    """How far D moves between two rounds of len(texts) documents drawn at the same settings.
    The judge's interval resamples K-batches of these documents, not which documents were
    drawn: on the worked example a 100-document pilot's D moves by an sd of about 0.3 between
    draws against a judge sd of 0.03 (BENCHMARKS.md, "Draw noise"). Two disjoint random
    halves are two independent draws of n/2 documents, so sd(D_A - D_B)/√2 is the draw sd at
    n/2 (the halves' own judge variance taken out) and /√2 more scales it to n (sd ∝ 1/√n).
    0 when the round is too small to halve into batches of K."""
    from generator.judges.protocol import score_corpus
    half = len(texts) // 2
    if half < 2 * target.k:
        return 0.0
    diffs, judge_var = [], []
    for _ in range(splits):
        order = rng.permutation(len(texts))
        a, b = (score_corpus([texts[i] for i in part], judge, k=target.k, rng=rng, num_batches=DRAW_BATCHES)
                for part in (order[:half], order[half:2 * half]))
        diffs.append(a.score - b.score)
        judge_var.append(((a.half_width / Z95) ** 2 + (b.half_width / Z95) ** 2) / 2)
    half_var = float(np.mean(np.square(diffs))) / 2 - float(np.mean(judge_var))
    return float(np.sqrt(max(half_var, 0.0) / 2))


def corpus_draw_sd(pilots, pilot_docs: int, num_docs: int) -> float:
    """The finished corpus's expected draw sd: the pilots' (root mean square) scaled by
    √(pilot docs / corpus docs); 0 when no pilot measured one."""
    sds = [p.draw_sd for p in pilots if p.draw_sd > 0]
    return float(np.sqrt(np.mean(np.square(sds)) * pilot_docs / num_docs)) if sds and num_docs else 0.0


def warn_corpus_draw(pilots, pilot_docs: int, num_docs: int, tolerance: float) -> str | None:
    """Once, at the first sweep with a draw sd: warn (and return the warning) when the finished
    corpus's own draw noise spans more than the tolerance at 95%; such a target is met or
    missed by which documents are drawn, whatever the controller does."""
    measured = {p.sweep for p in pilots if p.draw_sd > 0}
    if not pilots or measured != {pilots[-1].sweep}:
        return None
    corpus_sd = corpus_draw_sd(pilots, pilot_docs, num_docs)
    if Z95 * corpus_sd <= tolerance:
        return None
    warning = (f"a {num_docs}-document corpus's D moves by about ±{Z95 * corpus_sd:.2f} (95%) "
               f"between draws at the same settings, more than the tolerance ±{tolerance:g}: "
               "raise target.tolerance or size.num_docs")
    log.warning(warning)
    return warning


def add_judge_cost(state: RunState, report) -> RunState:
    s = state.steering
    return dataclasses.replace(state, steering=dataclasses.replace(
        s, judge_calls=s.judge_calls + report.calls,
        judge_tokens=s.judge_tokens + report.prompt_tokens + report.completion_tokens))


def accept_point(out: Path, state: RunState, start: int, end: int) -> RunState:
    """Move the current pilot round's shards of samples in [start, end) (one sweep point, drawn
    from the accepted distribution) into the corpus; the rest of the round stays under pilot/
    as calibration cost."""
    c, s = state.counters, state.steering
    moved, kept_tokens, manifest = 0, 0, read_manifest(out)
    for shard in shard_paths(pilot_dir(out, s.round)):
        entry = shard_entry(shard)
        if not start <= entry["first_index"] < end:
            continue
        tokens = pq.read_table(shard, columns=["num_tokens", "num_prompt_tokens"])
        kept_tokens += sum(pa.compute.sum(tokens.column(n)).as_py() or 0 for n in tokens.column_names)
        target = shard_path(out, c.num_shards + moved)
        move_shard(shard, target)
        manifest.append({**entry, "name": target.name})
        moved += 1
    write_manifest(out, manifest)
    kept = sum(e["rows"] for e in manifest[len(manifest) - moved:])
    counters = dataclasses.replace(c, num_docs=c.num_docs + kept, num_shards=c.num_shards + moved)
    state = dataclasses.replace(state, counters=counters)
    return next_pilot_round(state, kept=kept, kept_tokens=kept_tokens)


def move_shard(shard: Path, target: Path) -> None:
    """Move a shard and its stored duplicate-index rows (into the corpus, or back to its pilot round)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(shard, target)
    if index_path(shard).is_file():
        index_path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(index_path(shard), index_path(target))


def next_pilot_round(state: RunState, *, kept: int = 0, kept_tokens: int = 0) -> RunState:
    """The current pilot round is discarded (kept on disk for inspection) but for `kept`
    documents (`kept_tokens` tokens) moved into the corpus; start the next."""
    c, s = state.counters, state.steering
    steering = dataclasses.replace(
        s, round=s.round + 1, pilot_docs=s.pilot_docs + c.aside_docs,
        pilot_tokens=s.pilot_tokens + c.aside_tokens,
        discarded_pilot_docs=s.discarded_pilot_docs + c.aside_docs - kept,
        discarded_pilot_tokens=s.discarded_pilot_tokens + c.aside_tokens - kept_tokens,
        sweep=(), sweep_start=0)
    return dataclasses.replace(state, counters=dataclasses.replace(c, aside_docs=0, aside_tokens=0),
                               steering=steering)


def log_round(out: Path, round_no: int, state: RunState, report, target, action: str, *, phase: str,
              concentration: float, docs: int | None = None, extra: dict | None = None) -> None:
    """One line of OUT/controller.jsonl: what was measured in this round and what was done, and
    the judge tokens (the LLM judge's included) and pilot documents spent so far."""
    row = {"round": round_no, "phase": phase, "docs": state.counters.num_docs if docs is None else docs,
           "concentration": round(concentration, 4), "score": report.score,
           "ci_low": report.ci_low, "ci_high": report.ci_high, "half_width": report.half_width,
           "target": target.score, "tolerance": target.tolerance, "action": action,
           "weights": weights_summary(state.steering.weights), "judge_tokens": state.steering.judge_tokens,
           "pilot_docs": state.steering.pilot_docs, **(extra or {})}
    calibrated = out / "calibration.json"  # the LLM judge's tokens so far (run/calibration.py)
    if calibrated.is_file():
        row["judge_tokens"] += json.loads(calibrated.read_text(encoding="utf-8"))["tokens"]
    with open(out / "controller.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def weights_file(weights: Mapping[str, Mapping[str, float]]) -> dict:
    """weights.yaml: axis -> value -> weight (normalised to mean 1 over active values; inactive
    values omitted)."""
    out = {}
    for axis, values in weights.items():
        active = {v: w for v, w in values.items() if w > 0}
        mean = sum(active.values()) / len(active) if active else 1.0
        out[axis] = {v: round(w / mean, 4) for v, w in active.items()}
    return {"weights": out}


WARN_FIDELITY = 0.5  # without target.min_fidelity, a round below this on-topic share only warns


def round_fidelity(plan, judge, texts, metadata):
    """The corpus's on-topic check (measure/fidelity.py) against the grid's topics; None when
    the grid has no topic axis, or when the judge has no embedder and no min_fidelity is set."""
    from generator.measure.fidelity import check_fidelity, grid_topics, measure_fidelity

    t, topics = plan.recipe.target, grid_topics(plan.grid)
    embed = getattr(judge, "embed", None)
    if topics is None or (embed is None and not t.min_fidelity):
        return None
    if embed is None:
        from generator.measure.embeddings import embed_texts as embed
    report = measure_fidelity(texts, metadata, topics, embed=embed)
    return check_fidelity(report, t.min_fidelity or WARN_FIDELITY, stop=t.min_fidelity > 0)


def final_fidelity(plan, judge, texts, metadata) -> dict | None:
    """summary.json's `fidelity`: the finished corpus's on-topic report (FidelityReport.to_dict)."""
    check = round_fidelity(plan, judge, texts, metadata)
    return None if check is None else check.report.to_dict()
