"""Judges: what clusters a K-batch of documents for the diversity score.

Both implement `protocol.Judge` (`cluster(batches) -> [BatchClustering]`): the LLM
cluster-agent (`cluster_agent`, arXiv 2410.15226) and the embedding judge (`embedding`).
`open_judge` is the one way `generator run`, `score` and `calibrate` obtain one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from generator.errors import UserError


def open_judge(kind: str, *, threshold: float = 0.0, settings=None, criteria_path: Path | None = None,
               regenerate_criteria: bool = False, seed: int = 0, backend=None, budget=None, audit=None,
               cache_path: Path | None = None):
    """`embed`: the embedding judge, subject and form views, subject cut `threshold` (0: its
    default); `embed-subject`: its subject view alone (the ruler before the form view). `llm`: the
    cluster-agent under `settings` (config.JudgeSettings), on `backend` when given, else on the engine the
    settings name, opened with the context `config.plan_context` derives (answers cached in
    `cache_path` when given); its criteria are read from `criteria_path` when it exists (unless
    `regenerate_criteria`; refused if written by another judge model or for another K), else
    written from the first texts it sees and saved there. Every LLM call counts against
    `budget` (calls.CallBudget) and is recorded in `audit`."""
    if kind in ("embed", "embed-subject"):
        from generator.judges.embedding import DEFAULT_FORM_THRESHOLD, DEFAULT_THRESHOLD, EmbeddingJudge
        return EmbeddingJudge(threshold or DEFAULT_THRESHOLD,
                              form_threshold=DEFAULT_FORM_THRESHOLD if kind == "embed" else None)
    if kind != "llm":
        raise UserError(f"unknown judge {kind!r}", fix="use embed, embed-subject or llm")
    from generator.judges.config import JudgeSettings
    settings = settings or JudgeSettings()
    fit = None
    if backend is None:
        if not settings.model:
            raise UserError("the llm judge needs a model", fix="pass --judge-model M or set judge.model in the recipe")
        fit = plan_judge(settings)
        from generator.backends import open_backend
        from generator.judges.config import backend_options
        backend = open_backend(settings.backend, settings.model, **backend_options(settings, fit[1]))
    if cache_path is not None:
        from generator.judges.cache import CachedBackend
        backend = CachedBackend(backend, cache_path)
    criteria = None
    if criteria_path is not None and Path(criteria_path).is_file() and not regenerate_criteria:
        from generator.judges.cluster_agent import load_criteria
        criteria = load_criteria(criteria_path, judge_model=backend.model, k=settings.k)
    return CriteriaJudge(backend, criteria_path, seed, criteria, settings=settings, fit=fit, budget=budget,
                         audit=audit)


def plan_judge(settings):
    """(token counter, context plan) for the judge `settings` name; UserError when K documents
    cannot fit in the model's context. Loads the tokenizer, never the model."""
    from generator.judges.config import load_counter, model_context, plan_context
    counter = load_counter(settings)
    return counter, plan_context(settings, counter, model_context(settings))


class CriteriaJudge:
    """The LLM cluster-agent whose criteria are frozen once: given, read from a file, or written
    from the first texts it is shown (then saved and reused for the rest of the study). With a
    `fit` (token counter, context plan) documents are cut by tokens to fit the engine's context."""

    def __init__(self, backend, criteria_path: Path | None, seed: int, criteria=None, *, settings=None, fit=None,
                 budget=None, audit=None):
        from generator.judges.cluster_agent import ClusterAgentConfig
        from generator.judges.config import JudgeSettings
        s = settings or JudgeSettings()
        self.backend, self.criteria_path, self.criteria, self.settings, self.fit = backend, criteria_path, criteria, s, fit
        self.config = ClusterAgentConfig(
            seed=seed, invalid_policy=s.invalid_policy, answer=s.answer, docs_per_criteria_call=s.docs_per_criteria_call,
            num_criteria_calls=s.num_criteria_calls, num_kept=s.num_kept, verify=s.verify,
            cluster_max_tokens=s.cluster_max_tokens, verify_max_tokens=s.verify_max_tokens,
            criteria_max_tokens=s.criteria_max_tokens, max_model_len=fit[1].max_model_len if fit else 0)
        self.k, self.budget, self.audit = s.k, budget, audit
        self.name = f"cluster-agent:{backend.model}"
        self.max_calls_per_batch = self.config.max_calls_per_batch  # lets scoring size batches to the budget
        self.max_doc_tokens = fit[1].max_doc_tokens if fit else 0
        self._judge = None

    def cut(self, text: str) -> str:
        from generator.judges.cluster_agent import truncate
        if self.fit is None:
            return truncate(text, self.config.max_doc_chars)
        return self.fit[0].cut(text, self.max_doc_tokens)

    def prepare(self, texts: Sequence[str]):
        """The criteria, writing them from `texts` when there are none yet."""
        if self.criteria is None:
            from generator.judges.cluster_agent import generate_criteria
            self.criteria = generate_criteria(self.backend, texts, rng=np.random.default_rng([self.config.seed, 1]),
                                              config=self.config, k=self.k, budget=self.budget, audit=self.audit,
                                              cut=self.cut)
            if self.criteria_path is not None:
                Path(self.criteria_path).parent.mkdir(parents=True, exist_ok=True)
                Path(self.criteria_path).write_text(self.criteria.to_json() + "\n", encoding="utf-8")
        return self.criteria

    def cluster(self, batches):
        if self._judge is None:
            from generator.judges.cluster_agent import ClusterAgentJudge
            criteria = self.prepare([t for b in batches for t in b])
            if self.fit is not None:
                from generator.judges.config import doc_tokens_for
                self.max_doc_tokens = doc_tokens_for(self.fit[1], self.settings, self.fit[0], criteria)
            self._judge = ClusterAgentJudge(self.backend, criteria, self.config, budget=self.budget, audit=self.audit,
                                            cut=self.cut)
        return self._judge.cluster(batches)

    def close(self) -> None:
        self.backend.close()


def judge_for_target(plan, out: Path):
    """The judge a recipe's `target` names, with the recipe's `judge:` settings; LLM criteria
    live in OUT/criteria.json, its answers in OUT/judge-cache.sqlite (a resumed run asks nothing twice)."""
    t = plan.recipe.target
    return open_judge(t.judge, threshold=t.threshold, settings=plan.recipe.judge, criteria_path=out / "criteria.json",
                      seed=plan.recipe.seed, cache_path=out / "judge-cache.sqlite")
