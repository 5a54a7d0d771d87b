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


def open_judge(kind: str, *, threshold: float = 0.0, model: str = "", endpoint: str = "",
               criteria_path: Path | None = None, regenerate_criteria: bool = False, seed: int = 0,
               backend=None, k: int = 10, invalid_policy: str = "split", budget=None, audit=None,
               cache_path: Path | None = None):
    """`embed`: the embedding judge at `threshold` (0: its default). `llm`: the cluster-agent on
    `backend`, else on `endpoint` serving `model`, else on an in-process vLLM engine for
    `model` (answers cached in `cache_path` when given); its criteria are read from
    `criteria_path` when it exists (unless `regenerate_criteria`; refused if written by another
    judge model or for another K), else written from the first texts it sees and saved there.
    Every LLM call counts against `budget` (calls.CallBudget) and is recorded in `audit`."""
    if kind == "embed":
        from generator.judges.embedding import DEFAULT_THRESHOLD, EmbeddingJudge
        return EmbeddingJudge(threshold or DEFAULT_THRESHOLD)
    if kind != "llm":
        raise UserError(f"unknown judge {kind!r}", fix="use embed or llm")
    if backend is None:
        if not model:
            raise UserError("the llm judge needs a model", fix="pass --judge-model M or --judge-endpoint URL --judge-model M")
        from generator.backends import open_backend
        backend = open_backend("openai", model, base_url=endpoint) if endpoint else open_backend("vllm", model)
    if cache_path is not None:
        from generator.judges.cache import CachedBackend
        backend = CachedBackend(backend, cache_path)
    criteria = None
    if criteria_path is not None and Path(criteria_path).is_file() and not regenerate_criteria:
        from generator.judges.cluster_agent import load_criteria
        criteria = load_criteria(criteria_path, judge_model=backend.model, k=k)
    return CriteriaJudge(backend, criteria_path, seed, criteria, k=k, invalid_policy=invalid_policy,
                         budget=budget, audit=audit)


class CriteriaJudge:
    """The LLM cluster-agent whose criteria are frozen once: given, read from a file, or written
    from the first texts it is shown (then saved and reused for the rest of the study)."""

    def __init__(self, backend, criteria_path: Path | None, seed: int, criteria=None, *, k: int = 10,
                 invalid_policy: str = "split", budget=None, audit=None):
        from generator.judges.cluster_agent import ClusterAgentConfig
        self.backend, self.criteria_path, self.criteria = backend, criteria_path, criteria
        self.config = ClusterAgentConfig(seed=seed, invalid_policy=invalid_policy)
        self.k, self.budget, self.audit = k, budget, audit
        self.name = f"cluster-agent:{backend.model}"
        self.max_calls_per_batch = self.config.max_calls_per_batch  # lets scoring size batches to the budget
        self._judge = None

    def prepare(self, texts: Sequence[str]):
        """The criteria, writing them from `texts` when there are none yet."""
        if self.criteria is None:
            from generator.judges.cluster_agent import generate_criteria
            self.criteria = generate_criteria(self.backend, texts, rng=np.random.default_rng([self.config.seed, 1]),
                                              config=self.config, k=self.k, budget=self.budget, audit=self.audit)
            if self.criteria_path is not None:
                Path(self.criteria_path).parent.mkdir(parents=True, exist_ok=True)
                Path(self.criteria_path).write_text(self.criteria.to_json() + "\n", encoding="utf-8")
        return self.criteria

    def cluster(self, batches):
        if self._judge is None:
            from generator.judges.cluster_agent import ClusterAgentJudge
            self._judge = ClusterAgentJudge(self.backend, self.prepare([t for b in batches for t in b]), self.config,
                                            budget=self.budget, audit=self.audit)
        return self._judge.cluster(batches)

    def close(self) -> None:
        self.backend.close()


def judge_for_target(plan, out: Path):
    """The judge a recipe's `target` names; LLM criteria live in OUT/criteria.json, its answers
    in OUT/judge-cache.sqlite (a resumed run asks nothing twice)."""
    t = plan.recipe.target
    return open_judge(t.judge, threshold=t.threshold, model=t.judge_model, endpoint=t.judge_endpoint,
                      criteria_path=out / "criteria.json", seed=plan.recipe.seed, k=t.k, cache_path=out / "judge-cache.sqlite")
