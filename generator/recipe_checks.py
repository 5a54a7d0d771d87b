"""The value checks of a loaded recipe: every number finite, every count positive and within a
bound, engine settings an engine can start with, K within the corpus, target fields consistent.

Each check raises a one-line `UserError` naming the key and a fix that works. The recipe is
passed in (this module imports nothing from `generator.recipe`); `load_recipe` runs these
checks before it loads the grid, and `check_num_topics` once the grid and templates are loaded.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

from generator.errors import UserError
from generator.judges.config import check_settings
from generator.quality.checks import check_quality

EMBEDDED_MODELS = {"embedded:smollm2-135m"}
MAX_SEED = 2**63 - 1  # seeds are hashed into per-request seeds and passed to numpy as 64-bit values
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # what vLLM's `dtype` accepts

# (key, lowest, highest, fix): integer settings and their possible range.
COUNTS = (
    ("size.num_docs", 1, 10**9, "set size.num_docs: 200"),
    ("size.shard_rows", 1, 10**7, "set size.shard_rows: 20000"),
    ("sampling.max_tokens", 1, 10**6, "set sampling.max_tokens: 256"),
    ("engine.num_replicas", 1, 4096, "use 1, or one per GPU"),
    ("engine.tensor_parallel_size", 1, 1024, "use 1, or the GPUs one engine spans"),
    ("engine.max_model_len", 2, 10**7, "use e.g. 2048"),
    ("engine.cpu_kvcache_gib", 1, 4096, "use e.g. 2 (GiB of CPU memory for the KV cache)"),
    ("engine.concurrency", 1, 100_000, "use e.g. 256"),
    ("engine.max_retries", 0, 100, "use e.g. 3"),
    ("scoring.num_batches", 1, 10**6, "use e.g. 200"),
    ("dedup.num_perm", 16, 1024, "use 128"),
    ("reference.num_docs", 0, 10**7, "use e.g. 500, or 0 for all"),
    ("target.num_batches", 20, 10**6, "use 3000"),
    ("target.pilot_docs", 0, 10**9, "use 0 to derive it from size.num_docs"),
    ("target.max_pilot_rounds", 1, 1000, "use the default 2"),
    ("target.num_rounds", 1, 1000, "use the default 4"),
    ("target.max_growth_rounds", 0, 100, "use the default 2, or 0 to never grow the grid"),
    ("target.growth_topics_per_domain", 1, 1000, "use the default 8"),
    ("target.llm_batches", 10, 10**5, "use 40"),
)


def non_finite(record, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(key, value) of every float in `record` (a dataclass, walked into nested ones, lists and
    dicts) that is NaN or infinite."""
    for f in dataclasses.fields(record):
        yield from _non_finite_value(getattr(record, f.name), f"{prefix}{f.name}")


def _non_finite_value(value, key: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, float) and not math.isfinite(value):
        yield key, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield from non_finite(value, f"{key}.")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _non_finite_value(v, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite_value(v, f"{key}.{k}")


def _lookup(r, key: str):
    value = r
    for part in key.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    return value


def check_recipe_values(r, where: str, *, pilot_docs: int) -> None:
    """Every value of recipe `r` (read from `where`); `pilot_docs` is its pilot round size."""
    bad = next(non_finite(r), None)
    if bad is not None:
        raise UserError(f"{where}: {bad[0]} must be a finite number, got {bad[1]}",
                        fix=f"give {bad[0]} a number (not nan or inf), or drop it for the default")
    if not 0 <= r.seed <= MAX_SEED:
        raise UserError(f"{where}: seed must be in [0, 2**63 - 1], got {r.seed}", fix="use e.g. seed: 0")
    for key, low, high, fix in COUNTS:
        value = _lookup(r, key)
        if value is not None and not low <= value <= high:
            what = f"at most {high}" if value > high else "positive" if low == 1 else f"at least {low}"
            raise UserError(f"{where}: {key} must be {what}, got {value}", fix=fix)
    name_ok = bool(r.name.strip()) and r.name not in (".", "..") and not set(r.name) & set("/\\\0")
    if not name_ok:
        raise UserError(f"{where}: name {r.name!r} cannot name a folder (runs/<name> is the default --out)",
                        fix="use letters, digits, '-' and '_', e.g. name: quickstart")
    _check_generation(r, where)
    check_settings(r.judge, f"{where}: judge")
    _check_scoring(r, where)
    if r.quality is not None:
        check_quality(r.quality, where)
    if r.target is not None:
        _check_target(r, where, pilot_docs)


def _need(where: str):
    def need(cond: bool, key: str, what: str, fix: str) -> None:
        if not cond:
            raise UserError(f"{where}: {key} {what}", fix=fix)
    return need


def _check_generation(r, where: str) -> None:
    need, e = _need(where), r.engine
    need(r.sampling.temperature >= 0, "sampling.temperature", "must be >= 0", "use 0.0 to 2.0")
    need(0 < r.sampling.top_p <= 1, "sampling.top_p", "must be in (0, 1]", "use e.g. 0.95")
    need(e.max_num_seqs is None or e.max_num_seqs >= 1, "engine.max_num_seqs",
         f"must be positive, got {e.max_num_seqs}", "leave it out for vLLM's default, or set e.g. 256")
    need(e.max_num_seqs is None or e.max_num_seqs <= 65_536, "engine.max_num_seqs",
         f"must be at most 65536, got {e.max_num_seqs}", "leave it out for vLLM's default, or set e.g. 256")
    need(r.sampling.max_tokens < e.max_model_len, "sampling.max_tokens",
         f"({r.sampling.max_tokens}) leaves no room for a prompt in engine.max_model_len ({e.max_model_len})",
         "lower it or raise max_model_len")
    need(0 < e.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization",
         f"must be in (0, 1], got {e.gpu_memory_utilization}",
         "use e.g. 0.9 (the share of GPU memory vLLM takes)")
    need(e.dtype in DTYPES, "engine.dtype", f"{e.dtype!r} is not a vLLM dtype", f"use one of {list(DTYPES)}")
    need(e.timeout_s > 0, "engine.timeout_s", f"must be > 0, got {e.timeout_s}", "use e.g. 120")
    need(e.backend != "openai" or bool(e.base_url), "engine.base_url",
         "is required for backend openai", "set engine.base_url: http://host:8000/v1")
    need(not e.base_url or e.base_url.startswith(("http://", "https://")), "engine.base_url",
         f"{e.base_url!r} is not an http(s) URL", "write it as http://host:8000/v1")
    need(0 <= r.max_failure_rate <= 1, "max_failure_rate", "must be in [0, 1]", "use e.g. 0.2")
    need(0 < r.dedup.threshold <= 1, "dedup.threshold", "must be in (0, 1]", "use e.g. 0.8")
    need(0 <= r.dedup.max_duplicate_rate <= 1, "dedup.max_duplicate_rate", "must be in [0, 1]",
         "use e.g. 0.5")
    for i, t in enumerate(r.templates):
        need(t.weight > 0, f"templates[{i}].weight", "must be positive", "use a number > 0")
        need(t.weight <= 1e9, f"templates[{i}].weight", f"must be at most 1e9, got {t.weight:g}",
             "give the weights as shares, e.g. 0.7 and 0.3")
    need(bool(r.model.strip()), "model", "is empty",
         "use embedded:smollm2-135m, a Hugging Face id or a local path")
    if r.model.startswith("embedded:"):
        need(r.model in EMBEDDED_MODELS, "model", f"{r.model!r} is not a known embedded model",
             f"use one of {sorted(EMBEDDED_MODELS)}, a Hugging Face id or a local path")
    if r.reference is not None:
        need(bool(r.reference.text_field), "reference.text_field", "is empty", "use e.g. text")
    for axis, spec in r.grid.items():
        if not isinstance(spec, str):
            need(100 <= spec.max_chars <= 10**6, f"grid.{axis}.max_chars",
                 f"({spec.max_chars}) must be in [100, 1000000]", "use e.g. 1500")
            need(bool(spec.text_field), f"grid.{axis}.text_field", "is empty", "use e.g. text")


def _check_scoring(r, where: str) -> None:
    need, s, t = _need(where), r.scoring, r.target
    need(t is None or not (t.judge_model or t.judge_endpoint), "target.judge_model/judge_endpoint",
         "moved to the judge: section",
         "write judge: {model: M} (or {model: M, backend: openai, endpoint: URL})")
    for key, m in (("target", t), ("scoring", s)):
        if m is not None and m.judge == "llm":
            need(bool(r.judge.model), f"{key}.judge", "is llm but judge.model is not set",
                 "add judge: {model: M} (see recipes/judge-llm.yaml) or use judge: embed")
            need(m.k == r.judge.k, f"{key}.k",
                 f"({m.k}) differs from judge.k ({r.judge.k}), the LLM judge's K",
                 f"set judge.k: {m.k}; scores compare only at one K")
    if s.enabled:
        need(s.k >= 2, "scoring.k", f"({s.k}) must be at least 2", "use the paper's k: 10")
        need(s.k <= r.size.num_docs, "scoring.k", f"({s.k}) is more than the {r.size.num_docs} documents "
             "of the corpus, so no batch can be drawn to score it",
             f"set scoring.k: {r.size.num_docs} or less (it must be at least 2), raise size.num_docs, "
             "or set scoring.enabled: false" if r.size.num_docs >= 2 else
             "raise size.num_docs to 2 or more, or set scoring.enabled: false")


def _check_target(r, where: str, pilot_docs: int) -> None:
    need, t = _need(where), r.target
    need((t.score is None) != (t.relative is None), "target",
         "needs exactly one of score (absolute D) and relative (a multiple of the reference's D)",
         "write target: {score: 1.4} or target: {relative: 1.2} with a reference:")
    need(t.relative is None or r.reference is not None or r.source is not None, "target.relative",
         "needs a reference corpus to be relative to",
         "add reference: {path: real.jsonl} or use target.score")
    need(t.relative is None or t.relative > 0, "target.relative", f"must be > 0, got {t.relative}",
         "use e.g. 1.2 for 20% more diverse than the reference")
    need(t.max_shift is None or t.max_shift > 0, "target.max_shift", f"must be > 0, got {t.max_shift}",
         "use an MMD² bound such as 0.05, or drop the key for no bound")
    need(t.max_shift is None or r.reference is not None or r.source is not None, "target.max_shift",
         "needs a reference corpus to measure the shift from", "add reference: {path: real.jsonl}")
    need(t.k >= 2, "target.k", f"({t.k}) must be at least 2", "use the paper's k: 10")
    need(t.score is None or 1 / t.k <= t.score <= t.k, "target.score",
         f"{t.score} is outside [1/K, K] = [{1 / t.k:.2f}, {t.k}]",
         "pick a score the judge can produce at this k")
    need(t.tolerance > 0, "target.tolerance", "must be > 0", "use e.g. 0.15")
    need(0 <= t.threshold < 2, "target.threshold", f"({t.threshold}) must be in [0, 2)",
         "use 0 for the judge's default, or a cosine distance such as 0.3")
    need(t.reweight_rate >= 0, "target.reweight_rate", f"must be >= 0, got {t.reweight_rate}",
         "use the default 1.0, or 0 to disable per-cell reweighting")
    need(0 <= t.llm_share < 1, "target.llm_share", f"{t.llm_share} is outside [0, 1)",
         "use a share such as 0.05, or 0 for llm_batches at every use")
    need(0 <= t.min_fidelity <= 1, "target.min_fidelity", f"{t.min_fidelity} is outside [0, 1]",
         "use a share such as 0.6, or 0 to only warn")
    need(t.precision >= 0, "target.precision", "must be >= 0", "use 0 for tolerance / 3")
    need(r.size.num_docs >= pilot_docs, "size.num_docs",
         f"({r.size.num_docs}) is smaller than one pilot round ({pilot_docs} documents)",
         "raise size.num_docs or lower target.pilot_docs")
    need(t.k <= pilot_docs, "target.k", f"({t.k}) is more than the {pilot_docs} documents of a pilot round, "
         "so no pilot can be measured", f"lower target.k to {pilot_docs} or less, or raise target.pilot_docs")


def check_num_topics(templates, topic_values: int, where: str) -> None:
    """Each multi-topic template asks for at most the topics the grid's topic axis holds (the
    template header itself caps num_topics, see sampling.templates)."""
    for t in templates:
        if t.num_topics > 1 and t.num_topics > topic_values:
            have = (f"the grid's topic axis has {topic_values} topics" if topic_values
                    else "the grid has no topic axis")
            raise UserError(f"{t.path}: num_topics {t.num_topics} is more than a document can get: {have}",
                            fix=f"set num_topics: {topic_values} or less in the template's header"
                            if topic_values >= 2 else
                            f"add a topic: axis to the grid ({where}) or use a single-topic template")
