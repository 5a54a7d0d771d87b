"""The scripts in examples/ run in-process on the fakes (tests/fakes.py) through their `main`."""
from __future__ import annotations

import importlib.util

import pytest

import generator
from conftest import ROOT
from fakes import EchoBackend, KeyJudge, fake_embed
from generator.judges.embedding import EmbeddingJudge


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steered_grid_lands_within_tolerance(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("generator.measure.embeddings.embed_texts", lambda texts, **k: fake_embed(list(texts)))
    first_line = KeyJudge(lambda text: text.splitlines()[0])  # the echoed prompt: style and topic
    result = load_example("steered_grid").main(
        ["--out", str(tmp_path / "run"), "--target", "4", "--no-card",
         "--set", "size.num_docs=400", "--set", "target.pilot_docs=50", "--set", "target.num_rounds=3",
         "--set", "target.tolerance=1", "--set", "scoring.enabled=false",
         "--set", "dedup.exact=false", "--set", "dedup.near=false"],  # echoed prompts repeat words
        backend=EchoBackend(), judge=first_line)
    assert result.ok and result.num_docs == 400 and result.target.score == 4
    assert abs(result.target.achieved - 4) <= 1 == result.target.tolerance and result.target.within_tolerance
    shown = capsys.readouterr().out
    assert shown.startswith("start (400 documents)\npilot round 0") and "within tolerance" in shown


def test_score_corpora_ranks_the_bundled_corpora_on_one_ruler(capsys):
    judge = EmbeddingJudge(0.5, embed=lambda texts: fake_embed(list(texts)))
    reports = load_example("score_corpora").main(["--num-batches", "30"], judge=judge)
    assert len(reports) == 2 and {r.k for r in reports} == {10} and len({r.judge for r in reports}) == 1
    assert all(r.num_docs >= 10 and 0.1 <= r.score <= 10 for r in reports)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("judge embed:") and len(lines) == 3
    assert [float(line.split("D = ")[1].split()[0]) for line in lines[1:]] == \
           sorted((round(r.score, 3) for r in reports), reverse=True)


def test_examples_use_only_the_public_api():
    for path in (ROOT / "examples").glob("*.py"):
        text = path.read_text()
        assert "tests" not in text.replace("tests/", "") and "from generator." not in text, path
        assert "import generator\n" in text, path


@pytest.mark.parametrize("name", ["steered_grid", "score_corpora"])
def test_examples_print_their_usage(name, capsys):
    with pytest.raises(SystemExit) as done:
        load_example(name).main(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out
    assert generator.__all__  # the examples import the package's public names only
