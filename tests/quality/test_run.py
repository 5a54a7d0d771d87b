"""Gates in a run: rejected documents are replaced until exactly N exist, every rejection is a
line of rejected.jsonl and a counter, a run past max_rejection_rate stops with the gate named,
and a killed run resumes to the corpus of an uninterrupted one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import Crash, FakeBackend, SeededFaultsBackend
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.run import controller

SAME = "The same answer again."  # SeededFaultsBackend's answer to every seed divisible by 5: 5 word tokens
GATED = SMALL_RECIPE + "quality: {min_tokens: 6}\n"


def plan_of(tmp: Path, body: str, *overrides: str):
    return load_recipe(write_recipe(tmp, body), ["max_failure_rate=0.5", *overrides])


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gated")
    plan = plan_of(tmp, GATED, "size.num_docs=40", "size.shard_rows=6")
    summary = controller.run(plan, tmp / "run", SeededFaultsBackend())
    return plan, tmp / "run", summary


def test_rejected_documents_are_replaced_until_exactly_n_exist(gated):
    plan, out, summary = gated
    docs = read_documents(out).to_pydict()
    assert len(docs["text"]) == summary["num_docs"] == 40
    assert SAME not in docs["text"]
    rejected = rows(out / "rejected.jsonl")
    assert rejected and all(r["text"] == SAME for r in rejected)
    failed = rows(out / "failures.jsonl")
    indices = sorted([*docs["sample_index"], *(r["sample_index"] for r in rejected),
                      *(r["sample_index"] for r in failed)])
    assert indices == list(range(summary["num_attempted"]))  # every sample accounted for once


def test_each_rejection_is_a_line_with_its_gate_and_reason_and_a_counter(gated):
    plan, out, summary = gated
    rejected = rows(out / "rejected.jsonl")
    assert set(rejected[0]) == {"id", "sample_index", "round", "template", "style", "grid_values", "gate",
                                "rule", "reason", "text"}
    assert json.loads(rejected[0]["grid_values"])["persona"]  # the cell, for per-cell attribution
    assert {(r["gate"], r["rule"]) for r in rejected} == {("min_tokens", "too_short")}
    assert rejected[0]["reason"] == "5 tokens, fewer than min_tokens 6"
    state = json.loads((out / "state.json").read_text())["counters"]
    assert state["rejected"] == {"min_tokens": len(rejected)}
    r = summary["rejected"]
    assert r["total"] == len(rejected) and r["by_gate"] == {"min_tokens": len(rejected)}
    assert r["by_rule"] == {"min_tokens: too_short": len(rejected)}
    by_template = r["by_template"]
    assert sum(v["rejected"] for v in by_template.values()) == len(rejected)
    assert sum(v["kept"] for v in by_template.values()) == 40
    assert summary["duplicates"]["exact"] == 0  # the repeated answer is rejected first, never indexed


def test_a_run_past_max_rejection_rate_stops_naming_the_gate(tmp_path):
    # every answer is 32 tokens or fewer, so every one is too short
    plan = plan_of(tmp_path, SMALL_RECIPE + "quality: {min_tokens: 100, max_rejection_rate: 0.3}\n",
                   "size.num_docs=80")
    with pytest.raises(controller.RunStopped, match=r"rejection rate 100.0% .* above "
                                                    r"quality.max_rejection_rate 30%, most by min_tokens"):
        controller.run(plan, tmp_path / "run", FakeBackend())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_docs"] == 0 and summary["rejected"]["total"] == summary["num_attempted"] >= 64
    assert len(rows(tmp_path / "run" / "rejected.jsonl")) == summary["num_attempted"]


def test_a_contaminated_document_is_rejected_naming_the_evaluation_set(tmp_path):
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "tinyqa.jsonl").write_text(json.dumps({"question": "same answer again"}) + "\n")
    section = "quality: {decontaminate: [evals/tinyqa.jsonl], decontaminate_n: 3}\n"
    plan = plan_of(tmp_path, SMALL_RECIPE + section)
    summary = controller.run(plan, tmp_path / "run", SeededFaultsBackend())
    rejected = rows(tmp_path / "run" / "rejected.jsonl")
    assert summary["num_docs"] == 20 and rejected
    assert {(r["gate"], r["rule"]) for r in rejected} == {("decontaminate", "tinyqa")}
    assert "3-gram with evaluation set tinyqa: 'same answer again'" in rejected[0]["reason"]


def test_without_a_quality_section_nothing_changes(tmp_path):
    plan = plan_of(tmp_path, SMALL_RECIPE)
    summary = controller.run(plan, tmp_path / "run", SeededFaultsBackend())
    assert "rejected" not in summary
    assert not (tmp_path / "run" / "rejected.jsonl").exists()
    assert summary["duplicates"]["exact"] > 0  # the repeated answer is a duplicate here


@pytest.mark.parametrize("crash_on_call", [2, 4])
def test_a_killed_run_with_gates_resumes_to_the_uninterrupted_corpus(gated, tmp_path, crash_on_call):
    plan, finished, _ = gated
    backend = SeededFaultsBackend()
    backend.answer = 8  # eight results a poll: several commits and flushes before the crash
    generate = backend.generate

    def crashing(requests):
        if len(backend.calls) + 1 == crash_on_call:
            raise Crash()
        return generate(requests)
    backend.generate = crashing
    out = tmp_path / "run"
    with pytest.raises(Crash):
        controller.run(plan, out, backend)
    assert len(read_documents(out)) < 40
    controller.run(plan, out, SeededFaultsBackend(), resume=True)
    assert read_documents(out).to_pydict() == read_documents(finished).to_pydict()
    assert rows(out / "rejected.jsonl") == rows(finished / "rejected.jsonl")
    done = json.loads((out / "state.json").read_text())["counters"]
    assert done["rejected"] == json.loads((finished / "state.json").read_text())["counters"]["rejected"]


def test_the_card_shows_the_rejection_table(gated, tmp_path):
    from generator.export.card import write_card
    from fakes import fake_embed

    plan, finished, summary = gated
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    write_card(run, embed=fake_embed)
    card = (run / "README.md").read_text()
    n = summary["rejected"]["total"]
    assert f"**{n}\nof {summary['num_attempted']} attempted rows were rejected**" in card
    assert f"| min_tokens | {n} |" in card
    assert "| template | topic_style_persona |" in card


def test_a_kill_after_rejected_lines_were_written_leaves_no_line_twice(gated, tmp_path, monkeypatch):
    from generator.run import loop

    plan, finished, _ = gated
    write_shard, calls = loop.write_shard, []

    def dying_write_shard(*args, **kwargs):  # the second flush dies after its JSONL lines were appended
        calls.append(1)
        if len(calls) == 2:
            raise Crash()
        return write_shard(*args, **kwargs)
    monkeypatch.setattr(loop, "write_shard", dying_write_shard)
    backend = SeededFaultsBackend()
    backend.answer = 8
    out = tmp_path / "run"
    with pytest.raises(Crash):
        controller.run(plan, out, backend)
    monkeypatch.setattr(loop, "write_shard", write_shard)
    controller.run(plan, out, SeededFaultsBackend(), resume=True)
    assert read_documents(out).to_pydict() == read_documents(finished).to_pydict()
    assert rows(out / "rejected.jsonl") == rows(finished / "rejected.jsonl")


def test_the_run_line_says_how_many_documents_each_gate_rejected(gated):
    from generator.cli import run_lines
    from generator.results import run_result
    plan, out, summary = gated
    result = run_result(out, summary)
    n = summary["rejected"]["total"]
    assert n and result.rejected == (("min_tokens", n),)
    assert f"quality gates rejected {n} documents (min_tokens {n})" in run_lines(result)
