"""Backends behind the one protocol in `generator.records`: `generate(requests) -> results`.

- `vllm`: one in-process `vllm.LLM` (CPU build on a laptop or CI, CUDA build on a GPU box).
- `ray`: a pool of Ray actors, each owning one vLLM engine; the default of `generator run`.
- `openai`: any OpenAI-compatible endpoint (`vllm serve`, hosted APIs).

Heavy imports (vllm, ray, requests) happen inside the chosen module only.
"""
from __future__ import annotations

from typing import Any

from generator.errors import UserError
from generator.records import Backend


def open_backend(kind: str, model: str, **options: Any) -> Backend:
    """Build a backend. `model` is a recipe model name (embedded aliases are resolved here).
    Options are the `Engine` fields of the recipe that apply to the kind."""
    if kind == "vllm":
        from generator.backends.vllm import VllmBackend
        return VllmBackend(model, **options)
    if kind == "ray":
        from generator.backends.ray import RayBackend
        return RayBackend(model, **options)
    if kind == "openai":
        from generator.backends.openai import OpenAIBackend
        return OpenAIBackend(model, **options)
    raise UserError(f"unknown backend {kind!r}", fix="use one of: ray, vllm, openai")


def engine_options(engine, kind: str | None = None) -> dict[str, Any]:
    """The recipe's `Engine` fields that the backend `kind` takes."""
    kind = kind or engine.backend
    local = dict(tensor_parallel_size=engine.tensor_parallel_size, max_model_len=engine.max_model_len,
                 dtype=engine.dtype, gpu_memory_utilization=engine.gpu_memory_utilization,
                 cpu_kvcache_gib=engine.cpu_kvcache_gib, enforce_eager=engine.enforce_eager,
                 max_num_seqs=engine.max_num_seqs)
    if kind == "vllm":
        return local
    if kind == "ray":
        return dict(local, num_replicas=engine.num_replicas)
    return dict(base_url=engine.base_url, api_key_env=engine.api_key_env,
                concurrency=engine.concurrency, timeout_s=engine.timeout_s,
                max_retries=engine.max_retries)
