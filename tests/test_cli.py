"""What a user sees on the terminal: the CLI's own lines and bars, and no library output."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import SMALL_RECIPE, write_recipe

OUR_STDERR = ("recipe ", "preparing embedded:", "starting ray engine", "generating", "pilot round",
              "scoring", "writing the dataset card", "warning: ")


@pytest.mark.integration
def test_run_on_a_fresh_cache_shows_only_its_own_progress(tmp_path):
    """Model conversion, weight loading, vLLM and Ray banners (and Ray's token-auth warning)
    go to the log file; the terminal gets the run's own lines and progress bars."""
    recipe = write_recipe(tmp_path, SMALL_RECIPE.replace("num_docs: 20, shard_rows: 8", "num_docs: 4, shard_rows: 4")
                          .replace("max_tokens: 32", "max_tokens: 24") + "keep_truncated: keep\n")
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env.update(GENERATOR_CACHE=str(cache), HOME=str(tmp_path / "home"), RAY_TMPDIR="/tmp/rq")
    done = subprocess.run([sys.executable, "-m", "generator.cli", "run", str(recipe), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    segments = [s.strip() for s in re.split(r"[\r\n]", done.stderr) if s.strip()]
    strays = [s for s in segments if not s.startswith(OUR_STDERR)]
    assert not strays, strays[:5]
    assert any(s.startswith("preparing embedded:smollm2-135m") for s in segments)  # the fresh cache converted
    assert any(s.startswith("generating") and "4/4" in s for s in segments)
    assert [l.split(" ")[0] for l in done.stdout.strip().splitlines()] == ["wrote", "dataset"]
    logs = list((cache / "logs").glob("run-*.log"))
    assert len(logs) == 1 and "converting SmolLM2-135M-Instruct" in logs[0].read_text()  # library output went there


def test_run_progress_follows_pilot_rounds_and_the_corpus(small_recipe, tmp_path, capsys):
    """Regression: the progress callback read fields of the older flat run state and crashed
    the quickstart after the first batch."""
    from fakes import EchoBackend, KeyJudge
    from generator import terminal
    from generator.recipe import load_recipe, pilot_size
    from generator.run import controller

    plan = load_recipe(small_recipe, ["size.num_docs=60", "size.shard_rows=10", "target.score=3",
                                      "target.pilot_docs=20", "target.num_rounds=1",
                                      "dedup.exact=false", "dedup.near=false"])
    seen = []
    bars = terminal.RunProgress(plan.recipe.size.num_docs, pilot_size(plan.recipe))

    def on_progress(state, flow):
        bars(state, flow)
        seen.append((bars.bar.desc, bars.bar.n, bars.bar.total))
        assert f"{flow.in_flight} in flight" in bars.bar.postfix
        assert (f"{flow.waiting} finished ahead of order" in bars.bar.postfix) == (flow.waiting > 0)
        assert flow.tokens_per_s > 0 or not (flow.waiting or state.counters.num_attempted)  # never 0 once results came

    try:
        backend = EchoBackend()
        backend.answer = 10
        controller.run(plan, tmp_path / "run", backend, on_progress=on_progress,
                       judge=KeyJudge(lambda text: text.splitlines()[0]))
    except controller.RunStopped:
        pass
    finally:
        bars.close()
    first = [n for desc, n, total in seen if desc == "pilot round 0" and total == 80]  # 4 points of 20
    assert first[0] == 0 and first[-1] == 80 and first == sorted(first) and 10 in first  # 10 answers per poll
    assert any(desc == "generating" and total == 60 for desc, _, total in seen)


def test_the_projects_warnings_reach_the_terminal_and_libraries_go_to_the_log(tmp_path):
    """Library output goes to the log file; a warning of the project's own (a controller
    warning such as a tolerance below the corpus's draw noise) is also shown on the terminal."""
    code = """
import logging
from generator.terminal import progress, quiet_libraries
with quiet_libraries(False, "run") as path:
    logging.getLogger("vllm.engine").warning("a library banner")
    bar = progress(total=10, desc="generating")
    bar.update(3)
    logging.getLogger("generator.run.rounds").warning("the tolerance is too narrow")
    logging.getLogger("generator.run.rounds").info("a detail")
    bar.close()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("generator.cli").exception("run failed")  # the CLI's error path: log file only
print(path)
"""
    env = {**os.environ, "GENERATOR_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    segments = [x.strip() for x in re.split(r"[\r\n]", done.stderr) if x.strip()]
    assert "warning: the tolerance is too narrow" in segments  # a line of its own, not inside the bar
    assert all(x.startswith(("generating", "warning: the tolerance")) for x in segments), segments
    log = open(done.stdout.strip().splitlines()[-1]).read()
    assert "a library banner" in log and "the tolerance is too narrow" in log and "a detail" in log
    assert "run failed" in log and "RuntimeError: boom" in log and "boom" not in done.stderr


def test_progress_off_a_terminal_is_a_few_plain_lines(monkeypatch):
    """In a log file (CI, a batch job) the bar is plain lines: one at the start, one per
    interval, one at the end; never the carriage-return redraws of a terminal bar."""
    import io
    from generator import terminal

    class Clock:
        now = 1000.0

        def __call__(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(terminal.time, "monotonic", clock)
    stream = io.StringIO()
    monkeypatch.setattr(terminal, "ERR", stream)
    monkeypatch.setenv("GENERATOR_PROGRESS_INTERVAL", "30")
    bar = terminal.progress(total=200, unit="doc", desc="generating")
    assert isinstance(bar, terminal.LineProgress)
    for step in range(100):  # 100 updates over 99 s: lines at 30, 60 and 90 s only
        bar.n = 2 * step
        bar.set_postfix_str(f"{step} tok/s, 3 failed")
        bar.refresh()
        clock.now += 1.0
    bar.n = 200
    bar.close()
    bar.close()  # a second close writes nothing
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "generating: 0/200 doc (0%), 00:00"
    assert lines[1] == "generating: 60/200 doc (30%), 00:30, 30 tok/s, 3 failed"
    assert len(lines) == 5 and lines[-1] == "generating: 200/200 doc (100%), 01:40, 99 tok/s, 3 failed"

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(terminal, "ERR", Tty())
    assert not isinstance(terminal.progress(total=3, desc="x"), terminal.LineProgress)  # a terminal gets tqdm


@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_a_bad_progress_interval_is_refused_before_any_work(value, small_recipe, tmp_path, monkeypatch, capsys):
    from generator import cli
    monkeypatch.setenv("GENERATOR_PROGRESS_INTERVAL", value)
    assert cli.main(["render", str(small_recipe), "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert f"GENERATOR_PROGRESS_INTERVAL={value!r}" in err and err.startswith("error: ")
