"""The LLM cluster-agent judge, tested structurally with a scripted fake backend."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DATA
from generator.judges.calls import ReplyError, parse_json
from generator.judges.cluster_agent import (ClusterAgentConfig, ClusterAgentJudge, Criteria, cluster_schema,
                                     generate_criteria, load_criteria, merge_definitions, render_prompt)
from generator.judges.protocol import ScoreError, score_corpus
from generator.records import Request, Result

GOLDEN = DATA / "judge" / "golden"
CRITERIA = Criteria(
    metadata=(("domain", "The subject area."), ("form", "How the text is organised.")),
    metrics=(("technicality", "1 plain words, 3 some terms, 5 expert jargon."),),
    sentences=(("domain", "Documents belong together when they share a subject area."),
               ("form", "Documents belong together when their text is organised the same way."),
               ("technicality", "Documents belong together when they are about as technical.")),
    judge_model="fake-judge", num_rounds=3)


class FakeBackend:
    """Answers each request with `reply(request)`: a str (the text) or a ready `Result`.
    Every call costs 100 prompt and 20 completion tokens; each generate call is recorded."""

    name = "fake"
    model = "fake-judge"

    def __init__(self, reply):
        self.reply = reply
        self.generate_calls: list[list[Request]] = []

    def generate(self, requests):
        self.generate_calls.append(list(requests))
        results = []
        for request in requests:
            answer = self.reply(request)
            if isinstance(answer, str):
                answer = Result(id=request.id, text=answer, finish_reason="stop", num_prompt_tokens=100,
                                num_tokens=20)
            results.append(answer)
        return results

    def close(self):
        pass


def clusters_reply(*groups) -> str:
    return json.dumps({"clusters": [
        {"cluster_id": i + 1, "members": list(members), "reason": f"group {i + 1}",
         "metadata": {"domain": "x", "form": "y"},
         "metrics": {"technicality": {"reasoning": "plain", "score": 2}}} for i, members in enumerate(groups)]})


def verify_reply(verdicts: dict[int, bool]) -> str:
    return json.dumps({str(i): {"reason": "checked", "valid": v} for i, v in verdicts.items()})


def scripted(cluster, verify=None):
    """A reply function: `cluster`/`verify` are strings or callables of the request."""
    def reply(request: Request):
        answer = cluster if request.id.startswith("cluster-") else verify
        return answer(request) if callable(answer) else answer
    return reply


def judge_one(backend, k=5, **config):
    judge = ClusterAgentJudge(backend, CRITERIA, ClusterAgentConfig(**config))
    [result] = judge.cluster([[f"document number {i}" for i in range(k)]])
    return result


def test_repairs_are_counted_exactly():
    backend = FakeBackend(scripted(clusters_reply([1, 2, 2], [2, 3, 9, "x"], [0]), verify_reply({1: True})))
    result = judge_one(backend)
    assert not result.failed
    assert result.clusters == ((0, 1), (2,), (3,), (4,))
    assert result.repairs == {"out_of_range": 3, "duplicate": 2, "unassigned": 2, "invalid_dissolved": 0}


@pytest.mark.parametrize("policy, clusters, dissolved", [
    ("dissolve", ((0,), (1,), (2,), (3, 4)), 1),
    ("keep", ((0, 1, 2), (3, 4)), 0),
])
def test_invalid_clusters_dissolved_or_kept(policy, clusters, dissolved):
    backend = FakeBackend(scripted(clusters_reply([1, 2, 3], [4, 5]), verify_reply({1: False, 2: True})))
    result = judge_one(backend, invalid_policy=policy)
    assert result.clusters == clusters
    assert result.repairs["invalid_dissolved"] == dissolved


def test_verification_asks_only_about_multi_document_clusters():
    backend = FakeBackend(scripted(clusters_reply([1], [2, 4], [3], [5]), verify_reply({2: True})))
    result = judge_one(backend)
    [verify] = backend.generate_calls[1]
    assert json.loads(verify.json_schema)["required"] == ["2"]
    assert "cluster 2: documents 2, 4." in verify.prompt
    assert result.clusters == ((0,), (1, 3), (2,), (4,))


def test_all_singletons_need_no_verification_call():
    backend = FakeBackend(scripted(clusters_reply(*[[i] for i in range(1, 6)])))
    result = judge_one(backend)
    assert len(backend.generate_calls) == 1 and result.calls == 1
    assert result.clusters == tuple((i,) for i in range(5))


def test_no_verification_when_disabled():
    backend = FakeBackend(scripted(clusters_reply([1, 2, 3, 4, 5])))
    result = judge_one(backend, verify=False)
    assert result.clusters == ((0, 1, 2, 3, 4),) and result.calls == 1


def test_unparsable_reply_is_retried_once_then_succeeds():
    good = clusters_reply([1, 2], [3, 4, 5])
    backend = FakeBackend(scripted(lambda r: "sorry, I cannot" if r.id.endswith("try0") else good,
                                   verify_reply({1: True, 2: True})))
    result = judge_one(backend)
    assert not result.failed and result.calls == 3  # cluster, its retry, verification
    assert [len(c) for c in backend.generate_calls] == [1, 1, 1]
    assert backend.generate_calls[0][0].seed != backend.generate_calls[1][0].seed


def test_unparsable_twice_fails_the_batch():
    backend = FakeBackend(scripted("```json\n{\"clusters\": \n```"))
    result = judge_one(backend)
    assert result.failed and result.clusters == ()
    assert "not JSON" in result.error and result.calls == 2


def test_backend_error_rows_are_retried_then_fail_the_batch():
    backend = FakeBackend(lambda r: Result(id=r.id, text="", finish_reason="error", error="engine died"))
    result = judge_one(backend)
    assert result.failed and "engine died" in result.error and result.calls == 2


def test_unparsable_verification_fails_the_batch():
    backend = FakeBackend(scripted(clusters_reply([1, 2], [3, 4, 5]), "{\"1\": {\"valid\": \"maybe\"}}"))
    result = judge_one(backend)
    assert result.failed and result.error.startswith("verify:") and result.calls == 3


def test_failed_batches_excluded_and_all_failing_is_an_error():
    texts = [f"text {i}" for i in range(30)]
    singletons = clusters_reply(*[[i] for i in range(1, 11)])
    ok = FakeBackend(scripted(lambda r: "nope" if "text 0\n" in r.prompt else singletons))
    report = score_corpus(texts, ClusterAgentJudge(ok, CRITERIA), k=10, rng=np.random.default_rng(0), num_batches=40,
                          max_failure_share=0.5)
    assert report.num_failed > 0 and report.failures == {"json": report.num_failed} and report.num_scored + report.num_failed == 40
    assert report.score == pytest.approx(10.0)
    broken = FakeBackend(scripted("nope"))
    with pytest.raises(ScoreError, match="failed on all"):
        score_corpus(texts, ClusterAgentJudge(broken, CRITERIA), k=10, rng=np.random.default_rng(0), num_batches=5)


def test_costs_are_summed_per_batch_and_in_the_report():
    backend = FakeBackend(scripted(clusters_reply([1, 2, 3], [4, 5, 6, 7, 8, 9, 10]), verify_reply({1: True, 2: True})))
    texts = [f"text {i}" for i in range(30)]
    report = score_corpus(texts, ClusterAgentJudge(backend, CRITERIA), k=10, rng=np.random.default_rng(0),
                          num_batches=25)
    assert all(b.calls == 2 and b.prompt_tokens == 200 and b.completion_tokens == 40 for b in report.batches)
    assert (report.calls, report.prompt_tokens, report.completion_tokens) == (50, 5000, 1000)
    assert report.score == pytest.approx(2**2 / 10)  # D_i = C_i^2 / K


@pytest.mark.parametrize("groups, expected", [([list(range(1, 11))], 0.1), ([[i] for i in range(1, 11)], 10.0)])
def test_llm_scores_stay_within_bounds(groups, expected):
    backend = FakeBackend(scripted(clusters_reply(*groups), verify_reply({1: True})))
    report = score_corpus([f"t{i}" for i in range(12)], ClusterAgentJudge(backend, CRITERIA), k=10,
                          rng=np.random.default_rng(0), num_batches=20)
    assert report.score == pytest.approx(expected)


def test_each_stage_is_one_generate_call_under_a_schema():
    backend = FakeBackend(scripted(clusters_reply([1, 2], [3, 4, 5]), verify_reply({1: True, 2: True})))
    judge = ClusterAgentJudge(backend, CRITERIA)
    judge.cluster([[f"batch {b} doc {i}" for i in range(5)] for b in range(4)])
    assert [len(c) for c in backend.generate_calls] == [4, 4]
    schema = json.loads(backend.generate_calls[0][0].json_schema)
    member = schema["properties"]["clusters"]["items"]["properties"]["members"]["items"]
    assert (member["minimum"], member["maximum"]) == (1, 5)
    assert judge.name == "cluster-agent:fake-judge"


def test_cluster_schema_requires_every_metadata_and_metric():
    cluster = cluster_schema(CRITERIA, 10)["properties"]["clusters"]["items"]["properties"]
    assert cluster["metadata"]["required"] == ["domain", "form"]
    assert cluster["metrics"]["required"] == ["technicality"]
    assert cluster["metrics"]["properties"]["technicality"]["properties"]["score"]["maximum"] == 5


def test_documents_are_truncated_in_prompts():
    backend = FakeBackend(scripted(clusters_reply([1], [2])))
    judge = ClusterAgentJudge(backend, CRITERIA, ClusterAgentConfig(max_doc_chars=20))
    judge.cluster([["A" * 19 + "B" * 30, "short one"]])
    prompt = backend.generate_calls[0][0].prompt
    assert "A" * 19 + "B [...]" in prompt and "BB" not in prompt and "short one" in prompt


def test_config_rejects_an_unknown_policy():
    with pytest.raises(ScoreError, match="invalid_policy 'merge'"):
        ClusterAgentConfig(invalid_policy="merge")


def test_parse_json_tolerates_fences_and_prose():
    assert parse_json("```json\n{\"a\": 1}\n```") == {"a": 1}
    assert parse_json("Here it is: {\"a\": [1, 2]} hope it helps") == {"a": [1, 2]}
    with pytest.raises(ReplyError, match="not JSON"):
        parse_json("no braces here")


# ---- criteria ----------------------------------------------------------------------------------

def criteria_backend(round_reply=None):
    def reply(request: Request):
        stage = request.id.split("-")[0]
        if stage == "criteria":
            return round_reply(request) if round_reply else json.dumps({
                "metadata": [{"name": "Subject Domain", "definition": "what it is about"},
                             {"name": "structure", "definition": "layout"}, {"name": "tone", "definition": "voice"}],
                "metrics": [{"name": "technicality", "rubric": "1 plain 5 expert"},
                            {"name": "depth", "rubric": "1 shallow 5 deep"}, {"name": "clarity", "rubric": "1-5"}]})
        if stage == "summary":
            return json.dumps({"items": [{"name": "subject domain", "definition": "refined"},
                                         {"name": "subject domain", "definition": "again"},
                                         {"name": "structure", "definition": "refined layout"}]})
        names = list(json.loads(request.json_schema)["properties"]["criteria"]["required"])
        return json.dumps({"criteria": {n: f"Group by {n}." for n in names}})
    return FakeBackend(reply)


def test_generate_criteria_batches_rounds_and_summarises():
    backend = criteria_backend()
    texts = [f"doc {i}" for i in range(20)]
    criteria = generate_criteria(backend, texts, rng=np.random.default_rng(0),
                                 config=ClusterAgentConfig(num_criteria_calls=6, docs_per_criteria_call=5))
    assert [len(c) for c in backend.generate_calls] == [6, 2, 1]  # rounds, both summaries, sentences
    assert all(r.prompt.count("<document ") == 5 for r in backend.generate_calls[0])
    assert criteria.metadata == (("subject domain", "refined"), ("structure", "refined layout"))
    # the metric summary kept the metadata names: renamed so every criterion has its own key
    assert [n for n, _ in criteria.sentences] == ["subject domain", "structure", "subject domain (metric)",
                                                  "structure (metric)"]
    assert criteria.num_rounds == 6 and criteria.judge_model == "fake-judge"
    assert criteria.cost == {"calls": 9, "prompt_tokens": 900, "completion_tokens": 180}
    summary = backend.generate_calls[1][0].prompt
    assert "subject domain (proposed 6 times)" in summary


def test_criteria_rounds_that_fail_are_dropped():
    backend = criteria_backend(lambda r: "garbage" if r.id.startswith("criteria-0-") else json.dumps({
        "metadata": [{"name": "a", "definition": "b"}], "metrics": [{"name": "c", "rubric": "d"}]}))
    criteria = generate_criteria(backend, ["x", "y", "z"], rng=np.random.default_rng(0),
                                 config=ClusterAgentConfig(num_criteria_calls=4))
    assert criteria.num_rounds == 3
    assert criteria.cost["calls"] == 4 + 1 + 3  # four rounds, one retry, three summary calls


def test_criteria_fail_clearly_when_no_round_parses():
    with pytest.raises(ScoreError, match="none of the 4 criteria calls"):
        generate_criteria(criteria_backend(lambda r: "no"), ["x", "y"], rng=np.random.default_rng(0),
                          config=ClusterAgentConfig(num_criteria_calls=4))


def test_merge_definitions_joins_spellings_and_orders_by_frequency():
    merged = merge_definitions([("Tone", "a"), ("subject_domain", "b"), ("Subject Domain", "c"),
                                ("subject-domain", "d")])
    assert merged == {"subject domain": ["b", "c", "d"], "tone": ["a"]}


def test_criteria_round_trip_and_load_errors(tmp_path):
    path = tmp_path / "criteria.json"
    path.write_text(CRITERIA.to_json())
    assert load_criteria(path) == CRITERIA
    with pytest.raises(ScoreError, match="criteria file not found"):
        load_criteria(tmp_path / "missing.json")
    path.write_text('{"metadata": []}')
    with pytest.raises(ScoreError, match="not a criteria file"):
        load_criteria(path)
    path.write_text('{"metadata": [], "metrics": [], "criteria": []}')
    with pytest.raises(ScoreError, match="must each be non-empty"):
        load_criteria(path)


# ---- golden renders ----------------------------------------------------------------------------

GOLDEN_INPUTS = {
    "criteria": dict(documents=["A short text about tides.", "A recipe for soup."], min_items=3, max_items=5),
    "summarize": dict(kind="metrics", num_rounds=10, keep=4,
                      entries=[{"name": "technicality", "count": 7, "definitions": ["1 plain, 5 jargon"]},
                               {"name": "warmth", "count": 1, "definitions": ["1 cold, 5 warm", "how friendly"]}]),
    "sentences": dict(metadata=list(CRITERIA.metadata), metrics=list(CRITERIA.metrics)),
    "cluster": dict(criteria=list(CRITERIA.sentences), metadata=list(CRITERIA.metadata),
                    metrics=list(CRITERIA.metrics), documents=["Tides rise twice a day.", "Soup needs salt.",
                                                               "The moon pulls the sea."], compact=False),
    "verify": dict(criteria=list(CRITERIA.sentences), documents=["Tides rise twice a day.", "Soup needs salt.",
                                                                 "The moon pulls the sea."],
                   clusters=[{"id": 1, "members": [1, 3], "reason": "both about tides"}]),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_INPUTS))
def test_prompt_matches_golden_render(name):
    rendered = render_prompt(name, ClusterAgentConfig(), **GOLDEN_INPUTS[name])
    assert rendered == (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")


def test_a_compact_answer_asks_for_members_and_a_short_reason_only():
    schema = cluster_schema(CRITERIA, 10, "compact")["properties"]["clusters"]
    assert set(schema["items"]["properties"]) == {"members", "reason"} and schema["maxItems"] == 10
    assert schema["items"]["properties"]["reason"]["maxLength"] == 120
    compact = json.dumps({"clusters": [{"members": [1, 2], "reason": "both plain"}, {"members": [3, 4, 5],
                                                                                     "reason": "lists"}]})
    backend = FakeBackend(scripted(compact, verify_reply({1: True, 2: False})))
    result = judge_one(backend, answer="compact")
    assert result.clusters == ((0, 1), (2,), (3,), (4,))  # cluster 2 judged invalid, dissolved
    cluster_request, verify_request = backend.generate_calls[0][0], backend.generate_calls[1][0]
    assert "metadata" not in json.loads(cluster_request.json_schema)["properties"]["clusters"]["items"]["properties"]
    assert "Rate the cluster" not in cluster_request.prompt and '"members": [1, 2], "reason"' in cluster_request.prompt
    assert json.loads(verify_request.json_schema)["properties"]["1"]["properties"]["reason"]["maxLength"] == 120


def test_config_rejects_an_unknown_answer_form():
    with pytest.raises(ScoreError, match="answer 'short'"):
        ClusterAgentConfig(answer="short")
