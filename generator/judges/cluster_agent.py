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
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from generator.judges.protocol import REPAIR_KINDS, BatchClustering, ScoreError, repair_partition
from generator.records import Backend, Request, Result
from generator.sampling.templates import load_template

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts" / "judge"
MAX_ATTEMPTS = 2  # a failed or unparsable reply is retried once
CRITERIA_FIX = "use a more capable judge model or pass --criteria FILE"
# Bounded strings keep every structured answer inside its token budget, even from a weak judge
# that would otherwise repeat itself inside a string until max_tokens cuts the JSON.
NAME = {"type": "string", "minLength": 1, "maxLength": 80}
PROSE = {"type": "string", "minLength": 1, "maxLength": 400}


@dataclass(frozen=True)
class ClusterAgentConfig:
    docs_per_criteria_call: int = 5  # J
    num_criteria_calls: int = 100  # M
    num_kept: int = 4  # k metadata and k metrics survive the summaries
    max_doc_chars: int = 2000  # each document is cut to this many characters in every prompt
    verify: bool = True
    invalid_policy: Literal["dissolve", "keep"] = "dissolve"
    temperature: float = 0.2  # clustering and verification
    criteria_temperature: float = 0.8  # criteria rounds: varied samples want varied answers
    criteria_max_tokens: int = 1024
    summary_max_tokens: int = 2048
    cluster_max_tokens: int = 3072
    verify_max_tokens: int = 1024
    summary_max_names: int = 40  # most frequent names shown to a summary call
    summary_max_definitions: int = 3  # definitions shown per name
    seed: int = 0  # request seeds derive from (seed, prompt, attempt)
    prompts_dir: str = ""  # empty: the repository's prompts/judge

    def __post_init__(self):
        if self.invalid_policy not in ("dissolve", "keep"):
            raise ScoreError(f"invalid_policy {self.invalid_policy!r} is not allowed", fix="use 'dissolve' or 'keep'")
        for name in ("docs_per_criteria_call", "num_criteria_calls", "num_kept", "max_doc_chars"):
            if getattr(self, name) < 1:
                raise ScoreError(f"{name} must be at least 1, got {getattr(self, name)}", fix=f"set {name} >= 1")


@dataclass(frozen=True)
class Criteria:
    """The ruler: kept metadata (name, definition), metrics (name, rubric) and one clustering
    sentence per kept item (name, sentence). Freeze it once per study and reuse it."""

    metadata: tuple[tuple[str, str], ...]
    metrics: tuple[tuple[str, str], ...]
    sentences: tuple[tuple[str, str], ...]
    judge_model: str = ""
    num_rounds: int = 0  # criteria rounds that parsed
    cost: dict[str, int] = field(default_factory=dict)  # calls, prompt_tokens, completion_tokens

    def to_json(self) -> str:
        return json.dumps({
            "metadata": [{"name": n, "definition": d} for n, d in self.metadata],
            "metrics": [{"name": n, "rubric": r} for n, r in self.metrics],
            "criteria": [{"name": n, "criterion": s} for n, s in self.sentences],
            "judge_model": self.judge_model, "num_rounds": self.num_rounds, "cost": self.cost,
        }, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, *, where: str = "criteria") -> "Criteria":
        fix = "regenerate the criteria or follow the layout written by Criteria.to_json"
        try:
            data = json.loads(text)
            pairs = {key: tuple((str(item["name"]), str(item[value])) for item in data[key])
                     for key, value in (("metadata", "definition"), ("metrics", "rubric"), ("criteria", "criterion"))}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ScoreError(f"{where}: not a criteria file ({type(exc).__name__}: {exc})", fix=fix) from None
        if not pairs["metadata"] or not pairs["metrics"] or not pairs["criteria"]:
            raise ScoreError(f"{where}: metadata, metrics and criteria must each be non-empty", fix=fix)
        return cls(metadata=pairs["metadata"], metrics=pairs["metrics"], sentences=pairs["criteria"],
                   judge_model=str(data.get("judge_model", "")), num_rounds=int(data.get("num_rounds", 0)),
                   cost=dict(data.get("cost", {})))


def load_criteria(path: str | Path) -> Criteria:
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"{path}: criteria file not found", fix="give an existing --criteria file")
    return Criteria.from_json(path.read_text(encoding="utf-8"), where=str(path))


class ReplyError(Exception):
    """A judge reply that is not the JSON asked for."""


@dataclass
class _Cost:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, result: Result) -> None:
        self.calls += 1
        self.prompt_tokens += result.num_prompt_tokens
        self.completion_tokens += result.num_tokens

    def absorb(self, replies: Sequence["_Reply | None"]) -> "_Cost":
        for reply in filter(None, replies):
            self.calls += reply.cost.calls
            self.prompt_tokens += reply.cost.prompt_tokens
            self.completion_tokens += reply.cost.completion_tokens
        return self


@dataclass(frozen=True)
class _Job:
    prompt: str
    schema: dict
    parse: Callable[[object], object]  # parsed JSON -> value, raises ReplyError


@dataclass
class _Reply:
    value: object = None
    error: str | None = None
    cost: _Cost = field(default_factory=_Cost)


def ask_all(backend: Backend, jobs: Sequence[_Job], *, stage: str, max_tokens: int, temperature: float,
            seed: int) -> list[_Reply]:
    """Send every job in one generate call; send the failed or unparsable ones once more."""
    replies = [_Reply() for _ in jobs]
    pending = list(range(len(jobs)))
    for attempt in range(MAX_ATTEMPTS):
        if not pending:
            break
        requests = [Request(id=f"{stage}-{i}-try{attempt}", prompt=jobs[i].prompt, max_tokens=max_tokens,
                            temperature=temperature, seed=_request_seed(seed, jobs[i].prompt, attempt),
                            json_schema=json.dumps(jobs[i].schema)) for i in pending]
        results = backend.generate(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"backend returned {len(results)} results for {len(requests)} requests")
        still = []
        for i, result in zip(pending, results):
            reply = replies[i]
            reply.cost.add(result)
            try:
                if not result.ok:
                    raise ReplyError(f"backend error: {result.error}")
                reply.value, reply.error = jobs[i].parse(parse_json(result.text)), None
            except ReplyError as exc:
                reply.error = f"{stage}: {exc}"
                still.append(i)
        pending = still
    return replies


def _request_seed(seed: int, prompt: str, attempt: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{attempt}\x00{prompt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def parse_json(text: str) -> object:
    """The JSON object in a reply; tolerates code fences and prose around it."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        try:
            if start >= 0 and end > start:
                return json.loads(body[start:end + 1])
        except json.JSONDecodeError:
            pass
        raise ReplyError(f"not JSON: {text[:80]!r}") from None


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
                      config: ClusterAgentConfig = ClusterAgentConfig()) -> Criteria:
    """Write clustering criteria from random samples of `texts` (stages 1 and 2)."""
    if not texts:
        raise ScoreError("cannot write criteria for an empty corpus", fix="point at a corpus with documents")
    cost = _Cost()
    docs_per_call = min(config.docs_per_criteria_call, len(texts))
    jobs = [_Job(render_prompt("criteria", config, min_items=3, max_items=5,
                               documents=[truncate(texts[i], config.max_doc_chars)
                                          for i in rng.choice(len(texts), size=docs_per_call, replace=False)]),
                 CRITERIA_SCHEMA, _parse_round) for _ in range(config.num_criteria_calls)]
    replies = ask_all(backend, jobs, stage="criteria", max_tokens=config.criteria_max_tokens,
                      temperature=config.criteria_temperature, seed=config.seed)
    cost.absorb(replies)
    rounds = [r.value for r in replies if r.value is not None]
    if not rounds:
        raise ScoreError(f"the judge answered none of the {len(jobs)} criteria calls usably "
                         f"(first error: {replies[0].error})", fix=CRITERIA_FIX)
    log.info("criteria: %d of %d rounds parsed", len(rounds), len(jobs))
    kept = _summarize(backend, rounds, config, cost)
    metadata, metrics = kept["metadata"], kept["metrics"]
    sentences = _write_sentences(backend, metadata, metrics, config, cost)
    return Criteria(metadata=metadata, metrics=metrics, sentences=sentences, judge_model=backend.model,
                    num_rounds=len(rounds), cost=vars(cost).copy())


def _summarize(backend: Backend, rounds: list[dict], config: ClusterAgentConfig,
               cost: _Cost) -> dict[str, tuple[tuple[str, str], ...]]:
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
        jobs.append(_Job(prompt, schema, lambda d: _parse_items(d, "items", "definition")))
    replies = ask_all(backend, jobs, stage="summary", max_tokens=config.summary_max_tokens,
                      temperature=config.temperature, seed=config.seed)
    cost.absorb(replies)
    kept = {}
    for kind, keep, reply in zip(("metadata", "metrics"), keeps, replies):
        first: dict[str, str] = {}
        for name, text in _required(reply, f"{kind} summary"):  # a repeated name keeps its first text
            first.setdefault(name, text)
        kept[kind] = tuple(first.items())[:keep]
    return kept


def _write_sentences(backend: Backend, metadata, metrics, config: ClusterAgentConfig,
                     cost: _Cost) -> tuple[tuple[str, str], ...]:
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
    [reply] = ask_all(backend, [_Job(prompt, schema, parse)], stage="sentences",
                      max_tokens=config.summary_max_tokens, temperature=config.temperature, seed=config.seed)
    cost.absorb([reply])
    return _required(reply, "criteria sentences")


def _required(reply: _Reply, what: str):
    if reply.value is None:
        raise ScoreError(f"the judge's {what} is unusable ({reply.error})", fix=CRITERIA_FIX)
    return reply.value


# ---- stages 3 and 4: clustering and self-verification ------------------------------------------

class ClusterAgentJudge:
    """Clusters K-batches with an LLM under frozen `criteria`, then verifies each cluster.
    Takes any `Backend`; implements `diversity.Judge`."""

    def __init__(self, backend: Backend, criteria: Criteria, config: ClusterAgentConfig = ClusterAgentConfig()):
        self.backend = backend
        self.criteria = criteria
        self.config = config
        self.name = f"cluster-agent:{backend.model}"

    def cluster(self, batches: Sequence[Sequence[str]]) -> list[BatchClustering]:
        docs = [[truncate(t, self.config.max_doc_chars) for t in batch] for batch in batches]
        replies = ask_all(self.backend, [self._cluster_job(d) for d in docs], stage="cluster",
                          max_tokens=self.config.cluster_max_tokens, temperature=self.config.temperature,
                          seed=self.config.seed)
        proposals = [None if r.value is None else _repair(r.value, len(d)) for r, d in zip(replies, docs)]
        checks = self._verify(docs, proposals)
        return [_finish(reply, proposal, check, self.config.invalid_policy)
                for reply, proposal, check in zip(replies, proposals, checks)]

    def _cluster_job(self, docs: Sequence[str]) -> _Job:
        prompt = render_prompt("cluster", self.config, criteria=list(self.criteria.sentences),
                               metadata=list(self.criteria.metadata), metrics=list(self.criteria.metrics),
                               documents=list(docs))
        return _Job(prompt, cluster_schema(self.criteria, len(docs)), _parse_clusters)

    def _verify(self, docs: Sequence[Sequence[str]], proposals: Sequence) -> list[_Reply | None]:
        """One verification reply per batch whose proposal has a multi-document cluster."""
        todo = [i for i, p in enumerate(proposals)
                if self.config.verify and p is not None and any(len(c) > 1 for c in p[0])]
        jobs = [self._verify_job(docs[i], proposals[i][0], proposals[i][2]) for i in todo]
        replies = ask_all(self.backend, jobs, stage="verify", max_tokens=self.config.verify_max_tokens,
                          temperature=self.config.temperature, seed=self.config.seed) if jobs else []
        checks = dict(zip(todo, replies))
        return [checks.get(i) for i in range(len(proposals))]

    def _verify_job(self, docs: Sequence[str], clusters, reasons) -> _Job:
        shown = [{"id": j + 1, "members": [m + 1 for m in c], "reason": reasons[j]}
                 for j, c in enumerate(clusters) if len(c) > 1]
        ids = [str(c["id"]) for c in shown]
        verdict = {"type": "object", "properties": {"reason": PROSE, "valid": {"type": "boolean"}},
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
        return _Job(prompt, schema, parse)


def cluster_schema(criteria: Criteria, k: int) -> dict:
    """Clusters with members 1..k, a reason, one value per metadata name and a reasoned 1-5
    score per metric."""
    text = PROSE
    score = {"type": "object",
             "properties": {"reasoning": text, "score": {"type": "integer", "minimum": 1, "maximum": 5}},
             "required": ["reasoning", "score"], "additionalProperties": False}
    meta_names = [n for n, _ in criteria.metadata]
    metric_names = [n for n, _ in criteria.metrics]
    cluster = {"type": "object", "properties": {
        "cluster_id": {"type": "integer"},
        "members": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": k}, "minItems": 1},
        "reason": text,
        "metadata": {"type": "object", "properties": {n: text for n in meta_names}, "required": meta_names},
        "metrics": {"type": "object", "properties": {n: score for n in metric_names}, "required": metric_names},
    }, "required": ["cluster_id", "members", "reason", "metadata", "metrics"]}
    return {"type": "object", "properties": {"clusters": {"type": "array", "items": cluster, "minItems": 1,
                                                          "maxItems": k}}, "required": ["clusters"]}


def _parse_clusters(data: object) -> list[tuple[list[int], str]]:
    """[(0-based positions, reason)] per proposed cluster; a member that is not a whole
    number becomes -1 so the repair counts it out of range."""
    clusters = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(clusters, list) or not clusters:
        raise ReplyError("no 'clusters' list")
    if any(not isinstance(c, dict) or not isinstance(c.get("members"), list) for c in clusters):
        raise ReplyError("every cluster needs a 'members' list")
    return [([_position(m) for m in c["members"]], str(c.get("reason", ""))) for c in clusters]


def _position(member: object) -> int:
    if isinstance(member, bool):
        return -1
    if isinstance(member, int):
        return member - 1
    if isinstance(member, str) and member.strip().isdigit():
        return int(member) - 1
    return -1


def _repair(proposed: list[tuple[list[int], str]], k: int):
    """(partition, repairs, reason per cluster). A repaired multi-document cluster keeps the
    reason of the proposal it came from: the first one that lists its first member."""
    groups = [members for members, _ in proposed]
    clusters, repairs = repair_partition(groups, k)
    reasons = [next((reason for members, reason in proposed if c[0] in members), "") for c in clusters]
    return clusters, repairs, reasons


def _finish(reply: _Reply, proposal, check: _Reply | None, policy: str) -> BatchClustering:
    cost = _Cost().absorb([reply, check])
    error = reply.error if proposal is None else (check.error if check is not None and check.value is None else None)
    if error is not None:
        return BatchClustering(clusters=(), failed=True, error=error, repairs=dict.fromkeys(REPAIR_KINDS, 0),
                               **vars(cost))
    clusters, repairs, _ = proposal
    verdicts = check.value if check is not None else {}
    final: list[tuple[int, ...]] = []
    for j, cluster in enumerate(clusters):
        if not verdicts.get(j, True) and policy == "dissolve":
            final.extend((m,) for m in cluster)
            repairs["invalid_dissolved"] += 1
        else:
            final.append(cluster)
    return BatchClustering(clusters=tuple(final), repairs=repairs, **vars(cost))
