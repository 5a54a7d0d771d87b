"""Per-document work done beside the engines: the duplicate-index keys an engine attaches to a
result are exactly those the driver would compute, and a run whose backend computes them makes
the same corpus and the same duplicate decisions as one whose driver does."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import SMALL_RECIPE, write_recipe
from fakes import FakeBackend, SeededFaultsBackend
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.records import Result
from generator.run import controller
from generator.run.beside import Beside, result_keys
from generator.run.dedup import Deduper
from generator.run.documents import finish_result


class BesideBackend(FakeBackend):
    """Applies the work it is given beside its engine to every result it returns, and
    counts the results that came back carrying keys."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.beside, self.with_keys, self.verdicts = None, 0, 0

    def set_beside(self, beside) -> None:
        self.beside = pickle.loads(pickle.dumps(beside))  # as a Ray actor receives it

    def poll(self, timeout_s: float) -> list[Result]:
        results = super().poll(timeout_s)
        results = self.beside(results) if self.beside is not None else results
        self.with_keys += sum(r.dedup_keys is not None for r in results)
        self.verdicts += sum(r.verdict is not None for r in results)
        return results


@pytest.mark.parametrize("policy", ["trim", "keep", "drop"])
def test_keys_beside_are_the_drivers_keys_of_the_finished_text(policy):
    deduper = Deduper(threshold=0.7, num_perm=64, seed=5)
    beside = Beside(policy, deduper.key_settings)
    cut = "One full sentence here. Another one that is cut"
    results = [Result("a", "A short answer. It ends well.", "stop", num_tokens=9),
               Result("b", cut, "length", num_tokens=12),
               Result("c", "", "error", error="engine error"), Result("d", "   ", "stop")]
    for result, after in zip(results, beside(results)):
        outcome = finish_result(result, policy)
        if isinstance(outcome, str):  # a failed row: nothing to index, nothing attached
            assert after == result
            continue
        assert np.array_equal(result_keys(after), deduper.keys(outcome[0]))
    assert beside(results)[1].dedup_keys is not None or policy == "drop"


def test_a_run_with_keys_beside_makes_the_same_corpus(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    plain = FakeBackend(collapse=True)
    beside = BesideBackend(collapse=True)  # every answer alike: the deduplication decides the corpus
    with pytest.raises(controller.RunStopped):
        controller.run(plan, tmp_path / "plain", plain)
    with pytest.raises(controller.RunStopped):
        controller.run(plan, tmp_path / "beside", beside)
    assert beside.with_keys > 0
    assert (tmp_path / "plain" / "duplicates.jsonl").read_text() == (
        tmp_path / "beside" / "duplicates.jsonl").read_text()
    counters = [json.loads((tmp_path / run / "state.json").read_text())["counters"]
                for run in ("plain", "beside")]
    for c in counters:
        c.pop("generate_s")
    assert counters[0] == counters[1] and counters[0]["duplicates_exact"] > 0
    a, b = read_documents(tmp_path / "plain"), read_documents(tmp_path / "beside")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()


def test_distinct_answers_are_kept_alike_with_keys_beside(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    beside = BesideBackend()
    controller.run(plan, tmp_path / "beside", beside)
    controller.run(plan, tmp_path / "plain", FakeBackend())
    assert beside.with_keys >= 20
    a, b = read_documents(tmp_path / "plain"), read_documents(tmp_path / "beside")
    assert a.column("text").to_pylist() == b.column("text").to_pylist()
    summary = json.loads((tmp_path / "beside" / "summary.json").read_text())
    assert summary["num_docs"] == 20


class SeededBeside(BesideBackend, SeededFaultsBackend):
    """SeededFaultsBackend's answers (some too short for the gate), with work beside it."""


def test_a_gated_run_with_verdicts_beside_rejects_the_same_documents(tmp_path):
    """The quality gates' verdicts made beside the engine: the same rejections, lines and corpus
    as a run whose driver checks every document."""
    body = SMALL_RECIPE + "quality: {min_tokens: 6, gopher_repetition: true}\n"
    plan = load_recipe(write_recipe(tmp_path, body), ["max_failure_rate=0.5", "size.num_docs=30"])
    beside = SeededBeside()
    controller.run(plan, tmp_path / "beside", beside)
    controller.run(plan, tmp_path / "plain", SeededFaultsBackend())
    assert beside.with_keys > 0 and beside.verdicts > 0
    for name in ("rejected.jsonl", "failures.jsonl", "duplicates.jsonl"):
        plain, besides = tmp_path / "plain" / name, tmp_path / "beside" / name
        assert plain.is_file() == besides.is_file() and (not plain.is_file()
                                                          or plain.read_text() == besides.read_text()), name
    assert (tmp_path / "plain" / "rejected.jsonl").read_text()  # the gate did reject some
    a, b = read_documents(tmp_path / "plain"), read_documents(tmp_path / "beside")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
