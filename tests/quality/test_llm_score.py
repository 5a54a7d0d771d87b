"""The LLM score gate: its reply parser and decision as tables, its spending limit, the rubric's
golden render, and whole runs against the scripted judge server over HTTP with a known answer
(documents it scores low are rejected, exactly N remain, a second run is answered from the cache,
a spent budget stops the run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DATA, SMALL_RECIPE, write_recipe
from fakes import WORDS, FakeBackend, ScriptedJudgeServer
from generator import api
from generator.errors import UserError
from generator.files import read_documents
from generator.judges.calls import Reply, ReplyError
from generator.quality.config import LlmScore
from generator.quality.gates import Rejection
from generator.quality.scores import (AUDIT_FILE, RUBRIC, Score, ScoreGate, SpendingLimit, load_rubric,
                                      parse_score, verdict_of)
from generator.records import Request, Result

LOW = set(WORDS[:4])  # documents opening with one of these words the server scores 1
UNREADABLE = "omega"  # documents opening with it get prose instead of JSON


@pytest.mark.parametrize("data, expected", [
    ({"reason": "clear and complete", "score": 5}, Score(5, "clear and complete")),
    ({"reason": "  two\n lines ", "score": 2.0}, Score(2, "two lines")),
    ({"score": 1, "reason": "x" * 400}, Score(1, "x" * 300)),
])
def test_a_whole_score_in_range_with_a_reason_is_read(data, expected):
    assert parse_score(data) == expected


@pytest.mark.parametrize("data, message", [
    ({"reason": "fine", "score": True}, "not a whole number"),
    ({"reason": "fine", "score": "4"}, "not a whole number"),
    ({"reason": "fine", "score": 3.5}, "not a whole number"),
    ({"reason": "fine", "score": 0}, "outside 1-5"),
    ({"reason": "fine", "score": 6}, "outside 1-5"),
    ({"reason": " ", "score": 4}, "no reason"),
    ({"score": 4}, "no reason"),
    ([4], "not a JSON object"),
])
def test_anything_else_is_a_schema_failure(data, message):
    with pytest.raises(ReplyError, match=message) as caught:
        parse_score(data)
    assert caught.value.kind == "schema"


@pytest.mark.parametrize("reply, expected", [
    (Reply(value=Score(3, "ok")), None),
    (Reply(value=Score(5, "fine")), None),
    (Reply(value=Score(2, "vague")), Rejection("llm_score", "score_2", "score 2 below threshold 3: vague")),
    (Reply(error="quality: not JSON: 'Nice.'", failure="json"),
     Rejection("llm_score", "judge_json", "no score could be read: quality: not JSON: 'Nice.'")),
    (Reply(error="quality: answer cut at 256 tokens", failure="length"),
     Rejection("llm_score", "judge_length", "no score could be read: quality: answer cut at 256 tokens")),
])
def test_a_low_score_or_an_unreadable_reply_rejects(reply, expected):
    assert verdict_of(reply, threshold=3) == expected


class Answering:
    name, model = "fake", "fake-judge"

    def __init__(self):
        self.sent = 0

    def generate(self, requests):
        self.sent += len(requests)
        return [Result(id=r.id, text='{"reason": "ok", "score": 4}', finish_reason="stop",
                       num_prompt_tokens=90, num_tokens=10) for r in requests]

    def close(self):
        pass


def test_the_limit_sends_no_call_past_max_calls_or_after_max_tokens():
    inner = Answering()
    limit = SpendingLimit(inner, max_calls=5)
    results = limit.generate([Request(id=str(i), prompt="p", max_tokens=8) for i in range(8)])
    assert inner.sent == 5 and limit.refused == 3 and [r.ok for r in results] == [True] * 5 + [False] * 3
    tokens = SpendingLimit(Answering(), max_tokens=150)
    tokens.generate([Request(id="a", prompt="p", max_tokens=8)] * 2)  # 200 tokens: one batch may overshoot
    assert tokens.generate([Request(id="b", prompt="p", max_tokens=8)])[0].error == "judge budget spent"


def test_the_gate_stops_with_a_clear_message_when_the_budget_is_spent(tmp_path):
    gate = ScoreGate(LlmScore(max_calls=3), Answering(), tmp_path)
    assert gate.score(["one text", "another"]) == [None, None]
    with pytest.raises(UserError, match=r"judge budget is spent \(3 calls, 300 tokens sent; max_calls 3"):
        gate.score(["a third", "a fourth"])
    gate.close()


def test_the_rubric_renders_its_golden_text():
    rubric = load_rubric("", "rubric")
    rendered = rubric.render({"document": "Tides rise twice a day because the moon pulls the sea."})
    assert rendered == (DATA / "judge" / "golden" / "quality.txt").read_text(encoding="utf-8")
    assert RUBRIC.name == "quality.j2"


def test_a_rubric_with_other_variables_is_refused(tmp_path):
    (tmp_path / "r.j2").write_text("{# variables: [text] #}Rate {{ text }}")
    with pytest.raises(UserError, match=r"uses \['text'\], not exactly \[document\]"):
        load_rubric(str(tmp_path / "r.j2"), "rubric")


# ---- whole runs against the scripted judge server ----------------------------------------------

def score_of(document: str):
    first = document.split()[0].rstrip(".")
    return "A fine text, I would say four." if first == UNREADABLE else 1 if first in LOW else 4


def gated_recipe(tmp: Path, server: ScriptedJudgeServer, extra: str = "") -> Path:
    judge = f"{{model: {server.model}, backend: openai, endpoint: '{server.base_url}'}}"
    gate = f"{{threshold: 3, batch_docs: 16, judge: {judge}{extra}}}"
    body = SMALL_RECIPE.replace("num_docs: 20", "num_docs: 60")
    return write_recipe(tmp, body + f"quality: {{llm_score: {gate}}}\n")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_documents_the_judge_scores_low_are_rejected_and_exactly_n_remain(tmp_path):
    with ScriptedJudgeServer(score_of=score_of) as server:
        plan = api.load_recipe(gated_recipe(tmp_path, server))
        result = api.run(plan, tmp_path / "run", backend=FakeBackend(), score=False, card=False)
        sent = server.num_requests
        again = api.run(plan, tmp_path / "run", backend=FakeBackend(), score=False, card=False, force=True)
        assert server.num_requests == sent  # every answer came from the cache
    out = tmp_path / "run"
    docs = read_documents(out).to_pydict()
    assert len(docs["text"]) == result.num_docs == again.num_docs == 60
    assert all(score_of(text) == 4 for text in docs["text"])
    rejected = rows(out / "rejected.jsonl")  # the second run's (--force starts the folder afresh)
    assert {r["rule"] for r in rejected} == {"score_1", "judge_json"}
    for r in rejected:
        low = score_of(r["text"]) == 1
        assert r["gate"] == "llm_score"
        cannot_read = "no score could be read: quality: not JSON: 'A fine text, I would say four.'"
        assert r["reason"] == ("score 1 below threshold 3: scored 1 by the script" if low else cannot_read)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"]["by_gate"] == {"llm_score": len(rejected)}
    assert summary["num_attempted"] == 60 + len(rejected) + summary["num_failed"]
    audit = rows(out / AUDIT_FILE)  # kept across --force: both runs' calls, each run's after its header
    assert [r["judge"] for r in audit if r["type"] == "run"] == [server.model] * 2
    calls = [r for r in audit if r["type"] == "call"]
    assert {c["stage"] for c in calls} == {"quality"} and len(calls) == 2 * sent
    unreadable = sum(r["rule"] == "judge_json" for r in rejected)
    # an unreadable reply is asked once more (documents scored past the last one needed are not kept)
    retried = [c for c in calls[:sent] if c["attempt"] == 1]
    assert len(retried) >= unreadable >= 1 and all(c["failure"] == "json" for c in retried)


def test_a_spent_judge_budget_stops_the_run_before_more_calls(tmp_path):
    with ScriptedJudgeServer(score_of=score_of) as server:
        plan = api.load_recipe(gated_recipe(tmp_path, server, ", max_calls: 20"))
        with pytest.raises(UserError, match=r"judge budget is spent \(20 calls.*fix: raise "
                                            r"quality.llm_score.max_calls"):
            api.run(plan, tmp_path / "run", backend=FakeBackend(), score=False, card=False)
        assert server.num_requests == 20
    assert len(read_documents(tmp_path / "run").to_pydict()["text"]) < 60


def test_the_judge_scores_whole_documents_of_multi_part_templates(tmp_path):
    seen: list[str] = []

    def score_whole(document: str):
        seen.append(document)
        return score_of(document)

    with ScriptedJudgeServer(score_of=score_whole) as server:
        body = gated_recipe(tmp_path, server).read_text().replace(
            "prompts/textbook.j2", "prompts/multitopic_style_persona.j2")
        plan = api.load_recipe(write_recipe(tmp_path, body, name="parts.yaml"))
        assert any(t.parts for t in plan.templates)
        api.run(plan, tmp_path / "run", backend=FakeBackend(), score=False, card=False)
    docs = read_documents(tmp_path / "run").to_pydict()
    joined = [t for t, name in zip(docs["text"], docs["template"]) if name == "multitopic_style_persona"]
    assert len(docs["text"]) == 60 and joined
    assert all("\n\n" in t for t in joined) and set(joined) <= set(seen)  # scored whole, parts joined
    assert all(score_of(text) == 4 for text in docs["text"])
