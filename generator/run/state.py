"""A run folder's progress: the records `state.json` holds, and how a folder is opened.

    OUT/recipe.resolved.yaml   the recipe as run, with its hash (written before generation)
    OUT/state.json             counters and steering state after the last completed batch
    OUT/pilot/round-NN/        documents of pilot rounds (calibration cost unless accepted)

`prepare_output` decides, without touching anything first, whether `--out` is new, resumed
or overwritten; `reconcile` repairs a folder after a crash (shards written after the last
saved state are dropped and redone with the same sample indices).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from generator.errors import UserError
from generator.files import atomic_write_text, read_manifest, shard_paths, write_json, write_manifest, write_yaml
from generator.recipe import Plan, recipe_dict

log = logging.getLogger(__name__)
OUR_FILES = ("data", "dedup", "manifest.json", "pilot", "duplicates.jsonl", "plots", "criteria.json", "recipe.resolved.yaml", "state.json",
             "summary.json", "failures.jsonl", "diversity.json", "controller.jsonl", "weights.yaml", "grid.added.yaml",
             "reference.json", "reference.npy", "calibration.json", "confirmation.json", "judge-cache.sqlite")


@dataclass(frozen=True)
class Counters:
    """What the run has generated so far (corpus and pilot rounds together)."""

    next_index: int = 0  # the sample index the next batch starts at
    num_docs: int = 0  # documents in the corpus (data/)
    num_attempted: int = 0
    num_failed: int = 0
    num_truncated: int = 0  # kept as cut at max_tokens
    num_trimmed: int = 0  # cut at max_tokens, trimmed back to a complete sentence
    duplicates_exact: int = 0
    duplicates_near: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batches: int = 0
    generate_s: float = 0.0
    num_shards: int = 0  # shards in data/ that this state accounts for

    @property
    def num_duplicates(self) -> int:
        return self.duplicates_exact + self.duplicates_near


@dataclass(frozen=True)
class Round:
    """One measured controller round: the concentration it ran at and the score it got."""

    concentration: float
    score: float
    kind: Literal["pilot", "grow", "main"]
    shift: float | None = None  # MMD² from the reference corpus, when the recipe has one
    half_width: float = 0.0  # of the score's 95% interval (0: not recorded)
    shift_se: float = 0.0  # standard error of `shift` (0: not recorded)
    draw_sd: float = 0.0  # sd of D between rounds of this size drawn at the same c (0: not measured)

    @property
    def spread(self) -> float:
        """95% half-width of D for a fresh round at this c: the judge's interval and the draw sd."""
        return math.hypot(self.half_width, 1.96 * self.draw_sd)


@dataclass(frozen=True)
class Epoch:
    """Weights in force from sample index `start` on (until the next epoch's start)."""

    start: int
    weights: dict


@dataclass(frozen=True)
class Steering:
    """The controller's state (defaults when the recipe has no target)."""

    phase: Literal["fill", "pilot", "main", "done"] = "fill"
    round: int = 0
    weights: dict = field(default_factory=dict)
    concentration: float = 1.0
    history: tuple[Round, ...] = ()
    round_end_docs: int = 0  # the main-phase round in progress ends at this many documents
    round_docs: int = 0  # documents generated in the current pilot round
    round_tokens: int = 0  # tokens spent in the current pilot round
    pilot_docs: int = 0
    discarded_pilot_docs: int = 0  # of pilot rounds not kept in the corpus
    pilot_tokens: int = 0  # prompt + completion tokens of every pilot round
    discarded_pilot_tokens: int = 0  # of pilot rounds not kept in the corpus
    judge_calls: int = 0
    judge_tokens: int = 0
    added_topics: dict = field(default_factory=dict)  # domain -> topics added by grid growth
    shift_factors: dict = field(default_factory=dict)  # axis -> value -> weight factor from the shift bound and drift
    binding: str = ""  # the constraint that stopped the run when target and max_shift could not both hold
    epochs: tuple[Epoch, ...] = ()  # every weight change, by the sample index it applies from
    lookahead: int = 0  # samples generated under the old weights while a main round is measured (fixed at start)
    measure_at: int = 0  # a main round ended at this sample index and awaits its measurement (0: none)

    def rounds(self, kind: str) -> list[Round]:
        return [h for h in self.history if h.kind == kind]


LAYOUT = 2  # the run folder's layout: 2 = streamed commits with a low-water mark and weight epochs


@dataclass(frozen=True)
class RunState:
    counters: Counters = field(default_factory=Counters)
    steering: Steering = field(default_factory=Steering)
    stopped: str = ""  # why the run stopped early ("" while it runs or once it completed)
    layout: int = LAYOUT


def weights_at(steering: Steering, index: int) -> dict:
    """The weights sample `index` is drawn under: those of the last epoch starting at or before it."""
    for epoch in reversed(steering.epochs):
        if epoch.start <= index:
            return epoch.weights
    return {}


def save_state(out: Path, state: RunState) -> None:
    write_json(out / "state.json", dataclasses.asdict(state))


def load_state(path: Path) -> RunState:
    data = json.loads(path.read_text())
    if data.get("layout") != LAYOUT:
        raise UserError(f"{path}: written by an older layout of generator ({data.get('layout', 'batch loop')})",
                        fix="start a new run in a new --out, or finish this one with the version that began it")
    steering = dict(data["steering"])
    steering["history"] = tuple(Round(**h) for h in steering.get("history", ()))
    steering["epochs"] = tuple(Epoch(**e) for e in steering.get("epochs", ()))
    return RunState(counters=Counters(**data["counters"]), steering=Steering(**steering), stopped=data["stopped"])


def check_output(out: Path, plan: Plan, *, resume: bool, force: bool) -> str:
    """Decide what to do with `out` without touching it: "new", "resume" or "overwrite"."""
    if not (out.exists() and any(out.iterdir())):
        return "new"
    resolved = out / "recipe.resolved.yaml"
    previous = yaml.safe_load(resolved.read_text()) if resolved.is_file() else None
    same = isinstance(previous, dict) and previous.get("recipe_hash") == plan.recipe_hash
    if resume and same:
        if (out / "state.json").is_file():
            load_state(out / "state.json")  # refuses a folder of an older layout before anything starts
        return "resume"
    if resume:
        raise UserError(f"{out}: cannot resume, it is not a run of this recipe (hash differs or missing)",
                        fix="pass the same recipe, or a new --out")
    if not force:
        what = "a run of this recipe" if same else "not empty and not a run of this recipe"
        raise UserError(f"{out}: output folder is {what}",
                        fix="add --resume to continue it, --force to overwrite, or choose a new --out")
    return "overwrite"


def prepare_output(out: Path, plan: Plan, *, resume: bool, force: bool) -> RunState:
    """Check the output folder, write the resolved recipe, return the state to start from."""
    action = check_output(out, plan, resume=resume, force=force)
    if action == "resume":
        state_file = out / "state.json"
        return reconcile(out, load_state(state_file) if state_file.is_file() else RunState())
    if action == "overwrite":
        for name in OUR_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "recipe.resolved.yaml", {"recipe_hash": plan.recipe_hash, **recipe_dict(plan.recipe)})
    return RunState()


def reconcile(out: Path, state: RunState) -> RunState:
    """After a crash: drop what was written after the last saved state (shards past its count,
    failure and duplicate lines at or past its low-water mark); those samples are redone with
    the same indices and weights. A pilot round commits only when it ends, so an unfinished
    one simply starts again."""
    for extra in shard_paths(out)[state.counters.num_shards:]:
        log.warning("removing %s, written after the last saved state", extra)
        extra.unlink()
    kept = {p.name.split(".")[0] for p in shard_paths(out)}
    for index_file in (out / "dedup").glob("shard-*.dedup.npz"):
        if index_file.name.split(".")[0] not in kept:
            index_file.unlink()
    manifest = read_manifest(out)
    if len(manifest) > state.counters.num_shards:
        write_manifest(out, manifest[:state.counters.num_shards])
    for name in ("failures.jsonl", "duplicates.jsonl"):
        drop_lines_from(out / name, state.counters.next_index)
    s = state.steering
    if s.phase == "pilot" and not s.round_docs:
        shutil.rmtree(pilot_dir(out, s.round), ignore_errors=True)
    return state


def drop_lines_from(path: Path, index: int) -> None:
    """Keep only the JSONL rows of `path` whose sample_index is below `index`."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["sample_index"] < index]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(kept))


def pilot_dir(out: Path, round: int) -> Path:
    return out / "pilot" / f"round-{round:02d}"
