"""Runs one CLI case under the fuzz invariants: `generator.cli.main(argv)` is called in a forked
child of the test process (so the fakes patched in by `fakes_installed` apply, and a render stuck
in C code can still be killed), its exit code, stderr and any uncaught exception come back.

The invariants (`check_outcome`): exit 0, or exit 2 with exactly one stderr line starting
`error: ` and every watched folder unchanged; never exit 1 (except a valid run stopped at its
failure or duplicate rate, RUN_STOPPED), never an uncaught exception, never
more than CASE_CPU_S seconds of CPU (CPU time, so a loaded machine does not fail a case; a
case blocked without using CPU is killed after CASE_WALL_S seconds)."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import resource
import select
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

CASE_CPU_S = 10
CASE_WALL_S = 30.0
CASE_MEMORY = 8 << 30  # bytes of address space: a case reading an endless file fails, not the machine
MAX_REQUESTS = 2000  # a valid recipe asking for more work than this is accepted, not run to its end
ACCEPTED = -1  # the exit code recorded when a case passed every check and hit MAX_REQUESTS
# `run` exits 1 with this line when a valid run stops at its failure or duplicate rate (the fake
# engine's answers, e.g. every one cut at max_tokens under keep_truncated: drop): a result, not a crash.
RUN_STOPPED = "error: run stopped: "


class WorkLimit(Exception):
    """The fake engine's request budget ran out: the recipe was valid and generation had begun."""


def budget_backend(*, answer: int = 0, crash_on_call: int = 0, **options):
    """FakeBackend that raises WorkLimit once MAX_REQUESTS requests were submitted, or on its
    `crash_on_call`-th batch (a run killed part way); `answer` results per poll (0: all)."""
    from fakes import FakeBackend

    class BudgetBackend(FakeBackend):
        def submit(self, requests):
            if self.seen + len(self.queue) + len(requests) > MAX_REQUESTS:
                raise WorkLimit(f"more than {MAX_REQUESTS} requests")
            super().submit(requests)

        def generate(self, requests):
            if len(self.calls) + 1 == crash_on_call:
                raise WorkLimit(f"killed on batch {crash_on_call}")
            return super().generate(requests)

    backend = BudgetBackend(**options)
    backend.answer = answer
    return backend


def quick_figure(fig, png: Path, **_) -> Path:
    """Stands in for `generator.figures.save_figure`: the figure is built, not drawn (drawing is
    most of a card's time and no invariant looks at pixels)."""
    from generator.figures import pyplot

    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(b"\x89PNG fuzz placeholder")
    pyplot().close(fig)
    return png


def warm_imports() -> None:
    """Import what the commands import, once in the parent, so a forked case does not pay for it."""
    import matplotlib.pyplot  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import scipy.cluster.hierarchy  # noqa: F401
    import tokenizers  # noqa: F401

    import generator.cli  # noqa: F401
    import generator.export.card  # noqa: F401
    import generator.export.card_plots  # noqa: F401
    import generator.export.formats  # noqa: F401
    import generator.measure.proxies  # noqa: F401
    import generator.measure.report  # noqa: F401
    import generator.run.controller  # noqa: F401
    import generator.run.plots  # noqa: F401
    import generator.run.verify  # noqa: F401


def one_blas_thread():
    """BLAS on one thread: on a machine shared by several jobs, threaded BLAS spins (a 384 x 384
    eigendecomposition takes seconds instead of milliseconds)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


@contextlib.contextmanager
def fakes_installed(**backend_options):
    """Every engine the CLI opens is a budgeted FakeBackend (`backend_options` passed on, e.g.
    words=39 to answer differently from the run that made a folder), embeddings are hashed
    bags of words, figures are not drawn, no model is converted and no Ray cluster is looked up."""
    from fakes import fake_embed

    warm_imports()
    module = importlib.import_module  # by module object: the package's API functions shadow some names
    with pytest.MonkeyPatch.context() as mp, one_blas_thread():
        for name in ("figures", "export.card_plots", "run.plots", "measure.report"):
            mp.setattr(module(f"generator.{name}"), "save_figure", quick_figure)
        mp.setattr(module("generator.backends"), "open_backend",
                   lambda kind, model, **o: budget_backend(**backend_options))
        mp.setattr(module("generator.terminal"), "prepare_model", lambda model: None)
        mp.setattr(module("generator.backends.ray"), "check_ray_address", lambda *a, **k: None)
        mp.setattr(module("generator.measure.embeddings"), "embed_texts",
                   lambda texts, **k: fake_embed(list(texts)))
        mp.setenv("GENERATOR_PROGRESS_INTERVAL", "3600")
        yield


@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    code: int | None  # None: it raised (see `error`) or hung
    stderr: str = ""
    error: str = ""  # the uncaught exception, with its innermost frames
    seconds: float = 0.0  # wall time
    hung: str = ""  # why it was killed: its CPU or wall time ran out
    note: str = ""  # why the fake engine stopped a valid case (WorkLimit)

    def describe(self) -> str:
        what = (f"hung ({self.hung}, {self.seconds:.0f} s wall)" if self.hung else
                f"raised {self.error}" if self.code is None else f"exit {self.code}")
        return f"generator {' '.join(self.argv)}\n  -> {what}\n  stderr: {self.stderr[:1500]!r}"


def _call_main(argv: list[str]) -> dict:
    from generator.cli import main

    err, out = io.StringIO(), io.StringIO()
    result: dict = {}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            result["code"] = main(argv)
    except WorkLimit as exc:
        result["code"], result["note"] = ACCEPTED, str(exc)
    except SystemExit as exc:  # argparse refusing an option exits 2 with its usage lines
        result["code"] = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - every escape is a finding
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames)
        result["error"] = f"{type(exc).__name__}: {str(exc)[:300]} [{where}]"
    result["stderr"] = err.getvalue()[:1_000_000]
    return result


def run_cli(argv: list[str], cpu_s: int = CASE_CPU_S, wall_s: float = CASE_WALL_S) -> Outcome:
    """`main(argv)` in a forked child, killed (and reported as hung) once it used `cpu_s` seconds
    of CPU or `wall_s` seconds of wall time."""
    read_end, write_end = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run, report, leave without running the parent's cleanup
        os.close(read_end)
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU ends it at cpu_s
            resource.setrlimit(resource.RLIMIT_AS, (CASE_MEMORY, CASE_MEMORY))
            payload = json.dumps(_call_main(argv)).encode()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, hung = [], ""
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            left = wall_s - (time.monotonic() - start)
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                hung = f"killed after {wall_s:g} s wall time"
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL) and not hung:
        hung = f"killed after {cpu_s} s of CPU"
    if hung:
        return Outcome(tuple(argv), None, seconds=seconds, hung=hung)
    data = json.loads(b"".join(chunks) or b'{"error": "the child died without a report"}')
    return Outcome(tuple(argv), data.get("code"), data.get("stderr", ""), data.get("error", ""), seconds,
                   note=data.get("note", ""))


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (relative), with a file's bytes or None for a folder."""
    if not folder.exists():
        return {}
    tree: dict[str, bytes | None] = {".": None if folder.is_dir() else folder.read_bytes()}
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            tree[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return tree


def changes(before: dict, after: dict) -> list[str]:
    """Paths added, removed or changed between two snapshots."""
    return sorted(p for p in set(before) | set(after) if before.get(p, ...) != after.get(p, ...))


def check_outcome(outcome: Outcome, watched: Path, before: dict) -> None:
    """The invariants every case meets; `watched` is the folder that must be unchanged on a refusal
    (snapshot `before` the command)."""
    assert not outcome.hung, outcome.describe()
    assert outcome.code is not None, outcome.describe()
    lines = outcome.stderr.strip().splitlines()
    stopped = outcome.code == 1 and bool(lines) and lines[-1].startswith(RUN_STOPPED)
    assert outcome.code in (0, 2, ACCEPTED) or stopped, outcome.describe()
    if outcome.code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), outcome.describe()
        assert "Traceback" not in outcome.stderr, outcome.describe()
        written = changes(before, snapshot(watched))
        assert not written, f"{outcome.describe()}\n  refused but changed: {written[:8]}"
