"""The run folder: append-only Parquet shards, failures, state and summary.

    OUT/recipe.resolved.yaml   the recipe as run, with its hash (written before generation)
    OUT/data/shard-00000.parquet ...   shards in sample-index order, never rewritten
    OUT/manifest.json          every shard with its rows, bytes and sample-index range
    OUT/failures.jsonl         one line per failed row, with its reason
    OUT/state.json             progress up to the last commit (for --resume)
    OUT/summary.json           counts, tokens, wall time, tokens/s

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from generator.records import SCHEMA, Document


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
    table = pa.Table.from_pylist([dataclasses.asdict(d) for d in docs], schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)
    return {"name": path.name, "rows": len(docs), "bytes": path.stat().st_size,
            "first_index": docs[0].sample_index, "last_index": docs[-1].sample_index}


def shard_entry(path: Path) -> dict:
    """The manifest entry of a shard already on disk."""
    index = pq.read_table(path, columns=["sample_index"]).column("sample_index")
    return {"name": path.name, "rows": len(index), "bytes": path.stat().st_size,
            "first_index": index[0].as_py(), "last_index": index[-1].as_py()}


def write_manifest(out: Path, shards: list[dict]) -> None:
    write_json(out / "manifest.json", {"shards": shards, "rows": sum(s["rows"] for s in shards)})


def read_manifest(out: Path) -> list[dict]:
    path = out / "manifest.json"
    return json.loads(path.read_text())["shards"] if path.is_file() else []


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
    return pa.concat_tables([pq.read_table(p, columns=columns, schema=SCHEMA, filters=filters) for p in paths])
