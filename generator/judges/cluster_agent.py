"""The LLM cluster-agent judge (Chen et al. 2024, arXiv 2410.15226; see CLUSTER_AGENT.md).

1. `generate_criteria`: M calls each show J random documents and ask for 3-5 metadata and
   3-5 metrics; the answers are merged into name -> [definitions]; two summary calls keep the
   k most general metadata and metrics; a third turns each kept item into a one-sentence
   clustering criterion. The result is a `Criteria`, saved as JSON and reused across corpora.
2. `ClusterAgentJudge.cluster`: one call per K-batch asks for every cluster (member numbers
   1..K, reason, metadata values, per-metric reasoning and 1-5 score) under a JSON schema; the
   answer is repaired into a partition (see `diversity.repair_partition`); one verification
   call per batch judges each multi-document cluster, and invalid ones are dissolved into
   singletons (or kept, by `invalid_policy`).

Every stage sends all its independent calls in one `backend.generate` call. A reply that
fails or does not parse is sent once more; if it fails again the batch (or criteria round)
is failed and counted. Prompts are the Jinja2 templates in prompts/judge/.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from generator.judges.protocol import INVALID_POLICIES, BatchClustering, ScoreError
from generator.judges.calls import AuditSink, CallBudget, Cost, Job, Reply, ReplyError, ask_all
from generator.judges.replies import finish_batch, parse_clusters, repair_reply
from generator.records import Backend
from generator.sampling.templates import load_template

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts" / "judge"
CRITERIA_FIX = "use a more capable judge model or pass --criteria FILE"
# Bounded strings keep a weak judge that repeats itself inside a string from filling its budget.
NAME = {"type": "string", "minLength": 1, "maxLength": 80}
PROSE = {"type": "string", "minLength": 1, "maxLength": 400}
REASON = {"type": "string", "minLength": 1, "maxLength": 240}  # clustering answers: tighter, so K clusters fit
VALUE = {"type": "string", "minLength": 1, "maxLength": 60}  # a metadata value is a label
# The compact answer (`answer: compact`): members and a short reason per cluster, no metadata
# values or metric scores. The score needs only the partition; a weak or costly judge spends
# about a fifth of the full answer's tokens on it.
SHORT = {"type": "string", "minLength": 1, "maxLength": 120}
ANSWERS = ("full", "compact")


@dataclass(frozen=True)
class ClusterAgentConfig:
    docs_per_criteria_call: int = 5  # J
    num_criteria_calls: int = 100  # M
    num_kept: int = 4  # k metadata and k metrics survive the summaries
    max_doc_chars: int = 2000  # each document is cut to this many characters unless a judge cuts by tokens
    max_model_len: int = 0  # the engine's context: a retry's doubled answer budget stays inside it (0: unknown)
    verify: bool = True
    invalid_policy: Literal["split", "drop", "keep"] = "split"  # "dissolve" is read as "split"
    answer: Literal["full", "compact"] = "full"  # full: the paper's clusters with metadata and metrics
    temperature: float = 0.2  # clustering and verification
    criteria_temperature: float = 0.8  # criteria rounds: varied samples want varied answers
    criteria_max_tokens: int = 1024
    summary_max_tokens: int = 2048
    cluster_max_tokens: int = 3072
    verify_max_tokens: int = 1024
    max_attempts: int = 2  # per call: the first try and one retry (a cut answer retries at 2x tokens)
    criteria_budget_share: float = 0.25  # most of a call budget that writing criteria may spend
    summary_max_names: int = 40  # most frequent names shown to a summary call
    summary_max_definitions: int = 3  # definitions shown per name
    seed: int = 0  # request seeds derive from (seed, prompt, attempt)
    prompts_dir: str = ""  # empty: the repository's prompts/judge

    def __post_init__(self):
        if self.invalid_policy == "dissolve":
            object.__setattr__(self, "invalid_policy", "split")
        if self.invalid_policy not in INVALID_POLICIES:
            raise ScoreError(f"invalid_policy {self.invalid_policy!r} is not allowed",
                             fix=f"use one of {', '.join(INVALID_POLICIES)}")
        if self.answer not in ANSWERS:
            raise ScoreError(f"answer {self.answer!r} is not allowed", fix=f"use one of {', '.join(ANSWERS)}")
        for name in ("docs_per_criteria_call", "num_criteria_calls", "num_kept", "max_doc_chars", "max_attempts"):
            if getattr(self, name) < 1:
                raise ScoreError(f"{name} must be at least 1, got {getattr(self, name)}", fix=f"set {name} >= 1")

    @property
    def max_calls_per_batch(self) -> int:
        """Worst case: every clustering and verification try spent."""
        return self.max_attempts * (2 if self.verify else 1)


@dataclass(frozen=True)
class Criteria:
    """The ruler: kept metadata (name, definition), metrics (name, rubric) and one clustering
    sentence per kept item (name, sentence). Freeze it once per study and reuse it."""

    metadata: tuple[tuple[str, str], ...]
    metrics: tuple[tuple[str, str], ...]
    sentences: tuple[tuple[str, str], ...]
    judge_model: str = ""
    k: int = 0  # documents per clustering batch of the study (0: not recorded)
    seed: int = 0
    num_rounds: int = 0  # criteria rounds that parsed
    cost: dict[str, int] = field(default_factory=dict)  # calls, prompt_tokens, completion_tokens

    def to_json(self) -> str:
        return json.dumps({
            "metadata": [{"name": n, "definition": d} for n, d in self.metadata],
            "metrics": [{"name": n, "rubric": r} for n, r in self.metrics],
            "criteria": [{"name": n, "criterion": s} for n, s in self.sentences],
            "judge_model": self.judge_model, "k": self.k, "seed": self.seed, "num_rounds": self.num_rounds,
            "cost": self.cost,
        }, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, *, where: str = "criteria") -> "Criteria":
        fix = "regenerate the criteria or follow the layout written by Criteria.to_json"
        try:
            data = json.loads(text)
            pairs = {key: tuple((str(item["name"]), str(item[value])) for item in data[key])
                     for key, value in (("metadata", "definition"), ("metrics", "rubric"), ("criteria", "criterion"))}
            extra = dict(k=int(data.get("k", 0)), seed=int(data.get("seed", 0)),
                         num_rounds=int(data.get("num_rounds", 0)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ScoreError(f"{where}: not a criteria file ({type(exc).__name__}: {exc})", fix=fix) from None
        if not pairs["metadata"] or not pairs["metrics"] or not pairs["criteria"]:
            raise ScoreError(f"{where}: metadata, metrics and criteria must each be non-empty", fix=fix)
        return cls(metadata=pairs["metadata"], metrics=pairs["metrics"], sentences=pairs["criteria"],
                   judge_model=str(data.get("judge_model", "")), cost=dict(data.get("cost", {})), **extra)


def load_criteria(path: str | Path, *, judge_model: str | None = None, k: int | None = None) -> Criteria:
    """Read frozen criteria; with `judge_model` / `k`, refuse a file written for another
    judge or another K (scores are only comparable on one ruler)."""
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"{path}: criteria file not found", fix="give an existing --criteria file")
    criteria = Criteria.from_json(path.read_text(encoding="utf-8"), where=str(path))
    if judge_model is not None and criteria.judge_model and criteria.judge_model != judge_model:
        raise ScoreError(f"{path}: criteria were written by judge {criteria.judge_model!r}, not {judge_model!r}",
                         fix="score with the judge that wrote them, or pass --regenerate-criteria")
    if k is not None and criteria.k and criteria.k != k:
        raise ScoreError(f"{path}: criteria were written for K={criteria.k}, not K={k}",
                         fix=f"pass --k {criteria.k}, or --regenerate-criteria")
    return criteria


@functools.lru_cache(maxsize=16)
def _template(prompts_dir: str, name: str):
    return load_template(Path(prompts_dir or PROMPTS_DIR) / f"{name}.j2")


def render_prompt(name: str, config: ClusterAgentConfig, **variables) -> str:
    return _template(config.prompts_dir, name).render(variables)


def truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + " [...]"


# ---- stage 1 and 2: criteria ------------------------------------------------------------------

def _items_schema(value_key: str, min_items: int, max_items: int) -> dict:
    item = {"type": "object", "properties": {"name": NAME, value_key: PROSE},
            "required": ["name", value_key], "additionalProperties": False}
    return {"type": "array", "items": item, "minItems": min_items, "maxItems": max_items}


CRITERIA_SCHEMA = {"type": "object", "properties": {"metadata": _items_schema("definition", 3, 5),
                                                    "metrics": _items_schema("rubric", 3, 5)},
                   "required": ["metadata", "metrics"], "additionalProperties": False}


def _parse_items(data: object, key: str, value_key: str) -> list[tuple[str, str]]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ReplyError(f"no {key!r} list")
    out = [(str(it["name"]).strip(), str(it[value_key]).strip()) for it in items
           if isinstance(it, dict) and it.get("name") and it.get(value_key)]
    if not out:
        raise ReplyError(f"{key!r} has no item with a name and a {value_key}")
    return out


def _parse_round(data: object) -> dict[str, list[tuple[str, str]]]:
    return {"metadata": _parse_items(data, "metadata", "definition"),
            "metrics": _parse_items(data, "metrics", "rubric")}


def merge_definitions(items: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """name -> [definitions], names compared case- and separator-insensitively, most
    frequently proposed names first."""
    merged: dict[str, list[str]] = {}
    for name, definition in items:
        key = re.sub(r"[\s_\-]+", " ", name.lower()).strip()
        merged.setdefault(key, []).append(definition)
    return dict(sorted(merged.items(), key=lambda kv: -len(kv[1])))


def generate_criteria(backend: Backend, texts: Sequence[str], *, rng: np.random.Generator,
                      config: ClusterAgentConfig = ClusterAgentConfig(), k: int = 0,
                      budget: CallBudget | None = None, audit: AuditSink | None = None,
                      cut: Callable[[str], str] | None = None) -> Criteria:
    """Write clustering criteria from random samples of `texts` (stages 1 and 2), each cut by
    `cut` (default: to `config.max_doc_chars` characters). With a
    `budget`, the rounds get what is left after reserving the three summary calls (with their
    retries), within `config.criteria_budget_share` of it; a budget too small for one round and
    the summaries is an error."""
    if not texts:
        raise ScoreError("cannot write criteria for an empty corpus", fix="point at a corpus with documents")
    budget = budget or CallBudget()
    reserve = 3 * config.max_attempts
    num_rounds = config.num_criteria_calls
    if budget.left is not None:
        allowed = int(budget.left * config.criteria_budget_share)
        num_rounds = min(num_rounds, allowed - reserve)
        if num_rounds < 1:
            raise ScoreError(f"a call budget of {budget.left} cannot write criteria: one round and the summaries "
                             f"need up to {1 + reserve} calls, and criteria may spend "
                             f"{config.criteria_budget_share:.0%} of the budget",
                             fix="raise --max-calls or pass --criteria FILE")
    ask = dict(seed=config.seed, max_attempts=config.max_attempts, audit=audit, max_model_len=config.max_model_len)
    cut = cut or functools.partial(truncate, max_chars=config.max_doc_chars)
    cost = Cost()
    docs_per_call = min(config.docs_per_criteria_call, len(texts))
    jobs = [Job(render_prompt("criteria", config, min_items=3, max_items=5,
                              documents=[cut(texts[i])
                                         for i in rng.choice(len(texts), size=docs_per_call, replace=False)]),
                CRITERIA_SCHEMA, _parse_round) for _ in range(num_rounds)]
    rounds_budget = CallBudget(None if budget.left is None else allowed - reserve)
    replies = ask_all(backend, jobs, stage="criteria", max_tokens=config.criteria_max_tokens,
                      temperature=config.criteria_temperature, budget=rounds_budget, **ask)
    budget.take(rounds_budget.spent)
    cost.absorb(replies)
    rounds = [r.value for r in replies if r.value is not None]
    if not rounds:
        raise ScoreError(f"the judge answered none of the {len(jobs)} criteria calls usably "
                         f"(first error: {replies[0].error})", fix=CRITERIA_FIX)
    log.info("criteria: %d of %d rounds parsed", len(rounds), len(jobs))
    kept = _summarize(backend, rounds, config, cost, budget=budget, **ask)
    metadata, metrics = kept["metadata"], _distinct_names(kept["metrics"], kept["metadata"])
    sentences = _write_sentences(backend, metadata, metrics, config, cost, budget=budget, **ask)
    return Criteria(metadata=metadata, metrics=metrics, sentences=sentences, judge_model=backend.model,
                    k=k, seed=config.seed, num_rounds=len(rounds), cost=vars(cost).copy())


def _distinct_names(metrics, metadata) -> tuple[tuple[str, str], ...]:
    """A metric named like a kept metadata item is renamed "<name> (metric)", so every
    criterion sentence and schema key has its own name."""
    taken = {name for name, _ in metadata}
    return tuple((f"{name} (metric)" if name in taken else name, text) for name, text in metrics)


def _summarize(backend: Backend, rounds: list[dict], config: ClusterAgentConfig,
               cost: Cost, **ask) -> dict[str, tuple[tuple[str, str], ...]]:
    """The metadata and the metrics summary calls, sent together: kind -> kept (name, text)."""
    jobs, keeps = [], []
    for kind in ("metadata", "metrics"):
        merged = merge_definitions([item for r in rounds for item in r[kind]])
        entries = [{"name": name, "count": len(defs), "definitions": defs[:config.summary_max_definitions]}
                   for name, defs in list(merged.items())[:config.summary_max_names]]
        keeps.append(min(config.num_kept, len(merged)))
        prompt = render_prompt("summarize", config, kind=kind, entries=entries, keep=keeps[-1],
                               num_rounds=len(rounds))
        schema = {"type": "object", "properties": {"items": _items_schema("definition", 1, keeps[-1])},
                  "required": ["items"], "additionalProperties": False}
        jobs.append(Job(prompt, schema, lambda d: _parse_items(d, "items", "definition")))
    replies = ask_all(backend, jobs, stage="summary", max_tokens=config.summary_max_tokens,
                      temperature=config.temperature, **ask)
    cost.absorb(replies)
    kept = {}
    for kind, keep, reply in zip(("metadata", "metrics"), keeps, replies):
        first: dict[str, str] = {}
        for name, text in _required(reply, f"{kind} summary"):  # a repeated name keeps its first text
            first.setdefault(name, text)
        kept[kind] = tuple(first.items())[:keep]
    return kept


def _write_sentences(backend: Backend, metadata, metrics, config: ClusterAgentConfig,
                     cost: Cost, **ask) -> tuple[tuple[str, str], ...]:
    names = [name for name, _ in (*metadata, *metrics)]
    schema = {"type": "object", "properties": {"criteria": {
        "type": "object", "properties": {n: PROSE for n in names},
        "required": names, "additionalProperties": False}}, "required": ["criteria"]}

    def parse(data: object) -> tuple[tuple[str, str], ...]:
        found = data.get("criteria") if isinstance(data, dict) else None
        if not isinstance(found, dict) or any(not isinstance(found.get(n), str) or not found[n].strip()
                                              for n in names):
            raise ReplyError(f"criteria must give one sentence for each of {names}")
        return tuple((n, found[n].strip()) for n in names)

    prompt = render_prompt("sentences", config, metadata=list(metadata), metrics=list(metrics))
    [reply] = ask_all(backend, [Job(prompt, schema, parse)], stage="sentences",
                      max_tokens=config.summary_max_tokens, temperature=config.temperature, **ask)
    cost.absorb([reply])
    return _required(reply, "criteria sentences")


def _required(reply: Reply, what: str):
    if reply.value is None:
        raise ScoreError(f"the judge's {what} is unusable ({reply.error})", fix=CRITERIA_FIX)
    return reply.value


# ---- stages 3 and 4: clustering and self-verification ------------------------------------------

class ClusterAgentJudge:
    """Clusters K-batches with an LLM under frozen `criteria`, then verifies each cluster.
    Takes any `Backend`; implements `diversity.Judge`. A `budget` caps every call it makes;
    an `audit` sink receives one record per call; `cut` shortens each document (default: to
    `config.max_doc_chars` characters)."""

    def __init__(self, backend: Backend, criteria: Criteria, config: ClusterAgentConfig = ClusterAgentConfig(),
                 *, budget: CallBudget | None = None, audit: AuditSink | None = None,
                 cut: Callable[[str], str] | None = None):
        self.cut = cut or functools.partial(truncate, max_chars=config.max_doc_chars)
        self.backend = backend
        self.criteria = criteria
        self.config = config
        self.budget = budget or CallBudget()
        self.audit = audit
        self.name = f"cluster-agent:{backend.model}"
        self.max_calls_per_batch = config.max_calls_per_batch

    def _ask(self, jobs: Sequence[Job], stage: str, max_tokens: int) -> list[Reply]:
        return ask_all(self.backend, jobs, stage=stage, max_tokens=max_tokens, temperature=self.config.temperature,
                       seed=self.config.seed, max_attempts=self.config.max_attempts, budget=self.budget,
                       audit=self.audit, max_model_len=self.config.max_model_len)

    def cluster(self, batches: Sequence[Sequence[str]]) -> list[BatchClustering]:
        docs = [[self.cut(t) for t in batch] for batch in batches]
        replies = self._ask([self._cluster_job(d) for d in docs], "cluster", self.config.cluster_max_tokens)
        proposals = [None if r.value is None else repair_reply(r.value, len(d)) for r, d in zip(replies, docs)]
        checks = self._verify(docs, proposals)
        return [finish_batch(reply, proposal, check, self.config.invalid_policy)
                for reply, proposal, check in zip(replies, proposals, checks)]

    def _cluster_job(self, docs: Sequence[str]) -> Job:
        prompt = render_prompt("cluster", self.config, criteria=list(self.criteria.sentences),
                               metadata=list(self.criteria.metadata), metrics=list(self.criteria.metrics),
                               documents=list(docs), compact=self.config.answer == "compact")
        return Job(prompt, cluster_schema(self.criteria, len(docs), self.config.answer), parse_clusters)

    def _verify(self, docs: Sequence[Sequence[str]], proposals: Sequence) -> list[Reply | None]:
        """One verification reply per batch whose proposal has a multi-document cluster."""
        todo = [i for i, p in enumerate(proposals)
                if self.config.verify and p is not None and any(len(c) > 1 for c in p.clusters)]
        jobs = [self._verify_job(docs[i], proposals[i].clusters, proposals[i].reasons) for i in todo]
        replies = self._ask(jobs, "verify", self.config.verify_max_tokens) if jobs else []
        checks = dict(zip(todo, replies))
        return [checks.get(i) for i in range(len(proposals))]

    def _verify_job(self, docs: Sequence[str], clusters, reasons) -> Job:
        shown = [{"id": j + 1, "members": [m + 1 for m in c], "reason": reasons[j]}
                 for j, c in enumerate(clusters) if len(c) > 1]
        ids = [str(c["id"]) for c in shown]
        reason = SHORT if self.config.answer == "compact" else PROSE
        verdict = {"type": "object", "properties": {"reason": reason, "valid": {"type": "boolean"}},
                   "required": ["reason", "valid"], "additionalProperties": False}
        schema = {"type": "object", "properties": {i: verdict for i in ids}, "required": ids,
                  "additionalProperties": False}

        def parse(data: object) -> dict[int, bool]:
            if not isinstance(data, dict) or any(not isinstance(data.get(i), dict)
                                                 or not isinstance(data[i].get("valid"), bool) for i in ids):
                raise ReplyError(f"verification must give valid: true/false for clusters {ids}")
            return {int(i) - 1: data[i]["valid"] for i in ids}

        prompt = render_prompt("verify", self.config, criteria=list(self.criteria.sentences),
                               documents=list(docs), clusters=shown)
        return Job(prompt, schema, parse)


def cluster_schema(criteria: Criteria, k: int, answer: str = "full") -> dict:
    """Clusters of members 1..k, each with a reason, metadata values and reasoned 1-5 metric scores
    (`answer` full), or with members and a short reason only (compact)."""
    members = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": k}, "minItems": 1, "maxItems": k}
    if answer == "compact":
        cluster = {"type": "object", "properties": {"members": members, "reason": SHORT},
                   "required": ["members", "reason"], "additionalProperties": False}
    else:
        score = {"type": "object",
                 "properties": {"reasoning": REASON, "score": {"type": "integer", "minimum": 1, "maximum": 5}},
                 "required": ["reasoning", "score"], "additionalProperties": False}
        meta_names = [n for n, _ in criteria.metadata]
        metric_names = [n for n, _ in criteria.metrics]
        cluster = {"type": "object", "properties": {
            "cluster_id": {"type": "integer"}, "members": members, "reason": REASON,
            "metadata": {"type": "object", "properties": {n: VALUE for n in meta_names}, "required": meta_names},
            "metrics": {"type": "object", "properties": {n: score for n in metric_names}, "required": metric_names},
        }, "required": ["cluster_id", "members", "reason", "metadata", "metrics"]}
    return {"type": "object", "properties": {"clusters": {"type": "array", "items": cluster, "minItems": 1,
                                                          "maxItems": k}}, "required": ["clusters"]}

