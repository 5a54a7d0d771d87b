"""A pool of Ray actors, each owning one vLLM engine.

On a GPU cluster each actor takes `tensor_parallel_size` GPUs; on a machine without GPUs the
actors are CPU-only and share the cores. `ray.init()` starts a local Ray or joins the cluster
named by `RAY_ADDRESS`. Requests are cut into chunks handed to whichever actor is free; results
come back in request order. An actor that dies is replaced and its chunk retried.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Sequence

from generator.backends.models import resolve_model
from generator.records import Request, Result, failed_result

log = logging.getLogger(__name__)


class EngineActor:
    """Runs inside a Ray worker process; owns one `VllmBackend`."""

    def __init__(self, model: str, options: dict[str, Any]):
        from generator.backends.vllm import VllmBackend
        self.backend = VllmBackend(model, **options)

    def generate(self, requests: list[Request]) -> list[Result]:
        return self.backend.generate(requests)

    def pid(self) -> int:
        return os.getpid()


class RayBackend:
    name = "ray"

    def __init__(self, model: str, *, num_replicas: int = 1, tensor_parallel_size: int = 1,
                 max_attempts: int = 3, chunks_per_replica: int = 1, **engine: Any):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the ray backend needs Ray: pip install 'generator[ray]'") from exc
        self.model = model
        self.max_attempts = max_attempts
        self.chunks_per_replica = chunks_per_replica
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=False)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        if not gpus:
            resolve_model(model)  # convert the embedded model once, before actors race for it
        cpus = ray.cluster_resources().get("CPU", 1)
        self._options = dict(
            num_gpus=tensor_parallel_size if gpus else 0,
            num_cpus=0 if gpus else max(1, int(cpus // num_replicas)),
            max_restarts=0,
            runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                                      "OMP_NUM_THREADS": str(max(1, int(cpus // num_replicas)))}},
        )
        self._engine = dict(engine, tensor_parallel_size=tensor_parallel_size)
        self.actors = [self._start_actor() for _ in range(num_replicas)]
        ray.get([a.pid.remote() for a in self.actors])  # wait until every engine is up
        self.restarts = 0
        self.on_submit: Callable[[int], None] | None = None  # called with the actor slot after each chunk goes out

    def _start_actor(self):
        import ray
        return ray.remote(EngineActor).options(**self._options).remote(self.model, self._engine)

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        import ray
        from ray.exceptions import RayActorError

        requests = list(requests)
        if not requests:
            return []
        size = math.ceil(len(requests) / (len(self.actors) * self.chunks_per_replica))
        pending = [(start, 1) for start in range(0, len(requests), size)]  # (chunk start, attempt)
        results: list[Result | None] = [None] * len(requests)
        running: dict[Any, tuple[int, int, int]] = {}  # ref -> (actor slot, start, attempt)
        free = list(range(len(self.actors)))
        while pending or running:
            while pending and free:
                start, attempt = pending.pop(0)
                slot = free.pop(0)
                ref = self.actors[slot].generate.remote(requests[start:start + size])
                running[ref] = (slot, start, attempt)
                if self.on_submit is not None:
                    self.on_submit(slot)
            done, _ = ray.wait(list(running), num_returns=1)
            slot, start, attempt = running.pop(done[0])
            try:
                results[start:start + size] = ray.get(done[0])
            except RayActorError as exc:
                log.warning("engine actor %d died (%s); restarting it", slot, type(exc).__name__)
                self.actors[slot] = self._start_actor()
                self.restarts += 1
                if attempt < self.max_attempts:
                    pending.append((start, attempt + 1))
                else:
                    results[start:start + size] = [failed_result(r, f"engine actor died {attempt} times")
                                                   for r in requests[start:start + size]]
            free.append(slot)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        import ray
        for a in self.actors:
            ray.kill(a)
        self.actors = []
