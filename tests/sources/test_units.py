"""Units in the seeded order: fixed by the seed, the same fetched in any order as read in one pass."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generator.errors import UserError
from generator.sources.config import Source
from generator.sources.units import load_source, sample_texts


def parquet_source(tmp, n=250):
    rows = [{"id": f"d{i}", "text": "" if i % 9 == 4 else f"document {i}\n\nsecond paragraph {i} " + "w " * (i % 13)}
            for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), tmp / "s.parquet", row_group_size=32)
    return tmp / "s.parquet", rows


def load(path, seed=1, **spec):
    return load_source(Source(path=str(path), id_field="id", **spec), model="", seed=seed, max_tokens=8,
                       where="test")


def test_every_document_with_text_is_one_unit_in_a_seeded_order(tmp_path):
    path, rows = parquet_source(tmp_path)
    plan = load(path, shuffle_window=40)
    units = plan.units(range(plan.num_units))
    assert sorted(u.source_id for u in units) == sorted(r["id"] for r in rows if r["text"])
    assert [u.position for u in units] == list(range(plan.num_units))
    assert plan.num_rows == 250 and plan.num_docs == plan.num_units
    assert [u.source_id for u in load(path, shuffle_window=40).units(range(20))] == [u.source_id for u in units[:20]]
    other = [u.source_id for u in load(path, seed=2, shuffle_window=40).units(range(plan.num_units))]
    assert other != [u.source_id for u in units]  # the seed orders the units
    stream = [u.source_id for u in load(path, shuffle_window=1).units(range(plan.num_units))]
    assert stream == [r["id"] for r in rows if r["text"]]  # window 1: stream order


def test_units_fetched_backwards_and_at_random_equal_those_read_in_order(tmp_path):
    path, _ = parquet_source(tmp_path)
    plan = load(path, shuffle_window=16)
    forward = plan.units(range(plan.num_units))
    fresh = load(path, shuffle_window=16)
    for p in [200, 3, 150, 149, 0, 221, 17]:
        if p < plan.num_units:
            assert fresh.units([p])[0] == forward[p]


def test_max_sources_takes_the_first_documents_of_the_seeded_order(tmp_path):
    path, _ = parquet_source(tmp_path)
    full = load(path, shuffle_window=40)
    cut = load(path, shuffle_window=40, max_sources=50)
    assert cut.num_units == 50 and cut.num_docs == 50
    assert cut.units(range(50)) == full.units(range(50))


def test_chunks_of_a_document_are_consecutive_units(tmp_path):
    path, rows = parquet_source(tmp_path, n=30)
    plan = load_source(Source(path=str(path), id_field="id", chunk_tokens=16, shuffle_window=1),
                       model="embedded:smollm2-135m", seed=0, max_tokens=8, where="test")
    units = plan.units(range(plan.num_units))
    assert plan.num_units > plan.num_docs == sum(1 for r in rows if r["text"])
    for a, b in zip(units, units[1:]):
        if b.chunk:
            assert (b.source_id, b.chunk) == (a.source_id, a.chunk + 1)
    assert all(u.chunk < u.num_chunks for u in units)


def test_a_budget_cuts_the_units(tmp_path):
    path, _ = parquet_source(tmp_path)
    plan = load_source(Source(path=str(path), per_source=2, budget_tokens=160), model="", seed=0, max_tokens=8,
                       where="test")
    assert plan.num_units == 10  # 160 // (2 × 8)


def test_an_empty_source_is_refused(tmp_path):
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    with pytest.raises(UserError, match=r"holds no rows with text in 'text' \(2 rows read\)"):
        load_source(Source(path=str(tmp_path / "e.jsonl")), model="", seed=0, max_tokens=8, where="test")


def test_a_reference_sample_spreads_over_the_source(tmp_path):
    path, _ = parquet_source(tmp_path)
    plan = load(path)
    texts = sample_texts(plan, 10)
    assert len(texts) == 10 and texts[0] == plan.units([0])[0].text
    assert texts[-1] == plan.units([plan.num_units - 1])[0].text
