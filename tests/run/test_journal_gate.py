"""Results read back from the journal on --resume pass through the LLM score gate, as generated
ones do (regression: the journal keeps no verdict, and a resumed run committed its journaled
documents without the judge's score, so low-scored ones entered the corpus)."""
from __future__ import annotations

import json

import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import WORDS, Crash, ScriptedJudgeServer
from generator import api
from generator.files import read_documents
from generator.run.journal import journal_path, read_journal
from test_journal import Straggler

LOW = set(WORDS[:4])  # documents opening with one of these words the server scores 1


def score_of(document: str) -> int:
    return 1 if document.split()[0].rstrip(".") in LOW else 4


def gated_plan(tmp_path, server):
    judge = f"{{model: {server.model}, backend: openai, endpoint: '{server.base_url}'}}"
    body = SMALL_RECIPE + f"quality: {{llm_score: {{threshold: 3, batch_docs: 4, judge: {judge}}}}}\n"
    return api.load_recipe(write_recipe(tmp_path, body), ["size.num_docs=80", "size.shard_rows=10",
                                                          "dedup.exact=false", "dedup.near=false"])


def corpus(out):
    table = read_documents(out, columns=["sample_index", "text"])
    return list(zip(table.column("sample_index").to_pylist(), table.column("text").to_pylist()))


def test_journaled_results_are_scored_by_the_judge_after_resume(tmp_path):
    with ScriptedJudgeServer(score_of=score_of) as server:
        plan = gated_plan(tmp_path, server)
        api.run(plan, tmp_path / "whole", backend=Straggler(), score=False, card=False)
        out = tmp_path / "killed"
        with pytest.raises(Crash):
            api.run(plan, out, backend=Straggler(crash_at=9), score=False, card=False)
        journaled = read_journal(out)
        low = [r for r in journaled.values() if score_of(r.text) != 4]
        assert journaled and low  # the kill left results the judge rejects waiting in the journal
        again = Straggler()
        api.run(plan, out, backend=again, resume=True, score=False, card=False)
    assert corpus(out) == corpus(tmp_path / "whole")
    assert all(score_of(text) == 4 for _, text in corpus(out))
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rejected if r["gate"] == "llm_score"} >= {r.id for r in low}
    assert not journal_path(out).exists()
