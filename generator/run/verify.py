"""Checks of a run folder against itself: every shard against its manifest entry (file, bytes,
sha256 when recorded, readable Parquet, rows, sample-index range), the state against the
manifest, the resolved recipe's hash against the rows, and the JSON files that `card`,
`export` and `score` read (parsed and type-checked).

Each check returns a tuple of `Problem` records and changes nothing; `generator verify` prints
them, and the commands that read a run folder refuse one with a problem of scope "corpus"
(problems of scope "resume" only stop `generator run --resume`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from generator.errors import UserError
from generator.files import file_sha256, read_json, read_manifest, read_run_yaml, shard_paths
from generator.run.state import load_state, saved_record

RUN_FILES = ("recipe.resolved.yaml", "manifest.json", "state.json")
RESUME = "`generator run RECIPE --out {out} --resume` with the run's recipe"
REGENERATE = ("restore it from a copy of the run; without one, delete it, every later shard, manifest.json "
              "and state.json, then " + RESUME + " rebuilds the state and generates them again "
              "(a run without a target)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a run folder, the file it is in (relative to the folder) and its repair."""

    path: str
    what: str
    repair: str
    scope: Literal["corpus", "resume"] = "corpus"  # "resume": documents intact, only resuming blocked

    @property
    def line(self) -> str:
        return f"{self.path}: {self.what} (repair: {self.repair})"


def is_run_folder(path: Path) -> bool:
    """A folder `generator run` wrote (its recipe, manifest, state or a shard is there)."""
    return path.is_dir() and (any((path / name).exists() for name in RUN_FILES)
                              or any((path / "data").glob("shard-*.parquet")))


def verify_run(out: Path) -> tuple[Problem, ...]:
    """Every problem of the run folder `out` (empty when it is intact)."""
    if not out.is_dir():
        return (Problem(str(out), "no such folder" if not out.exists() else "not a folder",
                        "pass the --out folder of `generator run`"),)
    recipe_hash, problems = check_recipe(out)
    entries, manifest_problems = check_manifest(out)
    problems += manifest_problems
    if entries is not None:
        problems += check_shards(out, entries, recipe_hash)
        problems += check_state(out, entries)
    problems += check_report(out, "summary.json", SUMMARY) + check_report(out, "diversity.json", DIVERSITY)
    return problems


def require_intact(out: Path, command: str) -> None:
    """Refuse a run folder whose documents or reports are damaged, with the first problem."""
    damaged = [p for p in verify_run(out) if p.scope == "corpus"]
    if damaged:
        more = f" and {len(damaged) - 1} more problem(s)" if len(damaged) > 1 else ""
        first = damaged[0]
        raise UserError(f"{out}: {command} refuses a damaged run folder: {first.path}: {first.what}{more}",
                        fix=f"{first.repair}; `generator verify {out}` lists every problem")


def check_recipe(out: Path) -> tuple[str | None, tuple[Problem, ...]]:
    """The recipe hash recorded in recipe.resolved.yaml (None when it cannot be read), and its problems."""
    path = out / "recipe.resolved.yaml"
    repair = f"{RESUME.format(out=out)} writes it again (the shards' recipe_hash proves the recipe)"
    if not path.exists():
        return None, (Problem(path.name, "missing", repair),)
    try:
        data = read_run_yaml(path)
    except UserError as exc:
        return None, (Problem(path.name, exc.what.removeprefix(f"{path}: "), repair),)
    if not isinstance(data, dict) or not isinstance(data.get("recipe_hash"), str):
        return None, (Problem(path.name, "not a recipe with a recipe_hash", repair),)
    wrong = value_problem(data, RECIPE, "")
    return data["recipe_hash"], (Problem(path.name, wrong, repair),) if wrong else ()


def check_manifest(out: Path) -> tuple[list[dict] | None, tuple[Problem, ...]]:
    """The manifest's shard entries (None when it is damaged), and its problems."""
    repair = (f"delete manifest.json and state.json, then {RESUME.format(out=out)} rebuilds both "
              "from the shards")
    path = out / "manifest.json"
    if not path.exists():  # the documents stay readable without it (readers count rows from the shards)
        if shard_paths(out):
            return None, (Problem(path.name, "missing while data/ holds shards", repair, "resume"),
                          *(p for shard in shard_paths(out) for p in check_readable(shard)))
        return [], ()
    try:
        entries = read_manifest(out)
    except UserError as exc:
        return None, (Problem(path.name, exc.what.removeprefix(f"{path}: "), repair),)
    names = [e["name"] for e in entries]
    expected = [f"shard-{i:05d}.parquet" for i in range(len(entries))]
    if names != expected:
        return None, (Problem(path.name, f"shards are not listed as {expected[:2]}...", repair),)
    return entries, ()


def check_shards(out: Path, entries: list[dict], recipe_hash: str | None) -> tuple[Problem, ...]:
    """Each listed shard against its entry, the sample indices increasing across shards, and
    shards on disk that the manifest does not list."""
    problems, last = [], -1
    for entry in entries:
        found = check_shard(out, entry, recipe_hash)
        problems += found
        if not found and entry["first_index"] <= last:
            problems.append(Problem(f"data/{entry['name']}",
                                    f"sample indices start at {entry['first_index']}, "
                                    f"not after the previous shard's {last}", REGENERATE.format(out=out)))
        last = entry["last_index"]
    listed = {e["name"] for e in entries}
    for path in shard_paths(out):
        if path.name not in listed:
            problems.append(Problem(f"data/{path.name}",
                                    "not in manifest.json: written after the last commit",
                                    f"{RESUME.format(out=out)} removes it and generates its samples again"))
    return tuple(problems)


def check_shard(out: Path, entry: dict, recipe_hash: str | None) -> tuple[Problem, ...]:
    """One shard against its manifest entry."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path, where, repair = out / "data" / entry["name"], f"data/{entry['name']}", REGENERATE.format(out=out)
    if not path.is_file():
        return (Problem(where, "listed in manifest.json but missing", repair),)
    if path.stat().st_size != entry["bytes"]:
        return (Problem(where, f"{path.stat().st_size} bytes, manifest.json records {entry['bytes']}",
                        repair),)
    if "sha256" in entry and file_sha256(path) != entry["sha256"]:
        return (Problem(where, "sha256 differs from manifest.json's: the file changed after it was written",
                        repair),)
    try:
        table = pq.read_table(path, columns=["sample_index", "recipe_hash"])
    except (OSError, pa.ArrowException) as exc:
        return (Problem(where, f"not readable as Parquet ({type(exc).__name__})", repair),)
    index = table.column("sample_index")
    if len(index) != entry["rows"]:
        return (Problem(where, f"{len(index)} rows, manifest.json records {entry['rows']}", repair),)
    if len(index) and (index[0].as_py(), index[-1].as_py()) != (entry["first_index"], entry["last_index"]):
        return (Problem(where, f"sample indices {index[0].as_py()}..{index[-1].as_py()}, "
                               f"manifest.json records {entry['first_index']}..{entry['last_index']}",
                        repair),)
    if len(index) > 1 and not pc.all(pc.greater(index[1:], index[:-1])).as_py():
        return (Problem(where, "sample indices are not increasing", repair),)
    hashes = set(pc.unique(table.column("recipe_hash")).to_pylist())
    if recipe_hash is not None and hashes - {recipe_hash}:
        return (Problem(where, f"rows of recipe {sorted(hashes - {recipe_hash})[0]}, not of this run's "
                               f"{recipe_hash} (recipe.resolved.yaml)", repair),)
    return ()


def check_readable(shard: Path) -> tuple[Problem, ...]:
    """A shard no manifest describes: readable as Parquet with a sample_index column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pq.read_table(shard, columns=["sample_index"])
    except (OSError, pa.ArrowException) as exc:
        return (Problem(f"data/{shard.name}", f"not readable as Parquet ({type(exc).__name__})",
                        REGENERATE.format(out=shard.parent.parent)),)
    return ()


def check_state(out: Path, entries: list[dict]) -> tuple[Problem, ...]:
    """state.json readable and consistent with the manifest (needed only to resume the run)."""
    path = out / "state.json"
    rebuild = f"move state.json aside; {RESUME.format(out=out)} rebuilds it (a run with a target: restore it)"
    if not path.exists():
        return (Problem(path.name, "missing", rebuild.replace("move state.json aside; ", ""), "resume"),)
    try:
        state = load_state(path)
    except UserError as exc:
        return (Problem(path.name, exc.what.removeprefix(f"{path}: "), rebuild, "resume"),)
    c = state.counters
    if c.num_shards > len(entries):
        return (Problem(path.name, f"counts {c.num_shards} shards, manifest.json lists {len(entries)}",
                        rebuild, "resume"),)
    rows = sum(e["rows"] for e in entries[:c.num_shards])
    if state.steering.phase != "pilot" and rows != c.num_docs:  # pilot rounds keep their documents elsewhere
        return (Problem(path.name, f"counts {c.num_docs} documents, its {c.num_shards} shards hold {rows}",
                        rebuild, "resume"),)
    if c.num_shards and entries[c.num_shards - 1]["last_index"] >= c.next_index:
        return (Problem(path.name, f"next sample index {c.next_index} is not past the last committed one",
                        rebuild, "resume"),)
    return tuple(Problem(f"data/{e['name']}", "written after the last saved state",
                         f"{RESUME.format(out=out)} removes it and generates its samples again")
                 for e in entries[c.num_shards:])


# ---- the reports -------------------------------------------------------------------------------
# What `card`, `export` and the scorer read of summary.json and diversity.json: key -> type, a
# nested mapping, or a record (checked field by field). Keys are optional; a "!" marks one that
# must be there when its mapping is.

NUMBER, OPTIONAL_NUMBER, TEXT = "number", "number or null", "string"
TARGET = {"score!": NUMBER, "tolerance": OPTIONAL_NUMBER, "k": OPTIONAL_NUMBER, "relative": OPTIONAL_NUMBER,
          "max_shift": OPTIONAL_NUMBER}
ACHIEVED = {"score!": NUMBER, "ci_low": OPTIONAL_NUMBER, "ci_high": OPTIONAL_NUMBER,
            "draw_sd": OPTIONAL_NUMBER, "relative": NUMBER, "relative_ci_low": NUMBER,
            "relative_ci_high": NUMBER, "shift": NUMBER,
            "shift_se": OPTIONAL_NUMBER}
REFERENCE = {"score!": NUMBER, "ci_low!": NUMBER, "ci_high!": NUMBER, "num_docs!": NUMBER}
SUMMARY = {"num_docs": NUMBER, "num_failed": NUMBER, "tokens_per_s": OPTIONAL_NUMBER, "recipe_hash": TEXT,
           "target": TARGET, "achieved": ACHIEVED, "reference": REFERENCE,
           "rounds": {"pilot": NUMBER, "main": NUMBER},
           "cost": {}, "fidelity": "fidelity", "endings": {}, "duplicates": {}}
RECIPE = {"name": TEXT, "model": TEXT, "templates": [{"path!": TEXT, "weight": NUMBER}], "grid": "grid",
          "sampling": {}, "engine": {}, "size": {}}
DIVERSITY = {"score!": NUMBER, "ci_low": OPTIONAL_NUMBER, "ci_high": OPTIONAL_NUMBER, "k": OPTIONAL_NUMBER,
             "num_scored": OPTIONAL_NUMBER, "cluster_ratio": OPTIONAL_NUMBER, "judge": TEXT, "proxies": {},
             "shift": {}, "fidelity": "fidelity"}


def check_report(out: Path, name: str, schema: dict) -> tuple[Problem, ...]:
    """A report file of the run, when present, parsed and type-checked against `schema`."""
    path = out / name
    repair = f"delete {name}; {RESUME.format(out=out)} writes it again"
    if not path.exists():
        return ()
    try:
        data = read_json(path)
    except UserError as exc:
        return (Problem(name, exc.what.removeprefix(f"{path}: "), repair),)
    wrong = value_problem(data, schema, "")
    return (Problem(name, wrong, repair),) if wrong else ()


def value_problem(value: Any, kind: Any, where: str) -> str:
    """What is wrong with `value` against `kind` ("" when nothing)."""
    at = f"{where}: " if where else ""
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            return f"{at}expected a mapping, got {type(value).__name__}"
        for key, sub in kind.items():
            name = key.rstrip("!")
            if name not in value:
                if key.endswith("!"):
                    return f"{at}missing {name!r}"
                continue
            wrong = value_problem(value[name], sub, f"{where}.{name}".lstrip("."))
            if wrong:
                return wrong
        return ""
    if isinstance(kind, list):
        if not isinstance(value, list):
            return f"{at}expected a list, got {type(value).__name__}"
        return next((w for i, v in enumerate(value) if (w := value_problem(v, kind[0], f"{where}[{i}]"))), "")
    if kind == "grid":  # axis -> grid file, or a seed-document axis with its file under `path`
        files = {k: v.get("path") if isinstance(v, dict) else v for k, v in value.items()} \
            if isinstance(value, dict) else None
        if files is None or not all(isinstance(f, str) for f in files.values()):
            return f"{at}expected axis: file pairs, got {str(value)[:80]}"
        return ""
    if kind == "fidelity":
        return fidelity_problem(value, where)
    if kind == OPTIONAL_NUMBER and value is None:
        return ""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    interval_end = where.endswith(("ci_low", "ci_high"))  # interval ends may be infinite
    if kind in (NUMBER, OPTIONAL_NUMBER) and not (number and (math.isfinite(value) or interval_end)):
        return f"{at}expected a {kind}, got {value!r}"[:200]
    if kind == TEXT and not isinstance(value, str):
        return f"{at}expected a string, got {type(value).__name__}"
    return ""


def fidelity_problem(value: Any, where: str) -> str:
    from generator.measure.fidelity import FidelityReport

    if value is None or isinstance(value, dict) and not value:  # None: the corpus had no grid topic to check
        return ""
    try:
        saved_record(FidelityReport, value, where)
    except (ValueError, TypeError) as exc:  # TypeError: a required field is missing
        return str(exc) if isinstance(exc, ValueError) else f"{where}: {exc}"
    return ""


def intact_line(out: Path) -> str:
    """What `generator verify` says of an intact folder."""
    entries = read_manifest(out)
    recorded = sum("sha256" in e for e in entries)
    checked = f"{recorded} checksums verified" if recorded else "no checksums recorded (an older run)"
    return f"{out}: intact: {len(entries)} shards, {sum(e['rows'] for e in entries)} documents, {checked}"
