"""`generator export`: write a token-weighted mix of runs and real corpora for a trainer.

Every export holds the documents per source, one neutral `recipe.yaml` (sources, files,
document and token counts, requested and achieved weights, provenance) and the files of the
chosen format, each rendered from that recipe alone:

    datatrove   documents/<source>/part-*.parquet (id, text, metadata) + tokenize_datatrove.py
    nanotron    the datatrove files + nanotron_data.yaml (dataset_folder / dataset_weights over
                the tokenized/<source> folders the script writes)
    megatron    documents/<source>.jsonl + preprocess_megatron.sh (tools/preprocess_data.py)
                + megatron_blend.txt (--data-args-path) + megatron_data_args.json
                (--per-split-data-args-path)
    olmo        tokens/<source>/<tokenizer>/part-*.npy (uint32 ids, EOS after each document)
                + olmo_mix.txt (OLMo-core `label,path` manifest with {TOKENIZER})

The mix is realised in the documents themselves (see generator.export.mixes), so every consumer's
blend weights are the token shares the files hold: each source is read about once per pass.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from generator.errors import UserError
from generator.export.mixes import PROVENANCE_COLUMNS, Mix, MixedSource, encode_texts
from generator.files import atomic_write_text, write_yaml
from generator.outputs import check_out_dir

FORMATS = ("datatrove", "megatron", "nanotron", "olmo")
DOCS_PER_FILE = 100_000
TEMPLATES = Path(__file__).parent / "templates"
METADATA_TYPE = pa.struct([("source", pa.string()), ("source_kind", pa.string()), ("source_id", pa.string()),
                           ("epoch", pa.int64()), ("num_tokens", pa.int64()),
                           *[(c, pa.string()) for c in PROVENANCE_COLUMNS]])
DOCUMENT_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("metadata", METADATA_TYPE)])


def check_out(out: Path, inputs: Sequence[str | Path] = ()) -> None:
    """The export folder: new or empty, writable, outside every source in `inputs`."""
    check_out_dir(out, "--out", inputs=inputs)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: exists and is not an empty folder", fix="choose a new --out folder")


def format_weights(recipe: dict) -> str:
    lines = [f"{'source':<20} {'kind':<7} {'docs':>8} {'tokens':>11} {'epochs':>7} {'requested':>10} {'achieved':>9}"]
    for s in recipe["sources"]:
        lines.append(f"{s['name']:<20} {s['kind']:<7} {s['num_docs']:>8} {s['tokens']:>11} {s['repetition']:>7.2f} "
                     f"{s['requested_weight']:>10.4f} {s['achieved_weight']:>9.4f}")
    return "\n".join(lines)


# ---- writing ------------------------------------------------------------------------------------

def export_mix(mix: Mix, out: Path, fmt: str) -> dict:
    """Write the documents, recipe.yaml and the format's files; return the recipe."""
    if fmt not in FORMATS:
        raise UserError(f"--to {fmt!r}: unknown format", fix=f"use one of {', '.join(FORMATS)}")
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = {"datatrove": write_parquet, "nanotron": write_parquet, "megatron": write_jsonl,
              "olmo": write_tokens}[fmt]
    files = {s.spec.name: writer(mix, s, out) for s in mix.sources}
    recipe = neutral_recipe(mix, fmt, files)
    write_yaml(out / "recipe.yaml", recipe)
    for name, text in render_format(recipe, out).items():
        atomic_write_text(out / name, text)
    return recipe


def _rows(source: MixedSource):
    corpus = source.corpus
    for i, epoch in zip(source.picks.tolist(), source.epochs.tolist()):
        doc_id = f"{corpus.name}/{corpus.ids[i]}" + (f"#{epoch}" if epoch else "")
        meta = {"source": corpus.name, "source_kind": corpus.kind, "source_id": corpus.ids[i], "epoch": epoch,
                "num_tokens": int(corpus.num_tokens[i]), **{c: corpus.columns[c][i] for c in PROVENANCE_COLUMNS}}
        yield doc_id, corpus.texts[i], meta


def _chunks(source: MixedSource) -> list[slice]:
    n = len(source.picks)
    return [slice(start, start + DOCS_PER_FILE) for start in range(0, max(n, 1), DOCS_PER_FILE)]


def write_parquet(mix: Mix, source: MixedSource, out: Path) -> list[str]:
    rows = list(_rows(source))
    folder = out / "documents" / source.spec.name
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for part, chunk in enumerate(_chunks(source)):
        ids, texts, metas = zip(*rows[chunk]) if rows[chunk] else ((), (), ())
        table = pa.Table.from_pydict({"id": list(ids), "text": list(texts), "metadata": list(metas)},
                                     schema=DOCUMENT_SCHEMA)
        path = folder / f"part-{part:05d}.parquet"
        pq.write_table(table, path)
        files.append(str(path.relative_to(out)))
    return files


def write_jsonl(mix: Mix, source: MixedSource, out: Path) -> list[str]:
    path = out / "documents" / f"{source.spec.name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text, meta in _rows(source):
            f.write(json.dumps({"id": doc_id, "text": text, **meta}, ensure_ascii=False) + "\n")
    return [str(path.relative_to(out))]


def write_tokens(mix: Mix, source: MixedSource, out: Path) -> list[str]:
    """OLMo-core token files: raw uint32 arrays (np.memmap, no header), EOS after each document."""
    encoded = encode_texts(mix.tokenizer, source.corpus.texts)
    folder = out / "tokens" / source.spec.name / mix.tokenizer.name
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for part, chunk in enumerate(_chunks(source)):
        ids = [t for i in source.picks[chunk].tolist() for t in (*encoded[i], mix.tokenizer.eos_token_id)]
        path = folder / f"part-{part:05d}.npy"
        np.asarray(ids, dtype=np.uint32).tofile(path)
        files.append(str(path.relative_to(out)))
    return files


def neutral_recipe(mix: Mix, fmt: str, files: dict[str, list[str]]) -> dict:
    """The one description every format's files are rendered from (paths relative to the export)."""
    t = mix.tokenizer
    sources = [{
        "name": s.spec.name, "kind": s.corpus.kind, "input": s.corpus.path, "files": files[s.spec.name],
        "num_docs": int(len(s.picks)), "num_unique_docs": int(len(np.unique(s.picks))),
        "docs_available": len(s.corpus.texts), "tokens": s.tokens, "tokens_available": s.corpus.available_tokens,
        "target_tokens": s.target_tokens, "repetition": round(s.repetition, 6),
        "requested_weight": round(s.requested_weight, 6), "achieved_weight": round(mix.achieved_weight(s), 6),
        "provenance": dict(s.corpus.provenance),
    } for s in mix.sources]
    return {
        "format": fmt,
        "created_by": "generator export",
        "seed": mix.seed,
        "tokenizer": {"path": t.path, "name": t.name, "eos_token": t.eos_token, "eos_token_id": t.eos_token_id,
                      "vocab_size": t.vocab_size},
        "token_counts": "tokens of the document text only; a consumer appending one EOS per document "
                        "adds num_docs tokens per source",
        "max_repetition": mix.max_repetition,
        "total_tokens": {"requested": mix.requested_total_tokens, "achieved": mix.total_tokens},
        "sources": sources,
    }


# ---- rendering: recipe -> the format's files ------------------------------------------------------

def render_format(recipe: dict, root: Path) -> dict[str, str]:
    renderers: dict[str, Callable[[dict, Path], dict[str, str]]] = {
        "datatrove": render_datatrove, "nanotron": render_nanotron,
        "megatron": render_megatron, "olmo": render_olmo}
    return renderers[recipe["format"]](recipe, root)


def _render(template: str, **variables) -> str:
    from generator.sampling.templates import sandbox

    source = (TEMPLATES / template).read_text(encoding="utf-8")
    return sandbox().from_string(source).render(**variables).rstrip() + "\n"


def render_datatrove(recipe: dict, root: Path) -> dict[str, str]:
    folders = {s["name"]: str(Path(s["files"][0]).parent) for s in recipe["sources"]}
    tok = recipe["tokenizer"]
    script = _render("tokenize_datatrove.py.j2", sources=recipe["sources"], folders=repr(folders),
                     tokenizer=repr(tok["path"]), eos=repr(tok["eos_token"]), eos_token=tok["eos_token"],
                     seed=recipe["seed"])
    return {"tokenize_datatrove.py": script}


def render_nanotron(recipe: dict, root: Path) -> dict[str, str]:
    names = [s["name"] for s in recipe["sources"]]
    stage = {"data_stages": [{
        "name": "generator-mix", "start_training_step": 1,
        "data": {"dataset": {"dataset_folder": [str(root.resolve() / "tokenized" / n) for n in names],
                             "dataset_weights": [s["achieved_weight"] for s in recipe["sources"]]},
                 "num_loading_workers": 1, "seed": recipe["seed"]}}]}
    header = ("# nanotron data stage written by `generator export`: merge into your nanotron config.\n"
              "# Run `python tokenize_datatrove.py` first; it writes the tokenized/<source> folders\n"
              "# (datatrove token files and the .metadata naming the tokenizer, which nanotron reads).\n"
              "# dataset_weights are the token shares the folders hold (the mix is already realised).\n")
    return {**render_datatrove(recipe, root), "nanotron_data.yaml": header + yaml.safe_dump(stage, sort_keys=False)}


def megatron_blend(recipe: dict) -> list[str]:
    """Megatron's "weight prefix weight prefix ..." list over preprocess_data.py's output prefixes."""
    return [x for s in recipe["sources"]
            for x in (f"{s['achieved_weight']:.6f}", f"megatron/{s['name']}_text_document")]


def render_megatron(recipe: dict, root: Path) -> dict[str, str]:
    blend = megatron_blend(recipe)
    script = _render("preprocess_megatron.sh.j2", tokenizer_folder=str(Path(recipe["tokenizer"]["path"]).parent),
                     sources=[{"name": s["name"], "file": s["files"][0]} for s in recipe["sources"]])
    return {"preprocess_megatron.sh": script, "megatron_blend.txt": " ".join(blend) + "\n",
            "megatron_data_args.json": json.dumps({"train": blend, "valid": None, "test": None}, indent=2) + "\n"}


def render_olmo(recipe: dict, root: Path) -> dict[str, str]:
    tok = recipe["tokenizer"]
    lines = ["# OLMo-core data mix written by `generator export` (label,path; mix_base_dir = this folder).",
             f"# {{TOKENIZER}} is {tok['name']}; uint32 token ids (NumpyDatasetDType.uint32), "
             f"EOS {tok['eos_token']} (id {tok['eos_token_id']}) after each document.",
             *(f"# {s['name']}: {s['tokens'] + s['num_docs']} tokens, token share {s['achieved_weight']:.4f}"
               for s in recipe["sources"])]
    for s in recipe["sources"]:
        lines.extend(f"{s['name']},{f.replace('/' + tok['name'] + '/', '/{TOKENIZER}/')}" for f in s["files"])
    return {"olmo_mix.txt": "\n".join(lines) + "\n"}
