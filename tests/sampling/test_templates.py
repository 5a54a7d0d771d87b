"""Golden renders of every shipped template, and the declaration checks."""
import re
from pathlib import Path

import pytest

from generator.errors import UserError
from generator.sampling.requests import PROMPT_BREAK
from generator.sampling.templates import check_template_against, load_template

VARS = {
    "topic": "tide pools", "topics": ["tide pools", "sourdough", "tax brackets"],
    "domain": "Biology", "style": "blog post", "style_description": "A chatty blog post.",
    "persona": "a marine biologist", "audience": "young children",
    "audience_description": "Children aged six to ten.", "num_words": 120,
    "seed_doc": "Tide pools hold sea water when the tide goes out.",
}
GOLDEN = {
    "topic": "Write an informative text of about 120 words on the following subject: tide pools.\n"
             "Explain the main ideas clearly and include at least one concrete example.",
    "topic_style": "Write a blog post about tide pools.\nFormat: A chatty blog post.\n"
                   "Explain tide pools with one concrete example, in about 120 words.",
    "topic_style_persona": "Write a blog post about tide pools.\nAuthor: a marine biologist.\n"
                           "Format: A chatty blog post.\n"
                           "Explain tide pools with one concrete example, in about 120 words.",
    "multitopic_style_persona": "\n\n---\n\n".join(
        f"Write one paragraph of a blog post about {t}.\nAuthor: a marine biologist.\n"
        f"Format: A chatty blog post.\nExplain {t} with one concrete example, in about 120 words."
        for t in ("tide pools", "sourdough", "tax brackets")),
    "textbook": "Write a section of a Biology textbook for young children on \"tide pools\".\n"
                "About the readers: Children aged six to ten.\nSay why tide pools matters, explain its key "
                "idea with one worked example,\nand end with one short exercise on tide pools. Write in a "
                "clear, engaging textbook voice, without a\ntitle page or a table of contents, in about 120 words.",
    "seed_textbook": (
        'Here is an extract from a real document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Write a section of a textbook that teaches what this extract is about. Explain its key ideas in\n'
        'your own words, give one worked example, and end with one short exercise. Do not copy sentences\n'
        'from the extract. Write about 120 words.'),
    "seed_qa": (
        'Here is an extract from a real document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Write a set of questions a curious reader might ask about this extract, each followed by a clear,\n'
        'complete answer that the extract supports. Use the form "Q: ..." and "A: ...". Write about\n'
        '120 words.'),
    "seed_summary": (
        'Here is an extract from a real document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Summarise it in one paragraph, then list its key facts as short bullet points (who, what, where,\n'
        'when, why). Keep only what the extract says. Write about 120 words.'),
    "seed_simpler": (
        'Here is an extract from a real document:\n'
        '"""\n'
        'Tide pools hold sea water when the tide goes out.\n'
        '"""\n'
        'Explain what it says to young children (Children aged six to ten.), in simpler words and shorter\n'
        'sentences, with one everyday comparison. Keep its meaning. Write about 120 words.'),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_render(root, name):
    t = load_template(root / "prompts" / f"{name}.j2")
    if t.parts:  # one prompt per topic; 654 tokens shared by three parts ask 120 words each
        assert PROMPT_BREAK.join(t.prompts(VARS, max_tokens=654)) == GOLDEN[name]
    else:
        assert t.render({k: VARS[k] for k in t.variables}) == GOLDEN[name]


def test_system_messages_of_the_shipped_templates(root):
    """Measured to keep the embedded model on topic (BENCHMARKS.md, issue 14); a recipe's
    system_prompt replaces them."""
    system = {p.stem: load_template(p).system for p in (root / "prompts").glob("*.j2")}
    assert {k for k, v in system.items() if v} == {"topic_style", "topic_style_persona", "multitopic_style_persona"}


@pytest.mark.parametrize("domain, article", [("Physics", "a"), ("Engineering and Technology", "an"),
                                             ("Everyday Life Skills", "an"), ("Music", "a"),
                                             ("engineering", "an"), ("law", "a")])
def test_the_textbook_template_takes_the_domains_article(root, domain, article):
    t = load_template(root / "prompts" / "textbook.j2")
    text = t.render({**{k: VARS[k] for k in t.variables}, "domain": domain})
    assert text.startswith(f"Write a section of {article} {domain} textbook for ")


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
    ("{#\nvariables: [topic]\nsystem: [a, b]\n#}{{ topic }}", "system must be a non-empty text"),
])
def test_bad_templates_are_rejected(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        load_template(write(tmp_path, text))


def test_template_needing_an_axis_the_grid_lacks(tmp_path):
    t = load_template(write(tmp_path, "{# variables: [topic, persona] #}{{ persona }}: {{ topic }}"))
    with pytest.raises(UserError, match=r"uses \['persona'\] but the grid"):
        check_template_against(t, {"topic", "domain"}, "recipe.yaml: grid")


def test_sandbox_blocks_unsafe_attribute_access(tmp_path):
    t = load_template(write(tmp_path, "{# variables: [topic] #}\n{{ topic.__class__.__mro__ }}"))
    with pytest.raises(UserError, match=r"t\.j2:2: the sandbox refused an unsafe operation .*__class__"):
        t.render({"topic": "x"})


def test_template_runtime_error_names_file_and_line(tmp_path):
    t = load_template(write(tmp_path, "{# variables: [topic] #}\nok\n{{ topic | int + none }}"))
    with pytest.raises(UserError, match=r"t\.j2:3: template failed: TypeError"):
        t.render({"topic": "x"})


@pytest.mark.parametrize("body, match", [
    ("{{ topic.__class__ }}", r"bad\.j2:\d+: the sandbox refused"),
    ("{{ topic | int + none }}", r"bad\.j2:\d+: template failed: TypeError"),
])
def test_unsafe_template_fails_at_load_with_exit_2(tmp_path, capsys, body, match):
    """Regression: `generator render` with `{{ topic.__class__ }}` exited 1 with a 36-line traceback."""
    from conftest import SMALL_RECIPE, write_recipe
    from generator.cli import main
    tpl = tmp_path / "bad.j2"
    tpl.write_text("{# variables: [topic] #}\n" + body + "\n")
    recipe = write_recipe(tmp_path, SMALL_RECIPE.replace("@ROOT@/prompts/textbook.j2", str(tpl))
                          .replace("roots: [@ROOT@]", f"roots: [@ROOT@, {tmp_path}]"))
    for command in (["render", str(recipe)], ["run", str(recipe), "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(match, err[0]), err
    assert not (tmp_path / "out").exists()
