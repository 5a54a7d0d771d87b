"""The scripts in examples/ run in-process on the fakes (tests/fakes.py) through their `main`."""
from __future__ import annotations

import dataclasses
import importlib.util

import pytest

import generator
from conftest import ROOT
import pyarrow.parquet as pq

from fakes import EchoBackend, FakeBackend, KeyJudge, fake_embed
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


@pytest.mark.parametrize("name", ["steered_grid", "score_corpora", "rewrite_with_gates"])
def test_examples_print_their_usage(name, capsys):
    with pytest.raises(SystemExit) as done:
        load_example(name).main(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out
    assert generator.__all__  # the examples import the package's public names only


class ShortEveryThird(FakeBackend):
    """Every third answer is five words long: the minimum-length gate rejects it."""

    def generate(self, requests):
        out = super().generate(requests)
        return [dataclasses.replace(r, text=" ".join(r.text.split()[:5]), num_tokens=5) if self.seen_at(i) else r
                for i, r in enumerate(out, start=self.seen - len(out) + 1)]

    @staticmethod
    def seen_at(n: int) -> bool:
        return n % 3 == 0


def test_rewrite_with_gates_gives_every_passage_its_rewrites_after_replacing_rejections(tmp_path, capsys):
    result = load_example("rewrite_with_gates").main(
        ["--out", str(tmp_path / "run"), "--max-sources", "12", "--per-source", "2", "--no-card",
         "--set", "scoring.enabled=false", "--set", "quality.gopher_repetition=false",
         "--set", "quality.min_tokens=20", "--set", "dedup.near=false"],
        backend=ShortEveryThird(words=60))
    assert result.ok and result.num_docs == 24
    assert dict(result.rejected)["min_tokens"] >= 8  # a third of the first 24 tries, and of their retries
    assert result.sources == generator.Coverage(units=12, per_source=2, complete=12, short=0, not_reached=0)
    table = pq.read_table(tmp_path / "run" / "data")
    pairs = sorted(zip(table.column("source_id").to_pylist(), table.column("rewrite").to_pylist()))
    assert len(set(pairs)) == 24 and {r for _, r in pairs} == {0, 1}
    assert all(len(t.split()) >= 20 for t in table.column("text").to_pylist())
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("24 rewrites") and shown[2] == "sources: 12 of 12 with all 2 rewrites, 0 short, 0 not reached"
