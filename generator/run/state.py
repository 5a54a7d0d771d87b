"""A run folder's progress: the records `state.json` holds, saved and loaded.

    OUT/state.json             counters and steering state after the last completed batch
    OUT/pilot/round-NN/        documents of pilot rounds (calibration cost unless accepted)

`load_state` checks every field's type and range, so a damaged file is refused before a
resume changes anything (`run/resume.py` opens a folder).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from generator.errors import UserError
from generator.files import read_json, write_json


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
    aside_docs: int = 0  # documents written to a folder aside (a pilot round), not the corpus
    aside_tokens: int = 0  # prompt + completion tokens of those documents
    rejected: dict = field(default_factory=dict)  # quality gate -> documents it rejected (rejected.jsonl)

    @property
    def num_duplicates(self) -> int:
        return self.duplicates_exact + self.duplicates_near

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True)
class Drawn:
    """Documents of the corpus drawn at one concentration."""

    concentration: float
    docs: int


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
    docs: int = 0  # a main round: the corpus documents it measured
    sweep: int = 0  # a pilot: the round (sweep) that measured it beside its other points
    drawn: tuple[Drawn, ...] = ()  # a main round: its documents by the c they were drawn at

    @property
    def spread(self) -> float:
        """95% half-width of D for a fresh round at this c: the judge's interval and the draw sd."""
        return math.hypot(self.half_width, 1.96 * self.draw_sd)


@dataclass(frozen=True)
class Epoch:
    """Weights in force from sample index `start` on (until the next epoch's start)."""

    start: int
    weights: dict
    round: int = 0  # the controller round its samples belong to (the documents' `round` column)
    concentration: float = -1.0  # the c its weights were derived at (-1: not recorded)


@dataclass(frozen=True)
class Steering:
    """The controller's state (defaults when the recipe has no target)."""

    phase: Literal["fill", "pilot", "main", "done"] = "fill"
    round: int = 0
    weights: dict = field(default_factory=dict)
    concentration: float = 1.0
    history: tuple[Round, ...] = ()
    round_end_docs: int = 0  # the main-phase round in progress ends at this many documents
    pilot_docs: int = 0
    discarded_pilot_docs: int = 0  # of pilot rounds not kept in the corpus
    pilot_tokens: int = 0  # prompt + completion tokens of every pilot round
    discarded_pilot_tokens: int = 0  # of pilot rounds not kept in the corpus
    judge_calls: int = 0
    judge_tokens: int = 0
    added_topics: dict = field(default_factory=dict)  # domain -> topics added by grid growth
    shift_factors: dict = field(default_factory=dict)  # axis -> value -> weight factor from the shift bound
    drift_factors: dict = field(default_factory=dict)  # axis -> value -> weight factor away from drift
    attribution_factors: dict = field(default_factory=dict)  # axis -> value -> factor of the last correction
    rejection_factors: dict = field(default_factory=dict)  # axis -> value -> factor away from gate rejections
    main_start: int = 0  # the sample index the main phase started at (its rejections are the corpus's)
    binding: str = ""  # the constraint that stopped the run when target and max_shift could not both hold
    out_of_reach: str = ""  # why c cannot bring D to the target, with the fix (policy.Decision.out_of_reach)
    epochs: tuple[Epoch, ...] = ()  # every weight change, by the sample index it applies from
    # samples generated under the old weights while a main round is measured (fixed at start)
    lookahead: int = 0
    measure_at: int = 0  # a main round ended at this sample index and awaits its measurement (0: none)
    sweep: tuple[float, ...] = ()  # the concentrations the pilot round in progress measures, one epoch each
    sweep_start: int = 0  # the sample index that pilot round starts at (its points follow each other)

    def rounds(self, kind: str) -> list[Round]:
        return [h for h in self.history if h.kind == kind]


LAYOUT = 2  # the run folder's layout: 2 = streamed commits with a low-water mark and weight epochs


@dataclass(frozen=True)
class RunState:
    counters: Counters = field(default_factory=Counters)
    steering: Steering = field(default_factory=Steering)
    stopped: str = ""  # why the run stopped early ("" while it runs or once it completed)
    layout: int = LAYOUT


def epoch_number(steering: Steering, index: int) -> int:
    """The number of the last epoch starting at or before sample `index` (0 when none does)."""
    for number in range(len(steering.epochs) - 1, -1, -1):
        if steering.epochs[number].start <= index:
            return number
    return 0


def next_epoch_start(steering: Steering, index: int) -> int | None:
    """Where the first epoch starting after sample `index` starts (None when none does)."""
    later = [e.start for e in steering.epochs if e.start > index]
    return min(later) if later else None


def weights_at(steering: Steering, index: int) -> dict:
    """The weights sample `index` is drawn under: those of the last epoch starting at or before it."""
    epoch = steering.epochs[epoch_number(steering, index)] if steering.epochs else None
    return epoch.weights if epoch is not None and epoch.start <= index else {}


def with_phase(state: RunState, phase: str) -> RunState:
    return dataclasses.replace(state, steering=dataclasses.replace(state.steering, phase=phase))


def save_state(out: Path, state: RunState) -> None:
    write_json(out / "state.json", dataclasses.asdict(state))


def load_state(path: Path) -> RunState:
    """The state saved in `path`; a damaged file (wrong types, negative counts, not a file)
    raises UserError naming the field."""
    if path.is_dir():
        raise UserError(f"{path}: a folder where the run's state file should be", fix=STATE_FIX)
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, got {type(data).__name__}", fix=STATE_FIX)
    if data.get("layout") != LAYOUT:
        raise UserError(f"{path}: written by an older layout of generator "
                        f"({data.get('layout', 'batch loop')})",
                        fix="start a new run in a new --out, or finish this one with the version that "
                            "began it")
    try:
        return saved_record(RunState, data, "")
    except ValueError as exc:
        raise UserError(f"{path}: {exc}", fix=STATE_FIX) from None


STATE_FIX = ("move it aside and resume again: a run without a target rebuilds it from manifest.json and "
             "the shards (a run with a target needs the file back, or a new --out)")


def saved_record(cls, data: Any, where: str):
    """Record `cls` from its saved form, every field checked against its annotation (ValueError)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'state'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"{where or 'state'}: unknown field {unknown[0]!r}")
    return cls(**{k: saved_value(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items()})


def saved_value(tp, value: Any, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return saved_record(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(saved_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int and not (number and isinstance(value, int) and value >= 0):
        raise ValueError(f"{where}: expected a non-negative integer, got {value!r}")
    if tp is float and not number:
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if tp in (str, dict) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected a {tp.__name__}, got {type(value).__name__}")
    return float(value) if tp is float else value


def pilot_dir(out: Path, round: int) -> Path:
    return out / "pilot" / f"round-{round:02d}"
