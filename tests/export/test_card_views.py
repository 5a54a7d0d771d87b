"""The card's subject-and-form section: D under each view, and per template, style and persona
whether it adds subject or form diversity (diversity.json's attribution.by_view)."""
from __future__ import annotations

import json

from fakes import fake_embed
from generator.export.card import views_section, write_card
from generator.files import write_json
from test_card import make_run, split_card


def apart(value: float | None, pairs: int) -> dict:
    return {"mixed_pairs": pairs, "mixed_rate": None, "apart": value}


VIEWS = {"subject": {"score": 3.85, "ci_low": 3.76, "ci_high": 3.94},
         "form": {"score": 2.99, "ci_low": 2.89, "ci_high": 3.09}}
BY_VIEW = {
    "style": {"wikiHow": {"subject": apart(0.10, 400), "form": apart(0.82, 400), "adds": ["form"]},
              "story": {"subject": apart(0.61, 380), "form": apart(0.70, 380), "adds": ["subject", "form"]},
              "blog post": {"subject": apart(0.05, 390), "form": apart(-0.10, 390), "adds": []}},
    "template": {"topic_style": {"subject": apart(None, 0), "form": apart(None, 0), "adds": []}},
    "persona": {"a chemist": {"subject": apart(0.70, 25), "form": apart(0.20, 25), "adds": ["subject"]},
                "a poet": {"subject": apart(0.90, 5), "form": apart(0.90, 5), "adds": []}},
}


def scored_with_views(folder):
    run = make_run(folder)
    diversity = json.loads((run / "diversity.json").read_text())
    diversity.update(judge="embed:all-MiniLM-L6-v2@0.83+form@0.12", views=VIEWS,
                     attribution={"baseline": {}, "columns": {}, "by_view": BY_VIEW})
    write_json(run / "diversity.json", diversity)
    return run


def test_views_section_counts_and_ranks_what_each_value_adds():
    section = views_section({"views": VIEWS, "attribution": {"by_view": BY_VIEW}})
    assert section["scores"] == [("subject", "3.850", "[3.760, 3.940]"), ("form", "2.990", "[2.890, 3.090]")]
    counts = {c["column"]: c for c in section["counts"]}
    assert [c["column"] for c in section["counts"]] == ["template", "style", "persona"]
    assert counts["style"] == {"column": "style", "values": 3, "subject and form": 1, "subject": 0, "form": 1,
                               "neither": 1, "too few pairs": 0}
    assert counts["persona"]["subject"] == 1 and counts["persona"]["too few pairs"] == 1  # 5 pairs < 20
    assert counts["template"]["too few pairs"] == 1  # one template: no pairs with another
    styles = [row for row in section["rows"] if row[0] == "style"]
    assert [row[1] for row in styles] == ["story", "wikiHow", "blog post"]  # both, then one view, then none
    assert styles[1] == ["style", "wikiHow", "form", "0.10 (400 pairs)", "0.82 (400 pairs)"]


def test_card_of_a_two_view_score_shows_which_values_add_subject_or_form(tmp_path):
    _, body = split_card(write_card(scored_with_views(tmp_path / "run"), embed=fake_embed).read_text())
    section = body.split("### Subject and form", 1)[1].split("\n## ", 1)[0]
    assert "D_subject = 3.850 [3.760, 3.940], D_form = 2.990 [2.890, 3.090]." in section
    assert "| style | 3 | 1 | 0 | 1 | 1 | 0 |" in section
    assert "| column | value | adds | apart, subject | apart, form |" in section
    assert "| style | wikiHow | form | 0.10 (400 pairs) | 0.82 (400 pairs) |" in section
    assert "| persona | a poet | too few pairs | 0.90 (5 pairs) | 0.90 (5 pairs) |" in section


def test_card_of_a_subject_only_score_has_no_views_section(tmp_path):
    _, body = split_card(write_card(make_run(tmp_path / "run"), embed=fake_embed).read_text())
    assert "### Subject and form" not in body and views_section({"score": 1.0}) is None
