"""kill -9 at every write step of a run, at every point of the write, then --resume: the folder
resumes to exactly the corpus of a run that was never interrupted.

A kill is simulated by raising `Killed` (a BaseException, so no `except Exception` runs) from
the write functions at the n-th write of one step: before the temporary file is written, after
it is written but before the rename, or after the rename (for appends: before, half a line,
after). Each test id names the cell of the matrix: step-point-occurrence. Run this file as a
script to print the matrix as a markdown table.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SMALL_RECIPE, echo_recipe, write_recipe  # noqa: E402
from fakes import EchoBackend, KeyJudge, SeededFaultsBackend  # noqa: E402
from generator import files  # noqa: E402
from generator.errors import UserError  # noqa: E402
from generator.files import read_documents, read_manifest  # noqa: E402
from generator.recipe import load_recipe  # noqa: E402
from generator.run import controller, loop, rounds  # noqa: E402
from generator.run.dedup import Deduper  # noqa: E402
from generator.run.verify import verify_run  # noqa: E402


class Killed(BaseException):
    """The process died here: nothing after it runs."""


@dataclass(frozen=True)
class Fault:
    step: str  # which write
    point: str  # "before", "tmp" (written, not renamed), "after" (renamed); appends: "half" instead of "tmp"
    nth: int  # the occurrence of that step the kill hits (1-based)


class Injector:
    """Counts the writes of each step and kills at the fault's (None: records the steps only)."""

    def __init__(self, fault: Fault | None):
        self.fault, self.counts, self.hit = fault, {}, False

    def at(self, step: str) -> str | None:
        """The kill point for this write of `step`, when it is the one to kill."""
        self.counts[step] = self.counts.get(step, 0) + 1
        f = self.fault
        if f is not None and not self.hit and f.step == step and f.nth == self.counts[step]:
            self.hit = True
            return f.point
        return None


def tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def step_of(path: Path) -> str:
    return ("pilot " if "pilot" in path.parts else "") + {
        "recipe.resolved.yaml": "recipe", "state.json": "state", "manifest.json": "manifest",
        "summary.json": "summary", "weights.yaml": "weights"}.get(path.name, path.name)


@contextmanager
def kills(injector: Injector):
    """Patch every write of a run to go through `injector`."""
    real_text, real_shard, real_append = files.atomic_write_text, loop.write_shard, loop.append_jsonl
    real_flush, real_log, real_os = Deduper.flush, controller.log_round, rounds.os

    def renamed(step, path, write, point):  # an atomic write: tmp file, then rename
        if point == "before":
            raise Killed
        old = path.read_bytes() if point == "tmp" and path.is_file() else None
        write()
        if point == "tmp":  # the new content under the temporary name, the old file as it was
            os.replace(path, tmp_of(path))
            if old is not None:
                path.write_bytes(old)
        if point is not None:
            raise Killed

    def atomic_write_text(path, text):
        renamed(step_of(path), path, lambda: real_text(path, text), injector.at(step_of(path)))

    def write_shard(path, docs):
        entry = {}
        step = "pilot shard" if "pilot" in path.parts else "shard"
        renamed(step, path, lambda: entry.update(real_shard(path, docs)), injector.at(step))
        return entry

    def flush(self, path):
        step = "pilot dedup index" if "pilot" in path.parts else "dedup index"
        renamed(step, path, lambda: real_flush(self, path), injector.at(step))

    def appended(step, path, line, write):
        point = injector.at(step)
        if point == "half":
            with open(path, "a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
        elif point != "before":
            write()
        if point is not None:
            raise Killed

    def append_jsonl(path, rows):
        rows = list(rows)
        if rows:
            line = json.dumps(rows[0]) + "\n"
            appended(path.stem, path, line, lambda: real_append(path, rows))

    def log_round(out, round_no, state, *args, **kwargs):
        appended("controller line", out / "controller.jsonl", json.dumps({"round": round_no, "phase": "pilot"}),
                 lambda: real_log(out, round_no, state, *args, **kwargs))

    class Moves:  # accept_point's moves of pilot shards into data/ (rounds.move_shard)
        def replace(self, src, dst):
            point = injector.at("pilot accept move")
            if point == "before":
                raise Killed
            real_os.replace(src, dst)
            if point is not None:
                raise Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "atomic_write_text", atomic_write_text)
        mp.setattr(loop, "write_shard", write_shard)
        mp.setattr(loop, "append_jsonl", append_jsonl)
        mp.setattr(Deduper, "flush", flush)
        mp.setattr(controller, "log_round", log_round)
        mp.setattr(rounds, "os", Moves())
        yield injector


# ---- the two runs: a plain one (failures, duplicates, several shards) and a steered one ----------

PLANS: dict = {}  # each run's plan, loaded once (a recipe's loading costs more than its run)


def plan_of(kind: str, tmp: Path):
    if kind not in PLANS:
        if kind == "plain":
            PLANS[kind] = load_recipe(write_recipe(tmp, SMALL_RECIPE), ["size.shard_rows=4", "max_failure_rate=0.5"])
        else:
            PLANS[kind] = load_recipe(echo_recipe(
                tmp, "steered", 11, "{num_docs: 120, shard_rows: 30}",
                "{score: 1.8, tolerance: 0.3, k: 5, pilot_docs: 20, num_rounds: 2, num_batches: 40}"))
    return PLANS[kind]


def plain_run(tmp: Path, out: Path, resume: bool = False) -> dict:
    return controller.run(plan_of("plain", tmp), out, SeededFaultsBackend(), resume=resume)


def steered_run(tmp: Path, out: Path, resume: bool = False) -> dict:
    return controller.run(plan_of("steered", tmp), out, EchoBackend(), resume=resume,
                          judge=KeyJudge(lambda t: t.splitlines()[0]))


RUNS = {"plain": plain_run, "steered": steered_run}


def fingerprint(out: Path) -> dict:
    """What must come out the same: the documents, the failure and duplicate rows, the steering
    state and rounds, and a folder that verifies clean. Where shards split is left out: a shard
    closes when a measurement running beside generation ends, which depends on timing."""
    table = read_documents(out, columns=["id", "sample_index", "text"]).to_pydict()

    def lines(name):
        path = out / name
        return sorted(path.read_text().splitlines()) if path.is_file() else []
    manifest = read_manifest(out)
    state = json.loads((out / "state.json").read_text())
    return {"docs": table, "failures": lines("failures.jsonl"), "duplicates": lines("duplicates.jsonl"),
            "rows": sum(e["rows"] for e in manifest), "problems": verify_run(out), "steering": {k: v for k, v in state["steering"].items()},
            "controller": [json.loads(line)["round"] for line in lines("controller.jsonl")]}


def skip_extras(mp: pytest.MonkeyPatch) -> None:
    """No plots (outputs redrawn at the end of every run) and no draw-noise measurement: they
    cost seconds and write nothing a resume reads."""
    from generator.run import plots
    for name in ("plot_trajectory", "plot_weights", "plot_shift"):
        mp.setattr(plots, name, lambda *a, **k: None)
    mp.setattr(controller, "draw_sd", lambda *a, **k: 0.0)


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    skip_extras(monkeypatch)


def run_case(kind: str, fault: Fault, tmp: Path, reference: dict) -> str:
    """Kill a run at `fault`, resume it, compare with `reference`; the outcome in words."""
    out = tmp / "run"
    with kills(Injector(fault)) as injector:
        try:
            RUNS[kind](tmp, out)
        except Killed:
            pass
    if not injector.hit:
        return "not reached"
    try:
        RUNS[kind](tmp, out, resume=True)
        how = "resumes"
    except UserError as exc:
        if "holds no run" not in str(exc):
            return f"REFUSED: {exc}"
        RUNS[kind](tmp, out)  # nothing was generated yet: the same command without --resume starts it
        how = "resume refused (nothing generated yet); the run without --resume"
    return f"{how}: same corpus" if fingerprint(out) == reference else f"{how}: CORPUS DIFFERS"


POINTS = {"atomic": ("before", "tmp", "after"), "append": ("before", "half", "after"), "move": ("before", "after")}
STEPS = {  # run -> (step, how it writes, occurrences to kill at: the first, one mid-run, the last)
    "plain": [("recipe", "atomic", (1,)), ("state", "atomic", (1, 4, 7)), ("shard", "atomic", (1, 5)),
              ("manifest", "atomic", (1, 5)), ("dedup index", "atomic", (1, 5)), ("failures", "append", (1, 2)),
              ("duplicates", "append", (1, 3)), ("summary", "atomic", (1,))],
    # the steps only a steered run makes, and those around accepting a pilot round
    "steered": [("pilot shard", "atomic", (2,)), ("pilot dedup index", "atomic", (1,)), ("state", "atomic", (6,)),
                ("pilot accept move", "move", (1, 2)), ("manifest", "atomic", (1,)), ("controller line", "append", (4, 5)),
                ("weights", "atomic", (1,))],
}
CASES = [(kind, Fault(step, point, nth)) for kind, steps in STEPS.items() for step, how, nths in steps
         for point in POINTS[how] for nth in nths]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The corpus of each run never interrupted, and how many writes of each step it makes."""
    found = {}
    with pytest.MonkeyPatch.context() as mp:
        skip_extras(mp)
        for kind, run in RUNS.items():
            tmp = tmp_path_factory.mktemp(kind)
            with kills(Injector(None)) as injector:
                run(tmp, tmp / "run")
            found[kind] = (fingerprint(tmp / "run"), dict(injector.counts))
    return found


@pytest.mark.parametrize("kind, fault", CASES, ids=[f"{k}-{f.step.replace(' ', '_')}-{f.point}-{f.nth}"
                                                    for k, f in CASES])
def test_a_kill_at_any_write_resumes_to_the_uninterrupted_corpus(kind, fault, tmp_path, references):
    reference, counts = references[kind]
    assert counts.get(fault.step, 0) >= fault.nth, f"the run makes {counts.get(fault.step, 0)} {fault.step} writes"
    outcome = run_case(kind, fault, tmp_path, reference)
    assert outcome.endswith("same corpus"), outcome


def test_the_cases_cover_every_write_step_the_runs_make(references):
    """A new write step in the loop needs its row in the matrix."""
    covered = {fault.step for _, fault in CASES}
    made = {step for _, counts in references.values() for step in counts}
    assert made <= covered, sorted(made - covered)


if __name__ == "__main__":  # the matrix as a markdown table: python tests/run/test_kill_points.py
    import tempfile
    rows = ["| run | write step | kill point | occurrence | outcome |", "|---|---|---|---|---|"]
    with pytest.MonkeyPatch.context() as patch:
        skip_extras(patch)
        refs = {}
        for name, run in RUNS.items():
            folder = Path(tempfile.mkdtemp())
            run(folder, folder / "run")
            refs[name] = fingerprint(folder / "run")
        for name, fault in CASES:
            outcome = run_case(name, fault, Path(tempfile.mkdtemp()), refs[name])
            rows.append(f"| {name} | {fault.step} | {fault.point} | {fault.nth} | {outcome} |")
    print("\n".join(rows))
