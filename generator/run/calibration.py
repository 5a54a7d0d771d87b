"""The LLM judge in a steered run: it is asked three times, never every round.

With `target.judge: llm` the controller calibrates the embedding judge to the LLM judge once,
on the first pilot round's documents (batches judged by both), steers every round with the
calibrated embedding judge, re-measures the ruler offset once where the pilots end, and
confirms the finished corpus once with the LLM judge (paired batches,
`judges.calibrate.confirm_score`). Each use judges at most `target.llm_batches` batches, and
fewer when `target.llm_share` of the corpus's tokens (estimated from the first pilot at
CHARS_PER_TOKEN characters a token) buys fewer. The results live in the run folder, so a
resumed run repeats none:

    OUT/calibration.json    the fitted threshold, the agreement curve, the ruler offsets, their cost
    OUT/confirmation.json   the LLM judge's D of the finished corpus with its interval, its cost

The calibrated embedding judge agrees with the LLM judge on which documents go together; its
scale may still differ (an LLM that splits documents the embeddings would group scores higher).
The difference of the two D on batches both judged is the ruler offset: first on the
calibration batches (c = 1), then once more, on paired batches of the last pilot round, where
the pilots ended near the target; the controller steers the embedding judge to the target minus
the offset, and the confirmation measures the LLM judge's D of the result directly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from generator.files import write_json

log = logging.getLogger(__name__)
CALIBRATION_FILE = "calibration.json"
CONFIRMATION_FILE = "confirmation.json"
USES = 3  # the LLM judge is asked at calibration, where the pilots end, and on the finished corpus
MIN_LLM_BATCHES = 8  # fewer paired batches do not give a mean difference worth steering by
CHARS_PER_TOKEN = 4  # to estimate the corpus's tokens from the first pilot's text
PROMPT_TOKENS = 1500  # a clustering prompt without documents (criteria included), before one is measured
# A batch is priced at the dearer of this guess (clustering and verification each showing the K
# documents) and the dearest batch measured so far: batches near the target's D, with more
# multi-document clusters to verify, cost more than the calibration's at c = 1.


def llm_batch_count(target, corpus_tokens: float, spent_tokens: float, per_batch: float,
                    uses_left: int) -> int:
    """Batches the LLM judge may judge now: `target.llm_batches`, fewer when `target.llm_share`
    of the corpus's (estimated) tokens, less what is spent, shared over the uses left, buys
    fewer; never below MIN_LLM_BATCHES (the share is then exceeded, and the run says so)."""
    if not target.llm_share:
        return target.llm_batches
    room = target.llm_share * corpus_tokens - spent_tokens
    n = int(room // max(per_batch * uses_left, 1.0))
    if n < MIN_LLM_BATCHES:
        log.warning("llm_share %.1f%% of about %.0f corpus tokens buys %d LLM batches now "
                    "(%.0f tokens each); "
                    "judging %d, over the share", 100 * target.llm_share, corpus_tokens, max(n, 0), per_batch,
                    MIN_LLM_BATCHES)
    return max(MIN_LLM_BATCHES, min(target.llm_batches, n))


def doc_tokens_estimate(texts: Sequence[str]) -> float:
    return float(np.mean([len(t) for t in texts])) / CHARS_PER_TOKEN if texts else 0.0


def tokens_per_batch(result) -> float:
    """LLM tokens one judged batch cost in a calibration or confirmation (failed batches included)."""
    return (result.prompt_tokens + result.completion_tokens) / max(result.num_batches + result.num_failed, 1)


def read_record(out: Path, name: str) -> dict | None:
    path = out / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def calibrate_judge(out: Path, texts: Sequence[str], llm_judge, target, rng: np.random.Generator,
                    embed: Callable | None = None, num_docs: int = 0) -> dict:
    """Fit the embedding threshold to `llm_judge` on `texts` (once: read back when stored).
    The record adds the ruler offset (LLM D − embedding D on the same batches), the LLM
    tokens spent (criteria included when this call wrote them), the tokens one batch cost and
    the corpus's estimated tokens (`num_docs` documents like `texts`) that later uses size by."""
    stored = read_record(out, CALIBRATION_FILE)
    if stored is not None:
        return stored
    from generator.judges.calibrate import calibrate_threshold

    had_criteria = getattr(llm_judge, "criteria", None) is not None
    doc_tokens = doc_tokens_estimate(texts)
    corpus = (num_docs or len(texts)) * doc_tokens
    guess = 2 * (target.k * doc_tokens + PROMPT_TOKENS)  # clustering + verification
    calibration = calibrate_threshold(texts, llm_judge, k=target.k, rng=rng, embed=embed,
                                      num_batches=llm_batch_count(target, corpus, 0, guess, USES))
    criteria = getattr(llm_judge, "criteria", None)
    criteria_cost = dict(criteria.cost) if criteria is not None and not had_criteria else {}
    record = {**calibration.to_dict(), "offset": calibration.llm_score - calibration.embed_score,
              "num_docs": len(texts), "criteria_cost": criteria_cost, "corpus_tokens_estimate": corpus,
              "tokens_per_batch": max(guess, tokens_per_batch(calibration)),
              "tokens": calibration.prompt_tokens + calibration.completion_tokens
              + criteria_cost.get("prompt_tokens", 0) + criteria_cost.get("completion_tokens", 0)}
    write_json(out / CALIBRATION_FILE, record)
    log.info("calibrated the embedding judge to %s: threshold %.2f (ARI %.3f), offset %+.3f, %d tokens",
             calibration.llm_judge, calibration.threshold, calibration.agreement, record["offset"],
             record["tokens"])
    return record


def measure_offset(out: Path, texts: Sequence[str], llm_judge, embed_judge, embed_report, llm_target, *,
                   rng: np.random.Generator) -> dict:
    """Re-measure the ruler offset where the pilots ended (documents near the target's c), from
    batches both judges score: the offset at c = 1 need not hold at the target's level (an LLM
    that splits documents off moves a low score more than a saturated one). Once: stored in
    the calibration record."""
    record = read_record(out, CALIBRATION_FILE)
    if "offset_at_target" in record:
        return record
    c = paired(texts, llm_judge, embed_judge, embed_report, llm_target, rng, record, uses_left=2)
    record.update(offset_at_c1=record["offset"], offset=c.mean_difference, offset_batches=c.num_batches,
                  offset_at_target=dataclasses.asdict(c),
                  tokens=record["tokens"] + c.prompt_tokens + c.completion_tokens,
                  tokens_per_batch=max(record.get("tokens_per_batch", 0.0), tokens_per_batch(c)),
                  calls=record["calls"] + c.calls)
    write_json(out / CALIBRATION_FILE, record)
    log.info("ruler offset where the pilots ended: %+.3f ± %.3f (at c = 1: %+.3f)", c.mean_difference,
             c.difference_half_width, record["offset_at_c1"])
    return record


def embedding_target(plan, llm_target, record: dict):
    """The plan whose target is on the calibrated embedding judge's scale: the LLM target
    minus the ruler offset, kept inside [1/K, K]."""
    t = plan.recipe.target
    score = float(min(max(llm_target.score - record["offset"], 1 / t.k), t.k))
    return dataclasses.replace(
        plan, recipe=dataclasses.replace(plan.recipe, target=dataclasses.replace(t, score=score)))


def confirm_corpus(out: Path, texts: Sequence[str], llm_judge, embed_judge, embed_report, llm_target, *,
                   rng: np.random.Generator) -> dict:
    """The LLM judge's D of the finished corpus (once: read back when stored), paired with the
    embedding judge's final measurement; `within_tolerance` compares it with the LLM target,
    and a miss is logged as a warning."""
    stored = read_record(out, CONFIRMATION_FILE)
    if stored is not None:
        return stored
    t = llm_target
    c = paired(texts, llm_judge, embed_judge, embed_report, t, rng, read_record(out, CALIBRATION_FILE),
               uses_left=1)
    record = {**dataclasses.asdict(c), "target": t.score, "tolerance": t.tolerance,
              "tokens": c.prompt_tokens + c.completion_tokens,
              "within_tolerance": abs(c.score - t.score) <= t.tolerance,
              "interval_within_tolerance": (t.score - t.tolerance <= c.ci_low
                                            and c.ci_high <= t.score + t.tolerance)}
    write_json(out / CONFIRMATION_FILE, record)
    if not record["within_tolerance"]:
        log.warning("the LLM judge does not confirm the target: D = %.3f [%.3f, %.3f] against %.3f ± %.3f "
                    "(the calibrated embedding judge measured %.3f)", c.score, c.ci_low, c.ci_high, t.score,
                    t.tolerance, embed_report.score)
    return record


def paired(texts, llm_judge, embed_judge, embed_report, t, rng, calibration_record: dict | None, *,
           uses_left: int):
    """`confirm_score` on at most the batches the LLM share leaves for this use."""
    from generator.judges.calibrate import confirm_score

    r = calibration_record or {}
    most = (llm_batch_count(t, r.get("corpus_tokens_estimate", 0.0), r.get("tokens", 0),
                            r.get("tokens_per_batch", 0.0), uses_left)
            if "tokens_per_batch" in r else t.llm_batches)
    return confirm_score(texts, llm_judge, embed_judge, embed_report.score, embed_report.half_width, k=t.k,
                         rng=rng, precision=t.precision or t.tolerance / 3, max_batches=most,
                         min_batches=min(20, most))
