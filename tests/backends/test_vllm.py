"""The real engine: vLLM's CPU build with the embedded SmolLM2-135M inside a local Ray actor.
One engine serves the whole session (fixture `ray_engine`); assertions are structural."""
import json

import datasets
import pytest

from generator.run import controller
from generator.recipe import load_recipe
from generator.records import Request
from generator.files import read_documents

pytestmark = pytest.mark.integration


def test_order_and_count_preserved_with_mixed_lengths(ray_engine):
    requests = [Request(id=f"r{i}", prompt=f"Say the number {i} and one fact about it.",
                        max_tokens=4 + 3 * (i % 5), seed=i) for i in range(12)]
    results = ray_engine.generate(requests)
    assert [r.id for r in results] == [q.id for q in requests]
    for q, r in zip(requests, results):
        assert r.ok, r.error
        assert 0 < r.num_tokens <= q.max_tokens
        assert r.num_prompt_tokens > 0
        if r.finish_reason == "length":
            assert r.num_tokens == q.max_tokens


def test_same_request_same_seed_same_text(ray_engine):
    """Whole-prompt prefills keep vLLM's per-request seeded sampling reproducible on CPU: in
    float32 (the session engine's dtype) a request's text does not depend on its batch. In
    bfloat16, `dtype: auto` on a CPU with AVX512_BF16, it may, as on GPUs
    (bench/bench_batch_invariance.py: 1 text in 12 batches in float32, 3 to 4 in bfloat16)."""
    req = Request(id="a", prompt="Describe a lighthouse in one sentence.", max_tokens=24,
                  temperature=1.0, seed=1234)
    other = Request(id="b", prompt="Name a colour.", max_tokens=8, seed=5)
    first = ray_engine.generate([req, other])[0]
    second = ray_engine.generate([other, req, other])[1]
    third = ray_engine.generate([other] * 5 + [req])[5]
    assert first.text == second.text == third.text and first.text


def test_json_schema_is_enforced(ray_engine):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"], "additionalProperties": False}
    res = ray_engine.generate([Request(id="j", prompt="What is 2 + 3? Reply in JSON.", max_tokens=20,
                                       temperature=0.0, json_schema=json.dumps(schema))])[0]
    assert res.ok
    assert isinstance(json.loads(res.text)["answer"], int)


def test_prompt_over_context_is_a_failed_row_not_a_crash(ray_engine):
    long = Request(id="long", prompt="word " * 3000, max_tokens=8)
    fine = Request(id="fine", prompt="Hello!", max_tokens=8)
    results = ray_engine.generate([long, fine])
    assert not results[0].ok and "over the model context" in results[0].error
    assert results[1].ok


def test_many_long_seeded_prompts_in_one_batch(ray_engine):
    # Regression: vLLM's CPU runner died with "CPU Generator does not use offset" when seeded
    # requests were prefilled in chunks (a batch of 50 quickstart prompts triggered it).
    requests = [Request(id=f"s{i}", prompt=("Explain tides. " * 30) + str(i), max_tokens=6, seed=i)
                for i in range(48)]
    results = ray_engine.generate(requests)
    assert all(r.ok for r in results), {r.error for r in results if not r.ok}


def test_run_on_the_real_engine_writes_loadable_parquet(small_recipe, tmp_path, ray_engine):
    plan = load_recipe(small_recipe, ["size.num_docs=12", "size.shard_rows=6", "sampling.max_tokens=24",
                                      "keep_truncated=keep"])
    out = tmp_path / "run"
    summary = controller.run(plan, out, ray_engine)
    table = read_documents(out)
    assert table.num_rows == 12 == summary["num_docs"]
    assert max(table.column("num_tokens").to_pylist()) <= 24
    assert set(table.column("backend").to_pylist()) == {"ray"}
    assert summary["tokens_per_s"] > 0
    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"))["train"]
    assert ds.num_rows == 12
    assert all(t.strip() for t in ds["text"])
    # Same recipe and seed: same prompts and ids on a second run.
    again = tmp_path / "again"
    controller.run(plan, again, ray_engine)
    assert read_documents(again).column("id").to_pylist() == table.column("id").to_pylist()


def test_answers_cut_at_max_tokens_are_trimmed_to_whole_sentences(small_recipe, tmp_path, ray_engine):
    plan = load_recipe(small_recipe, ["size.num_docs=8", "size.shard_rows=8", "sampling.max_tokens=40",
                                      "max_failure_rate=1.0"])
    summary = controller.run(plan, tmp_path / "run", ray_engine)
    table = read_documents(tmp_path / "run").to_pylist()
    assert summary["num_truncated"] == 0 and {r["finish_reason"] for r in table} <= {"stop", "trimmed"}
    trimmed = [r["text"] for r in table if r["finish_reason"] == "trimmed"]
    assert summary["num_trimmed"] == len(trimmed)
    assert all(t.rstrip("\"'”’)]*_")[-1] in ".!?" for t in trimmed)


def test_the_paper_multitopic_recipe_writes_one_document_from_three_real_answers(root, tmp_path, ray_engine):
    """`parts: topics` on the real engine: three requests per cell, one document of three
    parts; the prompt column shows the three prompts."""
    from generator.run.parts import PART_BREAK
    from generator.sampling.requests import PROMPT_BREAK

    plan = load_recipe(root / "recipes" / "paper" / "multitopic_style_persona.yaml",
                       ["size.num_docs=4", "sampling.max_tokens=150", "max_failure_rate=1.0",
                        "scoring.enabled=false"])
    summary = controller.run(plan, tmp_path / "run", ray_engine)
    rows = read_documents(tmp_path / "run").to_pylist()
    assert len(rows) == summary["num_docs"] == 4
    for row in rows:
        topics = row["topic"].split("; ")
        prompts = row["prompt"].split(PROMPT_BREAK)
        assert len(topics) == 3 and [t in p for t, p in zip(topics, prompts)] == [True] * 3
        assert row["max_tokens"] == 50 and row["num_tokens"] <= 150
        assert row["text"].count(PART_BREAK) >= 2 and row["finish_reason"] in ("stop", "trimmed")


@pytest.mark.slow  # an engine of its own in this process (every run above streams through the same path)
def test_streamed_steps_join_to_vllms_own_final_text_and_count_while_running(monkeypatch):
    """The in-process engine takes each step's new tokens (vLLM's DELTA outputs): joined, they
    give the text, token count and ending of vLLM's own `generate` (FINAL_ONLY) for the same
    seeds, and `generated_tokens` counts them before the requests finish."""
    from vllm import SamplingParams
    from generator.backends.vllm import VllmBackend
    from generator.records import chat_messages

    prompts = ["Describe a harbour at dawn.", "List three uses of copper.", "Why do leaves fall?"]
    requests = [Request(id=f"d{i}", prompt=p, max_tokens=12 + 8 * i, temperature=1.0, seed=70 + i)
                for i, p in enumerate(prompts)]
    backend = VllmBackend("embedded:smollm2-135m", max_model_len=512, max_num_seqs=4)
    try:
        before_steps, step = [], backend.engine.step

        def counted_step():
            before_steps.append(backend.generated_tokens)
            return step()

        monkeypatch.setattr(backend.engine, "step", counted_step)
        results = backend.generate(requests)
        monkeypatch.undo()
        # The backend is idle: its stepping thread waits on its inbox, so this thread may use the engine.
        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                 seed=r.seed) for r in requests]
        finals = backend.llm.generate([{"prompt_token_ids": backend._prompt_ids(chat_messages(r))}
                                       for r in requests], params, use_tqdm=False)
    finally:
        backend.close()
    total = sum(r.num_tokens for r in results)
    assert backend.generated_tokens == total > 0
    assert before_steps == sorted(before_steps) and any(0 < n < total for n in before_steps)
    for result, final in zip(results, finals):
        assert result.ok and result.text and result.text == final.outputs[0].text
        assert result.num_tokens == len(final.outputs[0].token_ids)
        assert result.finish_reason == final.outputs[0].finish_reason
        assert result.num_prompt_tokens == len(final.prompt_token_ids)


def test_an_engine_that_cannot_start_raises_in_the_caller():
    """The engine is built inside its stepping thread; a failure there is raised by the
    constructor, not lost in the thread."""
    from generator.backends.vllm import VllmBackend
    with pytest.raises(Exception, match="max_model_len|max_position_embeddings|context"):
        VllmBackend("embedded:smollm2-135m", max_model_len=10_000_000)


def test_a_rewrite_run_gives_every_real_passage_its_rewrites_on_the_real_engine(root, tmp_path, ray_engine):
    plan = load_recipe(root / "recipes" / "rewrite.yaml", ["source.max_sources=3", "source.per_source=2",
                                                           "sampling.max_tokens=32", "keep_truncated=keep"])
    out = tmp_path / "run"
    summary = controller.run(plan, out, ray_engine)
    rows = read_documents(out).to_pylist()
    assert len(rows) == 6 == summary["num_docs"] and summary["sources"]["complete"] == 3
    by_source: dict = {}
    for r in rows:
        by_source.setdefault(r["source_id"], []).append(r["rewrite"])
    assert len(by_source) == 3 and all(sorted(v) == [0, 1] for v in by_source.values())
    passages = {json.loads(line)["id"]: json.loads(line)["text"]
                for line in (root / "recipes" / "data" / "kjv" / "seeds.jsonl").read_text().splitlines()}
    assert all(passages[r["source_id"]][:40] in r["prompt"] for r in rows)  # each prompt carries its passage
    assert all(r["text"].strip() for r in rows)
    assert datasets.load_dataset("parquet", data_dir=str(out / "data"))["train"].num_rows == 6
