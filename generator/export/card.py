"""Hugging Face dataset cards for run folders: `write_card(run_dir)` writes RUN_DIR/README.md.

The card has YAML front matter (license, language, task_categories, size_categories,
pretty_name, configs over data/*.parquet) and sections built from the run's own files:
recipe.resolved.yaml, summary.json, diversity.json (when scored), the Parquet shards and the
grid files the recipe names. Plots go to RUN_DIR/plots/ and are linked relatively: per-axis
histograms of what was generated, a 2-D embedding map coloured by domain, and the controller's
score_trajectory.png / weights.png when the run had a target.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import yaml

from generator.errors import UserError
from generator.records import GRID_COLUMNS, SCHEMA, SOURCE_SCHEMA
from generator.files import (atomic_write_text, read_documents, read_json, read_rows, read_run_yaml,
                             verify_fix)
from generator.export.card_plots import draw_plots
from generator.quality.report import quality_section


CARD_TEMPLATE = Path(__file__).parent / "templates" / "card.md.j2"
# the columns read for every document (texts are read only for the embedding maps' sample)
CARD_COLUMNS = [*GRID_COLUMNS, "grid_values", "num_tokens", "num_prompt_tokens", "finish_reason", "backend"]
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
MODEL_LICENSES = {"embedded:smollm2-135m": "apache-2.0"}  # SmolLM2 is Apache-2.0
COLUMNS = {
    "id": "hash of the request (prompt, system message, model, seed, sampling settings)",
    "text": "the generated document",
    "prompt": "the rendered prompt the model answered (a multi-part template's prompts separated by ---)",
    "system": "the system message (empty: the model's default)",
    "template": "prompt template (file stem in prompts/)",
    "domain": "topic domain (empty when the template used no topic)",
    "topic": "topic; several joined by '; ' for multi-topic templates",
    "persona": "writer persona (empty when unused)",
    "style": "text style (empty when unused)",
    "audience": "target audience (empty when unused)",
    "grid_values": "JSON of every grid value the prompt used, custom axes included",
    "model": "generating model", "backend": "inference backend",
    "temperature": "sampling temperature", "top_p": "nucleus sampling p", "max_tokens": "generation limit",
    "seed": "per-request sampling seed", "finish_reason": "stop or length (truncated)",
    "num_tokens": "generated tokens", "num_prompt_tokens": "prompt tokens",
    "sample_index": "index of the sample in the run", "round": "controller round that generated it",
    "recipe_hash": "hash of the resolved recipe and every file it names",
    "source_id": "rewrite runs: the source document rewritten", "chunk": "rewrite runs: its chunk rewritten",
    "rewrite": "rewrite runs: which of the chunk's per_source rewrites (0..k-1); -1 in a grid run"}


def write_card(run_dir: str | Path, *, embed: Callable[[Sequence[str]], np.ndarray] | None = None,
               seed: int = 0) -> Path:
    """Write RUN_DIR/README.md (and RUN_DIR/plots/*.png); return the card's path.
    `embed` maps texts to vectors (default: generator.measure.embeddings.embed_texts)."""
    run = Path(run_dir)
    if (run / "README.md").is_dir() and not (run / "README.md").is_symlink():
        raise UserError(f"{run / 'README.md'}: a folder where the card is written",
                        fix=f"move it out of {run} (the card is the file README.md)")
    recipe, summary = _read_yaml(run / "recipe.resolved.yaml"), _read_json(run / "summary.json")
    if recipe is None:
        raise UserError(f"{run}: no recipe.resolved.yaml, so this is not a run folder",
                        fix="pass the --out folder of `generator run`")
    table = read_documents(run, columns=CARD_COLUMNS).to_pydict()
    if not table["template"]:
        raise UserError(f"{run}: the run has no documents (data/shard-*.parquet)", fix="generate the corpus first")
    diversity = _read_json(run / "diversity.json")
    plots = draw_plots(run, table, embed=embed, rng=np.random.default_rng(seed), texts_at=partial(read_texts, run))
    fidelity = (summary or {}).get("fidelity") or (diversity or {}).get("fidelity")
    if fidelity and fidelity.get("num_docs"):
        from generator.measure.fidelity import plot_fidelity, report_from_dict
        plots["fidelity"] = plot_fidelity(report_from_dict(fidelity), run / "plots" / "fidelity.png").name
    card = render_card(run, recipe, summary or {}, diversity, table, plots)
    path = run / "README.md"
    atomic_write_text(path, card)
    return path


def read_texts(run: Path, rows: np.ndarray) -> list[str]:
    """The texts of the run's documents at `rows` (sorted), read from their row groups only."""
    return read_rows(run, rows, columns=["text"]).column("text").to_pylist()


def _read_json(path: Path) -> dict | None:
    """A report of the run (None when absent); a damaged one raises UserError (see run/verify.py)."""
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, got {type(data).__name__}", fix=verify_fix(path.parent))
    return data


def _read_yaml(path: Path) -> dict | None:
    """The run's resolved recipe (None when absent); a damaged one raises UserError."""
    if not path.exists():
        return None
    data = read_run_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a recipe mapping, got {type(data).__name__}",
                        fix=verify_fix(path.parent))
    return data


# ---- sections ------------------------------------------------------------------------------------

def front_matter(recipe: dict, num_docs: int) -> dict:
    size = next((label for limit, label in SIZE_CATEGORIES if num_docs < limit), "n>1B")
    return {"license": MODEL_LICENSES.get(recipe.get("model", ""), "other"), "language": ["en"],
            "task_categories": ["text-generation"], "size_categories": [size],
            "pretty_name": f"{recipe.get('name', 'generator run')} (synthetic)",
            "tags": ["synthetic", "pretraining"],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}]}


def grid_coverage(recipe: dict, table: Mapping[str, list], run: Path) -> list[dict]:
    """Per axis: distinct grid values the corpus used, against the grid's size (n/a when a grid
    file is gone). Values the grid does not hold (an edited grid file) are not counted."""
    from generator.sampling.grid import load_axis

    used: dict[str, set[str]] = {"template": set(table["template"])}
    for raw in table["grid_values"]:
        for axis, value in (json.loads(raw) if raw else {}).items():
            used.setdefault(axis, set()).add(value)
    grid: dict[str, set[str] | None] = {"template": {Path(t["path"]).stem for t in recipe.get("templates", [])}}
    for axis, path in (recipe.get("grid") or {}).items():
        if isinstance(path, dict):  # a seed-document axis: its values are documents
            grid[axis] = None
            continue
        try:
            values = load_axis(Path(path), axis).values
        except UserError:
            grid[axis] = None
            continue
        if any(v.domain for v in values):
            added = run / "grid.added.yaml"
            if added.is_file():
                values = values + load_axis(added, axis).values
            grid["domain"] = {v.domain for v in values}
            # multi-topic rows join their topics with "; "
            used[axis] = {part for v in used.get(axis, set()) for part in v.split("; ")} | used.get(axis, set())
        grid[axis] = {v.value for v in values}
    first = ["template", *[a for a in ("domain", "topic") if a in grid]]
    order = [*first, *sorted(set(grid) - set(first))]
    rows = []
    for axis in order:
        values = grid[axis]
        n = len(used.get(axis, set()) & values) if values is not None else len(used.get(axis, set()))
        size = len(values) if values is not None else None
        rows.append({"axis": axis, "used": n, "size": size, "share": f"{n / size:.0%}" if size else "n/a"})
    return rows


def _fmt(x) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def diversity_section(d: dict | None) -> dict | None:
    if not d:
        return None
    ci = f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}]" if d.get("ci_low") is not None else ""
    proxies = [(k, _fmt(v)) for k, v in (d.get("proxies") or {}).items()]
    shift = [(k, _fmt(v)) for k, v in (d.get("shift") or {}).items() if isinstance(v, (int, float))]
    return {"score": f"{d['score']:.3f}", "ci": ci, "judge": d.get("judge", d.get("judge_kind", "?")),
            "k": d.get("k"), "num_scored": d.get("num_scored"), "cluster_ratio": _fmt(d.get("cluster_ratio")),
            "proxies": proxies, "shift": shift}


MAX_VIEW_ROWS = 12  # values of one column listed in the card's "what each value adds" table


def views_section(d: dict | None) -> dict | None:
    """The two-view judge's report (diversity.json's `views` and `attribution.by_view`): D under
    each view alone, how many templates, styles and personas add subject or form diversity, and
    the values that add most, with their `apart` under each view (`judges.attribution`)."""
    if not d or not d.get("views"):
        return None
    from generator.judges.attribution import APART, MIN_PAIRS
    from generator.measure.report import VIEW_COLUMNS

    scores = [(view, f"{v['score']:.3f}",
               f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}]" if v.get("ci_low") is not None else "")
              for view, v in d["views"].items()]
    by_view = (d.get("attribution") or {}).get("by_view") or {}
    counts, rows = [], []
    for column in (c for c in VIEW_COLUMNS if by_view.get(c)):
        kinds = {name: added_kind(stats) for name, stats in by_view[column].items()}
        counts.append({"column": column, "values": len(kinds),
                       **{kind: sum(k == kind for k in kinds.values()) for kind in ADDED_KINDS}})
        ranked = sorted(by_view[column].items(),
                        key=lambda kv: (ADDED_KINDS.index(kinds[kv[0]]), -_most_apart(kv[1])))
        rows.extend([column, name, kinds[name], *(_fmt_apart(stats.get(view)) for view in d["views"])]
                    for name, stats in ranked[:MAX_VIEW_ROWS])
    return {"scores": scores, "counts": counts, "rows": rows, "max_rows": MAX_VIEW_ROWS, "apart": APART,
            "min_pairs": MIN_PAIRS,
            "header": ["column", "value", "adds", *(f"apart, {view}" for view in d["views"])]}


ADDED_KINDS = ("subject and form", "subject", "form", "neither", "too few pairs")


def added_kind(stats: dict) -> str:
    """Which of ADDED_KINDS a value's by-view record says it adds."""
    from generator.judges.attribution import MIN_PAIRS

    adds = stats.get("adds") or []
    if adds:
        return " and ".join(view for view in ("subject", "form") if view in adds)
    pairs = [s.get("mixed_pairs", 0) for view, s in stats.items() if isinstance(s, dict)]
    return "neither" if pairs and max(pairs) >= MIN_PAIRS else "too few pairs"


def _most_apart(stats: dict) -> float:
    return max((s["apart"] for s in stats.values() if isinstance(s, dict) and s.get("apart") is not None),
               default=-np.inf)


def _fmt_apart(stats: dict | None) -> str:
    if not stats or stats.get("apart") is None:
        return "–"
    return f"{stats['apart']:.2f} ({stats['mixed_pairs']} pairs)"


def fidelity_section(f: dict | None) -> dict | None:
    """The on-topic fidelity of the corpus (summary.json's, else diversity.json's): overall and
    one row per template, style and domain."""
    if not f or not f.get("num_docs"):
        return None
    rows = [{"column": g["column"], "value": g["value"], "num_docs": g["num_docs"], "share": f"{g['topic_share']:.2f}",
             "ci": f"[{g.get('ci_low', float('nan')):.2f}, {g.get('ci_high', float('nan')):.2f}]",
             "style": f"{g['style_share']:.2f} (n={g['num_style_docs']})" if g.get("style_share") is not None else "–"}
            for g in f["groups"] if g["num_docs"]]
    return {"share": f"{f['topic_share']:.3f}", "ci": f"[{f.get('ci_low', float('nan')):.3f}, "
            f"{f.get('ci_high', float('nan')):.3f}]", "num_docs": f["num_docs"], "top_r": f["top_r"],
            "num_topics": f["num_topics"], "min_cosine": f["min_cosine"], "rows": rows}


def steering_section(summary: dict) -> dict | None:
    target = summary.get("target")
    if not target:
        return None
    achieved = summary.get("achieved") or {}
    if achieved:
        ci = (f" (95% interval [{achieved['ci_low']:.3f}, {achieved['ci_high']:.3f}])"
              if achieved.get("ci_low") is not None else "")
        within = "within" if achieved.get("within_tolerance") else "outside"
        achieved_text = f"D = {achieved['score']:.3f}{ci}, {within} tolerance"
        if achieved.get("draw_sd"):  # the interval above resamples batches; this is the spread between corpora
            achieved_text += (f"; another corpus drawn at the same settings would differ by about "
                              f"±{1.96 * achieved['draw_sd']:.2f} (95%, from the pilots' draw sd)")
    else:
        achieved_text = "not measured (the run stopped early)"
    rounds = summary.get("rounds") or {}
    return {"target": f"{round(target['score'], 4)} ± {target.get('tolerance')} "
                      f"(judge {target.get('judge')}, K = {target.get('k')})",
            "achieved": achieved_text,
            "rounds": f"{rounds.get('pilot', 0)} pilot, {rounds.get('main', 0)} main",
            "out_of_reach": summary.get("out_of_reach"),
            "reference": reference_rows(summary),
            "cost": [(k, _fmt(v)) for k, v in (summary.get("cost") or {}).items()]}


def reference_rows(summary: dict) -> list[tuple[str, str]]:
    """The steering rows of a run with a reference corpus: its D, the relative target, the
    achieved relative D and the shift against the bound."""
    ref, target, achieved = summary.get("reference"), summary.get("target") or {}, summary.get("achieved") or {}
    if not ref:
        return []
    rows = [("reference D", f"{ref['score']:.3f} (95% interval [{ref['ci_low']:.3f}, {ref['ci_high']:.3f}], "
                            f"{ref['num_docs']} documents)")]
    if target.get("relative") is not None:
        rows.append(("target, relative", f"{target['relative']:g} × reference D = {target['score']:.3f}"))
    if "relative" in achieved:
        rows.append(("achieved, relative", f"{achieved['relative']:.3f} × reference D (95% interval "
                                           f"[{achieved['relative_ci_low']:.3f}, {achieved['relative_ci_high']:.3f}])"))
        bound = target.get("max_shift")
        se = f" ± {achieved['shift_se']:.4f} (standard error)" if achieved.get("shift_se") else ""
        rows.append(("shift from reference (MMD²)", f"{achieved['shift']:.4f}{se}" + (
            f", bound {bound:g}: {'within' if achieved['within_shift_bound'] else 'over'}" if bound else ", no bound")))
    if summary.get("binding"):
        rows.append(("binding constraint", summary["binding"]))
    return rows


def count_section(summary: dict, table: Mapping[str, list]) -> dict:
    tokens = np.asarray(table["num_tokens"], dtype=np.int64)
    finish = Counter(table["finish_reason"])
    return {"num_docs": len(tokens), "num_failed": summary.get("num_failed", "n/a"),
            "num_eos": finish.get("stop", 0), "num_trimmed": finish.get("trimmed", 0),
            "num_truncated": finish.get("length", 0), "completion_tokens": int(tokens.sum()),
            "prompt_tokens": int(np.sum(table["num_prompt_tokens"])), "mean_tokens": f"{tokens.mean():.1f}",
            "median_tokens": f"{np.median(tokens):g}", "max_tokens": int(tokens.max()),
            "tokens_per_s": summary.get("tokens_per_s")}


def render_card(run: Path, recipe: dict, summary: dict, diversity: dict | None, table: Mapping[str, list],
                plots: dict) -> str:
    from generator.sampling.templates import sandbox

    sampling, engine = recipe.get("sampling") or {}, recipe.get("engine") or {}
    recipe_rows = {
        "name": recipe.get("name"), "recipe_hash": recipe.get("recipe_hash"), "seed": recipe.get("seed"),
        "num_docs": (recipe.get("size") or {}).get("num_docs"),
        "templates": ", ".join(f"{Path(t['path']).stem} (weight {t.get('weight', 1):g})"
                               for t in recipe.get("templates", [])),
        "grid": ", ".join(f"{axis}: {Path(p if isinstance(p, str) else p['path']).name}"
                          for axis, p in (recipe.get("grid") or {}).items()),
        "temperature": sampling.get("temperature"), "top_p": sampling.get("top_p"),
        "max_tokens": sampling.get("max_tokens"), "system_prompt": recipe.get("system_prompt")}
    model = {"model": recipe.get("model"), "backend": ", ".join(sorted(set(table["backend"]))),
             "engine": f"{engine.get('num_replicas', 1)} replica(s) × tensor parallel "
                       f"{engine.get('tensor_parallel_size', 1)}, "
                       f"dtype {engine.get('dtype', 'auto')}"}
    source = CARD_TEMPLATE.read_text(encoding="utf-8")
    return sandbox().from_string(source).render(
        front_matter=yaml.safe_dump(front_matter(recipe, len(table["template"])), sort_keys=False, allow_unicode=True),
        pretty_name=front_matter(recipe, 0)["pretty_name"], recipe=recipe_rows, model=model,
        counts=count_section(summary, table), coverage=grid_coverage(recipe, table, run),
        diversity=diversity_section(diversity), views=views_section(diversity),
        steering=steering_section(summary), plots=plots,
        quality=quality_section(summary), sources=summary.get("sources"), by_value=summary.get("by_value"),
        fidelity=fidelity_section(summary.get("fidelity") or (diversity or {}).get("fidelity")),
        columns=[(c, COLUMNS.get(c, "")) for c in (SOURCE_SCHEMA if "sources" in summary else SCHEMA).names],
        data_dir="data").rstrip() + "\n"
