"""The audit trail, recomputing D under another invalid-cluster policy with no call, the
persistent call cache, and criteria that refuse another judge or K."""
from __future__ import annotations

import json

import numpy as np
import pytest

from generator import cli
from generator.judges.cluster_agent import ClusterAgentConfig, ClusterAgentJudge, load_criteria
from generator.judges.protocol import score_corpus
from generator.errors import UserError
from generator.judges.audit import AuditLog, read_audit, recompute
from generator.judges.cache import CachedBackend
from fakes import JUDGE_CRITERIA, ScriptedJudgeBackend, fake_judge_model

TEXTS = [f"text {i}" for i in range(40)]
PAIR = json.dumps({"clusters": [{"members": [1, 2], "reason": "alike"}] + [{"members": [i]} for i in range(3, 11)]})


def rejecting(request) -> str:
    return json.dumps({"1": {"reason": "not alike", "valid": False}})


def audited_run(path, policy="split", num_batches=20):
    backend = ScriptedJudgeBackend(cluster=lambda r: PAIR, verify=rejecting)
    with AuditLog(path) as audit:
        judge = ClusterAgentJudge(backend, JUDGE_CRITERIA, ClusterAgentConfig(invalid_policy=policy), audit=audit)
        report = score_corpus(TEXTS, judge, k=10, rng=np.random.default_rng(0), num_batches=num_batches,
                              audit=audit)
    return backend, report


def test_every_call_and_batch_is_in_the_audit(tmp_path):
    backend, report = audited_run(tmp_path / "audit.jsonl")
    records = read_audit(tmp_path / "audit.jsonl")
    calls = [r for r in records if r["type"] == "call"]
    batches = [r for r in records if r["type"] == "batch"]
    assert len(calls) == backend.num_requests == report.calls == 40
    assert {c["stage"] for c in calls} == {"cluster", "verify"}
    assert all(len(c["prompt_sha256"]) == 64 and c["answer"] and c["completion_tokens"] == 20 for c in calls)
    assert calls[0]["parsed"][0] == [[1, 2], "alike"]  # the parsed clusters, as the judge numbered them
    assert len(batches) == 20 and batches[0]["verdicts"] == [[0, False]]
    assert batches[0]["proposal"][0] == [0, 1] and len(batches[0]["clusters"]) == 10


@pytest.mark.parametrize("policy, expected", [("split", 10.0), ("keep", 81 / 10), ("drop", 8**2 / 8)])
def test_recompute_rebuilds_d_under_each_policy_with_no_call(tmp_path, policy, expected):
    _, report = audited_run(tmp_path / "audit.jsonl")
    assert report.score == pytest.approx(10.0)
    result = recompute(tmp_path / "audit.jsonl", policy)
    assert result["score"] == pytest.approx(expected) and result["calls"] == 0 and result["num_scored"] == 20


def test_recompute_matches_a_run_made_under_that_policy(tmp_path):
    _, kept = audited_run(tmp_path / "keep.jsonl", policy="keep")
    assert recompute(tmp_path / "keep.jsonl", "keep")["score"] == pytest.approx(kept.score)
    with pytest.raises(UserError, match="invalid policy 'merge' is not allowed"):
        recompute(tmp_path / "keep.jsonl", "merge")
    with pytest.raises(UserError, match="audit file not found"):
        recompute(tmp_path / "missing.jsonl", "split")


def parse(argv):
    return cli.build_parser().parse_args(["score", *(str(a) for a in argv)])


def write_corpus(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return corpus


def test_generator_score_writes_the_audit_beside_the_report_and_recomputes(tmp_path, monkeypatch, capsys):
    backend = ScriptedJudgeBackend(cluster=lambda r: PAIR, verify=rejecting)
    fake_judge_model(monkeypatch)
    monkeypatch.setattr("generator.backends.open_backend", lambda kind, model, **o: backend)
    corpus, out = write_corpus(tmp_path), tmp_path / "r.json"
    assert cli.cmd_score(parse([corpus, "--judge", "llm", "--judge-model", "m", "--num-batches", 20,
                                    "--json", out, "--no-proxies"])) == 0
    audit = tmp_path / "r.audit.jsonl"
    records = read_audit(audit)
    assert records[0]["type"] == "call" and records[0]["stage"] == "criteria"  # criteria calls are audited too
    assert any(r["type"] == "run" and r["invalid_policy"] == "split" for r in records)
    calls_before = backend.num_requests
    assert cli.cmd_score(parse([corpus, "--recompute", audit, "--invalid-policy", "keep",
                                    "--json", tmp_path / "keep.json"])) == 0
    assert backend.num_requests == calls_before
    assert json.loads((tmp_path / "keep.json").read_text())["score"] == pytest.approx(8.1)
    assert "under invalid policy keep (0 calls)" in capsys.readouterr().out


def test_a_rerun_through_the_cache_makes_no_call_and_gives_the_same_d(tmp_path, monkeypatch):
    backends = []

    def open_backend(kind, model, **options):
        backends.append(ScriptedJudgeBackend(cluster=lambda r: PAIR, verify=rejecting, model=model))
        return backends[-1]

    fake_judge_model(monkeypatch)

    monkeypatch.setattr("generator.backends.open_backend", open_backend)
    corpus = write_corpus(tmp_path)
    args = [corpus, "--judge", "llm", "--judge-model", "m", "--num-batches", 20, "--no-proxies",
            "--judge-cache", tmp_path / "cache.sqlite", "--criteria", tmp_path / "criteria.json"]
    assert cli.cmd_score(parse(args + ["--json", tmp_path / "a.json"])) == 0
    assert cli.cmd_score(parse(args + ["--json", tmp_path / "b.json", "--regenerate-criteria"])) == 0
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert backends[0].num_requests > 0 and backends[1].num_requests == 0
    assert second["score"] == first["score"] and second["calls"] == first["calls"]


def test_cache_keys_on_sampling_and_model(tmp_path):
    from generator.records import Request

    inner = ScriptedJudgeBackend(criteria=lambda r: "{}")
    cached = CachedBackend(inner, tmp_path / "c.sqlite")
    base = Request(id="criteria-0-try0", prompt="p", max_tokens=10, temperature=0.5, seed=1)
    cached.generate([base, base])
    cached.generate([Request(id="criteria-9-try0", prompt="p", max_tokens=10, temperature=0.5, seed=1)])
    assert inner.num_requests == 1 and cached.hits == 2  # a request repeated in one call is sent once
    cached.generate([Request(id="criteria-0-try0", prompt="p", max_tokens=10, temperature=0.5, seed=2)])
    assert inner.num_requests == 2
    other = CachedBackend(ScriptedJudgeBackend(criteria=lambda r: "{}", model="other"), tmp_path / "c.sqlite")
    other.generate([base])
    assert other.misses == 1


def test_criteria_record_judge_k_and_seed_and_refuse_another_judge(tmp_path):
    path = tmp_path / "criteria.json"
    path.write_text(JUDGE_CRITERIA.to_json())
    assert load_criteria(path, judge_model="scripted-judge", k=10) == JUDGE_CRITERIA
    assert json.loads(path.read_text())["k"] == 10
    with pytest.raises(UserError, match="written by judge 'scripted-judge', not 'other/model'.*--regenerate"):
        load_criteria(path, judge_model="other/model")
    with pytest.raises(UserError, match="written for K=10, not K=5.*--k 10"):
        load_criteria(path, k=5)
