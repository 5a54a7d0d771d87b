"""Opening a run folder for `generator run`: new, resumed or overwritten, decided before anything
in it changes.

    OUT/recipe.resolved.yaml   the recipe as run, with its hash (written before generation)
    OUT/state.json             progress up to the last commit (saved right after the recipe)

A resume keeps every shard the state counts, after checking them against the manifest and its
checksums, and removes only what the state proves was written after it was saved: shards past
its count, failure, duplicate and controller lines past its marks, pilot rounds it has not
started. Without state.json, a run without a target rebuilds it from the manifest and the
shards; a run with a target is refused (its steering history lives only in that file).
"""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

from generator.errors import UserError
from generator.files import (atomic_write_text, next_shard_path, read_documents, read_jsonl, read_manifest,
                             read_run_yaml, shard_entry, shard_path, shard_paths, write_manifest, write_yaml)
from generator.outputs import check_out_dir
from generator.recipe import Plan, recipe_dict, recipe_inputs
from generator.run.dedup import find_flushes, flush_problem, index_path
from generator.run.rounds import move_shard
from generator.run.state import Counters, RunState, load_state, pilot_dir, save_state
from generator.run.verify import DIVERSITY, SUMMARY, check_report, check_shard

log = logging.getLogger(__name__)
OUR_FILES = ("data", "dedup", "manifest.json", "pilot", "duplicates.jsonl", "plots", "criteria.json",
             "recipe.resolved.yaml", "state.json", "summary.json", "failures.jsonl", "diversity.json",
             "controller.jsonl", "weights.yaml", "grid.added.yaml", "reference.json", "reference.npy",
             "calibration.json", "confirmation.json", "judge-cache.sqlite", "journal.jsonl", "rejected.jsonl",
             "source.count.json")


def check_output(out: Path, plan: Plan, *, resume: bool, force: bool) -> str:
    """Decide what to do with `out` without touching it: "new", "resume" or "overwrite". A resume
    is checked through (state, manifest, committed shards) before it is allowed."""
    check_out_dir(out, "--out", inputs=recipe_inputs(plan.recipe))  # a writable folder outside the inputs
    if not holds_anything(out):
        if resume:
            what = "no such folder" if not out.exists() else "the folder holds no run"
            raise UserError(f"{out}: cannot resume, {what}",
                            fix="run without --resume to start it, or check --out")
        return "new"
    same = same_recipe(out, plan)
    if resume and same:
        state, _ = resume_state(out, plan)  # refuses a damaged folder before anything starts
        check_resumed_files(out, plan, state)
        return "resume"
    if resume:
        raise UserError(f"{out}: cannot resume, it is not a run of this recipe (hash differs or missing)",
                        fix="pass the same recipe, or a new --out")
    if not force:
        what = "a run of this recipe" if same else "not empty and not a run of this recipe"
        raise UserError(f"{out}: output folder is {what}",
                        fix="add --resume to continue it, --force to overwrite, or choose a new --out")
    return "overwrite"


def holds_anything(out: Path) -> bool:
    """Whether `out` holds anything but the temporary files of a write that was cut short."""
    return out.is_dir() and any(not is_temporary(p) for p in out.iterdir())


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def same_recipe(out: Path, plan: Plan) -> bool:
    """Whether `out` is a run of `plan`: its recipe.resolved.yaml records the same hash, or (that
    file gone or unreadable) its first shard's rows carry it."""
    recorded = recorded_hash(out)
    if recorded is not None:
        return recorded == plan.recipe_hash
    import pyarrow as pa
    import pyarrow.parquet as pq
    shards = shard_paths(out)
    try:
        return bool(shards) and set(pq.read_table(shards[0], columns=["recipe_hash"]).column(
            "recipe_hash").to_pylist()) == {plan.recipe_hash}
    except (OSError, pa.ArrowException):
        return False


def recorded_hash(out: Path) -> str | None:
    """The recipe hash in OUT/recipe.resolved.yaml (None when the file is gone or unreadable)."""
    try:
        previous = read_run_yaml(out / "recipe.resolved.yaml")
    except UserError:
        return None
    return previous.get("recipe_hash") if isinstance(previous, dict) else None


def prepare_output(out: Path, plan: Plan, *, resume: bool, force: bool) -> RunState:
    """Check the output folder, write the resolved recipe, return the state to start from."""
    action = check_output(out, plan, resume=resume, force=force)
    if action == "resume":
        state, rebuilt = resume_state(out, plan)
        if recorded_hash(out) != plan.recipe_hash:  # gone or damaged: the shards proved the recipe
            write_yaml(out / "recipe.resolved.yaml",
                       {"recipe_hash": plan.recipe_hash, **recipe_dict(plan.recipe)})
        if rebuilt is not None:
            adopt_rebuilt(out, state, rebuilt)
        if plan.source is not None:  # a folder from before the record, or one whose record was unreadable
            plan.source.write_count(out)
        return reconcile(out, state)
    if action == "overwrite":
        for name in OUR_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "recipe.resolved.yaml", {"recipe_hash": plan.recipe_hash, **recipe_dict(plan.recipe)})
    if plan.source is not None:  # a resume reuses it instead of counting the source again
        plan.source.write_count(out)
    save_state(out, RunState())
    return RunState()


def resume_state(out: Path, plan: Plan) -> tuple[RunState, list[dict] | None]:
    """The state to resume from, and the rebuilt manifest entries when state.json was missing
    (None when it was read). Refuses (UserError) a damaged state or a damaged committed shard."""
    path = out / "state.json"
    if path.exists() or path.is_symlink():
        state, rebuilt = load_state(path), None
        manifest = read_manifest(out)
    else:
        state, rebuilt = rebuild_state(out, plan)
        manifest = rebuilt
    if len(manifest) < state.counters.num_shards:
        raise UserError(f"{path}: counts {state.counters.num_shards} shards, {out / 'manifest.json'} lists "
                        f"{len(manifest)}", fix=f"run `generator verify {out}` for the repair")
    for entry in manifest[:state.counters.num_shards]:
        for problem in check_shard(out, entry, None):
            raise UserError(f"{out}: cannot resume: {problem.path}: {problem.what}",
                            fix=problem.repair)
    return state, rebuilt


def check_resumed_files(out: Path, plan: Plan, state: RunState) -> None:
    """Refuse (UserError) what a resume would meet only after its engine started: a run file or
    shard name that is not a regular file (a folder is never removed, a named pipe would block the
    appends), an unreadable duplicate index it loads, a damaged report."""
    names = [n for n in (*OUR_FILES, "README.md") if "." in n]  # the files; the others are folders
    for path in [*(out / n for n in names), *shard_paths(out), *find_flushes(out / "dedup")]:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise UserError(f"{path}: cannot resume, not a regular file where the run keeps one",
                            fix=f"remove it (`rm -r {path}`; the run never writes anything but a file "
                                f"there), then resume; `generator verify {out}` checks the rest")
    d = plan.recipe.dedup
    for index in loaded_indexes(out, state) if d.exact or d.near else []:
        wrong = flush_problem(index)
        if wrong:
            raise UserError(f"{index}: cannot resume, the duplicate index is {wrong}",
                            fix=f"delete {out}/dedup/*.dedup.npz and {out}/pilot/round-*/dedup/*.dedup.npz; "
                                "the resume rebuilds the index from the documents")
    reports = check_report(out, "summary.json", SUMMARY) + check_report(out, "diversity.json", DIVERSITY)
    for problem in reports:
        raise UserError(f"{out}: cannot resume: {problem.path}: {problem.what}", fix=problem.repair)


def loaded_indexes(out: Path, state: RunState) -> list[Path]:
    """The duplicate-index files the resumed run loads: those of the shards and pilot rounds
    `reconcile` keeps (an accepted pilot round's extra shards go back to it with theirs)."""
    s, shards = state.steering, shard_paths(out)
    kept = shards if s.phase == "pilot" and state.counters.aside_docs else shards[:state.counters.num_shards]
    names = {p.name.split(".")[0] for p in kept}
    files = [f for f in find_flushes(out / "dedup")
             if not f.name.startswith("shard-") or f.name.split(".")[0] in names]
    for folder in sorted((out / "pilot").glob("round-*")):
        number = int(folder.name.split("-")[1]) if folder.name.split("-")[1].isdigit() else -1
        # as reconcile keeps them
        if not (number > s.round or number == s.round and not state.counters.aside_docs):
            files += find_flushes(folder / "dedup")
    return files


def rebuild_state(out: Path, plan: Plan) -> tuple[RunState, list[dict]]:
    """The state of a run without state.json, from its shards (each checked against its manifest
    entry when it has one). Nothing generated: the start. A run with a target: refused."""
    manifest, paths = read_manifest(out), shard_paths(out)
    pilots = [p for r in sorted((out / "pilot").glob("round-*")) for p in shard_paths(r)]
    if not (manifest or paths or pilots):
        return RunState(), []
    if plan.recipe.target is not None:
        raise UserError(f"{out / 'state.json'}: missing, and a run with a target keeps its steering "
                        "history only there",
                        fix="put state.json back from a copy of the run, or start again in a new --out")
    listed = {e["name"]: e for e in manifest}
    entries = []
    for number, path in enumerate(paths):
        if path.name != shard_path(out, number).name:
            raise UserError(f"{out / 'data'}: shard {number} is missing before {path.name}",
                            fix=f"run `generator verify {out}` for the repair")
        entry = listed.get(path.name)
        problems = check_shard(out, entry, None) if entry is not None else ()
        if problems:
            raise UserError(f"{out}: cannot rebuild state.json: {problems[0].path}: {problems[0].what}",
                            fix=problems[0].repair)
        entries.append(entry or read_entry(path))
    gone = sorted(set(listed) - {e["name"] for e in entries})
    if gone:
        raise UserError(f"{out}: cannot rebuild state.json: data/{gone[0]} is in manifest.json but missing",
                        fix="restore it from a copy of the run, or start again in a new --out")
    return RunState(counters=rebuilt_counters(out, entries)), entries


def read_entry(path: Path) -> dict:
    import pyarrow as pa
    try:
        return shard_entry(path)
    except (OSError, pa.ArrowException, IndexError) as exc:
        raise UserError(f"{path}: not readable as a shard ({type(exc).__name__})",
                        fix="restore it from a copy of the run, or delete it and every later shard") from None


def rebuilt_counters(out: Path, entries: list[dict]) -> Counters:
    """Counters of a run without a target whose shards `entries` are committed: every sample
    below the last document's index was attempted once; token counts are those of the documents."""
    next_index = entries[-1]["last_index"] + 1 if entries else 0
    docs = read_documents(out, columns=["finish_reason", "num_tokens", "num_prompt_tokens"]).to_pydict()
    def committed(name: str) -> list[dict]:  # the rows of samples below the mark
        return [r for r in read_jsonl(out / name, "sample_index", int) if r["sample_index"] < next_index]

    failed, dups = committed("failures.jsonl"), committed("duplicates.jsonl")
    exact = sum(str(r.get("reason", "")).startswith("exact") for r in dups)
    rejected = Counter(str(r.get("gate", "")) for r in committed("rejected.jsonl"))
    return Counters(next_index=next_index, num_docs=sum(e["rows"] for e in entries), num_attempted=next_index,
                    num_failed=len(failed), num_truncated=docs["finish_reason"].count("length"),
                    num_trimmed=docs["finish_reason"].count("trimmed"), duplicates_exact=exact,
                    duplicates_near=len(dups) - exact, prompt_tokens=sum(docs["num_prompt_tokens"]),
                    completion_tokens=sum(docs["num_tokens"]), batches=len(entries), num_shards=len(entries),
                    rejected=dict(rejected))


def adopt_rebuilt(out: Path, state: RunState, entries: list[dict]) -> None:
    """Write the rebuilt manifest and state; drop the duplicate index when a kept shard has none
    (the index is then rebuilt from the documents)."""
    log.warning("%s: state.json rebuilt from the shards: %d shards, %d documents", out, len(entries),
                state.counters.num_docs)
    write_manifest(out, entries)
    if any(not index_path(shard_path(out, i)).is_file() for i in range(len(entries))):
        for stale in (out / "dedup").glob("*.dedup.npz"):
            stale.unlink()
    save_state(out, state)


def reconcile(out: Path, state: RunState) -> RunState:
    """After a crash: drop what was written after the last saved state (shards past its count,
    failure and duplicate lines at or past its low-water mark, controller lines of rounds it has
    not finished, pilot rounds it has not started); those samples are redone with the same
    indices and weights. Shards of an accepted pilot round whose state was not saved go back to
    their round, which is measured again."""
    for leftover in [p for p in out.rglob(".*.tmp") if p.is_file()]:
        leftover.unlink()
    s = state.steering
    extra = shard_paths(out)[state.counters.num_shards:]
    for number, shard in enumerate(extra):
        if s.phase == "pilot" and state.counters.aside_docs:
            move_shard(shard, next_shard_path(pilot_dir(out, s.round)))  # a sweep point: found by its indices
            continue
        log.warning("removing %s, written after the last saved state", shard)
        shard.unlink()
    kept = {p.name.split(".")[0] for p in shard_paths(out)}
    for index_file in (out / "dedup").glob("shard-*.dedup.npz"):
        if index_file.name.split(".")[0] not in kept:
            index_file.unlink()
    manifest = read_manifest(out)
    if len(manifest) > state.counters.num_shards:
        write_manifest(out, manifest[:state.counters.num_shards])
    for name in ("failures.jsonl", "duplicates.jsonl", "rejected.jsonl"):
        drop_lines_from(out / name, "sample_index", state.counters.next_index)
    if not state.stopped:  # a stopping round is logged, then saved with its round number
        drop_lines_from(out / "controller.jsonl", "round", s.round)
    for folder in (out / "pilot").glob("round-*"):
        number = int(folder.name.split("-")[1]) if folder.name.split("-")[1].isdigit() else -1
        if number > s.round or number == s.round and not state.counters.aside_docs:
            shutil.rmtree(folder)
    return state


def drop_lines_from(path: Path, key: str, below: int) -> None:
    """Keep only the JSONL rows of `path` whose integer `key` is below `below` (a line cut short
    by a crash is dropped)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and row_below(line, key, below)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(kept))


def row_below(line: str, key: str, below: int) -> bool:
    try:
        value = json.loads(line).get(key)
    except (ValueError, AttributeError):
        return False
    return isinstance(value, int) and value < below
