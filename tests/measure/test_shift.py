"""Distribution shift: MMD, bandwidth, centroid distance and the permutation test."""
from __future__ import annotations

import math

import numpy as np
import pytest

from generator.measure.shift import centroid_cosine_distance, median_bandwidth, mmd_rbf, shift_report


def gaussian_cloud(rng: np.random.Generator, n: int, shift: float = 0.0, dim: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    x[:, 0] += shift
    return x


def test_mmd_rbf_hand_computed():
    # within each sample k = 1; across k = exp(-1 / 2): mmd2 = 1 + 1 - 2 exp(-1/2)
    x, y = np.zeros((2, 1)), np.ones((3, 1))
    assert mmd_rbf(x, y, bandwidth=1.0) == pytest.approx(2 - 2 * math.exp(-0.5))


def test_mmd_rbf_of_the_same_sample_is_slightly_negative_unbiased():
    x = gaussian_cloud(np.random.default_rng(0), 50)
    value = mmd_rbf(x, x.copy())
    # unbiased: same points give -2/(m-1) * (mean off-diagonal k - 1) style terms, below zero
    assert -0.1 < value < 0


def test_median_bandwidth_hand_computed():
    # distances 1, 3, 4, 2, 3, 1 -> median (2 + 3) / 2
    assert median_bandwidth(np.array([[0.0], [1.0]]), np.array([[3.0], [4.0]])) == pytest.approx(2.5)


def test_median_bandwidth_ignores_duplicated_rows():
    x = np.zeros((10, 2))
    y = np.array([[3.0, 4.0], [3.0, 4.0]])
    assert median_bandwidth(x, y) == pytest.approx(5.0)
    # a collapsed corpus of one repeated float32 embedding against a varied reference
    rng = np.random.default_rng(2)
    row = rng.normal(size=(1, 384)).astype(np.float32)
    varied = rng.normal(size=(20, 384)).astype(np.float32)
    assert median_bandwidth(np.repeat(row, 60, axis=0), varied) > 1.0


def test_centroid_cosine_distance_hand_computed():
    a, b = np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 2.0], [0.0, 1.0]])
    assert centroid_cosine_distance(a, b) == pytest.approx(1.0)
    assert centroid_cosine_distance(a, a * 5) == pytest.approx(0.0)
    assert centroid_cosine_distance(a, -a) == pytest.approx(2.0)


def test_identical_distributions_do_not_look_shifted():
    # Under no shift the p-value is uniform on {1/201, ..., 1}: p <= 0.05 has probability ~5%
    # per draw; the seed is fixed, so the outcome is deterministic.
    rng = np.random.default_rng(11)
    report = shift_report(gaussian_cloud(rng, 300), gaussian_cloud(rng, 300), rng=rng)
    assert report["p_value"] > 0.05
    assert abs(report["mmd2"]) < 0.01


def test_separated_clouds_are_detected_with_larger_mmd():
    # A shift of 2 standard deviations with 300 points each: every permutation scores below the
    # observed MMD with overwhelming probability, so p = 1/201.
    rng = np.random.default_rng(12)
    same = shift_report(gaussian_cloud(rng, 300), gaussian_cloud(rng, 300), rng=rng)
    moved = shift_report(gaussian_cloud(rng, 300), gaussian_cloud(rng, 300, shift=2.0), rng=rng)
    assert moved["p_value"] <= 0.01
    assert moved["mmd2"] > same["mmd2"] + 0.05


def test_shift_report_fields_subsampling_and_determinism():
    x = gaussian_cloud(np.random.default_rng(13), 500)
    y = gaussian_cloud(np.random.default_rng(14), 80, shift=0.5)
    report = shift_report(x, y, rng=np.random.default_rng(1), max_samples=120, num_permutations=50)
    assert set(report) == {"mmd2", "bandwidth", "centroid_cosine_distance", "p_value",
                           "n_corpus", "n_reference"}
    assert (report["n_corpus"], report["n_reference"]) == (120, 80)
    assert report["p_value"] * 51 == pytest.approx(round(report["p_value"] * 51))
    assert report["centroid_cosine_distance"] == pytest.approx(centroid_cosine_distance(x, y))
    again = shift_report(x, y, rng=np.random.default_rng(1), max_samples=120, num_permutations=50)
    assert again == report


def test_shift_report_mmd_matches_mmd_rbf_without_subsampling():
    rng = np.random.default_rng(15)
    x, y = gaussian_cloud(rng, 40), gaussian_cloud(rng, 30, shift=1.0)
    report = shift_report(x, y, rng=rng, num_permutations=5)
    assert report["bandwidth"] == pytest.approx(median_bandwidth(x, y))
    assert report["mmd2"] == pytest.approx(mmd_rbf(x, y, bandwidth=report["bandwidth"]), rel=1e-9)


def test_bad_inputs_are_rejected():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="corpus is empty"):
        mmd_rbf(np.zeros((0, 4)), x)
    with pytest.raises(ValueError, match="corpus is empty"):
        shift_report(x, np.zeros((0, 4)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        mmd_rbf(np.ones((1, 4)), x)
    with pytest.raises(ValueError, match="embed both with the same model"):
        centroid_cosine_distance(x, np.ones((3, 5)))
    with pytest.raises(ValueError, match="all points are identical"):
        mmd_rbf(x, x)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mmd_rbf(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="zero vector"):
        centroid_cosine_distance(np.array([[1.0, 0.0], [-1.0, 0.0]]), x[:, :2])
    with pytest.raises(ValueError, match="num_permutations must be >= 1"):
        shift_report(x, x + np.arange(4), rng=np.random.default_rng(0), num_permutations=0)
