"""Work on each finished result done beside the engine that made it, not in the driver.

One driver feeds every engine of a run, so what it spends per document bounds the whole run's
rate. The duplicate-index keys of a document (its MinHash sketch: hundreds of microseconds) do
not depend on anything but the document's text, so an engine actor computes them before it
hands the result back (`RayBackend.set_beside`), and the driver only looks them up. The text
they are computed from is the one the result becomes under the run's truncation policy
(`finish_result`), so the keys are exactly those the driver would have computed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from generator.records import Result
from generator.run.dedup import KeySettings
from generator.run.documents import finish_result


@dataclass(frozen=True)
class Beside:
    """What an engine actor does to its results before returning them (picklable)."""

    policy: str  # the recipe's keep_truncated: which text a result becomes
    keys: KeySettings

    def __call__(self, results: list[Result]) -> list[Result]:
        return [with_keys(r, self) for r in results]


def with_keys(result: Result, beside: Beside) -> Result:
    """`result` carrying the index keys of the document it becomes (unchanged if it fails)."""
    outcome = finish_result(result, beside.policy)
    if isinstance(outcome, str):
        return result
    keys = beside.keys.keys(outcome[0]).astype("<u8").tobytes()
    return dataclasses.replace(result, dedup_keys=keys)


def result_keys(result: Result):
    """The keys computed beside the engine, as an array, or None."""
    import numpy as np
    return None if result.dedup_keys is None else np.frombuffer(result.dedup_keys, dtype="<u8")
