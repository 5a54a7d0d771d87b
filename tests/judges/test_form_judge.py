"""The two-view embedding judge (subject and form): documents share a cluster only when alike
in both; D_subject and D_form are reported beside D; the subject-only ruler keeps its name; and
`calibrate` fits both cuts to an LLM judge served over HTTP whose clusters depend on both."""
from __future__ import annotations

import numpy as np
import pytest

from fakes import JUDGE_CRITERIA, ScriptedJudgeServer, group_embed
from generator.backends.openai import OpenAIBackend
from generator.errors import UserError
from generator.judges import open_judge
from generator.judges.calibrate import calibrate_threshold
from generator.judges.cluster_agent import ClusterAgentJudge
from generator.judges.embedding import (DEFAULT_FORM_THRESHOLD, DEFAULT_THRESHOLD, EmbeddingJudge, batch_linkage,
                                        clusters_at)
from generator.judges.protocol import ScoreError, score_corpus
from generator.measure.report import format_result, score_texts

FORMS = {
    "prose": "{head}. The note goes on in plain sentences of a moderate length. It ends here without fuss.",
    "steps": "{head}\n1. Open the box first.\n2. Take out the parts.\n3. Fit them together.\n4. Check the fit.",
    "dialogue": "{head}\nAnna: Did you see it?\nBen: I did, it was odd.\nAnna: Why odd?\nBen: You would know.",
}


def document(subject: int, form: str, i: int, label: int | None = None) -> str:
    """A text group_embed places by `subject` (it reads the leading "g<subject>-"), in `form`."""
    head = f"g{subject}-{form}{i}" + (f" [label {label}]" if label is not None else "")
    return FORMS[form].format(head=head)


def test_same_subject_different_form_is_split_only_by_the_two_view_judge():
    batch = [document(0, "prose", 0), document(0, "prose", 1), document(0, "steps", 0), document(0, "dialogue", 0),
             document(1, "prose", 0)]
    [both] = EmbeddingJudge(0.5, embed=group_embed).cluster([batch])
    [subject] = EmbeddingJudge(0.5, form_threshold=None, embed=group_embed).cluster([batch])
    assert both.clusters == ((0, 1), (2,), (3,), (4,))
    assert subject.clusters == ((0, 1, 2, 3), (4,))


def test_with_one_form_the_two_view_judge_cuts_as_the_subject_view():
    rng = np.random.default_rng(3)
    texts = [f"g{g}-{i}" for g in range(4) for i in range(6)]  # no form to tell apart
    judge = EmbeddingJudge(0.5, embed=group_embed)
    for _ in range(20):
        batch = [texts[i] for i in rng.choice(len(texts), size=10, replace=False)]
        [result] = judge.cluster([batch])
        assert result.clusters == clusters_at(batch_linkage(group_embed(batch)), 0.5)


def test_names_tell_the_rulers_apart_and_the_old_name_is_kept():
    assert EmbeddingJudge(form_threshold=None).name == f"embed:all-MiniLM-L6-v2@{DEFAULT_THRESHOLD:g}"
    assert EmbeddingJudge().name == f"embed:all-MiniLM-L6-v2@{DEFAULT_THRESHOLD:g}+form@{DEFAULT_FORM_THRESHOLD:g}"
    assert open_judge("embed-subject").name == EmbeddingJudge(form_threshold=None).name
    assert open_judge("embed").name == EmbeddingJudge().name
    with pytest.raises(UserError, match="use embed, embed-subject or llm"):
        open_judge("embedding")


@pytest.mark.parametrize("form_threshold", [0.0, -0.1, 1.5])
def test_form_threshold_outside_the_unit_interval_is_rejected(form_threshold):
    with pytest.raises(ScoreError, match=f"form threshold {form_threshold} is outside"):
        EmbeddingJudge(form_threshold=form_threshold)


def corpus(num_subjects: int, forms: tuple[str, ...], per_cell: int = 8) -> list[str]:
    return [document(s, f, i) for s in range(num_subjects) for f in forms for i in range(per_cell)]


def test_views_report_subject_and_form_diversity_apart():
    """Two subjects in one form, then in three forms: D_form and D rise, D_subject stays, and
    D_subject equals what the subject-only ruler scores on the same batches."""
    results = {}
    for name, forms in (("one form", ("prose",)), ("three forms", tuple(FORMS))):
        texts = corpus(2, forms, per_cell=24 // len(forms))
        results[name] = score_texts(texts, judge=EmbeddingJudge(0.5, embed=group_embed), k=8, seed=1,
                                    num_batches=60, proxies=False)
    one, three = results["one form"], results["three forms"]
    for r in (one, three):
        assert set(r["views"]) == {"subject", "form"} and r["form_threshold"] == DEFAULT_FORM_THRESHOLD
        for part in r["views"].values():
            assert part["ci_low"] <= part["score"] <= part["ci_high"] and part["num_scored"] == 60
    assert one["views"]["form"]["score"] == pytest.approx(1 / 8)  # one cluster of 8
    assert three["views"]["form"]["score"] > 1.0 and three["score"] > one["score"] + 0.5
    assert three["views"]["subject"]["score"] == pytest.approx(one["views"]["subject"]["score"], abs=0.15)
    subject_only = score_corpus(corpus(2, tuple(FORMS), 8), EmbeddingJudge(0.5, form_threshold=None, embed=group_embed),
                                k=8, rng=np.random.default_rng(1), num_batches=60, min_batches=30)
    assert three["views"]["subject"]["score"] == pytest.approx(subject_only.score)
    assert "D form" in format_result(three, "three forms") and "D subject" in format_result(three, "x")


def test_view_attribution_tells_a_form_column_from_a_subject_column():
    texts = corpus(3, tuple(FORMS), per_cell=6)
    metadata = {"topic": [t.split("-")[0] for t in texts],
                "style": [next(f for f in FORMS if f"-{f}" in t) for t in texts]}
    result = score_texts(texts, metadata, judge=EmbeddingJudge(0.5, embed=group_embed), k=9, seed=0,
                         num_batches=80, proxies=False)
    subject, form = (result["views"][v]["attribution"]["columns"] for v in ("subject", "form"))
    assert all(stats["same_cluster_rate"] == 1.0 for stats in subject["topic"].values())
    assert all(stats["same_cluster_rate"] == 1.0 for stats in form["style"].values())
    assert max(stats["same_cluster_rate"] for stats in form["topic"].values()) < 0.6
    assert "views" not in score_texts(texts, judge=EmbeddingJudge(0.5, form_threshold=None, embed=group_embed),
                                      k=9, num_batches=10, proxies=False)


def test_calibrate_fits_both_cuts_to_an_llm_judge_served_over_http():
    """The scripted server clusters by a label that is the pair (subject, form): the fitted
    two-view cuts reproduce it (ARI 1), the subject-only fit cannot (it merges the forms)."""
    cells = [(s, f) for s in range(3) for f in ("prose", "steps")]
    texts = [document(s, f, i, label=j) for j, (s, f) in enumerate(cells) for i in range(6)]
    with ScriptedJudgeServer() as server:
        backend = OpenAIBackend(server.model, base_url=server.base_url, concurrency=4, max_retries=0)
        try:
            judge = ClusterAgentJudge(backend, JUDGE_CRITERIA)
            both = calibrate_threshold(texts, judge, k=10, num_batches=12, rng=np.random.default_rng(0),
                                       embed=group_embed)
            subject = calibrate_threshold(texts, judge, k=10, num_batches=12, rng=np.random.default_rng(0),
                                          embed=group_embed, views="subject")
        finally:
            backend.close()
    assert both.agreement == pytest.approx(1.0) and both.embed_score == pytest.approx(both.llm_score)
    assert both.form_threshold is not None and subject.form_threshold is None
    assert 0.1 <= both.threshold <= 0.9 and both.form_threshold < 0.216  # the two forms lie 0.216 apart
    assert all("form_threshold" in row for row in both.curve)
    assert subject.agreement < 0.8
    with pytest.raises(ScoreError, match="unknown views"):
        calibrate_threshold(texts, judge, views="form", rng=np.random.default_rng(0), embed=group_embed)


def test_a_recipe_names_the_subject_only_ruler_its_target_was_set_on(tmp_path):
    """The example target recipes keep the ruler their scores were chosen on: `embed-subject`."""
    from conftest import ROOT
    from generator.judges import judge_for_target
    from generator.recipe import load_recipe
    plan = load_recipe(ROOT / "recipes" / "target-moderate.yaml")
    assert plan.recipe.target.judge == "embed-subject" == plan.recipe.scoring.judge
    judge = judge_for_target(plan, tmp_path)
    assert judge.form_threshold is None and "+form" not in judge.name
