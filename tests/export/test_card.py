"""Dataset cards: front matter, sections, coverage numbers and the plots they link."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from fakes import fake_embed
from generator.export.card import write_card
from generator.export.card_plots import plot_embedding_map, project_2d
from generator.errors import UserError
from generator.run.plots import plot_trajectory, plot_weights
from generator.files import Document, next_shard_path, shard_path, write_json, write_shard

DOMAINS = {"Physics": ["why the sky is blue and sunsets are red", "sound waves, pitch, and the Doppler effect"],
           "History": ["the causes of the 1929 stock market crash", "daily life for ordinary people in ancient Rome"],
           "Chemistry": ["the chemistry of rust and how galvanizing prevents it"],
           "Biology": ["how DNA is copied before a cell divides"]}
STYLES = ["blog post", "wikiHow", "story"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(folder: Path, num_docs: int = 40, *, scored: bool = True, steered: bool = False) -> Path:
    pairs = [(d, t) for d, topics in DOMAINS.items() for t in topics]
    docs = []
    for i in range(num_docs):
        domain, topic = pairs[i % len(pairs)]
        style = STYLES[i % len(STYLES)]
        row = {f.name: {"str": "", "int": 0, "float": 0.0}[f.type] for f in dataclasses.fields(Document)}
        row.update(id=f"d{i}", text=f"A {style} about {topic}, number {i}.", prompt=f"Write about {topic}",
                   template="topic_style", domain=domain, topic=topic, style=style, model="embedded:smollm2-135m",
                   backend="vllm", finish_reason="length" if i % 4 == 0 else "stop", num_tokens=100 + i,
                   num_prompt_tokens=30, recipe_hash="feedbeef",
                   grid_values=json.dumps({"domain": domain, "topic": topic, "style": style}))
        docs.append(Document(**row))
    write_shard(shard_path(folder, 0), docs)
    recipe = {"recipe_hash": "feedbeef", "name": "tiny-card", "model": "embedded:smollm2-135m", "seed": 3,
              "grid": {"topic": str(ROOT / "topics" / "topics.yaml"), "style": str(ROOT / "topics" / "styles.yaml")},
              "templates": [{"path": str(ROOT / "prompts" / "topic_style.j2"), "weight": 1.0}],
              "size": {"num_docs": num_docs}, "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 192},
              "engine": {"num_replicas": 1, "tensor_parallel_size": 1}}
    (folder / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe))
    summary = {"num_docs": num_docs, "num_failed": 2, "tokens_per_s": 55.5}
    if steered:
        summary.update(target={"score": 3.0, "tolerance": 0.2, "judge": "embed", "k": 10},
                       achieved={"score": 3.1, "ci_low": 2.9, "ci_high": 3.3, "within_tolerance": True},
                       rounds={"pilot": 2, "main": 1}, cost={"judge_calls": 120, "calibration_ratio": 0.05})
        log = [{"target": 3.0, "tolerance": 0.2, "phase": p, "score": s, "ci_low": s - 0.2, "ci_high": s + 0.2,
                "concentration": c} for p, s, c in (("pilot", 2.5, 0.5), ("pilot", 2.9, 0.7), ("main", 3.1, 0.7))]
        (folder / "controller.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        plot_trajectory(folder / "controller.jsonl", folder / "plots" / "score_trajectory.png")
        plot_weights({"style": {"blog post": 2.0, "story": 1.0}}, folder / "plots" / "weights.png")
    write_json(folder / "summary.json", summary)
    if scored:
        write_json(folder / "diversity.json", {
            "judge": "embed:all-MiniLM-L6-v2@0.83", "k": 10, "score": 3.456, "ci_low": 3.1, "ci_high": 3.8,
            "half_width": 0.35, "cluster_ratio": 0.35, "num_scored": 60, "proxies": {"distinct_2": 0.61, "vendi": 12.5},
            "shift": {"mmd2": 0.012, "p_value": 0.03, "centroid_cosine_distance": 0.2}})
    return folder


def split_card(text: str) -> tuple[dict, str]:
    match = re.match(r"\A---\n(.*?)\n---\n(.*)\Z", text, re.DOTALL)
    assert match, "the card must start with YAML front matter between --- lines"
    return yaml.safe_load(match[1]), match[2]


def linked_images(body: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", body)


def test_card_front_matter_is_a_valid_dataset_card_header(tmp_path):
    card = write_card(make_run(tmp_path / "run"), embed=fake_embed)
    assert card == tmp_path / "run" / "README.md"
    meta, _ = split_card(card.read_text())
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["pretty_name"].startswith("tiny-card")
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}]


def test_card_sections_report_the_run(tmp_path):
    _, body = split_card(write_card(make_run(tmp_path / "run"), embed=fake_embed).read_text())
    for section in ("## Recipe", "## Model", "## Counts and tokens", "## Grid coverage", "## Diversity",
                    "### Proxies", "### Distribution shift", "## Embedding map", "## Columns", "## Loading"):
        assert section in body
    assert "**D = 3.456**" in body and "[3.100, 3.800]" in body and "embed:all-MiniLM-L6-v2@0.83" in body
    assert "| generated tokens | 4780 |" in body  # sum of 100 + i for i < 40
    assert "| cut at max_tokens, kept as cut | 10 |" in body
    assert "| mmd2 | 0.012 |" in body and "| vendi | 12.5 |" in body
    assert "## Steering" not in body


def test_card_grid_coverage_counts_used_values_against_the_grid(tmp_path):
    run = make_run(tmp_path / "run")
    off_grid = make_run(tmp_path / "other", num_docs=1).joinpath("data", "shard-00000.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(off_grid).to_pylist()
    table[0].update(topic="a topic no grid file holds", grid_values=json.dumps({"topic": "a topic no grid file holds"}))
    write_shard(next_shard_path(run), [Document(**table[0])])
    _, body = split_card(write_card(run, embed=fake_embed).read_text())
    assert re.search(r"\| domain \| 4 \| 31 \| 13% \|", body)
    assert re.search(r"\| topic \| 6 \| 523 \| 1% \|", body)
    assert re.search(r"\| style \| 3 \| 16 \| 19% \|", body)
    assert re.search(r"\| template \| 1 \| 1 \| 100% \|", body)


def test_card_images_are_relative_links_to_valid_pngs(tmp_path):
    run = make_run(tmp_path / "run", steered=True)
    _, body = split_card(write_card(run, embed=fake_embed).read_text())
    links = linked_images(body)
    assert set(links) == {"plots/axis_histograms.png", "plots/embedding_map.png", "plots/score_trajectory.png",
                          "plots/weights.png"}
    import matplotlib.image

    for link in links:
        assert not Path(link).is_absolute()
        data = (run / link).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert matplotlib.image.imread(run / link).shape[0] > 100  # decodes as an image


def test_card_reports_target_achieved_and_cost_when_steered(tmp_path):
    _, body = split_card(write_card(make_run(tmp_path / "run", steered=True), embed=fake_embed).read_text())
    assert "## Steering to a target diversity" in body
    assert "| target | D = 3.0 ± 0.2 (judge embed, K = 10) |" in body
    assert "D = 3.100 (95% interval [2.900, 3.300]), within tolerance" in body
    assert "| rounds | 2 pilot, 1 main |" in body and "| cost: judge_calls | 120 |" in body


def test_card_shows_the_reference_relative_target_and_shift(tmp_path):
    run = make_run(tmp_path / "run", steered=True)
    summary = json.loads((run / "summary.json").read_text())
    summary["target"].update(score=3.0, relative=1.2, max_shift=0.1)
    summary["reference"] = {"score": 2.5, "ci_low": 2.3, "ci_high": 2.7, "half_width": 0.2, "num_docs": 150}
    summary["achieved"].update(relative=1.24, relative_ci_low=1.16, relative_ci_high=1.32, shift=0.08,
                               within_shift_bound=True)
    write_json(run / "summary.json", summary)
    recipe = yaml.safe_load((run / "recipe.resolved.yaml").read_text())
    recipe["grid"]["seed_doc"] = {"path": "/data/seeds.jsonl", "text_field": "text", "max_chars": 900}
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe))
    _, body = split_card(write_card(run, embed=fake_embed).read_text())
    assert "| reference D | 2.500 (95% interval [2.300, 2.700], 150 documents) |" in body
    assert "| target, relative | 1.2 × reference D = 3.000 |" in body
    assert "| achieved, relative | 1.240 × reference D (95% interval [1.160, 1.320]) |" in body
    assert "| shift from reference (MMD²) | 0.0800, bound 0.1: within |" in body
    assert "seed_doc: seeds.jsonl" in body


def test_card_gives_the_spread_between_corpora_when_the_pilots_measured_it(tmp_path):
    run = make_run(tmp_path / "run", steered=True)
    summary = json.loads((run / "summary.json").read_text())
    summary["achieved"]["draw_sd"] = 0.15
    write_json(run / "summary.json", summary)
    _, body = split_card(write_card(run, embed=fake_embed).read_text())
    assert "another corpus drawn at the same settings would differ by about ±0.29 (95%" in body


def test_card_of_an_unscored_run_says_how_to_score_it(tmp_path):
    _, body = split_card(write_card(make_run(tmp_path / "run", scored=False), embed=fake_embed).read_text())
    assert "Not scored yet" in body and "**D =" not in body


def test_card_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="no recipe.resolved.yaml, so this is not a run folder"):
        write_card(tmp_path)


def test_embedding_map_samples_at_most_2000_documents_with_the_seed(tmp_path):
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return fake_embed(texts)

    table = {"text": [f"document {i}" for i in range(2500)], "domain": ["Physics", "History"] * 1250}
    caption = plot_embedding_map(table, tmp_path / "map.png", embed=embed, rng=np.random.default_rng(1))
    plot_embedding_map(table, tmp_path / "again.png", embed=embed, rng=np.random.default_rng(1))
    assert len(seen[0]) == 2000 and seen[0] == seen[1]
    assert "2000 of 2500 documents" in caption
    assert (tmp_path / "map.png").read_bytes().startswith(PNG_MAGIC)


def test_project_2d_finds_the_main_direction():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    points = np.outer(t, [3.0, 4.0, 0.0]) + 0.01 * rng.normal(size=(200, 3))
    coords, share = project_2d(points)
    assert coords.shape == (200, 2) and share[0] > 0.99
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.99


def test_card_with_the_real_embedder(tmp_path):
    """The default path: all-MiniLM-L6-v2 embeddings (bundled, offline)."""
    run = make_run(tmp_path / "run", num_docs=24)
    _, body = split_card(write_card(run).read_text())
    assert "PCA of all-MiniLM-L6-v2 embeddings of 24 of 24 documents" in body
    assert (run / "plots" / "embedding_map.png").read_bytes().startswith(PNG_MAGIC)


def test_card_shows_fidelity_per_template_style_and_domain_with_a_plot(tmp_path):
    from generator.measure.fidelity import measure_fidelity
    from generator.readers import load_corpus

    run = make_run(tmp_path / "run")
    texts, metadata = load_corpus(run / "data")
    topics = [t for topics in DOMAINS.values() for t in topics]
    report = measure_fidelity(texts, metadata, topics, embed=fake_embed).to_dict()
    summary = json.loads((run / "summary.json").read_text())
    write_json(run / "summary.json", {**summary, "fidelity": report})
    _, body = split_card(write_card(run, embed=fake_embed).read_text())
    assert "## On-topic fidelity" in body
    assert f"**{report['topic_share']:.3f} of 40" in body
    groups = {(g["column"], g["value"]): g for g in report["groups"]}
    assert {("template", "topic_style"), ("style", "wikiHow"), ("domain", "Physics")} <= set(groups)
    for (column, value), g in groups.items():
        row = f"| {column} | {value} | {g['num_docs']} | {g['topic_share']:.2f} | [{g['ci_low']:.2f}, {g['ci_high']:.2f}] |"
        assert row in body
        assert g["ci_low"] <= g["topic_share"] <= g["ci_high"]
    assert "plots/fidelity.png" in linked_images(body)
    assert (run / "plots" / "fidelity.png").read_bytes().startswith(PNG_MAGIC)


def test_card_without_fidelity_has_no_fidelity_section(tmp_path):
    _, body = split_card(write_card(make_run(tmp_path / "run"), embed=fake_embed).read_text())
    assert "On-topic fidelity" not in body and not (tmp_path / "run" / "plots" / "fidelity.png").exists()


def test_the_trajectory_plot_takes_an_interval_a_rounding_error_above_its_score(tmp_path):
    """Regression: a pilot at the judge's ceiling (every batch D = 10) had ci_low 1e-15 above its
    score, and matplotlib refused the negative error bar, so the run crashed at its end."""
    row = {"round": 0, "phase": "pilot", "docs": 0, "concentration": 1.0, "score": 9.997970085470087,
           "ci_low": 9.997970085470088, "ci_high": 10.001019853872455, "target": 8.0, "tolerance": 0.3,
           "action": "measured"}
    (tmp_path / "controller.jsonl").write_text(json.dumps(row) + "\n")
    png = plot_trajectory(tmp_path / "controller.jsonl", tmp_path / "trajectory.png")
    assert png is not None and png.stat().st_size > 1000
