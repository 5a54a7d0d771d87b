"""A known answer over HTTP: the real OpenAI-compatible backend against a scripted judge server
that clusters by hidden labels, with noise and injected malformed and cut answers.

The server's clustering is a known random process, so E[D] is computed here by simulating it
(40,000 batches, Monte Carlo error about 0.01). The check that this value lies inside the
report's 95% interval fails with probability about 5% for a new seed; the seed is fixed."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from generator.backends.openai import OpenAIBackend
from generator.judges.cluster_agent import ClusterAgentJudge
from generator.judges.protocol import score_corpus
from generator.judges.audit import AuditLog, read_audit
from fakes import JUDGE_CRITERIA, ScriptedJudgeServer

K = 10
LABEL_SHARES = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
NOISE = 0.1


def labelled_corpus(rng: np.random.Generator, num_docs: int = 300) -> tuple[list[str], np.ndarray]:
    labels = rng.choice(len(LABEL_SHARES), p=LABEL_SHARES, size=num_docs)
    return [f"Note {i} on one subject [label {label}]." for i, label in enumerate(labels)], labels


def expected_score(labels: np.ndarray, rng: np.random.Generator, draws: int = 40_000) -> float:
    """E[C² / K] for K documents drawn without replacement, each split off with prob. NOISE."""
    batches = rng.random((draws, labels.size)).argpartition(K, axis=1)[:, :K]
    batch_labels = labels[batches]
    alone = rng.random((draws, K)) < NOISE
    grouped = sum(((batch_labels == label) & ~alone).any(axis=1) for label in range(len(LABEL_SHARES)))
    return float(((grouped + alone.sum(axis=1)) ** 2 / K).mean())


def run_against(server: ScriptedJudgeServer, texts, audit_path, num_batches: int):
    backend = OpenAIBackend(server.model, base_url=server.base_url, concurrency=4, max_retries=0)
    try:
        with AuditLog(audit_path) as audit:
            judge = ClusterAgentJudge(backend, JUDGE_CRITERIA, audit=audit)
            return score_corpus(texts, judge, k=K, rng=np.random.default_rng(11), num_batches=num_batches,
                                audit=audit)
    finally:
        backend.close()


def test_d_recovers_the_known_value_and_failures_match_what_was_injected(tmp_path):
    rng = np.random.default_rng(5)
    texts, labels = labelled_corpus(rng)
    known = expected_score(labels, rng)
    with ScriptedJudgeServer(noise=NOISE, malformed_rate=0.1, cut_rate=0.05, seed=3) as server:
        report = run_against(server, texts, tmp_path / "audit.jsonl", num_batches=160)
    assert report.ci_low <= known <= report.ci_high, (known, report.ci_low, report.ci_high)
    calls = [r for r in read_audit(tmp_path / "audit.jsonl") if r["type"] == "call"]
    assert len(calls) == server.num_requests == report.calls
    cluster_calls = [c for c in calls if c["stage"] == "cluster"]
    assert Counter(c["failure"] for c in cluster_calls if c["failure"]) == server.injected
    assert server.injected["json"] > 5 and server.injected["length"] > 3
    # a batch fails exactly when its retry was injected too; its kind is the retry's
    retries_failed = Counter(c["failure"] for c in cluster_calls if c["attempt"] == 1 and c["failure"])
    assert report.failures == dict(retries_failed) and report.num_failed == sum(retries_failed.values())
    # cut answers were asked again with twice the tokens
    assert all(c["max_tokens"] == 6144 for c in cluster_calls if c["attempt"] == 1
               and any(p["job"] == c["job"] and p["attempt"] == 0 and p["failure"] == "length"
                       and p["prompt_sha256"] == c["prompt_sha256"] for p in cluster_calls))


def test_a_clean_server_without_noise_gives_the_exact_label_count():
    texts = [f"Note {i} [label {i % 2}]." for i in range(40)]
    with ScriptedJudgeServer() as server:
        report = run_against(server, texts, "/dev/null", num_batches=20)
    assert report.num_failed == 0 and server.injected == Counter()
    assert report.score == pytest.approx(2**2 / K)  # two labels in (almost) every batch of 10 from 40
