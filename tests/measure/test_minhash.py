"""The one MinHash index behind run deduplication and the near-duplicate proxy."""
import pytest

from generator.measure.minhash import MinHashIndex

BASE = [f"w{i}".encode() for i in range(200)]


def test_near_copies_match_and_distinct_sets_do_not():
    index = MinHashIndex(0.8, verify=True)
    index.insert("a", index.sketch(BASE))
    assert index.matches(index.sketch(BASE[:190] + [b"x"] * 10)) == ["a"]  # Jaccard about 0.9
    assert index.matches(index.sketch([f"v{i}".encode() for i in range(200)])) == []


def test_verification_drops_lsh_candidates_below_the_threshold():
    """With bands that favour recall, LSH proposes a pair at Jaccard about 0.43 for a 0.7
    threshold; verification against the stored sketch removes it."""
    other = BASE[:120] + [f"y{i}".encode() for i in range(80)]  # Jaccard 120 / 280
    raw = MinHashIndex(0.7, weights=(0.01, 0.99))
    checked = MinHashIndex(0.7, weights=(0.01, 0.99), verify=True)
    for index in (raw, checked):
        index.insert("a", index.sketch(BASE))
    assert raw.matches(raw.sketch(other)) == ["a"]
    assert checked.matches(checked.sketch(other)) == []


def test_integer_shingles_and_repeated_keys():
    index = MinHashIndex(0.8, hashfunc=int, verify=True)
    index.insert(0, index.sketch(range(100)))
    index.insert(0, index.sketch(range(500, 600)))  # a key is indexed once; the first sketch stays
    assert index.matches(index.sketch(range(100))) == [0]
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        MinHashIndex(1.5)
