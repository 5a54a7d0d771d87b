"""The LLM score gate: a judge model scores each document from 1 to 5 under a rubric, and a
document scored below the threshold, or whose score cannot be read, is rejected.

`ScoreGate.score(texts)` sends a batch of documents as concurrent calls through the diversity
judge's machinery (`judges.calls.ask_all`: one `generate` call per attempt, a retry for a reply
that fails, every call written to OUT/quality-audit.jsonl). Answers are cached in
OUT/quality-cache.sqlite (`judges.cache`), so the same document under the same rubric and model
is never sent twice. The calls actually sent count against `max_calls` and `max_tokens`; once
either is spent the gate raises a `UserError` and the run stops (the corpus so far is kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from generator.errors import UserError
from generator.judges.calls import Job, Reply, ReplyError, ask_all
from generator.quality.config import LlmScore, Quality
from generator.quality.gates import Rejection
from generator.records import Request, Result, failed_result

RUBRIC = Path(__file__).resolve().parents[2] / "prompts" / "judge" / "quality.j2"
CACHE_FILE = "quality-cache.sqlite"
AUDIT_FILE = "quality-audit.jsonl"
SCORE_CONTEXT = 4096  # context a local judge engine opens with unless judge.max_model_len says
MAX_REASON_CHARS = 300  # of the judge's reason, kept in a rejection
BUDGET_SPENT = "judge budget spent"
SCORE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["reason", "score"],
                "properties": {"reason": {"type": "string", "maxLength": 600},
                               "score": {"type": "integer", "minimum": 1, "maximum": 5}}}


@dataclass(frozen=True)
class Score:
    score: int  # 1-5
    reason: str


def load_rubric(path: str, where: str):
    """The rubric template (`path`, or prompts/judge/quality.j2 when empty); it must use exactly
    the variable `document`."""
    from generator.sampling.templates import load_template
    file = Path(path) if path else RUBRIC
    if not file.is_file():
        raise UserError(f"{where}: {file}: no such rubric file",
                        fix="give the path of a Jinja2 rubric relative to the recipe, or leave rubric out "
                            "to use prompts/judge/quality.j2")
    template = load_template(file)
    if template.variables != ("document",):
        raise UserError(f"{where}: {file} uses {list(template.variables)}, not exactly [document]",
                        fix="start the rubric with {# variables: [document] #} and show {{ document }}")
    return template


def parse_score(data: object) -> Score:
    """A reply's score and reason; ReplyError (kind schema) for anything but a whole score in
    1-5 with a non-empty reason."""
    if not isinstance(data, dict):
        raise ReplyError("the reply is not a JSON object")
    score, reason = data.get("score"), data.get("reason")
    whole = isinstance(score, int) or isinstance(score, float) and score.is_integer()
    if isinstance(score, bool) or not whole:
        raise ReplyError(f"score is {str(score)[:40]!r}, not a whole number")
    if not 1 <= score <= 5:
        raise ReplyError(f"score {score} is outside 1-5")
    if not isinstance(reason, str) or not reason.strip():
        raise ReplyError("no reason given")
    return Score(int(score), " ".join(reason.split())[:MAX_REASON_CHARS])


def verdict_of(reply: Reply, threshold: int) -> Rejection | None:
    """The gate's decision on one document from the judge's reply: kept (None), rejected for a
    low score, or rejected because no score could be read (the failure kind is the rule)."""
    if reply.value is None:
        return Rejection("llm_score", f"judge_{reply.failure}", f"no score could be read: {reply.error}")
    s: Score = reply.value
    if s.score >= threshold:
        return None
    return Rejection("llm_score", f"score_{s.score}",
                     f"score {s.score} below threshold {threshold}: {s.reason}")


class SpendingLimit:
    """A judge backend that sends at most `max_calls` calls and stops sending once `max_tokens`
    are spent (0: no limit); a refused request comes back as a failed row. Only `generate`."""

    def __init__(self, backend, max_calls: int = 0, max_tokens: int = 0):
        self.backend, self.max_calls, self.max_tokens = backend, max_calls, max_tokens
        self.name, self.model = backend.name, backend.model
        self.calls = self.tokens = self.refused = 0

    def allowed(self, wanted: int) -> int:
        if self.max_tokens and self.tokens >= self.max_tokens:
            return 0
        return wanted if not self.max_calls else max(0, min(wanted, self.max_calls - self.calls))

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        n = self.allowed(len(requests))
        results = self.backend.generate(requests[:n]) if n else []
        self.calls += n
        self.tokens += sum(r.num_prompt_tokens + r.num_tokens for r in results)
        self.refused += len(requests) - n
        return results + [failed_result(r, BUDGET_SPENT) for r in requests[n:]]

    def close(self) -> None:
        self.backend.close()


class ScoreGate:
    """The LLM score gate of one run, writing its cache and audit into `out` (opened at the first
    batch, after the run folder is prepared)."""

    def __init__(self, settings: LlmScore, backend, out: Path, *, max_model_len: int = 0):
        self.settings, self.out, self.max_model_len = settings, Path(out), max_model_len
        self.rubric = load_rubric(settings.rubric, "quality.llm_score.rubric")
        self.limit = SpendingLimit(backend, settings.max_calls, settings.max_tokens)
        self.backend = None  # the cache over the limit, once opened
        self.audit = None

    def prompt(self, text: str) -> str:
        from generator.judges.cluster_agent import truncate
        return self.rubric.render({"document": truncate(text, self.settings.max_doc_chars)})

    def score(self, texts: Sequence[str]) -> list[Rejection | None]:
        """One decision per text, from one batch of concurrent judge calls (and their retries)."""
        if self.backend is None:
            self._open()
        jobs = [Job(self.prompt(t), SCORE_SCHEMA, parse_score) for t in texts]
        replies = ask_all(self.backend, jobs, stage="quality", max_tokens=self.settings.answer_max_tokens,
                          temperature=0.0, seed=0, audit=self.audit, max_model_len=self.max_model_len)
        if self.limit.refused:
            s = self.settings
            raise UserError(f"quality.llm_score: the judge budget is spent ({self.limit.calls} calls, "
                            f"{self.limit.tokens} tokens sent; max_calls {s.max_calls}, max_tokens "
                            f"{s.max_tokens}); the run stopped with the documents committed so far",
                            fix="raise quality.llm_score.max_calls or max_tokens (0: no limit) and run again "
                                f"with --force: answers already given are cached in OUT/{CACHE_FILE}")
        return [verdict_of(r, self.settings.threshold) for r in replies]

    @property
    def hits(self) -> int:
        """Calls answered from the cache so far."""
        return self.backend.hits if self.backend is not None else 0

    def _open(self) -> None:
        from generator.judges.audit import AuditLog
        from generator.judges.cache import CachedBackend
        self.backend = CachedBackend(self.limit, self.out / CACHE_FILE)
        self.audit = AuditLog(self.out / AUDIT_FILE)
        rubric = str(self.settings.rubric or RUBRIC)
        self.audit.write({"type": "run", "stage": "quality", "judge": self.limit.model, "rubric": rubric,
                          "threshold": self.settings.threshold})

    def close(self) -> None:
        (self.backend or self.limit).close()
        if self.audit is not None:
            self.audit.close()


def open_score_gate(quality: Quality | None, out: Path, *, backend=None) -> ScoreGate | None:
    """The run's LLM score gate (None when the recipe has none) on `backend`, else on the engine
    its judge settings name (an endpoint is checked for reachability here, before generation)."""
    if quality is None or quality.llm_score is None:
        return None
    s = quality.llm_score
    context = 0 if s.judge.backend == "openai" else s.judge.max_model_len
    if backend is None:
        from generator.backends import open_backend
        from generator.judges.config import ContextPlan, backend_options, model_context
        if s.judge.backend != "openai":
            context = context or min(model_context(s.judge), SCORE_CONTEXT)
        plan = ContextPlan(max_model_len=context, max_doc_tokens=0, model_context=context, prompt_tokens=0,
                           answer_tokens=0)
        backend = open_backend(s.judge.backend, s.judge.model, **backend_options(s.judge, plan))
    return ScoreGate(s, backend, out, max_model_len=context)
