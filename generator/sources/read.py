"""Streaming a source corpus's rows in batches, from any row on, never the whole corpus in memory.

Formats: a Parquet file or a folder of them (read row group by row group; a start row skips whole
files and row groups by their metadata), a JSONL or JSONL.gz file or a folder of them (line by
line; a start row is reached by counting lines from the nearest row an earlier read noted), a
folder written by `datasets.save_to_disk`
(memory-mapped Arrow, sliced). A path with `://` is opened through fsspec. A row's text is None
when it is missing or not a string (the row is skipped as empty, never an error mid-run).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from generator.errors import UserError
from generator.sources.config import Source, is_url

BATCH_ROWS = 4096  # rows read at once
Batch = tuple[list[str], list]  # (ids, texts) of consecutive rows; a text is None when unusable


@dataclass(frozen=True)
class Files:
    """Where a source's rows live: its format and files, in row order."""

    kind: Literal["parquet", "jsonl", "saved"]
    paths: tuple[str, ...]
    url: bool = False
    name: str = ""  # the file or folder's name, for `seed_doc_source`


def find_files(spec: Source, where: str) -> Files:
    """The source's format and files; UserError when it is missing or of no known format."""
    fs, root = _filesystem(spec.path)
    name = root.rstrip("/").rsplit("/", 1)[-1]
    if not fs.exists(root):
        raise UserError(f"{where}: source.path {spec.path}: no such file or folder",
                        fix="check source.path (relative paths start at the recipe's folder)")
    url = is_url(spec.path)
    if fs.isdir(root):
        listing = sorted(fs.find(root))
        if any(p.endswith(("dataset_info.json", "dataset_dict.json")) for p in listing) and not url:
            return Files("saved", (root,), url, name)
        parquet = tuple(p for p in listing if p.endswith(".parquet"))
        jsonl = tuple(p for p in listing if p.endswith((".jsonl", ".jsonl.gz", ".ndjson")))
        if parquet or jsonl:
            return Files("parquet" if parquet else "jsonl", parquet or jsonl, url, name)
        raise UserError(f"{where}: source.path {spec.path}: the folder holds no .parquet, .jsonl or "
                        ".jsonl.gz files and no saved dataset",
                        fix="point source.path at a Parquet or JSONL file or folder, or a save_to_disk "
                            "folder")
    if root.endswith(".parquet"):
        return Files("parquet", (root,), url, name)
    if root.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return Files("jsonl", (root,), url, name)
    raise UserError(f"{where}: source.path {spec.path}: unknown format",
                    fix="use a .parquet, .jsonl or .jsonl.gz file, a folder of them, or a save_to_disk "
                        "folder")


def _filesystem(path: str):
    import fsspec
    from fsspec.core import url_to_fs

    if is_url(path):
        return url_to_fs(path)
    return fsspec.filesystem("file"), str(Path(path))


def check_fields(files: Files, spec: Source, where: str) -> None:
    """The text and id fields exist (by the schema, or the first row of a JSONL source)."""
    names = _column_names(files, where)
    if not names and files.kind == "jsonl":
        return  # no rows at all: the count says the source is empty
    for key, field in (("text_field", spec.text_field), ("id_field", spec.id_field)):
        if field and field not in names:
            raise UserError(f"{where}: source.{key} {field!r} is not a field of {spec.path}; it has "
                            f"{', '.join(names) or 'none'}", fix=f"set source.{key} to one of them")


def _column_names(files: Files, where: str) -> list[str]:
    if files.kind == "parquet":
        import pyarrow.parquet as pq
        fs, _ = _filesystem(files.paths[0])
        try:
            with fs.open(files.paths[0], "rb") as f:
                return list(pq.ParquetFile(f).schema_arrow.names)
        except Exception as exc:  # noqa: BLE001 (pyarrow raises several kinds for a damaged file)
            raise UserError(f"{where}: {files.paths[0]}: cannot read Parquet ({exc})",
                            fix="check that the file is Parquet") from None
    if files.kind == "saved":
        return list(_open_saved(files.paths[0], where).column_names)
    for _, row in _json_lines(files, 0, where):
        return list(row)
    return []


def iter_batches(files: Files, spec: Source, start: int, where: str,
                 marks: dict[int, tuple[int, int, int]] | None = None) -> Iterator[Batch]:
    """(ids, texts) of consecutive rows from row `start` on, to the end of the source. `marks`
    (JSONL): where rows lie, learned by earlier reads (see `_json_lines`), kept for later ones."""
    if files.kind == "parquet":
        tables = _parquet_tables(files, spec, start)
    elif files.kind == "saved":
        tables = _saved_tables(files, spec, start, where)
    else:
        yield from _jsonl_batches(files, spec, start, where, marks)
        return
    for table in tables:
        texts = table.column(spec.text_field).to_pylist()
        texts = [t if isinstance(t, str) else None for t in texts]
        ids = (["" if v is None else str(v) for v in table.column(spec.id_field).to_pylist()]
               if spec.id_field else [text_id(t or "") for t in texts])
        yield ids, texts


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parquet_tables(files: Files, spec: Source, start: int):
    import pyarrow.parquet as pq

    columns = [spec.text_field] + ([spec.id_field] if spec.id_field else [])
    skip = start
    for path in files.paths:
        fs, _ = _filesystem(path)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            if skip >= pf.metadata.num_rows:
                skip -= pf.metadata.num_rows
                continue
            for g in range(pf.metadata.num_row_groups):
                rows = pf.metadata.row_group(g).num_rows
                if skip >= rows:
                    skip -= rows
                    continue
                table = pf.read_row_group(g, columns=columns)
                yield table.slice(skip)
                skip = 0


def _open_saved(path: str, where: str):
    import datasets

    data = datasets.load_from_disk(path)
    if isinstance(data, datasets.DatasetDict):
        if len(data) != 1:
            raise UserError(f"{where}: source.path {path}: the saved dataset has splits {sorted(data)}",
                            fix=f"point source.path at one split, e.g. {path}/{sorted(data)[0]}")
        data = next(iter(data.values()))
    return data


def _saved_tables(files: Files, spec: Source, start: int, where: str):
    data = _open_saved(files.paths[0], where)
    columns = [spec.text_field] + ([spec.id_field] if spec.id_field else [])
    data = data.select_columns(columns).with_format("arrow")
    for lo in range(start, len(data), BATCH_ROWS):
        yield data[lo:lo + BATCH_ROWS]


MARK_ROWS = 1000  # a plain JSONL source's reads note where every this-many-th row starts


def _json_lines(files: Files, start: int, where: str,
                marks: dict[int, tuple[int, int, int]] | None = None) -> Iterator[tuple[int, dict]]:
    """(row number, object) of the JSONL rows from `start` on; rows before it are counted, not
    parsed. `marks`: row -> (file, byte offset, line number) of every MARK_ROWS-th row of plain
    (not gzipped) files, filled as rows are passed; a read starts at the nearest mark at or before
    `start`, so a source's lines are counted once, not once per read."""
    row, first, offset, number = max(((r, *m) for r, m in (marks or {}).items() if r <= start),
                                     default=(0, 0, 0, 0))
    for index, path in enumerate(files.paths[first:], first):
        fs, _ = _filesystem(path)
        with fs.open(path, "rb") as raw:
            plain = not path.endswith(".gz")
            if plain and index == first and offset:
                raw.seek(offset)
            at = offset if index == first else 0
            stream = raw if plain else gzip.open(raw)
            for number, line in enumerate(stream, number + 1 if index == first else 1):
                line_at, at = at, at + len(line)
                if not line.strip():
                    continue
                if plain and marks is not None and row % MARK_ROWS == 0:
                    marks.setdefault(row, (index, line_at, number - 1))
                row += 1
                if row <= start:
                    continue
                yield row - 1, _parse_line(line, f"{path}:{number}", where)


def _parse_line(line: bytes, place: str, where: str) -> dict:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: {place}: not a JSON line ({exc})",
                        fix="write one JSON object per line") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: {place}: expected a JSON object", fix="write one JSON object per line")
    return obj


def _jsonl_batches(files: Files, spec: Source, start: int, where: str,
                   marks: dict[int, tuple[int, int, int]] | None = None) -> Iterator[Batch]:
    ids: list[str] = []
    texts: list = []
    for _, row in _json_lines(files, start, where, marks):
        text = row.get(spec.text_field)
        text = text if isinstance(text, str) else None
        texts.append(text)
        ids.append(str(row.get(spec.id_field, "")) if spec.id_field else text_id(text or ""))
        if len(texts) == BATCH_ROWS:
            yield ids, texts
            ids, texts = [], []
    if texts:
        yield ids, texts


def fingerprint(spec: Source) -> str:
    """The source for the recipe hash: its files' names and sizes (a URL: itself), not their bytes."""
    if is_url(spec.path):
        return spec.path
    fs, root = _filesystem(spec.path)
    if not fs.exists(root):
        return Path(root).name
    paths = sorted(fs.find(root)) if fs.isdir(root) else [root]
    parts = [f"{Path(p).relative_to(Path(root).parent)}:{fs.size(p)}" for p in paths]
    return Path(root).name + "#" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
