import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeBackend, RepeatingBackend
from generator.run import controller
from generator.run.dedup import open_deduper
from generator.errors import UserError
from generator.measure.minhash import MinHashIndex
from generator.run.dedup import Deduper, find_flushes, index_path, normalise, shingles
from generator.recipe import load_recipe
from generator.files import read_documents

BASE = ("The tide pool is a shallow basin of seawater left behind on a rocky shore when the tide "
        "goes out, home to anemones, crabs, snails and small fish that endure waves, heat and air.")


def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("Hello,   WORLD!\n") == normalise("hello world") == "hello world"


def test_exact_near_and_distinct():
    d = Deduper()
    assert d.check("a", BASE) is None
    assert d.check("b", BASE.upper() + "  ") == "exact duplicate of a"
    near = BASE.replace("heat and air.", "heat and wind.")  # Jaccard of 5-gram sets 30/32
    assert d.check("c", near) == "near duplicate of a"
    assert d.check("d", "A completely different text about the economics of medieval wool trade routes.") is None
    assert d.counts == {"exact": 1, "near": 1}


def test_near_detection_can_be_switched_off():
    d = Deduper(near=False)
    assert d.check("a", BASE) is None
    assert d.check("c", BASE.replace("small fish", "tiny fish")) is None


def test_run_keeps_generating_until_enough_distinct_documents(small_recipe, tmp_path):
    out = tmp_path / "run"
    summary = controller.run(load_recipe(small_recipe), out, RepeatingBackend())
    texts = read_documents(out).column("text").to_pylist()
    assert len(texts) == 20 == len({normalise(t) for t in texts})
    assert summary["duplicates"]["exact"] > 0
    dups = [json.loads(l) for l in (out / "duplicates.jsonl").read_text().splitlines()]
    assert len(dups) == summary["duplicates"]["exact"] + summary["duplicates"]["near"]
    assert summary["num_attempted"] == 20 + len(dups)


def test_mode_collapse_stops_the_run_with_a_summary(small_recipe, tmp_path):
    with pytest.raises(controller.RunStopped, match="duplicate rate .* the model keeps repeating itself"):
        controller.run(load_recipe(small_recipe), tmp_path / "run", FakeBackend(collapse=True))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_docs"] == 1 and summary["duplicates"]["exact"] == summary["num_attempted"] - 1


def test_dedup_index_is_rebuilt_on_resume(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    out = tmp_path / "run"
    controller.run(plan, out, FakeBackend())
    deduper = open_deduper(plan, out)
    kept = read_documents(out).to_pylist()[0]
    assert deduper.check("new", kept["text"]).startswith("exact duplicate of")


def test_flush_problem_names_what_keeps_an_index_file_from_loading(tmp_path):
    """RF1: an empty or damaged index file is found before a resume starts its engine
    (Deduper.load raised EOFError only after it did)."""
    from generator.run.dedup import flush_problem
    deduper, path = Deduper(exact=True, near=True), tmp_path / "shard-00000.dedup.npz"
    deduper.check("a", "some text to index")
    deduper.flush(path)
    assert flush_problem(path) == ""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.dedup.npz").write_bytes(bytes(data))
    assert "fails its checksum" in flush_problem(tmp_path / "flipped.dedup.npz")
    (tmp_path / "empty.dedup.npz").write_bytes(b"")
    assert flush_problem(tmp_path / "empty.dedup.npz") == "not a readable .npz (BadZipFile)"
    np.savez(tmp_path / "other.npz", ids=np.array([b"a"]))
    assert flush_problem(tmp_path / "other.npz") == "not a duplicate index (no keys.npy)"
    os.mkfifo(tmp_path / "pipe.dedup.npz")
    assert flush_problem(tmp_path / "pipe.dedup.npz") == "not a regular file"


def make_corpus(seed: int, num_docs: int = 40, num_variants: int = 80) -> list[tuple[str, str]]:
    """Random texts, then variants of earlier ones: restyled copies (exact duplicates after
    normalising) and copies with 1 to 40 words replaced (from near duplicates, through the
    threshold, to new texts)."""
    rng = np.random.default_rng(seed)
    vocab = [f"word{i}" for i in range(400)]
    docs = [list(rng.choice(vocab, int(rng.integers(60, 200)))) for _ in range(num_docs)]
    texts = [" ".join(d) for d in docs]
    for _ in range(num_variants):
        source = int(rng.integers(len(docs)))
        words = list(docs[source])
        edits = int(rng.choice([0, 1, 2, 3, 4, 5, 8, 40]))
        for at in rng.integers(len(words), size=edits):
            words[at] = str(rng.choice(vocab))
        docs.append(words)
        texts.append(" ".join(words).upper() + "!" if edits == 0 else " ".join(words))
    return [(f"{seed}-{i}", t) for i, t in enumerate(texts)]


def datasketch_decisions(corpus: list[tuple[str, str]]) -> list[tuple[str, set[str]]]:
    """The decisions of the index this one replaced: SHA-1 of the normalised text, then
    datasketch's MinHashLSH, whose first candidate named the original."""
    hashes, index, out = {}, MinHashIndex(0.8, num_perm=128, seed=1), []
    for doc_id, text in corpus:
        h = hashlib.sha1(normalise(text).encode()).hexdigest()
        sketch = index.sketch(shingles(normalise(text).split()))
        if h in hashes:
            out.append(("exact", {hashes[h]}))
        elif similar := index.matches(sketch):
            out.append(("near", set(similar)))
        else:
            index.insert(doc_id, sketch)
            hashes[h] = doc_id
            out.append(("new", set()))
    return out


def decisions(deduper: Deduper, corpus: list[tuple[str, str]]) -> list[str | None]:
    return [deduper.check(doc_id, text) for doc_id, text in corpus]


def test_two_words_changed_in_300_is_a_near_duplicate_and_another_text_is_not():
    rng = np.random.default_rng(0)
    vocab = [f"word{i}" for i in range(2000)]
    words = list(rng.choice(vocab, 300))
    changed = list(words)
    changed[40], changed[200] = "otter", "kelp"  # Jaccard of 5-gram sets about 286/306
    d = Deduper(threshold=0.8)
    assert d.check("a", " ".join(words)) is None
    assert d.check("b", " ".join(changed)) == "near duplicate of a"
    assert d.check("c", " ".join(rng.choice(vocab, 300))) is None
    assert d.counts == {"exact": 0, "near": 1} and len(d) == 2


def test_decisions_match_the_datasketch_index_they_replace():
    """Same signatures and bands as datasketch, so the same documents are kept and dropped;
    where datasketch had several candidates, the reason names one of them."""
    corpus = make_corpus(seed=5)
    before = datasketch_decisions(corpus)
    after = decisions(Deduper(threshold=0.8, num_perm=128, seed=1), corpus)
    assert [kind for kind, _ in before] == [r.split()[0] if r else "new" for r in after]
    assert all(r.split()[-1] in ids for (_, ids), r in zip(before, after) if r)
    kinds = [kind for kind, _ in before]
    assert min(kinds.count("exact"), kinds.count("near"), kinds[40:].count("new")) >= 5  # every case occurs


def check_in_shards(deduper: Deduper, corpus: list[tuple[str, str]], folder, shard_size: int) -> None:
    for start in range(0, len(corpus), shard_size):
        decisions(deduper, corpus[start:start + shard_size])
        deduper.flush(index_path(folder / "data" / f"shard-{start // shard_size:05d}.parquet"))


def test_a_loaded_index_decides_as_one_never_saved(tmp_path):
    live = Deduper()
    check_in_shards(live, make_corpus(seed=1), tmp_path, shard_size=16)
    loaded = Deduper.load(find_flushes(tmp_path / "dedup"))
    assert len(find_flushes(tmp_path / "dedup")) == 8 and len(loaded) == len(live)
    live.counts = {"exact": 0, "near": 0}
    later = make_corpus(seed=2) + make_corpus(seed=1)[::3]  # new texts, then texts seen before
    assert decisions(loaded, later) == decisions(live, later)
    assert loaded.counts == live.counts and min(loaded.counts.values()) > 0


def test_documents_indexed_from_text_are_written_by_the_next_flush(tmp_path):
    corpus = make_corpus(seed=3)
    d = Deduper()
    d.index(corpus[:50])
    d.flush(tmp_path / "dedup" / "shard-00000.dedup.npz")
    d.check("x", "a text the old shards did not have")
    d.flush(tmp_path / "dedup" / "shard-00001.dedup.npz")
    d.flush(tmp_path / "dedup" / "shard-00002.dedup.npz")  # nothing new: an empty file
    loaded = Deduper.load(find_flushes(tmp_path / "dedup"))
    assert len(loaded) == len(d) > 40 and d.counts == {"exact": 0, "near": 0}  # index() does not count
    assert loaded.check("y", "A text the old shards did not have.") == "exact duplicate of x"


@pytest.mark.parametrize("changed", [{"threshold": 0.7}, {"num_perm": 64}, {"seed": 2}, {"near": False}])
def test_load_refuses_an_index_written_with_other_settings(tmp_path, changed):
    d = Deduper()
    d.check("a", BASE)
    d.flush(tmp_path / "dedup" / "shard-00000.dedup.npz")
    key = next(iter(changed))
    with pytest.raises(UserError, match=rf"shard-00000.dedup.npz was written with other dedup settings "
                                        rf"\(.*{key} .* there, .* now.*\).*delete the \*.dedup.npz files"):
        Deduper.load(find_flushes(tmp_path / "dedup"), **changed)


def test_a_flush_cut_short_leaves_no_file_and_is_written_again(tmp_path, monkeypatch):
    """A crash between writing the temporary file and renaming it: the partial file keeps its
    hidden name, is not loaded, and the rows go into the next flush."""
    d = Deduper()
    check_in_shards(d, make_corpus(seed=4)[:20], tmp_path, shard_size=10)
    d.check("new", BASE)

    def crash(src, dst):
        raise OSError("killed")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            d.flush(tmp_path / "dedup" / "shard-00002.dedup.npz")
    left = tmp_path / "dedup" / ".shard-00002.dedup.npz.tmp"
    left.write_bytes(left.read_bytes()[:100])  # as if the process died mid-write
    assert [p.name for p in find_flushes(tmp_path / "dedup")] == ["shard-00000.dedup.npz", "shard-00001.dedup.npz"]
    assert Deduper.load(find_flushes(tmp_path / "dedup")).check("again", BASE) is None
    d.flush(tmp_path / "dedup" / "shard-00002.dedup.npz")
    assert Deduper.load(find_flushes(tmp_path / "dedup")).check("again", BASE) == "exact duplicate of new"


def test_load_refuses_a_damaged_file(tmp_path):
    d = Deduper()
    d.check("a", BASE)
    path = tmp_path / "dedup" / "shard-00000.dedup.npz"
    d.flush(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match=r"shard-00000.dedup.npz cannot be read .*delete the \*.dedup.npz files"):
        Deduper.load([path])


def test_flush_files_sit_beside_their_shards():
    assert index_path(Path("run/data/shard-00012.parquet")) == Path("run/dedup/shard-00012.dedup.npz")


def test_index_takes_under_150_bytes_per_document(tmp_path):
    """200k documents with random keys (no text: the keys of 9 bands at threshold 0.8 plus
    the exact key) through `check_keys`, flushed: sorted keys, rows and ids."""
    d = Deduper(threshold=0.8, num_perm=128)
    n = 200_000
    keys = np.random.default_rng(0).integers(0, 2**64, (n, 1 + d.bands), dtype=np.uint64, endpoint=False)
    for i in range(n):
        d.check_keys(f"{i:020x}", keys[i])
    d.flush(tmp_path / "dedup" / "shard-00000.dedup.npz")
    assert len(d) == n and d.bands == 9 and d.counts == {"exact": 0, "near": 0}
    assert d.nbytes / n < 150
    assert (tmp_path / "dedup" / "shard-00000.dedup.npz").stat().st_size / n < 110
    assert d.check_keys("x", keys[n - 1]) == f"exact duplicate of {n - 1:020x}"
