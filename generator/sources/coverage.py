"""Per-source coverage of a rewrite run: how many units got all k rewrites, which did not, and why.

Counted from the miss rows on disk (failures, duplicates, rejected: each carries `sample_index`
and the unit's `source_id` and `chunk`) and the pass mapping they rebuild (`slots.py`), never
from the corpus itself: the cost grows with the misses, not with the source. A unit is short when
a rewrite of it missed in its last try; units past a stopped run's mark are `not_reached`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from generator.files import read_jsonl
from generator.sources.slots import DISCARDED, MISS_FILES, miss_indices, rebuild_passes
from generator.sources.units import SourcePlan

MAX_LISTED = 100  # short units named in the summary


def miss_reason(name: str, row: dict) -> str:
    """A short label of why a sample made no document."""
    if name == "rejected.jsonl":
        return f"rejected by {row.get('gate', '?')}"
    if name == DISCARDED:
        return "pilot point not kept"
    reason = str(row.get("reason", "?"))
    if name == "duplicates.jsonl":
        return "near duplicate" if reason.startswith("near") else "exact duplicate"
    return "failed: " + reason.split(" (")[0]


def source_coverage(out: Path, num_units: int, per_source: int, max_attempts: int, mark: int,
                    source: SourcePlan | None = None) -> dict:
    """Coverage of the run in `out`, committed up to sample `mark`: by unit, and with `source` (the
    plan's counted source) by source document too, a document cut into chunks counted once."""
    passes = rebuild_passes(num_units * per_source, max_attempts, miss_indices(out, mark), mark)
    newest = passes.passes[-1]
    missing = set(passes.missing())
    first_unreached = num_units  # units from here on were not tried (pass 0 stopped at the mark)
    not_reached: set[int] = set()  # units of a later pass not tried
    if mark < newest.end:  # a run stopped inside a pass: its slots from the mark on were not tried
        if newest.slots is None:
            first_unreached = mark // per_source
        else:
            not_reached = {int(s) // per_source for s in newest.slots[mark - newest.start:]}
    rows = {}
    lo = newest.start
    for name in MISS_FILES:
        for row in read_jsonl(out / name, "sample_index", int):
            if lo <= row["sample_index"] < mark:
                rows[row["sample_index"]] = (miss_reason(name, row), row)
    short: dict[int, dict] = {}
    reasons: Counter = Counter()
    for index, (reason, row) in sorted(rows.items()):
        unit = passes.slot(index) // per_source
        if passes.slot(index) not in missing or unit in not_reached or unit >= first_unreached:
            continue
        reasons[reason] += 1
        entry = short.setdefault(unit, {"source_id": row.get("source_id", ""), "chunk": row.get("chunk", 0),
                                        "missing": 0, "reasons": []})
        entry["missing"] += 1
        if reason not in entry["reasons"]:
            entry["reasons"].append(reason)
    unreached = len(not_reached) + num_units - first_unreached
    coverage = {"units": num_units, "per_source": per_source, "complete": num_units - len(short) - unreached,
                "short": len(short), "not_reached": unreached, "reasons": dict(reasons.most_common()),
                "short_units": [short[u] for u in sorted(short)][:MAX_LISTED]}
    if source is not None:
        short_ids = {entry["source_id"] for entry in short.values()}
        coverage["documents"] = document_coverage(source, short_ids, not_reached, first_unreached)
    return coverage


def document_coverage(source: SourcePlan, short_ids: set[str], not_reached: set[int],
                      first_unreached: int) -> dict:
    """Source documents: `total`, `complete` (every chunk got all its rewrites), `short` (a chunk
    fell short), `not_reached` (a chunk not tried yet, none short). `short_ids`: the documents of
    the short units; `not_reached`: units of a later pass not tried; units from `first_unreached`
    on were not tried in pass 0 (a document across that mark counts as not reached)."""
    unreached_ids = {u.source_id for u in source.units(sorted(not_reached))} - short_ids
    cut = 0
    if first_unreached < source.num_units:
        cut = source.num_docs - source.docs_before(first_unreached)
        across = source.units([first_unreached])[0]
        cut += across.chunk > 0 and across.source_id not in short_ids
    unreached = len(unreached_ids) + cut
    return {"total": source.num_docs, "complete": source.num_docs - len(short_ids) - unreached,
            "short": len(short_ids), "not_reached": unreached}
