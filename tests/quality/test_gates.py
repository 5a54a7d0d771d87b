"""The gates as a decision table: which gate (and rule) rejects which text, with datatrove's
filters and their parameters passed through, and decontamination against an evaluation set."""
from __future__ import annotations

import dataclasses

import pytest

from generator.quality.config import C4, FineWebQuality, GopherQuality, GopherRepetition, Quality
from generator.quality.evalsets import EvalSet
from generator.quality.gates import Rejection, build_gates, ngram_rules, rejection_stop

GOOD = """The water cycle describes how water moves between the oceans, the air and the land. Heat from \
the sun evaporates water from the surface of the sea, and the vapour rises until it cools and condenses \
into clouds.
When the droplets in a cloud grow heavy enough, they fall as rain or snow. Some of that water runs off \
into rivers and returns to the sea, while the rest soaks into the ground and feeds the plants that grow \
there.
Over thousands of years, this cycle has shaped valleys, filled lakes and carried nutrients to the places \
where life depends on them. Understanding it helps farmers plan their harvests and helps cities prepare \
for floods."""
LOOPING = "The best way to learn is to practise every day. " * 12  # a model stuck in a loop
HEADING = "#11. Public Speaking: The Art of Persuasion\n\n#12."  # the quickstart's first row, once
EVAL_ITEM = ("Which layer of the atmosphere holds most of the ozone that shields the surface from the "
             "sun's ultraviolet light?")
ALL = Quality(min_tokens=20, gopher_quality=GopherQuality(), gopher_repetition=GopherRepetition(),
              fineweb_quality=FineWebQuality(), c4=C4(), decontaminate=["mmlu.jsonl"])


@pytest.fixture(scope="module")
def gates():
    return build_gates(ALL, [EvalSet("mmlu", (EVAL_ITEM, "too short to index"))])


@pytest.mark.parametrize("text, gate, rule", [
    (GOOD, None, None),
    (LOOPING, "gopher_quality", "gopher_enough_stop_words"),  # the first gate in order that fails
    (HEADING, "min_tokens", "too_short"),
    (GOOD + "\nA quiz asked: " + EVAL_ITEM.lower().replace("?", "") + ", and nobody knew.",
     "decontaminate", "mmlu"),
    (GOOD.replace("Understanding it", "Understanding {it}"), "c4", "curly_bracket"),
    (GOOD.replace(". ", ".\n"), None, None),
])
def test_gates_in_order(gates, text, gate, rule):
    got = gates.check(text)
    assert (got.gate, got.rule) == (gate, rule) if gate else got is None, got


def test_only_the_gates_named_run_and_datatrove_s_parameters_pass_through():
    repetition = build_gates(Quality(gopher_repetition=GopherRepetition()))
    assert repetition.names == ["gopher_repetition"]
    assert repetition.check(LOOPING) == Rejection("gopher_repetition", "top_3_gram", "top_3_gram")
    assert repetition.check(GOOD) is None
    loose = build_gates(Quality(gopher_repetition=GopherRepetition(
        dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
        top_n_grams=None, dup_n_grams={"5": 1.0})))
    assert loose.check(LOOPING) is None  # every rule loosened: the loop passes
    strict = build_gates(Quality(gopher_quality=GopherQuality(min_doc_words=500)))
    assert strict.check(GOOD).rule == "gopher_short_doc"
    assert build_gates(Quality(gopher_quality=GopherQuality())).check(GOOD) is None


def test_fineweb_rejects_a_list_of_short_lines():
    gates = build_gates(Quality(fineweb_quality=FineWebQuality()))
    listing = "\n".join(f"- item number {i}" for i in range(30))
    assert gates.check(listing).gate == "fineweb_quality"
    assert gates.check(GOOD) is None


def test_c4_judges_a_copy_and_leaves_the_text_as_generated():
    gates = build_gates(Quality(c4=C4()))
    text = GOOD + "\nThis site uses cookies"
    before = str(text)
    assert gates.check(text) is None
    assert text == before
    assert build_gates(Quality(c4=C4(min_num_sentences=50))).check(GOOD).rule == "too_few_sentences"


def test_decontamination_names_the_set_and_the_ngram_and_ignores_shorter_overlaps():
    q = Quality(decontaminate=["x"], decontaminate_n=5)
    sets = [EvalSet("arc", ("the quick brown fox jumps",)), EvalSet("gsm8k", ("two plus two",))]
    gates = build_gates(q, sets)
    hit = gates.check("Yesterday THE quick, brown fox jumps again.")  # normalised: case and punctuation
    assert (hit.gate, hit.rule) == ("decontaminate", "arc")
    assert "5-gram with evaluation set arc: 'the quick brown fox jumps'" in hit.reason
    assert gates.check("The quick brown fox sleeps; two plus two is four.") is None


def test_a_check_is_a_pure_function_of_the_text(gates):
    verdicts = [gates.check(t) for t in (GOOD, LOOPING, HEADING) * 3]
    assert verdicts[:3] == verdicts[3:6] == verdicts[6:]
    assert build_gates(ALL, [EvalSet("mmlu", (EVAL_ITEM,))]).check(LOOPING) == verdicts[1]


@pytest.mark.parametrize("text", ["...", "!!! ???", "#", "\n.\n"])
def test_texts_without_words_are_rejected_not_raised(text):
    gates = build_gates(dataclasses.replace(ALL, min_tokens=0))
    assert gates.check(text) is not None


def test_no_quality_section_builds_no_gates():
    assert build_gates(None) is None


def test_ngram_rules_read_the_recipe_map_shortest_first():
    assert ngram_rules({"10": 0.1, "5": 0.15}) == ((5, 0.15), (10, 0.1))
    assert ngram_rules(None) == ()


@pytest.mark.parametrize("rejected, attempted, stop", [
    ({}, 100, False), ({"c4": 50}, 100, False), ({"c4": 30, "min_tokens": 21}, 100, True),
    ({"c4": 1}, 0, False)])
def test_rejection_stop_past_the_rate_names_the_gate_that_rejected_most(rejected, attempted, stop):
    reason = rejection_stop(Quality(min_tokens=1, max_rejection_rate=0.5), rejected, attempted)
    assert bool(reason) == stop
    if stop:
        assert "rejection rate 51.0% (51/100 rows)" in reason and "most by c4 (30)" in reason
    assert rejection_stop(None, rejected, attempted) == ""


def test_the_word_tokenizer_splits_as_datatrove_s_and_starts_afresh(monkeypatch):
    from datatrove.utils.text import split_into_words

    from generator.quality import gates as gates_module
    monkeypatch.setattr(gates_module, "RENEW_TEXTS", 3)
    english = gates_module.english_words()
    texts = [GOOD, LOOPING, HEADING, EVAL_ITEM, "Don't stop -- it's 3.5 km (roughly) to the U.S. border!"]
    assert [english.word_tokenize(t) for t in texts] == [split_into_words(t, "en") for t in texts]
    first = english.tokenizer
    english.word_tokenize("one more text")  # the sixth: a fresh pipeline from here on
    assert english.tokenizer is not first
    assert english.word_tokenize(GOOD) == split_into_words(GOOD, "en")
