"""The controller: generate a recipe's corpus, steering sampling to a target diversity.

Without a target the corpus is generated in one pass. With one: pilot rounds at a
concentration c (how much of the grid is active) are scored until one lands within tolerance
(or the pilot budget is spent, or the grid grows when its whole is not diverse enough); then
the rest is generated in main rounds, the whole corpus re-scored after each and c and per-cell
weights corrected; finally the finished corpus is re-measured on fresh batches. With an LLM
judge, every round is measured by the embedding judge calibrated to it (`run/calibration.py`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.files import count_documents, write_yaml
from generator.recipe import Plan, pilot_size
from generator.records import Backend
from generator.run import calibration, drift, growth, knobs, shift_bound
from generator.run.loop import OnProgress, Pipeline, open_deduper, write_summary
from generator.run.rounds import (accept_pilot, add_judge_cost, corpus_draw_sd, draw_sd, final_fidelity, log_round,
                                  measure, next_pilot_round, read_corpus, round_fidelity, warn_corpus_draw, weights_file)
from generator.run.reference import ReferenceStats, Shift, measure_shift, open_reference, read_shift_inputs, resolve_target
from generator.run.resume import prepare_output
from generator.run.state import Round, RunState, pilot_dir, save_state, with_phase

log = logging.getLogger(__name__)
STREAMS = {"pilot": 101, "growth": 202, "main": 303, "reference": 505, "shift": 606, "calibrate": 707, "confirm": 808,
           "final": 909, "draw": 111}  # named random streams of the controller


def stream(seed: int, name: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[name], *more])


class RunStopped(Exception):
    """The run stopped early (failures, target out of reach); the summary is written."""


@dataclass(frozen=True)
class Context:
    """What every round of one run works with (the plan and axis orders change when the grid grows)."""

    plan: Plan
    out: Path
    pipe: Pipeline
    judge: object
    orders: dict
    reference: ReferenceStats | None = None
    embed: object = None  # texts -> embeddings, for the shift from the reference and the calibrated judge
    llm: object = None  # target.judge llm: the LLM judge, asked to calibrate `judge` and to confirm the corpus
    llm_target: object = None  # its target (ctx.target is then on the calibrated embedding judge's scale)
    calibration: dict | None = None

    @property
    def target(self):
        return self.plan.recipe.target

    @property
    def backend(self) -> Backend:
        return self.pipe.backend


def run(plan: Plan, out: Path, backend: Backend, *, resume: bool = False, force: bool = False,
        on_progress: OnProgress | None = None, judge=None, embed=None) -> dict:
    """Generate the recipe's corpus into `out`; return the summary (also in summary.json). `judge` and
    `embed` override the target's judge and the shift's embedder (default: the judge's, else MiniLM)."""
    started = time.perf_counter()
    state = prepare_output(out, plan, resume=resume, force=force)
    pipe = Pipeline(plan, out, backend, open_deduper(plan, out), on_progress, shard_rows=plan.recipe.size.shard_rows)
    state, extra = (pipe.advance(state, plan.recipe.size.num_docs), {}) if plan.recipe.target is None else \
        steer(plan, out, pipe, state, judge=judge, embed=embed)
    pipe.drain()  # requests drawn past the last document are not needed
    summary = write_summary(out, plan, state, time.perf_counter() - started, backend, extra)
    if state.stopped:
        raise RunStopped(state.stopped)
    return summary


def steer(plan: Plan, out: Path, pipe: Pipeline, state: RunState, *, judge=None, embed=None) -> tuple[RunState, dict]:
    plan = growth.with_added_topics(plan, state.steering.added_topics)
    pipe.plan = plan  # samples are drawn from the grown grid from here on
    if judge is None:
        from generator.judges import judge_for_target
        judge = judge_for_target(plan, out)
    reference = None
    if plan.reference_texts:
        from generator.measure.embeddings import embed_texts
        embed = embed or getattr(judge, "embed", None) or embed_texts
        reference, cost = open_reference(out, plan, judge, embed, stream(plan.recipe.seed, "reference"))
        state = dataclasses.replace(state, steering=dataclasses.replace(
            state.steering, judge_calls=state.steering.judge_calls + cost["calls"],
            judge_tokens=state.steering.judge_tokens + cost["tokens"]))
        plan = resolve_target(plan, reference)
    llm = judge if plan.recipe.target.judge == "llm" else None
    ctx = Context(plan, out, pipe, judge, knobs.axis_orders(plan.grid, plan.recipe.seed), reference, embed, llm,
                  plan.recipe.target if llm else None)
    if llm is not None and (record := calibration.read_record(out, calibration.CALIBRATION_FILE)) is not None:
        ctx = with_calibration(ctx, record)
    if state.steering.phase == "fill":
        state = set_concentration(ctx, state, 1.0, phase="pilot", lookahead=knobs.lookahead(plan.recipe, pipe.backend.capacity))
    while state.steering.phase == "pilot" and not state.stopped:
        ctx, state = pilot_round(ctx, state)
    while (state.steering.phase == "main" and state.counters.num_docs < plan.recipe.size.num_docs
           and not state.stopped):
        state = main_round(ctx, state)
    return finish(ctx, state)


def with_calibration(ctx: Context, record: dict) -> Context:
    """Steer with the embedding judge at the calibrated threshold, to the target on its scale."""
    from generator.judges.embedding import EmbeddingJudge
    return dataclasses.replace(ctx, plan=calibration.embedding_target(ctx.plan, ctx.llm_target, record), calibration=record,
                               judge=EmbeddingJudge(record["threshold"], embed=ctx.embed))


def set_concentration(ctx: Context, state: RunState, c: float, **changes) -> RunState:
    weights = knobs.apply_factors(knobs.concentration_weights(ctx.orders, c), state.steering.shift_factors)
    steering = dataclasses.replace(state.steering, concentration=c, weights=weights, **changes)
    return dataclasses.replace(state, steering=steering)


def round_shift(ctx: Context, root: Path, round_no: int, below: int | None = None) -> Shift | None:
    """The documents under `root` (samples below `below`) against the reference (None without one)."""
    if ctx.reference is None:
        return None
    texts, columns = read_shift_inputs(root, below)
    return measure_shift(texts, columns, ctx.reference, ctx.embed, stream(ctx.plan.recipe.seed, "shift", round_no))


def over_bound(ctx: Context, shift: Shift | None) -> bool:
    return shift is not None and shift_bound.above(shift.mmd2, shift.se, ctx.target.max_shift)


def reweight_for_shift(ctx: Context, state: RunState, shift: Shift, share_left: float = 0.0) -> RunState:
    """Move weight away from grid values whose documents lie far from the reference (kept as
    factors, so later changes of c keep them); in a main round also move c towards smaller shift."""
    s = state.steering
    c = shift_bound.retreat(s.concentration, s.rounds("pilot"), ctx.target.max_shift, shift, share_left)
    merged = knobs.merge_factors(s.shift_factors, knobs.shift_factors(s.weights, shift.by_value,
                                                                      rate=ctx.target.reweight_rate or 1.0))
    weights = knobs.apply_factors(knobs.concentration_weights(ctx.orders, c), merged)
    return dataclasses.replace(state, steering=dataclasses.replace(s, concentration=c, shift_factors=merged, weights=weights))


def pilot_round(ctx: Context, state: RunState) -> tuple[Context, RunState]:
    """Generate one pilot round at the current c, score it, and decide what comes next."""
    this_round, c = state.steering.round, state.steering.concentration
    if not state.steering.round_docs:  # a round resumed after its documents keeps their epoch
        state = ctx.pipe.set_epoch(state, state.counters.next_index, state.steering.weights)
    state = ctx.pipe.advance(state, pilot_size(ctx.plan.recipe))
    ctx.pipe.drain()  # a pilot round ends at its last document; later samples are drawn again
    if state.stopped:
        return ctx, state
    texts, _ = read_corpus(pilot_dir(ctx.out, this_round))
    if ctx.llm is not None and ctx.calibration is None:  # the first pilot round calibrates the embedding judge
        ctx = with_calibration(ctx, calibration.calibrate_judge(ctx.out, texts, ctx.llm, ctx.target, stream(
            ctx.plan.recipe.seed, "calibrate"), ctx.embed, ctx.plan.recipe.size.num_docs))
    report, _ = measure(texts, ctx.judge, ctx.target, stream(ctx.plan.recipe.seed, "pilot", this_round))
    shift = round_shift(ctx, pilot_dir(ctx.out, this_round), this_round)
    state = add_judge_cost(state, report)
    s = state.steering  # the draw sd is measured only where the judge costs no tokens (embeddings)
    sd = 0.0 if report.prompt_tokens + report.completion_tokens else draw_sd(texts, ctx.judge, ctx.target, stream(ctx.plan.recipe.seed, "draw", this_round))
    state = dataclasses.replace(state, steering=dataclasses.replace(
        s, history=(*s.history, Round(c, report.score, "pilot", shift.mmd2 if shift else None, report.half_width,
                                      shift.se if shift else 0.0, sd))))
    warn_corpus_draw(state.steering.rounds("pilot"), len(texts), ctx.plan.recipe.size.num_docs, ctx.target.tolerance)
    ctx, state, action = after_pilot(ctx, state, report, shift)
    if over_bound(ctx, shift):
        action += f"; MMD² {shift.mmd2:.4f} ± {shift.se:.4f} over max_shift {ctx.target.max_shift}: weight moved away from far values"
    if ctx.llm is not None and state.steering.phase == "main" and "offset_at_target" not in ctx.calibration:
        ctx = with_calibration(ctx, calibration.measure_offset(ctx.out, texts, ctx.llm, ctx.judge, report, ctx.llm_target,
                                                               rng=stream(ctx.plan.recipe.seed, "calibrate", this_round)))
    log_round(ctx.out, this_round, state, report, ctx.target, action, phase="pilot", concentration=c,
              extra={"draw_sd": sd, **shift_bound.shift_fields(shift, ctx.target, ctx.reference)})
    save_state(ctx.out, state)
    return ctx, state


def after_pilot(ctx: Context, state: RunState, report, shift: Shift | None = None) -> tuple[Context, RunState, str]:
    """Accept the pilot; pilot again or go on where a fit of D(c) through every pilot meets the target;
    grow the grid; stop. Under a shift bound a spent budget settles at the best pilot under it."""
    t, s = ctx.target, state.steering
    c, score = s.concentration, report.score
    points = [(h.concentration, h.score, h.spread) for h in s.rounds("pilot")]
    level, _ = knobs.level_at(points, c, t.score, floor=1 / t.k)  # with its neighbours, not the lucky draw alone
    close = max(abs(score - t.score), abs(level - t.score)) <= min(t.tolerance, max(t.tolerance / 2, report.half_width))
    spent = len(points) >= t.max_pilot_rounds
    if over_bound(ctx, shift):
        state = reweight_for_shift(ctx, state, shift)
        if close and not spent:
            return ctx, next_pilot_round(state), "D within tolerance but over max_shift; pilot again"
        close = False  # a pilot over the bound is never accepted
    if close:
        return ctx, with_phase(accept_pilot(ctx.out, state), "main"), f"accept c={c:.3f}"
    if spent and t.max_shift is not None:
        return settle(ctx, state, "pilot budget spent")
    fit = knobs.fit_concentration(points, t.score, floor=1 / t.k, start=c)
    if fit is not None and t.max_shift is not None:
        bounded = shift_bound.limit_fit(fit, s.rounds("pilot"), t.max_shift)
        if bounded != fit and any(abs(bounded.concentration - p[0]) < knobs.MIN_BRACKET for p in points):
            return settle(ctx, state, f"next c={fit.concentration:.3f} is past max_shift's limit "
                                      f"c={bounded.concentration:.3f}, already measured", limited=True)
        fit = bounded
    growable = t.grow_grid and "topic" in ctx.plan.grid.axes  # growth adds topics (a seed-document grid has none)
    if fit is None and score < t.score and growable and len(s.rounds("grow")) < t.max_growth_rounds:
        ctx, state, action = grow_grid(ctx, state)
    elif fit is None:
        return ctx, stop_out_of_reach(ctx, state, points, score), "stop"
    elif spent or fit.within(t.score, t.tolerance) or abs(fit.concentration - c) < knobs.MIN_BRACKET:
        why = "pilot budget spent" if spent else "fit within tolerance" if fit.within(t.score, t.tolerance) else "converged"
        action = f"{why}: fitted D={fit.score:.2f} [{fit.low:.2f}, {fit.high:.2f}]; continue at c={fit.concentration:.3f}"
        return ctx, set_concentration(ctx, next_pilot_round(state), fit.concentration, phase="main"), action
    else:
        action = f"pilot again at c={fit.concentration:.3f} (fitted D={fit.score:.2f} [{fit.low:.2f}, {fit.high:.2f}])"
        state = set_concentration(ctx, state, fit.concentration)
    return ctx, next_pilot_round(state), action


def grow_grid(ctx: Context, state: RunState) -> tuple[Context, RunState, str]:
    """The whole grid is not diverse enough: ask the generator for new topics, start again at c = 1."""
    plan, s = ctx.plan, state.steering
    added = growth.grow_topics(plan, ctx.backend, ctx.out, rng=stream(plan.recipe.seed, "growth", s.round))
    merged = growth.merge_added(s.added_topics, added)
    growth.write_added(ctx.out, merged)
    plan = growth.with_added_topics(plan, merged)
    ctx.pipe.plan = plan
    ctx = dataclasses.replace(ctx, plan=plan, orders=knobs.axis_orders(plan.grid, plan.recipe.seed))
    last = s.history[-1]
    state = dataclasses.replace(state, steering=dataclasses.replace(
        s, added_topics=merged, history=(*s.history[:-1], dataclasses.replace(last, kind="grow"))))
    return ctx, set_concentration(ctx, state, 1.0), f"grid growth: +{sum(len(v) for v in added.values())} topics"


def settle(ctx: Context, state: RunState, why: str, limited: bool = False) -> tuple[Context, RunState, str]:
    """Leave the pilot phase without a pilot that met the target (and the bound): continue at
    the best pilot under the bound (its documents kept when it is the current one), or stop
    when none is under it."""
    t, pilots = ctx.target, state.steering.rounds("pilot")
    best, binding = shift_bound.settle_pilots(pilots, t.score, t.tolerance, t.max_shift, limited)
    if best is None:
        return ctx, stop_tradeoff(ctx, state), "stop"
    state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, binding=binding))
    b = pilots[best]
    action = f"{why}; continue at the closest{' under max_shift' if t.max_shift else ''}, c={b.concentration:.3f} " \
             f"(D={b.score:.2f}){f'; {binding} binds' if binding and t.max_shift else ''}"
    if best == len(pilots) - 1:
        return ctx, with_phase(accept_pilot(ctx.out, state), "main"), action
    return ctx, set_concentration(ctx, next_pilot_round(state), b.concentration, phase="main"), action


def stop_out_of_reach(ctx: Context, state: RunState, points: list, score: float) -> RunState:
    t = ctx.target
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    side = "above" if score < t.score else "below"
    return dataclasses.replace(with_phase(state, "done"), stopped=(
        f"target {t.score} is {side} what this grid reaches with judge {ctx.judge.name} "
        f"(measured {lo:.2f}..{hi:.2f}); best reachable score {hi if side == 'above' else lo:.2f}"))


def stop_tradeoff(ctx: Context, state: RunState) -> RunState:
    """No pilot is under the shift bound: stop, naming the best trade-off and what binds."""
    binding, message = shift_bound.stop_message(state.steering.rounds("pilot"), ctx.target)
    state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, binding=binding))
    return dataclasses.replace(with_phase(state, "done"), stopped=message)


def main_round(ctx: Context, state: RunState) -> RunState:
    """Generate the next share of the corpus; measure it while generation goes on under the
    same weights for `lookahead` more samples; correct c and weights from the sample after."""
    t, num_docs = ctx.target, ctx.plan.recipe.size.num_docs
    if not state.steering.measure_at:
        state = generate_round(ctx, state)
        if state.stopped:
            return state
    s = state.steering
    measured_at, this_round, round_c = s.measure_at, s.round, s.concentration
    ctx.pipe.frozen_at = measured_at + s.lookahead if state.counters.num_docs < num_docs else measured_at
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(measure_round, ctx, this_round, measured_at)
        state = ctx.pipe.advance(state, s.round_end_docs, submit_docs=num_docs, beside=future.done)
        report, attribution, shift, fidelity, docs = future.result()
    state = add_judge_cost(state, report)
    action = "keep"
    state, drift_action = drift.respond(state, fidelity, t.min_fidelity, ctx.plan.grid, ctx.orders)  # warn, reweight, stop
    if abs(report.score - t.score) > t.tolerance / 2 and docs < num_docs and not state.stopped:
        state, action = correct(ctx, state, report, attribution)
    if over_bound(ctx, shift) and docs < num_docs:
        state = reweight_for_shift(ctx, state, shift, share_left=1 - docs / num_docs)
        action += (f"; MMD² {shift.mmd2:.4f} ± {shift.se:.4f} over max_shift: c → {state.steering.concentration:.3f}, "
                   "weight moved away from far values")
    if docs < num_docs and state.steering.weights != s.weights:
        state = ctx.pipe.set_epoch(state, measured_at + s.lookahead, state.steering.weights)
    ctx.pipe.frozen_at = None  # unchanged weights: the samples already out stay valid
    s = state.steering
    state = dataclasses.replace(state, steering=dataclasses.replace(
        s, history=(*s.history, Round(round_c, report.score, "main", shift.mmd2 if shift else None, report.half_width,
                                      shift.se if shift else 0.0)),
        round=s.round + 1, measure_at=0))
    kept = {"fidelity": fidelity.topic_share, "fidelity_action": drift_action} if fidelity is not None else {}
    log_round(ctx.out, this_round, state, report, t, action, phase="main", concentration=round_c, docs=docs,
              extra={**shift_bound.shift_fields(shift, ctx.target, ctx.reference), **kept})
    save_state(ctx.out, state)
    return state


def generate_round(ctx: Context, state: RunState) -> RunState:
    """Generate up to this round's end; record where it ended and where the next round ends."""
    num_docs, c, s = ctx.plan.recipe.size.num_docs, state.counters, state.steering
    if not s.epochs or s.epochs[-1].weights != s.weights:  # the first main round, or c set after the pilots
        state = ctx.pipe.set_epoch(state, c.next_index, s.weights)
    end = s.round_end_docs if s.round_end_docs >= c.num_docs and s.round_end_docs else \
        knobs.round_end(c.num_docs, num_docs, ctx.target.num_rounds - len(s.rounds("main")))
    state = dataclasses.replace(state, steering=dataclasses.replace(state.steering, round_end_docs=end))
    state = ctx.pipe.advance(state, end, submit_docs=min(num_docs, end + s.lookahead))  # no more than the lookahead
    if state.stopped:
        return state
    c, s = state.counters, state.steering
    after = knobs.round_end(c.num_docs, num_docs, ctx.target.num_rounds - len(s.rounds("main")) - 1)
    state = dataclasses.replace(state, steering=dataclasses.replace(s, measure_at=c.next_index, round_end_docs=after))
    save_state(ctx.out, state)
    return state


def measure_round(ctx: Context, round_no: int, below: int):
    """Score the corpus's samples below index `below` (runs beside generation)."""
    seed = ctx.plan.recipe.seed
    texts, metadata = read_corpus(ctx.out, below, rng=stream(seed, "main", round_no, 1))  # a sample above MEASURE_ROWS
    report, attribution = measure(texts, ctx.judge, ctx.target, stream(seed, "main", round_no), metadata=metadata)
    shift = round_shift(ctx, ctx.out, round_no, below)
    fidelity = round_fidelity(ctx.plan, ctx.judge, texts, metadata)
    return report, attribution, shift, fidelity, count_documents(ctx.out, below)


def correct(ctx: Context, state: RunState, report, attribution) -> tuple[RunState, str]:
    """Move c against the whole-corpus error along the pure pilot measurements, then reweight cells."""
    t, s = ctx.target, state.steering
    pilots = [(h.concentration, h.score) for h in s.rounds("pilot")]  # pure, not mixtures
    c = knobs.correct_concentration(pilots, s.concentration, report.score, t.score)
    c = shift_bound.clamp_concentration(c, s.rounds("pilot"), t.max_shift if ctx.reference else None)
    weights = knobs.apply_factors(knobs.concentration_weights(ctx.orders, c), s.shift_factors)
    if t.reweight_rate > 0 and attribution:
        weights = knobs.update_weights(weights, attribution, rate=t.reweight_rate,
                                       direction=1 if report.score < t.score else -1)
    state = dataclasses.replace(state, steering=dataclasses.replace(s, concentration=c, weights=weights))
    return state, f"correct c {s.concentration:.3f} → {c:.3f}, reweight cells"


def finish(ctx: Context, state: RunState) -> tuple[RunState, dict]:
    """Re-measure the finished corpus (fresh batches), confirm it with an LLM target judge; write weights, plots."""
    from generator.run.plots import plot_shift, plot_trajectory, plot_weights

    t, s, seed = ctx.target, state.steering, ctx.plan.recipe.seed
    extra: dict = {"target": {"score": t.score, "tolerance": t.tolerance, "judge": ctx.judge.name, "k": t.k}}
    if not state.stopped and state.counters.num_docs:
        texts, metadata = read_corpus(ctx.out, rng=stream(seed, "final", 1))  # a sample above MEASURE_ROWS
        report, _ = measure(texts, ctx.judge, t, stream(seed, "final"))
        extra["fidelity"] = final_fidelity(ctx.plan, ctx.judge, texts, metadata)
        state = add_judge_cost(state, report)
        s = state.steering
        extra["achieved"] = {"score": report.score, "ci_low": report.ci_low, "ci_high": report.ci_high,
                             "half_width": report.half_width, "num_batches": report.num_scored,
                             "within_tolerance": abs(report.score - t.score) <= t.tolerance, "draw_sd": corpus_draw_sd(
                                 s.rounds("pilot"), pilot_size(ctx.plan.recipe), state.counters.num_docs)}
        if ctx.reference is not None:
            extra["achieved"].update(shift_bound.relative_fields(report, round_shift(ctx, ctx.out, s.round),
                                                                 ctx.reference.score, t.max_shift))
        if ctx.llm is not None:
            extra["confirmation"] = calibration.confirm_corpus(ctx.out, texts, ctx.llm, ctx.judge, report, ctx.llm_target,
                                                               rng=stream(seed, "confirm"))
    if ctx.reference is not None:
        extra["target"].update({"relative": t.relative, "max_shift": t.max_shift})
        extra["reference"] = ctx.reference.summary()
        extra["binding"] = shift_bound.final_binding(s.binding, t.max_shift, extra.get("achieved"))
    if ctx.calibration is not None:
        extra["target"].update({"score": ctx.llm_target.score, "judge": ctx.llm.name, "embedding_score": t.score})
        extra["calibration"] = {k: v for k, v in ctx.calibration.items() if k != "curve"}
    c = state.counters
    corpus_tokens = max(1, c.prompt_tokens + c.completion_tokens - s.discarded_pilot_tokens)
    judge_tokens = s.judge_tokens + sum((extra.get(k) or {}).get("tokens", 0) for k in ("calibration", "confirmation"))
    extra["rounds"] = {"pilot": len(s.history) - len(s.rounds("main")), "main": len(s.rounds("main"))}
    extra["cost"] = {"pilot_docs": s.pilot_docs, "discarded_pilot_docs": s.discarded_pilot_docs,
                     "pilot_tokens": s.pilot_tokens, "discarded_pilot_tokens": s.discarded_pilot_tokens,
                     "judge_calls": s.judge_calls, "judge_tokens": judge_tokens, "corpus_tokens": corpus_tokens,
                     "judge_ratio": judge_tokens / corpus_tokens,
                     "calibration_ratio": (s.discarded_pilot_tokens + judge_tokens) / corpus_tokens}
    extra["final_concentration"] = s.concentration
    write_yaml(ctx.out / "weights.yaml", weights_file(s.weights))
    plot_trajectory(ctx.out / "controller.jsonl", ctx.out / "plots" / "score_trajectory.png")
    plot_weights(s.weights, ctx.out / "plots" / "weights.png")
    plot_shift(ctx.out / "controller.jsonl", ctx.out / "plots" / "shift_trajectory.png")
    return (state if state.stopped else with_phase(state, "done")), extra
