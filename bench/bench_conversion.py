"""Time the embedded model's GGUF → safetensors conversion with and without `_gguf_read_once`.

    .venv/bin/python bench/bench_conversion.py --repeats 2

Each conversion runs in a fresh process (imports warm in the page cache, model not cached),
alternating plain and read-once; prints seconds per run and whether all runs wrote the same files.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import contextlib, json, sys, tempfile, time
from pathlib import Path
from generator.backends import models
import torch, transformers  # imported before the clock starts
if sys.argv[1] == "plain":
    models._gguf_read_once = contextlib.nullcontext
gguf = models._find_packaged_file(*models.EMBEDDED["embedded:smollm2-135m"][:2])
out = Path(tempfile.mkdtemp()) / "m"
start = time.perf_counter()
models._convert_gguf(gguf, out)
seconds = time.perf_counter() - start
files = json.loads((out / "generator-manifest.json").read_text())["files"]
print(json.dumps({"seconds": seconds, "files": files}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"plain": [], "read-once": []}
    manifests = []
    for _ in range(args.repeats):
        for mode in seconds:
            done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                                  check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            seconds[mode].append(round(result["seconds"], 1))
            manifests.append(json.dumps(result["files"], sort_keys=True))
    for mode, runs in seconds.items():
        print(f"{mode}: {runs} s")
    print("same files in every run:", len(set(manifests)) == 1)


if __name__ == "__main__":
    main()
