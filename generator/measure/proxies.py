"""Diversity proxies of a corpus: one float per corpus, lexical ones on texts, the rest on
embeddings. Direction when the corpus is MORE diverse:

    distinct_1..4, ngram_diversity ... higher      compression_ratio ...... lower
    self_repetition .................. lower       near_dup_rate .......... lower
    vendi, dcscore ................... higher      mean_cosine_distance ... higher

All lexical proxies share `tokenize` and work on exact integer n-gram ids built with numpy
(`encode_corpus`, `ngram_levels`), so 100k documents cost seconds, not a loop over tuples.
Embedding proxies L2-normalise rows and never build an n x n matrix at once.
"""
from __future__ import annotations

import gzip
import math
import re
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from generator.measure.minhash import MinHashIndex

TOKEN_RE = re.compile(r"\w+")
# DCScore temperature for all-MiniLM-L6-v2 embeddings. At tau = 1 every pair weighs about the
# same (unrelated documents sit at cosine 0.0-0.3, so exp((K - 1) / tau) barely varies) and the
# score stays near 2.4 whatever the corpus; at 0.1 it is an effective number of distinct
# documents: 475 for 600 distinct news articles, 167 when 80% are near copies (Spearman 0.98
# with the copy share), and it follows the number of subjects (0.94 with subjects drawn at
# random, 0.84 with the first n) where 0.05 follows it less (0.88, 0.77) and 0.02 hardly at all
# (bench/bench_validity.py, BENCHMARKS.md).
DCSCORE_TAU = 0.1
PROXY_KEYS = (
    "distinct_1", "distinct_2", "distinct_3", "distinct_4", "ngram_diversity",
    "compression_ratio", "self_repetition", "vendi", "dcscore", "mean_cosine_distance",
    "near_dup_rate", "num_docs",
)


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens (`\\w+`); the one tokenisation behind every lexical proxy."""
    return TOKEN_RE.findall(text.lower())


@dataclass(frozen=True, eq=False)
class TokenizedCorpus:
    """Documents as integer token ids: `ids` concatenates all documents, `lengths[d]` is
    the number of tokens of document d. Ids are dense (0..vocab_size-1)."""

    ids: np.ndarray = field(repr=False)
    lengths: np.ndarray

    @property
    def num_docs(self) -> int:
        return int(self.lengths.size)


def _check_texts(texts: Sequence[str], what: str) -> None:
    if isinstance(texts, str):
        raise TypeError(f"{what}: expected a sequence of documents, got one str; wrap it in a list")
    if len(texts) == 0:
        raise ValueError(f"{what}: the corpus is empty (0 documents); pass at least one text")


def encode_corpus(texts: Sequence[str]) -> TokenizedCorpus:
    """Tokenise every document and map tokens to dense integer ids (first-seen order)."""
    _check_texts(texts, "encode_corpus")
    vocab: defaultdict[str, int] = defaultdict()
    vocab.default_factory = vocab.__len__  # an unseen token gets the next id
    ids, lengths = array("q"), array("q")
    for text in texts:
        tokens = tokenize(text)
        ids.extend(map(vocab.__getitem__, tokens))
        lengths.append(len(tokens))
    return TokenizedCorpus(np.frombuffer(ids, dtype=np.int64), np.frombuffer(lengths, dtype=np.int64))


def ngram_levels(corpus: TokenizedCorpus, max_n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield `(n, gram_ids, starts)` for n = 1..max_n. `starts` are the token positions where
    an n-gram fits inside its document (n-grams never cross documents); `gram_ids[k]` is an
    exact dense id (0..distinct-1) of the n-gram starting at `starts[k]`. The id of an n-gram
    is the rank of the pair (id of its (n-1)-gram prefix, its last token), so no hashing."""
    if max_n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {max_n}")
    ids = corpus.ids
    vocab_size = int(ids.max()) + 1 if ids.size else 1
    doc_end = np.repeat(np.cumsum(corpus.lengths), corpus.lengths)  # exclusive end per token
    starts = np.arange(ids.size, dtype=np.int64)
    grams = ids
    yield 1, grams, starts
    by_position = ids.copy()  # id of the current-order n-gram starting at each position
    for n in range(2, max_n + 1):
        starts = starts[starts + n <= doc_end[starts]]
        keys = by_position[starts] * vocab_size + ids[starts + n - 1]
        grams = np.unique(keys, return_inverse=True)[1].astype(np.int64, copy=False)
        by_position[starts] = grams
        yield n, grams, starts


def _distinct_ratio(grams: np.ndarray) -> float:
    # ids are dense over the valid n-grams, so the number of distinct ones is max + 1
    return float(grams.max() + 1) / grams.size if grams.size else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over the whole corpus; 0.0 when the corpus
    has no n-gram of that order (every document shorter than n tokens)."""
    *_, (_, grams, _) = ngram_levels(encode_corpus(texts), n)
    return _distinct_ratio(grams)


def ngram_diversity(texts: Sequence[str], max_n: int = 4) -> float:
    """N-gram diversity score, product form: NGD = prod_{n=1..max_n} distinct_n(corpus).
    In [0, 1]; it is 0 when the corpus has no max_n-gram at all. (Shaib et al. 2024 sum the
    same ratios; SimCTG's "diversity" is this product over n = 2..4.)"""
    return math.prod(_distinct_ratio(grams) for _, grams, _ in ngram_levels(encode_corpus(texts), max_n))


def compression_ratio(texts: Sequence[str]) -> float:
    """Original bytes / gzip-compressed bytes of the documents joined with "\\n", UTF-8, at
    gzip level 6 (the gzip CLI default; level 9 is ~3.5x slower for ~3% more compression).
    Higher = more redundant = less diverse. Tiny corpora can score below 1 because of gzip's
    fixed ~20-byte header."""
    _check_texts(texts, "compression_ratio")
    data = "\n".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, compresslevel=6))


def _self_repetition(corpus: TokenizedCorpus, grams: np.ndarray, starts: np.ndarray) -> float:
    docs = np.repeat(np.arange(corpus.num_docs, dtype=np.int64), corpus.lengths)[starts]
    num_grams = int(grams.max()) + 1 if grams.size else 1
    pairs = np.unique(docs * num_grams + grams)  # each (document, distinct n-gram) once
    pair_docs, pair_grams = pairs // num_grams, pairs % num_grams
    doc_freq = np.bincount(pair_grams, minlength=num_grams)
    # log(1 + number of OTHER documents holding the n-gram) = log(document frequency)
    per_doc = np.bincount(pair_docs, weights=np.log(doc_freq[pair_grams]), minlength=corpus.num_docs)
    return float(per_doc.mean())


def self_repetition(texts: Sequence[str], n: int = 4) -> float:
    """Self-repetition score: for each document, add up log(1 + k) over its distinct n-grams,
    where k is how many OTHER documents also contain that n-gram; then average these sums
    over all documents. 0 when no n-gram is shared between documents; higher = more
    repetition across documents = less diverse."""
    corpus = encode_corpus(texts)
    *_, (_, grams, starts) = ngram_levels(corpus, n)
    return _self_repetition(corpus, grams, starts)


def _unit_rows(embeddings: np.ndarray, what: str, dtype=np.float64) -> np.ndarray:
    x = np.asarray(embeddings, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"{what}: embeddings must be a 2-D array (num_docs, dim), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: the corpus is empty (0 embeddings); pass at least one row")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: embeddings contain NaN or inf; check the embedder output")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise ValueError(f"{what}: embedding row {bad} is all zeros and has no direction; drop it")
    return x / norms


def vendi_score(embeddings: np.ndarray, q: float = 1.0) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel: exp of the order-q Renyi
    entropy of the eigenvalues p of K/n, K = X X^T on L2-normalised rows X. The non-zero
    eigenvalues of K/n equal those of the d x d matrix X^T X / n, so the smaller of the two
    matrices is decomposed (O(n d min(n, d)); no n x n matrix for large n). q=1: -sum p log p;
    q=inf: -log max p; else log(sum p^q) / (1 - q). In [1, min(n, d)]; the effective number of
    distinct items."""
    if not q >= 0:
        raise ValueError(f"vendi_score: q must be >= 0 (or inf), got {q}")
    x = _unit_rows(embeddings, "vendi_score")
    gram = x @ x.T if x.shape[0] < x.shape[1] else x.T @ x
    p = np.clip(np.linalg.eigvalsh(gram / x.shape[0]), 0.0, None)
    p = p / p.sum()
    p = p[p > 1e-12]  # numerical zeros would count as items for q < 1
    if q == 1:
        entropy = -float(np.sum(p * np.log(p)))
    elif math.isinf(q):
        entropy = -math.log(float(p.max()))
    else:
        entropy = math.log(float(np.sum(p**q))) / (1 - q)
    return math.exp(entropy)


def dcscore(embeddings: np.ndarray, tau: float = DCSCORE_TAU, *, batch_size: int = 1024) -> float:
    """DCScore (Zhu et al. 2025) from its formula: K = X X^T on L2-normalised rows, P = the
    row-wise softmax of K / tau, score = trace(P) = sum_i P[i, i]. Each P[i, i] is how much
    document i is "classified as itself"; the score is in [1, n] (1 when all documents are
    identical, n when they are orthogonal and tau is small). Since K[i, i] = 1 is the row
    maximum, P[i, i] = 1 / sum_j exp((K[i, j] - 1) / tau), which never overflows. K is
    symmetric, so each block of `batch_size` rows is multiplied only with itself and the
    later rows, and its column sums complete the later rows' sums: half the work of the full
    matrix, memory O(batch_size * n)."""
    if not tau > 0:
        raise ValueError(f"dcscore: tau must be > 0, got {tau}")
    if batch_size < 1:
        raise ValueError(f"dcscore: batch_size must be >= 1, got {batch_size}")
    x = _unit_rows(embeddings, "dcscore").astype(np.float32)
    n = x.shape[0]
    row_sums = np.zeros(n, dtype=np.float64)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        block = x[lo:hi] @ x[lo:].T  # rows lo:hi against columns lo:n
        block -= 1.0
        block *= 1.0 / tau
        np.exp(block, out=block)
        row_sums[lo:hi] += block @ np.ones(n - lo, dtype=np.float32)
        row_sums[hi:] += np.ones(hi - lo, dtype=np.float32) @ block[:, hi - lo :]
    return float(np.sum(1.0 / row_sums))


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of 1 - cos(x_i, x_j) over all distinct pairs i < j, computed exactly in O(n d):
    for unit rows, sum_{i != j} x_i . x_j = |sum_i x_i|^2 - n, so no pair is enumerated and
    no sampling is needed. In [0, 2]; 0.0 for a single document (no pairs)."""
    x = _unit_rows(embeddings, "mean_pairwise_cosine_distance")
    n = x.shape[0]
    if n < 2:
        return 0.0
    total = x.sum(axis=0)
    mean_similarity = (float(total @ total) - n) / (n * (n - 1))
    return max(0.0, 1.0 - mean_similarity)


def _shingles(corpus: TokenizedCorpus, shingle_n: int,
              level: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
    """Per document, the ids of its word `shingle_n`-grams (`level` is that order's
    `(grams, starts)` when already computed); a shorter document uses its token ids instead
    (offset so they never equal a shingle id), an empty one a single reserved id (so empty
    documents are duplicates of each other)."""
    if shingle_n < 1:
        raise ValueError(f"shingle_n must be >= 1, got {shingle_n}")
    if level is None:
        *_, (_, *level) = ngram_levels(corpus, shingle_n)
    grams, starts = level
    offsets = np.concatenate([[0], np.cumsum(corpus.lengths)])
    cut = np.searchsorted(starts, offsets)
    token_base = int(grams.max()) + 1 if grams.size else 0
    empty_id = token_base + (int(corpus.ids.max()) + 1 if corpus.ids.size else 0)
    if empty_id >= 2**32:
        raise ValueError(f"near-duplicate detection: corpus too large for 32-bit shingle ids ({empty_id})")
    shingles = []
    for d in range(corpus.num_docs):
        if cut[d + 1] > cut[d]:
            shingles.append(grams[cut[d] : cut[d + 1]])
        elif corpus.lengths[d] > 0:
            shingles.append(corpus.ids[offsets[d] : offsets[d + 1]] + token_base)
        else:
            shingles.append(np.array([empty_id], dtype=np.int64))
    return shingles


def _near_duplicate_roots(shingles: list[np.ndarray], threshold: float, num_perm: int,
                          seed: int) -> np.ndarray:
    """For each document, the lowest index of its near-duplicate group (itself if none).
    Candidates come from MinHash LSH; a pair is kept when its estimated Jaccard similarity of
    shingle sets is >= threshold; groups are the connected components of kept pairs."""
    # Every candidate is verified, so the bands favour recall: the default (0.5, 0.5) weights
    # find only ~93% of pairs at Jaccard 0.9 for threshold 0.8; these find ~99.9%.
    index = MinHashIndex(threshold, num_perm=num_perm, seed=seed, weights=(0.1, 0.9), hashfunc=int, verify=True)
    roots = list(range(len(shingles)))
    for d, doc_shingles in enumerate(shingles):  # shingles are already integer ids
        sketch = index.sketch(doc_shingles)
        for other in index.matches(sketch):  # only earlier documents are indexed
            _union(roots, d, other)
        index.insert(d, sketch)
    return np.array([_find(roots, d) for d in range(len(shingles))])


def _find(roots: list[int], d: int) -> int:
    while roots[d] != d:
        roots[d] = roots[roots[d]]  # path halving
        d = roots[d]
    return d


def _union(roots: list[int], a: int, b: int) -> None:
    ra, rb = _find(roots, a), _find(roots, b)
    roots[max(ra, rb)] = min(ra, rb)  # the root is always the group's first document


def near_duplicate_rate(texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128,
                        shingle_n: int = 5, seed: int = 1) -> float:
    """Share of documents with at least one near-duplicate among the others: estimated
    Jaccard similarity of word `shingle_n`-gram sets >= threshold (MinHash + LSH, datasketch).
    Documents shorter than `shingle_n` tokens use their tokens as shingles; empty documents
    are near-duplicates of each other. Higher = less diverse."""
    roots = _near_duplicate_roots(_shingles(encode_corpus(texts), shingle_n), threshold, num_perm, seed)
    return _share_in_groups(roots)


def _share_in_groups(roots: np.ndarray) -> float:
    return float(np.mean(np.bincount(roots)[roots] >= 2))


def near_duplicate_groups(texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128,
                          shingle_n: int = 5, seed: int = 1) -> list[int]:
    """Indices of the documents to DROP for deduplication, ascending: every member of a
    near-duplicate group except its first document (same matching as near_duplicate_rate)."""
    roots = _near_duplicate_roots(_shingles(encode_corpus(texts), shingle_n), threshold, num_perm, seed)
    return [int(d) for d in np.flatnonzero(roots != np.arange(roots.size))]


def compute_proxies(texts: Sequence[str], embeddings: np.ndarray | None = None, *,
                    near_dup_threshold: float = 0.8, dcscore_tau: float = DCSCORE_TAU,
                    vendi_q: float = 1.0, seed: int = 1) -> dict[str, float]:
    """Every proxy of one corpus, as a flat dict with the keys in PROXY_KEYS. Lexical ones
    share one tokenisation of `texts`; embedding ones use `embeddings` (one row per text)
    or, when None, `generator.measure.embeddings.embed_texts(texts)`. `seed` seeds the MinHash
    permutations; nothing else is random."""
    corpus = encode_corpus(texts)
    if embeddings is None:
        from generator.measure.embeddings import embed_texts

        embeddings = embed_texts(texts)
    if len(embeddings) != corpus.num_docs:
        raise ValueError(
            f"compute_proxies: {len(embeddings)} embedding rows for {corpus.num_docs} texts; "
            "pass one embedding per text, in the same order")
    ratios, levels = [], {}
    for n, grams, starts in ngram_levels(corpus, 5):  # one pass shared by three proxies
        ratios.append(_distinct_ratio(grams))
        if n >= 4:
            levels[n] = (grams, starts)
    roots = _near_duplicate_roots(_shingles(corpus, 5, levels[5]), near_dup_threshold, 128, seed)
    return {
        **{f"distinct_{n}": ratios[n - 1] for n in range(1, 5)},
        "ngram_diversity": math.prod(ratios[:4]),
        "compression_ratio": compression_ratio(texts),
        "self_repetition": _self_repetition(corpus, *levels[4]),
        "vendi": vendi_score(embeddings, q=vendi_q),
        "dcscore": dcscore(embeddings, tau=dcscore_tau),
        "mean_cosine_distance": mean_pairwise_cosine_distance(embeddings),
        "near_dup_rate": _share_in_groups(roots),
        "num_docs": corpus.num_docs,
    }
