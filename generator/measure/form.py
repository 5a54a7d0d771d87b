"""How a document is written, apart from what it is about: a small vector of form features.

Each feature lies in [0, 1] on a fixed scale (no fitting to a corpus), so a document's vector
does not depend on the other documents it is compared with. Groups: structure (shares of
lines that are headings, numbered steps, bullets, speaker turns, question/answer labels,
code or table rows), person and address (rates of I, we, you), register (contractions, word
length, long words, exclamations, questions, digits), sentence-length profile and paragraphs.
Pure regular expressions and numpy: no model, no network.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np

FORM_FEATURES = (
    "heading_lines", "numbered_lines", "bullet_lines", "speaker_lines", "qa_lines", "code_lines",
    "first_singular", "first_plural", "second_person", "contractions", "word_length", "long_words",
    "exclamations", "questions", "digits", "sentence_length", "sentence_spread", "paragraphs",
)

# Weights of the distance: the continuous register features vary from document to document of
# one form (BENCHMARKS.md, "A form view"), so they count half, and digits, which follow the
# subject as much as the form, a quarter.
FORM_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0.5, 1, 1, 0.25, 1, 0.5, 1], dtype=np.float64)

_HEADING = re.compile(r"^\s*(#{1,6}\s|\*\*[^*]{1,80}\*\*:?\s*$|[A-Z][^.!?]{0,60}:\s*$)")
_NUMBERED = re.compile(r"^\s*(\d{1,2}[.)]\s|step\s+\d+\b)", re.I)
_BULLET = re.compile(r"^\s*[-*\u2022+]\s+\S")
_SPEAKER = re.compile(r"^\s*\**[A-Z][\w.'-]*(\s[A-Z][\w.'-]*){0,2}\**\s*:\s*\S")
_QA = re.compile(r"^\s*\**(q|a|question|answer)\s*\d*\s*[:.)]", re.I)
_CODE = re.compile(r"^(\s{4,}|\t)\S|^\s*```|\|.*\||[;{}]\s*$")
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_PARAGRAPH = re.compile(r"\n\s*\n")
_QUOTED = re.compile(r"\"[^\"\n]{0,400}\"|\u201c[^\u201d\n]{0,400}\u201d")
_CONTRACTION = re.compile(r"\b(\w+n't|\w+'(re|ve|ll|m|d)|(it|that|there|what|he|she|let|here|who)'s)\b")
_PRONOUNS = {
    "first_singular": {"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"},
    "first_plural": {"we", "us", "our", "ours", "ourselves", "we're", "we've", "we'll", "we'd"},
    "second_person": {"you", "your", "yours", "yourself", "yourselves", "you're", "you've", "you'll",
                      "you'd"},
}
_SCALE = {"first_singular": 20.0, "first_plural": 20.0, "second_person": 20.0, "contractions": 25.0,
          "long_words": 3.0, "digits": 10.0}  # a rate of 1/scale reads as 1: rates past it are all "a lot"


def form_features(texts: Sequence[str]) -> np.ndarray:
    """Float32 array (len(texts), len(FORM_FEATURES)), every entry in [0, 1]."""
    if isinstance(texts, str):
        raise TypeError("form_features: expected a sequence of texts, got one str; wrap it in a list")
    out = np.zeros((len(texts), len(FORM_FEATURES)), dtype=np.float32)
    for row, text in enumerate(texts):
        out[row] = _features(text)
    return out


def _features(text: str) -> list[float]:
    text = text.replace("\u2019", "'")
    lines = [line for line in text.splitlines() if line.strip()] or [""]
    share = lambda pattern: sum(bool(pattern.search(line)) for line in lines) / len(lines)  # noqa: E731
    words = _WORD.findall(text)
    own = [w.lower() for w in _WORD.findall(_QUOTED.sub(" ", text))]  # the writer's words, not quoted speech
    num_words = max(len(words), 1)
    rate = lambda name, count: min(count / num_words * _SCALE[name], 1.0)  # noqa: E731
    sentences = [s for s in _SENTENCE_END.split(text) if _WORD.search(s)]
    lengths = np.array([len(_WORD.findall(s)) for s in sentences] or [0], dtype=np.float64)
    ends = [s.rstrip("\"')] ")[-1:] for s in sentences] or [""]
    tokens = text.split()
    paragraphs = sum(1 for p in _PARAGRAPH.split(text) if p.strip())
    return [
        share(_HEADING), share(_NUMBERED), share(_BULLET), share(_SPEAKER), share(_QA), share(_CODE),
        *(rate(name, sum(w in vocabulary for w in own)) for name, vocabulary in _PRONOUNS.items()),
        rate("contractions", len(_CONTRACTION.findall(" ".join(own)))),
        min(max((sum(map(len, words)) / num_words - 3.0) / 4.0, 0.0), 1.0),
        rate("long_words", sum(len(w) >= 9 for w in words)),
        ends.count("!") / len(ends),
        ends.count("?") / len(ends),
        min(sum(any(c.isdigit() for c in t) for t in tokens) / max(len(tokens), 1) * _SCALE["digits"], 1.0),
        min(np.log1p(lengths.mean()) / np.log1p(60.0), 1.0),
        min(lengths.std() / lengths.mean(), 1.0) if lengths.mean() > 0 else 0.0,
        min(np.log1p(paragraphs) / np.log1p(30.0), 1.0),
    ]


def form_distances(features: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Condensed (scipy pdist layout) weighted root-mean-square difference between feature rows,
    in [0, 1] (`weights`: one per feature, default FORM_WEIGHTS)."""
    f = np.asarray(features, dtype=np.float64)
    w = FORM_WEIGHTS if weights is None else np.asarray(weights, dtype=np.float64)
    rows, cols = _pairs(len(f))
    return np.sqrt(((f[rows] - f[cols]) ** 2) @ w / w.sum()) if len(f) > 1 else np.zeros(0)


@functools.lru_cache(maxsize=16)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i < j) of n rows in pdist order; a judge asks for the same K every batch."""
    return np.triu_indices(n, 1)
