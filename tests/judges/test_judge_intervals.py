"""Coverage and bias of D's interval under the two-stage precision design, by simulation on
skewed batch-score distributions (D_i = C_i² / K, C_i from skewed distributions on 1..K).

Each setting runs the library's own rules (`planned_batches`, `bootstrap_t_interval`) on
simulated pilot and main samples, with a fixed seed.

False-failure probability. Coverage: 1,200 intervals per setting; at a true coverage of
0.95, P(observed < 0.93) = binom.cdf(1115, 1200, 0.95) = 1.0e-3 per setting, 9e-3 over the 9
settings (at 0.947, the geometric case at the 150-batch minimum, 4.8e-3 per setting). Bias:
5,000 estimates per setting, Monte Carlo standard error at most 0.3% of D, so |bias| < 1% fails
a truly unbiased rule with probability below 1e-3 per setting.
"""
from __future__ import annotations

import numpy as np
import pytest

from generator.judges.protocol import score_corpus
from generator.judges.intervals import bootstrap_t_interval, planned_batches
from fakes import KeyJudge

K = 10
VALUES = np.arange(1, K + 1) ** 2 / K  # D_i for C_i = 1..K
DISTRIBUTIONS = {  # probabilities of C_i = 1..K
    "geometric (mostly one cluster)": np.array([0.5 ** c for c in range(1, K + 1)]),
    "bimodal 90/10 (rare all-distinct batch)": np.array([0.9] + [0.0] * 8 + [0.1]),
    "left-skewed (mostly distinct)": np.array([0.04, 0.01, 0, 0, 0, 0, 0.02, 0.08, 0.25, 0.6]),
}
PRECISIONS = (0.6, 0.3, 0.15)
PILOT = 30
COVERAGE_RUNS = 1200
BIAS_RUNS = 5000


def simulate_coverage(p: np.ndarray, precision: float, rng: np.random.Generator) -> float:
    mean = float(p @ VALUES)
    hits = 0
    for _ in range(COVERAGE_RUNS):
        pilot = VALUES[rng.choice(K, p=p, size=PILOT)]
        main = VALUES[rng.choice(K, p=p, size=planned_batches(pilot, precision, k=K))]
        low, high = bootstrap_t_interval(main, rng)
        hits += low <= mean <= high
    return hits / COVERAGE_RUNS


def simulate_bias(p: np.ndarray, precision: float, rng: np.random.Generator) -> tuple[float, float]:
    """(relative bias of D, its Monte Carlo standard error)."""
    mean = float(p @ VALUES)
    pilots = rng.multinomial(PILOT, p, size=BIAS_RUNS)
    sizes = np.array([planned_batches(np.repeat(VALUES, counts), precision, k=K) for counts in pilots])
    estimates = rng.multinomial(sizes, p) @ VALUES / sizes
    return (estimates.mean() - mean) / mean, estimates.std() / np.sqrt(BIAS_RUNS) / mean


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_two_stage_interval_covers_and_is_unbiased_on_skewed_scores(name):
    p = DISTRIBUTIONS[name] / DISTRIBUTIONS[name].sum()
    rng = np.random.default_rng(20241015)
    for precision in PRECISIONS:
        coverage = simulate_coverage(p, precision, rng)
        bias, error = simulate_bias(p, precision, rng)
        assert coverage >= 0.93, (name, precision, coverage)
        assert error < 0.003 and abs(bias) < 0.01, (name, precision, bias, error)


def test_the_sequential_normal_rule_it_replaces_under_covered():
    """Pins the bug: peeking at a normal interval after every chunk and stopping at the first
    look within the precision under-covers on the bimodal distribution (0.90 here, seeded)."""
    p = DISTRIBUTIONS["bimodal 90/10 (rare all-distinct batch)"]
    rng, mean, hits = np.random.default_rng(1), float(p @ VALUES), 0
    for _ in range(1000):
        scores = VALUES[rng.choice(K, p=p, size=20)]
        while 1.96 * scores.std(ddof=1) / np.sqrt(scores.size) > 0.6:
            scores = np.append(scores, VALUES[rng.choice(K, p=p, size=10)])
        hits += abs(scores.mean() - mean) <= 1.96 * scores.std(ddof=1) / np.sqrt(scores.size)
    assert hits / 1000 < 0.93


def test_score_corpus_reports_the_bootstrap_t_interval_of_the_main_sample():
    texts = [f"{c} {i}" for i in range(60) for c in "abcdefghij"[: 1 + i % 3]]
    report = score_corpus(texts, KeyJudge(lambda t: t.split()[0]), k=K, rng=np.random.default_rng(4),
                          precision=0.5, num_batches=1000)
    main = np.array([len(b.clusters) ** 2 / K for b in report.batches[report.num_pilot:]])
    low, high = bootstrap_t_interval(main, np.random.default_rng(0))
    assert report.num_scored == main.size >= 150
    assert report.ci_low == pytest.approx(low, abs=0.05) and report.ci_high == pytest.approx(high, abs=0.05)


def test_planned_batches_caps_a_precision_out_of_reach():
    """RC5: a precision of 1e-300 overflowed squaring the planned count (OverflowError)."""
    from generator.judges.intervals import MAX_PLANNED_BATCHES
    pilot = np.array([1.0, 4.9, 2.5, 10.0, 0.1])
    assert planned_batches(pilot, 1e-300, k=K) == MAX_PLANNED_BATCHES
    assert planned_batches(pilot, 1e300, k=K) == 150
