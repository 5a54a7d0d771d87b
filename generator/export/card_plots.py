"""The dataset card's plots, drawn into RUN_DIR/plots/: documents per value of each grid axis,
a 2-D embedding map of the documents coloured by domain, the corpus beside its reference corpus,
and links to the controller's own plots (score trajectory, weights, shift) when they exist."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from generator.figures import pyplot, save_figure
from generator.records import GRID_COLUMNS

log = logging.getLogger(__name__)
TextsAt = Callable[[np.ndarray], list[str]]  # sorted row numbers of a corpus -> their texts

HIST_AXES = tuple(c for c in GRID_COLUMNS if c != "topic")  # topics are too many to draw
MAX_MAP_DOCS = 2000
MAP_COLOURS = 10  # domains drawn in their own colour; the rest are "other"


def draw_plots(run: Path, table: Mapping[str, list], *, embed, rng: np.random.Generator,
               texts_at: TextsAt | None = None) -> dict:
    folder = run / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    plots: dict = {"axes": [], "steering": [], "map": None, "map_missing": "", "fidelity": None}
    if plot_axis_histograms(table, folder / "axis_histograms.png"):
        plots["axes"].append({"alt": "documents per value of each grid axis",
                              "path": "plots/axis_histograms.png"})
    steering = (("score_trajectory.png", "controller score trajectory"),
                ("weights.png", "final sampling weights"),
                ("shift_trajectory.png", "MMD² from the reference per round"))
    for name, alt in steering:
        if (folder / name).is_file():
            plots["steering"].append({"alt": alt, "path": f"plots/{name}"})
    try:
        caption = plot_embedding_map(table, folder / "embedding_map.png", embed=embed, rng=rng,
                                     texts_at=texts_at)
        plots["map"] = {"alt": "2-D embedding map coloured by domain", "path": "plots/embedding_map.png",
                        "caption": caption}
        if (run / "reference.npy").is_file():
            caption = plot_reference_map(table, np.load(run / "reference.npy"), folder / "reference_map.png",
                                         embed=embed, rng=rng, texts_at=texts_at)
            if caption:
                plots["steering"].append({"alt": caption, "path": "plots/reference_map.png"})
    except ImportError as exc:  # the embedder is an optional extra
        log.warning("no embedding map: %s", exc)
        plots["map_missing"] = str(exc)
    return plots


def plot_axis_histograms(table: Mapping[str, list], png: Path, top: int = 12) -> Path | None:
    """One panel per axis the corpus used: document counts of its most frequent values."""
    counts = {a: Counter(v for v in table[a] if v) for a in HIST_AXES if a in table}
    counts = {a: c for a, c in counts.items() if c}
    if not counts:
        return None
    plt = pyplot()
    fig, panels = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 5), squeeze=False)
    for panel, (axis, counter) in zip(panels[0], counts.items()):
        shown = counter.most_common(top)[::-1]
        names = [v if len(v) <= 34 else v[:32] + "…" for v, _ in shown]
        panel.barh(names, [n for _, n in shown], color="tab:blue")
        panel.set_title(f"{axis}: {len(counter)} distinct", fontsize=9)
        panel.tick_params(axis="y", labelsize=6)
        panel.set_xlabel("documents", fontsize=8)
    fig.suptitle("What was generated (top values per axis)")
    save_figure(fig, png, dpi=100)
    return png


def texts_of(table: Mapping[str, list]) -> TextsAt:
    return lambda rows: [table["text"][i] for i in rows]


def sampled_vectors(table: Mapping[str, list], *, embed, rng: np.random.Generator,
                    texts_at: TextsAt | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows an embedding map draws (at most MAX_MAP_DOCS, a sorted sample drawn with `rng`)
    and their embeddings (`embed`, default MiniLM; texts read by `texts_at`, default from
    `table["text"]`)."""
    if embed is None:
        from generator.measure.embeddings import embed_texts as embed
    n = len(table["domain"])
    idx = np.sort(rng.choice(n, size=MAX_MAP_DOCS, replace=False)) if n > MAX_MAP_DOCS else np.arange(n)
    return idx, np.asarray(embed((texts_at or texts_of(table))(idx)), dtype=np.float64)


def project_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components (numpy SVD) and their shares of the variance."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s ** 2 / max(float((s ** 2).sum()), 1e-12)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, np.pad(share[:2], (0, max(0, 2 - len(share))))


def plot_reference_map(table: Mapping[str, list], reference: np.ndarray, png: Path, *, embed,
                       rng: np.random.Generator, texts_at: TextsAt | None = None) -> str:
    """The corpus (at most MAX_MAP_DOCS, sampled with `rng`) and the reference corpus in one PCA
    map; "" when their embeddings differ in dimension (another embedder). `texts_at` reads the
    sampled texts (default: from `table["text"]`)."""
    idx, corpus = sampled_vectors(table, embed=embed, rng=rng, texts_at=texts_at)
    if corpus.shape[1] != reference.shape[1]:
        return ""
    coords, share = project_2d(np.vstack([corpus, reference]))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.scatter(coords[:len(idx), 0], coords[:len(idx), 1], s=10, alpha=0.6, label=f"corpus ({len(idx)})")
    ax.scatter(coords[len(idx):, 0], coords[len(idx):, 1], s=12, alpha=0.7, marker="x", color="tab:red",
               label=f"reference ({len(reference)})")
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
    ax.set_title("Corpus and reference in one embedding map (PCA)")
    ax.legend(fontsize=8)
    save_figure(fig, png, dpi=100)
    return "corpus and reference documents in one embedding map (PCA)"


def plot_embedding_map(table: Mapping[str, list], png: Path, *, embed, rng: np.random.Generator,
                       texts_at: TextsAt | None = None) -> str:
    """PCA of document embeddings (at most MAX_MAP_DOCS, sampled with `rng`), coloured by domain.
    `texts_at` reads the sampled texts (default: from `table["text"]`)."""
    n = len(table["domain"])
    idx, vectors = sampled_vectors(table, embed=embed, rng=rng, texts_at=texts_at)
    coords, share = project_2d(vectors)
    domains = [table["domain"][i] or "(no topic)" for i in idx]
    shown = [d for d, _ in Counter(domains).most_common(MAP_COLOURS)]
    labels = np.array([d if d in shown else "other" for d in domains])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    for i, label in enumerate([*shown, "other"]):
        mask = labels == label
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=10, alpha=0.7, label=f"{label} ({mask.sum()})",
                       color="lightgray" if label == "other" else plt.cm.tab10(i % 10))
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
    ax.set_title("Documents in embedding space (PCA), coloured by domain")
    ax.legend(fontsize=7, loc="best", markerscale=1.5)
    save_figure(fig, png, dpi=100)
    return (f"PCA of all-MiniLM-L6-v2 embeddings of {len(idx)} of {n} documents "
            f"({'a seeded random sample' if n > len(idx) else 'all'}), coloured by domain; the first two "
            f"components hold {share[0] + share[1]:.0%} of the variance.")
