"""The form features: each structure they name is seen, every value stays in [0, 1], and the
distance separates two layouts of the same sentences while leaving two subjects in one layout close."""
from __future__ import annotations

import numpy as np
import pytest

from generator.judges.embedding import DEFAULT_FORM_THRESHOLD
from generator.measure.form import FORM_FEATURES, form_distances, form_features

SENTENCES = ["Preheat the oven before starting.", "Mix the flour with the butter.",
             "Pour the batter into a tin.", "Bake it for half an hour."]
PROSE = " ".join(SENTENCES)
CASES = {
    "heading_lines": "# Baking bread\n\n" + PROSE,
    "numbered_lines": "\n".join(f"{i + 1}. {s}" for i, s in enumerate(SENTENCES)),
    "bullet_lines": "\n".join(f"- {s}" for s in SENTENCES),
    "speaker_lines": "\n".join(f"{'Anna' if i % 2 else 'Ben'}: {s}" for i, s in enumerate(SENTENCES)),
    "qa_lines": "Q: Why preheat the oven?\nA: So the heat is even.\nQ: How long?\nA: Half an hour.",
    "code_lines": "| step | what |\n|---|---|\n| 1 | mix |\n| 2 | bake |",
    "first_singular": "I baked my first loaf when I was ten, and I still remember my mistakes.",
    "first_plural": "We bake our bread together, and we share it with our neighbours.",
    "second_person": "You preheat your oven, then you mix your flour, and you wait.",
    "questions": "Why does bread rise? What does yeast eat? Can you bake without it?",
}


@pytest.mark.parametrize("feature", sorted(CASES))
def test_each_structure_is_seen_where_it_is_and_not_in_plain_prose(feature):
    column = FORM_FEATURES.index(feature)
    shown, plain = form_features([CASES[feature], "The oven heats the dough. The crust turns brown."])
    assert shown[column] >= 0.5 and plain[column] == 0.0


def test_values_lie_in_the_unit_interval_for_odd_texts():
    texts = ["", "   \n\n ", "!!!", "1 2 3 4 5 6", "a" * 5000, "x\n" * 400, *CASES.values()]
    features = form_features(texts)
    assert features.shape == (len(texts), len(FORM_FEATURES)) and features.dtype == np.float32
    assert np.all((features >= 0) & (features <= 1))


def test_one_str_is_refused():
    with pytest.raises(TypeError, match="wrap it in a list"):
        form_features("one text")


def test_layout_of_the_same_sentences_is_far_and_another_subject_in_prose_is_near():
    other = ("The council met on Tuesday to discuss the budget. Members agreed on new spending. "
             "The vote was close. A report follows next month.")
    numbered, bullets, dialogue = (CASES[name] for name in ("numbered_lines", "bullet_lines", "speaker_lines"))
    d = form_distances(form_features([PROSE, other, numbered, bullets, dialogue]))
    from scipy.spatial.distance import squareform
    d = squareform(d)
    assert d[0, 1] < DEFAULT_FORM_THRESHOLD  # two subjects, both plain prose: one form
    assert min(d[0, 2], d[0, 3], d[0, 4], d[2, 3], d[2, 4], d[3, 4]) > DEFAULT_FORM_THRESHOLD
    assert np.allclose(np.diag(d), 0)


def test_distances_are_the_condensed_rms_difference():
    f = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert form_distances(f, np.ones(2)) == pytest.approx([np.sqrt(0.5), 1.0, np.sqrt(0.5)])
    assert form_distances(f, np.array([1.0, 0.0])) == pytest.approx([1.0, 1.0, 0.0])
    assert form_distances(f[:1], np.ones(2)).shape == (0,)


def test_quoted_speech_is_not_the_writer_s_person():
    quoted, own = form_features(['The minister said "I will resign and we will go" on Monday, and left.',
                                 "I will resign, and we will go on Monday, I said, and left."])
    for feature in ("first_singular", "first_plural"):
        column = FORM_FEATURES.index(feature)
        assert quoted[column] == 0.0 and own[column] > 0.5
