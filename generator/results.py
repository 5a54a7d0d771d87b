"""The records the Python API returns: small frozen dataclasses, built from the JSON a run writes.

`RunResult` (what `generator.run` made), `DiversityReport` (a corpus's D and its interval),
`Progress` (what `on_progress` callbacks receive), `Ruler` (the judge settings scores are
comparable under), `Prompt` (one rendered prompt), `ExportResult` and `VerifyResult`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Mapping

if TYPE_CHECKING:
    from generator.recipe import Plan  # noqa: F401
    from generator.run.verify import Problem

Stage = Literal["start", "prepare", "engine", "pilot", "generate", "score", "card"]


@dataclass(frozen=True)
class Progress:
    """One progress event of `generator.run`: a stage begins ("start" once the inputs are checked,
    "prepare" a one-time model conversion and the engine's start, "engine" the start alone, "score",
    "card"), or documents arrive in a pilot round or the main corpus (`done` of `total`)."""

    stage: Stage
    round: int = 0
    done: int = 0
    total: int = 0
    tokens_per_s: float = 0.0
    in_flight: int = 0
    waiting: int = 0  # finished ahead of sample order, committed once earlier samples return
    num_failed: int = 0
    pilot_points: tuple[tuple[float, float], ...] = ()  # (concentration, D) of each pilot measured so far


def progress_of(state, flow, *, num_docs: int, pilot_docs: int) -> Progress:
    """The Progress record of the run loop's state (run.state.RunState) and engine flow
    (run.loop.Flow: requests in flight, results back, tokens/s the engines generate);
    `pilot_docs`: samples per point of a pilot sweep."""
    c, s = state.counters, state.steering
    pilot = s.phase == "pilot"
    return Progress(stage="pilot" if pilot else "generate", round=s.round if pilot else 0,
                    done=c.aside_docs if pilot else c.num_docs,
                    total=pilot_docs * max(1, len(s.sweep)) if pilot else num_docs,  # a sweep: every point
                    tokens_per_s=flow.tokens_per_s, in_flight=flow.in_flight, waiting=flow.waiting,
                    num_failed=c.num_failed,
                    pilot_points=tuple((h.concentration, h.score) for h in s.rounds("pilot")))


@dataclass(frozen=True)
class Ruler:
    """The judge settings a score is taken at; scores compare only under one ruler. `judge`:
    "embed" (MiniLM and the form view, cut at `threshold` and the form cut), "embed-subject" (MiniLM
    alone: the ruler of scores taken before the form view) or "llm" (the cluster-agent under `settings`, a
    judges.config.JudgeSettings; `criteria` is its frozen criteria file). `k`: documents per batch
    (default: the settings' K, 10)."""

    judge: Literal["embed", "embed-subject", "llm"] = "embed"
    k: int | None = None
    threshold: float = 0.0  # 0: the embedding judge's default (judges.embedding.DEFAULT_THRESHOLD)
    seed: int = 0
    num_batches: int = 200
    precision: float | None = None  # stop once the 95% half-width of D is at most this
    max_calls: int | None = None
    max_failure_share: float | None = None  # refuse D past this share of failed batches (None: 0.2)
    settings: Any = None
    criteria: Path | None = None
    regenerate_criteria: bool = False


@dataclass(frozen=True)
class Proxy:
    name: str
    value: float


@dataclass(frozen=True)
class DiversityReport:
    """A corpus's diversity D (mean C_i²/K over judged K-batches) with its 95% interval; `ci_low`,
    `ci_high` and `half_width` are None when one batch was scored. `to_dict()` is the full
    JSON report (batches, attribution, shift, fidelity) as `generator score --json` writes it."""

    corpus: str
    judge: str
    k: int
    num_docs: int
    score: float
    ci_low: float | None
    ci_high: float | None
    half_width: float | None
    cluster_ratio: float
    num_scored: int
    num_failed: int
    stop_reason: str
    calls: int
    proxies: tuple[Proxy, ...] = ()
    shift_mmd2: float | None = None
    _report: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, report: Mapping[str, Any], corpus: str) -> "DiversityReport":
        return cls(corpus=corpus, judge=report["judge"], k=report["k"], num_docs=report["num_docs"],
                   score=report["score"], ci_low=report["ci_low"], ci_high=report["ci_high"],
                   half_width=report.get("half_width"), cluster_ratio=report["cluster_ratio"],
                   num_scored=report["num_scored"], num_failed=report["num_failed"],
                   stop_reason=report["stop_reason"], calls=report["calls"],
                   proxies=tuple(Proxy(n, float(v)) for n, v in (report.get("proxies") or {}).items()),
                   shift_mmd2=(report.get("shift") or {}).get("mmd2"), _report=MappingProxyType(dict(report)))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dict(self._report)))  # a deep copy the caller may change


@dataclass(frozen=True)
class Endings:
    """How a corpus's documents end: at end-of-sequence, trimmed to a sentence, or cut at max_tokens."""

    eos: int
    trimmed: int
    cut: int


@dataclass(frozen=True)
class TargetOutcome:
    """Where a steered run landed: the target, the achieved D with its interval, the rounds it took,
    and with a reference corpus the reference's D, the achieved D relative to it and the shift."""

    score: float
    tolerance: float
    achieved: float
    ci_low: float
    ci_high: float
    within_tolerance: bool
    pilot_rounds: int
    main_rounds: int
    calibration_ratio: float  # discarded pilot and judge tokens over corpus tokens
    reference_score: float | None = None
    reference_ci: tuple[float, float] | None = None
    relative: float | None = None
    shift: float | None = None
    max_shift: float | None = None
    out_of_reach: str | None = None  # why steering could not reach the target, with the fix


@dataclass(frozen=True)
class Coverage:
    """A rewrite run's sources: `units` (source documents, or their chunks) each asked for
    `per_source` rewrites; `complete` got all of them, `short` fewer after every try (why: in
    summary.json's `sources.reasons` and `failures.jsonl`), `not_reached` none (a stopped run)."""

    units: int
    per_source: int
    complete: int
    short: int
    not_reached: int


@dataclass(frozen=True)
class RunResult:
    """What `generator.run` made in `out`: the counts of summary.json, the end-of-run diversity
    (None when scoring is off), the steering outcome (None without a target) and the dataset
    card. `stopped` is the reason a run stopped early (then nothing was scored)."""

    out: Path
    num_docs: int
    completion_tokens: int
    tokens_per_s: float
    num_failed: int
    endings: Endings | None
    stopped: str | None = None
    diversity: DiversityReport | None = None
    target: TargetOutcome | None = None
    card: Path | None = None
    rejected: tuple[tuple[str, int], ...] = ()  # (quality gate, documents it rejected), most first
    sources: Coverage | None = None  # a rewrite run's per-source coverage (None for grid runs)

    @property
    def ok(self) -> bool:
        return self.stopped is None


def target_outcome(summary: Mapping[str, Any]) -> TargetOutcome | None:
    """The steering outcome of a summary.json (None when the run had no target or stopped)."""
    if "achieved" not in summary:
        return None
    a, t, ref = summary["achieved"], summary["target"], summary.get("reference")
    return TargetOutcome(
        score=t["score"], tolerance=t["tolerance"], achieved=a["score"], ci_low=a["ci_low"],
        ci_high=a["ci_high"], within_tolerance=bool(a.get("within_tolerance")),
        pilot_rounds=summary["rounds"]["pilot"], main_rounds=summary["rounds"]["main"],
        calibration_ratio=summary["cost"]["calibration_ratio"],
        reference_score=ref["score"] if ref else None,
        reference_ci=(ref["ci_low"], ref["ci_high"]) if ref else None,
        relative=a.get("relative"), shift=a.get("shift"), max_shift=t.get("max_shift"),
        out_of_reach=summary.get("out_of_reach"))


def run_result(out: Path, summary: Mapping[str, Any], *, diversity: DiversityReport | None = None,
               card: Path | None = None) -> RunResult:
    endings, sources = summary.get("endings"), summary.get("sources")
    return RunResult(out=out, num_docs=summary.get("num_docs", 0),
                     completion_tokens=summary.get("completion_tokens", 0),
                     tokens_per_s=summary.get("tokens_per_s", 0.0), num_failed=summary.get("num_failed", 0),
                     endings=Endings(**endings) if endings else None, stopped=summary.get("stopped"),
                     diversity=diversity, target=target_outcome(summary), card=card,
                     rejected=tuple(sorted(summary.get("rejected", {}).get("by_gate", {}).items(),
                                           key=lambda kv: (-kv[1], kv[0]))),
                     sources=Coverage(**{k: sources[k] for k in ("units", "per_source", "complete", "short",
                                                                   "not_reached")}) if sources else None)


@dataclass(frozen=True)
class Prompt:
    """One sampled prompt of a recipe: its sample index, template, grid cell and chat messages."""

    index: int
    template: str
    id: str
    cell: tuple[tuple[str, str], ...]  # (axis, value) in the recipe's axis order
    system: str | None
    prompt: str


@dataclass(frozen=True)
class SourceWeight:
    """One source of an export: its documents, tokens, epochs and token weights."""

    name: str
    kind: str  # "run" or "corpus"
    num_docs: int
    tokens: int
    repetition: float
    requested_weight: float
    achieved_weight: float


@dataclass(frozen=True)
class ExportResult:
    """An export in `out`: its trainer format, total tokens and sources (recipe.yaml has the rest)."""

    out: Path
    format: str
    total_tokens: int
    sources: tuple[SourceWeight, ...]


@dataclass(frozen=True)
class VerifyResult:
    """A run folder checked against itself: `problems` is empty when it is intact; `line` says so."""

    run_dir: Path
    problems: tuple[Problem, ...]
    line: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems
