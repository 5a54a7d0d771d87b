"""Evaluation sets a corpus is decontaminated against, and the n-gram index over them.

An evaluation set is a file: `.txt` (one item per non-empty line), `.jsonl` or `.parquet`
(every text value of every row is an item: question, choices, answer). Its file stem names it in
a rejection. Items and documents are normalised as datatrove's `NGramsDecontFilter` does
(`simplify_text`: lowercase, no punctuation, numbers as 0, one space between words) and split
into words at the spaces, which is what its word tokenizer does to a text without punctuation,
at a thirtieth of the cost; every word n-gram is hashed (xxhash64) and a document sharing one
hash with a set is contaminated by it. Items shorter than n words add no n-gram.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from generator.errors import UserError


@dataclass(frozen=True)
class EvalSet:
    name: str  # the file stem
    items: tuple[str, ...]


def read_eval_set(path: Path, where: str) -> EvalSet:
    """The items of one evaluation set (UserError when it cannot be read or holds no text)."""
    try:
        if path.suffix == ".txt":
            items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq
            items = [v for column in pq.read_table(path).to_pydict().values() for v in column]
        else:
            items = [v for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
                     for v in _row_values(json.loads(line))]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        what = f"{type(exc).__name__}: {exc}"[:200]
        raise UserError(f"{where}: {path}: cannot read the evaluation set ({what})",
                        fix="give a UTF-8 .txt, a .jsonl of JSON objects or a .parquet file") from None
    texts = tuple(t for v in items for t in _texts(v) if t.strip())
    if not texts:
        raise UserError(f"{where}: {path}: the evaluation set holds no text",
                        fix="point at a file with the evaluation items, or drop it from "
                            "quality.decontaminate")
    return EvalSet(path.stem, texts)


def _row_values(row) -> list:
    return list(row.values()) if isinstance(row, dict) else [row]


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


class NgramIndex:
    """Hashes of the word n-grams of evaluation sets, each with the set it came from."""

    def __init__(self, sets: list[EvalSet], n: int, words: Callable[[str], list[str]] = str.split):
        from datatrove.utils.hashing import HashConfig, create_hash_func

        self.n, self.words = n, words
        self.hash = create_hash_func(HashConfig(), bytes)  # str input needs xxhash<4; bytes work with all
        self.owner: dict[int, str] = {}
        for s in sets:
            for item in s.items:
                for gram in self.ngrams(item):
                    self.owner.setdefault(self.hash(gram.encode()), s.name)

    def ngrams(self, text: str) -> list[str]:
        from datatrove.utils.text import simplify_text

        tokens = self.words(simplify_text(text))
        return [" ".join(tokens[i:i + self.n]) for i in range(len(tokens) - self.n + 1)]

    def find(self, text: str) -> tuple[str, str] | None:
        """(evaluation set, n-gram) of the first n-gram of `text` found in the index, or None."""
        for gram in self.ngrams(text):
            name = self.owner.get(self.hash(gram.encode()))
            if name is not None:
                return name, gram
        return None
