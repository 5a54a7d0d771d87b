"""Chunking at paragraph boundaries by tokens (a word counter stands in for the tokenizer)."""
from __future__ import annotations

from generator.sources.chunks import split_chunks, token_counter


def words(texts):
    return [len(t.split()) for t in texts]


def test_a_document_that_fits_is_one_chunk():
    assert split_chunks("a b c\n\nd e", 5, words) == ["a b c\n\nd e"]


def test_paragraphs_are_packed_greedily_and_never_split_when_they_fit():
    text = "a b c\n\nd e f\n\ng h\n\ni j k l"
    assert split_chunks(text, 6, words) == ["a b c\n\nd e f", "g h\n\ni j k l"]


def test_a_paragraph_over_the_limit_is_cut_at_sentences_then_words():
    text = "One two three. Four five six seven eight nine ten eleven.\n\nTail."
    chunks = split_chunks(text, 4, words)
    assert all(len(c.split()) <= 4 for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())  # nothing lost, order kept
    assert chunks[0] == "One two three."


def test_the_generator_tokenizer_counts_tokens():
    count = token_counter("embedded:smollm2-135m", "test")
    assert count(["hello world", ""])[1] == 0 and count(["hello world"])[0] >= 2
