"""From grid cells to requests: plain functions.

Sample `i` of a run is fully determined by the recipe, the run seed, `i` and the weights in
force for `i`: its random numbers come from the block of `BLOCK` indices it falls in (seeded by
(seed, block)), never from how the run was cut into batches; its request seed derives from
(seed, i), and its id is a hash of the request content.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Mapping, Sequence

import numpy as np

from generator.sampling.grid import draw_cells, template_variables
from generator.recipe import Plan
from generator.records import Request, Weights, derive_seed
from generator.sources.load import unit_variables
from generator.sources.units import Unit

PROMPT_BREAK = "\n\n---\n\n"  # between the prompts of a `parts: topics` sample in its `prompt` column


@dataclass(frozen=True)
class Sample:
    index: int
    template: str
    values: Mapping[str, str]  # grid values, with `topic` joined by "; " for multi-topic
    request: Request
    source_id: str = ""  # a rewrite run's unit: its source document's id (generator/sources)
    chunk: int = -1  # the unit's chunk of that document
    rewrite: int = -1  # which of the unit's per_source rewrites this sample is


def request_id(prompt: str, model: str, seed: int, temperature: float, top_p: float, max_tokens: int,
               system: str | None = None) -> str:
    """The first 20 hex digits of the sha256 of the JSON list [prompt, model, seed, temperature,
    top_p, max_tokens] (and system, when set), written item by item: the same text as `json.dumps`
    of the list, without building an encoder per call."""
    model_json, rest_json = _settings_json(model, temperature, top_p, max_tokens, system)
    key = f"[{encode_basestring_ascii(prompt)}, {model_json}, {json.dumps(seed)}, {rest_json}]"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@functools.lru_cache(maxsize=64)
def _settings_json(model: str, temperature: float, top_p: float, max_tokens: int,
                   system: str | None) -> tuple[str, str]:
    """The JSON of `model`, and of the items after the seed, as json.dumps writes them in a list."""
    rest = json.dumps([temperature, top_p, max_tokens] + ([system] if system else []))
    return json.dumps(model), rest[1:-1]


def template_probabilities(plan: Plan, weights: Weights | None) -> np.ndarray:
    w = np.array([t.weight for t in plan.recipe.templates], dtype=float)
    chosen = (weights or {}).get("template")  # factors on the recipe's template weights
    if chosen:
        w = np.array([wi * chosen.get(t.name, 1.0) for t, wi in zip(plan.templates, w)], dtype=float)
    return w / w.sum()


BLOCK = 1024  # sample indices that share one seeded stream of uniform numbers


def sample_uniforms(seed: int, start: int, n: int, width: int) -> np.ndarray:
    """The uniform numbers of samples start..start+n-1 (n × width): row i is the same whatever
    call asks for it."""
    rows = []
    for block in range(start // BLOCK, (start + n - 1) // BLOCK + 1 if n else start // BLOCK):
        u = np.random.default_rng([seed, block]).random((BLOCK, width))
        lo, hi = max(start, block * BLOCK) - block * BLOCK, min(start + n, (block + 1) * BLOCK) - block * BLOCK
        rows.append(u[lo:hi])
    return np.concatenate(rows) if rows else np.zeros((0, width))


def plan_samples(plan: Plan, start_index: int, n: int, weights: Weights | None = None,
                 slots: Sequence[int] | None = None) -> list[Sample]:
    """Samples start_index..start_index+n-1 under `weights`: template and grid cell drawn from
    each sample's own numbers, prompt rendered, request built. A rewrite run's samples also rewrite
    the unit of their slot (`slots`, one per sample; default: pass 0, where index i is slot i)."""
    r = plan.recipe
    u = sample_uniforms(r.seed, start_index, n, 1 + len(plan.grid.axes))
    cdf = np.cumsum(template_probabilities(plan, weights))
    template_ids = np.minimum(np.searchsorted(cdf, u[:, 0] * cdf[-1], side="right"), len(cdf) - 1)
    num_topics = max(t.num_topics for t in plan.templates)
    extra = [np.random.default_rng([r.seed, start_index + i, 1]) for i in range(n)] if num_topics > 1 else None
    cells = draw_cells(plan.grid, u[:, 1:], weights=weights, num_topics=num_topics, extra_rngs=extra)
    units = source_units(plan, start_index, n, slots)
    s = r.sampling
    documents = [a for a, axis in plan.grid.axes.items() if axis.documents]  # axes of seed documents
    kept: dict[tuple, tuple[str, ...]] = {}  # (template, the cell's axes) -> the axes the template uses
    samples = []
    for offset, (t_id, cell) in enumerate(zip(template_ids.tolist(), cells)):
        template = plan.templates[t_id]
        variables = template_variables(plan.grid, cell)
        unit, rewrite = units[offset] if units else (None, -1)
        if unit is not None:
            variables.update(unit_variables(unit, plan.source.name, rewrite))
        prompts = template.prompts(variables, s.max_tokens)
        prompt = PROMPT_BREAK.join(prompts)
        index = start_index + offset
        seed = derive_seed(r.seed, index)
        axes = kept.get((t_id, *cell.values))
        if axes is None:
            axes = kept[(t_id, *cell.values)] = tuple(used_values(template.variables, cell.values))
        values = {a: cell.values[a] for a in axes}
        values.update({f"{a}_source": plan.grid.axes[a].source for a in documents if a in values})
        if template.num_topics > 1 and "topics" in variables:
            values["topic"] = "; ".join(variables["topics"][: template.num_topics])  # type: ignore[index]
        max_tokens, system = template.part_tokens(s.max_tokens), r.system_prompt or template.system
        request = Request(id=request_id(prompt, r.model, seed, s.temperature, s.top_p, max_tokens, system),
                          prompt=prompt, max_tokens=max_tokens, temperature=s.temperature,
                          top_p=s.top_p, seed=seed, system=system,
                          parts=tuple(prompts) if template.parts else ())
        provenance = dict(source_id=unit.source_id, chunk=unit.chunk, rewrite=rewrite) if unit else {}
        samples.append(Sample(index=index, template=template.name, values=values, request=request,
                              **provenance))
    return samples


def source_units(plan: Plan, start: int, n: int, slots: Sequence[int] | None) -> list[tuple[Unit, int]]:
    """(unit, rewrite) of each sample of a rewrite run ([] for a grid run)."""
    if plan.source is None:
        return []
    k = plan.recipe.source.per_source
    slots = range(start, start + n) if slots is None else slots
    return list(zip(plan.source.units([s // k for s in slots]), [s % k for s in slots]))


def used_values(variables: Sequence[str], values: Mapping[str, str]) -> dict[str, str]:
    """The grid values a template actually used (provenance must not list unused axes)."""
    used = set(variables)
    keep = {axis for axis in values
            if used & {axis, f"{axis}_description", f"{axis}s", f"{axis}_id"}}
    if "topic" in keep:
        keep.add("domain")
    return {axis: v for axis, v in values.items() if axis in keep}
