"""Templates with `parts: topics`: one request per topic, one document per cell."""
import pytest

from conftest import write_recipe
from fakes import FakeBackend, TricklingBackend
from generator.errors import UserError
from generator.readers import load_corpus
from generator.recipe import load_recipe
from generator.records import Request, Result
from generator.run import controller
from generator.run.parts import PART_BREAK, PartsBackend, join_results, split_request
from generator.sampling.requests import PROMPT_BREAK, plan_samples
from generator.sampling.templates import load_template

PARTS_TEMPLATE = """{#
variables: [topic, topics, persona, part, num_parts, num_words]
num_topics: 3
parts: topics
#}
Part {{ part }} of {{ num_parts }} ({{ topics | join(', ') }}): {{ topic }}
by {{ persona }}, {{ num_words }} words."""


def parts_recipe(tmp_path, policy="trim", max_tokens=96):
    (tmp_path / "parts.j2").write_text(PARTS_TEMPLATE)
    return write_recipe(tmp_path, f"""
name: parts
seed: 5
roots: [@ROOT@, {tmp_path}]
grid:
  topic: @ROOT@/topics/topics.yaml
  persona: @ROOT@/topics/personas.yaml
templates:
  - path: {tmp_path}/parts.j2
size: {{num_docs: 12, shard_rows: 5}}
sampling: {{temperature: 0.7, top_p: 0.9, max_tokens: {max_tokens}}}
keep_truncated: {policy}
engine: {{backend: ray}}
scoring: {{enabled: false}}
""")


def test_a_parts_sample_is_one_request_with_one_prompt_per_topic(tmp_path):
    plan = load_recipe(parts_recipe(tmp_path))
    (sample,) = plan_samples(plan, 0, 1)
    r = sample.request
    topics = sample.values["topic"].split("; ")
    assert len(topics) == 3 and len(set(topics)) == 3
    assert [p.splitlines()[0] for p in r.parts] == [
        f"Part {j + 1} of 3 ({', '.join(topics)}): {t}" for j, t in enumerate(topics)]
    assert r.max_tokens == 32  # the document's 96 tokens shared by three parts
    assert all(p.endswith("20 words.") for p in r.parts)  # num_words sized to one part's tokens
    assert r.prompt == PROMPT_BREAK.join(r.parts)
    assert split_request(r)[2].id == f"{r.id}/2" and len({x.seed for x in split_request(r)}) == 3


def test_parts_run_end_to_end_with_one_document_per_cell(tmp_path):
    plan = load_recipe(parts_recipe(tmp_path, policy="keep"))
    inner = FakeBackend(words=10)
    inner.reverse = True  # parts come back out of order
    summary = controller.run(plan, tmp_path / "run", inner)
    texts, meta = load_corpus(tmp_path / "run" / "data")
    assert summary["num_docs"] == len(texts) == 12
    assert sum(inner.calls) == 3 * summary["num_attempted"]  # every part went to the engine once
    answers = {r.id: r.text for r in FakeBackend(words=10).generate(
        [x for s in plan_samples(plan, 0, 12) for x in split_request(s.request)])}
    for i, s in enumerate(plan_samples(plan, 0, 12)):
        assert texts[i] == PART_BREAK.join(answers[f"{s.request.id}/{j}"] for j in range(3))
        assert meta["topic"][i] == s.values["topic"]


def result(rid, text, finish="stop", error=None):
    return Result(id=rid, text=text, finish_reason=finish, num_prompt_tokens=5, num_tokens=7, error=error)


REQUEST = Request(id="d", prompt="a\n\n---\n\nb", max_tokens=10, parts=("a", "b"))


@pytest.mark.parametrize("policy, second, text, finish", [
    ("trim", result("d/1", "Whole one. Cut off mid", "length"), "First part.\n\nWhole one.", "trimmed"),
    ("keep", result("d/1", "Whole one. Cut off mid", "length"), "First part.\n\nWhole one. Cut off mid", "length"),
    ("drop", result("d/1", "Whole one. Cut off mid", "length"), "First part.\n\nWhole one. Cut off mid", "length"),
    ("trim", result("d/1", "No sentence here", "length"), "", "error"),
    ("trim", result("d/1", "", "error", error="engine died"), "", "error"),
    ("trim", result("d/1", "   "), "", "error"),
])
def test_join_results_applies_the_truncation_policy_per_part(policy, second, text, finish):
    joined = join_results(REQUEST, [result("d/0", "First part."), second], policy)
    assert (joined.text, joined.finish_reason) == (text, finish)
    assert (joined.num_tokens, joined.num_prompt_tokens) == (14, 10)
    if finish == "error":
        assert joined.error.startswith("part 2")


def test_parts_backend_passes_plain_requests_and_counts_documents_in_flight():
    inner = FakeBackend()
    backend = PartsBackend(inner, width=2, policy="trim")
    assert backend.capacity == inner.capacity // 2  # before any document: each may have every part
    backend.submit([REQUEST, Request(id="plain", prompt="c", max_tokens=10)])
    assert backend.in_flight == 2 and inner.in_flight == 3
    got = {r.id: r for r in backend.poll(0)}
    assert set(got) == {"d", "plain"} and backend.in_flight == 0
    assert got["d"].text.count(PART_BREAK) == 1


def test_parts_backend_capacity_fills_the_inner_backend_at_the_mix_of_parts_so_far():
    """One document in four with two parts: 1.25 requests a document, so the documents in flight
    fill the inner backend's requests, not half of them."""
    inner = FakeBackend()
    inner.capacity, inner.answer = 100, 1
    backend = PartsBackend(inner, width=2, policy="trim")
    plain = [Request(id=f"p{i}", prompt="c", max_tokens=10) for i in range(3)]
    backend.submit([REQUEST, *plain])  # 4 documents, 5 requests
    assert backend.parts_per_document == 1.25
    assert backend.capacity == 4 + int((100 - 5) / 1.25)
    room = backend.capacity - backend.in_flight
    more = [Request(id=f"q{i}", prompt="a\n\n---\n\nb", max_tokens=10, parts=("a", "b")) if i % 4 == 0
            else Request(id=f"q{i}", prompt="c", max_tokens=10) for i in range(room)]
    backend.submit(more)  # the same mix: the inner backend is full, not half empty
    assert 0.95 * inner.capacity <= inner.in_flight <= inner.capacity


def test_parts_backend_reports_the_inner_token_count_or_the_tokens_of_parts_back():
    trickling = PartsBackend(TricklingBackend(), width=2, policy="trim")
    trickling.submit([REQUEST])
    assert trickling.poll(0) == [] and trickling.generated_tokens == 2 * TricklingBackend.step_tokens
    counting = PartsBackend(FakeBackend(), width=2, policy="trim")
    counting.submit([REQUEST])
    [result] = counting.poll(0)
    assert counting.generated_tokens == result.num_tokens > 0


@pytest.mark.parametrize("header, match", [
    ("variables: [topic]\nnum_topics: 3\nparts: paragraphs", "parts must be 'topics'"),
    ("variables: [topic]\nparts: topics", "needs num_topics of 2 or more"),
    ("variables: [topic, part]\nnum_topics: 3", r"uses \['part'\] without parts: topics"),
])
def test_bad_parts_declarations_are_rejected(tmp_path, header, match):
    body = "{{ topic }}" + (" {{ part }}" if "part]" in header else "")
    (tmp_path / "t.j2").write_text("{#\n" + header + "\n#}\n" + body)
    with pytest.raises(UserError, match=match):
        load_template(tmp_path / "t.j2")


def test_parts_template_needs_a_topic_axis(tmp_path):
    recipe = parts_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("  topic: ", "  style: ").replace("topics.yaml", "styles.yaml"))
    with pytest.raises(UserError, match="parts: topics needs a topic axis"):
        load_recipe(recipe)


def test_a_template_system_message_reaches_the_request_unless_the_recipe_sets_one(tmp_path):
    (tmp_path / "parts.j2").write_text(PARTS_TEMPLATE.replace("parts: topics", "parts: topics\nsystem: Stay on topic."))
    recipe = parts_recipe(tmp_path)
    (tmp_path / "parts.j2").write_text(PARTS_TEMPLATE.replace("parts: topics", "parts: topics\nsystem: Stay on topic."))
    own = plan_samples(load_recipe(recipe), 0, 1)[0].request
    replaced = plan_samples(load_recipe(recipe, ["system_prompt=Be brief."]), 0, 1)[0].request
    assert (own.system, replaced.system) == ("Stay on topic.", "Be brief.")
    assert own.id != replaced.id and {x.system for x in split_request(own)} == {"Stay on topic."}
