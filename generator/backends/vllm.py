"""One in-process vLLM engine. The same code runs on vLLM's CPU build and its CUDA build."""
from __future__ import annotations

import json
import logging
import os
from typing import Sequence

from generator.backends.models import resolve_model
from generator.records import Request, Result, chat_messages, failed_result

log = logging.getLogger(__name__)


def has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch comes with vLLM
        return False


class VllmBackend:
    name = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, max_model_len: int = 2048,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.9, cpu_kvcache_gib: int = 2,
                 enforce_eager: bool = True, seed: int = 0):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("the vllm backend needs vLLM: run scripts/setup.sh (CPU build) or "
                              "pip install 'generator[gpu]'") from exc
        self.model = model
        gpu = has_gpu()
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_gib))
            # On CPU the engine core's busy loop in a separate process takes a whole core away
            # from the model; in-process with the single-process executor the same batch runs
            # about 1.8x faster on 2 cores (bench/bench_pipeline.py, BENCHMARKS.md).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if dtype == "auto" and not gpu:
            dtype = "float32"  # bf16 is slower than fp32 on CPUs without AVX512_BF16
        path = resolve_model(model)
        kwargs = dict(dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager, seed=seed,
                      tensor_parallel_size=tensor_parallel_size)
        if gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            # vLLM's CPU runner crashes ("CPU Generator does not use offset") when a request with
            # its own seed is prefilled in chunks; whole-prompt prefills keep per-request seeds.
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(8192, max_model_len),
                          distributed_executor_backend="uni")
        log.info("starting vLLM engine for %s (%s)", model, "GPU" if gpu else "CPU")
        self.llm = LLM(path, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = max_model_len

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        results: list[Result | None] = [None] * len(requests)
        batch, positions, params = [], [], []
        for i, r in enumerate(requests):
            messages = chat_messages(r)
            problem = self._check_length(messages, r)
            if problem:
                results[i] = failed_result(r, problem)
                continue
            structured = (StructuredOutputsParams(json=json.loads(r.json_schema), disable_any_whitespace=True)
                          if r.json_schema else None)
            params.append(SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                         seed=r.seed, structured_outputs=structured))
            batch.append(messages)
            positions.append(i)
        if batch:
            try:
                outputs = self.llm.chat(batch, sampling_params=params, use_tqdm=False)
            except Exception as exc:  # the whole call failed: record it on every row
                log.exception("vLLM chat call failed")
                for i in positions:
                    results[i] = failed_result(requests[i], f"engine error: {exc}")
                return results  # type: ignore[return-value]
            for i, out in zip(positions, outputs):
                completion = out.outputs[0]
                results[i] = Result(id=requests[i].id, text=completion.text,
                                    finish_reason=completion.finish_reason or "stop",
                                    num_prompt_tokens=len(out.prompt_token_ids or []),
                                    num_tokens=len(completion.token_ids))
        return results  # type: ignore[return-value]

    def _check_length(self, messages: list[dict], r: Request) -> str | None:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        if len(ids) + 1 > self.max_model_len:
            return f"prompt has {len(ids)} tokens, over the model context of {self.max_model_len}"
        return None

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            import gc
            gc.collect()
