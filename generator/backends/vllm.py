"""One vLLM engine, fed continuously. The same code runs on vLLM's CPU build and its CUDA build.

`submit` tokenizes the chat and queues the request; a stepping thread owns the engine: it adds
queued requests and calls `step()` while any are unfinished, so new requests join the running
batch as earlier ones finish (continuous batching, no barrier between calls). Each step hands
back the tokens and text every running request produced in it (vLLM's DELTA outputs): they are
counted at once (`generated_tokens`) and joined into the result when the request finishes.
Finished requests wait in an outbox that `poll` drains.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from generator.backends.models import resolve_model
from generator.records import Request, Result, chat_messages, failed_result, generate_all, take_finished

log = logging.getLogger(__name__)
IN_FLIGHT_FACTOR = 1.1  # requests kept submitted per engine, as a multiple of max_num_seqs


@dataclass
class Running:
    """A request inside the engine and what it has produced so far."""

    request: Request
    pieces: list[str] = field(default_factory=list)  # text of each step, in order
    num_tokens: int = 0


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags this machine's CPU reports (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_dtype(flags: frozenset[str]) -> str:
    """The CPU build's dtype for `dtype: auto`: bfloat16 where the CPU computes it natively
    (AVX512_BF16 or AMX), where SmolLM2-135M generates quickstart samples about 1.5x faster than
    in float32 (BENCHMARKS.md); float32 elsewhere, where bfloat16 is emulated and slower."""
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch comes with vLLM
        return False


def engine_options(model: str, *, tensor_parallel_size: int = 1, max_model_len: int = 2048,
                   dtype: str = "auto", gpu_memory_utilization: float = 0.9, cpu_kvcache_gib: int = 2,
                   enforce_eager: bool = True, max_num_seqs: int | None = None, seed: int = 0) -> tuple[str, dict]:
    """The model path and the `vllm.LLM` keyword arguments for these settings on this machine
    (also sets the CPU build's environment variables)."""
    gpu = has_gpu()
    if not gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_gib))
        # On CPU the engine core's busy loop in a separate process takes a whole core away
        # from the model; in-process with the single-process executor the same batch runs
        # about 1.8x faster on 2 cores (bench/bench_pipeline.py, BENCHMARKS.md).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if dtype == "auto" and not gpu:
        dtype = cpu_dtype(cpu_flags())
    # JSON answers (the LLM judge's) without free whitespace: vLLM reads this flag from the engine's
    # config, not from a request's StructuredOutputsParams, and a small model otherwise fills
    # its whole answer budget with newlines between JSON tokens.
    kwargs = dict(dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager, seed=seed,
                  tensor_parallel_size=tensor_parallel_size,
                  structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True})
    if max_num_seqs:
        kwargs["max_num_seqs"] = max_num_seqs
    if gpu:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    else:
        # vLLM's CPU runner crashes ("CPU Generator does not use offset") when a request with
        # its own seed is prefilled in chunks; whole-prompt prefills keep per-request seeds.
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(8192, max_model_len),
                      distributed_executor_backend="uni")
    return resolve_model(model), kwargs


class VllmBackend:
    name = "vllm"

    def __init__(self, model: str, **options):
        """`options`: the keyword arguments of `engine_options`. The engine is built and stepped
        in one thread: on CPU, torch ops from a second thread start a second OpenMP pool, and
        with more pool threads than cores every small op of a decode step waits on a sleeping
        worker (about 20% slower on 2 cores, BENCHMARKS.md)."""
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ImportError("the vllm backend needs vLLM: run scripts/setup.sh (CPU build) or "
                              "pip install 'generator[gpu]'") from exc
        self.model = model
        self.max_model_len = options.get("max_model_len", 2048)
        path, kwargs = engine_options(model, **options)
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._in_flight = 0
        self._generated = 0  # written by the stepping thread only
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._own_engine, args=(path, kwargs), name="vllm-step", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _own_engine(self, path: str, kwargs: dict) -> None:
        from vllm import LLM
        try:
            log.info("starting vLLM engine for %s (%s)", self.model, "GPU" if has_gpu() else "CPU")
            self.llm = LLM(path, **kwargs)
            self.engine = self.llm.llm_engine
            self.tokenizer = self.llm.get_tokenizer()
            self.max_num_seqs = self.engine.vllm_config.scheduler_config.max_num_seqs
        except BaseException as exc:  # raised again in __init__, in the caller's thread
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            self._step_forever()
        finally:
            del self.llm, self.engine
            import gc
            gc.collect()

    @property
    def capacity(self) -> int:
        return math.ceil(IN_FLIGHT_FACTOR * self.max_num_seqs)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def generated_tokens(self) -> int:
        """Completion tokens this engine has generated so far, running requests included."""
        return self._generated

    def submit(self, requests: Sequence[Request]) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        with self._lock:
            self._in_flight += len(requests)
        for r in requests:
            ids = self._prompt_ids(chat_messages(r))
            if len(ids) + 1 > self.max_model_len:
                self._outbox.put(failed_result(r, f"prompt has {len(ids)} tokens, over the model context of "
                                                  f"{self.max_model_len}"))
                continue
            structured = (StructuredOutputsParams(json=json.loads(r.json_schema), disable_any_whitespace=True)
                          if r.json_schema else None)
            params = SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                    seed=r.seed, structured_outputs=structured,
                                    output_kind=RequestOutputKind.DELTA)
            self._inbox.put((r, ids, params))

    def poll(self, timeout_s: float) -> list[Result]:
        out = take_finished(self._outbox, timeout_s)
        with self._lock:
            self._in_flight -= len(out)
        return out

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return generate_all(self, requests)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "input_ids") else ids)

    def _step_forever(self) -> None:
        live: dict[str, Running] = {}  # engine request id -> request and its output so far
        serial = 0
        while not self._closed.is_set():
            try:
                item = self._inbox.get(timeout=0.05) if not live else self._inbox.get_nowait()
            except queue.Empty:
                item = None
            while item is not None:
                request, ids, params = item
                serial += 1
                try:
                    self.engine.add_request(str(serial), {"prompt_token_ids": ids}, params)
                    live[str(serial)] = Running(request)
                except Exception as exc:  # a request the engine refuses fails alone
                    self._outbox.put(failed_result(request, f"engine refused the request: {exc}"))
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            if live:
                self._step(live)

    def _step(self, live: dict[str, Running]) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # the engine failed: every request it held fails, the engine stays up
            log.exception("vLLM engine step failed")
            self.engine.abort_request(list(live))
            for running in live.values():
                self._outbox.put(failed_result(running.request, f"engine error: {exc}"))
            live.clear()
            return
        for out in outputs:
            running = live.get(out.request_id)
            if running is None:
                continue
            piece = out.outputs[0]  # what this step added: the finished output carries only its last piece
            running.pieces.append(piece.text)
            running.num_tokens += len(piece.token_ids)
            self._generated += len(piece.token_ids)
            if not out.finished:
                continue
            del live[out.request_id]
            self._outbox.put(Result(id=running.request.id, text="".join(running.pieces),
                                    finish_reason=piece.finish_reason or "stop",
                                    num_prompt_tokens=len(out.prompt_token_ids or []),
                                    num_tokens=running.num_tokens))

    def close(self) -> None:
        self._closed.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout=30)
