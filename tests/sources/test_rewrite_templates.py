"""Golden renders of the rewrite templates (prompts/rewrite/), and the rewrite recipe loading."""
from __future__ import annotations

import pytest

from generator.recipe import load_recipe
from generator.sampling.requests import plan_samples
from generator.sampling.templates import load_template
from rewrites import ROOT

VARS = {'seed_doc': 'Tide pools hold sea water when the tide goes out.', 'audience': 'young children', 'num_words': 120}
GOLDEN = {
    'rewrite_faq': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Rewrite it as a FAQ: the questions a reader is most likely to ask about it, each followed by a\n'
        'short answer that the document supports. Use the form "Q: ..." and "A: ...". Add nothing the\n'
        'document does not say. Write about 120 words.'),
    'rewrite_math': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Write two math word problems that use the numbers, quantities or dates in this document, each with\n'
        'a worked solution step by step. If the document has no numbers, use counts of the things it names.\n'
        'Write about 120 words.'),
    'rewrite_qa': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Rewrite it as a conversation in which a student asks questions about it and a teacher answers them\n'
        'from the document alone. Use the form "Student: ..." and "Teacher: ...". Write about\n'
        '120 words.'),
    'rewrite_summary': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Summarise it: one paragraph with its main point, then its key facts as short bullet points. Keep\n'
        'only what the document says. Write about 120 words.'),
    'rewrite_table': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Rewrite its facts as a Markdown table (one row per person, place, event or item it names, with the\n'
        'columns that fit), followed by two sentences that say what the table shows. Add nothing the document\n'
        'does not say. Write about 120 words.'),
    'rewrite_textbook': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Rewrite it as a section of a textbook for young children: introduce the subject, explain its key ideas in your own\n'
        'words with one worked example, and end with one short exercise. Keep to what the document says.\n'
        'Write about 120 words.'),
    'rewrite_tutorial': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Rewrite it as a step-by-step tutorial for young children that teaches what the document\n'
        'explains: a one-sentence goal, numbered steps, and a closing tip. Keep every fact from the document and invent none. Write\n'
        'about 120 words.'),
    'rewrite_wikipedia': (
        'Here is a document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Rewrite it as an encyclopedia article in the neutral, factual style of Wikipedia: a lead sentence\n'
        'that defines the subject, then short paragraphs on its parts. No opinions, no first person. Write\n'
        'about 120 words.'),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_render(name):
    t = load_template(ROOT / "prompts" / "rewrite" / f"{name}.j2")
    assert t.render({k: VARS[k] for k in t.variables}) == GOLDEN[name]


def test_every_rewrite_template_has_a_golden_render():
    assert {p.stem for p in (ROOT / "prompts" / "rewrite").glob("*.j2")} == set(GOLDEN)


def test_the_rewrite_recipe_rewrites_each_kjv_passage_four_times_in_a_row():
    plan = load_recipe(ROOT / "recipes" / "rewrite.yaml")
    assert plan.source.num_units == 100 and plan.recipe.size.num_docs == 400
    samples = plan_samples(plan, 0, 8)
    assert [s.rewrite for s in samples] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert len({s.source_id for s in samples[:4]}) == 1 and samples[4].source_id != samples[0].source_id
    assert all(s.template.startswith("rewrite_") for s in samples)
