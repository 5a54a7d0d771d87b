"""The same recipe and seed give the same prompts, ids and Parquet rows (and, when steering,
the same controller rounds) as the rows saved in tests/data/golden. Regenerate the files only
for an intended change of behaviour:
`PYTHONPATH=tests python tests/run/test_behaviour_unchanged.py`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import DATA, ECHO_TEMPLATE, SMALL_RECIPE, write_recipe
from fakes import EchoBackend, FakeBackend, KeyJudge
from generator.run import controller
from generator.recipe import load_recipe
from generator.files import read_documents

GOLDEN = DATA / "golden"
STEERED = """
name: steer
seed: 11
roots: [@ROOT@, .]
grid:
  topic: @ROOT@/topics/topics.yaml
  persona: @ROOT@/topics/personas.yaml
templates:
  - path: echo.j2
size: {num_docs: 300, shard_rows: 100}
target: {score: 3.0, tolerance: 0.3, pilot_docs: 100}
scoring: {enabled: false}
"""
TIMINGS = {"generate_s", "wall_s", "tokens_per_s"}


def plain_run(tmp: Path) -> dict:
    out = tmp / "plain"
    controller.run(load_recipe(write_recipe(tmp, SMALL_RECIPE)), out, FakeBackend())
    return {"rows": read_documents(out).to_pylist()}


def steered_run(tmp: Path) -> dict:
    (tmp / "echo.j2").write_text(ECHO_TEMPLATE)
    out = tmp / "steered"
    summary = controller.run(load_recipe(write_recipe(tmp, STEERED, name="steer.yaml")), out, EchoBackend(),
                             judge=KeyJudge(lambda text: text.splitlines()[0]))
    rounds = [json.loads(line) for line in (out / "controller.jsonl").read_text().splitlines()]
    return {"rows": read_documents(out).to_pylist(), "rounds": rounds,
            "summary": {k: v for k, v in summary.items() if k not in TIMINGS}}


def saved(got, want):
    """`got` cut to the fields `want` has, at every level (new fields may appear)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return {k: saved(got.get(k), w) for k, w in want.items()}
    return got


def check(name: str, got: dict) -> None:
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    got = json.loads(json.dumps(got))
    for key in want:
        if isinstance(want[key], dict):  # the summary: every saved field unchanged (new fields may appear)
            assert saved(got[key], want[key]) == want[key], f"{name} {key} differs"
            continue
        assert len(got[key]) == len(want[key]), key
        for i, (g, w) in enumerate(zip(got[key], want[key])):  # a round's saved fields (new ones may appear)
            assert (g if key == "rows" else saved(g, w)) == w, f"{name} {key}[{i}] differs"


def test_plain_run_rows_are_unchanged(tmp_path):
    check("plain", plain_run(tmp_path))


def test_steered_run_rows_and_rounds_are_unchanged(tmp_path):
    check("steered", steered_run(tmp_path))


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("plain", plain_run), ("steered", steered_run)):
            GOLDEN.mkdir(parents=True, exist_ok=True)
            (GOLDEN / f"{name}.json").write_text(json.dumps(make(Path(tmp)), indent=0, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
