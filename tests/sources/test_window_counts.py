"""A window's documents are counted in one call of the token counter; the units are those of
counting (and chunking) each document on its own."""
from __future__ import annotations

from generator.sources.chunks import split_chunks
from generator.sources.config import Source
from generator.sources.units import Unit, window_units


def word_counter(calls: list[int]):
    def count(texts):
        calls.append(len(texts))
        return [len(t.split()) for t in texts]
    return count


def window(n: int) -> tuple[list[str], list]:
    texts = []
    for i in range(n):
        long = "\n\n".join(f"paragraph {j} of {i} " + "word " * (i % 7) for j in range(1 + i % 4))
        texts.append(None if i % 11 == 3 else "  " if i % 13 == 5 else long)
    return [f"d{i}" for i in range(n)], texts


def reference(ids, texts, spec: Source, seed: int, max_docs: int | None) -> list[Unit]:
    """Each kept document counted and chunked alone, in the order window_units uses."""
    import numpy as np
    order = np.random.default_rng([seed, 5150, 0]).permutation(len(texts)).tolist()
    docs = [(ids[i], texts[i].strip()) for i in order if texts[i] is not None and texts[i].strip()]
    units: list[Unit] = []
    count = word_counter([])
    for doc_id, text in docs[:max_docs]:
        chunks = split_chunks(text, spec.chunk_tokens, count)
        units += [Unit(len(units) + c, doc_id, c, len(chunks), chunk) for c, chunk in enumerate(chunks)]
    return units


def test_a_window_is_counted_in_one_call_and_chunks_as_each_document_alone():
    ids, texts = window(60)
    spec = Source(path="unused", id_field="id", chunk_tokens=12, shuffle_window=60)
    for max_docs in (None, 17):
        calls: list[int] = []
        got = window_units(ids, texts, number=0, first_unit=0, docs_left=max_docs, spec=spec, seed=3,
                           count=word_counter(calls))
        assert got == reference(ids, texts, spec, 3, max_docs)
        assert calls[0] == (max_docs or sum(1 for t in texts if t and t.strip()))  # the whole window first
        assert len(calls) - 1 == sum(1 for _, t in {(u.source_id, u.num_chunks) for u in got} if t > 1)
        assert any(u.num_chunks > 1 for u in got) and any(u.num_chunks == 1 for u in got)
