"""Results that finish ahead of the commit point survive a kill: they are journaled beside the
shards and a resumed run takes them from the journal instead of generating them again."""
from __future__ import annotations

import json

import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import Crash, FakeBackend
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.run import controller
from generator.run.journal import append_results, journal_path, read_journal
from generator.records import Result


class Straggler(FakeBackend):
    """Answers every request but the oldest at each poll (the oldest only every `every`-th poll),
    so results keep arriving ahead of the commit point; dies at poll `crash_at`."""

    capacity = 16

    def __init__(self, every: int = 6, crash_at: int = 0):
        super().__init__()
        self.every, self.crash_at, self.polls = every, crash_at, 0

    def poll(self, timeout_s):
        self.polls += 1
        if self.polls == self.crash_at:
            raise Crash
        if not self.queue:
            return []
        if self.polls % self.every:
            batch, self.queue = self.queue[1:], self.queue[:1]
        else:
            batch, self.queue = self.queue, []
        return self.generate(batch)


def plan_of(tmp_path):
    return load_recipe(write_recipe(tmp_path, SMALL_RECIPE),
                       ["size.num_docs=150", "size.shard_rows=10", "dedup.exact=false", "dedup.near=false"])


def corpus(out):
    table = read_documents(out, columns=["sample_index", "text"])
    return list(zip(table.column("sample_index").to_pylist(), table.column("text").to_pylist()))


def test_a_killed_run_reuses_the_results_it_had_finished_ahead_of_order(tmp_path):
    plan = plan_of(tmp_path)
    controller.run(plan, tmp_path / "whole", Straggler())
    whole = corpus(tmp_path / "whole")
    assert not journal_path(tmp_path / "whole").exists()  # a finished run leaves no journal

    out = tmp_path / "killed"
    with pytest.raises(Crash):
        controller.run(plan, out, Straggler(crash_at=9))
    state = json.loads((out / "state.json").read_text())["counters"]
    ahead = {r.id for r in read_journal(out).values()}
    rows = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    assert ahead and all(r["sample_index"] >= state["next_index"] for r in rows)  # none committed yet
    assert state["num_docs"] > 0 and 0 < len(ahead) < 150 - state["num_docs"]  # some committed, some to do

    again = Straggler()
    controller.run(plan, out, again, resume=True)
    assert corpus(out) == whole
    # the journaled results were not generated again
    assert again.seen == 150 - state["num_docs"] - len(ahead)
    assert not journal_path(out).exists()


def test_a_damaged_journal_line_is_skipped_and_its_request_generated_again(tmp_path):
    append_results(tmp_path, [(3, Result(id="a", text="kept", finish_reason="stop", num_tokens=1))])
    with open(journal_path(tmp_path), "a", encoding="utf-8") as f:
        f.write('{"sample_index": 4, "id": "b", "te')  # cut short by a crash
    assert list(read_journal(tmp_path)) == ["a"] and read_journal(tmp_path)["a"].text == "kept"
