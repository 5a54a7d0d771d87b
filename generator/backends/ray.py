"""A pool of Ray actors, each owning one streaming vLLM engine.

On a GPU cluster each actor takes `tensor_parallel_size` GPUs; on a machine without GPUs the
actors are CPU-only and share the cores. `ray.init()` starts a local Ray or joins the cluster
named by `RAY_ADDRESS`. `submit` hands each request to the ready actor with the most free room
(each engine holds about 1.1 × its `max_num_seqs`); every actor with work keeps one `take`
call open, which returns as soon as some of its requests finish, with its engine's running count
of generated tokens. An actor that dies is replaced; the requests it held go to the other actors
and to its replacement once that is up.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable, Sequence

from generator.backends.models import resolve_model
from generator.errors import UserError
from generator.records import Request, Result, failed_result, generate_all

log = logging.getLogger(__name__)
TAKE_WAIT_S = 1.0  # how long one open `take` waits inside an actor before returning empty
# after its first result, how long a `take` goes on gathering: a few results per call instead of
# one keeps the driver's calls (about a millisecond of its CPU each) well below one per document
TAKE_GATHER_S = 0.1
START_TIMEOUT_S = 900.0  # how long a run with no engine left waits for a replacement to start
CONNECT_TIMEOUT_S = 5.0  # how long RAY_ADDRESS may take to accept a connection
FIX_ADDRESS = "start it with `ray start --head`, correct RAY_ADDRESS, or unset it for a local Ray"


class EngineActor:
    """Runs inside a Ray worker process; owns one streaming `VllmBackend`."""

    def __init__(self, model: str, options: dict[str, Any]):
        from generator.backends.vllm import VllmBackend
        self.backend = VllmBackend(model, **options)
        self.beside: Callable[[list[Result]], list[Result]] | None = None

    def set_beside(self, beside: Callable[[list[Result]], list[Result]] | None) -> None:
        """What to do to results here before returning them (see `generator.run.beside`)."""
        self.beside = beside

    def capacity(self) -> int:
        return self.backend.capacity

    def submit(self, requests: list[Request]) -> None:
        self.backend.submit(requests)

    def take(self, wait_s: float, gather_s: float = 0.0) -> tuple[list[Result], int]:
        """The results finished since the last call (waiting up to `wait_s` for the first, then
        `gather_s` more for others), and the tokens the engine has generated so far, running
        requests included."""
        results = gather(self.backend.poll, wait_s, gather_s)
        return (self.beside(results) if self.beside else results), self.backend.generated_tokens

    def pid(self) -> int:
        return os.getpid()


def gather(poll: Callable[[float], list[Result]], wait_s: float, gather_s: float) -> list[Result]:
    """What `poll` returns within `wait_s`, and, once something came, what else it returns
    within `gather_s` of that."""
    out = poll(wait_s)
    deadline = time.monotonic() + gather_s
    while out and (left := deadline - time.monotonic()) > 0:
        out += poll(left)
    return out


def cpu_share(cpus: float, num_replicas: int) -> int:
    """The cores each of `num_replicas` CPU engines reserves."""
    return max(1, int(cpus // num_replicas))


def engine_threads(cpus: float, num_replicas: int) -> str:
    """OpenMP threads of each CPU engine: the user's OMP_NUM_THREADS, else its share of the cores."""
    return os.environ.get("OMP_NUM_THREADS") or str(cpu_share(cpus, num_replicas))


def check_ray_address(timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail at once when nothing accepts a connection at RAY_ADDRESS (host:port); `ray.init`
    retries for many minutes before giving up. "auto", "local" and unset are left to Ray."""
    address = os.environ.get("RAY_ADDRESS", "")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at RAY_ADDRESS={address!r} ({type(exc).__name__})",
                        fix=FIX_ADDRESS) from None


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local Ray on this machine's cores."""
    import ray
    if ray.is_initialized():
        return
    check_ray_address()
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(log_to_driver=False)
        else:
            # Ray runs its workers at niceness 15 by default, so on a shared machine (or beside
            # the driver) an engine actor loses its cores to anything else and stalls its
            # OpenMP threads; the engines are the work, so they run at the driver's priority.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise UserError(f"cannot reach the Ray cluster at RAY_ADDRESS={address!r} ({type(exc).__name__})",
                        fix=FIX_ADDRESS) from None


class RayBackend:
    name = "ray"

    def __init__(self, model: str, *, num_replicas: int = 1, tensor_parallel_size: int = 1,
                 max_attempts: int = 3, actor_class: type | None = None, **engine: Any):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the ray backend needs Ray: pip install 'generator[ray]'") from exc
        self.model = model
        self.max_attempts = max_attempts
        init_ray()
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        self._options = dict(
            num_gpus=tensor_parallel_size if gpus else 0,
            num_cpus=0 if gpus else cpu_share(cpus, num_replicas),
            max_restarts=0, max_concurrency=4,
            runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                                      "OMP_NUM_THREADS": engine_threads(cpus, num_replicas)}},
        )
        self._actor_class = actor_class or EngineActor
        self._engine = (dict(engine, tensor_parallel_size=tensor_parallel_size) if actor_class is None
                        else engine)
        self.actors = [self._start_actor() for _ in range(num_replicas)]
        if not gpus and actor_class is None:
            self._prepare_beside_actors(model)
        self._capacity = ray.get([a.capacity.remote() for a in self.actors])  # waits until every engine is up
        self._starting: dict[Any, int] = {}  # capacity ref of a replacement -> slot
        # slot -> id -> [request, attempt, copies]
        self._held: list[dict[str, list]] = [{} for _ in self.actors]
        self._load = [0] * len(self.actors)  # slot -> copies held (the sum of its entries' copies)
        self._takes: dict[Any, int] = {}  # open take ref -> slot
        self._failed: list[Result] = []  # given up here, returned by the next poll
        self._tokens = [0] * len(self.actors)  # slot -> tokens its engine reported generating
        self._tokens_of_dead = 0  # tokens generated by engines that died
        self.restarts = 0
        # called with the actor slot after requests go out
        self.on_submit: Callable[[int], None] | None = None
        self._beside: Callable | None = None  # done to results inside each actor (`set_beside`)

    def _prepare_beside_actors(self, model: str) -> None:
        """Convert an embedded model here while the actors start (a process each, and vLLM's
        imports): an actor's own `resolve_model` waits on the conversion's lock. A conversion that
        fails stops the actors and raises its own error."""
        import ray
        try:
            resolve_model(model)
        except BaseException:
            for actor in self.actors:
                ray.kill(actor)
            raise

    def _start_actor(self):
        import ray
        return ray.remote(self._actor_class).options(**self._options).remote(self.model, self._engine)

    def set_beside(self, beside: Callable[[list[Result]], list[Result]] | None) -> None:
        """Have every actor (and every replacement) apply `beside` to its results before returning
        them: per-document work done beside the engines, off the driver. Picklable by reference.
        Returns once every running actor holds it: an actor runs several calls at once, so a
        `submit` sent after an unanswered `set_beside` could reach its engine first."""
        import ray
        self._beside = beside
        starting = set(self._starting.values())
        running = [a for slot, a in enumerate(self.actors) if slot not in starting]
        for ref in [a.set_beside.remote(beside) for a in running]:
            try:
                ray.get(ref, timeout=START_TIMEOUT_S)
            except ray.exceptions.RayActorError:
                pass  # a dead actor is replaced at its next take, and the replacement gets `beside`

    @property
    def capacity(self) -> int:
        return sum(self._capacity)

    @property
    def in_flight(self) -> int:
        return sum(self._load) + len(self._failed)

    @property
    def generated_tokens(self) -> int:
        """Tokens the engines have generated, as of each actor's last `take` (one returns at
        least every `TAKE_WAIT_S` while the actor holds requests)."""
        return self._tokens_of_dead + sum(self._tokens)

    def submit(self, requests: Sequence[Request]) -> None:
        self._assign([(r, 1) for r in requests])

    def _assign(self, items: list[tuple[Request, int]]) -> None:
        ready = [slot for slot in range(len(self.actors)) if slot not in self._starting.values()]
        if not ready:
            raise RuntimeError("no engine actor is up")
        batches: dict[int, list[Request]] = {}
        for request, attempt in items:
            slot = max(ready, key=lambda s: (self._capacity[s] - self._load[s], -s))
            self._load[slot] += 1
            entry = self._held[slot].setdefault(request.id, [request, attempt, 0])
            entry[2] += 1
            batches.setdefault(slot, []).append(request)
        for slot, batch in batches.items():
            self.actors[slot].submit.remote(batch)
            if slot not in self._takes.values():
                self._takes[self.actors[slot].take.remote(TAKE_WAIT_S, TAKE_GATHER_S)] = slot
            if self.on_submit is not None:
                self.on_submit(slot)

    def poll(self, timeout_s: float) -> list[Result]:
        import ray

        out, self._failed = self._failed, []
        self._check_starting()
        if out or not self._takes:
            return out
        done, _ = ray.wait(list(self._takes), num_returns=1, timeout=timeout_s)
        if done:
            done, _ = ray.wait(list(self._takes), num_returns=len(self._takes), timeout=0)
        for ref in done:
            slot = self._takes.pop(ref)
            try:
                results, self._tokens[slot] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self._replace(slot, exc)
                continue
            for result in results:
                entry = self._held[slot].get(result.id)
                if entry is None:
                    continue
                entry[2] -= 1
                self._load[slot] -= 1
                if not entry[2]:
                    del self._held[slot][result.id]
                out.append(result)
            if self._held[slot]:
                self._takes[self.actors[slot].take.remote(TAKE_WAIT_S, TAKE_GATHER_S)] = slot
        out, self._failed = out + self._failed, []
        return out

    def _replace(self, slot: int, exc: Exception) -> None:
        """The actor in `slot` died: start a replacement and hand its requests on."""
        log.warning("engine actor %d died (%s); restarting it", slot, type(exc).__name__)
        held, self._held[slot], self._load[slot] = self._held[slot], {}, 0
        self._tokens_of_dead += self._tokens[slot]
        self._tokens[slot] = 0
        self.actors[slot] = self._start_actor()
        self._starting[self.actors[slot].capacity.remote()] = slot
        self.restarts += 1
        retry = []
        for request, attempt, copies in held.values():
            if attempt >= self.max_attempts:
                self._failed += [failed_result(request, f"engine actor died {attempt} times")] * copies
            else:
                retry += [(request, attempt + 1)] * copies
        if retry and len(self._starting) == len(self.actors):
            self._await_one_start()
        if retry:
            self._assign(retry)

    def _check_starting(self) -> None:
        import ray
        if self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
            for ref in ready:
                self._started(ref)

    def _await_one_start(self) -> None:
        """Every engine is down: wait for a replacement, and give up loudly when the cluster has
        no room for one (the run stops; committed documents stay, `--resume` continues)."""
        import ray
        ready, _ = ray.wait(list(self._starting), num_returns=1, timeout=START_TIMEOUT_S)
        if not ready:
            raise RuntimeError(f"no engine actor could be started within {START_TIMEOUT_S:.0f} s after "
                               "every engine died; the Ray cluster has no room for a replacement "
                               "(check `ray status`)")
        self._started(ready[0])

    def _started(self, ref) -> None:
        import ray
        slot = self._starting.pop(ref)
        try:
            self._capacity[slot] = ray.get(ref)
            if self._beside is not None:  # before the replacement gets any request
                ray.get(self.actors[slot].set_beside.remote(self._beside), timeout=START_TIMEOUT_S)
        except ray.exceptions.RayActorError as exc:
            self._replace(slot, exc)

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return generate_all(self, requests)

    def close(self) -> None:
        import ray
        for a in self.actors:
            ray.kill(a)
        self.actors = []
