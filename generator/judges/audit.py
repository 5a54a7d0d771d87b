"""The audit trail of a scoring run and what can be rebuilt from it without a single call.

`AuditLog` appends one JSON line per record: a `run` header, one `call` per judge call (stage,
prompt hash, raw answer, finish reason, failure kind, parsed value, tokens; written by
`judge_calls.ask_all`) and one `batch` per judged batch (documents, proposed partition,
verification verdicts, final clusters; written by `diversity.score_corpus`). `recompute`
reads the batches back and scores them under another invalid-cluster policy.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from generator.judges.protocol import INVALID_POLICIES, ScoreError, apply_policy, batch_score, summarize_scores

log = logging.getLogger(__name__)


class AuditLog:
    """Appends records to a JSONL file (created with its folder); flushed line by line, so a
    run that stops half-way leaves every call made so far."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_audit(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"{path}: audit file not found", fix="pass the audit JSONL written beside a report")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ScoreError(f"{path}:{number}: not a JSON line", fix="pass an audit file written by --audit") from None
    return records


def recompute(path: str | Path, policy: str, *, seed: int = 0) -> dict:
    """D and its interval rebuilt from an audit file under invalid-cluster `policy`, with no
    judge call. Uses the last run recorded in the file."""
    if policy not in INVALID_POLICIES:
        raise ScoreError(f"invalid policy {policy!r} is not allowed", fix=f"use one of {', '.join(INVALID_POLICIES)}")
    records = read_audit(path)
    starts = [i for i, r in enumerate(records) if r.get("type") == "run"]
    header = records[starts[-1]] if starts else {}
    batches = [r for r in records[starts[-1] if starts else 0:] if r.get("type") == "batch"]
    if not batches:
        raise ScoreError(f"{path}: no batch records", fix="pass the audit file of a finished scoring run")
    k = int(header.get("k") or len(batches[0]["docs"]))
    main = [b for b in batches if b.get("stage") != "pilot"] or batches
    scores, failures = [], Counter()
    for b in main:
        clusters = _rescored(b, policy)
        if clusters is None:
            failures[b.get("failure") or "dropped"] += 1
        else:
            scores.append(batch_score(clusters))
    if len(scores) < 1:
        raise ScoreError(f"{path}: no batch can be scored under policy {policy!r}", fix="try another policy")
    summary = summarize_scores(np.array(scores), sum(failures.values()), k, np.random.default_rng(seed))
    return {"judge": header.get("judge", ""), "k": k, "invalid_policy": policy, **summary,
            "num_scored": len(scores), "num_failed": sum(failures.values()), "failures": dict(failures),
            "calls": 0, "recomputed_from": str(path)}


def _rescored(batch: dict, policy: str):
    """The batch's clusters under `policy`, or None when it cannot be scored."""
    if batch["failed"] and batch.get("failure") != "dropped":
        return None  # the judge gave no usable answer: no policy can score it
    proposal = [tuple(c) for c in batch["proposal"]]
    verdicts = [(int(j), bool(v)) for j, v in batch.get("verdicts", [])]
    clusters, _, _ = apply_policy(proposal, verdicts, policy)
    return clusters or None
