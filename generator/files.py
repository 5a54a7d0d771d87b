"""The run folder: append-only Parquet shards, failures, state and summary.

    OUT/recipe.resolved.yaml   the recipe as run, with its hash (written before generation)
    OUT/data/shard-00000.parquet ...   one shard per completed batch, never rewritten
    OUT/failures.jsonl         one line per failed row, with its reason
    OUT/state.json             progress after the last completed batch (for --resume)
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
    """The path of the shard after the existing ones (its folder is created)."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    existing = shard_paths(out)
    number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    return out / "data" / f"shard-{number:05d}.parquet"


def write_shard(out: Path, docs: list[Document]) -> Path:
    """Write one new shard after the existing ones."""
    data = out / "data"
    path = next_shard_path(out)
    table = pa.Table.from_pylist([dataclasses.asdict(d) for d in docs], schema=SCHEMA)
    tmp = data / f".{path.name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


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


def read_documents(out: Path, columns: list[str] | None = None) -> pa.Table:
    paths = shard_paths(out)
    if not paths:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return pa.concat_tables([pq.read_table(p, columns=columns, schema=SCHEMA) for p in paths])
