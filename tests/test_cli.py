"""What a user sees on the terminal: the CLI's own lines and bars, and no library output."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import SMALL_RECIPE, write_recipe

OUR_STDERR = ("recipe ", "preparing embedded:", "starting ray engine", "generating", "pilot round",
              "scoring", "writing the dataset card")


@pytest.mark.integration
def test_run_on_a_fresh_cache_shows_only_its_own_progress(tmp_path):
    """Model conversion, weight loading, vLLM and Ray banners (and Ray's token-auth warning)
    go to the log file; the terminal gets the run's own lines and progress bars."""
    recipe = write_recipe(tmp_path, SMALL_RECIPE.replace("num_docs: 20, batch_size: 8", "num_docs: 4, batch_size: 4")
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
