"""The run loop on the fake backend: counts, order, schema, determinism, failures, folders."""
import json

import datasets
import pyarrow.parquet as pq
import pytest

from fakes import Crash, FakeBackend, TricklingBackend
from generator.records import failed_result
from generator.run import controller
from generator.errors import UserError
from generator.run.documents import trim_to_sentence
from generator.recipe import load_recipe
from generator.files import SCHEMA, read_documents

COLUMNS = ["id", "text", "prompt", "template", "domain", "topic", "persona", "style", "audience",
           "model", "backend", "temperature", "top_p", "max_tokens", "seed", "finish_reason",
           "num_tokens", "recipe_hash"]


def test_run_writes_requested_count_with_provenance(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    out = tmp_path / "run"
    summary = controller.run(plan, out, FakeBackend())
    table = read_documents(out)
    assert table.num_rows == 20 == summary["num_docs"]
    assert set(COLUMNS) <= set(table.column_names)
    assert len(set(table.column("id").to_pylist())) == 20
    assert set(table.column("recipe_hash").to_pylist()) == {plan.recipe_hash}
    assert table.column("sample_index").to_pylist() == list(range(20))
    assert (out / "recipe.resolved.yaml").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["num_docs"] == 20 and saved["completion_tokens"] > 0 and "tokens_per_s" in saved
    assert len(list((out / "data").glob("shard-*.parquet"))) == 3  # batches of 8, 8, 4
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"))["train"]
    assert loaded.num_rows == 20 and "text" in loaded.column_names


def test_provenance_lists_only_the_axes_a_template_used(small_recipe, tmp_path):
    controller.run(load_recipe(small_recipe), tmp_path / "run", FakeBackend())
    rows = read_documents(tmp_path / "run").to_pylist()
    for row in rows:
        if row["template"] == "textbook":
            assert row["persona"] == "" and row["style"] == "" and row["audience"] != ""
        else:
            assert row["persona"] != "" and row["style"] != "" and row["audience"] == ""
        assert row["topic"] and row["domain"]


def test_progress_rate_counts_tokens_of_requests_still_running(small_recipe, tmp_path):
    """Regression: the rate counted finished results only, so a fresh run on a slow engine showed
    0 tok/s for minutes while the engine generated."""
    seen = []
    controller.run(load_recipe(small_recipe), tmp_path / "run", TricklingBackend(),
                   on_progress=lambda state, flow: seen.append((state.counters.num_attempted, flow)))
    nothing_back = [flow for attempted, flow in seen if flow.in_flight and not attempted and not flow.waiting]
    assert len(nothing_back) >= TricklingBackend.first_result_poll - 1
    assert all(flow.tokens_per_s > 0 for flow in nothing_back)


def test_same_seed_same_prompts_and_ids(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    controller.run(plan, tmp_path / "a", FakeBackend())
    controller.run(plan, tmp_path / "b", FakeBackend())
    a, b = read_documents(tmp_path / "a"), read_documents(tmp_path / "b")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column("prompt").to_pylist() == b.column("prompt").to_pylist()
    other = load_recipe(small_recipe, ["seed=4"])
    controller.run(other, tmp_path / "c", FakeBackend())
    assert read_documents(tmp_path / "c").column("id").to_pylist() != a.column("id").to_pylist()


def test_failed_rows_are_recorded_and_replaced(small_recipe, tmp_path):
    plan = load_recipe(small_recipe, ["max_failure_rate=0.5"])
    out = tmp_path / "run"
    summary = controller.run(plan, out, FakeBackend(fail_every=5, empty_every=7))
    assert read_documents(out).num_rows == 20
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == summary["num_failed"] > 0
    assert {f["reason"] for f in failures} == {"simulated engine error", "empty answer"}
    assert summary["num_attempted"] == 20 + summary["num_failed"]
    ids = read_documents(out).column("id").to_pylist()
    assert not {f["id"] for f in failures} & set(ids)


def test_run_stops_past_the_failure_rate(small_recipe, tmp_path):
    plan = load_recipe(small_recipe, ["max_failure_rate=0.3"])
    with pytest.raises(controller.RunStopped, match=r"failure rate (4\d|50)\.\d%"):
        controller.run(plan, tmp_path / "run", FakeBackend(fail_every=2))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"] and summary["failure_rate"] == pytest.approx(0.5, abs=0.02)


def test_output_folder_rules(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    out = tmp_path / "run"
    controller.run(plan, out, FakeBackend())
    with pytest.raises(UserError, match="is a run of this recipe"):
        controller.run(plan, out, FakeBackend())
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and not a run of this recipe"):
        controller.run(plan, other, FakeBackend())
    with pytest.raises(UserError, match="cannot resume"):
        controller.run(plan, other, FakeBackend(), resume=True)
    controller.run(plan, out, FakeBackend(), force=True)
    assert read_documents(out).num_rows == 20


class CrashingFake(FakeBackend):
    """Answers three requests per poll, newest first, and dies (like a killed process) on poll n."""

    answer, reverse = 3, True

    def __init__(self, crash_on_poll: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.crash_on_poll, self.polls = crash_on_poll, 0

    def poll(self, timeout_s):
        self.polls += 1
        if self.polls == self.crash_on_poll:
            raise Crash()
        return super().poll(timeout_s)

    def generate(self, requests):  # a request fails by its own seed, whatever the order of calls
        return [failed_result(r, "simulated engine error") if r.seed % 6 == 0 else result
                for r, result in zip(requests, super().generate(requests))]


def corpus(out):
    table = read_documents(out)
    failures = (out / "failures.jsonl").read_text() if (out / "failures.jsonl").exists() else ""
    return table.column("id").to_pylist(), table.column("sample_index").to_pylist(), failures


@pytest.mark.parametrize("crash_on_poll", [2, 4, 6, 7])
def test_a_crash_at_any_moment_then_resume_gives_the_uninterrupted_corpus(small_recipe, tmp_path, crash_on_poll):
    plan = load_recipe(small_recipe, ["size.shard_rows=4", "max_failure_rate=0.5"])
    controller.run(plan, tmp_path / "full", CrashingFake())
    out = tmp_path / "run"
    with pytest.raises(Crash):
        controller.run(plan, out, CrashingFake(crash_on_poll))
    state = out / "state.json"
    assert not state.exists() or json.loads(state.read_text())["counters"]["num_docs"] < 20  # it came mid-run
    controller.run(plan, out, CrashingFake(), resume=True)
    assert corpus(out) == corpus(tmp_path / "full")
    ids, indices, failures = corpus(out)
    assert len(ids) == 20 == len(set(ids)) and indices == sorted(indices) and failures


def test_results_out_of_order_give_the_same_corpus(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    controller.run(plan, tmp_path / "a", FakeBackend())
    shuffled = FakeBackend()
    shuffled.answer, shuffled.reverse = 5, True
    controller.run(plan, tmp_path / "b", shuffled)
    assert corpus(tmp_path / "a") == corpus(tmp_path / "b")


def test_manifest_lists_every_shard_with_its_index_range(small_recipe, tmp_path):
    out = tmp_path / "run"
    controller.run(load_recipe(small_recipe, ["size.shard_rows=6"]), out, FakeBackend())
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [6, 6, 6, 2] and manifest["rows"] == 20
    assert [s["name"] for s in manifest["shards"]] == sorted(p.name for p in (out / "data").glob("shard-*.parquet"))
    assert manifest["shards"][1]["first_index"] == 6 and manifest["shards"][-1]["last_index"] == 19


def test_parquet_schema_matches_the_document_record(small_recipe, tmp_path):
    controller.run(load_recipe(small_recipe), tmp_path / "run", FakeBackend())
    shard = sorted((tmp_path / "run" / "data").glob("*.parquet"))[0]
    assert pq.read_schema(shard).remove_metadata() == SCHEMA


def test_truncated_answers_become_failed_rows_when_not_kept(small_recipe, tmp_path):
    # The fake answers 40 words; max_tokens 32 cuts every answer, so every row fails and the
    # run stops on the failure rate, computed over attempted rows.
    plan = load_recipe(small_recipe, ["keep_truncated=false"])
    with pytest.raises(controller.RunStopped, match=r"failure rate 100.0% \(\d+/\d+ rows\)"):
        controller.run(plan, tmp_path / "run", FakeBackend())
    failures = [json.loads(l) for l in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert {f["reason"] for f in failures} == {"truncated at max_tokens (32 tokens)"}
    kept = controller.run(load_recipe(small_recipe, ["keep_truncated=keep"]), tmp_path / "kept", FakeBackend())
    assert kept["num_truncated"] == 20 and kept["num_trimmed"] == 0 and kept["num_failed"] == 0


def test_truncated_answers_are_trimmed_to_their_last_sentence_by_default(small_recipe, tmp_path):
    summary = controller.run(load_recipe(small_recipe), tmp_path / "run", FakeBackend())
    assert summary["num_trimmed"] == 20 and summary["num_truncated"] == 0 and summary["num_failed"] == 0
    assert summary["endings"] == {"eos": 0, "trimmed": 20, "cut": 0}
    table = read_documents(tmp_path / "run")
    assert set(table.column("finish_reason").to_pylist()) == {"trimmed"}
    for text in table.column("text").to_pylist():
        assert text.endswith(".") and len(text.split()) == 28  # 32 words cut back to 4 sentences of 7


def test_truncation_policy_accepts_the_yes_no_form_and_rejects_others(small_recipe):
    assert load_recipe(small_recipe, ["keep_truncated=true"]).recipe.keep_truncated == "keep"
    assert load_recipe(small_recipe, ["keep_truncated=false"]).recipe.keep_truncated == "drop"
    with pytest.raises(UserError, match=r"keep_truncated: 'cut' is not allowed \(fix: use one of \['trim', 'keep', 'drop'\]"):
        load_recipe(small_recipe, ["keep_truncated=cut"])


@pytest.mark.parametrize("text, expected", [
    ("One. Two three", "One."),
    ("He said \"stop.\" Then she", "He said \"stop.\""),
    ("Is it? Yes! And then", "Is it? Yes!"),
    ("Steps:\n1. Mix the flour\n2. Add", ""),
    ("Mix it.\n1. Stir well.\n2. Add", "Mix it.\n1. Stir well."),
    ("It rose in 2020. Then it fell in", "It rose in 2020."),
    ("Use tools, e.g. a saw and", ""),
    ("Ends well.", "Ends well."),
    ("no sentence end at all", ""),
])
def test_trim_to_sentence(text, expected):
    assert trim_to_sentence(text) == expected


def test_no_pickle_in_the_package(root):
    for path in (root / "generator").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path


def test_resolved_recipe_reruns_to_the_same_hash_and_prompts(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    controller.run(plan, tmp_path / "a", FakeBackend())
    again = load_recipe(tmp_path / "a" / "recipe.resolved.yaml")
    assert again.recipe_hash == plan.recipe_hash
    controller.run(again, tmp_path / "b", FakeBackend())
    assert read_documents(tmp_path / "b").column("id").to_pylist() == \
        read_documents(tmp_path / "a").column("id").to_pylist()


def test_resume_of_a_folder_with_an_older_layout_is_refused(small_recipe, tmp_path):
    plan = load_recipe(small_recipe)
    out = tmp_path / "run"
    controller.run(plan, out, FakeBackend())
    old = json.loads((out / "state.json").read_text())
    del old["layout"]  # a folder written by the batch loop
    (out / "state.json").write_text(json.dumps(old))
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(UserError, match=r"state.json: written by an older layout of generator.*new --out"):
        controller.run(plan, out, FakeBackend(), resume=True)
    assert sorted(p.name for p in out.rglob("*")) == before
