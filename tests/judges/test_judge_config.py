"""The LLM judge's settings and context plan: the derived context and per-document token cap,
the load-time refusal when K documents cannot fit, the retry budget kept inside the context,
and the one place `generator score` reads the settings from (--recipe, --set, flags)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fakes import JUDGE_CRITERIA, ScriptedJudgeBackend, WordTokenizer, fake_judge_model
from generator import cli
from generator.errors import UserError
from generator.judges import CriteriaJudge, open_judge
from generator.judges.calls import Job, ask_all
from generator.judges.config import (DEFAULT_DOC_TOKENS, DOC_SLACK_TOKENS, MIN_DOC_TOKENS, JudgeSettings, TokenCounter,
                                     doc_tokens_for, fixed_prompt_tokens, plan_context, read_settings,
                                     served_context)
from generator.records import Result

COUNTER = TokenCounter(WordTokenizer())


def test_the_default_context_holds_k_documents_at_the_default_cap_with_prompt_and_answer():
    settings = JudgeSettings(model="m", k=4)
    plan = plan_context(settings, COUNTER, model_context=32_000)
    prompt, answer = fixed_prompt_tokens(settings, COUNTER)
    assert plan.max_doc_tokens == DEFAULT_DOC_TOKENS and plan.answer_tokens == answer == 3072
    assert plan.max_model_len == prompt + answer + 4 * (DEFAULT_DOC_TOKENS + DOC_SLACK_TOKENS)


def test_the_context_is_capped_by_the_model_and_the_document_cap_follows_it():
    settings = JudgeSettings(model="m", k=10)
    plan = plan_context(settings, COUNTER, model_context=8192)
    assert plan.max_model_len == 8192 and MIN_DOC_TOKENS <= plan.max_doc_tokens < DEFAULT_DOC_TOKENS
    used = plan.prompt_tokens + plan.answer_tokens + 10 * (plan.max_doc_tokens + DOC_SLACK_TOKENS)
    assert 8192 - 10 < used <= 8192  # the cap uses the room the context leaves, no more


def test_a_given_context_and_cap_are_kept_when_they_fit():
    plan = plan_context(JudgeSettings(model="m", k=5, max_model_len=7000, max_doc_tokens=300), COUNTER, 8192)
    assert (plan.max_model_len, plan.max_doc_tokens, plan.model_context) == (7000, 300, 8192)


@pytest.mark.parametrize("settings, match", [
    (JudgeSettings(model="m", k=60), r"K=60 documents at 64 tokens each do not fit: a \d+-token prompt"),
    (JudgeSettings(model="m", max_model_len=4000), r"over the context of 4000 \(the model's own: 8192\)"),
    (JudgeSettings(model="m", max_doc_tokens=900), r"K=10 documents at 900 tokens each do not fit"),
    (JudgeSettings(model="m", max_model_len=9000), r"judge.max_model_len 9000 is above the judge model's own context of 8192"),
])
def test_a_judge_that_cannot_fit_k_documents_is_refused_with_its_numbers(settings, match):
    with pytest.raises(UserError, match=match):
        plan_context(settings, COUNTER, model_context=8192)


def test_verification_needs_no_more_room_than_it_is_given():
    with_verify = fixed_prompt_tokens(JudgeSettings(k=10, verify_max_tokens=6000), COUNTER)
    without = fixed_prompt_tokens(JudgeSettings(k=10, verify=False, verify_max_tokens=6000), COUNTER)
    assert with_verify[1] == 6000 and without[1] == 3072  # the larger need sets the plan


def test_real_criteria_keep_the_planned_cap_and_longer_ones_lower_it():
    settings = JudgeSettings(model="m", k=10)
    plan = plan_context(settings, COUNTER, model_context=8192)
    assert doc_tokens_for(plan, settings, COUNTER, JUDGE_CRITERIA) == plan.max_doc_tokens
    long = ("word " * 2000).strip()
    wordy = type(JUDGE_CRITERIA)(metadata=JUDGE_CRITERIA.metadata, metrics=JUDGE_CRITERIA.metrics,
                                 sentences=(("domain", long),))
    assert doc_tokens_for(plan, settings, COUNTER, wordy) < plan.max_doc_tokens


def test_documents_are_cut_by_tokens_with_a_mark():
    assert COUNTER.cut("one two three four five", 3) == "one two three [...]"
    assert COUNTER.cut("one two", 3) == "one two"
    assert COUNTER.count_prompt("one two three") == 5  # the fake's chat template adds two


def test_the_judge_cuts_every_document_to_its_token_cap():
    backend = ScriptedJudgeBackend(cluster=lambda r: json.dumps({"clusters": [{"members": [1, 2]}]}))
    settings = JudgeSettings(model="m", k=2, verify=False)
    plan = plan_context(settings, COUNTER, model_context=8192)
    judge = CriteriaJudge(backend, None, 0, JUDGE_CRITERIA, settings=settings, fit=(COUNTER, plan))
    text = " ".join(f"w{i}" for i in range(5000))
    [batch] = judge.cluster([[text, "short text"]])
    prompt = backend.generate_calls[0][0].prompt
    assert not batch.failed and f"w{plan.max_doc_tokens - 1} [...]" in prompt and f"w{plan.max_doc_tokens} " not in prompt
    assert judge.config.max_model_len == plan.max_model_len and judge.config.verify is False


def test_a_retry_after_a_cut_answer_stays_inside_the_context():
    class CutOnce:
        model = "m"

        def __init__(self):
            self.asked = []

        def generate(self, requests):
            self.asked += [r.max_tokens for r in requests]
            first = len(self.asked) == 1
            return [Result(id=r.id, text="{}" if not first else "{", finish_reason="length" if first else "stop",
                           num_prompt_tokens=5000, num_tokens=r.max_tokens if first else 2) for r in requests]

    backend = CutOnce()
    ask_all(backend, [Job("p", {}, lambda d: d)], stage="cluster", max_tokens=3072, temperature=0.0, seed=0,
            max_model_len=8192)
    assert backend.asked == [3072, 8192 - 5000]  # not 6144: prompt and answer must fit 8192


def test_score_reads_the_judge_section_then_set_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("judge: {model: a, k: 6, verify: false, num_criteria_calls: 3}\n")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a"}\n')
    args = cli.build_parser().parse_args(["score", str(corpus), "--judge", "llm", "--recipe", str(recipe),
                                          "--set", "judge.k=8", "--set", "judge.invalid_policy=keep",
                                          "--judge-model", "b"])
    from generator.cli_score import check_judge_args
    check_judge_args(args)
    s = args.settings
    assert (s.model, s.k, s.verify, s.num_criteria_calls, s.invalid_policy) == ("b", 8, False, 3, "keep")
    assert args.k == 8


def test_an_endpoint_flag_selects_the_openai_backend_and_its_reported_context(monkeypatch, tmp_path):
    from generator.cli_score import judge_settings
    args = cli.build_parser().parse_args(["score", str(tmp_path), "--judge", "llm", "--judge-model", "m",
                                          "--judge-endpoint", "http://h:8000/v1"])
    settings = judge_settings(args)
    assert (settings.backend, settings.endpoint) == ("openai", "http://h:8000/v1")

    class Reply:
        def json(self):
            return {"data": [{"id": "other", "max_model_len": 1}, {"id": "m", "max_model_len": 16384}]}

    monkeypatch.setattr("httpx.get", lambda url, timeout: Reply())
    assert served_context("http://h:8000/v1", "m") == 16384 and served_context("http://h:8000/v1", "x") == 0


def test_open_judge_opens_the_engine_with_the_planned_context(monkeypatch):
    fake_judge_model(monkeypatch, context=8192)
    opened = []
    monkeypatch.setattr("generator.backends.open_backend",
                        lambda kind, model, **o: opened.append((kind, model, o)) or ScriptedJudgeBackend(model=model))
    judge = open_judge("llm", settings=JudgeSettings(model="m", backend="ray", num_replicas=2))
    assert opened == [("ray", "m", {"max_model_len": 8192, "num_replicas": 2})]
    assert judge.max_doc_tokens == judge.fit[1].max_doc_tokens and judge.k == 10
    texts = [f"document {i} " * 50 for i in range(30)]
    judge.prepare(texts)
    assert judge.criteria is not None and np.isfinite(judge.max_doc_tokens)


def test_a_compact_answer_plans_a_shorter_prompt_and_is_checked():
    full = fixed_prompt_tokens(JudgeSettings(k=10), COUNTER)
    compact = fixed_prompt_tokens(JudgeSettings(k=10, answer="compact"), COUNTER)
    assert compact[0] < full[0] and compact[1] == full[1] == 3072
    with pytest.raises(UserError, match=r"judge.answer: 'short' is not allowed"):
        read_settings(None, {"answer": "short"}, "judge")
