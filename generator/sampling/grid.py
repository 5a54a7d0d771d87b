"""Weighted grids of topics, personas, styles and audiences, and lazy sampling from them.

An axis file is YAML. The topic axis is two-level (domain → topics)::

    axis: topic
    domains:
      - name: Physics
        weight: 2            # optional, default 1
        topics: [Newton's laws, {value: Entropy, weight: 0.5}]

Every other axis is a flat list::

    axis: persona
    values:
      - value: a retired ship engineer
        description: optional longer text handed to templates as persona_description
        weight: 1            # optional

Values, domain names and descriptions are text: a number or null is refused, so quote it
(`- "1984"`). Weights are unquoted numbers from 1e-9 to 1e9 (YAML reads `1e3` as text: write
`1000` or `1.0e+3`); to leave a value out, remove it. `values`, `domains` and `topics` are lists.

Sampling draws each axis independently (domain, then topic within it), so a grid whose
product has 10^8 cells is sampled without ever being materialised.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from generator.errors import UserError
from generator.yamlfiles import read_yaml


@dataclass(frozen=True)
class AxisValue:
    value: str
    weight: float = 1.0
    description: str = ""
    domain: str = ""  # only on the topic axis


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]
    source: str = ""
    documents: bool = False  # values are document ids, descriptions their texts (a seed-document axis)

    @functools.cached_property  # asked per sample and axis while rendering
    def hierarchical(self) -> bool:
        return any(v.domain for v in self.values)

    def domains(self) -> list[str]:
        return sorted({v.domain for v in self.values if v.domain})


@dataclass(frozen=True)
class Grid:
    axes: Mapping[str, Axis]

    def variables(self) -> set[str]:
        """Template variables this grid provides."""
        names: set[str] = set()
        for axis in self.axes.values():
            if axis.documents:
                names |= {axis.name, f"{axis.name}_id", f"{axis.name}_source"}
                continue
            names |= {axis.name, f"{axis.name}_description"}
            if axis.hierarchical:
                names |= {"domain", f"{axis.name}s"}
        return names


@dataclass(frozen=True)
class Cell:
    """One sampled point of the grid: axis name → value (plus `domain` for topics)."""

    values: Mapping[str, str] = field(default_factory=dict)
    extra_topics: tuple[str, ...] = ()  # further topics for multi-topic templates


MAX_WEIGHT = 1e9  # weights are relative: from 1/MAX_WEIGHT to MAX_WEIGHT, so sums stay finite


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:40] + "…"


def _text(raw: object, where: str, what: str) -> str:
    """A value, domain name or description: text, never null, a number or a list."""
    if raw is None:
        raise UserError(f"{where}: {what} is empty (YAML null)", fix="write the text, or remove the entry")
    if isinstance(raw, (list, dict)):
        raise UserError(f"{where}: {what} must be one text, got a {type(raw).__name__} {_show(raw)}",
                        fix="give one text per entry")
    if not isinstance(raw, str):
        raise UserError(f"{where}: {what} must be text, got the {type(raw).__name__} {raw!r}",
                        fix=f"quote it to keep it as text: \"{raw}\"")
    return raw.strip()


def _yaml_number(text: str) -> str | None:
    """How to write a number given as text so that YAML reads a number (`1e3` is text to YAML
    1.1: it needs a dot and a signed exponent, `1.0e+3`); None when the text is no positive number."""
    try:
        x = float(text)
    except ValueError:
        return None
    if not 0 < x < float("inf"):
        return None
    if x.is_integer() and x < 1e15:
        return str(int(x))
    mantissa, _, exponent = repr(x).partition("e")
    if not exponent:
        return mantissa
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{int(exponent):+d}"


def _weight(raw: object, where: str, label: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        number = _yaml_number(raw) if isinstance(raw, str) else None
        quoted = number is not None and len(raw) < 40 and isinstance(yaml.safe_load(raw), (int, float))
        fix = (f"write `weight: {raw.strip()}` without quotes" if quoted
               else f"write `weight: {number}` (YAML reads {raw} as text)" if number
               else "write a number, e.g. `weight: 2`, or drop it for weight 1")
        raise UserError(f"{where}: weight of {label} must be a positive number, got {_show(raw)}", fix=fix)
    try:
        weight = float(raw)
    except OverflowError:  # an integer beyond the float range
        weight = float("inf")
    if weight != weight or weight <= 0:
        raise UserError(f"{where}: weight of {label} must be a positive number, got {_show(raw)}",
                        fix="remove the entry to never draw it, or give it a weight > 0")
    if not 1 / MAX_WEIGHT <= weight <= MAX_WEIGHT:
        raise UserError(f"{where}: weight of {label} is {_show(raw)}, outside 1e-09 .. 1e+09",
                        fix="weights are relative: rescale them all into that range")
    return weight


def _entries(raw: object, where: str, key: str, example: str) -> list:
    """A list of entries under `key`, refusing a mapping or a single text given instead of a list."""
    if raw is None or raw == []:
        return []
    if isinstance(raw, dict):
        raise UserError(f"{where}: {key} is a mapping; it must be a list (one entry per value)",
                        fix=f"write each entry as a list item, e.g. {example}")
    if not isinstance(raw, list):
        raise UserError(f"{where}: {key} must be a list, got {_show(raw)}", fix=f"e.g. {example}")
    return raw


def _refuse_unknown_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = set(mapping) - set(allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(map(str, unknown))}",
                        fix=f"valid keys are {', '.join(allowed)}")


def _parse_entry(entry, where: str, domain: str = "") -> AxisValue:
    if not isinstance(entry, (dict, list)):
        entry = {"value": entry}  # a text, or a number or null that `_text` refuses with its fix
    if not isinstance(entry, dict) or "value" not in entry:
        raise UserError(f"{where}: each entry must be a text or a mapping with 'value', got {_show(entry)}",
                        fix="write `- value: ...` (optionally weight:, description:), or quote the text")
    _refuse_unknown_keys(entry, ("value", "weight", "description"), where)
    value = _text(entry["value"], where, "value")
    if not value:
        raise UserError(f"{where}: empty value", fix="remove the entry or give it text")
    description = entry.get("description")
    return AxisValue(value=value, weight=_weight(entry.get("weight", 1.0), where, repr(value)),
                     description=_text(description, where, "description") if description is not None else "",
                     domain=domain)


def _domain_values(data: dict, where: str) -> list[tuple[str, AxisValue]]:
    """(label, value) of every topic of a two-level axis; a domain's weight is spread over its
    topics so it weighs the domain as a whole."""
    values: list[tuple[str, AxisValue]] = []
    names: set[str] = set()
    domains = _entries(data["domains"], where, "domains", "`- name: Physics` with `topics: [...]`")
    for i, dom in enumerate(domains):
        if not isinstance(dom, dict) or "name" not in dom or "topics" not in dom:
            raise UserError(f"{where}: domains[{i}] needs 'name' and 'topics'",
                            fix="write `- name: Physics` with a `topics:` list")
        _refuse_unknown_keys(dom, ("name", "weight", "topics"), f"{where}: domains[{i}]")
        name = _text(dom["name"], f"{where}: domains[{i}]", "name")
        if not name or name.casefold() in names:
            raise UserError(f"{where}: domains[{i}]: {'duplicate' if name else 'empty'} domain name {name!r}",
                            fix="give each domain its own name (merge the topics of repeated ones)")
        names.add(name.casefold())
        scale = _weight(dom.get("weight", 1.0), f"{where}: domains[{i}]", f"domain {name!r}")
        topics = _entries(dom["topics"], f"{where}: domains[{i}]", "topics", "`topics: [Entropy, Optics]`")
        if not topics:
            raise UserError(f"{where}: domain {name!r} has no topics", fix="add topics or remove the domain")
        for j, t in enumerate(topics):
            label = f"domains[{i}].topics[{j}]"
            v = _parse_entry(t, f"{where}: {label}", domain=name)
            weight = v.weight * scale / len(topics)
            values.append((label, AxisValue(v.value, weight, v.description, v.domain)))
    return values


def load_axis(path: Path, name: str | None = None) -> Axis:
    """Read one axis file; `name` (the recipe's key) overrides the file's `axis:`."""
    where = str(path)
    data = read_yaml(path, "grid", "check the path in the recipe's grid:")
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with 'axis' and 'values' or 'domains'",
                        fix="see topics/personas.yaml for the format")
    axis_name = name or data.get("axis")
    if not axis_name:
        raise UserError(f"{where}: no axis name", fix="add `axis: NAME` to the file")
    if not isinstance(axis_name, str):
        raise UserError(f"{where}: axis name must be text, got {_show(axis_name)}",
                        fix="e.g. `axis: persona`")
    _refuse_unknown_keys(data, ("axis", "description", "values", "domains"), where)
    if "domains" in data and "values" in data:
        raise UserError(f"{where}: both 'values' and 'domains'", fix="keep one: domains for topics grouped "
                        "by domain, values for a flat list")
    if "domains" in data:
        labelled = _domain_values(data, where)
    else:
        entries = _entries(data.get("values"), where, "values", "`- {value: a nurse, weight: 2}`")
        labelled = [(f"values[{i}]", _parse_entry(e, f"{where}: values[{i}]")) for i, e in enumerate(entries)]
    if not labelled:
        raise UserError(f"{where}: axis {axis_name!r} has no values", fix="add at least one value")
    seen: dict[str, str] = {}
    for label, v in labelled:
        first = seen.setdefault(v.value.casefold(), label)
        if first != label:
            raise UserError(f"{where}: duplicate value {v.value!r} on axis {axis_name!r}: {label} repeats "
                            f"{first} (case is ignored)", fix=f"remove {label} or reword it")
    return Axis(name=axis_name, values=tuple(v for _, v in labelled), source=where)


def load_grid(paths: Mapping[str, Path]) -> Grid:
    return Grid(axes={name: load_axis(Path(p), name) for name, p in paths.items()})


def load_document_axis(name: str, path: Path, text_field: str, max_chars: int, *, where: str) -> Axis:
    """An axis whose values are the documents of a corpus (Parquet, JSONL or saved dataset):
    each value is the document's `id` column when it has one, else a hash of its text; its
    description is the text cut at the last word before `max_chars`. Empty texts are skipped."""
    import hashlib

    from generator.readers import load_corpus

    try:
        texts, metadata = load_corpus(path, text_field)
    except UserError as exc:
        raise UserError(f"{where}: {exc.what}", fix=exc.fix.replace("pass --text-field NAME",
                                                                    f"set grid.{name}.text_field")) from None
    ids = metadata.get("id") or [hashlib.sha256(t.encode()).hexdigest()[:12] for t in texts]
    values, seen = [], set()
    for doc_id, text in zip(ids, texts):
        text = text.strip()
        if not text or doc_id in seen:
            continue
        seen.add(doc_id)
        cut = text if len(text) <= max_chars else text[:max_chars].rsplit(None, 1)[0] + " …"
        values.append(AxisValue(value=str(doc_id), description=cut))
    if not values:
        raise UserError(f"{where}: {path} holds no non-empty {text_field!r} texts", fix="point at a corpus with documents")
    return Axis(name=name, values=tuple(values), source=Path(path).name, documents=True)


def with_axis(grid: Grid, axis: Axis) -> Grid:
    return Grid(axes={**grid.axes, axis.name: axis})


def axis_probabilities(axis: Axis, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Sampling probabilities of an axis: file weights, optionally replaced per value by
    `weights` (value → weight, as written by the controller). Zero weights deactivate values."""
    w = np.array([v.weight for v in axis.values], dtype=float)
    if weights:
        w = np.array([weights.get(v.value, wi) for v, wi in zip(axis.values, w)], dtype=float)
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"axis {axis.name!r}: weights must be >= 0 with a positive sum")
    return w / w.sum()


def sample_cells(grid: Grid, n: int, rng: np.random.Generator, *,
                 weights: Mapping[str, Mapping[str, float]] | None = None,
                 num_topics: int = 1) -> list[Cell]:
    """Draw `n` cells, each axis independently by its weights. `num_topics` > 1 adds further
    distinct topics per cell for multi-topic templates."""
    return draw_cells(grid, rng.random((n, len(grid.axes))), weights=weights, num_topics=num_topics,
                      extra_rngs=[rng] * n)


def draw_cells(grid: Grid, uniforms: np.ndarray, *, weights: Mapping[str, Mapping[str, float]] | None = None,
               num_topics: int = 1, extra_rngs: list[np.random.Generator] | None = None) -> list[Cell]:
    """One cell per row of `uniforms` (shape n × number of axes, values in [0, 1)): the value
    of axis j is where the row's j-th number falls in the axis' cumulative weights. A cell thus
    depends only on its own numbers and the weights. `extra_rngs` (one per row) draw the further
    topics of multi-topic templates."""
    weights = weights or {}
    columns: dict[str, list[int]] = {}  # value numbers as Python ints: indexing with numpy's costs more
    for j, (name, axis) in enumerate(grid.axes.items()):
        cdf = np.cumsum(axis_probabilities(axis, weights.get(name)))
        picks = np.minimum(np.searchsorted(cdf, uniforms[:, j] * cdf[-1], side="right"), len(cdf) - 1)
        columns[name] = picks.tolist()
    topic_cdf = _choice_cdf(grid.axes["topic"], weights.get("topic")) if "topic" in grid.axes else None
    cells = []
    for i in range(len(uniforms)):
        values: dict[str, str] = {}
        extra: tuple[str, ...] = ()
        for name, axis in grid.axes.items():
            v = axis.values[columns[name][i]]
            values[name] = v.value
            if v.domain:
                values["domain"] = v.domain
        if num_topics > 1 and "topic" in grid.axes and extra_rngs is not None:
            extra = _extra_topics(grid.axes["topic"], values["topic"], num_topics - 1, extra_rngs[i],
                                  topic_cdf)
        cells.append(Cell(values=values, extra_topics=extra))
    return cells


def _choice_cdf(axis: Axis, weights: Mapping[str, float] | None) -> np.ndarray:
    """The cumulative probabilities `Generator.choice(n, p=...)` searches, computed once per call
    of `draw_cells` instead of once per draw."""
    cdf = axis_probabilities(axis, weights).cumsum()
    return cdf / cdf[-1]


def _extra_topics(axis: Axis, first: str, count: int, rng: np.random.Generator,
                  cdf: np.ndarray) -> tuple[str, ...]:
    picked: list[str] = []
    for _ in range(50 * count):  # as rng.choice(len(axis.values), p=p), one uniform number per draw
        v = axis.values[int(cdf.searchsorted(rng.random(), side="right"))].value
        if v != first and v not in picked:
            picked.append(v)
        if len(picked) == count:
            break
    return tuple(picked)


_DESCRIPTIONS: dict[int, tuple[Axis, dict[str, str]]] = {}


def _descriptions(axis: Axis) -> dict[str, str]:
    """Value -> description of an axis, built once per axis object (keyed by identity: hashing
    a frozen axis walks all its values, which cost more than the lookup it saves)."""
    hit = _DESCRIPTIONS.get(id(axis))
    if hit is None or hit[0] is not axis:
        if len(_DESCRIPTIONS) > 256:
            _DESCRIPTIONS.clear()
        hit = _DESCRIPTIONS[id(axis)] = (axis, {v.value: v.description for v in axis.values})
    return hit[1]


def first_cell(grid: Grid, num_topics: int = 1) -> Cell:
    """The cell of every axis' first value: a probe for rendering templates at load time."""
    values = {}
    for name, axis in grid.axes.items():
        values[name] = axis.values[0].value
        if axis.hierarchical:
            values["domain"] = axis.values[0].domain
    topic_axis = next((a for a in grid.axes.values() if a.hierarchical), None)
    extra = tuple(v.value for v in topic_axis.values[1:num_topics]) if topic_axis else ()
    return Cell(values=values, extra_topics=extra)


def template_variables(grid: Grid, cell: Cell) -> dict[str, object]:
    """The variables a template sees for one cell."""
    out: dict[str, object] = dict(cell.values)
    for name, axis in grid.axes.items():
        if axis.documents:
            out.update({name: _descriptions(axis)[cell.values[name]], f"{name}_id": cell.values[name],
                        f"{name}_source": axis.source})
            continue
        out[f"{name}_description"] = _descriptions(axis).get(cell.values[name]) or cell.values[name]
        if axis.hierarchical:
            out[f"{name}s"] = [cell.values[name], *cell.extra_topics]
    return out
