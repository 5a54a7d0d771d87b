"""Reference pages generated from the code at every docs build, so they cannot drift from it.

- reference/recipe.md: every field of `generator.recipe.Recipe` and of the records it holds
  (walked through the field types), with its type, its default and the comment written beside it
  in the source;
- reference/cli.md: the help of every `generator` subcommand, from the CLI's own parser;
- reference/api.md: one mkdocstrings block per name in `generator.__all__`, addressed by the
  module that defines it (`generator.run` the function shares its name with the package
  `generator/run/`, which a static reader would show instead).

As a mkdocs hook (`hooks:` in mkdocs.yml) both pages are added to the site at build time;
`python docs/gen_reference.py [recipe|cli]` prints one.
"""
from __future__ import annotations

import argparse
import ast
import functools
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import types
import typing
from typing import Any, Literal

RECIPE_PAGE = "reference/recipe.md"
CLI_PAGE = "reference/cli.md"
API_PAGE = "reference/api.md"
INTRO = """# Recipe reference

A recipe is a YAML file whose keys are the fields below (generated from the dataclasses in
`generator/recipe.py` and `generator/judges/config.py` at every docs build). Unknown keys are
refused with the valid ones listed, values are checked when the recipe loads, relative paths
resolve against the recipe file, and `--set key.sub=value` overrides any key from the command
line. A key without a default is required.
"""


# Meanings of fields whose source has no comment beside them yet (the comment, once written there,
# wins). tests/test_docs.py checks that every key here is still a field.
NOTES = {
    "Recipe.name": "run name; the default run folder is runs/<name>",
    "Recipe.grid": "axis name → grid file (YAML, see the bad-inputs guide) or seed documents "
                   "(`{path, text_field, max_chars}`); `topic` is domain → topics, other axes flat lists",
    "Recipe.templates": "Jinja2 prompt templates and their sampling weights",
    "Recipe.size": "how many documents, and the rows per shard",
    "Recipe.model": "`embedded:smollm2-135m`, a Hugging Face id or a local path, passed to vLLM "
                    "(the served model name for `engine.backend: openai`)",
    "Recipe.seed": "seed of every random choice; per-request seeds derive from it and the sample id",
    "Recipe.sampling": "decoding settings of every generation request",
    "Recipe.engine": "where generation runs",
    "Recipe.scoring": "how `generator run` scores its corpus at the end",
    "Recipe.target": "the diversity to steer to; absent: no steering, the grid is sampled as written",
    "Recipe.reference": "real documents the corpus is measured against (needed by `target.relative` "
                        "and `target.max_shift`)",
    "Recipe.dedup": "exact and near-duplicate removal",
    "Recipe.max_failure_rate": "stop the run when failed rows exceed this share of attempted rows",
    "SeedDocs.path": "JSONL, Parquet or saved dataset holding the documents (an `id` column, "
                     "else a hash of the text, is the value)",
    "SeedDocs.text_field": "column holding the text",
    "TemplateSpec.path": "a `.j2` template file (under `roots:`)",
    "TemplateSpec.weight": "relative share of the template's requests",
    "Size.num_docs": "distinct documents the corpus ends with (failed and duplicate rows are replaced)",
    "Sampling.temperature": "sampling temperature of every request",
    "Sampling.top_p": "nucleus sampling mass",
    "Sampling.max_tokens": "answer cap; templates ask for about 0.55 × max_tokens words",
    "Engine.backend": "`ray`: Ray actors each owning a vLLM engine; `vllm`: one in-process engine; "
                      "`openai`: an OpenAI-compatible endpoint",
    "Engine.num_replicas": "Ray actors (engines) in the pool",
    "Engine.tensor_parallel_size": "GPUs per engine (each Ray actor asks for this many)",
    "Engine.max_model_len": "context length each engine opens with",
    "Engine.gpu_memory_utilization": "share of each GPU's memory vLLM may take",
    "Engine.cpu_kvcache_gib": "KV-cache size of vLLM's CPU build, GiB",
    "Engine.enforce_eager": "run vLLM without CUDA graphs (set false on GPUs for speed)",
    "Engine.base_url": "endpoint base URL, e.g. http://host:8000/v1 (backend openai)",
    "Engine.api_key_env": "environment variable holding the endpoint's API key (backend openai)",
    "Engine.concurrency": "requests open at once against the endpoint (backend openai)",
    "Engine.timeout_s": "per-request timeout against the endpoint (backend openai)",
    "Engine.max_retries": "retries of a failed endpoint request, with jittered backoff (backend openai)",
    "Scoring.enabled": "score the corpus at the end (`--no-score` turns it off for one run)",
    "Scoring.judge": "`embed` (embedding judge) or `llm` (the cluster-agent of the `judge:` section)",
    "Scoring.k": "K, documents per judged batch",
    "Scoring.num_batches": "K-batches judged",
    "JudgeSettings.verify_max_tokens": "answer budget of a verification call",
    "JudgeSettings.criteria_max_tokens": "answer budget of a criteria-writing call",
    "Target.tolerance": "how far the achieved D may be from the target",
    "Target.judge": "`embed` measures every round; `llm` calibrates the embedding judge to the LLM "
                    "judge of the `judge:` section and confirms the finished corpus with it",
    "Target.k": "K of the target's D",
    "Target.max_pilot_rounds": "most pilot rounds (sweeps of several concentrations) before the main phase",
    "Target.max_growth_rounds": "most rounds that ask the generator for new topics",
    "Target.growth_topics_per_domain": "new topics asked for per domain in a growth round",
    "Reference.text_field": "column holding the text",
    "Dedup.num_perm": "MinHash permutations",
}


def record_sections(cls: type, key: str) -> list[tuple[str, type]]:
    """(YAML key prefix, dataclass) for `cls` and every record its fields hold, depth first."""
    sections = [(key, cls)]
    hints = typing.get_type_hints(cls)
    for f in public_fields(cls):
        for prefix, record in nested_records(hints[f.name], f"{key}.{f.name}" if key else f.name):
            if all(record is not seen for _, seen in sections):
                sections += record_sections(record, prefix)
    return sections


def nested_records(tp: Any, key: str) -> list[tuple[str, type]]:
    """Dataclasses inside a field type, with the key a YAML user writes to reach them."""
    if dataclasses.is_dataclass(tp):
        return [(key, tp)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return nested_records(args[0], f"{key}[]")
    if origin is dict:
        return nested_records(args[1], f"{key}.<name>")
    return [found for a in args for found in nested_records(a, key)]


def public_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def field_comments(cls: type) -> dict[str, str]:
    """The comment beside each field in the class source: on its line, else on the lines above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.lineno, "")
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        found[node.target.id] = " ".join([*above, text]).strip()
    return found


def type_name(tp: Any) -> str:
    """A field type as a YAML user reads it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    return getattr(tp, "__name__", str(tp))


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{yaml_value(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "see below" if dataclasses.is_dataclass(value) else f"`{value!r}`"
    return "**required**"


def yaml_value(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return f'"{value}"' if isinstance(value, str) else repr(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def recipe_reference() -> str:
    """The whole page, Markdown."""
    from generator.recipe import Recipe
    out = [INTRO]
    for key, cls in record_sections(Recipe, ""):
        title = f"`{key}`" if key else "Top level"
        out.append(f"\n## {title}\n\n*{cls.__module__}.{cls.__name__}*\n")
        if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
            out.append(inspect.cleandoc(cls.__doc__) + "\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        hints, comments = typing.get_type_hints(cls), field_comments(cls)
        for f in public_fields(cls):
            meaning = comments.get(f.name) or NOTES.get(f"{cls.__name__}.{f.name}", "")
            out.append(f"| `{f.name}` | {type_name(hints[f.name])} | {default_text(f)} | {cell(meaning)} |")
    return "\n".join(out) + "\n"


CLI_INTRO = """# Command line

Every subcommand's help, as `generator SUBCOMMAND --help` prints it (generated from the CLI's
parser at every docs build). A bad argument exits with code 2 and one line naming the fix.
`generator -v SUBCOMMAND ...` shows library output (model loading, vLLM, Ray) on the terminal
instead of the log file under `$GENERATOR_CACHE/logs/`.
"""


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def cli_reference() -> str:
    """The command-line page, Markdown."""
    from generator.cli import build_parser
    out = [CLI_INTRO]
    for name, sub in subcommands(build_parser()).items():
        sub.formatter_class = functools.partial(argparse.HelpFormatter, width=100)
        out.append(f"\n## `generator {name}`\n\n```text\n{sub.format_help().rstrip()}\n```")
    return "\n".join(out) + "\n"


API_INTRO = """# Python API

Generated from the docstrings of the names `generator` exports in `__all__`, its public API.
The command line is a shell over the same functions.
"""


def api_reference() -> str:
    """The API page, Markdown: the package docstring, then functions, then records."""
    import generator
    names = getattr(generator, "__all__", [])
    out = [API_INTRO, "::: generator\n    options:\n      show_root_heading: false\n"
                      f"      members: {'false' if names else 'true'}\n"]
    objects = [getattr(generator, name) for name in names]
    homes = {sys.modules[o.__module__] for o in objects if not inspect.ismodule(o)}
    # A subpackage imported after `generator` bound a function of the same name replaces it
    # there (generator.export): take the function from the module that defines the others.
    objects = [next((getattr(m, n) for m in homes if hasattr(m, n) and not inspect.ismodule(getattr(m, n))), o)
               if inspect.ismodule(o) else o for n, o in zip(names, objects)]
    for title, group in (("Functions", [o for o in objects if not isinstance(o, type)]),
                         ("Records and errors", [o for o in objects if isinstance(o, type)])):
        if group:
            out.append(f"## {title}\n")
        for obj in group:
            out.append(f"::: {obj.__module__}.{obj.__qualname__}\n    options:\n      heading_level: 3\n")
    return "\n".join(out)


def on_files(files, config):
    """mkdocs hook: add the generated pages to the site."""
    from mkdocs.structure.files import File
    files.append(File.generated(config, RECIPE_PAGE, content=recipe_reference()))
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    files.append(File.generated(config, API_PAGE, content=api_reference()))
    return files


if __name__ == "__main__":
    pages = {"recipe": recipe_reference, "cli": cli_reference, "api": api_reference}
    print(pages[(sys.argv[1:] or ["recipe"])[0]](), end="")
