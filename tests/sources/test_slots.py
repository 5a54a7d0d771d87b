"""The index -> slot mapping in passes: a table of cases, and the rebuild a resume relies on."""
from __future__ import annotations

import pytest

from generator.sources.slots import Passes, rebuild_passes


def run_passes(num_slots, max_attempts, misses_per_pass):
    """Drive Passes as the loop does: submit the open pass, commit it with the given misses
    (indices relative to the pass), until it finishes. Returns (slots per pass, missing)."""
    passes = Passes(num_slots, max_attempts)
    mark, seen = 0, []
    for misses in misses_per_pass:
        end = passes.submit_end(mark, mark)
        if end == mark:
            break
        slots = passes.slots(mark, end - mark)
        seen.append(slots)
        for offset in misses:
            passes.miss(mark + offset)
        mark = end
    assert passes.finished(mark) or len(seen) < len(misses_per_pass)
    return seen, passes.missing(), passes


@pytest.mark.parametrize("num_slots, attempts, misses, want_passes, want_missing", [
    (6, 4, [[]], [[0, 1, 2, 3, 4, 5]], []),
    (6, 4, [[1, 4], []], [[0, 1, 2, 3, 4, 5], [1, 4]], []),
    (6, 4, [[1, 4], [0], []], [[0, 1, 2, 3, 4, 5], [1, 4], [1]], []),
    (6, 2, [[1, 4], [0, 1]], [[0, 1, 2, 3, 4, 5], [1, 4]], [1, 4]),  # attempts spent: short
    (4, 1, [[0, 3]], [[0, 1, 2, 3]], [0, 3]),
])
def test_missed_slots_are_retried_in_slot_order_until_attempts_run_out(num_slots, attempts, misses,
                                                                       want_passes, want_missing):
    seen, missing, _ = run_passes(num_slots, attempts, misses + [[]])
    assert seen == want_passes and missing == want_missing


def test_no_pass_opens_before_the_one_before_it_is_committed():
    passes = Passes(4, 3)
    passes.miss(2)
    assert passes.submit_end(4, 3) == 4  # index 3 not committed yet
    assert passes.submit_end(4, 4) == 5 and passes.slot(4) == 2


def test_a_rebuild_from_the_misses_on_disk_gives_the_same_mapping():
    seen, _, live = run_passes(10, 4, [[2, 5, 7], [1], [], []])
    absolute = [2, 5, 7, 10 + 1]  # index 11: the second try of slot 5
    for mark in range(0, live.end + 1):
        rebuilt = rebuild_passes(10, 4, [i for i in absolute if i < mark], mark)
        upto = min(rebuilt.end, live.end)
        assert rebuilt.slots(0, upto) == live.slots(0, upto)
    assert seen[1] == [2, 5, 7] and seen[2] == [5]
