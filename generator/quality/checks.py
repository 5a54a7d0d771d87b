"""The value checks of a recipe's `quality:` section, each a one-line `UserError` naming the key
and a fix that works (called by `recipe_checks.check_recipe_values` and `load_recipe`)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from generator.errors import UserError
from generator.judges.config import check_settings
from generator.quality.config import GATE_KEYS, LlmScore, Quality

# (gate, key, lowest, highest, fix): numbers a datatrove gate takes; None (off) is always allowed.
RANGES = (
    ("gopher_quality", "min_doc_words", 0, 10**7, "use e.g. 50, or null for no lower bound"),
    ("gopher_quality", "max_doc_words", 1, 10**9, "use e.g. 100000, or null for no upper bound"),
    ("gopher_quality", "min_avg_word_length", 0, 1000, "use e.g. 3"),
    ("gopher_quality", "max_avg_word_length", 1, 1000, "use e.g. 10"),
    ("gopher_quality", "max_symbol_word_ratio", 0, 1, "use a share such as 0.1"),
    ("gopher_quality", "max_bullet_lines_ratio", 0, 1, "use a share such as 0.9"),
    ("gopher_quality", "max_ellipsis_lines_ratio", 0, 1, "use a share such as 0.3"),
    ("gopher_quality", "max_non_alpha_words_ratio", 0, 1, "use a share such as 0.8"),
    ("gopher_quality", "min_stop_words", 0, 1000, "use e.g. 2"),
    ("gopher_repetition", "dup_line_frac", 0, 1, "use a share such as 0.3"),
    ("gopher_repetition", "dup_para_frac", 0, 1, "use a share such as 0.3"),
    ("gopher_repetition", "dup_line_char_frac", 0, 1, "use a share such as 0.2"),
    ("gopher_repetition", "dup_para_char_frac", 0, 1, "use a share such as 0.2"),
    ("fineweb_quality", "line_punct_thr", 0, 1, "use a share such as 0.12"),
    ("fineweb_quality", "short_line_thr", 0, 1, "use a share such as 0.67"),
    ("fineweb_quality", "short_line_length", 0, 10**6, "use e.g. 30 (characters)"),
    ("fineweb_quality", "char_duplicates_ratio", 0, 1, "use a share such as 0.01"),
    ("fineweb_quality", "new_line_ratio", 0, 1000, "use e.g. 0.3 (newlines per word)"),
    ("c4", "min_num_sentences", -1, 10**6, "use e.g. 5, or -1 to turn the rule off"),
    ("c4", "min_words_per_line", -1, 10**6, "use e.g. 3, or -1 to turn the rule off"),
    ("c4", "max_word_length", -1, 10**7, "use e.g. 1000, or -1 to turn the rule off"),
)
MAX_NGRAM = 50  # the longest n-gram a repetition rule may name


def check_quality(q: Quality, where: str) -> None:
    """Every value of the `quality:` section read from `where` (evaluation sets: `check_eval_paths`)."""
    def need(cond: bool, key: str, what: str, fix: str) -> None:
        if not cond:
            raise UserError(f"{where}: quality.{key} {what}", fix=fix)

    need(0 <= q.min_tokens <= 10**6, "min_tokens", f"must be in [0, 1000000], got {q.min_tokens}",
         "use e.g. 40, or 0 for no minimum")
    need(0 <= q.max_rejection_rate <= 1, "max_rejection_rate",
         f"must be in [0, 1], got {q.max_rejection_rate}",
         "use a share such as 0.5")
    need(3 <= q.decontaminate_n <= 100, "decontaminate_n", f"must be in [3, 100], got {q.decontaminate_n}",
         "use 13, the n-gram length of GPT-3's and FineWeb's decontamination")
    if not q.gates():
        raise UserError(f"{where}: quality names no gate",
                        fix=f"add one of min_tokens, {', '.join(GATE_KEYS)}, decontaminate, "
                            "or drop the quality: section")
    for gate, key, low, high, fix in RANGES:
        settings = getattr(q, gate)
        value = getattr(settings, key) if settings is not None else None
        need(value is None or low <= value <= high, f"{gate}.{key}",
             f"must be in [{low}, {high}], got {value}", fix)
    g = q.gopher_quality
    if g is not None:
        for low, high in (("min_doc_words", "max_doc_words"), ("min_avg_word_length", "max_avg_word_length")):
            a, b = getattr(g, low), getattr(g, high)
            need(a is None or b is None or a <= b, f"gopher_quality.{low}", f"({a}) is above {high} ({b})",
                 f"lower {low} or raise {high}")
    if q.gopher_repetition is not None:
        for key in ("top_n_grams", "dup_n_grams"):
            for n, share in (getattr(q.gopher_repetition, key) or {}).items():
                name = f"gopher_repetition.{key}.{n}"
                need(n.isdigit() and 1 <= int(n) <= MAX_NGRAM, name,
                     f"is not an n-gram length in [1, {MAX_NGRAM}]",
                     f"write it as n: share, e.g. {key}: {{5: 0.15}}")
                need(0 <= share <= 1, name, f"must be a share in [0, 1], got {share}", "use e.g. 0.15")
    if q.llm_score is not None:
        check_llm_score(q.llm_score, where)


# (key, lowest, fix) of the LLM score gate's numbers
SCORE_RANGES = (("max_doc_chars", 100, "use e.g. 4000"), ("answer_max_tokens", 16, "use e.g. 256"),
                ("batch_docs", 1, "use e.g. 64"), ("max_calls", 0, "use 0 for no limit, or e.g. 10000"),
                ("max_tokens", 0, "use 0 for no limit, or e.g. 5000000"))


def check_llm_score(s: LlmScore, where: str) -> None:
    """The LLM score gate's threshold, numbers and judge settings."""
    key = f"{where}: quality.llm_score"
    if s.judge is None or not s.judge.model:
        raise UserError(f"{key} has no judge model",
                        fix="add judge: {model: M} (or {model: M, backend: openai, endpoint: URL}) under "
                            "quality.llm_score")
    if not 1 <= s.threshold <= 5:
        raise UserError(f"{key}.threshold must be in [1, 5] (the rubric's scores), got {s.threshold}",
                        fix="use e.g. 3 to keep documents the judge scores 3 or more")
    for name, low, fix in SCORE_RANGES:
        if getattr(s, name) < low:
            raise UserError(f"{key}.{name} must be at least {low}, got {getattr(s, name)}", fix=fix)
    check_settings(s.judge, f"{key}.judge")


def check_quality_files(q: Quality | None, where: str) -> None:
    """The files the gates read: evaluation sets (`check_eval_paths`) and the LLM score's rubric."""
    check_eval_paths(q, where)
    if q is not None and q.llm_score is not None:
        from generator.quality.scores import load_rubric
        load_rubric(q.llm_score.rubric, f"{where}: quality.llm_score.rubric")


def check_eval_paths(q: Quality | None, where: str) -> None:
    """Each evaluation set to decontaminate against exists and has a format it can be read in;
    the word-based gates have their tokenizer (spaCy) installed."""
    if q is None:
        return
    for i, p in enumerate(q.decontaminate):
        path = Path(p)
        if not path.is_file():
            raise UserError(f"{where}: quality.decontaminate[{i}] ({p}): no such file",
                            fix="give the path of a .jsonl, .parquet or .txt evaluation set, relative to "
                                "the recipe")
        if path.suffix not in (".jsonl", ".ndjson", ".parquet", ".txt"):
            raise UserError(f"{where}: quality.decontaminate[{i}] ({p}): unknown format {path.suffix!r}",
                            fix="convert it to .jsonl (one JSON object per line), .parquet or .txt")
    if importlib.util.find_spec("spacy") is None or importlib.util.find_spec("datatrove") is None:
        raise UserError(f"{where}: quality gates need datatrove and spaCy (its English word tokenizer), "
                        "which are not installed",
                        fix="pip install 'datatrove[io]>=0.10' 'spacy>=3.7,<4' "
                            "(scripts/setup.sh installs both)")
