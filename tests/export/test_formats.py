"""Mixes, the four export formats (proved with datatrove and HF datasets, validated against the
documented structures of Megatron-LM, nanotron and OLMo-core) and the paper recipes."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from generator.errors import UserError
from generator.cli import build_parser, cmd_export
from generator.export.formats import export_mix, megatron_blend
from generator.export.mixes import (SourceSpec, count_tokens, load_source, load_tokenizer, parse_source, pick_documents,
                             plan_mix)
from generator.files import Document, shard_path, write_json, write_shard

REAL = ROOT / "tests" / "data" / "judge" / "domains.jsonl"  # 160 short human-written documents
WORDS = ("river stone market engine garden signal harbor lantern orbit meadow ledger canvas violin "
         "glacier circuit bakery compass theorem archive pollen tunnel beacon fabric quarry").split()


def make_doc(i: int, text: str, **values) -> Document:
    defaults = {"str": "", "int": 0, "float": 0.0}
    row = {f.name: defaults[f.type] for f in dataclasses.fields(Document)}
    row.update(id=f"doc{i:05d}", text=text, template="topic", domain=["Physics", "History"][i % 2],
               topic=f"topic {i % 7}", model="embedded:smollm2-135m", recipe_hash="abc123",
               finish_reason="stop", num_tokens=len(text.split()), sample_index=i,
               grid_values=json.dumps({"topic": f"topic {i % 7}"}), **values)
    return Document(**row)


def make_run(folder: Path, num_docs: int, seed: int = 0) -> Path:
    """A run folder with documents of 20 to 120 words, a resolved recipe and a diversity report."""
    rng = np.random.default_rng(seed)
    docs = [make_doc(i, " ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) + ".")
            for i in range(num_docs)]
    for start in range(0, num_docs, 50):
        write_shard(shard_path(folder, start // 50), docs[start:start + 50])
    (folder / "recipe.resolved.yaml").write_text("recipe_hash: abc123\nname: tiny\n")
    write_json(folder / "diversity.json", {"judge": "embed:test", "k": 10, "score": 3.25, "ci_low": 3.0,
                                           "ci_high": 3.5, "num_scored": 50})
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()  # the embedded model's tokenizer.json (converted once, cached)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "synthetic", 120)


def mix_of(run_dir, tokenizer, weights=(0.3, 0.7), seed=0, **options):
    specs = [SourceSpec("synthetic", str(run_dir), weights[0]), SourceSpec("real", str(REAL), weights[1])]
    corpora = [load_source(s, tokenizer) for s in specs]
    return plan_mix(specs, corpora, tokenizer, rng=np.random.default_rng(seed), seed=seed, **options)


# ---- sources and mixes --------------------------------------------------------------------------

def test_parse_source_reads_name_path_and_weight():
    assert parse_source("web=data/c4:part.parquet:0.7") == SourceSpec("web", "data/c4:part.parquet", 0.7)
    assert parse_source("runs/quick", default_name="quick") == SourceSpec("quick", "runs/quick", 1.0)


@pytest.mark.parametrize("text, message", [
    ("runs/quick", "expected NAME=PATH:WEIGHT"),
    ("web=data.parquet", "no :WEIGHT after the path"),
    ("web=data.parquet:lots", "weight 'lots' is not a number"),
    ("web=data.parquet:0", "weight must be positive"),
    ("web,1=data.parquet:1", "source name 'web,1' must be"),
])
def test_parse_source_rejects_bad_specs(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_source(text)


def test_token_counts_come_from_the_tokenizer(run_dir, tokenizer):
    corpus = load_source(SourceSpec("synthetic", str(run_dir), 1), tokenizer)
    assert corpus.kind == "run" and len(corpus.texts) == 120
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer.path)
    assert corpus.num_tokens.tolist() == [len(tok.encode(t, add_special_tokens=False).ids) for t in corpus.texts]


def test_mix_realises_the_requested_token_weights(run_dir, tokenizer):
    mix = mix_of(run_dir, tokenizer, weights=(0.3, 0.7))
    synthetic, real = mix.sources
    assert real.repetition == pytest.approx(1.0)  # the binding source is used exactly once by default
    assert synthetic.repetition < 1 and len(np.unique(synthetic.picks)) == len(synthetic.picks)
    longest = max(int(c.corpus.num_tokens.max()) for c in mix.sources)
    for s, requested in zip(mix.sources, (0.3, 0.7)):
        assert s.requested_weight == pytest.approx(requested)
        assert abs(mix.achieved_weight(s) - requested) <= longest / mix.total_tokens
        assert abs(s.tokens - s.target_tokens) <= int(s.corpus.num_tokens.max()) / 2


def test_mix_repeats_a_small_source_up_to_the_bound(run_dir, tokenizer):
    real_tokens = load_source(SourceSpec("real", str(REAL), 1), tokenizer).available_tokens
    mix = mix_of(run_dir, tokenizer, weights=(0.5, 0.5), total_tokens=int(5 * real_tokens), max_repetition=3)
    real = mix.sources[1]
    assert real.repetition == pytest.approx(2.5, abs=0.02)
    counts = np.bincount(real.picks, minlength=len(real.corpus.texts))
    assert counts.min() == 2 and counts.max() == 3 and real.epochs.max() == 2
    assert abs(mix.achieved_weight(real) - 0.5) < 0.01


def test_mix_refuses_a_weight_that_needs_too_many_repetitions(run_dir, tokenizer):
    real_tokens = load_source(SourceSpec("real", str(REAL), 1), tokenizer).available_tokens
    with pytest.raises(UserError, match=r"source 'real' .* needs 5\.00 repetitions .*fix: raise --max-repetition to 5"):
        mix_of(run_dir, tokenizer, weights=(0.5, 0.5), total_tokens=10 * real_tokens, max_repetition=4)


def test_mix_rejects_duplicate_names(run_dir, tokenizer):
    spec = SourceSpec("same", str(REAL), 1)
    corpus = load_source(spec, tokenizer)
    with pytest.raises(UserError, match="source name 'same' is used twice"):
        plan_mix([spec, spec], [corpus, corpus], tokenizer, rng=np.random.default_rng(0))


def test_mix_is_reproducible_from_its_seed(run_dir, tokenizer):
    a, b, c = (mix_of(run_dir, tokenizer, seed=s) for s in (1, 1, 2))
    assert a.sources[0].picks.tolist() == b.sources[0].picks.tolist()
    assert a.sources[0].picks.tolist() != c.sources[0].picks.tolist()


def test_pick_documents_covers_whole_epochs_then_a_subset():
    tokens = np.array([10, 20, 30, 40])
    picks, epochs = pick_documents(tokens, 100 + 30, np.random.default_rng(0))
    assert sorted(picks[epochs == 0].tolist()) == [0, 1, 2, 3]
    assert abs(int(tokens[picks].sum()) - 130) <= 20


# ---- formats ------------------------------------------------------------------------------------

def run_script(path: Path) -> None:
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def datatrove_token_count(folder: Path) -> tuple[int, int]:
    """(tokens in datatrove's .metadata, tokens in its .ds files) for one tokenized folder."""
    metadata = list(folder.glob("*.metadata"))
    assert len(metadata) == 1
    name_line, count = metadata[0].read_text().splitlines()[:2]
    token_size = int(name_line.rsplit("|", 1)[1])
    ds_tokens = sum(p.stat().st_size for p in folder.glob("*.ds")) // token_size
    return int(count), ds_tokens


def test_datatrove_tokenizes_our_export_to_our_token_count(run_dir, tokenizer, tmp_path):
    out = tmp_path / "export"
    recipe = export_mix(mix_of(run_dir, tokenizer), out, "datatrove")
    run_script(out / "tokenize_datatrove.py")  # ParquetReader + DocumentTokenizer(EOS after each document)
    for s in recipe["sources"]:
        metadata_count, ds_tokens = datatrove_token_count(out / "tokenized" / s["name"])
        assert metadata_count == ds_tokens == s["tokens"] + s["num_docs"]  # + one EOS per document


def test_datatrove_reader_sees_our_documents_and_metadata(run_dir, tokenizer, tmp_path):
    from datatrove.pipeline.readers import ParquetReader

    out = tmp_path / "export"
    recipe = export_mix(mix_of(run_dir, tokenizer), out, "datatrove")
    for s in recipe["sources"]:
        docs = list(ParquetReader(str(out / Path(s["files"][0]).parent))())
        assert len(docs) == s["num_docs"]
        assert {d.metadata["source"] for d in docs} == {s["name"]}
        assert sum(d.metadata["num_tokens"] for d in docs) == s["tokens"]
        assert len({d.id for d in docs}) == len(docs)
    synthetic = list(ParquetReader(str(out / "documents" / "synthetic"))())
    assert {d.metadata["recipe_hash"] for d in synthetic} == {"abc123"}


def test_hf_datasets_loads_the_datatrove_parquet(run_dir, tokenizer, tmp_path):
    import datasets

    out = tmp_path / "export"
    recipe = export_mix(mix_of(run_dir, tokenizer), out, "datatrove")
    data = datasets.load_dataset("parquet", data_files=str(out / "documents" / "*" / "*.parquet"),
                                 cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert data.num_rows == sum(s["num_docs"] for s in recipe["sources"])
    assert set(data.column_names) == {"id", "text", "metadata"}
    metadata = data["metadata"]
    assert {m["source"] for m in metadata} == {"synthetic", "real"}
    assert sum(m["num_tokens"] for m in metadata) == recipe["total_tokens"]["achieved"]


def test_nanotron_config_points_at_datatrove_token_folders(run_dir, tokenizer, tmp_path):
    out = tmp_path / "export"
    recipe = export_mix(mix_of(run_dir, tokenizer), out, "nanotron")
    run_script(out / "tokenize_datatrove.py")
    config = yaml.safe_load((out / "nanotron_data.yaml").read_text())
    stage = config["data_stages"][0]
    assert stage["start_training_step"] == 1
    dataset = stage["data"]["dataset"]
    assert len(dataset["dataset_folder"]) == len(dataset["dataset_weights"]) == 2
    assert sum(dataset["dataset_weights"]) == pytest.approx(1.0, abs=1e-5)
    assert dataset["dataset_weights"] == [s["achieved_weight"] for s in recipe["sources"]]
    for folder in dataset["dataset_folder"]:  # what NanosetDatasetsArgs reads: <tokenizer>|<bytes per token>
        first_line = next(Path(folder).glob("*.metadata")).read_text().splitlines()[0]
        assert first_line == f"{tokenizer.path}|2"


def test_megatron_blend_and_split_files_follow_megatron_structure(run_dir, tokenizer, tmp_path):
    out = tmp_path / "export"
    recipe = export_mix(mix_of(run_dir, tokenizer), out, "megatron")
    blend = (out / "megatron_blend.txt").read_text().split()  # --data-args-path: "weight prefix ..."
    weights, prefixes = [float(w) for w in blend[0::2]], blend[1::2]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert prefixes == [f"megatron/{s['name']}_text_document" for s in recipe["sources"]]
    per_split = json.loads((out / "megatron_data_args.json").read_text())
    assert set(per_split) == {"train", "valid", "test"} and per_split["train"] == blend == megatron_blend(recipe)
    script = (out / "preprocess_megatron.sh").read_text()
    assert subprocess.run(["bash", "-n", str(out / "preprocess_megatron.sh")]).returncode == 0
    for s in recipe["sources"]:  # preprocess_data.py writes <output-prefix>_text_document.{bin,idx}
        assert f"--input {s['files'][0]} --json-keys text" in script
        assert f"--output-prefix megatron/{s['name']}" in script
        rows = [json.loads(line) for line in (out / s["files"][0]).read_text().splitlines()]
        assert len(rows) == s["num_docs"]
        assert int(count_tokens(tokenizer, [r["text"] for r in rows]).sum()) == s["tokens"]
    assert "--append-eod" in script


def test_olmo_mix_manifest_and_token_files(run_dir, tokenizer, tmp_path):
    from tokenizers import Tokenizer

    out = tmp_path / "export"
    mix = mix_of(run_dir, tokenizer)
    recipe = export_mix(mix, out, "olmo")
    labels, paths = [], []
    for line in (out / "olmo_mix.txt").read_text().splitlines():  # parsed as OLMo-core's DataMix.build does
        if line.strip() and not line.startswith("#"):
            label, path = line.split(",")
            assert "{TOKENIZER}" in path
            labels.append(label)
            paths.append(out / path.replace("{TOKENIZER}", tokenizer.name))
    assert labels == [s["name"] for s in recipe["sources"]]
    for source, s, path in zip(mix.sources, recipe["sources"], paths):
        ids = np.memmap(path, dtype=np.uint32, mode="r")
        assert len(ids) == s["tokens"] + s["num_docs"]
        assert int((ids == tokenizer.eos_token_id).sum()) == s["num_docs"]
        first_end = int(np.argmax(ids == tokenizer.eos_token_id))
        text = Tokenizer.from_file(tokenizer.path).decode(ids[:first_end].tolist())
        assert text == source.corpus.texts[source.picks[0]]


def test_recipe_records_weights_counts_and_provenance(run_dir, tokenizer, tmp_path):
    out = tmp_path / "export"
    export_mix(mix_of(run_dir, tokenizer), out, "megatron")
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    synthetic, real = recipe["sources"]
    assert synthetic["provenance"]["recipe_hashes"] == ["abc123"]
    assert synthetic["provenance"]["models"] == ["embedded:smollm2-135m"]
    assert synthetic["provenance"]["diversity"]["score"] == 3.25
    assert real["kind"] == "corpus" and real["docs_available"] == 160
    assert recipe["total_tokens"]["achieved"] == synthetic["tokens"] + real["tokens"]
    assert (synthetic["requested_weight"], real["requested_weight"]) == (0.3, 0.7)


def test_run_export_command(run_dir, tmp_path, capsys):
    args = build_parser().parse_args(["export", str(run_dir), "--to", "datatrove", "--out", str(tmp_path / "out"),
                              "--mix", f"real={REAL}:3", "--seed", "5"])
    assert cmd_export(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"synthetic\s+run\s+\d+\s+\d+\s+[\d.]+\s+0\.2500", printed)
    assert re.search(r"real\s+corpus\s+160\s+", printed)
    with pytest.raises(UserError, match="exists and is not an empty folder"):
        cmd_export(args)


def test_export_refuses_a_tokenizer_folder_without_tokenizer_json(tmp_path):
    with pytest.raises(UserError, match="no tokenizer.json there"):
        load_tokenizer(tmp_path)


# ---- paper recipes --------------------------------------------------------------------------------

PAPER = sorted((ROOT / "recipes" / "paper").glob("*.yaml"))


def test_paper_recipes_cover_every_family_and_the_grid():
    names = {p.stem for p in PAPER}
    assert {"topic", "topic_style", "topic_style_persona", "multitopic_style_persona"} <= names
    assert {f"grid-t{t}-g{g}" for t in (10, 20, 40) for g in (10, 20, 30)} <= names


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipe_loads_and_renders_prompts(path):
    from generator.sampling.requests import plan_samples
    from generator.recipe import load_recipe

    plan = load_recipe(path)
    assert plan.recipe.model == "embedded:smollm2-135m"
    samples = plan_samples(plan, 0, 5)
    topics = {v.value for v in plan.grid.axes["topic"].values}
    for s in samples:
        assert s.request.prompt and "{{" not in s.request.prompt
        assert any(t in s.request.prompt for t in topics)
    grid = re.fullmatch(r"grid-t(\d+)-g(\d+)", path.stem)
    if grid:
        num_topics, generations = int(grid[1]), int(grid[2])
        assert len(topics) == num_topics
        assert plan.recipe.size.num_docs == num_topics * generations


def test_paper_topic_files_are_nested_subsets_of_the_topic_grid():
    from generator.sampling.grid import load_axis

    full = {(v.domain, v.value) for v in load_axis(ROOT / "topics" / "topics.yaml").values}
    folder = ROOT / "recipes" / "paper" / "topics"
    subsets = [{(v.domain, v.value) for v in load_axis(folder / f"topics-{n}.yaml").values} for n in (10, 20, 40)]
    assert [len(s) for s in subsets] == [10, 20, 40]
    assert subsets[0] < subsets[1] < subsets[2] <= full
