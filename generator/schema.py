"""YAML mappings into frozen dataclasses: keys checked against the fields (unknown ones rejected
with the valid ones listed), values coerced to the annotated types, `--set key=value` overrides
merged in. Used by the recipe and by the judge settings of `generator score`."""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from generator.errors import UserError
from generator.yamlfiles import load_yaml_text


def build_record(cls, data: Any, where: str):
    """Build dataclass `cls` from parsed YAML, checking keys and types."""
    hints = typing.get_type_hints(cls)
    here = where.rstrip(": ")
    if not isinstance(data, dict):
        raise UserError(f"{here}: expected a mapping, got {type(data).__name__}",
                        fix=f"write {where.split(': ')[-1] or 'it'} as key: value pairs")
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names))
    if unknown:
        gone = unknown == ["batch_size"] and "(engines are fed continuously; size.shard_rows sets rows per shard)"
        raise UserError(f"{here}: unknown key {unknown[0]!r} {gone or ''}".rstrip(), fix=f"valid keys: {', '.join(names)}")
    kwargs = {}
    for f in fields:
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{here}: missing required key {f.name!r}", fix=f"add `{f.name}:`")
            continue
        kwargs[f.name] = coerce_value(hints[f.name], data[f.name], f"{where}{'.' if where[-1] != ' ' else ''}{f.name}")
    return cls(**kwargs)


def coerce_value(tp, value: Any, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        record = next((a for a in members if dataclasses.is_dataclass(a)), None)
        return coerce_value(record if record is not None and isinstance(value, dict) else members[0], value, where)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not allowed", fix=f"use one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return build_record(tp, value, where)
    if origin is list:
        if not isinstance(value, list) or not value:
            raise UserError(f"{where}: expected a non-empty list", fix="write it as a YAML list")
        return [coerce_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise UserError(f"{where}: expected a non-empty mapping", fix="write name: value pairs")
        return {str(k): coerce_value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}[tp]
    if not ok:
        raise UserError(f"{where}: expected {tp.__name__}, got {value!r}", fix=_type_fix(tp, value))
    return float(value) if tp is float else value


def _type_fix(tp, value: Any) -> str:
    """How to give a `tp`; YAML reads 1e3 (no point, no exponent sign) as text, so say how it
    reads a number."""
    try:
        number = float(value) if tp is float and isinstance(value, str) else None
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return (f"write {number:.1e} (YAML reads a number with a point and a signed exponent; "
                f"{value} is text to it)")
    return f"give {'an' if tp is int else 'a'} {tp.__name__}"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set size.num_docs=50` → {"size": {"num_docs": 50}}; values parse as bounded YAML. A key
    given twice, or both as a value and as a section (`a=1` and `a.b=2`), is refused."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # dotted key -> the pair that set it
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair!r}: expected key=value", fix="e.g. --set size.num_docs=50")
        key, raw = pair.split("=", 1)
        parts = [p.strip() for p in key.split(".")]
        if not all(parts):
            raise UserError(f"--set {pair!r}: the key {key.strip()!r} has an empty part",
                            fix="write a recipe key with single dots between its parts, "
                                "e.g. --set size.num_docs=50")
        dotted = ".".join(parts)
        _check_no_conflict(dotted, pair, given)
        given[dotted] = pair
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _override_value(pair, raw)
    return out


def _check_no_conflict(dotted: str, pair: str, given: dict[str, str]) -> None:
    if dotted in given:
        raise UserError(f"--set {pair!r}: {dotted} is also set by --set {given[dotted]!r}",
                        fix=f"keep one --set {dotted}=VALUE")
    for other, other_pair in given.items():
        if dotted.startswith(other + ".") or other.startswith(dotted + "."):
            outer = min(dotted, other, key=len)
            raise UserError(f"--set {pair!r} conflicts with --set {other_pair!r}: one sets {outer} as a "
                            "value, the other a key inside it",
                            fix=f"set {outer} whole or its keys one by one, not both")


def _override_value(pair: str, raw: str):
    if not raw:
        return ""
    try:
        return load_yaml_text(raw, "--set")
    except UserError as exc:
        what = exc.what.split(": ", 1)[-1]
        raise UserError(f"--set {pair!r}: {what}",
                        fix="write a valid YAML value after '=' (quote text in double quotes)") from None


def merge_overrides(base: dict, over: dict, prefix: str = "") -> dict:
    """`base` with `over` merged in, section by section; a section of `over` may not replace a
    plain value or a list of `base` (a key path through a value)."""
    merged = dict(base)
    for k, v in over.items():
        here, old = f"{prefix}{k}", base.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            merged[k] = merge_overrides(old, v, f"{here}.")
        elif isinstance(v, dict) and old is not None:
            inner = next(iter(v), "")
            raise UserError(f"--set {here}.{inner}: {here} is {_kind(old)} in the recipe, "
                            "not a section with keys",
                            fix=f"set the whole value instead, e.g. --set '{here}=VALUE'")
        else:
            merged[k] = v
    return merged


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"the value {repr(value)[:40]}"
