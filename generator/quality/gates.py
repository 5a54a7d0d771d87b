"""Quality gates: the decision whether a finished document is kept, built once per run.

`build_gates(quality, eval_sets)` returns a `Gates` whose `check(text)` is a pure function of
the text: the first gate that fails gives a `Rejection` (gate and reason), else None. The run
loop commits the documents that pass; rejected ones go to rejected.jsonl and are replaced by
later samples, so the corpus still gets exactly the requested number. datatrove's filters are
used as the library, with its English word tokenizer (spaCy's blank English pipeline: rules
only, no model files, nothing downloaded), given to them as `english_words()`.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

from generator.quality.config import Quality
from generator.quality.evalsets import EvalSet, NgramIndex

TEXT_HEAD = 300  # characters of a rejected document kept in rejected.jsonl
RENEW_TEXTS = 20_000  # texts the word tokenizer splits before it starts afresh (bounds its vocabulary)


@dataclass(frozen=True)
class Rejection:
    gate: str  # the recipe key of the gate that failed
    rule: str  # which of its rules: datatrove's reason name, "too_short", the evaluation set
    reason: str  # what it measured (for datatrove's gates, the rule)


Check = Callable[[str], "tuple[str, str] | None"]  # text -> (rule, reason), or None when it passes


class Gates:
    """The gates in force, in recipe order (`Quality.gates`); `check` runs them on one text."""

    def __init__(self, checks: list[tuple[str, Check]]):
        self.checks = checks
        self.names = [name for name, _ in checks]

    def check(self, text: str) -> Rejection | None:
        for name, check in self.checks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # numpy's mean of no words
                try:
                    failed = check(text)
                except ZeroDivisionError:
                    failed = ("no_words", "no words to measure")
            if failed is not None:
                return Rejection(name, *failed)
        return None


def build_gates(quality: Quality | None, eval_sets: Iterable[EvalSet] = ()) -> Gates | None:
    """The run's gates (None without a `quality:` section). Loads the word tokenizer and builds
    the decontamination index here, once."""
    if quality is None:
        return None
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.utils.text import split_into_words

    english = english_words()

    def words(text: str) -> list[str]:
        return split_into_words(text, english)  # cached: the next gate splits the same text for free

    words("Warm up the tokenizer.")  # its first use loads spaCy
    checks: list[tuple[str, Check]] = []
    if quality.min_tokens:
        checks.append(("min_tokens", min_tokens_check(quality.min_tokens, words)))
    g, r = quality.gopher_quality, quality.gopher_repetition
    if g is not None:
        checks.append(("gopher_quality", filter_check(GopherQualityFilter(**dataclasses.asdict(g),
                                                                           language=english))))
    if r is not None:
        settings = dataclasses.asdict(r) | {"top_n_grams": ngram_rules(r.top_n_grams),
                                            "dup_n_grams": ngram_rules(r.dup_n_grams)}
        checks.append(("gopher_repetition",
                       filter_check(GopherRepetitionFilter(**settings, language=english))))
    if quality.fineweb_quality is not None:
        settings = dataclasses.asdict(quality.fineweb_quality)
        checks.append(("fineweb_quality", filter_check(FineWebQualityFilter(**settings, language=english))))
    if quality.c4 is not None:
        settings = dataclasses.asdict(quality.c4)
        checks.append(("c4", filter_check(C4QualityFilter(**settings, language=english))))
    if quality.decontaminate:
        index = NgramIndex(list(eval_sets), quality.decontaminate_n)
        checks.append(("decontaminate", decontamination_check(index)))
    return Gates(checks)


def english_words():
    """datatrove's English word tokenizer (spaCy's blank English pipeline) splitting words
    outside a spaCy memory zone, five times faster than inside one; to bound the vocabulary
    that grows instead, it starts afresh every RENEW_TEXTS texts. The words are datatrove's."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, strip_strings

    class EnglishWords(SpaCyTokenizer):
        def __init__(self):
            super().__init__("en")
            self.texts = 0

        def word_tokenize(self, text: str) -> list[str]:
            self.texts += 1
            if self.texts % RENEW_TEXTS == 0:
                self._tokenizer = None  # a fresh pipeline (and vocabulary) on the next use
            nlp = self.tokenizer
            nlp.max_length = len(text) + 10
            return strip_strings([token.text for token in nlp.tokenizer(text)])
    return EnglishWords()


def ngram_rules(rules: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """A recipe's {n: share} map as datatrove's ((n, share), ...), shortest n first."""
    return tuple(sorted((int(n), share) for n, share in (rules or {}).items()))


def filter_check(datatrove_filter) -> Check:
    """A datatrove filter as a check; it sees a copy of the text, so filters that rewrite a
    document (C4 drops lines) leave it as generated."""
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result

    def check(text: str) -> tuple[str, str] | None:
        kept, reason = get_filter_result(datatrove_filter.filter(Document(text=text, id="")))
        return None if kept else (reason or "dropped",) * 2
    return check


def min_tokens_check(least: int, words: Callable[[str], list[str]]) -> Check:
    def check(text: str) -> tuple[str, str] | None:
        have = len(words(text))
        return ("too_short", f"{have} tokens, fewer than min_tokens {least}") if have < least else None
    return check


def decontamination_check(index: NgramIndex) -> Check:
    def check(text: str) -> tuple[str, str] | None:
        hit = index.find(text)
        return None if hit is None else (hit[0], f"shares a {index.n}-gram with evaluation set {hit[0]}: "
                                                 f"'{hit[1]}'")
    return check


def rejected_row(doc, rejection: Rejection) -> dict:
    """The rejected.jsonl line of a document a gate rejected."""
    return {"id": doc.id, "sample_index": doc.sample_index, "round": doc.round, "template": doc.template,
            "style": doc.style, "grid_values": doc.grid_values, "gate": rejection.gate,
            "rule": rejection.rule, "reason": rejection.reason, "text": doc.text[:TEXT_HEAD]}


def add_rejections(counts: dict, gates: list[str]) -> dict:
    """Rejections per gate after `gates` more (a new dict; `counts` is a saved counter)."""
    return dict(Counter(counts) + Counter(gates)) if gates else counts


def rejection_stop(quality: Quality | None, rejected: dict, attempted: int) -> str:
    """A reason to stop when more than `max_rejection_rate` of the attempted rows were rejected
    (the caller waits until enough rows were attempted), naming the gate that rejected most."""
    if quality is None or not attempted:
        return ""
    total = sum(rejected.values())
    rate = total / attempted
    if rate <= quality.max_rejection_rate:
        return ""
    worst, count = max(sorted(rejected.items()), key=lambda kv: kv[1])
    return (f"rejection rate {rate:.1%} ({total}/{attempted} rows) is above quality.max_rejection_rate "
            f"{quality.max_rejection_rate:.0%}, most by {worst} ({count}); see rejected.jsonl "
            f"(loosen or drop that gate, raise max_tokens, or change the templates it rejects)")
