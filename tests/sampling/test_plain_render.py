"""Plain templates (text and `{{ name }}` only) are rendered by joining their pieces instead of
through Jinja; the text must be exactly Jinja's, and every failure must still be Jinja's error.
Request ids are written item by item; they must equal the hash of `json.dumps` of the list."""
import hashlib
import json
from pathlib import Path

import pytest

from conftest import ROOT
from generator.errors import UserError
from generator.sampling.requests import request_id
from generator.sampling.sandbox import MAX_VALUE_LEN, time_budget
from generator.sampling.templates import _compile, _plain_pieces, render_source

VALUES = [  # what a grid value, a seed document or a number can look like
    "tide pools", "", "  padded  ", "é ü 漢字 😀", 'quotes " and \' and \\ backslash',
    "line one\nline two\r\nthree\n\n", "{{ not_a_variable }} {% if x %}", "\t\u2028\u00a0", 120, 0, 3.5,
    ["a", "b"], None,
]
INLINE = {  # template source -> whether it is plain
    "Write about {{ topic }}.": True,
    "{{ topic }}{{ style }}": True,
    "  {{ topic }}  \n": True,
    "no variables at all\n\n": True,
    "a\r\nb {{ topic }}\r\n": True,
    "{# comment #}\n{{ topic }}\n{#- trimmed -#}\n  {{- style -}}  \nend": True,
    "{% raw %}{{ topic }}{% endraw %} {{ style }}": True,
    "{{ topic | upper }}": False,
    "{{ topic ~ style }}": False,
    "{{ 'x' if topic else 'y' }}": False,
    "{% if topic %}{{ topic }}{% endif %}": False,
    "{% for t in [topic, style] %}{{ t }} {% endfor %}": False,
    "{{ self }}": False,
    "{{ topic }} {{ range }}": True,  # `range` is a global: no value given, Jinja renders it
}


def jinja_render(source: str, variables: dict) -> str:
    return _compile(source).render(**variables).strip()


def shipped_templates() -> list[Path]:
    return sorted((ROOT / "prompts").rglob("*.j2")) + sorted((ROOT / "recipes").rglob("*.j2"))


@pytest.mark.parametrize("path", shipped_templates(), ids=lambda p: p.name)
def test_shipped_templates_render_as_jinja_does(path):
    source = path.read_text(encoding="utf-8")
    names = ["topic", "topics", "domain", "style", "style_description", "persona", "audience",
             "audience_description", "num_words", "seed_doc", "seed_doc_id", "seed_doc_source",
             "seed_doc_chunk", "rewrite", "part", "num_parts", "document", "text"]
    for k, value in enumerate(VALUES):
        variables = {name: VALUES[(k + j) % len(VALUES)] for j, name in enumerate(names)}
        variables["topics"] = ["tide pools", "sourdough", "tax brackets"]
        variables["domain"] = "Biology"
        try:
            want = jinja_render(source, variables)
        except Exception as exc:  # noqa: BLE001 - then the fast path must fail the same way
            with pytest.raises(UserError):
                render_source(source, variables)
            assert not isinstance(exc, KeyError)
            continue
        assert render_source(source, variables) == want


def test_the_rewrite_templates_are_plain_and_a_filtered_one_is_not():
    rewrites = sorted((ROOT / "prompts" / "rewrite").glob("*.j2"))
    assert rewrites and all(_plain_pieces(p.read_text()) is not None for p in rewrites)
    assert _plain_pieces((ROOT / "prompts" / "textbook.j2").read_text()) is None  # a conditional expression


@pytest.mark.parametrize("source,plain", INLINE.items())
def test_inline_templates_render_as_jinja_does(source, plain):
    assert (_plain_pieces(source) is not None) == plain
    for value in VALUES:
        variables = {"topic": value, "style": "blog post"}
        assert render_source(source, variables) == jinja_render(source, variables)


def test_a_missing_variable_is_still_jinjas_error_with_its_line():
    with pytest.raises(UserError, match=r"t\.j2:2: 'style' is undefined"):
        render_source("Write about {{ topic }}.\nStyle: {{ style }}", {"topic": "x"}, where="t.j2")


def test_a_text_past_the_size_limit_is_still_refused():
    with pytest.raises(UserError, match="past the sandbox's limits"):
        render_source("{{ topic }}{{ topic }}", {"topic": "x" * (MAX_VALUE_LEN // 2 + 1)})
    assert len(render_source("{{ topic }}", {"topic": "x" * MAX_VALUE_LEN})) == MAX_VALUE_LEN


def test_inside_a_shared_time_budget_plain_templates_render_through_jinja():
    with time_budget(0.0):  # every Jinja render is past this budget; the join would not notice it
        with pytest.raises(UserError, match="renders too slowly"):
            render_source("Write about {{ topic }}.", {"topic": "x"})


def reference_id(prompt, model, seed, temperature, top_p, max_tokens, system=None):
    key = json.dumps([prompt, model, seed, temperature, top_p, max_tokens] + ([system] if system else []))
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@pytest.mark.parametrize("args", [
    ("Write about tide pools.", "HuggingFaceTB/SmolLM2-135M-Instruct", 123456789, 0.8, 0.95, 256, None),
    ('é "q" \\ \n\t\u2028 😀 漢字', "model/ü", 2**31 - 1, 1, 1.0, 1, ""),
    ("p", "m", 0, 1e-5, 0.9999999999, 10**6, "You are a careful writer. é"),
    ("", "", 5, 0.0, 0.5, 7, "s"),
])
def test_request_ids_are_the_hash_of_the_json_list(args):
    assert request_id(*args) == reference_id(*args)
