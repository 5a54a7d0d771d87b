"""Results that came back ahead of the commit point, kept beside the shards until committed.

The loop commits samples in index order, so a finished result waits while an earlier sample is
still generating; on a slow engine that can be minutes of finished work. Each such result is
appended to OUT/journal.jsonl as it arrives; a resumed run reads the file and answers those
requests from it instead of generating them again (a request's id is a hash of its prompt,
model, seed and sampling settings, so a journaled result is exactly the one that request gets).
At every flush the file is rewritten with the results still waiting; a finished run removes it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

from generator.files import atomic_write_text
from generator.records import BESIDE_FIELDS, Result

JOURNAL = "journal.jsonl"
_FIELDS = [f.name for f in dataclasses.fields(Result) if f.name not in BESIDE_FIELDS]


def journal_path(out: Path) -> Path:
    return out / JOURNAL


def _line(index: int, result: Result) -> str:
    row = {"sample_index": index, **{f: getattr(result, f) for f in _FIELDS}}  # flat: no asdict
    return json.dumps(row, ensure_ascii=False) + "\n"


def append_results(out: Path, rows: Iterable[tuple[int, Result]]) -> None:
    """Append (sample index, result) rows. Not synced: a killed process loses nothing the
    kernel has; a line cut short by a machine crash is skipped on reading."""
    text = "".join(_line(i, r) for i, r in rows)
    if text:
        with open(journal_path(out), "a", encoding="utf-8") as f:
            f.write(text)


def rewrite_journal(out: Path, rows: Iterable[tuple[int, Result]]) -> None:
    """Replace the journal with `rows` (the results still waiting to be committed)."""
    rows = list(rows)
    if rows or journal_path(out).is_file():
        atomic_write_text(journal_path(out), "".join(_line(i, r) for i, r in rows))


def read_journal(out: Path) -> dict[str, Result]:
    """Request id -> result of every readable journal line (a damaged line is skipped: its
    request is generated again)."""
    path = journal_path(out)
    if not path.is_file():
        return {}
    found: dict[str, Result] = {}
    fields = {f.name for f in dataclasses.fields(Result)}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            result = Result(**{k: v for k, v in row.items() if k in fields})
        except (ValueError, TypeError):
            continue
        if isinstance(result.id, str) and isinstance(result.text, str):
            found[result.id] = result
    return found


def remove_journal(out: Path) -> None:
    journal_path(out).unlink(missing_ok=True)


def replay(backend, journaled: dict[str, Result], requests) -> dict[str, Result]:
    """Request id -> result of those of `requests` that the journal answers (taken out of
    `journaled`), given the verdict of the backend's own gates where it has them
    (`judge_finished`: the LLM score gate), as a result it generated would carry: the journal
    keeps no verdict."""
    found = [journaled.pop(r.id) for r in requests if r.id in journaled]
    judge = getattr(backend, "judge_finished", None)
    if found and judge is not None:
        found = judge(found)
    return {r.id: r for r in found}
