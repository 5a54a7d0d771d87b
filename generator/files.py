"""The run folder: append-only Parquet shards, failures, state and summary.

    OUT/recipe.resolved.yaml   the recipe as run, with its hash (written before generation)
    OUT/data/shard-00000.parquet ...   shards in sample-index order, never rewritten
    OUT/manifest.json          every shard with its rows, bytes, sample-index range and sha256
    OUT/failures.jsonl         one line per failed row, with its reason
    OUT/state.json             progress up to the last commit (for --resume)
    OUT/summary.json           counts, tokens, wall time, tokens/s

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from generator.errors import UserError
from generator.records import PROVENANCE, SCHEMA, SOURCE_SCHEMA, Document


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def shard_paths(out: Path) -> list[Path]:
    return sorted((out / "data").glob("shard-*.parquet"))


def next_shard_path(out: Path) -> Path:
    """The path of the shard after the existing ones, found by listing (pilot rounds; the
    corpus numbers its shards from the run state instead)."""
    existing = shard_paths(out)
    return shard_path(out, int(existing[-1].stem.split("-")[1]) + 1 if existing else 0)


def shard_path(out: Path, number: int) -> Path:
    return out / "data" / f"shard-{number:05d}.parquet"


ROW_GROUP_ROWS = 1000  # rows per Parquet row group: a sampled read touches only the groups it needs


def write_shard(path: Path, docs: list[Document]) -> dict:
    """Write one shard (its folder is created); return its manifest entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = SOURCE_SCHEMA if docs and docs[0].rewrite >= 0 else SCHEMA  # provenance in rewrite runs only
    columns = {name: [getattr(d, name) for d in docs] for name in schema.names}  # flat fields: no asdict
    table = pa.Table.from_pydict(columns, schema=schema)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)
    return {"name": path.name, "rows": len(docs), "bytes": path.stat().st_size,
            "first_index": docs[0].sample_index, "last_index": docs[-1].sample_index,
            "sha256": file_sha256(path)}


def shard_entry(path: Path) -> dict:
    """The manifest entry of a shard already on disk."""
    index = pq.read_table(path, columns=["sample_index"]).column("sample_index")
    return {"name": path.name, "rows": len(index), "bytes": path.stat().st_size,
            "first_index": index[0].as_py(), "last_index": index[-1].as_py(), "sha256": file_sha256(path)}


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(out: Path, shards: list[dict]) -> None:
    write_json(out / "manifest.json", {"shards": shards, "rows": sum(s["rows"] for s in shards)})


def read_manifest(out: Path) -> list[dict]:
    """The shard entries of OUT/manifest.json ([] when there is none); a damaged file raises UserError."""
    path = out / "manifest.json"
    if not path.exists():
        return []
    data = read_json(path)
    shards = data.get("shards") if isinstance(data, dict) else None
    if not isinstance(shards, list):
        raise UserError(f"{path}: expected a mapping with a list of 'shards'", fix=verify_fix(out))
    for i, entry in enumerate(shards):
        wrong = manifest_entry_problem(entry)
        if wrong:
            raise UserError(f"{path}: shards[{i}] {wrong}", fix=verify_fix(out))
    return shards


ENTRY_FIELDS = {"name": str, "rows": int, "bytes": int, "first_index": int, "last_index": int}


def manifest_entry_problem(entry: Any) -> str:
    """What is wrong with one manifest entry ("" when nothing; sha256 is optional: older runs have none)."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not a mapping"
    for key, kind in ENTRY_FIELDS.items():
        value = entry.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            return f"{key}: expected a {'non-negative integer' if kind is int else 'string'}, got {value!r}"
    if "sha256" in entry and not isinstance(entry["sha256"], str):
        return f"sha256: expected a string, got {entry['sha256']!r}"
    span = entry["last_index"] - entry["first_index"] + 1
    if span < 1 or entry["rows"] > span:
        return f"rows {entry['rows']} do not fit indices {entry['first_index']}..{entry['last_index']}"
    return ""


MAX_RUN_FILE_BYTES = 256 << 20  # a run's JSON and YAML files are far smaller; a bigger one is not ours


def read_run_text(path: Path, max_bytes: int = MAX_RUN_FILE_BYTES) -> str:
    """The text of a run-folder file. OSError when it is not a regular file (a named pipe would block
    the read, /dev/zero would never end) or holds more than `max_bytes`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a named pipe opens at once instead of waiting
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file ({file_kind(info.st_mode)})")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"larger than {max_bytes >> 20} MiB")
    return data.decode("utf-8")


def file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe", stat.S_ISCHR: "a device",
             stat.S_ISBLK: "a device", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "not a file")


def read_json(path: Path) -> Any:
    """A JSON file of a run folder; a missing, unreadable or malformed file raises UserError."""
    try:
        return json.loads(read_run_text(path))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        raise UserError(f"{path}: cannot be read as JSON ({reason})", fix=verify_fix(path.parent)) from None


def read_run_yaml(path: Path) -> Any:
    """A YAML file of a run folder (the resolved recipe); a missing, unreadable or malformed file
    raises UserError."""
    try:
        return yaml.safe_load(read_run_text(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:120] if isinstance(exc, OSError) else type(exc).__name__
        raise UserError(f"{path}: cannot be read ({reason})", fix=verify_fix(path.parent)) from None


def verify_fix(out: Path) -> str:
    return f"run `generator verify {out}` for each problem and its repair"


def read_jsonl(path: Path, key: str, kind: type) -> list[dict]:
    """The rows of a JSONL file whose field `key` is a `kind` (none when the file is missing); a
    line cut short by a crash, or otherwise unreadable, is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get(key), kind):
            rows.append(row)
    return rows


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append rows to a JSONL file, synced to disk (nothing is written for no rows)."""
    rows = list(rows)
    if not rows:
        return
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_documents(out: Path, columns: list[str] | None = None, below: int | None = None) -> pa.Table:
    """The documents under `out` (only those of samples below index `below`, when given)."""
    paths = shard_paths(out)
    if not paths:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    filters = [("sample_index", "<", below)] if below is not None else None
    rewrite_run = PROVENANCE[-1] in pq.read_schema(paths[0]).names  # its shards carry the provenance columns
    schema = SOURCE_SCHEMA if rewrite_run else SCHEMA
    tables = [pq.read_table(p, columns=columns, schema=schema, filters=filters) for p in paths]
    return pa.concat_tables(tables)


MEASURE_ROWS = 20_000  # rows a measurement reads at most; above this it reads a uniform sample of rows


def count_documents(out: Path, below: int | None = None) -> int:
    """How many documents `out` holds (of samples below index `below`, when given)."""
    return sum(rows for _, rows in shards_below(out, below))


def shards_below(out: Path, below: int | None = None) -> list[tuple[Path, int]]:
    """Each shard under `out` holding samples below index `below` (every shard when None),
    with how many rows it holds of them: its first rows, as a shard is in index order. Counts
    come from the manifest, or from the shard itself when the manifest does not list it (pilot
    rounds have no manifest; without `below` a shard needs no sample_index column)."""
    listed = {entry["name"]: entry for entry in read_manifest(out)}
    found = []
    for path in shard_paths(out):
        if below is None:
            rows = listed[path.name]["rows"] if path.name in listed else pq.ParquetFile(path).metadata.num_rows
            found.append((path, rows))
            continue
        entry = listed.get(path.name) or shard_entry(path)
        if entry["last_index"] < below:
            found.append((path, entry["rows"]))
        elif entry["first_index"] < below:
            index = pq.read_table(path, columns=["sample_index"]).column("sample_index")
            found.append((path, int(pc.sum(pc.less(index, below)).as_py())))
    return found


def read_rows(out: Path, positions: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """The documents at row `positions` (sorted, counted across the shards in order) under
    `out`, in that order. Reads only the Parquet row groups that hold them."""
    columns = list(SCHEMA.names) if columns is None else columns
    positions = np.asarray(positions, dtype=np.int64)
    tables, start = [], 0
    for path, rows in shards_below(out):
        mine = positions[(positions >= start) & (positions < start + rows)] - start
        start += rows
        if len(mine):
            tables.append(read_shard_rows(path, mine, columns))
    if not tables:
        return SCHEMA.empty_table().select(columns)
    return pa.concat_tables(tables)


def read_shard_rows(path: Path, rows: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows `rows` (sorted) of one shard, read from the row groups that hold them only."""
    shard = pq.ParquetFile(path)
    sizes = [shard.metadata.row_group(i).num_rows for i in range(shard.num_row_groups)]
    bounds = np.cumsum([0, *sizes])
    groups = np.searchsorted(bounds, rows, side="right") - 1
    needed = np.unique(groups)
    start_in_read = np.zeros(len(sizes), dtype=np.int64)  # where each needed group begins in what is read
    start_in_read[needed] = np.cumsum([0, *(bounds[needed + 1] - bounds[needed])[:-1]])
    table = shard.read_row_groups(needed.tolist(), columns=columns)
    return table.take(pa.array(rows - bounds[groups] + start_in_read[groups]))


def read_sample(out: Path, n: int, rng: np.random.Generator, columns: list[str] | None = None,
                below: int | None = None) -> pa.Table:
    """At most `n` documents under `out` (of samples below index `below`), in index order: all
    of them (as `read_documents`) when there are `n` or fewer, else `n` rows drawn uniformly
    without replacement with `rng`, read from the row groups that hold them only."""
    total = count_documents(out, below)
    if total <= n:
        return read_documents(out, columns, below)
    return read_rows(out, np.sort(rng.choice(total, size=n, replace=False)), columns)
