"""Corpus loading, `score_texts`, and the `generator score` / `generator calibrate` commands."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakes import fake_embed, fake_judge_model
from generator import cli
from generator.judges import open_judge
from generator.judges.embedding import DEFAULT_THRESHOLD
from generator.measure import report as scoring
from generator.readers import load_corpus
from generator.errors import UserError
from generator.judges.protocol import ScoreError
from generator.records import Result

ROWS = [{"text": f"document {i} about {'tides' if i % 2 else 'soup'}", "topic": "tides" if i % 2 else "soup",
         "style": ["essay", "poem", "recipe"][i % 3], "n": i} for i in range(24)]


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    monkeypatch.setattr("generator.measure.embeddings.embed_texts", fake_embed)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def check_loaded(texts, metadata):
    assert texts == [r["text"] for r in ROWS]
    assert metadata["topic"] == [r["topic"] for r in ROWS]
    assert set(metadata) == {"topic", "style"}  # the integer column is not metadata


def test_load_parquet_file(tmp_path):
    check_loaded(*load_corpus(write_parquet(tmp_path / "c.parquet", ROWS)))


def test_load_parquet_folder_recursively_in_order(tmp_path):
    write_parquet(tmp_path / "run" / "data" / "shard-00000.parquet", ROWS[:10])
    write_parquet(tmp_path / "run" / "data" / "shard-00001.parquet", ROWS[10:])
    (tmp_path / "run" / "summary.json").write_text("{}")
    check_loaded(*load_corpus(tmp_path / "run"))


def test_load_jsonl_with_missing_keys_and_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "a", "topic": "x"}) + "\n\n" + json.dumps({"text": "b"}) + "\n")
    texts, metadata = load_corpus(path)
    assert texts == ["a", "b"] and metadata == {"topic": ["x", ""]}


def test_load_saved_hf_dataset_and_single_split_dict(tmp_path):
    import datasets

    data = datasets.Dataset.from_list(ROWS)
    data.save_to_disk(str(tmp_path / "ds"))
    check_loaded(*load_corpus(tmp_path / "ds"))
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "dd"))
    check_loaded(*load_corpus(tmp_path / "dd"))
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(UserError, match=r"has splits \['test', 'train'\].*point at one split"):
        load_corpus(tmp_path / "two")


def test_load_custom_text_field(tmp_path):
    texts, metadata = load_corpus(write_jsonl(tmp_path / "c.jsonl", ROWS), text_field="topic")
    assert texts[:2] == ["soup", "tides"] and "text" in metadata


@pytest.mark.parametrize("name, content, message", [
    ("missing.parquet", None, "no such file or folder"),
    ("c.csv", "text\nhello\n", r"unknown corpus format '\.csv'"),
    ("c.jsonl", '{"body": "x", "topic": "y"}\n', r"no text field 'text'; available columns: body, topic.*--text-field"),
    ("c.jsonl", "\n\n", r"the corpus is empty \(0 documents\)"),
    ("c.jsonl", b'{"text": "caf\xe9"}\n', r"c\.jsonl:1: not valid UTF-8 \(byte 13\)"),
    ("c.jsonl", '{"text": "a"}\n{"text": \n', r"c\.jsonl:2: not JSON"),
    ("c.jsonl", '["text"]\n', r"c\.jsonl:1: expected a JSON object"),
    ("c.jsonl", '{"text": "a"}\n{"text": 5}\n', r"row 2: 'text' is int, not text"),
])
def test_bad_corpus_inputs_fail_with_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        load_corpus(path)
    assert "\n" not in str(info.value)


def test_empty_parquet_and_folder_without_parquet(tmp_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(UserError, match="the corpus is empty"):
        load_corpus(tmp_path / "empty.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder holds no .parquet files and no saved dataset"):
        load_corpus(tmp_path / "folder")


def test_score_texts_reports_score_proxies_shift_and_attribution():
    texts = [r["text"] for r in ROWS]
    metadata = {"topic": [r["topic"] for r in ROWS], "id": [str(i) for i in range(24)]}
    result = scoring.score_texts(texts, metadata, judge=open_judge("embed"), k=5, seed=1, num_batches=30, reference_texts=texts[:12])
    assert result["judge"].startswith("embed:") and result["k"] == 5 and result["num_scored"] == 30
    assert 0.2 <= result["score"] <= 5 and result["threshold"] == DEFAULT_THRESHOLD
    assert set(result["attribution"]["columns"]) == {"topic"}  # only grid columns are attributed
    assert "vendi" in result["proxies"] and "mmd2" in result["shift"]
    assert result["fidelity"]["num_docs"] == 24 and 0 <= result["fidelity"]["topic_share"] <= 1  # a topic column
    again = scoring.score_texts(texts, metadata, judge=open_judge("embed"), k=5, seed=1, num_batches=30, proxies=False)
    assert again["score"] == result["score"] and "proxies" not in again


def test_open_judge_llm_needs_a_model_and_knows_its_kinds():
    with pytest.raises(UserError, match="the llm judge needs a model"):
        open_judge("llm")
    with pytest.raises(UserError, match="unknown judge 'vibes'"):
        open_judge("vibes")


def parse(args, calibrate=False):
    return cli.build_parser().parse_args(["calibrate" if calibrate else "score", *(str(a) for a in args)])


def test_run_score_prints_a_table_and_writes_json(tmp_path, capsys):
    corpus = write_parquet(tmp_path / "c.parquet", ROWS)
    out = tmp_path / "report.json"
    assert cli.cmd_score(parse([corpus, "--k", 5, "--num-batches", 40, "--json", out, "--no-proxies"])) == 0
    printed = capsys.readouterr().out
    assert "diversity D" in printed and "most redundant cells" in printed and "topic=" in printed
    report = json.loads(out.read_text())
    assert report["num_scored"] == 40 and len(report["batches"]) == 40 and "attribution" in report


def test_run_score_k_too_large_names_the_fix(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", ROWS[:4])
    with pytest.raises(ScoreError, match=r"K=10 .* only 4 .*--k 4"):
        cli.cmd_score(parse([corpus, "--no-proxies"]))


def test_llm_judge_options_are_checked(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", ROWS)
    with pytest.raises(UserError, match="the llm judge needs a model"):
        cli.cmd_score(parse([corpus, "--judge", "llm"]))
    with pytest.raises(UserError, match="--judge-endpoint needs the name of the model"):
        cli.cmd_score(parse([corpus, "--judge", "llm", "--judge-endpoint", "http://localhost:1/v1"]))


class StageBackend:
    """Fake LLM backend answering each stage by the request id; records the stages it saw."""

    name, model = "fake", "fake-judge"

    def __init__(self):
        self.stages: list[str] = []
        self.closed = False

    def generate(self, requests):
        self.stages.extend(r.id.split("-")[0] for r in requests)
        return [Result(id=r.id, text=self.answer(r), finish_reason="stop", num_prompt_tokens=50, num_tokens=10)
                for r in requests]

    def answer(self, request) -> str:
        stage = request.id.split("-")[0]
        if stage == "criteria":
            return json.dumps({"metadata": [{"name": "domain", "definition": "subject"}],
                               "metrics": [{"name": "depth", "rubric": "1 shallow 5 deep"}]})
        if stage == "summary":
            return json.dumps({"items": [{"name": "domain", "definition": "subject area"}]})
        if stage == "sentences":
            names = json.loads(request.json_schema)["properties"]["criteria"]["required"]
            return json.dumps({"criteria": {name: f"Same {name}." for name in names}})
        if stage == "cluster":
            k = json.loads(request.json_schema)["properties"]["clusters"]["maxItems"]
            return json.dumps({"clusters": [{"cluster_id": 1, "members": [1, 2], "reason": "r"}]
                              + [{"cluster_id": i, "members": [i], "reason": "r"} for i in range(3, k + 1)]})
        return json.dumps({"1": {"reason": "alike", "valid": True}})

    def close(self):
        self.closed = True


def test_run_score_llm_writes_then_reuses_frozen_criteria(tmp_path, monkeypatch):
    backends = []
    fake_judge_model(monkeypatch)
    monkeypatch.setattr("generator.backends.open_backend",
                        lambda kind, model, **o: backends.append((kind, model, o, StageBackend())) or backends[-1][3])
    corpus = write_jsonl(tmp_path / "c.jsonl", ROWS)
    criteria, out = tmp_path / "crit" / "criteria.json", tmp_path / "r.json"
    args = [corpus, "--judge", "llm", "--judge-model", "some/model", "--criteria", criteria, "--k", 5,
            "--max-calls", 30, "--json", out, "--no-proxies"]
    assert cli.cmd_score(parse(args)) == 0
    assert criteria.exists() and "criteria" in backends[0][3].stages
    report = json.loads(out.read_text())
    assert report["stop_reason"] == "max_calls" and report["calls"] <= 30
    assert report["score"] == pytest.approx((5 - 1) ** 2 / 5) and report["criteria"]["criteria"]
    assert backends[0][:2] == ("vllm", "some/model") and backends[0][3].closed
    assert cli.cmd_score(parse(args + ["--judge-endpoint", "http://h:8000/v1"])) == 0
    assert "criteria" not in backends[1][3].stages  # frozen criteria were read, not regenerated
    assert backends[1][:3] == ("openai", "some/model", {"base_url": "http://h:8000/v1", "timeout_s": 600.0})


def test_run_calibrate_writes_threshold_and_curve(tmp_path, monkeypatch, capsys):
    fake_judge_model(monkeypatch)
    monkeypatch.setattr("generator.backends.open_backend", lambda kind, model, **o: StageBackend())
    corpus, out = write_jsonl(tmp_path / "c.jsonl", ROWS), tmp_path / "cal.json"
    args = parse([corpus, "--judge-model", "m", "--k", 5, "--num-batches", 8, "--json", out], calibrate=True)
    assert cli.cmd_calibrate(args) == 0
    result = json.loads(out.read_text())
    assert result["num_batches"] == 8 and result["llm_score"] == pytest.approx(16 / 5)
    assert 0.3 <= result["threshold"] <= 1.0 and len(result["curve"]) == 36
    assert "threshold" in capsys.readouterr().out


def test_score_run_writes_diversity_json(tmp_path):
    write_parquet(tmp_path / "data" / "shard-00000.parquet", ROWS)
    result = scoring.score_run(tmp_path, judge=open_judge("embed"), k=5, seed=0, num_batches=25, proxies=False)
    saved = json.loads((tmp_path / "diversity.json").read_text())
    assert saved["score"] == result["score"] and {"judge", "k", "score", "half_width"} <= set(saved)


def test_score_run_adds_the_corpus_fidelity_to_summary_json(tmp_path):
    write_parquet(tmp_path / "data" / "shard-00000.parquet", ROWS)
    (tmp_path / "summary.json").write_text(json.dumps({"num_docs": 24, "stopped": None}))
    scoring.score_run(tmp_path, judge=open_judge("embed"), k=5, seed=0, num_batches=25, proxies=False,
                      topics=["tides", "soup", "chess"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_docs"] == 24 and summary["fidelity"] == json.loads((tmp_path / "diversity.json").read_text())["fidelity"]
    assert summary["fidelity"]["num_docs"] == 24 and summary["fidelity"]["num_topics"] == 3
    styles = {g["value"]: g for g in summary["fidelity"]["groups"] if g["column"] == "style"}
    assert set(styles) == {"essay", "poem", "recipe"} and all(g["num_docs"] == 8 for g in styles.values())
    kept = {**summary, "fidelity": {"topic_share": 0.5}}  # a steered run's own measurement is kept
    (tmp_path / "summary.json").write_text(json.dumps(kept))
    scoring.score_run(tmp_path, judge=open_judge("embed"), k=5, seed=0, num_batches=25, proxies=False)
    assert json.loads((tmp_path / "summary.json").read_text())["fidelity"] == {"topic_share": 0.5}


def test_cli_turns_a_bad_corpus_into_exit_code_2(tmp_path, capsys):
    from generator.cli import main

    assert main(["score", str(tmp_path / "nope.parquet")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_several_corpora_are_scored_on_one_ruler_in_one_table_and_plot(tmp_path, capsys):
    one_topic = write_jsonl(tmp_path / "one.jsonl", [{"text": f"soup recipe number {i} with soup"} for i in range(30)])
    many = write_jsonl(tmp_path / "many.jsonl", [{"text": f"{w} {i}"} for i, w in enumerate(
        ["tides", "soup", "taxes", "chess", "glaciers", "violins"] * 5)])
    out, png = tmp_path / "cmp.json", tmp_path / "cmp.png"
    assert cli.cmd_score(parse([one_topic, many, "--k", 5, "--num-batches", 40, "--no-proxies",
                                "--json", out, "--plot", png])) == 0
    printed = capsys.readouterr().out
    assert "one ruler for every corpus" in printed and "one.jsonl" in printed and "many.jsonl" in printed
    corpora = json.loads(out.read_text())["corpora"]
    assert [c["corpus"] for c in corpora] == [str(one_topic), str(many)]
    assert corpora[0]["judge"] == corpora[1]["judge"] and corpora[0]["score"] < corpora[1]["score"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_needs_several_corpora(tmp_path):
    with pytest.raises(UserError, match="--plot compares several corpora"):
        cli.cmd_score(parse([write_jsonl(tmp_path / "c.jsonl", ROWS), "--plot", tmp_path / "p.png"]))


def test_a_steered_run_is_scored_at_the_end_on_the_target_s_ruler(tmp_path, root):
    """Regression: diversity.json was scored at the embedding judge's default cut (0.83) while
    recipes/moderate.yaml steers at target.threshold 0.6, so the two D's were on two rulers."""
    from generator.recipe import load_recipe

    plan = load_recipe(root / "recipes" / "moderate.yaml")
    write_parquet(tmp_path / "data" / "shard-00000.parquet", ROWS)
    result = scoring.score_finished_run(plan, tmp_path)
    saved = json.loads((tmp_path / "diversity.json").read_text())
    assert saved["ruler"] == {"settings_from": "target", "judge": "embed-subject", "threshold": 0.6, "k": 10}
    assert "L6-v2@0.6" in saved["judge"] and saved["k"] == 10 and saved["score"] == result["score"]


def test_the_end_of_run_ruler_is_the_scoring_s_without_a_target_of_that_judge(root):
    from types import SimpleNamespace as NS

    scoring_embed = NS(judge="embed", k=8)
    assert scoring.end_of_run_ruler(NS(target=None, scoring=scoring_embed)) == {
        "settings_from": "scoring", "judge": "embed", "threshold": 0.0, "k": 8}
    llm_target = NS(judge="llm", threshold=0.0, k=10)
    assert scoring.end_of_run_ruler(NS(target=llm_target, scoring=scoring_embed))["settings_from"] == "scoring"
    embed_target = NS(judge="embed", threshold=0.7, k=12)
    assert scoring.end_of_run_ruler(NS(target=embed_target, scoring=scoring_embed)) == {
        "settings_from": "target", "judge": "embed", "threshold": 0.7, "k": 12}
