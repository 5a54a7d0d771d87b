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


def source_coverage(out: Path, num_units: int, per_source: int, max_attempts: int, mark: int) -> dict:
    """Coverage of the run in `out`, committed up to sample `mark`."""
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
    return {"units": num_units, "per_source": per_source, "complete": num_units - len(short) - unreached,
            "short": len(short), "not_reached": unreached, "reasons": dict(reasons.most_common()),
            "short_units": [short[u] for u in sorted(short)][:MAX_LISTED]}
