"""Hypothesis strategies for hostile inputs: recipe values, `--set` strings, grid files, templates
and damage to a finished run folder. Values are raw YAML or JSON text, so a case can hold what
a Python value cannot (aliases, duplicate keys, tags, nesting deeper than the dumper goes)."""
from __future__ import annotations

import json

import yaml
from hypothesis import strategies as st

from conftest import SMALL_RECIPE

# ---- values ------------------------------------------------------------------------------------

DEEP = 3000  # nesting depth of the deeply nested values (past Python's default recursion limit)
# Ten levels of nine references each: 9**10 leaves once expanded, a few hundred bytes as text.
ALIAS_BOMB = "[&a [x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(9)) + "]"

# Scalars and small structures, written as YAML flow text.
YAML_VALUES = (".nan", ".inf", "-.inf", "-1", "0", "1", "-0.0", "1.0e-300", "1.0e+400", "2", "0.5",
               "99999999999999999999999999", "-99999999999999999999", "9223372036854775808",
               "null", "~", "''", "' '", "x", "'nan'", "yes", "no", "true", "[]", "{}", "[1, 2]", "[a, a]",
               "{a: 1}", "{value: x, weight: .nan}", "2001-12-14", "0x10", "!!binary aGVsbG8=",
               "!!set {a, b}",
               "'../../../etc/passwd'", "/", "'\\x00'", "\"\\0\"", "'%s %s'", "'{{ 7*7 }}'", "&r [*r]",
               "!!python/name:os.system", "'" + "x" * 100_000 + "'", "[" * DEEP + "]" * DEEP,
               "{a: " * 200 + "1" + "}" * 200, ALIAS_BOMB)
# Values a careless user might write that pass a type check: large, tiny, at the edge of a range.
EXTREME_VALUES = ("1.0e+308", "1.0e-308", "4096", "65536", "1000000", "2147483648", "0.0001", "3", "100000",
                  "0.999", "1.0", "2.0", "16", "10", "200", "true", "false", "0.5", "1.0e+18")
yaml_values = st.sampled_from(YAML_VALUES)
extreme_values = st.sampled_from(EXTREME_VALUES)

# Keys every recipe section accepts; a mutation sets one of them to a hostile value.
RECIPE_KEYS = (
    "name", "seed", "model", "system_prompt", "keep_truncated", "max_failure_rate", "roots", "grid",
    "templates", "size", "sampling", "engine", "scoring", "dedup", "judge", "target", "reference",
    "grid.topic", "grid.persona", "grid.style", "grid.audience", "grid.seed_doc",
    "templates.0", "templates.0.path", "templates.1.weight",
    "size.num_docs", "size.shard_rows",
    "sampling.temperature", "sampling.top_p", "sampling.max_tokens",
    "engine.backend", "engine.num_replicas", "engine.tensor_parallel_size", "engine.max_model_len",
    "engine.dtype", "engine.gpu_memory_utilization", "engine.cpu_kvcache_gib", "engine.enforce_eager",
    "engine.max_num_seqs", "engine.base_url", "engine.concurrency", "engine.timeout_s", "engine.max_retries",
    "scoring.enabled", "scoring.judge", "scoring.k", "scoring.num_batches",
    "dedup.exact", "dedup.near", "dedup.threshold", "dedup.num_perm", "dedup.max_duplicate_rate",
    "judge.k", "judge.model", "judge.max_model_len", "judge.max_doc_tokens",
    "target.score", "target.tolerance", "target.k", "target.pilot_docs", "target.num_rounds",
    "target.threshold", "target.precision", "target.max_pilot_rounds", "reference.path", "reference.num_docs",
)

NUMBER_KEYS = ("seed", "max_failure_rate", *(
    k for k in RECIPE_KEYS if k.split(".")[0] in ("size", "sampling", "engine", "scoring", "dedup")
    and k.count(".") == 1 and k not in ("engine.backend", "engine.dtype", "engine.base_url",
                                        "scoring.judge")))


def recipe_data(root: str) -> dict:
    return yaml.safe_load(SMALL_RECIPE.replace("@ROOT@", root))


def set_path(data: dict, dotted: str, value) -> dict:
    """`data` with `dotted` (a.b.0.c) set to `value`, creating mappings on the way."""
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        key = int(key) if isinstance(node, list) else key
        if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def with_hostile(data: dict, dotted: str, raw: str) -> str:
    """The recipe `data` as YAML text with `dotted` replaced by the raw YAML `raw`."""
    marker = "HOSTILE_VALUE_MARKER"
    text = yaml.safe_dump(set_path(data, dotted, marker), sort_keys=False, default_flow_style=None,
                          width=10**6)
    return text.replace(marker, raw)


@st.composite
def hostile_recipes(draw, root: str) -> str:
    """SMALL_RECIPE text with one key set to a hostile value, up to three set to extreme ones, a
    top-level key doubled, or one dropped."""
    data = recipe_data(root)
    kind = draw(st.sampled_from(["value", "value", "value", "extreme", "extreme", "duplicate", "drop"]))
    key = draw(st.sampled_from(RECIPE_KEYS))
    if kind == "extreme":
        for extra in draw(st.lists(st.sampled_from(NUMBER_KEYS), min_size=1, max_size=3, unique=True)):
            try:
                set_path(data, extra, yaml.safe_load(draw(extreme_values)))
            except (TypeError, IndexError, ValueError):  # an earlier key replaced a parent of this one
                pass
        return yaml.safe_dump(data, sort_keys=False)
    if kind == "duplicate":
        top = key.split(".")[0]
        line = f"{top}: {draw(yaml_values)}\n" if len(draw(yaml_values)) < 200 else f"{top}: 1\n"
        return yaml.safe_dump(data, sort_keys=False) + line
    if kind == "drop":
        top, _, rest = key.partition(".")
        node = data.get(top) if rest else data
        if isinstance(node, dict):
            node.pop(rest.split(".")[0] if rest else top, None)
        return yaml.safe_dump(data, sort_keys=False)
    return with_hostile(data, key, draw(yaml_values))


# ---- --set strings -------------------------------------------------------------------------------

SET_KEYS = (*RECIPE_KEYS, "", ".", "..", "size.", ".num_docs", "size..num_docs", "size.num_docs.x",
            "nope", "size.nope", "__class__", "size.__dict__", "name.x", "templates.x", " size.num_docs ",
            "size.num_docs=3")
BAD_YAML = ("[unclosed", "{a", "*undefined", "&a", "!!python/object:os.system", "'", "a: b: c", "- x", "\t",
            "%TAG", "---\n---", "...", "@x", "`x")


@st.composite
def set_strings(draw) -> list[str]:
    """One to three `--set` arguments, each KEY=VALUE with hostile keys, values and syntax."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(SET_KEYS))
        value = draw(st.one_of(yaml_values, st.sampled_from(BAD_YAML),
                               st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)))
        sep = draw(st.sampled_from(["=", "=", "=", "", "==", " = "]))
        out.append(f"{key}{sep}{value[:2000]}")
    return out


# ---- grid files ----------------------------------------------------------------------------------

@st.composite
def grid_entries(draw) -> str:
    """One flow-YAML entry of a `values:` list."""
    value = draw(st.sampled_from(["a nurse", "a pilot", "'x'", "1", "1.5", "null", "''", "[a]", "{a: 1}",
                                  "'  '", ".nan", "true", "'" + "y" * 5000 + "'"]))
    form = draw(st.sampled_from(["plain", "weight", "weight", "description", "extra", "novalue"]))
    if form == "plain":
        return value
    if form == "weight":
        return f"{{value: {value}, weight: {draw(yaml_values)}}}"
    if form == "description":
        return f"{{value: {value}, description: {draw(yaml_values)}}}"
    if form == "extra":
        return f"{{value: {value}, colour: red}}"
    return f"{{weight: {draw(yaml_values)}}}"


@st.composite
def grid_files(draw) -> str:
    """A persona axis file with hostile entries, weights, keys or structure."""
    shape = draw(st.sampled_from(["values", "values", "values", "domains", "raw"]))
    if shape == "raw":
        return f"axis: persona\nvalues: {draw(yaml_values)}\n"
    entries = draw(st.lists(grid_entries(), min_size=0, max_size=4))
    if shape == "domains":
        weight = draw(yaml_values)
        return (f"axis: persona\ndomains:\n  - {{name: {draw(yaml_values)}, weight: {weight}, "
                f"topics: [{', '.join(entries)}]}}\n")
    axis = draw(st.sampled_from(["persona", "persona", "topic", "''", "[1]", "null"]))
    return f"axis: {axis}\nvalues: [{', '.join(entries)}]\n"


# ---- templates -----------------------------------------------------------------------------------

TEMPLATE_BODIES = (
    "{{ 9**(9**9) }}", "{{ 10**100000 }}", "{{ 2**64 * 2**64 }}", "{{ (10**8) * 'x' }}", "{{ 'x' * 10**9 }}",
    "{{ topic * 100000000 }}", "{{ range(10**9) | list | length }}", "{{ range(99999) | list | length }}",
    "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
    "{% for i in range(10**12) %}{% endfor %}", "{{ lipsum(10**6) }}", "{{ undefined_name }}",
    "{{ topic.__class__.__mro__ }}", "{{ topic.__init__.__globals__ }}", "{{ ''.__class__ }}",
    "{{ cycler.__init__ }}", "{{ '{0.__class__}'.format(topic) }}", "{{ '%s' % topic }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{{ topic | int + none }}", "{{ 1 / 0 }}",
    "{{ topic[10**20] }}", "{{ topic | wordwrap(0) }}", "{{ topic | indent(10**8) }}",
    "{{ topic | center(10**9) }}", "{% set x = topic %}{{ x ~ x ~ x }}", "{{ topic }}",
    "{% raw %}{{{% endraw %}",
    "{{ [1] * 10**9 }}", "{{ dict(a=1).items() | list }}", "{{ namespace(a=1).a }}", "{{ self.__dict__ }}",
    "{{ (topic ~ '\n') * 1000 }}", "{% include 'x.j2' %}", "{% import 'os' as os %}",
    "{% extends '/etc/passwd' %}",
)
TEMPLATE_HEADERS = (
    "variables: [topic]", "variables: [topic, undefined_name]", "variables: [topic, cycler]",
    "variables: [topic]\nnum_topics: 100000000", "variables: [topics]\nnum_topics: 100000000",
    "variables: [topic]\nnum_topics: 0", "variables: [topic]\nnum_topics: -1",
    "variables: [topic]\nnum_topics: .nan",
    "variables: [topic]\nparts: topics\nnum_topics: 3", "variables: [topic]\nsystem: [1]",
    "variables: [topic]\nsystem: {{ 9**9 }}", "variables: topic", "variables: [1]",
    "variables: [topic, topic]",
    "variables: [__class__]", "variables: [topic]\nvariables: [persona]",
)


@st.composite
def templates(draw) -> str:
    """A template file: a declaration header and a body of one to three hostile pieces."""
    header = draw(st.sampled_from(TEMPLATE_HEADERS))
    pieces = draw(st.lists(st.sampled_from(TEMPLATE_BODIES), min_size=1, max_size=3))
    return "{#\n" + header + "\n#}\n" + "\n".join(pieces) + "\n"


# ---- damaged run folders -----------------------------------------------------------------------

RUN_FILES = ("state.json", "state.json", "summary.json", "manifest.json", "manifest.json", "diversity.json",
             "recipe.resolved.yaml", "failures.jsonl", "data/shard-00000.parquet", "data/shard-00001.parquet",
             "data/shard-00002.parquet", "data/shard-00003.parquet", "data", "dedup/shard-00001.dedup.npz",
             "README.md")
JSON_VALUES = ("[]", "null", "\"x\"", "1", "-1", "0", "{}", "NaN", "Infinity", "1e999", "-5", "true", "0.5",
               "[[]]", "{\"shards\": 5}", "99999999999999999999", "[" * 100_000 + "]" * 100_000,
               "\"../state.json\"", "\"../../outside.parquet\"", "\"shard-00000.parquet\"", "\"/\"",
               ALIAS_BOMB)
# delete, empty, truncate at `where`, a folder in its place, whole-file JSON, one JSON field replaced,
# garbage bytes, a flipped byte at `where`, a symlink to /dev/zero, to itself, or a FIFO (blocks a reader),
# a copy of another shard (a shard from nowhere, or one swapped in)
DAMAGES = ("delete", "empty", "truncate", "directory", "json", "json", "json_field", "json_field",
           "json_field", "garbage", "flip", "devzero", "loop", "fifo", "copy")


@st.composite
def damages(draw) -> list[tuple[str, str, str, float]]:
    """One or two damages: (file, kind, replacement JSON text, where to cut or flip in [0, 1))."""
    out = []
    for _ in range(draw(st.integers(1, 2))):
        out.append((draw(st.sampled_from(RUN_FILES)), draw(st.sampled_from(DAMAGES)),
                    draw(st.sampled_from(JSON_VALUES)), draw(st.floats(0, 0.999))))
    return out


def json_paths(data, prefix: tuple = ()) -> list[tuple]:
    """Every key path into parsed JSON (mappings and lists), leaves and inner nodes."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            paths += json_paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data[:3]):
            paths += json_paths(v, (*prefix, i))
    return paths


def replace_json_field(text: str, replacement: str, where: float | str) -> str:
    """`text` (JSON) with a field replaced by the JSON `replacement`: the field at `where` (a share
    of every field) or the one a dotted path names."""
    data = json.loads(text)
    paths = json_paths(data)
    if not paths:
        return replacement
    if isinstance(where, str):
        path = tuple(where.split("."))
    else:
        path = paths[int(where * len(paths))]
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "@REPLACED@"
    return json.dumps(data).replace('"@REPLACED@"', replacement)
