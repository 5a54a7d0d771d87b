"""The controller: generate a recipe's corpus, steering sampling to a target diversity.

Without a target the corpus is generated in one pass. With one: pilot rounds at a
concentration c (how much of the grid is active) are scored until one lands within tolerance
(or the pilot budget is spent, or the grid grows when its whole is not diverse enough); then
the rest is generated in main rounds, the whole corpus re-scored after each and c and per-cell
weights corrected; finally the finished corpus is re-measured on fresh batches (`finish.py`).
With an LLM judge, every round is measured by the embedding judge calibrated to it
(`calibration.py`). What to do after a round is decided by `policy.decide`; this module measures
rounds and applies the decisions, and `steer_to` derives the sampling weights.

A rewrite run (`source:`) is steered the same way with its source as the reference (D relative
to the source's own D, the shift from the source), over its rewrite axes alone: the templates
and the grid axes (`context.steered_orders`); which unit a sample rewrites never depends on the
weights. Pilot sweeps rewrite the first slots; the documents of a point not kept are listed as
misses (`release_pilot_slots`), so a later pass rewrites those slots under the final weights and
every unit still ends with per_source rewrites.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from generator.files import count_documents
from generator.recipe import Plan, pilot_size
from generator.records import Backend
from generator.quality.report import read_rejected
from generator.run import calibration, drift, growth, knobs, rejections, shift_bound
from generator.run.context import Context, steered_orders, stream
from generator.run.dedup import open_deduper
from generator.run.finish import finish
from generator.run.journal import remove_journal
from generator.run.loop import OnProgress, Pipeline
from generator.run.parts import PartsBackend
from generator.run.summary import write_summary
from generator.run.policy import FIRST_SWEEP, Decision, decide, main_lookahead
from generator.run.reference import Shift, has_reference, open_reference, resolve_target
from generator.run.resume import prepare_output
from generator.run.rounds import (accept_point, add_judge_cost, draw_sd, drawn_at, log_round, measure,
                                  next_pilot_round, read_corpus, round_fidelity, warn_corpus_draw)
from generator.run.state import Round, RunState, pilot_dir, save_state, with_phase

log = logging.getLogger(__name__)


class RunStopped(Exception):
    """The run stopped early (failures, target out of reach); the summary is written."""


def run(plan: Plan, out: Path, backend: Backend, *, resume: bool = False, force: bool = False,
        on_progress: OnProgress | None = None, judge=None, embed=None) -> dict:
    """Generate the recipe's corpus into `out`; return the summary (also in summary.json). `judge` and
    `embed` override the target's judge and the shift's embedder (default: the judge's, else MiniLM)."""
    started = time.perf_counter()
    state = prepare_output(out, plan, resume=resume, force=force)
    pipe = Pipeline(plan, out, backend, open_deduper(plan, out), on_progress,
                    shard_rows=plan.recipe.size.shard_rows)
    if plan.recipe.target is None:
        state, extra = pipe.advance(state, plan.recipe.size.num_docs), {}
    else:
        state, extra = steer(plan, out, pipe, state, judge=judge, embed=embed)
    pipe.drain()  # requests drawn past the last document are not needed
    if not state.stopped:  # every journaled result below the end is committed; those past it are not needed
        remove_journal(out)
    summary = write_summary(out, plan, state, time.perf_counter() - started, backend, extra)
    if state.stopped:
        raise RunStopped(state.stopped)
    return summary


def steer(plan: Plan, out: Path, pipe: Pipeline, state: RunState, *, judge=None,
          embed=None) -> tuple[RunState, dict]:
    plan = growth.with_added_topics(plan, state.steering.added_topics)
    pipe.use_plan(plan)  # samples are drawn from the grown grid from here on
    if judge is None:
        from generator.judges import judge_for_target
        judge = judge_for_target(plan, out)
    reference = None
    if has_reference(plan):  # the recipe's reference, or a rewrite run's source
        from generator.measure.embeddings import embed_texts
        embed = embed or getattr(judge, "embed", None) or embed_texts
        reference, cost = open_reference(out, plan, judge, embed, stream(plan.recipe.seed, "reference"))
        state = dataclasses.replace(state, steering=dataclasses.replace(
            state.steering, judge_calls=state.steering.judge_calls + cost["calls"],
            judge_tokens=state.steering.judge_tokens + cost["tokens"]))
        plan = resolve_target(plan, reference)
    llm = judge if plan.recipe.target.judge == "llm" else None
    orders = steered_orders(plan)
    ctx = Context(plan, out, pipe, judge, orders, reference, embed, llm, plan.recipe.target if llm else None)
    if llm is not None and (record := calibration.read_record(out, calibration.CALIBRATION_FILE)) is not None:
        ctx = with_calibration(ctx, record)
    if state.steering.phase == "fill":
        lookahead = knobs.lookahead(plan.recipe, document_capacity(plan, pipe.backend))
        state = steer_to(ctx, state, concentration=1.0, phase="pilot", lookahead=lookahead, sweep=FIRST_SWEEP)
    while state.steering.phase == "pilot" and not state.stopped:
        ctx, state = pilot_round(ctx, state)
    num_docs = plan.recipe.size.num_docs
    while state.steering.phase == "main" and not state.stopped and (
            state.steering.measure_at or next_round_end(ctx, state) < num_docs):
        state = main_round(ctx, state)
    if state.steering.phase == "main" and not state.stopped:  # the rest under the last weights
        state = ctx.pipe.advance(state, num_docs)
    return finish(ctx, state)


def document_capacity(plan: Plan, backend: Backend) -> int:
    """Documents in flight that fill `backend` at the recipe's template weights. A backend that
    sends the parts of a `parts: topics` template as requests of their own counts documents at
    the parts per document submitted so far, which before the first is the widest template's
    (a third of the engines' requests for a three-part template)."""
    if not isinstance(backend, PartsBackend):
        return backend.capacity
    weights = [t.weight for t in plan.recipe.templates]
    parts = [t.num_topics if t.parts else 1 for t in plan.templates]
    per_document = sum(w * p for w, p in zip(weights, parts)) / sum(weights)
    return max(1, int(backend.inner.capacity / per_document))


def next_round_end(ctx: Context, state: RunState) -> int:
    """The document count the next main round is measured at. Fixed when the round before it
    was measured (or at the start of the main phase), never by how far generation got while it
    was measured, so the rounds of a resumed run are those of an uninterrupted one. The
    finished corpus is measured by `finish`, not by a round of its own."""
    s, have = state.steering, state.counters.num_docs
    if s.round_end_docs and s.round_end_docs >= have:
        return s.round_end_docs
    return knobs.round_end(have, ctx.plan.recipe.size.num_docs, ctx.target.num_rounds - len(s.rounds("main")))


def with_calibration(ctx: Context, record: dict) -> Context:
    """Steer with the embedding judge at the calibrated threshold, to the target on its scale."""
    from generator.judges.embedding import EmbeddingJudge
    plan = calibration.embedding_target(ctx.plan, ctx.llm_target, record)
    judge = EmbeddingJudge(record["threshold"], embed=ctx.embed,
                           form_threshold=record.get("form_threshold"))  # older records: none
    return dataclasses.replace(ctx, plan=plan, calibration=record, judge=judge)


def steer_to(ctx: Context, state: RunState, **changes) -> RunState:
    """The steering state with `changes` (c, factors, phase, ...) and the sampling weights derived
    from its c and its shift, drift and attribution factors (`weights_at`, the one place they are
    derived)."""
    s = dataclasses.replace(state.steering, **changes)
    weights = weights_at(ctx, s, s.concentration)
    return dataclasses.replace(state, steering=dataclasses.replace(s, weights=weights))


def weights_at(ctx: Context, s, c: float) -> dict:
    """The sampling weights at concentration `c` under the steering state's shift, drift,
    attribution and rejection factors (a sweep's points differ from the operating c in c alone)."""
    return knobs.sampling_weights(ctx.orders, c, s.shift_factors, s.drift_factors, s.attribution_factors,
                                  s.rejection_factors)


def away_from_far(ctx: Context, state: RunState, shift: Shift) -> dict:
    """Shift factors that move weight away from grid values whose documents lie far from the reference."""
    s = state.steering
    new = knobs.shift_factors(s.weights, shift.by_value, rate=ctx.target.reweight_rate or 1.0)
    return knobs.merge_factors(s.shift_factors, new)


def pilot_round(ctx: Context, state: RunState) -> tuple[Context, RunState]:
    """Generate one pilot round, a sweep: `pilot_size` samples at each of its concentrations, in
    consecutive epochs sent out together so every engine serves all of them at once; score each
    point, and apply what `decide` says next."""
    this_round, s, n = state.steering.round, state.steering, pilot_size(ctx.plan.recipe)
    if not state.counters.aside_docs:  # a round resumed after its documents keeps its epochs
        start = state.counters.next_index
        for j, c in enumerate(s.sweep):
            state = ctx.pipe.set_epoch(state, start + j * n, weights_at(ctx, s, c), concentration=c)
        state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, sweep_start=start))
    start, end = state.steering.sweep_start, state.steering.sweep_start + n * len(s.sweep)
    state = ctx.pipe.advance(state, n * len(s.sweep), hold_at=end, into=pilot_dir(ctx.out, this_round))
    ctx.pipe.drain()  # a pilot round ends at its last sample; later samples are drawn again
    if state.stopped:
        return ctx, state
    texts, metadata, index = read_corpus(pilot_dir(ctx.out, this_round), with_index=True)
    if ctx.llm is not None and ctx.calibration is None:  # the first pilot calibrates the embedding judge
        record = calibration.calibrate_judge(ctx.out, texts, ctx.llm, ctx.target, ctx.rng("calibrate"),
                                             ctx.embed, ctx.plan.recipe.size.num_docs)
        ctx = with_calibration(ctx, record)
    point_rows = [[i for i, x in enumerate(index) if start + j * n <= x < start + (j + 1) * n]
                  for j in range(len(s.sweep))]
    shifts = ctx.point_shifts(pilot_dir(ctx.out, this_round), this_round, point_rows)
    measured = []
    for j, (c, rows, shift) in enumerate(zip(s.sweep, point_rows, shifts)):
        point = [texts[i] for i in rows]
        report, _ = measure(point, ctx.judge, ctx.target, ctx.rng("pilot", this_round, j))
        state = add_judge_cost(state, report)
        free = not report.prompt_tokens + report.completion_tokens  # the draw sd only where judging is free
        sd = draw_sd(point, ctx.judge, ctx.target, ctx.rng("draw", this_round, j)) if free else 0.0
        state = with_round(state, measured_round(c, "pilot", report, shift, draw_sd=sd, sweep=this_round))
        measured.append((c, report, shift, sd))
    warn_corpus_draw(state.steering.rounds("pilot"), n, ctx.plan.recipe.size.num_docs, ctx.target.tolerance)
    decision = decide(state.steering.history, ctx.goal(state))
    ctx, state, action = apply_after_pilot(ctx, state, decision, measured)
    if ctx.llm is not None and state.steering.phase == "main" and "offset_at_target" not in ctx.calibration:
        report = min(measured, key=lambda m: abs(m[0] - state.steering.concentration))[1]
        record = calibration.measure_offset(ctx.out, texts, ctx.llm, ctx.judge, report, ctx.llm_target,
                                            rng=ctx.rng("calibrate", this_round))
        ctx = with_calibration(ctx, record)
    for j, (c, report, shift, sd) in enumerate(measured):
        done = j == len(measured) - 1
        log_round(ctx.out, this_round, state, report, ctx.target, action if done else "measured",
                  phase="pilot", concentration=c,
                  extra={"draw_sd": sd, "point": j,
                         **shift_bound.shift_fields(shift, ctx.target, ctx.reference)})
    save_state(ctx.out, state)
    return ctx, state


def measured_round(c: float, kind: str, report, shift: Shift | None, **more) -> Round:
    """The history entry of a round measured at `c`: its D with interval, and its shift."""
    return Round(c, report.score, kind, shift.mmd2 if shift else None, report.half_width,
                 shift.se if shift else 0.0, **more)


def with_round(state: RunState, measured: Round) -> RunState:
    s = state.steering
    return dataclasses.replace(state, steering=dataclasses.replace(s, history=(*s.history, measured)))


def apply_after_pilot(ctx: Context, state: RunState, d: Decision, measured) -> tuple[Context, RunState, str]:
    """Apply a sweep's decision: move the kept point's documents into the corpus (accept, or a
    settle at it) and discard the rest, set c (and the shift factors), sweep again, grow the
    grid, or stop."""
    if d.away_from_far:  # away from the values far in the sweep's point farthest from the reference
        far = max((m for m in measured if m[2] is not None), key=lambda m: m[2].mmd2)
        state = steer_to(ctx, state, shift_factors=away_from_far(ctx, state, far[2]))
    if d.binding:
        state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, binding=d.binding))
    if d.out_of_reach:
        steering = dataclasses.replace(state.steering, out_of_reach=d.out_of_reach)
        state = dataclasses.replace(state, steering=steering)
    if d.action == "stop":
        return ctx, dataclasses.replace(with_phase(state, "done"), stopped=d.reason), "stop"
    if d.action == "grow":
        return grow_grid(ctx, state, d.points)
    this_round = state.steering.round
    if d.keep is not None:
        j = next(j for j, m in enumerate(measured) if m[0] == d.keep)
        n, start = pilot_size(ctx.plan.recipe), state.steering.sweep_start
        state = accept_point(ctx.out, state, start + j * n, start + (j + 1) * n)
    else:
        state = next_pilot_round(state)
    release_pilot_slots(ctx, this_round)
    phase = "pilot" if d.action == "pilot" else "main"
    return ctx, steer_to(ctx, state, concentration=d.concentration, phase=phase, sweep=d.points), d.reason


def release_pilot_slots(ctx: Context, round_no: int) -> None:
    """A rewrite run's pilot documents left out of the corpus give their slots back: listed as
    misses, they are rewritten in a later pass (nothing for a grid run)."""
    if ctx.plan.source is None:
        return
    from generator.sources.slots import write_discarded
    write_discarded(ctx.out, pilot_dir(ctx.out, round_no), round_no)
    ctx.pipe.reopen_passes()


def grow_grid(ctx: Context, state: RunState, sweep: tuple[float, ...]) -> tuple[Context, RunState, str]:
    """The whole grid is not diverse enough: ask the generator for new topics, sweep again from c = 1."""
    plan, s = ctx.plan, state.steering
    added = growth.grow_topics(plan, ctx.backend, ctx.out, rng=ctx.rng("growth", s.round))
    merged = growth.merge_added(s.added_topics, added)
    growth.write_added(ctx.out, merged)
    plan = growth.with_added_topics(plan, merged)
    ctx.pipe.use_plan(plan)
    ctx = dataclasses.replace(ctx, plan=plan, orders=steered_orders(plan))
    history = tuple(dataclasses.replace(h, kind="grow") if h.kind == "pilot" and h.sweep == s.round else h
                    for h in s.history)  # the sweep measured the grid before it grew
    state = steer_to(ctx, next_pilot_round(state), added_topics=merged, history=history, concentration=1.0,
                     sweep=sweep)
    return ctx, state, f"grid growth: +{sum(len(v) for v in added.values())} topics"


def main_round(ctx: Context, state: RunState) -> RunState:
    """Generate the next share of the corpus; measure it while generation goes on under the
    same weights for `lookahead` more samples; apply what `decide` says from the sample after."""
    num_docs = ctx.plan.recipe.size.num_docs
    if not state.steering.measure_at:
        state = generate_round(ctx, state)
        if state.stopped:
            return state
    s = state.steering
    measured_at, this_round, round_c = s.measure_at, s.round, s.concentration
    ahead = main_lookahead(s.history, ctx.goal(state))
    hold_at = measured_at + ahead if state.counters.num_docs < num_docs else measured_at
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(measure_round, ctx, this_round, measured_at, s.main_start)
        state = ctx.pipe.advance(state, s.round_end_docs, submit_docs=num_docs, beside=future.done,
                                 hold_at=hold_at)
        report, attribution, shift, fidelity, docs, rejected = future.result()
    drawn = drawn_at(ctx.out, measured_at, state.steering.epochs)  # each document at the c it was drawn at
    state = add_judge_cost(state, report)
    state, drift_action = drift.respond(state, fidelity, ctx.target.min_fidelity, ctx.plan.grid)  # or stop
    state = with_round(state, measured_round(round_c, "main", report, shift, docs=docs, drawn=drawn))
    decision = decide(state.steering.history, ctx.goal(state))
    if not state.stopped:
        state = apply_after_main(ctx, state, decision, attribution, shift)
        if rejected or state.steering.rejection_factors:  # this round's rejection rates replace the last
            state = steer_to(ctx, state, rejection_factors=rejected)
    if docs < num_docs and state.steering.weights != s.weights:
        state = ctx.pipe.set_epoch(state, measured_at + ahead, state.steering.weights, this_round + 1,
                                   concentration=state.steering.concentration)
    state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, round=this_round + 1,
                                                                    measure_at=0))
    kept = {"fidelity": fidelity.topic_share, "fidelity_action": drift_action} if fidelity is not None else {}
    action = decision.reason if not state.stopped else "keep"
    log_round(ctx.out, this_round, state, report, ctx.target, action, phase="main", concentration=round_c,
              docs=docs, extra={**shift_bound.shift_fields(shift, ctx.target, ctx.reference), **kept})
    save_state(ctx.out, state)
    return state


def apply_after_main(ctx: Context, state: RunState, d: Decision, attribution,
                     shift: Shift | None) -> RunState:
    """Apply a main round's decision: its c, the attribution factors of a correction (replacing the
    last ones), and shift factors away from far values; the weights follow from them (`steer_to`)."""
    steering = dataclasses.replace(state.steering, out_of_reach=d.out_of_reach)  # each round's verdict
    state = dataclasses.replace(state, steering=steering)
    if d.action == "stop":
        return dataclasses.replace(with_phase(state, "done"), stopped=d.reason)
    changes: dict = {"concentration": d.concentration}
    if d.reweight and ctx.target.reweight_rate > 0 and attribution:
        active = knobs.sampling_weights(ctx.orders, d.concentration)
        changes["attribution_factors"] = knobs.attribution_factors(
            active, attribution, rate=ctx.target.reweight_rate, direction=d.reweight)
    if d.away_from_far:
        changes["shift_factors"] = away_from_far(ctx, state, shift)
    return steer_to(ctx, state, **changes)


def generate_round(ctx: Context, state: RunState) -> RunState:
    """Generate up to this round's end; record where it ended and where the next round ends."""
    num_docs, c, s = ctx.plan.recipe.size.num_docs, state.counters, state.steering
    if not s.epochs or s.epochs[-1].weights != s.weights:  # the first main round, or c set after the pilots
        state = ctx.pipe.set_epoch(state, c.next_index, s.weights, concentration=s.concentration)
    if not s.main_start:
        steering = dataclasses.replace(state.steering, main_start=c.next_index)
        state = dataclasses.replace(state, steering=steering)
    end = next_round_end(ctx, state)
    state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, round_end_docs=end))
    ahead = main_lookahead(s.history, ctx.goal(state))
    submit = min(num_docs, end + ahead)  # no more than the lookahead past the round's end
    state = ctx.pipe.advance(state, end, submit_docs=submit)
    if state.stopped:
        return state
    c, s = state.counters, state.steering
    after = knobs.round_end(c.num_docs, num_docs, ctx.target.num_rounds - len(s.rounds("main")) - 1)
    steering = dataclasses.replace(s, measure_at=c.next_index, round_end_docs=after)
    state = dataclasses.replace(state, steering=steering)
    save_state(ctx.out, state)
    return state


def measure_round(ctx: Context, round_no: int, below: int, main_start: int = 0):
    """Score the corpus's samples below index `below` (runs beside generation); the rejection
    rates are those of the main phase's samples (from `main_start`), the corpus's own."""
    texts, metadata = read_corpus(ctx.out, below, rng=ctx.rng("main", round_no, 1))  # a sample of at most
    # MEASURE_ROWS
    report, attribution = measure(texts, ctx.judge, ctx.target, ctx.rng("main", round_no), metadata=metadata)
    shift = ctx.shift_of(ctx.out, round_no, below)
    fidelity = round_fidelity(ctx.plan, ctx.judge, texts, metadata)
    docs = count_documents(ctx.out, below)
    rejected = {}
    if ctx.plan.recipe.quality is not None:
        rows = [r for r in read_rejected(ctx.out) if r.get("sample_index", 0) >= main_start]
        counts = rejections.rejection_counts(rows, below)
        rejected = rejections.rejection_factors(counts, metadata, docs, rate=ctx.target.reweight_rate or 1.0)
    return report, attribution, shift, fidelity, docs, rejected
