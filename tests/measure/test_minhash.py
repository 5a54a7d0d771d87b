"""MinHash: the datasketch index of the near-duplicate proxy, and the signatures and band
keys of run deduplication, which must equal datasketch's."""
import numpy as np
import pytest

from generator.measure.minhash import MinHashIndex, band_keys, band_layout, minhash_permutations, sketch_shingles

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


@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 7)])
def test_signatures_equal_datasketch_affine32(num_perm, seed):
    from datasketch import MinHash
    perms = minhash_permutations(num_perm, seed)
    for shingles in (BASE, BASE[:3], []):
        m = MinHash(num_perm=num_perm, seed=seed, scheme="affine32")
        m.update_batch(shingles)
        assert np.array_equal(sketch_shingles(shingles, perms), m.hashvalues)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_band_layout_is_the_one_minhashlsh_picks(threshold):
    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    assert band_layout(threshold, 128) == (lsh.b, lsh.r)


def test_band_keys_change_with_their_band_only():
    sig = np.random.default_rng(0).integers(0, 2**32, (3, 128), dtype=np.uint32)
    sig[1] = sig[0]
    sig[1, 13 * 4] += 1  # one value of band 4
    keys = band_keys(sig, 9, 13)
    assert keys.shape == (3, 9) and keys.dtype == np.uint64
    assert np.array_equal(keys[0] != keys[1], np.arange(9) == 4)
    assert np.array_equal(band_keys(sig[2], 9, 13), keys[2])  # one signature or many
    same_values = np.tile(sig[0, :13], 9)  # the same values in every band still give 9 keys
    assert len(set(band_keys(same_values, 9, 13).tolist())) == 9


def test_a_seed_past_2_to_the_32_gives_permutations_instead_of_an_error():
    big = minhash_permutations(64, (1 << 32) + 7)  # a recipe seed may be up to 2**63 - 1
    assert big.shape == (2, 64) and np.array_equal(big, minhash_permutations(64, 7))
    assert not np.array_equal(minhash_permutations(64, 7), minhash_permutations(64, 8))
