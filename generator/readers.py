"""Reading a corpus from disk: a Parquet file, a folder of Parquet files (searched
recursively, so a run folder works), a JSONL file, or a folder written by
`datasets.Dataset.save_to_disk`. Used by `generator score`, the controller's reference corpus
and `generator export`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from generator.errors import UserError


def load_corpus(path: str | Path, text_field: str = "text") -> tuple[list[str], dict[str, list[str]]]:
    """(texts, metadata): the text column and every other all-string column (None -> "")."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder", fix="check the corpus path")
    columns = _read_columns(path)
    if not columns or not len(next(iter(columns.values()))):
        raise UserError(f"{path}: the corpus is empty (0 documents)", fix="point at a corpus with documents")
    if text_field not in columns:
        raise UserError(f"{path}: no text field {text_field!r}; available columns: {', '.join(columns) or 'none'}",
                         fix="pass --text-field NAME")
    texts = columns.pop(text_field)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise UserError(f"{path}: row {bad + 1}: {text_field!r} is {type(texts[bad]).__name__}, not text",
                         fix="drop rows without text or pick another --text-field")
    metadata = {name: ["" if v is None else v for v in values] for name, values in columns.items()
                if all(v is None or isinstance(v, str) for v in values)}
    return texts, metadata


def _read_columns(path: Path) -> dict[str, list]:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _read_saved_dataset(path)
        if (path / "manifest.json").is_file():  # a run folder: its corpus, not the pilot sweeps beside it
            from generator.files import shard_paths
            files = shard_paths(path)
        else:
            files = sorted(path.rglob("*.parquet"))
        if not files:
            raise UserError(f"{path}: folder holds no .parquet files and no saved dataset",
                             fix="point at a Parquet file or folder, a JSONL file, or a save_to_disk folder")
        return _read_parquet(files)
    if path.suffix == ".parquet":
        return _read_parquet([path])
    if path.suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    raise UserError(f"{path}: unknown corpus format {path.suffix or '(no extension)'!r}",
                     fix="use .parquet, .jsonl, a folder of .parquet files or a saved HF dataset folder")


def _read_parquet(files: Sequence[Path]) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{files[0].parent}: cannot read Parquet ({exc})", fix="check the files are Parquet") from None
    return table.to_pydict()


def _read_jsonl(path: Path) -> dict[str, list]:
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid UTF-8 (byte {exc.start})",
                             fix="re-encode the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not JSON ({exc.msg})", fix="write one JSON object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object", fix="write one JSON object per line")
        rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _read_saved_dataset(path: Path) -> dict[str, list]:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if len(data) != 1:
            raise UserError(f"{path}: saved dataset has splits {sorted(data)}",
                             fix=f"point at one split, e.g. {path / sorted(data)[0]}")
        data = next(iter(data.values()))
    return data.to_dict()


REFERENCE_STREAM = 515  # the random stream that picks the reference sample


def read_reference(spec, *, seed: int, k: int, where: str) -> list[str]:
    """The recipe's reference documents: `spec.num_docs` of them (all when 0 or fewer exist),
    picked with a rng seeded by (seed, REFERENCE_STREAM), in file order. Fails with a
    `UserError` naming `where` when the corpus cannot be read or is too small to score at K."""
    import numpy as np

    try:
        texts, _ = load_corpus(spec.path, spec.text_field)
    except UserError as exc:
        raise UserError(f"{where}: {exc.what}", fix=exc.fix.replace("pass --text-field NAME",
                                                                    "set reference.text_field")) from None
    texts = [t for t in texts if t.strip()]
    need = 2 * k
    if len(texts) < need:
        raise UserError(f"{where}: {spec.path} has {len(texts)} non-empty documents, too few to measure D at "
                        f"K = {k} (at least 2K = {need})",
                        fix="point at a larger corpus, or lower K: target.k (scoring.k without a target)")
    if spec.num_docs and spec.num_docs < len(texts):
        if spec.num_docs < need:
            raise UserError(f"{where}: num_docs {spec.num_docs} is too few to measure D at K = {k}",
                            fix=f"use reference.num_docs: {need} or more (0 for all)")
        picked = np.random.default_rng([seed, REFERENCE_STREAM]).choice(len(texts), spec.num_docs, replace=False)
        texts = [texts[i] for i in sorted(picked)]
    return texts
