"""The terminal side of the CLI: progress bars and error lines on the terminal, everything
libraries print (model conversion, vLLM and Ray banners, warnings, child processes) in a log
file under the cache folder unless `-v` is given."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

ERR = None  # the terminal's stderr while quiet_libraries redirects; None: whatever sys.stderr is now


def err_stream():
    return ERR if ERR is not None else sys.stderr


def say(*lines: str) -> None:
    """A line on the terminal's stderr (progress and notes; results go to stdout)."""
    print(*lines, file=err_stream())


def line_interval() -> float:
    """Seconds between progress lines when stderr is not a terminal (a log file, CI, a batch
    job): `GENERATOR_PROGRESS_INTERVAL`, default 30."""
    raw = os.environ.get("GENERATOR_PROGRESS_INTERVAL", "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        from generator.errors import UserError
        raise UserError(f"GENERATOR_PROGRESS_INTERVAL={raw!r}: expected a number of seconds >= 0, e.g. 30")
    return value


class LineProgress:
    """Progress for a stream that is not a terminal: one plain line when it starts, at most one
    every `interval` seconds while it runs, and one when it closes, instead of a bar redrawn
    ten times a second (which fills a multi-hour job's log with carriage returns). Same fields
    as the tqdm bar it stands in for: desc, n, total, postfix, set_postfix_str, update, refresh,
    close."""

    def __init__(self, stream, desc: str, total: int | None = None, unit: str = "it", **_):
        self.desc, self.total, self.unit, self.n, self.postfix = desc, total, unit, 0, ""
        self.interval = line_interval()
        self.stream = stream
        self.start = self.last = time.monotonic()
        self.closed = False
        self._write()

    def line(self) -> str:
        from tqdm import tqdm
        elapsed = tqdm.format_interval(time.monotonic() - self.start)
        if self.total is None:
            return f"{self.desc}: {elapsed}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {elapsed}{extra}"

    def _write(self) -> None:
        self.last = time.monotonic()
        print(self.line(), file=self.stream, flush=True)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def refresh(self) -> None:
        if not self.closed and time.monotonic() - self.last >= self.interval:
            self._write()

    def close(self) -> None:
        if not self.closed:
            self._write()
            self.closed = True


def progress(**kwargs):
    """A progress bar on the terminal (never in the library log); plain lines every
    `line_interval()` seconds when stderr is not a terminal."""
    stream = err_stream()
    if not getattr(stream, "isatty", lambda: False)():
        return LineProgress(stream=stream, **kwargs)
    from tqdm import tqdm
    return tqdm(file=stream, dynamic_ncols=True, disable=False, **kwargs)


@contextlib.contextmanager
def long_step(desc: str):
    """A live 'desc: elapsed' line for a step that reports no progress of its own."""
    bar = progress(desc=desc, total=None, bar_format="{desc}: {elapsed}")
    done = threading.Event()

    def tick():
        while not done.wait(1.0):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


def prepare_model(model: str) -> None:
    """Convert the embedded model once (about 20 s), with its own progress line."""
    from generator.backends.models import is_prepared, resolve_model
    if model.startswith("embedded:") and not is_prepared(model):
        with long_step(f"preparing {model} (once)"):
            resolve_model(model)


class RunProgress:
    """One bar per pilot round and one for the main corpus, fed by the run loop's callback."""

    def __init__(self, num_docs: int, pilot_docs: int):
        self.num_docs, self.pilot_docs = num_docs, pilot_docs
        self.bar, self.key = None, None

    def __call__(self, state, in_flight: int = 0, waiting: int = 0) -> None:
        from generator.results import progress_of
        self.show(progress_of(state, in_flight, waiting, num_docs=self.num_docs, pilot_docs=self.pilot_docs))

    def show(self, p) -> None:
        """Draw one `generator.results.Progress` of a pilot round or of the corpus."""
        key = (p.stage, p.round)
        if key != self.key:
            self.close()
            self.key = key
            desc = f"pilot round {p.round}" if p.stage == "pilot" else "generating"
            self.bar = progress(total=p.total, unit="doc", desc=desc)
        self.bar.n = p.done
        ahead = f", {p.waiting} finished ahead of order" if p.waiting else ""  # committed later, in order
        self.bar.set_postfix_str(f"{p.tokens_per_s:.0f} tok/s, {p.in_flight} in flight{ahead}, "
                                 f"{p.num_failed} failed")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def log_path_for(command: str) -> Path:
    """A fresh log file for this command under the cache folder (the newest 20 are kept)."""
    from generator.backends.models import cache_dir
    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-19]:
        old.unlink(missing_ok=True)
    return folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _on_real_terminal_fds() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False  # replaced streams (e.g. a test's capture): leave them alone


class _TerminalWarnings(logging.Handler):
    """Warnings as lines above any progress bar on `stream` (tqdm.write), not inside it. Only
    warnings: an error's traceback stays in the log file, and the CLI says the error itself."""

    def __init__(self, stream):
        super().__init__(logging.WARNING)
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno == logging.WARNING and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        tqdm.write(self.format(record), file=self.stream)


@contextlib.contextmanager
def quiet_libraries(verbose: bool, command: str):
    """Unless verbose, everything libraries write (vLLM and Ray banners, model loading,
    warnings, child processes' output) goes to a log file; the CLI's own lines and bars go to
    the terminal. Yields the log path (None when nothing is redirected)."""
    global ERR
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if verbose or not _on_real_terminal_fds():
        ERR = None
        yield None
        return
    path = log_path_for(command)
    for name, value in {"VLLM_CONFIGURE_LOGGING": "0", "TRANSFORMERS_VERBOSITY": "warning",
                        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "RAY_DEDUP_LOGS": "0"}.items():
        os.environ.setdefault(name, value)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    old_stdout = sys.stdout
    sys.stdout = open(saved_out, "w", buffering=1, encoding="utf-8", closefd=False)
    ERR = open(saved_err, "w", buffering=1, encoding="utf-8", closefd=False)
    logging.getLogger().setLevel(logging.INFO)  # the log file gets the details
    ours = _TerminalWarnings(ERR)  # the project's own warnings also reach the terminal
    ours.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("generator").addHandler(ours)
    try:
        yield path
    finally:
        logging.getLogger("generator").removeHandler(ours)
        sys.stdout.flush()
        ERR.flush()
        sys.stdout, ERR = old_stdout, None
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
