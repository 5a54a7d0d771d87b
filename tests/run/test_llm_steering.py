"""Steering with an LLM judge: the embedding judge calibrated to it on the first pilot round
steers every round, the LLM judge confirms the finished corpus once, and a resumed run asks
the LLM judge nothing again. Documents echo their topic; the stand-in LLM judges group them
by topic with a known share of documents (2%) split off alone, and the fake embedder puts each
topic in its own direction."""
from __future__ import annotations

import json

import pytest

from conftest import ECHO_TEMPLATE, write_recipe
from fakes import JUDGE_CRITERIA, EchoBackend, ScriptedJudgeServer, SplittingJudge, TopicEmbed
from generator.recipe import load_recipe
from generator.run import controller

RECIPE = """
name: llm-steer
seed: 6
roots: [@ROOT@, {tmp}]
grid:
  topic: {tmp}/topics.yaml
  persona: @ROOT@/topics/personas.yaml
templates:
  - path: {tmp}/echo.j2
size: {{num_docs: {num_docs}, shard_rows: 200}}
target: {{score: {score}, tolerance: 0.3, pilot_docs: 100, judge: llm, llm_batches: 40, llm_share: {share}}}
judge: {{model: scripted-judge}}
scoring: {{enabled: false}}
"""


def make_plan(tmp_path, score=3.0, num_docs=800, share=0):
    """Forty topics, each with its hidden label for the scripted judge server."""
    topics = ", ".join(f'"subject {i} [label {i}]"' for i in range(40))
    (tmp_path / "topics.yaml").write_text(f"axis: topic\ndomains:\n  - name: All\n    topics: [{topics}]\n")
    (tmp_path / "echo.j2").write_text(ECHO_TEMPLATE)
    return load_recipe(write_recipe(tmp_path, RECIPE.format(tmp=tmp_path, num_docs=num_docs, score=score, share=share)))


def test_calibrated_steering_confirms_the_target_and_reports_judge_tokens(tmp_path):
    llm = SplittingJudge(0.02, name="llm", calls=2, tokens=(1000, 50))
    summary = controller.run(make_plan(tmp_path), tmp_path / "run", EchoBackend(), judge=llm, embed=TopicEmbed({}))
    calibration = json.loads((tmp_path / "run" / "calibration.json").read_text())
    confirmation = json.loads((tmp_path / "run" / "confirmation.json").read_text())
    assert calibration["num_batches"] == 40 and 20 <= calibration["offset_batches"] <= 40
    assert calibration["tokens"] == (40 + calibration["offset_batches"]) * 1050
    assert summary["target"]["judge"] == "llm" and summary["target"]["score"] == 3.0
    assert summary["target"]["embedding_score"] == pytest.approx(3.0 - calibration["offset"])
    assert summary["achieved"]["score"] != confirmation["score"]  # the embedding judge's D vs the LLM judge's
    assert confirmation["within_tolerance"] and abs(confirmation["score"] - 3.0) <= 0.3
    assert confirmation["ci_low"] <= confirmation["score"] <= confirmation["ci_high"]
    assert 20 <= confirmation["num_batches"] <= 40 and confirmation["tokens"] == confirmation["num_batches"] * 1050
    # the LLM judged nothing else
    assert llm.batches == calibration["num_batches"] + calibration["offset_batches"] + confirmation["num_batches"]
    cost = summary["cost"]
    assert cost["judge_tokens"] == calibration["tokens"] + confirmation["tokens"]
    assert cost["judge_ratio"] == pytest.approx(cost["judge_tokens"] / cost["corpus_tokens"])
    assert cost["pilot_docs"] == 100 * summary["rounds"]["pilot_points"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "controller.jsonl").read_text().splitlines()]
    assert rows[-1]["target"] == summary["target"]["embedding_score"]  # after the offset where the pilots ended
    assert rows[-1]["judge_tokens"] == calibration["tokens"]  # the embedding judge spends none

    again = SplittingJudge(0.02, name="llm", calls=2, tokens=(1000, 50))
    resumed = controller.run(make_plan(tmp_path), tmp_path / "run", EchoBackend(), judge=again, embed=TopicEmbed({}),
                             resume=True)
    assert again.batches == 0  # calibration and confirmation are read back, not asked again
    assert resumed["confirmation"] == summary["confirmation"]


def test_the_llm_share_sizes_each_use_of_the_llm_judge_from_what_is_left(tmp_path, caplog):
    """With llm_share each use is priced at the dearer of a guess (clustering and verification
    each showing K documents after a PROMPT_TOKENS prompt, here far above the 105 tokens the
    stand-in charges, so every use gets the minimum) and the batches measured so far; the
    LLM judge's tokens stay within the share of the corpus's estimated tokens."""
    from generator.run import calibration as cal
    from generator.run.rounds import read_corpus
    from generator.run.state import pilot_dir

    llm = SplittingJudge(0.02, name="llm", calls=2, tokens=(100, 5))
    with caplog.at_level("WARNING"):
        summary = controller.run(make_plan(tmp_path, share=0.5), tmp_path / "run", EchoBackend(), judge=llm,
                                 embed=TopicEmbed({}))
    record = json.loads((tmp_path / "run" / "calibration.json").read_text())
    confirmation = json.loads((tmp_path / "run" / "confirmation.json").read_text())
    estimate = record["corpus_tokens_estimate"]
    texts, _ = read_corpus(pilot_dir(tmp_path / "run", 0))
    assert estimate == pytest.approx(800 * sum(map(len, texts)) / len(texts) / cal.CHARS_PER_TOKEN)
    assert record["num_batches"] + record["num_failed"] == cal.MIN_LLM_BATCHES and "over the share" in caplog.text
    guess = 2 * (10 * estimate / 800 + cal.PROMPT_TOKENS)  # dearer than the 105 tokens a batch costs here
    assert record["tokens_per_batch"] == pytest.approx(guess)
    offset = record["offset_at_target"]["num_batches"] + record["offset_at_target"]["num_failed"]
    room = 0.5 * estimate - cal.MIN_LLM_BATCHES * 105
    assert offset <= max(cal.MIN_LLM_BATCHES, min(40, int(room // (2 * guess))))
    assert summary["cost"]["judge_tokens"] <= 0.5 * estimate
    assert llm.batches * 105 == summary["cost"]["judge_tokens"] == record["tokens"] + confirmation["tokens"]


def test_llm_batch_count_caps_shares_and_floors():
    from types import SimpleNamespace

    from generator.run.calibration import MIN_LLM_BATCHES, llm_batch_count

    t = SimpleNamespace(llm_batches=40, llm_share=0.05)
    assert llm_batch_count(t, 1e9, 0, 1000, 3) == 40  # plenty of room: the cap
    assert llm_batch_count(t, 1e6, 20_000, 1000, 1) == 30  # 50k share − 20k spent, one use left
    assert llm_batch_count(t, 1e6, 20_000, 1000, 2) == 15
    assert llm_batch_count(t, 1e5, 0, 1000, 3) == MIN_LLM_BATCHES  # 5k buys 1 per use: the floor
    assert llm_batch_count(SimpleNamespace(llm_batches=40, llm_share=0), 1e3, 1e6, 1000, 3) == 40  # no share


def test_a_confirmation_outside_tolerance_is_recorded_loudly(tmp_path, caplog):
    """An LLM judge that splits off far more documents than the calibration saw: the
    calibration sample cannot know, and the confirmation says so."""
    class Drifting(SplittingJudge):
        def cluster(self, batches):
            self.noise = 0.05 if self.batches < 80 else 0.6  # the calibration's batches, then a different ruler
            return super().cluster(batches)

    with caplog.at_level("WARNING"):
        summary = controller.run(make_plan(tmp_path), tmp_path / "run", EchoBackend(),
                                 judge=Drifting(0.05, name="llm"), embed=TopicEmbed({}))
    assert not summary["confirmation"]["within_tolerance"]
    assert summary["confirmation"]["score"] > 3.3
    assert "does not confirm the target" in caplog.text


def test_calibrated_steering_end_to_end_against_the_scripted_judge_server(tmp_path):
    """The real OpenAI-compatible backend on localhost: the server clusters by hidden label
    with 2% of documents split off; criteria are frozen for the study (given, not written)."""
    from generator.backends.openai import OpenAIBackend
    from generator.judges import CriteriaJudge
    from generator.judges.cache import CachedBackend
    from generator.judges.config import JudgeSettings

    with ScriptedJudgeServer(noise=0.02, seed=2) as server:
        backend = CachedBackend(OpenAIBackend(server.model, base_url=server.base_url, concurrency=8, max_retries=0),
                                tmp_path / "judge-cache.sqlite")
        judge = CriteriaJudge(backend, None, 6, JUDGE_CRITERIA, settings=JudgeSettings(model=server.model, k=10))
        summary = controller.run(make_plan(tmp_path, score=2.5, num_docs=1000), tmp_path / "run", EchoBackend(),
                                 judge=judge, embed=TopicEmbed({}))
        asked = server.num_requests
        backend.close()
    confirmation, calibration = summary["confirmation"], summary["calibration"]
    assert calibration["agreement"] > 0.5 and calibration["num_failed"] == 0
    # 40 paired batches measure the LLM judge's D to about ±0.25: its interval meets the tolerance band
    assert abs(confirmation["score"] - 2.5) <= 0.3 + confirmation["half_width"], confirmation
    # every request the server saw is in the two records (a batch judged twice is answered by the cache)
    assert calibration["calls"] <= asked <= calibration["calls"] + confirmation["calls"]
    assert summary["cost"]["judge_tokens"] == calibration["tokens"] + confirmation["tokens"] > 0
