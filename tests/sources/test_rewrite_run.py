"""Rewrite runs with the fake backend: exactly k rewrites per unit, provenance on every row,
coverage in the summary, and a resumed run that writes the same rows as an uninterrupted one."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from fakes import Crash
from generator.errors import UserError
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
        "short_units": [], "documents": {"total": 34, "complete": 34, "short": 0, "not_reached": 0}}


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


def long_source(tmp_path, n: int = 6):
    """`n` documents d0.., d{i} of 1 + i % 4 paragraphs, every paragraph a chunk at chunk_tokens 20."""
    paragraph = "Paragraph {} of {} says a few more words about the matter at hand today."
    rows = [{"id": f"d{i}", "text": "\n\n".join(paragraph.format(j, i) for j in range(1 + i % 4))}
            for i in range(n)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_long_document_cut_into_chunks_counts_once_among_the_source_documents(tmp_path):
    # regression: a document of three chunks that never got a rewrite was reported as three short
    # sources; the units stay counted as units, the documents once each
    src = long_source(tmp_path)
    spec = f"{{path: {src}, id_field: id, per_source: 2, chunk_tokens: 20, max_attempts: 2}}"
    plan = load_recipe(source_recipe(tmp_path, spec, extra="max_failure_rate: 0.9"))
    assert plan.source.num_units == 1 + 2 + 3 + 4 + 1 + 2 and plan.source.num_docs == 6
    summary = controller.run(plan, tmp_path / "out", SeededFailures(every=10**9, always=" of 2 says"))
    s = summary["sources"]
    assert (s["units"], s["complete"], s["short"], s["not_reached"]) == (13, 10, 3, 0)
    assert s["documents"] == {"total": 6, "complete": 5, "short": 1, "not_reached": 0}
    assert [(u["source_id"], u["chunk"]) for u in s["short_units"]] == [("d2", 0), ("d2", 1), ("d2", 2)]
    from generator.export.card import write_card
    card = " ".join(write_card(tmp_path / "out").read_text().split())
    assert "**6** source documents, cut into **13** units" in card
    assert "**5** documents got every rewrite of every chunk, **1** did not" in card


def test_documents_across_the_mark_of_a_stopped_run_count_once_as_not_reached(tmp_path):
    from generator.sources.config import Source
    from generator.sources.coverage import document_coverage
    from generator.sources.units import load_source
    spec = Source(path=str(long_source(tmp_path)), id_field="id", chunk_tokens=20, shuffle_window=1)
    source = load_source(spec, model="embedded:smollm2-135m", seed=0, max_tokens=32, where="test")
    # units: d0 | d1 d1 | d2 d2 d2 | d3 d3 d3 d3 | d4 | d5 d5
    assert [source.docs_before(p) for p in (0, 1, 3, 7, 10, 13)] == [0, 1, 2, 4, 4, 6]
    # pass 0 stopped at unit 7, inside d3: d3, d4 and d5 not reached; d2 short
    assert document_coverage(source, {"d2"}, set(), 7) == {"total": 6, "complete": 2, "short": 1,
                                                           "not_reached": 3}
    # a later pass stopped before units 3 (d2, also short) and 11 (d5): d5 alone is not reached
    assert document_coverage(source, {"d2"}, {3, 11}, 13) == {"total": 6, "complete": 4, "short": 1,
                                                              "not_reached": 1}


def test_a_budget_ends_at_the_last_whole_document_it_pays_for(tmp_path):
    # regression: a budget of 4 units took d2's first chunk of three, and counted d2 among the documents
    src = long_source(tmp_path)
    spec = (f"{{path: {src}, id_field: id, per_source: 1, chunk_tokens: 20, budget_tokens: 128, "
            "shuffle_window: 1}")
    plan = load_recipe(source_recipe(tmp_path, spec))  # 128 // (1 × max_tokens 32): 4 units
    assert plan.source.num_units == 3 and plan.source.num_docs == 2  # d0, and d1's two chunks
    summary = controller.run(plan, tmp_path / "out", SeededFailures(every=10**9))
    assert summary["sources"]["documents"] == {"total": 2, "complete": 2, "short": 0, "not_reached": 0}
    assert {r["source_id"] for r in rows(tmp_path / "out")} == {"d0", "d1"}
    first_long = tmp_path / "first-long.jsonl"
    first_long.write_text("".join(line + "\n" for line in src.read_text().splitlines()[2:]))  # d2: 3 chunks
    with pytest.raises(UserError, match=r"source.budget_tokens 64 pays for 2 unit\(s\), fewer than the "
                                        r"chunks of the first source document .*fix: raise budget_tokens"):
        load_recipe(source_recipe(tmp_path, f"{{path: {first_long}, id_field: id, per_source: 1, "
                                            "chunk_tokens: 20, budget_tokens: 64, shuffle_window: 1}"))


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


def test_a_resume_reuses_the_source_count_its_run_folder_recorded(tmp_path, monkeypatch):
    # regression: a resume read a JSONL source whole again to count it (7 to 9 s at 10^6 rows)
    import generator.sources.units as units
    src = write_source(tmp_path, 200)
    recipe = source_recipe(tmp_path, f"{{path: {src}, id_field: id, per_source: 2, shuffle_window: 16}}",
                           extra="max_failure_rate: 0.5", size="{shard_rows: 12}")
    whole = controller.run(load_recipe(recipe), tmp_path / "whole", SeededFailures(every=4))
    with pytest.raises(Crash):
        controller.run(load_recipe(recipe), tmp_path / "cut", SeededFailures(every=4, crash_on_poll=9))
    assert json.loads((tmp_path / "cut" / "source.count.json").read_text())["num_units"] == 171
    windows_read, real = [], units.window_units

    def counted(*args, **kwargs):
        windows_read.append(kwargs["number"])
        return real(*args, **kwargs)
    monkeypatch.setattr(units, "window_units", counted)
    plan = load_recipe(recipe, resume_from=tmp_path / "cut")
    assert windows_read == [0]  # only the window of unit 0, which the templates are probed with
    assert plan.source.num_units == 171 and plan.recipe_hash == load_recipe(recipe).recipe_hash
    summary = controller.run(plan, tmp_path / "cut", SeededFailures(every=4), resume=True)
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole") and summary["sources"] == whole["sources"]
    windows_read.clear()
    load_recipe(recipe, ["source.max_sources=50"], resume_from=tmp_path / "cut")  # counted under another key
    assert windows_read[:2] == [0, 1]
    (tmp_path / "cut" / "source.count.json").write_text('{"key": ')
    windows_read.clear()
    assert load_recipe(recipe, resume_from=tmp_path / "cut").source.num_units == 171 and len(windows_read) > 1
