"""Hard call budgets: `max_calls` caps criteria, summaries, clustering, verification and retries."""
from __future__ import annotations

import json

import numpy as np
import pytest

from generator import cli
from generator.judges.cluster_agent import ClusterAgentJudge, generate_criteria
from generator.judges.protocol import ScoreError, score_corpus
from generator.judges.calls import CallBudget, Job, ask_all
from fakes import JUDGE_CRITERIA, ScriptedJudgeBackend, fake_judge_model, valid_verdicts

TEXTS = [f"text {i}" for i in range(40)]


def two_clusters(request) -> str:
    return json.dumps({"clusters": [{"members": [1, 2]}, {"members": list(range(3, 11))}]})


def fails_first_try(answer):
    """Every first try is garbage; the retry gets `answer`: a batch costs 4 calls."""
    return lambda request: "garbage" if request.id.endswith("try0") else answer(request)


def test_regression_max_calls_30_spent_60_when_each_batch_cost_4():
    """Bug: the budget was checked against an average of 2 calls per batch and after each
    chunk, so --max-calls 30 spent 60 calls when every batch needed its retries."""
    backend = ScriptedJudgeBackend(cluster=fails_first_try(two_clusters), verify=fails_first_try(valid_verdicts))
    report = score_corpus(TEXTS, ClusterAgentJudge(backend, JUDGE_CRITERIA), k=10, rng=np.random.default_rng(0),
                          max_calls=30, num_batches=200)
    assert backend.num_requests <= 30 and report.calls == backend.num_requests
    assert report.stop_reason == "max_calls" and report.num_scored >= 6  # the budget is used, not wasted
    assert all(b.calls == 4 for b in report.batches)


def test_max_calls_holds_with_a_precision_target():
    backend = ScriptedJudgeBackend(cluster=fails_first_try(two_clusters), verify=valid_verdicts)
    report = score_corpus(TEXTS, ClusterAgentJudge(backend, JUDGE_CRITERIA), k=10, rng=np.random.default_rng(1),
                          max_calls=101, precision=0.01, num_batches=5000, min_batches=10)
    assert backend.num_requests <= 101 and report.stop_reason == "max_calls"


def test_the_judge_itself_refuses_calls_past_its_budget():
    backend = ScriptedJudgeBackend(cluster=two_clusters)
    judge = ClusterAgentJudge(backend, JUDGE_CRITERIA, budget=CallBudget(5))
    results = judge.cluster([[f"d{i}" for i in range(10)] for _ in range(4)])
    assert backend.num_requests == 5  # 4 clusterings, 1 of 4 verifications
    assert [r.failure for r in results] == [None, "budget", "budget", "budget"]


def test_ask_all_counts_refused_jobs_as_budget_failures():
    backend = ScriptedJudgeBackend(criteria=lambda r: "not json")
    budget = CallBudget(3)
    replies = ask_all(backend, [Job(f"p{i}", {}, lambda d: d) for i in range(2)], stage="criteria",
                      max_tokens=10, temperature=0.0, seed=0, budget=budget)
    assert budget.spent == 3 == backend.num_requests  # two first tries, one retry
    assert [r.failure for r in replies] == ["json", "budget"]


def test_criteria_stay_within_their_share_of_the_budget():
    backend = ScriptedJudgeBackend()
    budget = CallBudget(100)
    criteria = generate_criteria(backend, TEXTS, rng=np.random.default_rng(0), budget=budget, k=10)
    assert backend.num_requests == budget.spent <= 25  # 19 rounds + 3 summaries, 6 reserved for retries
    assert criteria.num_rounds == 25 - 6 and criteria.k == 10


def test_a_budget_too_small_for_criteria_is_a_clear_error():
    with pytest.raises(ScoreError, match="a call budget of 20 cannot write criteria"):
        generate_criteria(ScriptedJudgeBackend(), TEXTS, rng=np.random.default_rng(0), budget=CallBudget(20))


def parse(argv):
    return cli.build_parser().parse_args(["score", *(str(a) for a in argv)])


def test_generator_score_max_calls_caps_criteria_and_scoring_together(tmp_path, monkeypatch):
    backend = ScriptedJudgeBackend(cluster=fails_first_try(two_clusters), verify=fails_first_try(valid_verdicts))
    fake_judge_model(monkeypatch)
    monkeypatch.setattr("generator.backends.open_backend", lambda kind, model, **o: backend)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "r.json"
    args = parse([corpus, "--judge", "llm", "--judge-model", "m", "--max-calls", 60, "--json", out,
                  "--no-proxies"])
    assert cli.cmd_score(args) == 0
    report = json.loads(out.read_text())
    assert backend.num_requests <= 60 and report["calls_total"] == backend.num_requests
    assert report["criteria"]["cost"]["calls"] + report["calls"] == backend.num_requests
