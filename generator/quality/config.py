"""The recipe's `quality:` section: the gates every finished document must pass before it is
committed, and their checks.

    quality:
      gopher_repetition: {}            # datatrove's filter with its own defaults
      gopher_quality: {min_doc_words: 30}
      min_tokens: 40
      decontaminate: [evals/mmlu.jsonl]
      llm_score: {threshold: 3, judge: {model: M, backend: openai, endpoint: URL}}
      max_rejection_rate: 0.5

Each datatrove gate's keys are the keyword arguments of its datatrove filter (the same names and
defaults); `null` for a rule turns it off where datatrove allows it. `true` for a gate means its
defaults; `false` or `null` leaves it out (as recipe.resolved.yaml writes a gate not in force).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import UserError
from generator.judges.config import JudgeSettings

GATE_KEYS = ("gopher_quality", "gopher_repetition", "fineweb_quality", "c4")


@dataclass(frozen=True)
class GopherQuality:
    """datatrove's GopherQualityFilter (Gopher, Rae et al. 2021, appendix A)."""

    min_doc_words: int | None = 50  # fewest words (those with a letter or digit)
    max_doc_words: int | None = 100_000  # most words
    min_avg_word_length: int | None = 3  # shortest mean word length, characters
    max_avg_word_length: int | None = 10  # longest mean word length, characters
    max_symbol_word_ratio: float | None = 0.1  # most '#' or ellipses per word
    max_bullet_lines_ratio: float | None = 0.9  # most share of lines starting with a bullet
    max_ellipsis_lines_ratio: float | None = 0.3  # most share of lines ending with an ellipsis
    max_non_alpha_words_ratio: float | None = 0.8  # datatrove's name: the least share of words with a letter
    min_stop_words: int | None = 2  # fewest distinct stop words the text uses
    stop_words: list[str] | None = None  # null: datatrove's eight English stop words


@dataclass(frozen=True)
class GopherRepetition:
    """datatrove's GopherRepetitionFilter; the n-gram maps are n -> largest character share."""

    dup_line_frac: float | None = 0.3  # most share of lines that repeat an earlier line
    dup_para_frac: float | None = 0.3  # most share of paragraphs that repeat an earlier one
    dup_line_char_frac: float | None = 0.2  # most share of characters in repeated lines
    dup_para_char_frac: float | None = 0.2  # most share of characters in repeated paragraphs
    # n -> most share of characters in the most frequent n-gram
    top_n_grams: dict[str, float] | None = field(default_factory=lambda: {"2": 0.2, "3": 0.18, "4": 0.16})
    # n -> most share of characters inside n-grams seen before in the text
    dup_n_grams: dict[str, float] | None = field(default_factory=lambda: {
        "5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10})


@dataclass(frozen=True)
class FineWebQuality:
    """datatrove's FineWebQualityFilter."""

    line_punct_thr: float = 0.12  # least share of lines ending in terminal punctuation
    line_punct_exclude_zero: bool = False  # true: a text with no such line passes that rule
    short_line_thr: float = 0.67  # most share of short lines
    short_line_length: int = 30  # characters up to which a line is short
    char_duplicates_ratio: float = 0.01  # most share of characters in repeated lines
    new_line_ratio: float = 0.3  # most newlines per word (a list, not prose)


@dataclass(frozen=True)
class C4:
    """datatrove's C4QualityFilter, as a gate: a document fails when the filter drops it (too few
    sentences in lines it keeps, a curly bracket, lorem ipsum); lines it would remove stay."""

    split_paragraph: bool = True  # judge lines (true) or sentences (false)
    remove_citations: bool = True  # drop [1]-style citations before judging a line
    filter_no_terminal_punct: bool = True  # a line without terminal punctuation does not count
    min_num_sentences: int = 5  # fewest sentences in counted lines; -1 turns a rule off, as in datatrove
    min_words_per_line: int = 3  # a shorter line does not count
    max_word_length: int = 1000  # a line with a longer word does not count
    filter_lorem_ipsum: bool = True  # reject a text with lorem ipsum
    filter_javascript: bool = True  # a line naming javascript does not count
    filter_curly_bracket: bool = True  # reject a text with a curly bracket (code)
    filter_policy: bool = True  # a line about cookies or terms of use does not count


@dataclass(frozen=True)
class LlmScore:
    """An LLM judge's 1-5 score of each document under a rubric; below `threshold` it is rejected.
    Runs last, on the documents every other gate passed, in batches (generator/quality/scored.py)."""

    judge: JudgeSettings | None = None  # the judge's model and where it runs, as in the judge: section
    threshold: int = 3  # the least score kept (1-5)
    rubric: str = ""  # a Jinja2 template with the variable `document`; empty: prompts/judge/quality.j2
    max_doc_chars: int = 4000  # characters of a document the judge sees (the rest is cut)
    answer_max_tokens: int = 256  # the judge's answer budget (a retry of a cut answer gets twice this)
    batch_docs: int = 64  # most documents scored in one batch of concurrent calls
    max_calls: int = 0  # judge calls this run may send (answers from the cache are free); 0: no limit
    max_tokens: int = 0  # prompt and answer tokens this run's judge calls may spend; 0: no limit


@dataclass(frozen=True)
class Quality:
    """Gates applied to every finished document, in this order; the first that fails names the
    rejection. Rejected documents go to rejected.jsonl and are replaced by new samples."""

    min_tokens: int = 0  # fewest tokens by datatrove's English word tokenizer (words and punctuation)
    gopher_quality: GopherQuality | None = None  # datatrove's Gopher quality rules; true: defaults
    gopher_repetition: GopherRepetition | None = None  # Gopher's repetition rules (loops)
    fineweb_quality: FineWebQuality | None = None  # FineWeb's line rules
    c4: C4 | None = None  # C4's document rules
    decontaminate: list[str] = field(default_factory=list)  # evaluation sets: .jsonl, .parquet or .txt
    decontaminate_n: int = 13  # words in a shared n-gram that makes a document contaminated
    llm_score: LlmScore | None = None  # an LLM judge's score of each document, with a threshold
    max_rejection_rate: float = 0.5  # stop when this share of attempted rows were rejected

    def gates(self) -> list[str]:
        """The names of the gates in force, in the order they run."""
        names = ["min_tokens"] if self.min_tokens else []
        names += [k for k in GATE_KEYS if getattr(self, k) is not None]
        names += ["decontaminate"] if self.decontaminate else []
        return names + (["llm_score"] if self.llm_score is not None else [])


def expand_gates(section):
    """The `quality:` mapping with `gate: true` read as the gate's defaults and `gate: false` as
    no gate."""
    if not isinstance(section, dict):
        return section
    out = dict(section)
    for key in GATE_KEYS:
        if key in out and out[key] is True:
            out[key] = {}
        elif key in out and out[key] is False:
            del out[key]
    return out


def resolve_quality(q: Quality | None, base: Path) -> Quality | None:
    """`q` with its evaluation-set paths and rubric resolved against the recipe's folder `base`."""
    if q is None:
        return q
    score = q.llm_score
    if score is not None and score.rubric:
        score = dataclasses.replace(score, rubric=str((base / score.rubric).resolve()))
    return dataclasses.replace(q, decontaminate=[str((base / p).resolve()) for p in q.decontaminate],
                               llm_score=score)
