"""Work on each finished result done beside the engine that made it, not in the driver.

One driver feeds every engine of a run, so what it spends per document bounds the whole run's
rate. The duplicate-index keys of a document (its MinHash sketch: hundreds of microseconds) and
the quality gates' verdict (datatrove's filters: up to milliseconds) depend on nothing but the
document's text, so an engine actor computes them before it hands the result back
(`RayBackend.set_beside`), and the driver only looks them up. The text they are computed from is
the one the result becomes under the run's truncation policy (`finish_result`), so they are
exactly what the driver would have computed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from generator.quality.config import Quality
from generator.quality.evalsets import EvalSet
from generator.quality.gates import Gates, Rejection, build_gates
from generator.records import Result
from generator.run.dedup import KeySettings
from generator.run.documents import finish_result


@dataclass(frozen=True)
class Beside:
    """What an engine actor does to its results before returning them (picklable)."""

    policy: str  # the recipe's keep_truncated: which text a result becomes
    keys: KeySettings | None  # None: no duplicate index
    quality: Quality | None = None  # the gates, built once per process where this runs
    eval_sets: tuple[EvalSet, ...] = ()

    def __call__(self, results: list[Result]) -> list[Result]:
        return [with_keys(r, self) for r in results]


def with_keys(result: Result, beside: Beside) -> Result:
    """`result` carrying the index keys of the document it becomes and the gates' verdict on it
    (unchanged if it fails)."""
    outcome = finish_result(result, beside.policy)
    if isinstance(outcome, str):
        return result
    changes: dict = {}
    if beside.keys is not None:
        changes["dedup_keys"] = beside.keys.keys(outcome[0]).astype("<u8").tobytes()
    if beside.quality is not None:
        rejection = gates_of(beside).check(outcome[0])
        changes["verdict"] = () if rejection is None else (rejection.gate, rejection.rule, rejection.reason)
    return dataclasses.replace(result, **changes)


_GATES: dict[int, tuple[Beside, Gates]] = {}  # id -> (the Beside, kept so its id stays its own; gates)


def gates_of(beside: Beside) -> Gates:
    """The gates `beside` names, built on first use in this process (loading the word tokenizer)."""
    if id(beside) not in _GATES:
        _GATES[id(beside)] = (beside, build_gates(beside.quality, beside.eval_sets))
    return _GATES[id(beside)][1]


def result_verdict(result: Result) -> Rejection | None | bool:
    """The verdict made beside the engine: a Rejection, None (passed), or False (none made)."""
    if result.verdict is None:
        return False
    return Rejection(*result.verdict) if result.verdict else None


def result_keys(result: Result):
    """The keys computed beside the engine, as an array, or None."""
    import numpy as np
    return None if result.dedup_keys is None else np.frombuffer(result.dedup_keys, dtype="<u8")
