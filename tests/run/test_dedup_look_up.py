"""`Deduper.look_up` searches the index once for a batch of documents; checking them afterwards
must give exactly the verdicts (and index) of checking each one against the whole index."""
import numpy as np
import pytest

from generator.run.dedup import Deduper, KeyTable


def make(buffer_size: int) -> Deduper:
    d = Deduper()
    d._table = KeyTable(buffer_size=buffer_size)  # small: the sorted levels change inside a batch
    return d


def documents(rng: np.random.Generator, n: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Keys from a small range, so exact and near duplicates (shared keys) are common."""
    keys = rng.integers(0, 400, size=(n, width)).astype(np.uint64)
    return [(f"doc{i}", keys[i]) for i in range(n)]


@pytest.mark.parametrize("seed,buffer_size", [(0, 16), (1, 64), (2, 1 << 16), (3, 7)])
def test_checks_after_a_look_up_equal_plain_checks(seed, buffer_size, tmp_path):
    rng = np.random.default_rng(seed)
    plain, batched = make(buffer_size), make(buffer_size)
    docs = documents(rng, 600, 1 + plain.bands)
    want = [plain.check_keys(i, k) for i, k in docs]
    got, at = [], 0
    while at < len(docs):
        batch = docs[at:at + int(rng.integers(1, 60))]
        looked = [d for d in batch if rng.random() < 0.8]  # some are checked without a look-up
        looked += docs[at + len(batch):at + len(batch) + 3]  # some looked up, checked only later
        batched.look_up(looked)
        got += [batched.check_keys(i, k) for i, k in batch]
        at += len(batch)
        if rng.random() < 0.1:
            batched.flush(tmp_path / f"b{at}.npz")
            plain.flush(tmp_path / f"p{at}.npz")
    assert got == want
    assert sum(v is not None for v in want) > 50  # the table holds duplicates of both kinds
    assert {v.split()[0] for v in want if v} == {"exact", "near"}
    assert [batched.id_of(r) for r in range(len(batched))] == [plain.id_of(r) for r in range(len(plain))]


def test_a_document_whose_keys_differ_from_those_looked_up_is_searched_again():
    d = make(1 << 16)
    first = np.arange(1 + d.bands, dtype=np.uint64)
    assert d.check_keys("a", first) is None
    d.look_up([("b", first + 1000)])  # looked up with other keys than it is checked with
    assert d.check_keys("b", first) == "exact duplicate of a"


def test_a_look_up_of_nothing_or_of_mixed_widths_changes_no_verdict():
    d = make(1 << 16)
    keys = np.arange(1 + d.bands, dtype=np.uint64)
    d.look_up([])
    assert d.check_keys("a", keys) is None
    d.look_up([("b", keys), ("c", keys[:3])])
    assert d.check_keys("b", keys) == "exact duplicate of a"
