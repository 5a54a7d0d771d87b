"""Distribution shift between a corpus and a reference corpus, from their embeddings.

`mmd_rbf` is the UNBIASED estimate of the squared maximum mean discrepancy (MMD^2, Gretton et
al. 2012) with the RBF kernel k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)); it can be slightly
negative when the two samples come from the same distribution. `shift_report` adds a
permutation test on subsamples, so its cost does not grow with the corpus size.
"""
from __future__ import annotations

import numpy as np

_BLOCK_ROWS = 1024
_MEDIAN_MAX_POINTS = 1000


def _as_samples(a: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: embeddings must be a 2-D array (num_docs, dim), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: the corpus is empty (0 embeddings); pass at least two rows")
    if x.shape[0] < 2:
        raise ValueError(f"{what}: needs at least 2 embeddings per sample, got 1")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: embeddings contain NaN or inf")
    return x


def _check_pair(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_samples(x, f"{what} (corpus)"), _as_samples(y, f"{what} (reference)")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{what}: corpus has dim {x.shape[1]} but reference has dim {y.shape[1]}; "
                         "embed both with the same model")
    return x, y


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance between distinct pooled points
    (zero distances from duplicated rows ignored), on at most 1000 evenly spaced pooled rows."""
    x, y = _check_pair(x, y, "median_bandwidth")
    pooled = np.concatenate([x, y])
    if pooled.shape[0] > _MEDIAN_MAX_POINTS:
        pooled = pooled[np.linspace(0, pooled.shape[0] - 1, _MEDIAN_MAX_POINTS).astype(np.int64)]
    from scipy.spatial.distance import pdist

    distances = pdist(pooled)  # from differences, so duplicated rows give exactly 0
    distances = distances[distances > 0]
    if distances.size == 0:
        raise ValueError("median_bandwidth: all points are identical, so there is no distance "
                         "scale; pass bandwidth= explicitly")
    return float(np.median(distances))


def _kernel_sum(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    """sum_ij k(a_i, b_j), in row blocks so memory is O(1024 * len(b))."""
    scale = -0.5 / bandwidth**2
    return float(sum(np.exp(scale * _sq_dists(a[lo : lo + _BLOCK_ROWS], b)).sum()
                     for lo in range(0, a.shape[0], _BLOCK_ROWS)))


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 between samples x (m, d) and y (n, d) with the RBF kernel:
    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j).
    `bandwidth` defaults to `median_bandwidth(x, y)`. Memory O(1024 * (m + n))."""
    x, y = _check_pair(x, y, "mmd_rbf")
    bandwidth = median_bandwidth(x, y) if bandwidth is None else _check_bandwidth(bandwidth)
    m, n = x.shape[0], y.shape[0]
    xx = (_kernel_sum(x, x, bandwidth) - m) / (m * (m - 1))  # k(a, a) = 1 on the diagonal
    yy = (_kernel_sum(y, y, bandwidth) - n) / (n * (n - 1))
    xy = _kernel_sum(x, y, bandwidth) / (m * n)
    return xx + yy - 2.0 * xy


def _check_bandwidth(bandwidth: float) -> float:
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    return float(bandwidth)


def _mmd2_by_split(kernel: np.ndarray, in_x: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each column of `in_x` (N, P) 0/1 masks over the pooled kernel (N, N),
    the pooled rows marked 1 being the x sample. Same formula as `mmd_rbf`."""
    total, row_sums = kernel.sum(), kernel.sum(axis=1)
    m = in_x.sum(axis=0)
    n = in_x.shape[0] - m
    s_xx = np.einsum("ip,ip->p", in_x, kernel @ in_x)
    s_xy = row_sums @ in_x - s_xx
    s_yy = total - s_xx - 2.0 * s_xy
    return (s_xx - m) / (m * (m - 1)) + (s_yy - n) / (n * (n - 1)) - 2.0 * s_xy / (m * n)


def centroid_cosine_distance(x: np.ndarray, y: np.ndarray) -> float:
    """1 - cosine similarity between the mean rows of x and y (all rows, as given)."""
    x, y = _check_pair(x, y, "centroid_cosine_distance")
    cx, cy = x.mean(axis=0), y.mean(axis=0)
    norm = float(np.linalg.norm(cx) * np.linalg.norm(cy))
    if norm == 0:
        raise ValueError("centroid_cosine_distance: a centroid is the zero vector, so it has no "
                         "direction; the embeddings cancel out")
    return 1.0 - float(cx @ cy) / norm


def shift_report(x: np.ndarray, y: np.ndarray, *, rng: np.random.Generator,
                 max_samples: int = 1000, num_permutations: int = 200) -> dict:
    """How far corpus embeddings `x` are from reference embeddings `y`.

    Each side is subsampled (with `rng`, without replacement) to at most `max_samples` rows;
    mmd2 is the unbiased RBF MMD^2 of the subsamples with the median-heuristic bandwidth; the
    permutation test pools them, reshuffles with `rng` `num_permutations` times, recomputes
    MMD^2 with the same bandwidth, and p_value = (1 + #{perm >= observed}) / (1 + num_permutations).
    centroid_cosine_distance uses all rows."""
    x, y = _check_pair(x, y, "shift_report")
    if max_samples < 2:
        raise ValueError(f"shift_report: max_samples must be >= 2, got {max_samples}")
    if num_permutations < 1:
        raise ValueError(f"shift_report: num_permutations must be >= 1, got {num_permutations}")
    xs, ys = _subsample(x, max_samples, rng), _subsample(y, max_samples, rng)
    bandwidth = median_bandwidth(xs, ys)
    pooled = np.concatenate([xs, ys])
    kernel = np.exp(-0.5 / bandwidth**2 * _sq_dists(pooled, pooled))
    np.fill_diagonal(kernel, 1.0)  # exact k(a, a); rounding in _sq_dists leaves ~1e-16
    splits = np.zeros((pooled.shape[0], num_permutations + 1))
    splits[: xs.shape[0], 0] = 1.0  # column 0 is the observed split
    for p in range(1, num_permutations + 1):
        splits[rng.permutation(pooled.shape[0])[: xs.shape[0]], p] = 1.0
    mmd2 = _mmd2_by_split(kernel, splits)
    return {
        "mmd2": float(mmd2[0]),
        "bandwidth": bandwidth,
        "centroid_cosine_distance": centroid_cosine_distance(x, y),
        "p_value": float((1 + np.sum(mmd2[1:] >= mmd2[0])) / (1 + num_permutations)),
        "n_corpus": int(xs.shape[0]),
        "n_reference": int(ys.shape[0]),
    }


def _subsample(a: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if a.shape[0] <= max_samples:
        return a
    return a[np.sort(rng.choice(a.shape[0], size=max_samples, replace=False))]


def self_bandwidth(y: np.ndarray) -> float:
    """The median Euclidean distance between distinct rows of one sample (at most 1000 evenly
    spaced rows): a bandwidth fixed by the reference, so MMD² is comparable across rounds."""
    y = _as_samples(y, "self_bandwidth")
    if y.shape[0] > _MEDIAN_MAX_POINTS:
        y = y[np.linspace(0, y.shape[0] - 1, _MEDIAN_MAX_POINTS).astype(np.int64)]
    from scipy.spatial.distance import pdist

    distances = pdist(y)
    distances = distances[distances > 0]
    if distances.size == 0:
        raise ValueError("self_bandwidth: all rows are identical, so there is no distance scale")
    return float(np.median(distances))


def witness(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    """The MMD witness at each row of x: mean_j k(x_i, x_j) - mean_j k(x_i, y_j) (RBF kernel).
    Its mean over the rows that share a grid value is the derivative of MMD² with respect to
    that value's share of the corpus (up to a constant factor 2): rows far from the
    reference and crowded together score high."""
    x, y = _check_pair(x, y, "witness")
    scale = -0.5 / _check_bandwidth(bandwidth) ** 2
    return np.concatenate([np.exp(scale * _sq_dists(x[lo:lo + _BLOCK_ROWS], x)).mean(1)
                           - np.exp(scale * _sq_dists(x[lo:lo + _BLOCK_ROWS], y)).mean(1)
                           for lo in range(0, x.shape[0], _BLOCK_ROWS)])
