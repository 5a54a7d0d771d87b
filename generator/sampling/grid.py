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

Sampling draws each axis independently (domain, then topic within it), so a grid whose
product has 10^8 cells is sampled without ever being materialised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

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

    @property
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


def _parse_entry(entry, where: str, domain: str = "") -> AxisValue:
    if isinstance(entry, str):
        entry = {"value": entry}
    if not isinstance(entry, dict) or "value" not in entry:
        raise UserError(f"{where}: each entry must be a string or a mapping with 'value'",
                        fix="write `- value: ...` (optionally weight:, description:)")
    unknown = set(entry) - {"value", "weight", "description"}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}",
                        fix="valid keys are value, weight, description")
    value = str(entry["value"]).strip()
    weight = entry.get("weight", 1.0)
    if not value:
        raise UserError(f"{where}: empty value", fix="remove the entry or give it text")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise UserError(f"{where}: weight of {value!r} must be a positive number, got {weight!r}",
                        fix="use a number > 0 or drop the weight")
    return AxisValue(value=value, weight=float(weight),
                     description=str(entry.get("description", "") or ""), domain=domain)


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
    unknown = set(data) - {"axis", "description", "values", "domains"}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}",
                        fix="valid keys are axis, description, values, domains")
    values: list[AxisValue] = []
    if "domains" in data:
        for i, dom in enumerate(data["domains"] or []):
            if not isinstance(dom, dict) or "name" not in dom or "topics" not in dom:
                raise UserError(f"{where}: domains[{i}] needs 'name' and 'topics'",
                                fix="write `- name: Physics` with a `topics:` list")
            scale = float(dom.get("weight", 1.0))
            topics = dom["topics"] or []
            for j, t in enumerate(topics):
                v = _parse_entry(t, f"{where}: domains[{i}].topics[{j}]", domain=str(dom["name"]))
                # The domain weight is spread over its topics so it weighs the domain as a whole.
                values.append(AxisValue(v.value, v.weight * scale / len(topics), v.description,
                                        v.domain))
    else:
        for i, entry in enumerate(data.get("values") or []):
            values.append(_parse_entry(entry, f"{where}: values[{i}]"))
    if not values:
        raise UserError(f"{where}: axis {axis_name!r} has no values", fix="add at least one value")
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        key = v.value.casefold()
        if key in seen:
            raise UserError(f"{where}: duplicate value {v.value!r} on axis {axis_name!r}",
                            fix="remove or rename the duplicate")
        seen[key] = i
    return Axis(name=str(axis_name), values=tuple(values), source=where)


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
    columns: dict[str, np.ndarray] = {}
    for j, (name, axis) in enumerate(grid.axes.items()):
        cdf = np.cumsum(axis_probabilities(axis, weights.get(name)))
        columns[name] = np.minimum(np.searchsorted(cdf, uniforms[:, j] * cdf[-1], side="right"), len(cdf) - 1)
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
                                  weights.get("topic"))
        cells.append(Cell(values=values, extra_topics=extra))
    return cells


def _extra_topics(axis: Axis, first: str, count: int, rng: np.random.Generator,
                  weights: Mapping[str, float] | None) -> tuple[str, ...]:
    p = axis_probabilities(axis, weights)
    picked: list[str] = []
    for _ in range(50 * count):
        v = axis.values[rng.choice(len(axis.values), p=p)].value
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
