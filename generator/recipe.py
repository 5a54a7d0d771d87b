"""Recipes: YAML files loaded into frozen dataclasses, validated before any work starts.

YAML keys equal the dataclass field names below; unknown keys are rejected with the valid ones
listed; relative paths resolve against the recipe file. `load_recipe` also loads the grid and
the templates and checks that each template's variables are provided by the grid.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from generator.errors import UserError
from generator.sampling.grid import Grid, first_cell, load_grid, read_yaml, template_variables
from generator.sampling.templates import Template, check_template_against, load_template, words_for_tokens

EMBEDDED_MODELS = {"embedded:smollm2-135m"}


@dataclass(frozen=True)
class TemplateSpec:
    path: str
    weight: float = 1.0


@dataclass(frozen=True)
class Size:
    num_docs: int
    batch_size: int = 64  # documents per engine call and per Parquet shard


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256


@dataclass(frozen=True)
class Engine:
    """Where generation runs. `ray`: a pool of `num_replicas` Ray actors each owning one vLLM
    engine over `tensor_parallel_size` GPUs (CPU-only actors when no GPU is present);
    `vllm`: one in-process engine; `openai`: an OpenAI-compatible endpoint at `base_url`."""

    backend: Literal["ray", "vllm", "openai"] = "ray"
    num_replicas: int = 1
    tensor_parallel_size: int = 1
    max_model_len: int = 2048
    dtype: str = "auto"  # float32 on CPU, the model's dtype on GPU
    gpu_memory_utilization: float = 0.9
    cpu_kvcache_gib: int = 2
    enforce_eager: bool = True
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 3


@dataclass(frozen=True)
class Target:
    """The diversity to steer to: D on the cluster-agent scale at batch size `k`, measured by
    `judge`. The controller pilots small rounds until a pilot scores within tolerance, then
    generates the rest in `num_rounds` rounds, correcting after each."""

    score: float
    tolerance: float = 0.15
    judge: Literal["embed", "llm"] = "embed"
    k: int = 10
    judge_model: str = ""  # llm judge: a local vLLM model, or the model served at judge_endpoint
    judge_endpoint: str = ""
    threshold: float = 0.0  # embed judge cosine-distance cut; 0 = the judge's default
    num_batches: int = 3000  # most K-batches judged per measurement
    precision: float = 0.0  # stop judging once the 95% half-width of D is this small; 0 = tolerance / 3
    pilot_docs: int = 0  # documents per pilot round; 0 = derived from size.num_docs
    max_pilot_rounds: int = 8
    num_rounds: int = 4  # main-phase rounds after the pilot
    reweight_rate: float = 1.0  # per-cell reweighting strength (0 disables it)
    grow_grid: bool = True  # propose new topics when the grid cannot reach the target
    max_growth_rounds: int = 2
    growth_topics_per_domain: int = 8


def pilot_size(recipe: "Recipe") -> int:
    """Documents per pilot round: 2% of the corpus, at least 10 K-batches' worth, at most 400."""
    t = recipe.target
    if t is None:
        return 0
    return t.pilot_docs or int(min(max(0.02 * recipe.size.num_docs, 10 * t.k), 400))


@dataclass(frozen=True)
class Scoring:
    """How `generator run` scores its output at the end (OUT/diversity.json)."""

    enabled: bool = True
    judge: Literal["embed", "llm"] = "embed"
    k: int = 10
    num_batches: int = 200


@dataclass(frozen=True)
class Dedup:
    """Duplicate removal inside a run; rejected documents are replaced by new samples."""

    exact: bool = True  # same text after lowercasing and dropping punctuation/spacing
    near: bool = True  # MinHash LSH on word 5-grams
    threshold: float = 0.8  # estimated Jaccard similarity that makes a near duplicate
    num_perm: int = 128
    max_duplicate_rate: float = 0.5  # stop when this share of attempted rows were duplicates


@dataclass(frozen=True)
class Recipe:
    name: str
    grid: dict[str, str]
    templates: list[TemplateSpec]
    size: Size
    model: str = "embedded:smollm2-135m"
    seed: int = 0
    system_prompt: str = ""
    sampling: Sampling = field(default_factory=Sampling)
    engine: Engine = field(default_factory=Engine)
    scoring: Scoring = field(default_factory=Scoring)
    target: Target | None = None
    dedup: Dedup = field(default_factory=Dedup)
    roots: list[str] = field(default_factory=list)  # folders grids and templates may load from
    # An answer cut at max_tokens: "trim" it back to its last complete sentence (finish_reason
    # "trimmed"), "keep" it as cut, or "drop" it as a failed row. YAML true/false mean keep/drop.
    keep_truncated: Literal["trim", "keep", "drop"] = "trim"
    max_failure_rate: float = 0.2
    path: str = field(default="", metadata={"internal": True})  # where it was read from; not a YAML key


def _build(cls, data: Any, where: str):
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
        raise UserError(f"{here}: unknown key {unknown[0]!r}", fix=f"valid keys: {', '.join(names)}")
    kwargs = {}
    for f in fields:
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{here}: missing required key {f.name!r}", fix=f"add `{f.name}:`")
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}{'.' if where[-1] != ' ' else ''}{f.name}")
    return cls(**kwargs)


def _coerce(tp, value: Any, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not allowed", fix=f"use one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list) or not value:
            raise UserError(f"{where}: expected a non-empty list", fix="write it as a YAML list")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise UserError(f"{where}: expected a non-empty mapping", fix="write name: value pairs")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}[tp]
    if not ok:
        raise UserError(f"{where}: expected {tp.__name__}, got {value!r}", fix=f"give a {tp.__name__}")
    return float(value) if tp is float else value


def _check_values(r: Recipe, where: str) -> None:
    def need(cond: bool, key: str, what: str, fix: str):
        if not cond:
            raise UserError(f"{where}: {key} {what}", fix=fix)

    need(r.size.num_docs > 0, "size.num_docs", f"must be positive, got {r.size.num_docs}", "set size.num_docs: 200")
    need(r.size.batch_size > 0, "size.batch_size", "must be positive", "set size.batch_size: 64")
    need(r.sampling.max_tokens > 0, "sampling.max_tokens", "must be positive", "set sampling.max_tokens: 256")
    need(r.sampling.temperature >= 0, "sampling.temperature", "must be >= 0", "use 0.0 to 2.0")
    need(0 < r.sampling.top_p <= 1, "sampling.top_p", "must be in (0, 1]", "use e.g. 0.95")
    need(r.engine.num_replicas > 0, "engine.num_replicas", "must be positive", "use 1 or more")
    need(r.engine.tensor_parallel_size > 0, "engine.tensor_parallel_size", "must be positive", "use 1 or more")
    need(0 <= r.max_failure_rate <= 1, "max_failure_rate", "must be in [0, 1]", "use e.g. 0.2")
    need(0 < r.dedup.threshold <= 1, "dedup.threshold", "must be in (0, 1]", "use e.g. 0.8")
    need(0 <= r.dedup.max_duplicate_rate <= 1, "dedup.max_duplicate_rate", "must be in [0, 1]", "use e.g. 0.5")
    need(r.dedup.num_perm >= 16, "dedup.num_perm", "must be at least 16", "use 128")
    need(r.engine.backend != "openai" or bool(r.engine.base_url), "engine.base_url",
         "is required for backend openai", "set engine.base_url: http://host:8000/v1")
    for i, t in enumerate(r.templates):
        need(t.weight > 0, f"templates[{i}].weight", "must be positive", "use a number > 0")
    if r.model.startswith("embedded:"):
        need(r.model in EMBEDDED_MODELS, "model", f"{r.model!r} is not a known embedded model",
             f"use one of {sorted(EMBEDDED_MODELS)}, a Hugging Face id or a local path")
    if r.target is not None:
        t = r.target
        need(1 / t.k <= t.score <= t.k, "target.score", f"{t.score} is outside [1/K, K] = [{1 / t.k:.2f}, {t.k}]",
             "pick a score the judge can produce at this k")
        need(t.tolerance > 0, "target.tolerance", "must be > 0", "use e.g. 0.15")
        need(t.k >= 2, "target.k", "must be at least 2", "use the paper's k: 10")
        need(t.judge != "llm" or bool(t.judge_model), "target.judge",
             "is llm but no judge model is configured, so the target cannot be measured",
             "set target.judge_model (and target.judge_endpoint for a served model) or use judge: embed")
        need(t.num_batches >= 20, "target.num_batches", "must be at least 20", "use e.g. 3000")
        need(t.precision >= 0, "target.precision", "must be >= 0", "use 0 for tolerance / 3")
        need(t.max_pilot_rounds >= 1 and t.num_rounds >= 1, "target.max_pilot_rounds/num_rounds",
             "must be at least 1", "use the defaults 8 and 4")
        need(r.size.num_docs >= pilot_size(r), "size.num_docs",
             f"({r.size.num_docs}) is smaller than one pilot round ({pilot_size(r)} documents)",
             "raise size.num_docs or lower target.pilot_docs")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set size.num_docs=50` → {"size": {"num_docs": 50}}; values parse as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair!r}: expected key=value", fix="e.g. --set size.num_docs=50")
        key, raw = pair.split("=", 1)
        node = out
        *parents, last = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(raw) if raw else ""
    return out


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return merged


def read_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Parse and validate the recipe file itself (not the files it names)."""
    path = Path(path)
    where = str(path)
    data = read_yaml(path, "recipe", "pass the path of a YAML recipe")
    if not isinstance(data, dict):
        raise UserError(f"{where}: a recipe must be a mapping", fix="see recipes/quickstart.yaml")
    data.pop("recipe_hash", None)  # a run's recipe.resolved.yaml carries it; it is recomputed
    data = _merge(data, parse_overrides(overrides or []))
    if isinstance(data.get("keep_truncated"), bool):  # the older yes/no form
        data["keep_truncated"] = "keep" if data["keep_truncated"] else "drop"
    recipe = _build(Recipe, data, f"{where}: ")
    _check_values(recipe, where)
    base = path.resolve().parent
    grid = {k: str((base / v).resolve()) for k, v in recipe.grid.items()}
    templates = [TemplateSpec(str((base / t.path).resolve()), t.weight) for t in recipe.templates]
    roots = [base] + [(base / r).resolve() for r in recipe.roots]
    for key, p in [*((f"grid.{k}", v) for k, v in grid.items()),
                   *((f"templates[{i}].path", t.path) for i, t in enumerate(templates))]:
        if not any(Path(p).is_relative_to(root) for root in roots):
            raise UserError(f"{where}: {key} ({p}) is outside the recipe's folders {[str(r) for r in roots]}",
                            fix="move the file under the recipe's folder or add its folder to roots:")
    return dataclasses.replace(recipe, grid=grid, templates=templates, roots=[str(r) for r in roots],
                               path=str(path.resolve()))


@dataclass(frozen=True)
class Plan:
    """A recipe with its grid and templates loaded: everything generation needs."""

    recipe: Recipe
    grid: Grid
    templates: tuple[Template, ...]
    recipe_hash: str


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Plan:
    recipe = read_recipe(path, overrides)
    grid = load_grid({k: Path(v) for k, v in recipe.grid.items()})
    templates = tuple(load_template(Path(t.path)) for t in recipe.templates)
    probe = {**template_variables(grid, first_cell(grid, max(t.num_topics for t in templates))),
             "num_words": words_for_tokens(recipe.sampling.max_tokens)}
    for t in templates:
        check_template_against(t, grid.variables(), f"{recipe.path}: grid")
        t.render(probe)  # a template that fails at run time fails here, before any work starts
    return Plan(recipe=recipe, grid=grid, templates=templates, recipe_hash=hash_recipe(recipe))


def recipe_dict(recipe: Recipe) -> dict:
    d = dataclasses.asdict(recipe)
    d.pop("path")
    return d


def hash_recipe(recipe: Recipe) -> str:
    """Hash of the resolved recipe and the contents of every file it names."""
    d = recipe_dict(recipe)
    # File names, not absolute paths: the same recipe hashes the same in any checkout.
    d["grid"] = {k: Path(v).name for k, v in recipe.grid.items()}
    d["templates"] = [{"path": Path(t.path).name, "weight": t.weight} for t in recipe.templates]
    d.pop("roots")  # where files may come from is access control, not content
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
    for p in [*sorted(recipe.grid.values()), *(t.path for t in recipe.templates)]:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]
