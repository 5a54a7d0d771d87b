"""The Jinja2 sandbox every template renders in: no file access, no attribute tricks, undefined
variables are errors, and hard limits on what one render may build or spend.

Limits per render (a breach raises `TemplateLimit`, which `templates.render_source` reports as
one line naming the template file and line):

- integers of at most `MAX_INT_BITS` bits from `**` and `*`;
- texts and lists of at most `MAX_VALUE_LEN` characters or items from `*`, `+`, `%`, calls,
  filters and namespace assignments, and at most `MAX_VALUE_LEN` characters of output;
- `range()` of at most `MAX_RANGE` numbers, and at most `MAX_LOOP_STEPS` loop iterations;
- size arguments (widths, counts) of filters and text methods of at most `MAX_SIZE_ARG`;
- `MAX_RENDER_S` seconds, checked at every loop step, call, filter and output chunk (no signals,
  so it holds in any thread, e.g. inside Ray actors).

Renders inside `time_budget(seconds)` also share that much wall time (the load-time check of a
recipe renders each template over many cells).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
import types
from typing import Any, Iterable, Iterator

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

MAX_RENDER_S = 2.0
MAX_VALUE_LEN = 2_000_000  # characters: room for a seed document of a long-context prompt
MAX_INT_BITS = 4096
MAX_RANGE = 10_000
MAX_LOOP_STEPS = 1_000_000
MAX_SIZE_ARG = 10_000
_LOOP_FILTER = "bounded_loop"  # wraps every {% for %} iterable (added when a template compiles)
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
# A %-format or str.format field with a width or precision of 5+ digits, or one taken from the arguments.
_WIDE_PERCENT = re.compile(r"%[-#0 +]*(\*|\d{5,}|\d*\.(\*|\d{5,}))")
_WIDE_FIELD = re.compile(r"\{[^{}]*:[^{}]*(\d{5,}|\{)")


_PASSED = (jinja2.runtime.Context, nodes.EvalContext, jinja2.Environment)  # what pass_context & co. add


class TemplateLimit(Exception):
    """A render went past one of the sandbox's limits."""


class _TimeBudget:
    """Wall time shared by a series of renders (see `time_budget`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.monotonic()
        self.deadline, self.done, self.done_at = self.start + seconds, 0, self.start

    def finish(self) -> None:
        """One render of the series finished."""
        self.done, self.done_at = self.done + 1, time.monotonic()

    def spent(self) -> TemplateLimit:
        per = f"{(self.done_at - self.start) / self.done:.2g}" if self.done else f"more than {self.seconds:g}"
        return TemplateLimit(f"renders too slowly for a corpus ({per} s per render: "
                             f"{self.done} render(s) and the next used up the {self.seconds:g} s "
                             "that checking it at load may take)")


_SHARED: contextvars.ContextVar[_TimeBudget | None] = contextvars.ContextVar("shared_budget", default=None)


def in_time_budget() -> bool:
    """Whether renders now share a `time_budget` (each render then counts against it)."""
    return _SHARED.get() is not None


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Every render inside shares `seconds` of wall time (each still within MAX_RENDER_S): a
    render past it raises TemplateLimit saying how slowly the template renders."""
    token = _SHARED.set(_TimeBudget(seconds))
    try:
        yield
    finally:
        _SHARED.reset(token)


class _Budget:
    """What one render has spent: loop steps, against a deadline."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_S
        self.shared = _SHARED.get()
        self.steps = 0

    def spend(self, steps: int = 0) -> None:
        self.steps += steps
        if self.steps > MAX_LOOP_STEPS:
            raise TemplateLimit(f"more than {MAX_LOOP_STEPS} loop steps")
        now = time.monotonic()
        if now > self.deadline:
            raise TemplateLimit(f"took longer than {MAX_RENDER_S:g} s")
        if self.shared is not None and now > self.shared.deadline:
            raise self.shared.spent()


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _spend(steps: int = 0) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.spend(steps)


def _checked(value: Any, what: str) -> Any:
    """`value`, unless it is a text, list or integer beyond the limits."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"{what} makes an integer of more than {MAX_INT_BITS} bits")
    elif isinstance(value, (str, list, tuple, dict, set)) and len(value) > MAX_VALUE_LEN:
        raise TemplateLimit(f"{what} makes a value of {len(value)} characters or items "
                            f"(the limit is {MAX_VALUE_LEN})")
    return value


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse before computing what would be too large to compute at all."""
    ints = all(isinstance(x, int) for x in (left, right))
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        if left.bit_length() * right > MAX_INT_BITS:
            raise TemplateLimit(f"'**' makes an integer of about {left.bit_length() * right} bits "
                                f"(the limit is {MAX_INT_BITS})")
    elif operator == "*" and ints:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise TemplateLimit(f"'*' makes an integer of more than {MAX_INT_BITS} bits")
    elif operator == "*":
        seq, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(count, int) and hasattr(seq, "__len__") and len(seq) * count > MAX_VALUE_LEN:
            raise TemplateLimit(f"'*' repeats a value to {len(seq) * count} characters or items "
                                f"(the limit is {MAX_VALUE_LEN})")
    elif operator == "%" and isinstance(left, str) and _WIDE_PERCENT.search(left):
        raise TemplateLimit(f"'%' formats with a width or precision above {MAX_SIZE_ARG - 1}")


def _check_sizes(name: str, args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_SIZE_ARG:
            raise TemplateLimit(f"{name}({arg}): sizes and counts may be at most {MAX_SIZE_ARG}")


def _check_method(obj: Any, args: tuple, kwargs: dict) -> None:
    """Text methods whose result can be far larger than their inputs."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(obj, types.BuiltinMethodType) or not isinstance(owner, str):
        return
    name = obj.__name__
    if name in _SIZED_METHODS:
        _check_sizes(name, [*args, *kwargs.values()])
    elif name == "join" and args and hasattr(args[0], "__len__"):
        _check_join(owner, args[0])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = owner.count(args[0]) if args[0] else len(owner) + 1
        if len(owner) + count * (len(args[1]) - len(args[0])) > MAX_VALUE_LEN:
            raise TemplateLimit(f"replace() makes a text of more than {MAX_VALUE_LEN} characters")


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(separator, str) and len(separator) * max(len(items) - 1, 0) > MAX_VALUE_LEN:
        raise TemplateLimit(f"join() makes a text of more than {MAX_VALUE_LEN} characters")


def _bounded_filter(name: str, func):
    """A filter that checks the render's budget, its size arguments and its result."""

    @functools.wraps(func)
    def bounded(*args, **kwargs):
        _spend()
        values = [a for a in (*args, *kwargs.values()) if not isinstance(a, _PASSED)]
        _check_sizes(f"the {name} filter", values[1:])  # values[0] is the filtered value
        if name == "join" and len(values) > 1 and hasattr(values[0], "__len__"):
            _check_join(values[1], values[0])
        if name == "format" and values and isinstance(values[0], str) and _WIDE_PERCENT.search(values[0]):
            raise TemplateLimit(f"the format filter with a width or precision above {MAX_SIZE_ARG - 1}")
        return _checked(func(*args, **kwargs), f"the {name} filter")

    return bounded


def _loop_steps(iterable: Any) -> Iterator[Any]:
    """Every {% for %} iterates through this: each step is counted against the render's budget."""
    for item in iterable:
        _spend(1)
        yield item


def _range(*args: int) -> Iterable[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimit(f"range() of {len(numbers)} numbers (the limit is {MAX_RANGE})")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if not 0 <= n <= 100 or not 0 <= max <= 1000:
        raise TemplateLimit("lipsum() of more than 100 paragraphs or 1000 words each")
    return generate_lorem_ipsum(n, html, min, max)


class _BoundedNamespace(Namespace):
    """`namespace()`, whose assigned values are held to the same limits (a loop that doubles a
    text through `{% set ns.x = ns.x ~ ns.x %}` stops at the limit)."""

    def __setitem__(self, name: str, value: Any) -> None:
        _spend()
        super().__setitem__(name, _checked(value, f"setting {name}"))


def _concat(chunks: Iterable[str]) -> str:
    """The output of a render (or of a macro inside it), chunk by chunk within the limits; the
    outermost one starts the render's budget."""
    token = _BUDGET.set(_Budget()) if _BUDGET.get() is None else None
    try:
        out, size = [], 0
        for chunk in chunks:
            size += len(chunk)
            try:
                _spend()
                if size > MAX_VALUE_LEN:
                    raise TemplateLimit(f"writes more than {MAX_VALUE_LEN} characters")
            except TemplateLimit as exc:
                if hasattr(chunks, "throw"):
                    chunks.throw(exc)  # raised where the template stands, so the error names its line
                raise
            out.append(chunk)
        budget = _BUDGET.get()
        if token is not None and budget.shared is not None:
            budget.shared.finish()
        return "".join(out)
    finally:
        if token is not None:
            _BUDGET.reset(token)


class BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox with the limits of this module."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})
    concat = staticmethod(_concat)  # type: ignore[assignment]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.update(range=_range, lipsum=_lipsum, namespace=_BoundedNamespace)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP_FILTER] = _loop_steps

    def call_binop(self, context, operator, left, right):
        _spend()
        _check_binop(operator, left, right)
        return _checked(self.binop_table[operator](left, right), f"'{operator}'")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _spend()
        _check_method(__obj, args, kwargs)
        for arg in (*args, *kwargs.values()):
            _checked(arg, "an argument")
        return _checked(super().call(__context, __obj, *args, **kwargs), "a call")

    def wrap_str_format(self, value):
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map") \
                and _WIDE_FIELD.search(owner):
            raise TemplateLimit(f"{value.__name__}() with a width or precision above {MAX_SIZE_ARG - 1} "
                                "or taken from an argument")
        return super().wrap_str_format(value)

    def _generate(self, source, name, filename, defer_init=False):
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
        return super()._generate(source, name, filename, defer_init=defer_init)
