"""Rewrite runs with the fake backend: exactly k rewrites per unit, provenance on every row,
coverage in the summary, and a resumed run that writes the same rows as an uninterrupted one."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from fakes import Crash
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.run import controller
from rewrites import KJV, SeededFailures, source_recipe, write_source


def rows(out):
    return read_documents(out).to_pylist()


def test_every_unit_gets_exactly_k_rewrites_though_a_fifth_of_the_tries_fail(tmp_path):
    src = write_source(tmp_path, 40)
    plan = load_recipe(source_recipe(tmp_path, f"{{path: {src}, id_field: id, per_source: 3, shuffle_window: 8}}",
                                     extra="max_failure_rate: 0.5"))
    assert plan.source.num_units == 34 and plan.recipe.size.num_docs == 102  # 6 of 40 have no text
    summary = controller.run(plan, tmp_path / "out", SeededFailures(every=5))
    got = rows(tmp_path / "out")
    assert summary["num_failed"] > 10 and len(got) == 102
    per_unit = Counter((r["source_id"], r["chunk"]) for r in got)
    assert set(per_unit.values()) == {3} and len(per_unit) == 34
    assert sorted(Counter((r["source_id"], r["rewrite"]) for r in got).values()) == [1] * 102
    assert all(f"of {r['source_id'][1:]}." in r["prompt"] for r in got)  # each row rewrote its own source
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert all(f["source_id"].startswith("d") and 0 <= f["rewrite"] < 3 for f in failures)
    assert summary["sources"] | {"reasons": {}, "short_units": []} == {
        "units": 34, "per_source": 3, "complete": 34, "short": 0, "not_reached": 0, "reasons": {},
        "short_units": []}


def test_a_unit_whose_every_try_fails_is_reported_short_with_its_reason(tmp_path):
    src = write_source(tmp_path, 12)
    plan = load_recipe(source_recipe(tmp_path, f"{{path: {src}, id_field: id, per_source: 2, max_attempts: 3}}",
                                     extra="max_failure_rate: 0.9"))
    summary = controller.run(plan, tmp_path / "out", SeededFailures(every=10**9, always="Paragraph one of 5."))
    assert len(rows(tmp_path / "out")) == 2 * (plan.source.num_units - 1)
    s = summary["sources"]
    assert (s["complete"], s["short"], s["not_reached"]) == (plan.source.num_units - 1, 1, 0)
    assert s["short_units"] == [{"source_id": "d5", "chunk": 0, "missing": 2,
                                 "reasons": ["failed: simulated engine error"]}]
    assert summary["num_failed"] == 2 * 3  # two rewrites, three tries each


def test_a_killed_run_resumed_writes_the_same_rows_as_an_uninterrupted_one(tmp_path):
    src = write_source(tmp_path, 60)
    recipe = source_recipe(tmp_path, f"{{path: {src}, id_field: id, per_source: 4, shuffle_window: 16}}",
                           extra="max_failure_rate: 0.5", size="{shard_rows: 12}")
    plan = load_recipe(recipe)
    whole = controller.run(plan, tmp_path / "whole", SeededFailures(every=4))
    with pytest.raises(Crash):
        controller.run(load_recipe(recipe), tmp_path / "cut", SeededFailures(every=4, crash_on_poll=9))
    assert 0 < len(rows(tmp_path / "cut")) < plan.recipe.size.num_docs
    summary = controller.run(load_recipe(recipe), tmp_path / "cut", SeededFailures(every=4), resume=True)
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    assert summary["sources"] == whole["sources"] and summary["num_docs"] == whole["num_docs"]


def test_the_seed_doc_templates_rewrite_the_kjv_passages(tmp_path):
    recipe = source_recipe(tmp_path, f"{{path: {KJV}, id_field: id, per_source: 2, max_sources: 5}}")
    text = recipe.read_text().replace(f"{tmp_path}/rewrite.j2", str(KJV.parents[3] / "prompts/seed_qa.j2"))
    recipe.write_text(text)
    controller.run(load_recipe(recipe), tmp_path / "out", SeededFailures(every=10**9))
    got = rows(tmp_path / "out")
    assert len(got) == 10 and len({r["source_id"] for r in got}) == 5
    passages = {json.loads(line)["id"]: json.loads(line)["text"] for line in KJV.read_text().splitlines()}
    assert all(passages[r["source_id"]][:80] in r["prompt"] for r in got)
