"""The embedding judge: the cluster-agent protocol with sentence embeddings instead of an LLM.

Each K-batch is clustered by average-linkage agglomerative clustering of its all-MiniLM-L6-v2
embeddings, cut at a cosine-distance threshold (scipy `linkage(method="average")` on the
condensed cosine-distance matrix, which equals `metric="cosine"` for these unit vectors and
stays defined for an all-zero row; then cut at the threshold as `fcluster(criterion="distance")`
would). The score is the
same D = mean C_i² / K as the LLM judge's, so reports and the controller work everywhere, but
the two judges' scores are on different rulers: compare a corpus only with scores from the
same judge, K and threshold. Clustering one batch counts as one judge call, so `max_calls`
bounds either judge.

DEFAULT_THRESHOLD was fitted once on generated documents; the measurements behind it are in
BENCHMARKS.md ("Embedding judge threshold"). Refit it to a capable LLM judge with
`generator calibrate`.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from generator.judges.protocol import REPAIR_KINDS, BatchClustering, ScoreError

DEFAULT_THRESHOLD = 0.83
MODEL_NAME = "all-MiniLM-L6-v2"


class EmbeddingJudge:
    """Implements `diversity.Judge`. `embed` maps texts to one row each (default:
    `generator.measure.embeddings.embed_texts`); every distinct text is embedded once per judge."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *,
                 embed: Callable[[Sequence[str]], np.ndarray] | None = None, batch_size: int = 64):
        if not 0 < threshold <= 2:
            raise ScoreError(f"embedding threshold {threshold} is outside (0, 2]",
                             fix=f"use a cosine distance such as the default {DEFAULT_THRESHOLD}")
        self.threshold = threshold
        self.name = f"embed:{MODEL_NAME}@{threshold:g}"
        self._embed = embed
        self._batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, embedding only the texts not seen before."""
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            vectors = self._embed(new) if self._embed is not None else _default_embed(new, self._batch_size)
            self._cache.update(zip(new, np.asarray(vectors, dtype=np.float32)))
        return np.stack([self._cache[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)

    def linkages(self, batches: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The average-linkage tree of each batch (embedding all distinct documents once)."""
        self.embed([t for batch in batches for t in batch])
        return [batch_linkage(self.embed(batch)) for batch in batches]

    def cluster(self, batches: Sequence[Sequence[str]]) -> list[BatchClustering]:
        return [BatchClustering(clusters=clusters_at(z, self.threshold), repairs=dict.fromkeys(REPAIR_KINDS, 0),
                                calls=1) for z in self.linkages(batches)]


def _default_embed(texts: Sequence[str], batch_size: int) -> np.ndarray:
    from generator.measure.embeddings import embed_texts

    return embed_texts(texts, batch_size=batch_size)


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """Condensed cosine-distance vector (scipy's pdist layout); a zero row is at distance 1
    from everything."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    dist = np.clip(1.0 - v @ v.T, 0.0, 2.0)
    return dist[_upper_triangle(len(v))]


@functools.lru_cache(maxsize=16)
def _upper_triangle(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def batch_linkage(vectors: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage

    return linkage(cosine_distances(vectors), method="average")


def clusters_at(tree: np.ndarray, threshold: float) -> tuple[tuple[int, ...], ...]:
    """Cut an average-linkage tree at `threshold`: a partition of range(K), clusters ordered
    by their first member. The same partition as scipy's `fcluster(tree, threshold,
    criterion="distance")`: average linkage has no inversions, so a document's flat cluster is
    its highest ancestor merged at a height of at most `threshold`."""
    k = len(tree) + 1
    parent = list(range(2 * k - 1))
    for row, (a, b, height, _) in enumerate(tree.tolist()):
        if height <= threshold:
            parent[int(a)] = parent[int(b)] = k + row
    clusters: dict[int, list[int]] = {}
    for position in range(k):
        node = position
        while parent[node] != node:
            node = parent[node]
        clusters.setdefault(node, []).append(position)
    return tuple(tuple(members) for members in clusters.values())
