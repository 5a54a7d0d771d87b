"""A source's count kept in the run folder, so a resume does not read the whole source again.

    OUT/source.count.json   the windows (first row, unit, document of each) and the totals that
                            `load_source` counted, with the key of what the count depends on

The key hashes the source's files (names and sizes, `read.fingerprint`), the `source:` section,
the generator model (its tokenizer cuts the chunks), the seed (the order within windows) and
max_tokens (the budget's units). A record whose key differs, or that cannot be read, is ignored:
the source is counted again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from generator.files import read_run_text, write_json
from generator.sources.config import Source
from generator.sources.read import fingerprint

COUNT_FILE = "source.count.json"


def count_key(spec: Source, model: str, seed: int, max_tokens: int) -> str:
    """What a source's count depends on, hashed."""
    inputs = {"files": fingerprint(spec), "source": dataclasses.asdict(spec), "model": model, "seed": seed,
              "max_tokens": max_tokens}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def write_count(out: Path, key: str, totals: dict, windows: list[tuple[int, int, int]]) -> None:
    write_json(out / COUNT_FILE, {"key": key, **totals, "windows": [list(w) for w in windows]})


def read_count(out: Path, key: str) -> dict | None:
    """The record in `out` when it was counted under `key` and reads whole; else None."""
    try:
        record = json.loads(read_run_text(out / COUNT_FILE))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    windows = record.get("windows")
    totals = [record.get(k) for k in ("num_units", "num_docs", "num_rows")]
    numbers = [*totals, *(x for w in windows or [] if isinstance(w, list) for x in w)]
    if not windows or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in numbers):
        return None
    if any(not isinstance(w, list) or len(w) != 3 for w in windows) or not record["num_units"]:
        return None
    return record
