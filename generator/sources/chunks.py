"""Cutting a long document into chunks of at most `chunk_tokens` tokens of the generator's tokenizer.

Chunks end at paragraph boundaries (blank lines): paragraphs are packed greedily in order while the
chunk's tokens (counted paragraph by paragraph) stay within the limit. A paragraph longer than the
limit is cut at sentence ends, and a sentence longer than it at words. Chunking is a pure function
of the text, the limit and the tokenizer, so a unit's chunk number never changes between runs.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

from generator.errors import UserError

Counter = Callable[[Sequence[str]], list[int]]  # texts -> their token counts
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_chunks(text: str, max_tokens: int, count: Counter, tokens: int | None = None) -> list[str]:
    """`text` as chunks of at most `max_tokens` tokens (the whole text when it fits); `tokens`: the
    text's count when the caller has it (a window's texts are counted in one call)."""
    if (count([text])[0] if tokens is None else tokens) <= max_tokens:
        return [text]
    paragraphs = [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]
    pieces = _fitting_pieces(paragraphs, max_tokens, count)
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece, tokens in pieces:
        if current and used + tokens > max_tokens:
            chunks.append("\n\n".join(current))
            current, used = [], 0
        current.append(piece)
        used += tokens
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def _fitting_pieces(paragraphs: list[str], max_tokens: int, count: Counter) -> list[tuple[str, int]]:
    """(piece, tokens): the paragraphs, those over the limit cut into sentences, then words."""
    out = []
    for paragraph, tokens in zip(paragraphs, count(paragraphs)):
        if tokens <= max_tokens:
            out.append((paragraph, tokens))
            continue
        sentences = _SENTENCE.split(paragraph)
        for sentence, n in zip(sentences, count(sentences)):
            out.extend([(sentence, n)] if n <= max_tokens else _word_pieces(sentence, max_tokens, count))
    return out


def _word_pieces(sentence: str, max_tokens: int, count: Counter) -> list[tuple[str, int]]:
    words = sentence.split()
    sizes = count(words)
    pieces, current, used = [], [], 0
    for word, n in zip(words, sizes):
        if current and used + n + 1 > max_tokens:
            pieces.append((" ".join(current), used))
            current, used = [], 0
        current.append(word)
        used += n + (1 if len(current) > 1 else 0)  # a space may take a token of its own
    if current:
        pieces.append((" ".join(current), used))
    return pieces


def token_counter(model: str, where: str) -> Counter:
    """Token counts by the tokenizer of the generator `model` (an embedded name, a Hugging Face id
    or a local folder). Loads transformers on first use."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError(f"{where}: source.chunk_tokens needs the transformers package",
                        fix="pip install 'generator[vllm]' (or pip install transformers)") from None
    from generator.backends.models import resolve_model

    path = resolve_model(model) if model.startswith("embedded:") else model
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: cannot load the tokenizer of model {model!r} to count chunk tokens "
                        f"({exc})", fix="check model:, or leave out source.chunk_tokens") from None

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return count
