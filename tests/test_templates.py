"""Golden renders of every shipped template, and the declaration checks."""
from pathlib import Path

import pytest

from generator.errors import UserError
from generator.templates import check_template_against, load_template

VARS = {
    "topic": "tide pools", "topics": ["tide pools", "sourdough", "tax brackets"],
    "domain": "Biology", "style": "blog post", "style_description": "A chatty blog post.",
    "persona": "a marine biologist", "audience": "young children",
    "audience_description": "Children aged six to ten.", "num_words": 120,
}
GOLDEN = {
    "topic": "Write an informative text of about 120 words on the following subject: tide pools.\n"
             "Explain the main ideas clearly and include at least one concrete example.",
    "topic_style": "Write a blog post about tide pools.\nFormat: A chatty blog post.\n"
                   "Explain tide pools with one concrete example, in about 120 words.",
    "topic_style_persona": "Write a blog post about tide pools.\nAuthor: a marine biologist.\n"
                           "Format: A chatty blog post.\n"
                           "Explain tide pools with one concrete example, in about 120 words.",
    "multitopic_style_persona": "Write a blog post that connects these subjects:\n- tide pools\n- sourdough\n"
                                "- tax brackets\nAuthor: a marine biologist.\nFormat: A chatty blog post.\n"
                                "Give each subject a paragraph that names it, then say how they relate, "
                                "in about 120 words.",
    "textbook": "Write a section of a Biology textbook for young children on \"tide pools\".\n"
                "About the readers: Children aged six to ten.\nSay why tide pools matters, explain its key "
                "idea with one worked example,\nand end with one short exercise on tide pools. Write in a "
                "clear, engaging textbook voice, without a\ntitle page or a table of contents, in about 120 words.",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_render(root, name):
    t = load_template(root / "prompts" / f"{name}.j2")
    assert t.render({k: VARS[k] for k in t.variables}) == GOLDEN[name]


def test_every_shipped_template_has_a_golden_render(root):
    shipped = {p.stem for p in (root / "prompts").glob("*.j2")}
    assert shipped == set(GOLDEN)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.j2"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,match", [
    ("Write about {{ topic }}.", "missing declaration header"),
    ("{# variables: [topic] #}Write about {{ topic }} for {{ persona }}.", "differ from those used"),
    ("{# variables: [topic] #}Write about {{ topic }", "template syntax error"),
    ("{# variables: topic #}Write about {{ topic }}.", "must be a list of names"),
    ("{#\nvariables: [topic]\nnum_topics: 0\n#}{{ topic }}", "num_topics must be a positive integer"),
])
def test_bad_templates_are_rejected(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        load_template(write(tmp_path, text))


def test_template_needing_an_axis_the_grid_lacks(tmp_path):
    t = load_template(write(tmp_path, "{# variables: [topic, persona] #}{{ persona }}: {{ topic }}"))
    with pytest.raises(UserError, match=r"uses \['persona'\] but the grid"):
        check_template_against(t, {"topic", "domain"}, "recipe.yaml: grid")


def test_sandbox_blocks_unsafe_attribute_access(tmp_path):
    from jinja2.exceptions import SecurityError
    t = load_template(write(tmp_path, "{# variables: [topic] #}{{ topic.__class__.__mro__ }}"))
    with pytest.raises(SecurityError):
        t.render({"topic": "x"})
