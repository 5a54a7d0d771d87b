"""The public Python API: its names and signatures are a contract, and each function works on the
fake backend and judges (tests/fakes.py) with no engine, printing nothing."""
from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest

import generator
from conftest import ROOT, SMALL_RECIPE, write_recipe
from fakes import FakeBackend, KeyJudge

# Changing one of these is a breaking change for every user: update the docs and the version with it.
SIGNATURES = {
    "load_recipe": "(path: 'str | Path', overrides: 'Sequence[str]' = (), *, "
                   "resume_from: 'str | Path | None' = None) -> 'Plan'",
    "render": "(recipe: 'Plan | str | Path', n: 'int' = 5, *, start: 'int' = 0) -> 'tuple[Prompt, ...]'",
    "run": "(recipe: 'Plan | str | Path', out: 'str | Path', *, backend=None, judge=None, resume: 'bool' = False, "
           "force: 'bool' = False, score: 'bool' = True, card: 'bool' = True, "
           "on_progress: 'OnProgress | None' = None) -> 'RunResult'",
    "score": "(corpus: 'Corpus', *, ruler: 'Ruler' = Ruler(judge='embed', k=None, threshold=0.0, seed=0, "
             "num_batches=200, precision=None, max_calls=None, max_failure_share=None, settings=None, "
             "criteria=None, regenerate_criteria=False), judge=None, reference: 'Corpus | None' = None, "
             "proxies: 'bool' = True, text_field: 'str' = 'text', audit: 'str | Path | None' = None, "
             "judge_cache: 'str | Path | None' = None) -> 'DiversityReport'",
    "compare": "(corpora: 'Sequence[Corpus]', *, ruler: 'Ruler' = Ruler(judge='embed', k=None, threshold=0.0, "
               "seed=0, num_batches=200, precision=None, max_calls=None, max_failure_share=None, settings=None, "
               "criteria=None, regenerate_criteria=False), judge=None, reference: 'Corpus | None' = None, "
               "proxies: 'bool' = True, text_field: 'str' = 'text', audit: 'str | Path | None' = None, "
               "judge_cache: 'str | Path | None' = None) -> 'tuple[DiversityReport, ...]'",
    "calibrate": "(corpus: 'Corpus', *, ruler: 'Ruler', metric: 'str' = 'adjusted_rand', judge=None, "
                 "text_field: 'str' = 'text')",
    "export": "(run_dir: 'str | Path', out: 'str | Path', *, to: 'str', mix: 'Sequence[str]' = (), "
              "tokenizer: 'str | Path | None' = None, max_repetition: 'float | None' = None, "
              "total_tokens: 'int | None' = None, seed: 'int' = 0, text_field: 'str' = 'text') -> 'ExportResult'",
    "verify": "(run_dir: 'str | Path') -> 'VerifyResult'",
    "write_card": "(run_dir: 'str | Path') -> 'Path'",
}
RECORDS = {
    "Progress": "stage round done total tokens_per_s in_flight waiting num_failed pilot_points",
    "RunResult": "out num_docs completion_tokens tokens_per_s num_failed endings stopped diversity target card "
                 "rejected sources",
    "Coverage": "units per_source complete short not_reached",
    "Endings": "eos trimmed cut",
    "TargetOutcome": "score tolerance achieved ci_low ci_high within_tolerance pilot_rounds main_rounds "
                     "calibration_ratio reference_score reference_ci relative shift max_shift out_of_reach",
    "Ruler": "judge k threshold seed num_batches precision max_calls max_failure_share settings criteria "
             "regenerate_criteria",
    "DiversityReport": "corpus judge k num_docs score ci_low ci_high half_width cluster_ratio num_scored "
                       "num_failed stop_reason calls proxies shift_mmd2 _report",
    "Proxy": "name value",
    "Prompt": "index template id cell system prompt",
    "ExportResult": "out format total_tokens sources",
    "SourceWeight": "name kind num_docs tokens repetition requested_weight achieved_weight",
    "VerifyResult": "run_dir problems line",
}


def test_every_public_name_exists_with_its_signature():
    assert sorted(generator.__all__) == sorted([*SIGNATURES, *RECORDS, "Plan", "UserError"])
    for name, signature in SIGNATURES.items():
        assert str(inspect.signature(getattr(generator, name))) == signature, name
        assert getattr(generator, name).__doc__, name
    for name, fields in RECORDS.items():
        record = getattr(generator, name)
        assert dataclasses.is_dataclass(record) and record.__dataclass_params__.frozen, name
        assert " ".join(f.name for f in dataclasses.fields(record)) == fields, name
    assert dataclasses.is_dataclass(generator.Plan) and issubclass(generator.UserError, Exception)


def test_importing_generator_loads_no_engine_model_or_table_library():
    code = ("import sys, generator; heavy = {'vllm', 'ray', 'torch', 'sentence_transformers', 'datatrove', "
            "'pyarrow', 'transformers'}; print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_and_export_stay_functions_after_their_packages_are_imported():
    """Regression: the first import of the subpackage generator.run (or generator.export) rebound
    `generator.run` to the package, so `generator.run(...)` raised 'module object is not callable'."""
    import generator.export.formats  # noqa: F401
    import generator.run.controller  # noqa: F401
    assert inspect.isfunction(generator.run) and inspect.isfunction(generator.export)


@pytest.fixture
def plan(tmp_path):
    return generator.load_recipe(write_recipe(tmp_path, SMALL_RECIPE), ["size.num_docs=20"])


def test_render_draws_the_runs_samples_in_order(plan):
    prompts = generator.render(plan, 5)
    assert [p.index for p in prompts] == [0, 1, 2, 3, 4]
    assert generator.render(plan, 3, start=2) == prompts[2:]
    assert all(p.prompt and dict(p.cell)["topic"] for p in prompts)
    with pytest.raises(generator.UserError, match="must be >= 0"):
        generator.render(plan, -1)


def test_a_bad_recipe_raises_a_user_error_with_a_fix(tmp_path):
    with pytest.raises(generator.UserError, match="recipe file not found") as info:
        generator.load_recipe(tmp_path / "missing.yaml")
    assert info.value.fix


@pytest.fixture
def finished(plan, tmp_path):
    events = []
    result = generator.run(plan, tmp_path / "run", backend=FakeBackend(), card=False, on_progress=events.append)
    return result, events


def test_run_on_a_backend_of_ones_own_returns_its_counts_and_reports_progress(finished, tmp_path, capsys):
    result, events = finished
    assert result.ok and result.out == tmp_path / "run" and result.num_docs == 20
    assert result.endings.eos + result.endings.trimmed + result.endings.cut == 20
    assert result.diversity is None and result.target is None and result.card is None  # scoring off, no target
    assert len(list((tmp_path / "run" / "data").glob("shard-*.parquet"))) == 3  # shard_rows 8
    assert events[0].stage == "start" and events[0].total == 20
    assert "engine" not in {e.stage for e in events}  # the caller's backend: nothing opened
    done = [e.done for e in events if e.stage == "generate"]
    assert done == sorted(done) and done[-1] == 20 and {e.total for e in events[1:]} == {20}
    assert capsys.readouterr() == ("", "")  # the library prints nothing


def test_a_run_that_stops_says_why_instead_of_raising(plan, tmp_path):
    result = generator.run(plan, tmp_path / "run", backend=FakeBackend(fail_every=1), card=False)
    assert not result.ok and "fail" in result.stopped and result.num_docs == 0
    assert result.diversity is None and result.card is None


def test_run_refuses_a_non_empty_out_before_generating(plan, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    backend = FakeBackend()
    with pytest.raises(generator.UserError, match="--force"):
        generator.run(plan, tmp_path / "run", backend=backend)
    assert backend.calls == []


def test_score_and_compare_put_corpora_on_one_ruler(finished, tmp_path):
    result, _ = finished
    ruler = generator.Ruler(k=5, num_batches=30, seed=1)
    exact = KeyJudge(lambda text: text)
    report = generator.score(result.out, ruler=ruler, judge=exact, proxies=False)
    assert report.corpus == str(result.out) and report.num_docs == 20 and report.k == 5
    assert report.score == pytest.approx(5.0)  # every fake document differs: K clusters of one
    assert report.to_dict()["score"] == report.score and report.to_dict()["num_scored"] == report.num_scored
    same = ["one and the same text"] * 20
    diverse, collapsed = generator.compare([result.out, same], ruler=ruler, judge=exact, proxies=False)
    assert diverse.score == report.score and collapsed.corpus == "<texts>"
    assert collapsed.score == pytest.approx(1 / 5) and collapsed.cluster_ratio == pytest.approx(1 / 5)


def test_score_refuses_a_corpus_smaller_than_k():
    with pytest.raises(generator.UserError, match="corpus <texts>"):
        generator.score(["a", "b", "c"], ruler=generator.Ruler(k=10), judge=KeyJudge(len), proxies=False)


def test_verify_sees_an_intact_folder_and_a_damaged_one(finished):
    result, _ = finished
    intact = generator.verify(result.out)
    assert intact.ok and "intact: 3 shards, 20 documents" in intact.line
    (result.out / "manifest.json").write_text("{")
    damaged = generator.verify(result.out)
    assert not damaged.ok and damaged.problems[0].path == "manifest.json" and damaged.problems[0].repair


def test_export_writes_a_trainer_format_and_says_what_it_mixed(finished, tmp_path):
    result, _ = finished
    exported = generator.export(result.out, tmp_path / "export", to="datatrove")
    assert exported.format == "datatrove" and exported.total_tokens > 0
    [source] = exported.sources
    assert source.name == "run" and source.kind == "run" and source.num_docs == 20
    assert source.tokens == exported.total_tokens and source.achieved_weight == pytest.approx(1.0)
    assert (tmp_path / "export" / "recipe.yaml").is_file()


def test_score_of_a_steered_run_folder_reads_its_corpus_not_the_pilot_sweeps(tmp_path):
    """Regression: scoring a run folder read every Parquet file under it, the discarded sweep points
    in pilot/ included (2,195 documents for a 2,000-document corpus, D 1.77 instead of 1.60)."""
    from conftest import echo_recipe
    from fakes import EchoBackend, KeyJudge
    from generator.run import controller

    recipe = echo_recipe(tmp_path, "steered", 11, "{num_docs: 120, shard_rows: 30}",
                         "{score: 3.0, tolerance: 0.3, k: 5, pilot_docs: 20, num_rounds: 2, num_batches: 40}")
    judge = KeyJudge(lambda t: t.splitlines()[0])
    summary = controller.run(generator.load_recipe(recipe), tmp_path / "run", EchoBackend(), judge=judge)
    assert list((tmp_path / "run" / "pilot").rglob("*.parquet"))  # sweep points lie beside the corpus
    report = generator.score(tmp_path / "run", ruler=generator.Ruler(k=5, num_batches=20), judge=judge,
                             proxies=False)
    assert report.num_docs == summary["num_docs"] == 120
