"""The LLM cluster-agent end to end on the real embedded model (vLLM CPU build in the session's
Ray actor). SmolLM2-135M is no real judge; this checks the plumbing: JSON schemas enforced by
structured decoding, criteria written and frozen, repairs counted, failures excluded, the score
inside [1/K, K], and costs reported."""
import dataclasses
import json

import numpy as np
import pytest

from conftest import DATA
from fakes import JUDGE_CRITERIA
from generator.judges.cluster_agent import ClusterAgentConfig, ClusterAgentJudge, Criteria, generate_criteria
from generator.judges.protocol import ScoreError, score_corpus

pytestmark = pytest.mark.integration
DATA = DATA / "judge" / "generated_quickstart.jsonl"

SMALL = ClusterAgentConfig(docs_per_criteria_call=2, num_criteria_calls=2, num_kept=2, max_doc_chars=200,
                           criteria_max_tokens=300, summary_max_tokens=400, cluster_max_tokens=300,
                           verify_max_tokens=150, summary_max_names=8, summary_max_definitions=1, seed=3,
                           max_attempts=1)


def test_cluster_agent_runs_end_to_end_on_the_embedded_model(ray_engine, tmp_path):
    texts = [json.loads(line)["text"] for line in DATA.read_text().splitlines()][:30]
    criteria = generate_criteria(ray_engine, texts, rng=np.random.default_rng(0), config=SMALL)
    assert criteria.metadata and criteria.metrics and criteria.sentences
    saved = tmp_path / "criteria.json"
    saved.write_text(criteria.to_json())
    frozen = Criteria.from_json(saved.read_text())
    assert frozen == criteria
    k = 4
    # The 135M model cannot judge (its answers often overrun their budget, and the criteria it
    # writes can push a prompt past the session engine's 1,024 tokens), so this checks the
    # protocol's structure with refusal switched off; failures must each carry their kind, and a
    # run where every batch failed is read from its audit lines.
    audit = Records()
    try:
        report = score_corpus(texts, ClusterAgentJudge(ray_engine, frozen, SMALL, audit=audit), k=k, audit=audit,
                              rng=np.random.default_rng(1), num_batches=1, min_batches=1, max_failure_share=1.0)
    except ScoreError as exc:
        assert "failed on all 1 batches" in str(exc)
        report = None
    batches = [r for r in audit.records if r["type"] == "batch"]
    calls = [r for r in audit.records if r["type"] == "call"]
    assert len(batches) == 1 and len(calls) >= 1 and all(c["prompt_sha256"] for c in calls)
    assert {b["failure"] for b in batches} <= {None, "length", "json", "schema", "engine", "budget"}
    assert all(b["error"] for b in batches if b["failed"])
    if report is not None:
        assert report.num_scored + report.num_failed == 1
        assert report.calls >= 1 and report.prompt_tokens > 0 and report.completion_tokens > 0
        assert set(report.repairs) == {"out_of_range", "duplicate", "unassigned", "invalid_dissolved"}
        assert 1 / k <= report.score <= k
        for batch in report.batches:
            if not batch.failed:
                assert sorted(i for c in batch.clusters for i in c) == list(range(k))


class Records:
    """An audit sink that keeps what it is given."""

    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)


def test_the_llm_judge_opens_its_engine_with_a_context_that_fits_k_10():
    """The judge's own in-process engine, opened by `open_judge` with the planned context (the
    thing under test, so it cannot share the session's 1,024-token engine): every call fits the
    context, no batch fails for context length, and every failure has its kind."""
    from generator.judges import open_judge
    from generator.judges.calls import FAILURE_KINDS
    from generator.judges.config import JudgeSettings

    texts = [json.loads(line)["text"] for line in DATA.read_text().splitlines()][:60]
    settings = JudgeSettings(model="embedded:smollm2-135m", k=10, docs_per_criteria_call=2, num_criteria_calls=2,
                             num_kept=2, cluster_max_tokens=256, verify_max_tokens=256, criteria_max_tokens=300)
    audit = Records()
    judge = open_judge("llm", settings=settings, seed=3, audit=audit)
    try:
        plan = judge.fit[1]
        assert plan.max_model_len <= plan.model_context == 8192 and plan.max_doc_tokens >= 64
        assert judge.backend.max_model_len == plan.max_model_len
        # criteria given (writing them is tested above): the calls under test are the K = 10 ones
        judge.criteria = dataclasses.replace(JUDGE_CRITERIA, judge_model=judge.backend.model)
        try:  # the 135M model rarely writes a valid clustering; a run where every batch failed is fine here
            score_corpus(texts, judge, k=10, rng=np.random.default_rng(1), num_batches=1, min_batches=1,
                         max_failure_share=1.0, audit=audit)
        except ScoreError as exc:
            assert "failed on all 1 batches" in str(exc)
    finally:
        judge.close()
    calls = [r for r in audit.records if r.get("type") == "call"]
    batches = [r for r in audit.records if r.get("type") == "batch"]
    assert len(batches) == 1
    assert calls and all(c["prompt_tokens"] + c["max_tokens"] <= plan.max_model_len
                         for c in calls if c["prompt_tokens"])
    assert all(c["failure"] in (None, *FAILURE_KINDS) for c in calls)
    assert all(b["failure"] in (None, *FAILURE_KINDS) and "model context" not in (b["error"] or "") for b in batches)
    assert all(c["prompt_tokens"] > 10 * 20 for c in calls if c["stage"] == "cluster")  # ten documents were sent
