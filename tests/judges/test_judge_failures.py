"""Failures by kind, retries of cut answers with a larger budget, the failed-batch range of D,
and the refusal of a score when too many batches failed."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from generator.judges.cluster_agent import ClusterAgentJudge
from generator.judges.protocol import RefusedScoreError, score_corpus
from generator.records import Result
from fakes import JUDGE_CRITERIA, ScriptedJudgeBackend, valid_verdicts

TEXTS = [f"text {i}" for i in range(40)]
SINGLETONS = json.dumps({"clusters": [{"members": [i]} for i in range(1, 11)]})


def cut(request, text='{"clusters": [{"members": [1, 2]}, {"mem'):
    return Result(id=request.id, text=text, finish_reason="length", num_prompt_tokens=100,
                  num_tokens=request.max_tokens)


def test_a_cut_answer_is_retried_with_twice_the_tokens():
    backend = ScriptedJudgeBackend(cluster=lambda r: cut(r) if r.max_tokens < 4000 else SINGLETONS)
    [result] = ClusterAgentJudge(backend, JUDGE_CRITERIA).cluster([[f"d{i}" for i in range(10)]])
    assert not result.failed and len(result.clusters) == 10
    assert [r.max_tokens for call in backend.generate_calls for r in call] == [3072, 6144]


def test_a_cut_answer_that_still_parses_is_not_scored():
    """An answer cut at its budget is incomplete even when its prefix is valid JSON."""
    backend = ScriptedJudgeBackend(cluster=lambda r: cut(r, SINGLETONS))
    [result] = ClusterAgentJudge(backend, JUDGE_CRITERIA).cluster([[f"d{i}" for i in range(10)]])
    assert result.failed and result.failure == "length" and result.calls == 2


@pytest.mark.parametrize("answer, kind", [
    (cut, "length"),
    (lambda r: "I'd rather not.", "json"),
    (lambda r: '{"groups": []}', "schema"),
    (lambda r: Result(id=r.id, text="", finish_reason="error", error="engine died"), "engine"),
])
def test_each_failure_has_its_kind(answer, kind):
    backend = ScriptedJudgeBackend(cluster=answer)
    [result] = ClusterAgentJudge(backend, JUDGE_CRITERIA).cluster([[f"d{i}" for i in range(10)]])
    assert result.failed and result.failure == kind


def scripted_failures(every: int):
    """Batch n (by its prompt) fails with kind json when n % every == 0, else scores 10."""
    def answer(request):
        first = int(re.search(r"<document 1>\ntext (\d+)", request.prompt).group(1))
        return "nope" if first % every == 0 else SINGLETONS
    return answer


def test_report_gives_failures_by_kind_share_and_range():
    backend = ScriptedJudgeBackend(cluster=scripted_failures(7))
    report = score_corpus(TEXTS, ClusterAgentJudge(backend, JUDGE_CRITERIA), k=10, rng=np.random.default_rng(0),
                          num_batches=50, max_failure_share=0.5)
    failed = report.num_failed
    assert failed > 0 and report.failures == {"json": failed}
    assert report.failure_share == pytest.approx(failed / 50)
    assert report.score == pytest.approx(10.0)
    assert report.score_failed_low == pytest.approx(((50 - failed) * 10 + failed * 0.1) / 50)
    assert report.score_failed_high == pytest.approx(10.0)


def test_past_the_failure_share_the_score_is_refused():
    backend = ScriptedJudgeBackend(cluster=scripted_failures(2))
    with pytest.raises(RefusedScoreError, match=r"failed on \d+ of 40 batches \(\d+% > 20%: json \d+\); "
                                                r"D is refused: it could lie anywhere in \[\d"):
        score_corpus(TEXTS, ClusterAgentJudge(backend, JUDGE_CRITERIA), k=10, rng=np.random.default_rng(0),
                     num_batches=40)


def test_verification_failures_are_counted_too():
    pairs = json.dumps({"clusters": [{"members": [1, 2]}] + [{"members": [i]} for i in range(3, 11)]})
    backend = ScriptedJudgeBackend(cluster=lambda r: pairs, verify=lambda r: '{"1": {"valid": "maybe"}}')
    report_args = dict(k=10, rng=np.random.default_rng(0), num_batches=10, max_failure_share=1.0)
    with pytest.raises(Exception, match="failed on all 10"):
        score_corpus(TEXTS, ClusterAgentJudge(backend, JUDGE_CRITERIA), **report_args)
    backend.verify = valid_verdicts
    report = score_corpus(TEXTS, ClusterAgentJudge(backend, JUDGE_CRITERIA), **report_args)
    assert report.failures == {} and report.score == pytest.approx(81 / 10)
