"""Jinja2 prompt templates, rendered in a sandbox with strict undefined variables.

A template file starts with a Jinja comment holding YAML that declares what it uses::

    {#
    variables: [topic, style_description, persona]
    num_topics: 1          # > 1 for multi-topic templates (they use `topics`)
    parts: topics          # optional, multi-topic only: one generation per topic, joined
    system: You are ...    # optional system message (a recipe's `system_prompt` replaces it)
    #}
    Write a {{ style }} about {{ topic }} ...

The declaration is checked against what the template really references, and against the
grid it is paired with, when the recipe loads: a mismatch is an error before any work starts.

A template with `parts: topics` is rendered once per topic of its cell, with `topic` set to
that part's topic, `part` to its number (1-based) and `num_parts` to k; each part is generated
as its own request and the document is the parts joined by blank lines (`backends.parts`).
A small model that cannot keep three subjects in one answer keeps one per answer.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError

from generator.errors import UserError
from generator.sampling.sandbox import MAX_VALUE_LEN, BoundedSandbox, TemplateLimit, in_time_budget
from generator.yamlfiles import load_yaml_text

_HEADER = re.compile(r"\A\s*\{#-?(.*?)-?#\}", re.DOTALL)
# Variables every template may use besides the grid's: set from the recipe, not from a cell.
RUN_VARIABLES = frozenset({"num_words"})
PART_VARIABLES = frozenset({"part", "num_parts"})  # set for each part of a `parts: topics` template
MAX_NUM_TOPICS = 20  # topics of one multi-topic document
WORDS_PER_TOKEN = 0.55  # asked length, in words, per token of max_tokens: leaves room to end at EOS


def words_for_tokens(max_tokens: int) -> int:
    """The length a template asks for (`num_words`), so that a document fits in `max_tokens`:
    about 0.74 words per token for English prose, less a margin, rounded to tens."""
    return max(10, int(round(max_tokens * WORDS_PER_TOKEN / 10.0)) * 10)


@functools.lru_cache(maxsize=1)
def sandbox() -> BoundedSandbox:
    """The one environment every template renders in: no file access, no attribute tricks,
    undefined variables are errors, hard limits per render (`sampling.sandbox`)."""
    return BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False,
                          keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Template:
    name: str  # file stem, stored in each row's `template` column
    path: str
    source: str
    variables: tuple[str, ...]
    num_topics: int = 1
    parts: bool = False  # one request per topic (`parts: topics`)
    system: str | None = None  # the system message of its requests, unless the recipe sets one

    def render(self, variables: dict[str, object]) -> str:
        return render_source(self.source, variables, where=self.path)

    def part_tokens(self, max_tokens: int) -> int:
        """The max_tokens of each request: the document's budget, shared by its parts."""
        return max(1, max_tokens // self.num_topics) if self.parts else max_tokens

    def prompts(self, variables: dict[str, object], max_tokens: int) -> list[str]:
        """The prompt of each request one cell makes: one, or one per topic for `parts: topics`
        (`num_words` sized to each request's share of max_tokens)."""
        base = {**variables, "num_words": words_for_tokens(self.part_tokens(max_tokens))}
        if not self.parts:
            return [self.render(base)]
        topics = list(variables["topics"])[: self.num_topics]  # type: ignore[call-overload]
        return [self.render({**base, "topic": t, "part": j + 1, "num_parts": len(topics)})
                for j, t in enumerate(topics)]


def render_source(source: str, variables: dict[str, object], *, where: str = "<string>") -> str:
    """Render in the sandbox; any failure of the template itself is a `UserError` naming the
    file and the template line."""
    pieces = _plain_pieces(source)
    if pieces is not None and not in_time_budget():
        text = _join_pieces(pieces, variables)
        if text is not None:
            return text.strip()
    try:
        return _compile(source).render(**variables).strip()
    except TemplateLimit as exc:
        raise UserError(f"{where}{_template_line(exc)}: the template went past the sandbox's limits: {exc}",
                        fix="simplify the expression or loop on that line; templates build prompts, "
                            "not large computations") from None
    except jinja2.UndefinedError as exc:
        raise _undefined_error(exc, where) from None
    except SecurityError as exc:
        raise UserError(f"{where}{_template_line(exc)}: the sandbox refused an unsafe operation ({exc})",
                        fix="use the declared variables with filters and loops only; attributes "
                            "starting with '_' are never allowed") from None
    except Exception as exc:  # noqa: BLE001 - any runtime error of a template is the template's fault
        raise UserError(f"{where}{_template_line(exc)}: template failed: {type(exc).__name__}: {exc}",
                        fix="fix the expression on that line (e.g. a filter applied to the wrong type)") from None


def _undefined_error(exc: jinja2.UndefinedError, where: str) -> UserError:
    """A missing variable, or an attribute the value lacks or the sandbox blocks."""
    attribute = re.search(r"has no attribute '(.*)'$", exc.message or "")
    at = f"{where}{_template_line(exc)}"
    if attribute and attribute.group(1).startswith("_"):
        return UserError(f"{at}: the sandbox blocks attribute {attribute.group(1)!r} (no attribute starting "
                         "with '_' is ever allowed)", fix="use the variable itself with filters, e.g. "
                         "{{ topic | upper }}")
    if attribute:
        return UserError(f"{at}: {exc.message}", fix="use the variable itself or a filter on it; grid "
                         "values are texts")
    return UserError(f"{at}: {exc.message}", fix="declare the variable and make sure the grid provides it")


def _template_line(exc: BaseException) -> str:
    """':LINE' of the innermost template frame in the traceback (Jinja maps frames to lines)."""
    line = ""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return sandbox().from_string(source)


_SPECIAL_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs"})  # Jinja gives these meaning


@functools.lru_cache(maxsize=256)
def _plain_pieces(source: str) -> tuple[tuple[bool, str], ...] | None:
    """A template made only of text and `{{ name }}` outputs, as (is a name, text or name) pieces;
    None for any other template (a filter, test, expression, tag or macro). Its compiled Jinja code
    yields each text and `str()` of each value in turn, which `_join_pieces` does directly."""
    pieces = []
    for node in sandbox().parse(source).body:
        if type(node) is not nodes.Output:
            return None
        for child in node.nodes:
            if type(child) is nodes.TemplateData:
                pieces.append((False, child.data))
            elif type(child) is nodes.Name and child.ctx == "load" and child.name not in _SPECIAL_NAMES:
                pieces.append((True, child.name))
            else:
                return None
    return tuple(pieces)


def _join_pieces(pieces: tuple[tuple[bool, str], ...], variables: dict[str, object]) -> str | None:
    """The render of a plain template, or None where Jinja must render it: a variable is missing
    (Jinja raises its error) or the text is past the sandbox's size limit (Jinja refuses it)."""
    try:
        text = "".join([str(variables[p]) if is_name else p for is_name, p in pieces])
    except Exception:  # noqa: BLE001 - Jinja renders it again and reports the failure
        return None
    return text if len(text) <= MAX_VALUE_LEN else None


def load_template(path: Path) -> Template:
    where = str(path)
    if not path.is_file():
        raise UserError(f"{where}: template file not found", fix="check the recipe's templates: paths")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text", fix="save the template as UTF-8") from None
    try:
        ast = sandbox().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{where}:{exc.lineno}: template syntax error: {exc.message}",
                        fix="fix the Jinja2 syntax") from None
    header = _HEADER.match(source)
    decl = {}
    if header:
        first_line = source.count("\n", 0, header.start(1)) + 1
        decl = load_yaml_text(header.group(1), where, first_line=first_line) or {}
    if not isinstance(decl, dict) or "variables" not in decl:
        raise UserError(f"{where}: missing declaration header",
                        fix="start the file with {# variables: [topic, ...] #}")
    declared = decl["variables"]
    if not isinstance(declared, list) or not all(isinstance(v, str) for v in declared):
        raise UserError(f"{where}: 'variables' must be a list of names", fix="variables: [topic, style]")
    used = meta.find_undeclared_variables(ast)
    if set(declared) != used:
        raise UserError(
            f"{where}: declared variables {sorted(declared)} differ from those used {sorted(used)}",
            fix="make the header's variables list match the template body")
    num_topics = decl.get("num_topics", 1)
    whole = isinstance(num_topics, int) and not isinstance(num_topics, bool)
    if not whole or not 1 <= num_topics <= MAX_NUM_TOPICS:
        raise UserError(f"{where}: num_topics must be a positive integer of at most {MAX_NUM_TOPICS}, got "
                        f"{str(num_topics)[:40]!r}", fix="num_topics: 3")
    parts = decl.get("parts")
    if parts not in (None, "topics"):
        raise UserError(f"{where}: parts must be 'topics' (one generation per topic), not {parts!r}",
                        fix="parts: topics, or leave it out")
    if parts and num_topics < 2:
        raise UserError(f"{where}: parts: topics needs num_topics of 2 or more", fix="num_topics: 3")
    if not parts and PART_VARIABLES & set(declared):
        raise UserError(f"{where}: uses {sorted(PART_VARIABLES & set(declared))} without parts: topics",
                        fix="add parts: topics to the header, or drop those variables")
    system = decl.get("system")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise UserError(f"{where}: system must be a non-empty text", fix="system: You are a careful writer.")
    return Template(name=path.stem, path=where, source=source, variables=tuple(sorted(declared)),
                    num_topics=num_topics, parts=bool(parts), system=system.strip() if system else None)


def check_template_against(template: Template, provided: set[str], grid_where: str) -> None:
    if template.parts and "topics" not in provided:
        raise UserError(f"{template.path}: parts: topics needs a topic axis, but the grid ({grid_where}) "
                        f"provides only {sorted(provided)}", fix="add a topic: axis to the recipe's grid")
    missing = sorted(set(template.variables) - provided - RUN_VARIABLES - PART_VARIABLES)
    if missing:
        raise UserError(
            f"{template.path}: uses {missing} but the grid ({grid_where}) provides only "
            f"{sorted(provided)}", fix="add the axis to the recipe's grid: or pick another template")
