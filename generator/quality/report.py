"""What the quality gates rejected, as summary.json's `rejected` and the dataset card's table.

Rejections are counted over every attempted row (pilot rounds included, like duplicates); a
template's or style's share is its rejected rows over those rows plus its documents in the corpus.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from generator.files import read_documents, read_jsonl

SHARE_COLUMNS = ("template", "style")


def read_rejected(out: Path) -> list[dict]:
    """The rows of OUT/rejected.jsonl (a line cut short by a crash is skipped)."""
    return read_jsonl(out / "rejected.jsonl", "gate", str)


def rejection_summary(out: Path, by_gate: dict) -> dict:
    """summary.json's `rejected`: totals per gate (the run's counters), per rule (datatrove's
    reason names, the evaluation set), and per template and style with their share rejected."""
    rows = read_rejected(out)
    kept = read_documents(out, columns=list(SHARE_COLUMNS)).to_pydict()
    return {"total": sum(by_gate.values()), "by_gate": dict(sorted(by_gate.items())),
            "by_rule": dict(Counter(f"{r['gate']}: {r.get('rule', '')}" for r in rows).most_common()),
            **{f"by_{column}": share_table(rows, kept[column], column) for column in SHARE_COLUMNS}}


def share_table(rows: list[dict], kept: list[str], column: str) -> dict:
    """value -> {rejected, kept, share}, values with a rejection first (most rejected first)."""
    rejected = Counter(str(r.get(column, "")) for r in rows)
    documents = Counter(kept)
    values = sorted(set(rejected) | set(documents), key=lambda v: (-rejected[v], v))
    return {v: {"rejected": rejected[v], "kept": documents[v],
                "share": round(rejected[v] / max(1, rejected[v] + documents[v]), 4)} for v in values if v}


def quality_section(summary: dict) -> dict | None:
    """The card's quality table from summary.json's `rejected` (None when the run had no gates)."""
    r = summary.get("rejected")
    if not isinstance(r, dict):
        return None
    attempted = summary.get("num_attempted") or 0
    share = (lambda n: f"{n / attempted:.1%}") if attempted else (lambda n: "n/a")
    gates = [(g, n, share(n)) for g, n in (r.get("by_gate") or {}).items()]
    rules = list((r.get("by_rule") or {}).items())[:10]
    groups = [(column, value, v["rejected"], v["kept"], f"{v['share']:.1%}")
              for column in SHARE_COLUMNS for value, v in list((r.get(f"by_{column}") or {}).items())[:12]]
    return {"total": r.get("total", 0), "attempted": attempted, "gates": gates, "rules": rules,
            "groups": groups}
