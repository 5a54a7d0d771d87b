"""The end of a steered run: the finished corpus re-measured on fresh batches (and confirmed by
an LLM target judge), its cost, weights.yaml and the plots."""
from __future__ import annotations

from generator.files import write_yaml
from generator.recipe import pilot_size
from generator.run import calibration, shift_bound
from generator.run.context import Context
from generator.run.rounds import (add_judge_cost, corpus_draw_sd, final_fidelity, measure, read_corpus,
                                  weights_file)
from generator.run.state import RunState, with_phase


def finish(ctx: Context, state: RunState) -> tuple[RunState, dict]:
    """Re-measure the finished corpus (fresh batches), confirm it with an LLM target judge; write
    weights.yaml and the plots."""
    from generator.run.plots import plot_shift, plot_trajectory, plot_weights

    t = ctx.target
    extra: dict = {"target": {"score": t.score, "tolerance": t.tolerance, "judge": ctx.judge.name, "k": t.k}}
    if not state.stopped and state.counters.num_docs:
        state = measure_finished(ctx, state, extra)
    s = state.steering
    if ctx.reference is not None:
        extra["target"].update({"relative": t.relative, "max_shift": t.max_shift})
        extra["reference"] = ctx.reference.summary()
        extra["binding"] = shift_bound.final_binding(s.binding, t.max_shift, extra.get("achieved"))
    if ctx.calibration is not None:
        extra["target"].update(score=ctx.llm_target.score, judge=ctx.llm.name, embedding_score=t.score)
        extra["calibration"] = {k: v for k, v in ctx.calibration.items() if k != "curve"}
    pilots = [h for h in s.history if h.kind != "main"]  # sweep points, those before a growth included
    extra["rounds"] = {"pilot": len({h.sweep for h in pilots}), "pilot_points": len(pilots),
                       "main": len(s.rounds("main"))}
    extra["cost"] = cost(state, extra)
    extra["final_concentration"] = s.concentration
    write_yaml(ctx.out / "weights.yaml", weights_file(s.weights))
    plot_trajectory(ctx.out / "controller.jsonl", ctx.out / "plots" / "score_trajectory.png")
    plot_weights(s.weights, ctx.out / "plots" / "weights.png")
    plot_shift(ctx.out / "controller.jsonl", ctx.out / "plots" / "shift_trajectory.png")
    return (state if state.stopped else with_phase(state, "done")), extra


def measure_finished(ctx: Context, state: RunState, extra: dict) -> RunState:
    """summary.json's `achieved` and `fidelity` (and `confirmation` with an LLM judge), into `extra`."""
    t = ctx.target
    texts, metadata = read_corpus(ctx.out, rng=ctx.rng("final", 1))  # a sample above MEASURE_ROWS
    with_values = metadata if ctx.reference is not None else None  # what each value adds, against it
    report, attribution = measure(texts, ctx.judge, t, ctx.rng("final"), metadata=with_values)
    extra["fidelity"] = final_fidelity(ctx.plan, ctx.judge, texts, metadata)
    state = add_judge_cost(state, report)
    s = state.steering
    draw = corpus_draw_sd(s.rounds("pilot"), pilot_size(ctx.plan.recipe), state.counters.num_docs)
    extra["achieved"] = {"score": report.score, "ci_low": report.ci_low, "ci_high": report.ci_high,
                         "half_width": report.half_width, "num_batches": report.num_scored,
                         "within_tolerance": abs(report.score - t.score) <= t.tolerance, "draw_sd": draw}
    if ctx.reference is not None:
        shift = ctx.shift_of(ctx.out, s.round)
        extra["achieved"].update(shift_bound.relative_fields(report, shift, ctx.reference.score, t.max_shift))
        extra["by_value"] = shift_bound.value_effects(attribution, shift)
    if ctx.llm is not None:
        extra["confirmation"] = calibration.confirm_corpus(ctx.out, texts, ctx.llm, ctx.judge, report,
                                                           ctx.llm_target, rng=ctx.rng("confirm"))
    return state


def cost(state: RunState, extra: dict) -> dict:
    """summary.json's `cost`: pilot documents and tokens (those not kept), judge calls and tokens,
    and their ratios to the corpus's tokens."""
    c, s = state.counters, state.steering
    corpus_tokens = max(1, c.prompt_tokens + c.completion_tokens - s.discarded_pilot_tokens)
    llm_tokens = sum((extra.get(k) or {}).get("tokens", 0) for k in ("calibration", "confirmation"))
    judge_tokens = s.judge_tokens + llm_tokens
    return {"pilot_docs": s.pilot_docs, "discarded_pilot_docs": s.discarded_pilot_docs,
            "pilot_tokens": s.pilot_tokens, "discarded_pilot_tokens": s.discarded_pilot_tokens,
            "judge_calls": s.judge_calls, "judge_tokens": judge_tokens, "corpus_tokens": corpus_tokens,
            "judge_ratio": judge_tokens / corpus_tokens,
            "calibration_ratio": (s.discarded_pilot_tokens + judge_tokens) / corpus_tokens}
