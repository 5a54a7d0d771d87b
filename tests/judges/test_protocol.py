"""The judge-independent protocol: repair, score, intervals, sequential stopping, attribution."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from generator.judges.protocol import (REPAIR_KINDS, BatchClustering, ScoreError, attribute_cells, batch_score,
                                 repair_partition, sample_batches, score_corpus)

TEXTS = [f"document {i}" for i in range(40)]


def split_into(k: int, num_clusters: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(i) for i in part) for part in np.array_split(np.arange(k), num_clusters))


class FakeJudge:
    """Scripted judge: `plan(batch_number, batch)` returns the number of clusters, or None to
    fail the batch. Every batch costs `calls_per_batch` calls and 10 + 3 tokens per call."""

    def __init__(self, plan, calls_per_batch: int = 1):
        self.name = "fake"
        self.plan = plan
        self.calls_per_batch = calls_per_batch
        self.seen = 0
        self.chunks: list[int] = []

    def cluster(self, batches):
        self.chunks.append(len(batches))
        out = []
        for batch in batches:
            num_clusters = self.plan(self.seen, batch)
            self.seen += 1
            cost = dict(calls=self.calls_per_batch, prompt_tokens=10 * self.calls_per_batch,
                        completion_tokens=3 * self.calls_per_batch)
            if num_clusters is None:
                out.append(BatchClustering(clusters=(), failed=True, error="scripted failure", **cost))
            else:
                out.append(BatchClustering(clusters=split_into(len(batch), num_clusters),
                                           repairs={"unassigned": 1}, **cost))
        return out


def test_repair_counts_each_kind_exactly():
    clusters, repairs = repair_partition([[0, 1, 1], [1, 2, 12], [-1]], 5)
    assert clusters == ((0, 1), (2,), (3,), (4,))
    assert repairs == {"out_of_range": 2, "duplicate": 2, "unassigned": 2, "invalid_dissolved": 0}


def test_repair_keeps_a_valid_partition_untouched():
    clusters, repairs = repair_partition([[2, 0], [1], [3, 4]], 5)
    assert clusters == ((2, 0), (1,), (3, 4))
    assert sum(repairs.values()) == 0


@pytest.mark.parametrize("num_clusters", range(1, 11))
def test_batch_score_of_a_partition_is_c_squared_over_k(num_clusters):
    assert batch_score(split_into(10, num_clusters)) == pytest.approx(num_clusters**2 / 10)


def test_batch_score_is_clusters_over_mean_size():
    assert batch_score([(0, 1, 2), (3,)]) == pytest.approx(2 / 2)
    assert batch_score([(0,)] * 3) == pytest.approx(3.0)


def test_sample_batches_has_no_repeat_within_a_batch_and_is_seeded():
    a = sample_batches(12, 10, 50, np.random.default_rng(3))
    b = sample_batches(12, 10, 50, np.random.default_rng(3))
    assert a.shape == (50, 10)
    assert all(len(set(row)) == 10 for row in a)
    assert a.min() >= 0 and a.max() < 12
    assert np.array_equal(a, b)


@pytest.mark.parametrize("num_clusters, expected", [(1, 0.1), (10, 10.0), (5, 2.5)])
def test_score_bounds_and_cluster_ratio(num_clusters, expected):
    report = score_corpus(TEXTS, FakeJudge(lambda i, b: num_clusters), k=10, rng=np.random.default_rng(0),
                          num_batches=30)
    assert report.score == pytest.approx(expected)
    assert report.cluster_ratio == pytest.approx(num_clusters / 10)
    assert report.num_scored == 30 and report.stop_reason == "num_batches"


def test_k_larger_than_corpus_names_both_numbers_and_the_fix():
    with pytest.raises(ScoreError, match=r"K=10 .* only 3 .*--k 3"):
        score_corpus(["a", "b", "c"], FakeJudge(lambda i, b: 1), k=10, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):  # ScoreError is also a ValueError
        score_corpus(["a", "b", "c"], FakeJudge(lambda i, b: 1), k=10, rng=np.random.default_rng(0))


def test_empty_corpus_is_an_error():
    with pytest.raises(ScoreError, match="corpus is empty"):
        score_corpus([], FakeJudge(lambda i, b: 1), rng=np.random.default_rng(0))


def test_failed_batches_are_counted_and_never_scored():
    judge = FakeJudge(lambda i, b: None if i % 2 else 10)
    report = score_corpus(TEXTS, judge, k=10, rng=np.random.default_rng(0), num_batches=40, max_failure_share=0.5)
    assert report.num_failed == 20 and report.num_scored == 20
    assert report.score == pytest.approx(10.0)  # only the all-singleton batches count
    assert report.failures == {"engine": 20} and report.failure_share == pytest.approx(0.5)
    assert (report.score_failed_low, report.score_failed_high) == pytest.approx(((200 + 2) / 40, 10.0))
    assert report.to_dict()["errors"] == ["scripted failure"]
    assert report.calls == 40 and report.prompt_tokens == 400 and report.completion_tokens == 120
    assert report.repairs == {**dict.fromkeys(REPAIR_KINDS, 0), "unassigned": 20}


def test_every_batch_failing_is_a_clear_error():
    with pytest.raises(ScoreError, match="failed on all 30 batches.*scripted failure"):
        score_corpus(TEXTS, FakeJudge(lambda i, b: None), rng=np.random.default_rng(0), num_batches=30)


def test_interval_and_bootstrap_bracket_the_score():
    plan_rng = np.random.default_rng(7)
    report = score_corpus(TEXTS, FakeJudge(lambda i, b: int(plan_rng.integers(1, 11))), k=10,
                          rng=np.random.default_rng(0), num_batches=200)
    scores = [batch_score(b.clusters) for b in report.batches]
    assert report.score == pytest.approx(np.mean(scores))
    # the studentised bootstrap interval is close to the normal one for a symmetric score
    assert report.half_width == pytest.approx(1.959964 * np.std(scores, ddof=1) / math.sqrt(200), rel=0.1)
    assert report.half_width == pytest.approx((report.ci_high - report.ci_low) / 2)
    assert report.ci_low < report.score < report.ci_high
    assert report.bootstrap_low < report.score < report.bootstrap_high
    # the bootstrap spread of a mean estimates its standard error
    assert report.bootstrap_std == pytest.approx(report.std_error, rel=0.15)


def test_precision_plans_a_fresh_main_sample_from_a_pilot():
    plan_rng = np.random.default_rng(1)
    judge = FakeJudge(lambda i, b: int(plan_rng.integers(1, 11)))
    report = score_corpus(TEXTS, judge, k=10, rng=np.random.default_rng(0), precision=0.3, num_batches=2000,
                          min_batches=20, chunk_size=500)
    assert report.stop_reason == "precision"
    assert judge.chunks[0] == 20 and report.num_pilot == 20  # the pilot is min_batches
    assert report.num_scored == len(report.batches) - 20  # D comes from the main sample only
    main = [batch_score(b.clusters) for b in report.batches[20:]]
    assert report.score == pytest.approx(np.mean(main))
    assert report.half_width <= 0.3 * 1.1
    assert 100 < report.num_scored < 2000


def test_constant_pilot_still_plans_the_minimum_main_sample():
    report = score_corpus(TEXTS, FakeJudge(lambda i, b: 4), rng=np.random.default_rng(0), precision=0.5,
                          min_batches=25, num_batches=500)
    assert report.stop_reason == "precision" and report.num_pilot == 25 and report.num_scored == 150
    assert report.half_width == pytest.approx(0, abs=1e-12)


def test_precision_beyond_num_batches_stops_there():
    plan_rng = np.random.default_rng(3)
    report = score_corpus(TEXTS, FakeJudge(lambda i, b: int(plan_rng.integers(1, 11))),
                          rng=np.random.default_rng(0), precision=0.01, num_batches=150)
    assert report.stop_reason == "num_batches" and len(report.batches) == 150


def test_stops_by_max_calls_when_precision_is_out_of_reach():
    plan_rng = np.random.default_rng(2)
    judge = FakeJudge(lambda i, b: int(plan_rng.integers(1, 11)), calls_per_batch=2)
    report = score_corpus(TEXTS, judge, k=10, rng=np.random.default_rng(0), precision=0.001, max_calls=100,
                          num_batches=5000)
    assert report.stop_reason == "max_calls"
    assert report.calls <= 100 and report.calls >= 90
    assert report.half_width > 0.001


def test_stops_at_num_batches_without_precision_or_budget():
    report = score_corpus(TEXTS, FakeJudge(lambda i, b: 3), rng=np.random.default_rng(0), num_batches=70)
    assert report.stop_reason == "num_batches" and len(report.batches) == 70 == len(report.batch_docs)


def test_a_non_positive_precision_is_an_error():
    with pytest.raises(ScoreError, match="precision 0 must be at least 1e-06"):
        score_corpus(TEXTS, FakeJudge(lambda i, b: 3), rng=np.random.default_rng(0), precision=0)


def test_without_a_precision_target_all_batches_go_to_the_judge_at_once():
    judge = FakeJudge(lambda i, b: 3)
    score_corpus(TEXTS, judge, rng=np.random.default_rng(0), num_batches=90)
    assert judge.chunks == [90]


def test_a_budget_below_one_batch_is_an_error():
    with pytest.raises(ScoreError, match="max_calls=1 does not allow"):
        score_corpus(TEXTS, FakeJudge(lambda i, b: 3), rng=np.random.default_rng(0), max_calls=1)


def test_report_to_dict_is_strict_json_and_keeps_batches():
    report = score_corpus(TEXTS, FakeJudge(lambda i, b: 2), k=5, rng=np.random.default_rng(0), num_batches=3,
                          min_batches=3)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["k"] == 5 and data["num_scored"] == 3
    assert [len(b["docs"]) for b in data["batches"]] == [5, 5, 5]
    assert data["batches"][0]["clusters"] == [[0, 1, 2], [3, 4]]
    assert data["batches"][0]["score"] == pytest.approx(0.8)
    assert "batches" not in report.to_dict(include_batches=False)


def test_same_seed_same_report():
    a = score_corpus(TEXTS, FakeJudge(lambda i, b: 3), rng=np.random.default_rng(5), num_batches=30)
    b = score_corpus(TEXTS, FakeJudge(lambda i, b: 3), rng=np.random.default_rng(5), num_batches=30)
    assert a.batch_docs == b.batch_docs and a.bootstrap_std == b.bootstrap_std


def _hand_made_report():
    """Two batches of K=3 over five documents, clusters chosen by hand."""
    base = score_corpus(TEXTS[:5], FakeJudge(lambda i, b: 1), k=3, rng=np.random.default_rng(0),
                        num_batches=3, min_batches=3)
    failed = BatchClustering(clusters=(), failed=True, error="x")
    return dataclasses.replace(
        base, num_docs=5, batch_docs=((0, 1, 2), (2, 3, 4), (0, 1, 3)),
        batches=(BatchClustering(clusters=((0, 1), (2,))), BatchClustering(clusters=((0,), (1, 2))), failed))


def test_attribution_counts_pairs_sharing_a_value():
    report = _hand_made_report()
    cells = attribute_cells(report, {"topic": ["x", "x", "y", "y", "y"], "style": ["a", "b", "a", "b", ""]})
    assert cells["baseline"] == {"pairs": 6, "same_cluster": 2, "same_cluster_rate": pytest.approx(2 / 6)}
    topic = cells["columns"]["topic"]
    assert topic["x"]["pairs"] == 1 and topic["x"]["same_cluster_rate"] == 1.0
    assert topic["x"]["lift"] == pytest.approx(3.0)
    assert topic["y"] == {"pairs": 3, "same_cluster": 1, "same_cluster_rate": pytest.approx(1 / 3),
                          "lift": pytest.approx(1.0)}
    # style: pair (0, 2) shares "a" and was split; the empty value is skipped; the failed batch is ignored
    assert cells["columns"]["style"] == {"a": {"pairs": 1, "same_cluster": 0, "same_cluster_rate": 0.0,
                                               "lift": 0.0}}


def test_attribution_rejects_a_column_of_the_wrong_length():
    with pytest.raises(ScoreError, match="'topic' has 2 values for 5 documents"):
        attribute_cells(_hand_made_report(), {"topic": ["x", "y"]})
