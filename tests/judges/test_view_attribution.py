"""What each grid value adds, by view: a style written in a form of its own adds form diversity
only, a style about subjects no other style takes adds subject diversity only, and one like the
rest adds neither. Checked on hand-made clusterings and through the two-view judge with fake
embeddings, down to the score report's lines."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fakes import group_embed
from generator.judges.attribution import APART, attribute_views
from generator.judges.embedding import EmbeddingJudge
from generator.judges.protocol import BatchClustering
from generator.measure.report import format_result, score_texts

K = 6
# style -> (subjects its documents are about, the form they are written in)
STYLES = {"numbered": ((0, 1), "steps"), "niche": ((2,), "prose"), "plain": ((0, 1), "prose")}
FORMS = {
    "prose": "{head}. The note goes on in plain sentences of a moderate length. It ends here without fuss.",
    "steps": "{head}\n1. Open the box first.\n2. Take out the parts.\n3. Fit them together.\n"
             "4. Check the fit.",
}


def documents(per_style: int = 12) -> tuple[list[tuple[int, str]], list[str]]:
    """(subject, form) of each document, and its style."""
    cells, styles = [], []
    for style, (subjects, form) in STYLES.items():
        for i in range(per_style):
            cells.append((subjects[i % len(subjects)], form))
            styles.append(style)
    return cells, styles


def clustered_by(key, cells, num_batches: int = 300, seed: int = 0):
    """A report-like record of random K-batches, each clustered by `key(cell)`."""
    rng = np.random.default_rng(seed)
    batch_docs, batches = [], []
    for _ in range(num_batches):
        docs = tuple(int(i) for i in rng.choice(len(cells), size=K, replace=False))
        groups: dict = {}
        for position, i in enumerate(docs):
            groups.setdefault(key(cells[i]), []).append(position)
        batch_docs.append(docs)
        batches.append(BatchClustering(clusters=tuple(tuple(g) for g in groups.values())))
    return SimpleNamespace(k=K, batch_docs=tuple(batch_docs), batches=tuple(batches))


def test_a_style_of_its_own_form_adds_form_and_one_of_its_own_subject_adds_subject():
    cells, styles = documents()
    views = {"subject": clustered_by(lambda c: c[0], cells), "form": clustered_by(lambda c: c[1], cells)}
    by_view = attribute_views(views, {"style": styles})["style"]
    assert by_view["numbered"]["adds"] == ["form"]
    assert by_view["niche"]["adds"] == ["subject"]
    assert by_view["plain"]["adds"] == []
    # never clustered with other styles' documents under the view it adds: apart is 1
    assert by_view["numbered"]["form"]["apart"] == by_view["niche"]["subject"]["apart"] == 1.0
    assert by_view["numbered"]["subject"]["apart"] < APART and by_view["niche"]["form"]["apart"] < APART
    assert all(s[v]["mixed_pairs"] > 100 for s in by_view.values() for v in ("subject", "form"))


def test_a_style_apart_in_both_views_adds_both_and_a_lone_value_adds_nothing_to_say():
    cells, styles = documents()
    cells = [(9, "table") if s == "niche" else c for c, s in zip(cells, styles)]
    views = {"subject": clustered_by(lambda c: c[0], cells), "form": clustered_by(lambda c: c[1], cells)}
    assert attribute_views(views, {"style": styles})["style"]["niche"]["adds"] == ["subject", "form"]
    alone = attribute_views(views, {"style": ["one"] * len(cells)})["style"]["one"]
    assert alone["subject"] == {"mixed_pairs": 0, "mixed_rate": None, "apart": None} and alone["adds"] == []


@pytest.fixture(scope="module")
def scored():
    cells, styles = documents()
    texts = [FORMS[form].format(head=f"g{subject}-{form}{i}") for i, (subject, form) in enumerate(cells)]
    return score_texts(texts, {"style": styles}, judge=EmbeddingJudge(0.5, embed=group_embed), k=K, seed=0,
                       num_batches=200, proxies=False)


def test_the_two_view_judge_attributes_form_and_subject_to_the_styles_that_add_them(scored):
    by_view = scored["attribution"]["by_view"]["style"]
    assert {style: stats["adds"] for style, stats in by_view.items()} == {
        "numbered": ["form"], "niche": ["subject"], "plain": []}
    assert set(scored["attribution"]["columns"]["style"]) == set(STYLES)  # the record as before, plus by_view


def test_the_score_report_says_what_each_style_adds(scored):
    text = format_result(scored, "three styles")
    assert "what each value adds" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  style=")}
    assert "adds form " in lines["style=numbered"] and "adds subject " in lines["style=niche"]
    assert "adds neither" in lines["style=plain"]
    assert "(apart: subject 1.00" in lines["style=niche"]
