"""Fuzz: run folders made once with FakeBackend (a finished 20-document run in 3 shards with failed
rows and a diversity report, and the same run killed after its first shard), one or two files
damaged (deleted, emptied, truncated, a folder, wrong-typed JSON, one JSON field replaced, garbage,
a flipped byte, another shard's bytes, a symlink to /dev/zero, a named pipe), fed to
`run --resume`, `card`, `export`, `score` and `verify`.

Invariants, every case: those of harness.check_outcome (exit 0, or exit 2 with one `error:` line
and the case's folder unchanged; never exit 1, an uncaught exception or 10 s of CPU), and never a
committed shard lost: every shard that was intact and committed (counted by the damaged state, or
every intact shard when the state itself is unreadable) is still there, byte-identical, after any
command. `--resume` answers with different text than the run that made the folder, so a
regenerated shard cannot pass for a kept one.

Also `test_hostile_outputs_and_options`: 30 output paths and options of run, export, score, card
and verify beside a copy of the run (output a file, inside an input, not creatable; NaN, infinite
and tiny weights; seeds out of range; a file that is not a tokenizer), same invariants.

95 cases per run (60 generated, derandomized, no example database, 5 explicit, 30 options), about
25 s of CPU; each finding fixed so far (RF1-RF4, RC3-RC5) is also pinned by an explicit test or case."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SMALL_RECIPE
from harness import check_outcome, fakes_installed, run_cli, snapshot
from strategies import damages, replace_json_field

EXAMPLES = 60
COMMANDS = ("resume", "card", "export", "score", "verify")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("fuzz-runfolders"))


def make_base(root: Path) -> Path:
    """Under `root`: `run`, a finished run of SMALL_RECIPE (scored, with failed rows); `killed`, the
    same run killed after its first shards; a word-level tokenizer."""
    recipe = root / "recipe.yaml"
    recipe.write_text(SMALL_RECIPE.replace("@ROOT@", str(ROOT)).replace("scoring: {enabled: false}",
                                                                        "scoring: {num_batches: 5}"))
    with fakes_installed(fail_every=7):
        outcome = run_cli(["run", str(recipe), "--out", str(root / "run")], cpu_s=60, wall_s=120)
    assert outcome.code == 0, outcome.describe()
    assert (root / "run" / "failures.jsonl").is_file() and (root / "run" / "diversity.json").is_file()
    with fakes_installed(fail_every=7, answer=4, crash_on_call=5):
        outcome = run_cli(["run", str(recipe), "--out", str(root / "killed")], cpu_s=60, wall_s=120)
    assert outcome.note == "killed on batch 5", outcome.describe()
    state = json.loads((root / "killed" / "state.json").read_text())
    assert 1 <= state["counters"]["num_shards"] < 3, state["counters"]
    write_tokenizer(root / "tokenizer")
    return root


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from fakes import WORDS
    vocab = {w: i for i, w in enumerate(["[UNK]", "<|endoftext|>", *WORDS, "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module", autouse=True)
def fakes():
    with fakes_installed(words=39):  # resumed generation answers differently from the base run
        yield


def damage(run: Path, name: str, kind: str, replacement: str, where: float | str) -> None:
    """Apply one damage to `run / name` (see strategies.DAMAGES); `where` is a share of the file
    (or of its JSON fields), or the dotted path of the JSON field to replace."""
    path = run / name
    if path.parent.exists() and not path.parent.is_dir():  # an earlier damage made data/ a file
        return
    old = path.read_bytes() if path.is_file() else b""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "delete":
        return
    if kind in ("devzero", "loop", "fifo"):
        path.parent.mkdir(parents=True, exist_ok=True)
        {"devzero": lambda: path.symlink_to("/dev/zero"), "loop": lambda: path.symlink_to(path.name),
         "fifo": lambda: os.mkfifo(path)}[kind]()
        return
    if kind == "directory" or (path.suffix == "" and kind in ("empty", "truncate")):
        path.mkdir(parents=True)
        (path / "x").write_text("{}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(damaged_bytes(path, old, kind, replacement, where))


def damaged_bytes(path: Path, old: bytes, kind: str, replacement: str, where: float | str) -> bytes:
    """What a damaged regular file holds instead of `old`."""
    at = int(len(old) * where) if isinstance(where, float) else 0
    if kind == "copy":  # another shard's bytes: a shard swapped in, or one from nowhere
        other = [p for p in sorted(path.parent.glob("shard-*.parquet")) if p.is_file() and p != path]
        return other[at % len(other)].read_bytes() if other else b""
    if kind == "flip":
        return old[:at] + bytes([old[at] ^ 0xFF]) + old[at + 1:] if at < len(old) else b"\xff"
    if kind == "json_field":
        text = old.decode(errors="replace")
        try:
            return replace_json_field(text.splitlines()[0] if path.suffix == ".jsonl" else text,
                                      replacement, where).encode()
        except (ValueError, IndexError):  # not JSON: a shard, a YAML file
            return old[: len(old) // 2] + replacement.encode()
    garbage = b"\x00\xff{[" * 64
    return {"empty": b"", "truncate": old[:at], "json": replacement.encode(), "garbage": garbage}[kind]


def committed_shards(run: Path) -> set[str]:
    """Shards the run's (possibly damaged) state commits to: the first num_shards, or every shard
    when the state cannot say."""
    data = run / "data"
    names = {p.name for p in data.glob("shard-*.parquet") if p.is_file()} if data.is_dir() else set()
    try:
        state = run / "state.json"
        count = json.loads(state.read_text() if state.is_file() else "")["counters"]["num_shards"]
    except Exception:  # noqa: BLE001 - a missing or unreadable state commits every shard
        return names
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return {n for n in names if int(n.split("-")[1].split(".")[0]) < count}
    return names


def command_argv(command: str, base: Path, folder: Path) -> list[str]:
    run = str(folder / "run")
    return {"resume": ["run", str(base / "recipe.yaml"), "--out", run, "--resume", "--no-score"],
            "card": ["card", run],
            "export": ["export", run, "--to", "datatrove", "--out", str(folder / "export"),
                       "--tokenizer", str(base / "tokenizer")],
            "score": ["score", run, "--no-proxies", "--num-batches", "5",
                      "--json", str(folder / "score.json")],
            "verify": ["verify", run]}[command]


def check_damaged_folder(base: Path, damaged: list, command: str, source: str = "run", **limits) -> None:
    """Copy the `source` folder of `base`, damage it, run `command` on it (`limits`: run_cli's
    cpu_s and wall_s), check the invariants."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        shutil.copytree(base / source, folder / "run", symlinks=True)
        for name, kind, replacement, where in damaged:
            damage(folder / "run", name, kind, replacement, where)
        touched = {name for name, *_ in damaged}
        kept = {n: (folder / "run" / "data" / n).read_bytes() for n in committed_shards(folder / "run")
                if f"data/{n}" not in touched and "data" not in touched}
        before = snapshot(folder)
        outcome = run_cli(command_argv(command, base, folder), **limits)
        check_outcome(outcome, folder, before)
        for name, data in kept.items():
            shard = folder / "run" / "data" / name
            assert shard.is_file() and shard.read_bytes() == data, f"{outcome.describe()}\n  lost {name}"


@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=40), derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damaged=damages(), command=st.sampled_from(COMMANDS),
       source=st.sampled_from(["run", "run", "killed"]))
@example(damaged=[("state.json", "delete", "", 0.0)], command="resume", source="run")
@example(damaged=[("state.json", "directory", "", 0.0)], command="resume", source="run")
@example(damaged=[("state.json", "json_field", "-1", "counters.num_shards")], command="resume", source="run")
@example(damaged=[("data/shard-00001.parquet", "truncate", "", 0.5)], command="resume", source="run")
@example(damaged=[("state.json", "delete", "", 0.0)], command="resume", source="killed")
def test_damaged_run_folder(base, damaged, command, source):
    check_damaged_folder(base, damaged, command, source)


def test_rf1_damaged_dedup_index(base):
    """RF1: an empty dedup index made run --resume raise EOFError after the engine started."""
    check_damaged_folder(base, [("dedup/shard-00001.dedup.npz", "empty", "", 0.5)], "resume")


def test_rf2_run_file_not_regular(base):
    """RF2: a named pipe (or /dev/zero) in place of state.json blocked every reader."""
    check_damaged_folder(base, [("state.json", "fifo", "", 0.5)], "card", wall_s=3)


def test_rf4_folder_in_place_of_an_uncommitted_shard(base):
    """RF4: a folder in the place of an uncommitted shard made run --resume raise IsADirectoryError."""
    check_damaged_folder(base, [("data/shard-00002.parquet", "directory", "", 0.5)], "resume", "killed")


def test_rf3_empty_report_found_before_resume(base):
    """RF3: an empty diversity.json stopped run --resume only after it generated."""
    check_damaged_folder(base, [("diversity.json", "empty", "", 0.5)], "resume")


def test_resume_of_a_folder_that_does_not_exist_says_so(base, tmp_path):
    outcome = run_cli(["run", str(base / "recipe.yaml"), "--out", str(tmp_path / "nothing"), "--resume"])
    check_outcome(outcome, tmp_path, {".": None})
    assert outcome.code == 2 and "nothing" in outcome.stderr, outcome.describe()


def test_the_undamaged_folder_passes_every_command(base):
    """The folder every damage starts from is sound (else every case would be a refusal)."""
    for command in COMMANDS:
        check_damaged_folder(base, [], command)
    check_damaged_folder(base, [], "resume", "killed")


# Output paths and options of every command, beside a copy of the finished run: F is the case's
# folder (holding `afile`, `corpus.jsonl`, `recipe.yaml` and the run `run`), T the tokenizer.
OPTION_CASES = [
    "run F/recipe.yaml --out F/afile", "run F/recipe.yaml --out F/afile/sub",
    "run F/recipe.yaml --out F/recipe.yaml", "run F/recipe.yaml --out /dev/null",
    "run F/recipe.yaml --out F/run/data",
    "run F/recipe.yaml --out /proc/fuzz",  # RC3
    "export F/run --to datatrove --out F/run --tokenizer T",
    "export F/run --to datatrove --out F/run/data --tokenizer T",
    "export F/run --to megatron --out F/afile --tokenizer T",
    "export F/run --to olmo --out F/o --tokenizer T --mix web=F/corpus.jsonl:1e-300",
    "export F/run --to nanotron --out F/o --tokenizer T --mix run=F/corpus.jsonl:1",
    "export F/run --to datatrove --out F/o --tokenizer T --mix web=F/corpus.jsonl:nan",
    "export F/run --to datatrove --out F/o --tokenizer T --mix web=F/corpus.jsonl:inf",
    "export F/run --to datatrove --out F/o --tokenizer T --total-tokens 99999999999",
    "export F/run --to datatrove --out F/o --tokenizer T --seed 99999999999999999999999",
    "export F/run --to datatrove --out F/o --tokenizer F/corpus.jsonl",  # RC4
    "score F/run F/afile --no-proxies", "score F/run F/corpus.jsonl --no-proxies --json F/run/x.json",
    "score F/run --no-proxies --json F/run", "score F/corpus.jsonl --no-proxies --seed -1",
    "score F/corpus.jsonl --no-proxies --reference F/afile",
    "score F/corpus.jsonl F/corpus.jsonl --no-proxies --plot F/afile/x.png",
    "score F/corpus.jsonl --no-proxies --num-batches 1000000 --precision 1e-300",  # RC5
    "score F/corpus.jsonl --recompute F/afile", "card F/afile", "verify F/afile", "verify F",
]


@pytest.mark.parametrize("line", OPTION_CASES)
def test_hostile_outputs_and_options(base, line):
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        shutil.copytree(base / "run", folder / "run")
        (folder / "recipe.yaml").write_text((base / "recipe.yaml").read_text())
        (folder / "afile").write_text("x")
        (folder / "corpus.jsonl").write_text("".join(f'{{"text": "doc {i} alpha"}}\n' for i in range(30)))
        words = {"T": str(base / "tokenizer"), "F": str(folder)}
        argv = [words.get(w, w.replace("F/", f"{folder}/")) for w in line.split()]
        before = snapshot(folder)
        check_outcome(run_cli(argv), folder, before)
