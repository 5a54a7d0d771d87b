"""Rewrite-run test helpers: a small JSONL source, a template that rewrites `seed_doc`, a recipe."""
from __future__ import annotations

import json
from pathlib import Path

from fakes import Crash, FakeBackend
from generator.records import failed_result

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "{# variables: [seed_doc, seed_doc_id, audience] #}Rewrite for {{ audience }} ({{ seed_doc_id }}):\n{{ seed_doc }}"


def write_source(tmp: Path, n: int, name: str = "source.jsonl") -> Path:
    """`n` documents with ids d0.. (every seventh without text), two paragraphs each."""
    rows = [{"id": f"d{i}", "text": "" if i % 7 == 3 else f"Paragraph one of {i}.\n\nParagraph two of {i}."}
            for i in range(n)]
    path = tmp / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def source_recipe(tmp: Path, source: str, *, extra: str = "", size: str = "{shard_rows: 16}") -> Path:
    (tmp / "rewrite.j2").write_text(TEMPLATE)
    path = tmp / "rewrite.yaml"
    path.write_text(f"""
name: rewrite
seed: 7
roots: [{ROOT}, {tmp}]
source: {source}
grid:
  audience: {ROOT}/topics/audiences.yaml
templates:
  - path: {tmp}/rewrite.j2
size: {size}
sampling: {{max_tokens: 32}}
scoring: {{enabled: false}}
{extra}""")
    return path

KJV = ROOT / "recipes" / "data" / "kjv" / "seeds.jsonl"


class SeededFailures(FakeBackend):
    """Fails every request whose seed is divisible by `every`, and every request whose prompt holds
    `always` (a source that never gets a rewrite); answers `answer` requests per poll and raises
    Crash on poll `crash_on_poll` (a killed driver: what was flushed stays on disk)."""

    answer = 8

    def __init__(self, every: int = 5, always: str = "", crash_on_poll: int = 0):
        super().__init__()
        self.every, self.always, self.crash_on_poll, self.polls = every, always, crash_on_poll, 0

    def poll(self, timeout_s: float):
        self.polls += 1
        if self.polls == self.crash_on_poll:
            raise Crash()
        return super().poll(timeout_s)

    def generate(self, requests):
        bad = [r for r in requests if r.seed % self.every == 0 or (self.always and self.always in r.prompt)]
        good = super().generate([r for r in requests if r not in bad])
        by_id = {r.id: r for r in good} | {r.id: failed_result(r, "simulated engine error") for r in bad}
        return [by_id[r.id] for r in requests]
