"""The embedding judge: the cluster-agent protocol with a subject view and a form view instead of an LLM.

Subject view: all-MiniLM-L6-v2 embeddings, cosine distance. Form view: hand-computed form
features (`generator.measure.form`: structure, person, register, sentence lengths), root-mean-
square distance. Each K-batch is clustered by average linkage on the distance
max(d_subject / threshold, d_form / form_threshold), cut at 1: two documents share a cluster
only when they are alike in subject and in form. With `form_threshold=None` the judge is the
subject-only ruler (average linkage of the embeddings' cosine distances cut at `threshold`), the
default before the form view, whose reports keep their judge name. The score is the same
D = mean C_i² / K as the LLM judge's, but rulers differ: compare a corpus only with scores from
the same judge name and K. Clustering one batch counts as one judge call.

`view_reports` scores each view alone on the batches a report judged (D_subject, D_form).
The cuts' measurements are in BENCHMARKS.md ("Embedding judge threshold", "A form view");
refit them to a capable LLM judge with `generator calibrate`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import numpy as np

from generator.judges.protocol import REPAIR_KINDS, BatchClustering, ScoreError, summarize_scores, batch_score

DEFAULT_THRESHOLD = 0.83
DEFAULT_FORM_THRESHOLD = 0.12
MODEL_NAME = "all-MiniLM-L6-v2"
VIEWS = ("subject", "form")


class EmbeddingJudge:
    """Implements `diversity.Judge`. `embed` maps texts to one row each (default:
    `generator.measure.embeddings.embed_texts`); every distinct text is embedded (and its form
    measured) once per judge. `form_threshold=None`: the subject-only ruler."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *,
                 form_threshold: float | None = DEFAULT_FORM_THRESHOLD,
                 embed: Callable[[Sequence[str]], np.ndarray] | None = None, batch_size: int = 64):
        if not 0 < threshold <= 2:
            raise ScoreError(f"embedding threshold {threshold} is outside (0, 2]",
                             fix=f"use a cosine distance such as the default {DEFAULT_THRESHOLD}")
        if form_threshold is not None and not 0 < form_threshold <= 1:
            raise ScoreError(f"form threshold {form_threshold} is outside (0, 1]",
                             fix=f"use a form distance such as the default {DEFAULT_FORM_THRESHOLD}")
        self.threshold = threshold
        self.form_threshold = form_threshold
        self.name = f"embed:{MODEL_NAME}@{threshold:g}" + (
            f"+form@{form_threshold:g}" if form_threshold is not None else "")
        self._embed = embed
        self._batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}
        self._forms: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, embedding only the texts not seen before."""
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            vectors = self._embed(new) if self._embed is not None else _default_embed(new, self._batch_size)
            self._cache.update(zip(new, np.asarray(vectors, dtype=np.float32)))
        return np.stack([self._cache[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)

    def forms(self, texts: Sequence[str]) -> np.ndarray:
        """One row of form features per text (`measure.form.form_features`), each text measured once."""
        from generator.measure.form import form_features

        new = [t for t in dict.fromkeys(texts) if t not in self._forms]
        if new:
            self._forms.update(zip(new, form_features(new)))
        return np.stack([self._forms[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)

    def distances(self, batch: Sequence[str]) -> dict[str, np.ndarray]:
        """Condensed distances of one batch per view ("subject", and "form" unless subject-only)."""
        from generator.measure.form import form_distances

        out = {"subject": cosine_distances(self.embed(batch))}
        if self.form_threshold is not None:
            out["form"] = form_distances(self.forms(batch))
        return out

    def linkages(self, batches: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The average-linkage tree of each batch on the judge's distance (cut it at 1 for two
        views, at `threshold` for the subject-only ruler), embedding all distinct documents once."""
        self.embed([t for batch in batches for t in batch])
        return [average_linkage(self._combined(self.distances(batch))) for batch in batches]

    def cluster(self, batches: Sequence[Sequence[str]]) -> list[BatchClustering]:
        cut = self.threshold if self.form_threshold is None else 1.0
        return [BatchClustering(clusters=clusters_at(z, cut), repairs=dict.fromkeys(REPAIR_KINDS, 0), calls=1)
                for z in self.linkages(batches)]

    def view_clusterings(self, batches: Sequence[Sequence[str]]) -> dict[str, list[tuple]]:
        """Each view alone at its own cut: view -> one partition per batch."""
        cuts = {"subject": self.threshold, "form": self.form_threshold}
        out: dict[str, list[tuple]] = {view: [] for view in VIEWS if cuts[view] is not None}
        for batch in batches:
            for view, distance in self.distances(batch).items():
                out[view].append(clusters_at(average_linkage(distance), cuts[view]))
        return out

    def _combined(self, views: dict[str, np.ndarray]) -> np.ndarray:
        if self.form_threshold is None:
            return views["subject"]
        return combined_distances(views["subject"], views["form"], self.threshold, self.form_threshold)


def combined_distances(subject: np.ndarray, form: np.ndarray, threshold: float,
                       form_threshold: float) -> np.ndarray:
    """max(d_subject / threshold, d_form / form_threshold): at most 1 exactly when alike in both."""
    return np.maximum(subject / threshold, form / form_threshold)


def view_reports(report, texts: Sequence[str], judge: EmbeddingJudge, rng: np.random.Generator) -> dict:
    """view -> a DiversityReport of that view alone on the main-sample batches `report` scored:
    the same documents, each view's own cut, its own D and interval."""
    start = report.num_pilot
    docs = report.batch_docs[start:]
    views = judge.view_clusterings([[texts[i] for i in row] for row in docs])
    out = {}
    for view, partitions in views.items():
        batches = tuple(BatchClustering(clusters=p, repairs=dict.fromkeys(REPAIR_KINDS, 0), calls=0)
                        for p in partitions)
        scores = np.array([batch_score(p) for p in partitions], dtype=np.float64)
        out[view] = dataclasses.replace(
            report, judge=f"{report.judge}:{view}", **summarize_scores(scores, 0, report.k, rng),
            cluster_ratio=float(np.mean([len(p) / report.k for p in partitions])), num_scored=len(partitions),
            batch_docs=tuple(docs), batches=batches, num_pilot=0, calls=0)
    return out


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
    """The average-linkage tree of `vectors` on cosine distance (the subject view alone)."""
    return average_linkage(cosine_distances(vectors))


def average_linkage(distances: np.ndarray) -> np.ndarray:
    """scipy's `linkage(distances, method="average")`. Its compiled nearest-neighbour chain is
    called directly where this scipy has it: on a batch of ten documents the public function's
    argument handling costs several times the clustering, and a steered run clusters every batch
    of every round (tests/judges/test_embedding.py checks the two give the same tree)."""
    y = np.ascontiguousarray(distances, dtype=np.float64)
    chain = _nn_chain()
    n = int(round((1 + np.sqrt(1 + 8 * y.size)) / 2))  # documents of a condensed vector of y.size
    if chain is None or y.ndim != 1 or n < 2 or n * (n - 1) // 2 != y.size or not np.isfinite(y).all():
        from scipy.cluster.hierarchy import linkage

        return linkage(y, method="average")  # the public function: its tree, or its error for bad input
    return chain(y, n)


@functools.lru_cache(maxsize=1)
def _nn_chain():
    """scipy's compiled average-linkage routine, or None where its private module differs."""
    try:
        from scipy.cluster import _hierarchy
        from scipy.cluster.hierarchy import _LINKAGE_METHODS

        code = _LINKAGE_METHODS["average"]
        return lambda y, n: _hierarchy.nn_chain(y, n, code)
    except (ImportError, AttributeError, KeyError):
        return None


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
