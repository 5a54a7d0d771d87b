"""Recipes: YAML files loaded into frozen dataclasses, validated before any work starts.

YAML keys equal the dataclass field names below; unknown keys are rejected with the valid ones
listed; relative paths resolve against the recipe file; every value is checked
(`recipe_checks`). `load_recipe` also loads the grid and the templates, checks that each
template's variables and topics are provided by the grid, and renders every template over cells
that together hold every axis value, so a template that would fail mid-run fails here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from generator.errors import UserError
from generator.judges.config import JudgeSettings
from generator.quality.checks import check_quality_files
from generator.quality.config import Quality, expand_gates, resolve_quality
from generator.quality.evalsets import EvalSet, read_eval_set
from generator.readers import read_reference
from generator.sampling.grid import Cell, Grid, load_document_axis, load_grid, template_variables, with_axis
from generator.sampling.sandbox import time_budget
from generator.sampling.templates import Template, check_template_against, load_template
from generator.recipe_checks import check_num_topics, check_recipe_values
from generator.schema import build_record, merge_overrides, parse_overrides  # noqa: F401 (parse_overrides: re-exported)
from generator.sources.config import Source, check_source, is_url
from generator.sources.units import SourcePlan
from generator.yamlfiles import read_yaml

@dataclass(frozen=True)
class TemplateSpec:
    path: str
    weight: float = 1.0


@dataclass(frozen=True)
class Size:
    num_docs: int
    shard_rows: int = 20_000  # documents per Parquet shard (a shard is also closed after 30 s with rows waiting)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256


@dataclass(frozen=True)
class Engine:
    """Where generation runs. `ray`: `num_replicas` Ray actors, each a vLLM engine over `tensor_parallel_size`
    GPUs (CPU-only without GPUs); `vllm`: one in-process engine; `openai`: an endpoint at `base_url`."""

    backend: Literal["ray", "vllm", "openai"] = "ray"
    num_replicas: int = 1
    tensor_parallel_size: int = 1
    max_model_len: int = 2048
    dtype: str = "auto"  # CPU: bfloat16 where native (AVX512_BF16, AMX), else float32; GPU: the model's
    gpu_memory_utilization: float = 0.9
    cpu_kvcache_gib: int = 2
    enforce_eager: bool = True
    max_num_seqs: int | None = None  # sequences an engine decodes at once; unset: vLLM's default (256 CPU, 1024 H100)
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 256
    timeout_s: float = 120.0
    max_retries: int = 3


@dataclass(frozen=True)
class Target:
    """The diversity to steer to: D on the cluster-agent scale at batch size `k`, measured by
    `judge`. The controller measures a sweep of concentrations at once (and at most one refining
    sweep), keeps the point that lands, then generates the rest in `num_rounds` rounds, correcting
    after each."""

    score: float | None = None  # absolute D; give exactly one of score and relative
    relative: float | None = None  # D as a multiple of the reference corpus' D (needs `reference:`)
    max_shift: float | None = None  # most MMD² of corpus vs reference embeddings (needs `reference:`)
    tolerance: float = 0.15
    judge: Literal["embed", "embed-subject", "llm"] = "embed"
    k: int = 10
    judge_model: str = ""  # moved to judge.model; kept so a recipe naming it gets an error that says so
    judge_endpoint: str = ""  # moved to judge.endpoint (with judge.backend: openai)
    threshold: float = 0.0  # embed judge cosine-distance cut; 0 = the judge's default
    num_batches: int = 3000  # most K-batches judged per measurement
    precision: float = 0.0  # stop judging once the 95% half-width of D is this small; 0 = tolerance / 3
    pilot_docs: int = 0  # samples per point of a pilot sweep; 0 = derived from size.num_docs
    max_pilot_rounds: int = 2  # pilot rounds, each a sweep of several c at once (the first and one refining)
    num_rounds: int = 4  # main-phase rounds after the pilot
    reweight_rate: float = 1.0  # per-cell reweighting strength (0 disables it)
    grow_grid: bool = True  # propose new topics when the grid cannot reach the target
    max_growth_rounds: int = 2
    growth_topics_per_domain: int = 8
    # On-topic share (measure/fidelity.py) every main round must keep, else the run stops; 0 = only warn below 0.5.
    min_fidelity: float = 0.0
    llm_batches: int = 40  # llm judge: batches it judges to calibrate the embedding judge, and at most to confirm
    llm_share: float = 0.05  # llm judge: its tokens at most this share of the corpus's (0: llm_batches every use)


def pilot_size(recipe: "Recipe") -> int:
    """Samples per point of a pilot sweep: 1% of the corpus, at least 5 K-batches' worth, at most
    400 (a sweep has four points, so its documents not kept stay near 3% of a large corpus)."""
    t = recipe.target
    if t is None:
        return 0
    return t.pilot_docs or int(min(max(0.01 * recipe.size.num_docs, 5 * t.k), 400))


@dataclass(frozen=True)
class Scoring:
    """How `generator run` scores its output at the end (OUT/diversity.json)."""

    enabled: bool = True
    judge: Literal["embed", "embed-subject", "llm"] = "embed"
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
class Reference:
    """Real documents the corpus is compared with: their D (same judge and K as the target),
    proxies and embeddings are measured once per run (OUT/reference.json)."""

    path: str  # Parquet file or folder, JSONL file, or a `save_to_disk` folder
    text_field: str = "text"
    num_docs: int = 500  # documents sampled from it (seeded by the recipe seed); 0 = all


@dataclass(frozen=True)
class SeedDocs:
    """A grid axis whose values are real documents (templates see the text as the axis name,
    plus `<axis>_id` and `<axis>_source`; rows keep the id and source in grid_values)."""

    path: str
    text_field: str = "text"
    max_chars: int = 1500  # longer documents are cut at the last word before this


@dataclass(frozen=True)
class Recipe:
    name: str
    grid: dict[str, str | SeedDocs]
    templates: list[TemplateSpec]
    size: Size
    model: str = "embedded:smollm2-135m"
    seed: int = 0
    system_prompt: str = ""  # every request's system message; "" keeps each template's own (if any)
    sampling: Sampling = field(default_factory=Sampling)
    engine: Engine = field(default_factory=Engine)
    scoring: Scoring = field(default_factory=Scoring)
    judge: JudgeSettings = field(default_factory=JudgeSettings)  # the LLM judge, for target and scoring
    target: Target | None = None
    reference: Reference | None = None
    dedup: Dedup = field(default_factory=Dedup)
    quality: Quality | None = None  # gates every document passes before it is kept (generator/quality)
    roots: list[str] = field(default_factory=list)  # folders grids and templates may load from
    # An answer cut at max_tokens: "trim" it back to its last complete sentence (finish_reason
    # "trimmed"), "keep" it as cut, or "drop" it as a failed row. YAML true/false mean keep/drop.
    keep_truncated: Literal["trim", "keep", "drop"] = "trim"
    max_failure_rate: float = 0.2
    # a corpus rewritten per_source times per unit (size.num_docs follows from it)
    source: Source | None = None
    path: str = field(default="", metadata={"internal": True})  # where it was read from; not a YAML key


def read_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Parse and validate the recipe file itself (not the files it names)."""
    path = Path(path)
    where = str(path)
    data = read_yaml(path, "recipe", "pass the path of a YAML recipe")
    if not isinstance(data, dict):
        raise UserError(f"{where}: a recipe must be a mapping", fix="see recipes/quickstart.yaml")
    data.pop("recipe_hash", None)  # a run's recipe.resolved.yaml carries it; it is recomputed
    data = merge_overrides(data, parse_overrides(overrides or []))
    if "quality" in data:
        data["quality"] = expand_gates(data["quality"])
    if isinstance(data.get("keep_truncated"), bool):  # the older yes/no form
        data["keep_truncated"] = "keep" if data["keep_truncated"] else "drop"
    given_docs = source_size(data)
    recipe = build_record(Recipe, data, f"{where}: ")
    if recipe.source is not None:
        check_source(recipe.source, recipe, where)
    check_recipe_values(recipe, where, pilot_docs=pilot_size(recipe))
    if recipe.source is not None:
        recipe = dataclasses.replace(recipe, size=dataclasses.replace(recipe.size, num_docs=given_docs))
    base = path.resolve().parent
    grid = {k: str((base / v).resolve()) if isinstance(v, str) else dataclasses.replace(v, path=str((base / v.path).resolve()))
            for k, v in recipe.grid.items()}
    templates = [TemplateSpec(str((base / t.path).resolve()), t.weight) for t in recipe.templates]
    reference = recipe.reference and dataclasses.replace(recipe.reference, path=str((base / recipe.reference.path).resolve()))
    source = recipe.source
    if source is not None and not is_url(source.path):
        source = dataclasses.replace(source, path=str((base / source.path).resolve()))
    roots = [base] + [(base / r).resolve() for r in recipe.roots]
    quality = resolve_quality(recipe.quality, base)
    evals = quality.decontaminate if quality else []
    rubric = quality.llm_score.rubric if quality and quality.llm_score else ""
    for key, p in [*((f"grid.{k}", v if isinstance(v, str) else v.path) for k, v in grid.items()),
                   *((f"templates[{i}].path", t.path) for i, t in enumerate(templates)),
                   *([("reference.path", reference.path)] if reference else []),
                   *([("source.path", source.path)] if source and not is_url(source.path) else []),
                   *((f"quality.decontaminate[{i}]", p) for i, p in enumerate(evals)),
                   *([("quality.llm_score.rubric", rubric)] if rubric else [])]:
        if not any(Path(p).is_relative_to(root) for root in roots):
            raise UserError(f"{where}: {key} ({p}) is outside the recipe's folders {[str(r) for r in roots]}",
                            fix="move the file under the recipe's folder or add its folder to roots:")
    return dataclasses.replace(recipe, grid=grid, templates=templates, reference=reference, quality=quality,
                               source=source, roots=[str(r) for r in roots], path=str(path.resolve()))


def source_size(data: dict) -> int:
    """With `source:`, the size.num_docs the recipe gives (0: none; the source sets it), replaced in
    `data` by a placeholder that passes the checks until `load_recipe` counts the source."""
    if not isinstance(data.get("source"), dict):
        return 0
    size = data.get("size", {})
    if not isinstance(size, dict):
        return 0
    data["size"] = {**size, "num_docs": 10**9}
    given = size.get("num_docs", 0)
    return given if isinstance(given, int) else 0


@dataclass(frozen=True)
class Plan:
    """A recipe with its grid and templates loaded: everything generation needs."""

    recipe: Recipe
    grid: Grid
    templates: tuple[Template, ...]
    recipe_hash: str
    reference_texts: tuple[str, ...] = ()  # the sampled reference documents, when the recipe has one
    eval_sets: tuple[EvalSet, ...] = ()  # quality.decontaminate's evaluation sets, read
    source: SourcePlan | None = None  # the corpus rewritten, counted (generator/sources)


def load_recipe(path: str | Path, overrides: list[str] | None = None, *,
                resume_from: Path | None = None) -> Plan:
    """The recipe at `path` loaded and checked; `resume_from`: the run folder a resume continues,
    whose recorded source count (`sources/record.py`) spares a pass over a `source:`."""
    recipe = read_recipe(path, overrides)
    grid = load_grid({k: Path(v) for k, v in recipe.grid.items() if isinstance(v, str)})
    for name, spec in recipe.grid.items():
        if isinstance(spec, SeedDocs):
            grid = with_axis(grid, load_document_axis(name, Path(spec.path), spec.text_field, spec.max_chars,
                                                     where=f"{recipe.path}: grid.{name}"))
    grid = Grid({name: grid.axes[name] for name in recipe.grid})  # the recipe's axis order
    templates = tuple(load_template(Path(t.path)) for t in recipe.templates)
    source, unit = None, {}
    if recipe.source is not None:
        source, unit = load_source_section(recipe, templates, resume_from)
        recipe = dataclasses.replace(recipe, size=dataclasses.replace(recipe.size, num_docs=source.num_units
                                                                      * recipe.source.per_source))
    for t in templates:
        check_template_against(t, grid.variables() | set(unit), f"{recipe.path}: grid")
    topic_axis = grid.axes.get("topic")
    check_num_topics(templates, len(topic_axis.values) if topic_axis else 0, f"{recipe.path}: grid")
    cells = [{**template_variables(grid, c), **unit}
             for c in probe_cells(grid, max(t.num_topics for t in templates))]
    if source is not None:
        from generator.sources.load import check_chunk_room, check_steered
        check_chunk_room(source, templates, cells[0], recipe, source.cursor.count, recipe.path)
        if recipe.target is not None:
            check_steered(source, recipe, pilot_size(recipe), recipe.path)
    for t in templates:
        with time_budget(PROBE_BUDGET_S):
            for variables in cells:
                # a template that fails at run time fails here
                t.prompts(variables, recipe.sampling.max_tokens)
    reference = ()
    if recipe.reference is not None:
        k = recipe.target.k if recipe.target else recipe.scoring.k
        reference = tuple(read_reference(recipe.reference, seed=recipe.seed, k=k,
                                         where=f"{recipe.path}: reference"))
    check_quality_files(recipe.quality, recipe.path)
    eval_sets = tuple(read_eval_set(Path(p), f"{recipe.path}: quality.decontaminate")
                      for p in (recipe.quality.decontaminate if recipe.quality else []))
    return Plan(recipe=recipe, grid=grid, templates=templates, recipe_hash=hash_recipe(recipe),
                reference_texts=reference, eval_sets=eval_sets, source=source)


def load_source_section(recipe: Recipe, templates,
                        resume_from: Path | None = None) -> tuple[SourcePlan, dict]:
    """The recipe's source, counted, and the variables of its first unit (to probe templates with)."""
    from generator.sources.load import open_recipe_source, unit_variables
    source = open_recipe_source(recipe, recipe.path, resume_from)
    return source, unit_variables(source.units([0])[0], source.name, 0)


PROBE_CELLS = 1000  # most cells every template renders when the recipe loads
PROBE_BUDGET_S = 2.0  # wall time those renders may take, per template (a usual render takes well under 1 ms)


def probe_cells(grid: Grid, num_topics: int) -> list[Cell]:
    """Cells that together hold every value of every axis (up to PROBE_CELLS cells): cell i takes
    value i of each axis (wrapping around), and the topics after its own as further topics."""
    cells = []
    for i in range(min(max(len(a.values) for a in grid.axes.values()), PROBE_CELLS)):
        values: dict[str, str] = {}
        for name, axis in grid.axes.items():
            v = axis.values[i % len(axis.values)]
            values[name] = v.value
            if v.domain:
                values["domain"] = v.domain
        topics = grid.axes["topic"].values if "topic" in grid.axes else ()
        extra = tuple(topics[(i + j) % len(topics)].value for j in range(1, num_topics)) if topics else ()
        cells.append(Cell(values=values, extra_topics=extra))
    return cells


def recipe_inputs(recipe: Recipe) -> list[str]:
    """Every file and folder the recipe reads: grid files, seed documents, templates, reference."""
    grid = [v if isinstance(v, str) else v.path for v in recipe.grid.values()]
    reference = [recipe.reference.path] if recipe.reference else []
    evals = recipe.quality.decontaminate if recipe.quality else []
    source = [recipe.source.path] if recipe.source and not is_url(recipe.source.path) else []
    return [*grid, *(t.path for t in recipe.templates), *reference, *evals, *source]


def recipe_dict(recipe: Recipe) -> dict:
    d = dataclasses.asdict(recipe)
    d.pop("path")
    return d


def hash_recipe(recipe: Recipe) -> str:
    """Hash of the resolved recipe and the contents of every file it names."""
    d = recipe_dict(recipe)
    # File names, not absolute paths: the same recipe hashes the same in any checkout.
    d["grid"] = {k: Path(v).name if isinstance(v, str) else {**dataclasses.asdict(v), "path": Path(v.path).name}
                 for k, v in recipe.grid.items()}
    d["templates"] = [{"path": Path(t.path).name, "weight": t.weight} for t in recipe.templates]
    d.pop("roots")  # where files may come from is access control, not content
    # Keys added later are hashed only when set, so older recipes keep their hash.
    if d["reference"] is None:
        d.pop("reference")
    else:
        d["reference"]["path"] = Path(recipe.reference.path).name
    if d["quality"] is None:
        d.pop("quality")
    else:
        d["quality"]["decontaminate"] = [Path(p).name for p in recipe.quality.decontaminate]
        if d["quality"]["llm_score"] is None:
            d["quality"].pop("llm_score")
        elif d["quality"]["llm_score"]["rubric"]:
            d["quality"]["llm_score"]["rubric"] = Path(recipe.quality.llm_score.rubric).name
    if d["judge"] == dataclasses.asdict(JudgeSettings()):
        d.pop("judge")
    if d["source"] is None:
        d.pop("source")
    else:  # the source by its files' names and sizes (reading a large corpus to hash it costs too much)
        from generator.sources.read import fingerprint
        d["source"]["path"] = fingerprint(recipe.source)
    for key, unset in (("relative", None), ("max_shift", None), ("min_fidelity", 0.0), ("llm_batches", 40),
                       ("llm_share", 0.05)):
        if d["target"] is not None and d["target"][key] == unset:
            d["target"].pop(key)
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
    files = [*sorted(v for v in recipe.grid.values() if isinstance(v, str)), *(t.path for t in recipe.templates)]
    data = [v.path for v in recipe.grid.values() if isinstance(v, SeedDocs)]
    evals = recipe.quality.decontaminate if recipe.quality else []
    rubric = recipe.quality.llm_score.rubric if recipe.quality and recipe.quality.llm_score else ""
    for p in [*files, *data, *([recipe.reference.path] if recipe.reference else []), *evals,
              *([rubric] if rubric else [])]:
        for f in ([Path(p)] if Path(p).is_file() else sorted(q for q in Path(p).rglob("*") if q.is_file())):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
