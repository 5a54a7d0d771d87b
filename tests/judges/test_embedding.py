"""The embedding judge (structure with fake vectors, validity with the real embedder) and the
threshold calibration against an LLM judge."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from conftest import ROOT, DATA
from fakes import CountingEmbed, GroupJudge, group_embed
from generator.judges.calibrate import (adjusted_rand_index, calibrate_threshold, fit_threshold, pair_agreement,
                                 separating_threshold)
from generator.judges.protocol import BatchClustering, ScoreError, score_corpus
from generator.judges.embedding import DEFAULT_THRESHOLD, EmbeddingJudge, batch_linkage, clusters_at

DATA = DATA / "judge"
TOPICS = ROOT / "topics" / "topics.yaml"
SENTENCE_THRESHOLD = 0.88  # the cut fitted to the short hand-written sentences of tests/data/judge
# Nested domain sets: the first n of this list make the n-domain corpus.
DOMAIN_ORDER = ["physics", "cooking", "law", "astronomy", "music", "finance", "programming", "rome",
                "ocean", "medicine", "football", "gardening", "cars", "philosophy", "fashion", "weather"]


def test_clusters_follow_the_threshold():
    batch = ["g0-0", "g0-1", "g0-2", "g1-0", "g1-1", "g2-0"]
    judge = EmbeddingJudge(0.5, embed=group_embed)
    [result] = judge.cluster([batch])
    assert result.clusters == ((0, 1, 2), (3, 4), (5,))
    assert result.calls == 1 and not result.failed
    [loose] = EmbeddingJudge(1.5, embed=group_embed).cluster([batch])
    assert loose.clusters == ((0, 1, 2, 3, 4, 5),)


def test_identical_and_zero_vectors_are_handled():
    tree = batch_linkage(np.array([[1.0, 0], [1.0, 0], [0, 0], [0, 1.0]]))
    assert clusters_at(tree, 0.01) == ((0, 1), (2,), (3,))
    assert clusters_at(tree, 1.0) == ((0, 1, 2, 3),)


def test_the_cut_is_scipys_fcluster_partition():
    """The threshold cut gives fcluster's partition, ties at a merge height included."""
    from scipy.cluster.hierarchy import fcluster

    rng = np.random.default_rng(5)
    for trial in range(300):
        k = int(rng.integers(2, 16))
        vectors = rng.normal(size=(k, 6))
        if trial % 3 == 0:  # repeated rows: merges at height 0 and equal heights
            vectors = vectors[rng.integers(0, max(1, k // 3), size=k)]
        tree = batch_linkage(vectors)
        for threshold in (*rng.uniform(0, 2, size=4), *tree[:, 2][:3]):
            labels = fcluster(tree, t=threshold, criterion="distance")
            expected: dict[int, list[int]] = {}
            for position, label in enumerate(labels):
                expected.setdefault(int(label), []).append(position)
            assert clusters_at(tree, threshold) == tuple(tuple(m) for m in expected.values())


def test_the_direct_linkage_is_scipys_public_one():
    """`average_linkage` calls scipy's compiled routine directly; the tree is the public
    `linkage(method="average")`'s exactly, ties and zero distances included, and bad input
    still fails loudly."""
    from scipy.cluster.hierarchy import linkage

    from generator.judges.embedding import average_linkage, cosine_distances

    rng = np.random.default_rng(11)
    for trial in range(200):
        k = int(rng.integers(2, 14))
        vectors = rng.normal(size=(k, 5))
        if trial % 2:
            vectors = np.round(vectors[rng.integers(0, max(1, k // 2), size=k)], 1)
        y = cosine_distances(vectors)
        assert np.array_equal(average_linkage(y), linkage(y, method="average"))
    with pytest.raises(ValueError):
        average_linkage(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError):
        average_linkage(np.array([0.1, 0.2]))  # not a condensed matrix of any size


def test_each_distinct_text_is_embedded_once():
    embed = CountingEmbed()
    judge = EmbeddingJudge(embed=embed)
    texts = [f"g{g}-{i}" for g in range(4) for i in range(5)]
    score_corpus(texts, judge, k=10, rng=np.random.default_rng(0), num_batches=60)
    assert sorted(embed.seen) == sorted(set(embed.seen))
    assert set(embed.seen) <= set(texts)


def test_threshold_outside_the_cosine_range_is_rejected():
    with pytest.raises(ScoreError, match="threshold 3.0 is outside"):
        EmbeddingJudge(3.0)


def load_domain_corpora() -> dict[str, list[str]]:
    rows = [json.loads(line) for line in (DATA / "domains.jsonl").read_text().splitlines()]
    corpora = {"near-duplicates": [json.loads(line)["text"]
                                   for line in (DATA / "near_duplicates.jsonl").read_text().splitlines()]}
    for n in (1, 2, 4, 8, 16):
        corpora[f"{n} domains"] = [r["text"] for r in rows if r["domain"] in DOMAIN_ORDER[:n]]
    return corpora


@pytest.fixture(scope="module")
def real_vectors() -> dict[str, np.ndarray]:
    """Every hand-written text embedded once with the real all-MiniLM-L6-v2 embedder."""
    from generator.measure.embeddings import embed_texts

    texts = sorted({t for corpus in load_domain_corpora().values() for t in corpus})
    return dict(zip(texts, embed_texts(texts)))


def test_embedding_judge_orders_corpora_by_number_of_domains(real_vectors):
    """Validity: corpora from 1, 2, 4, 8, 16 hand-written domains (10 sentences each) and 12
    near-duplicates, scored with the real embedder at the cut fitted to short sentences (0.88;
    the default 0.83 is fitted to whole generated documents), K=10, 200 batches.
    Measured: near-duplicates 0.10, then 0.40, 0.93, 1.85, 3.48, 4.26; Spearman rho with the
    number of domains (near-duplicates counted as 0) = 1.0. The smallest gap (8 vs 16 domains,
    0.78) is more than 4 standard errors of the difference, so with these fixed seeds the test
    is deterministic, and a different seed would reorder the corpora with probability < 1e-4."""
    judge = EmbeddingJudge(SENTENCE_THRESHOLD, embed=lambda texts: np.stack([real_vectors[t] for t in texts]))
    scores = {name: score_corpus(texts, judge, k=10, rng=np.random.default_rng(0)).score
              for name, texts in load_domain_corpora().items()}
    ordered = list(scores.values())
    assert ordered == sorted(ordered), scores
    assert scores["near-duplicates"] == pytest.approx(0.1)
    rho = spearmanr([0, 1, 2, 4, 8, 16], ordered).statistic
    assert rho == pytest.approx(1.0)
    assert 2.0 < scores["16 domains"] < 6.0  # mid-scale, not saturated at K


def test_sentence_threshold_separates_the_hand_written_domains(real_vectors):
    """The cut that best separates same-domain from different-domain pairs of the hand-written
    sentences (measured 0.88, balanced accuracy 0.85): short texts need a looser cut than documents."""
    rows = [json.loads(line) for line in (DATA / "domains.jsonl").read_text().splitlines()]
    cut, accuracy = separating_threshold(np.stack([real_vectors[r["text"]] for r in rows]),
                                         [r["domain"] for r in rows])
    assert abs(cut - SENTENCE_THRESHOLD) <= 0.03 and accuracy > 0.8


def test_default_threshold_matches_generated_documents():
    """The derivation of DEFAULT_THRESHOLD: on 200 documents the embedded SmolLM2-135M wrote for
    the quickstart recipe (31 domains), the cut that best separates same-domain from
    different-domain pairs (measured 0.83, balanced accuracy 0.69)."""
    from generator.measure.embeddings import embed_texts

    rows = [json.loads(line) for line in (DATA / "generated_quickstart.jsonl").read_text().splitlines()]
    cut, accuracy = separating_threshold(embed_texts([r["text"] for r in rows]), [r["domain"] for r in rows])
    assert abs(cut - DEFAULT_THRESHOLD) <= 0.03 and accuracy > 0.65


# ---- calibration -------------------------------------------------------------------------------

def test_adjusted_rand_and_pair_agreement_on_known_cases():
    a, b = ((0, 1), (2, 3)), ((0, 2), (1, 3))
    assert adjusted_rand_index(a, a, 4) == 1.0 and pair_agreement(a, a, 4) == 1.0
    assert adjusted_rand_index(a, b, 4) == pytest.approx(-0.5)
    assert pair_agreement(a, b, 4) == pytest.approx(2 / 6)
    singletons = tuple((i,) for i in range(4))
    assert adjusted_rand_index(singletons, singletons, 4) == 1.0
    assert adjusted_rand_index(singletons, a, 4) == 0.0


def test_fit_threshold_picks_the_middle_of_tied_best_thresholds():
    vectors = group_embed(["g0-0", "g0-1", "g1-0", "g1-1"])
    tree = batch_linkage(vectors)
    threshold, curve = fit_threshold([((0, 1), (2, 3))], [tree], 4, thresholds=[0.001, 0.3, 0.5, 0.7, 1.5])
    assert threshold == 0.5
    assert [row["adjusted_rand"] for row in curve] == pytest.approx([0.0, 1.0, 1.0, 1.0, 0.0])
    assert curve[2]["embed_score"] == pytest.approx(1.0)  # two clusters of 4: 2^2 / 4


def test_calibration_recovers_a_threshold_that_reproduces_the_llm_judge():
    texts = [f"g{g}-{i}" for g in range(5) for i in range(6)]
    calibration = calibrate_threshold(texts, GroupJudge(), k=10, num_batches=20, rng=np.random.default_rng(0),
                                      embed=group_embed)
    assert calibration.agreement == pytest.approx(1.0)
    assert 0.1 <= calibration.threshold <= 0.9
    assert calibration.num_batches == 19 and calibration.num_failed == 1
    assert calibration.embed_score == pytest.approx(calibration.llm_score)
    assert len(calibration.curve) == 36 and json.dumps(calibration.to_dict())


def test_calibration_fails_clearly_when_the_llm_judge_fails_everywhere():
    class Broken:
        name = "broken"

        def cluster(self, batches):
            return [BatchClustering(clusters=(), failed=True, error="x") for _ in batches]

    with pytest.raises(ScoreError, match="failed on all 5 calibration batches"):
        calibrate_threshold([f"g0-{i}" for i in range(12)], Broken(), num_batches=5, rng=np.random.default_rng(0),
                            embed=group_embed)
