"""Reading a source streaming: every format gives the same rows, from any start row."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generator.errors import UserError
from generator.sources.config import Source
from generator.sources.read import check_fields, find_files, iter_batches, text_id

ROWS = [{"id": f"r{i}", "text": f"text {i}" if i % 5 else None, "n": i} for i in range(23)]


def rows_of(path, start=0, **spec):
    s = Source(path=str(path), **spec)
    files = find_files(s, "test")
    check_fields(files, s, "test")
    ids, texts = [], []
    for batch_ids, batch_texts in iter_batches(files, s, start, "test"):
        ids += batch_ids
        texts += batch_texts
    return ids, texts


def write_all(tmp):
    """The same rows as Parquet (two files, small row groups), JSONL, JSONL.gz and a saved dataset."""
    import datasets
    lines = "".join(json.dumps(r) + "\n" for r in ROWS)
    (tmp / "a.jsonl").write_text(lines)
    with gzip.open(tmp / "a.jsonl.gz", "wt") as f:
        f.write(lines)
    folder = tmp / "parquet"
    folder.mkdir()
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table.slice(0, 10), folder / "part-0.parquet", row_group_size=3)
    pq.write_table(table.slice(10), folder / "part-1.parquet", row_group_size=4)
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp / "saved"))
    return [tmp / "a.jsonl", tmp / "a.jsonl.gz", folder, tmp / "saved"]


@pytest.mark.parametrize("start", [0, 1, 9, 10, 17, 22, 23])
def test_every_format_gives_the_same_rows_from_any_start(tmp_path, start):
    want_texts = [r["text"] for r in ROWS][start:]
    for path in write_all(tmp_path) if start == 0 else write_all(tmp_path)[:3]:
        ids, texts = rows_of(path, start, id_field="id")
        assert texts == want_texts, path
        assert ids == [r["id"] for r in ROWS][start:], path
    if start:  # the saved dataset, once written
        assert rows_of(tmp_path / "saved", start, id_field="id")[1] == want_texts


def test_without_an_id_field_the_id_is_a_hash_of_the_text(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "abc"}\n\n{"text": "abd"}\n')
    ids, texts = rows_of(tmp_path / "a.jsonl")
    assert texts == ["abc", "abd"] and ids == [text_id("abc"), text_id("abd")] and ids[0] != ids[1]


def test_a_non_text_value_reads_as_no_text(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": 5}\n{"other": 1}\n{"text": "ok"}\n')
    assert rows_of(tmp_path / "a.jsonl")[1] == [None, None, "ok"]


@pytest.mark.parametrize("make, match", [
    (lambda tmp: tmp / "nothing.jsonl", "no such file or folder"),
    (lambda tmp: (tmp / "x.csv").write_text("a") and tmp / "x.csv", "unknown format"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "holds no .parquet"),
])
def test_a_missing_or_unknown_source_is_refused(tmp_path, make, match):
    with pytest.raises(UserError, match=match):
        rows_of(make(tmp_path))


def test_a_field_that_is_not_there_is_named_with_the_fields_there_are(tmp_path):
    write_all(tmp_path)
    with pytest.raises(UserError, match=r"source.text_field 'body' is not a field .* has id, text, n"):
        rows_of(tmp_path / "parquet", text_field="body")
    with pytest.raises(UserError, match=r"source.id_field 'key' is not a field"):
        rows_of(tmp_path / "a.jsonl", id_field="key")


def test_a_bad_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n{broken\n')
    with pytest.raises(UserError, match=r"a.jsonl:2: not a JSON line"):
        rows_of(tmp_path / "a.jsonl")


def test_a_jsonl_read_starts_at_the_nearest_row_an_earlier_read_noted(tmp_path, monkeypatch):
    # regression: every read of a window counted the lines from the top of the file again, so the
    # windows a resume or a fill pass reads one by one cost a line count of the source each
    import generator.sources.read as read
    monkeypatch.setattr(read, "MARK_ROWS", 10)
    first = "".join(json.dumps({"id": f"a{i}", "text": f"first {i}"}) + "\n" + ("\n" if i % 7 == 0 else "")
                    for i in range(35))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text(first)
    second = "".join(json.dumps({"id": f"b{i}", "text": f"second {i}"}) + "\n" for i in range(30))
    (tmp_path / "src" / "b.jsonl").write_text(second)
    spec = Source(path=str(tmp_path / "src"), id_field="id")
    files = find_files(spec, "test")
    marks: dict = {}
    whole = [i for ids, _ in iter_batches(files, spec, 0, "test", marks) for i in ids]
    assert sorted(marks) == list(range(0, 65, 10)) and marks[40][0] == 1  # row 40: b.jsonl's sixth line
    for start in (0, 9, 10, 34, 35, 41, 64, 65):
        got = [i for ids, _ in iter_batches(files, spec, start, "test", marks) for i in ids]
        assert got == whole[start:], start
    # the rows before a mark are not read again: spoiling the lines above row 40 leaves the read from it
    (tmp_path / "src" / "a.jsonl").write_text(first.replace("\n", " "))
    assert [i for ids, _ in iter_batches(files, spec, 41, "test", marks) for i in ids] == whole[41:]


def test_a_bad_line_read_from_a_mark_is_named_by_its_own_line_number(tmp_path, monkeypatch):
    import generator.sources.read as read
    monkeypatch.setattr(read, "MARK_ROWS", 10)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"text": f"t {i}"}) + "\n\n" for i in range(25)) + "{oops\n")
    spec = Source(path=str(path))
    files, marks = find_files(spec, "test"), {}
    with pytest.raises(UserError, match=r"s.jsonl:51: not a JSON line"):
        list(iter_batches(files, spec, 0, "test", marks))
    assert marks[20][2] == 40  # row 20 is line 41: forty lines before it
    with pytest.raises(UserError, match=r"s.jsonl:51: not a JSON line"):
        list(iter_batches(files, spec, 22, "test", marks))
