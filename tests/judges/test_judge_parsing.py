"""Judge replies from a seeded fuzzer: each is repaired into a partition or counted as a
failure of one kind, and nothing raises."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from generator.judges.cluster_agent import ClusterAgentJudge, _parse_round
from generator.judges.protocol import score_corpus
from generator.judges.calls import FAILURE_KINDS, ReplyError, parse_json
from generator.judges.replies import member_number, parse_clusters, repair_reply
from fakes import JUDGE_CRITERIA, ScriptedJudgeBackend, valid_verdicts

K = 10
NUM_CASES = 300
STRANGE_MEMBERS = ["²", "٣", "３", "Ⅲ", "3.0", " 4 ", "", "five", None, True, 2.5, 3.0, -1, 0, 10**30, 1e308,
                   "1e3", [1, 2], {"n": 1}, "१०"]


def pick(options: list, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def base_reply(rng: np.random.Generator) -> dict:
    labels = rng.integers(0, rng.integers(1, K + 1), size=K)
    groups = [[int(i) + 1 for i in np.flatnonzero(labels == label)] for label in np.unique(labels)]
    return {"clusters": [{"cluster_id": j + 1, "members": g, "reason": "alike",
                          "metadata": {"domain": "x", "form": "y"},
                          "metrics": {"technicality": {"reasoning": "r", "score": 3}}} for j, g in enumerate(groups)]}


def mutate(reply: dict, rng: np.random.Generator) -> str:
    """One to three random mutations of a valid reply, as text."""
    text = None
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 16))
        clusters = reply.get("clusters") if isinstance(reply, dict) else None
        if not isinstance(clusters, list) or not clusters or not all(isinstance(c, dict) for c in clusters):
            op = pick([12, 13, 14, 15], rng)
        if op == 0:  # a strange member
            c = clusters[int(rng.integers(len(clusters)))]
            if isinstance(c.get("members"), list):
                c["members"].append(STRANGE_MEMBERS[int(rng.integers(len(STRANGE_MEMBERS)))])
        elif op == 1:  # numbered from 0
            for c in clusters:
                if isinstance(c.get("members"), list):
                    c["members"] = [m - 1 if isinstance(m, int) and not isinstance(m, bool) else m
                                    for m in c["members"]]
        elif op == 2:  # an empty cluster
            clusters.append({"cluster_id": 99, "members": [], "reason": "none"})
        elif op == 3:  # a huge or negative number
            members = clusters[0].get("members")
            clusters[0]["members"] = [10**40, -3] + (members if isinstance(members, list) else [])
        elif op == 4:  # members of the wrong type
            clusters[int(rng.integers(len(clusters)))]["members"] = pick(["1, 2", None, 3], rng) \
                if rng.random() < 0.5 else {"a": 1}
        elif op == 5:  # one name as metadata and as metric
            clusters[0]["metadata"] = {**(clusters[0].get("metadata") or {}), "technicality": "high"}
            clusters[0]["metrics"] = {**(clusters[0].get("metrics") or {}), "domain": {"score": "five"}}
        elif op == 6:  # a null where a value belongs
            clusters[0][pick(["reason", "metadata", "cluster_id", "members"], rng)] = None
        elif op == 7:  # nested garbage
            clusters[0]["members"] = [[1, [2, [3]]], {"x": [4]}]
        elif op == 8:  # a duplicate member in two clusters
            clusters[-1].setdefault("members", []).append(1) if isinstance(clusters[-1].get("members"), list) else None
        elif op == 9:  # the clusters key holds the wrong type
            reply["clusters"] = pick(["none", None, 7], rng) if rng.random() < 0.5 else {"1": [1, 2]}
        elif op == 10:  # a top-level list
            reply = [reply]
        elif op == 11:  # clusters missing
            reply = {"groups": clusters}
        text = json.dumps(reply, ensure_ascii=False)
        if op == 12:  # prose with braces after the JSON
            text += "\n\nNote: {documents 3 and 4} could also be {merged}."
        elif op == 13:  # cut short
            text = text[:int(rng.integers(0, max(len(text), 1)))]
        elif op == 14:  # fences and prose before
            text = "Sure! Here is {the} answer:\n```json\n" + text + "\n```"
        elif op == 15:  # deep nesting or plain garbage
            text = pick(["[" * 5000 + "]" * 5000, "I cannot do this.", "{{{{", "null", '{"clusters": NaN}'], rng)
    return text if text is not None else json.dumps(reply, ensure_ascii=False)


def fuzz_cases(seed: int = 12, num: int = NUM_CASES) -> list[str]:
    rng = np.random.default_rng(seed)
    return [mutate(base_reply(rng), rng) for _ in range(num)]


def test_fuzzed_cluster_replies_are_repaired_or_counted():
    cases = fuzz_cases()
    backend = ScriptedJudgeBackend()
    judge = ClusterAgentJudge(backend, JUDGE_CRITERIA)
    outcomes = Counter()
    for text in cases:
        backend.cluster = lambda request, text=text: text  # both tries get the same reply
        [result] = judge.cluster([[f"document {i}" for i in range(K)]])
        if result.failed:
            assert result.failure in FAILURE_KINDS and result.clusters == ()
            outcomes[result.failure] += 1
        else:
            assert sorted(m for c in result.clusters for m in c) == list(range(K))
            outcomes["repaired" if sum(result.repairs.values()) + sum(result.fixes.values()) else "clean"] += 1
    assert sum(outcomes.values()) == NUM_CASES >= 200
    # the fuzzer reaches every path: clean, repaired, unreadable and wrongly shaped replies
    assert outcomes["clean"] > 10 and outcomes["repaired"] > 50
    assert outcomes["json"] > 10 and outcomes["schema"] > 10


def test_fuzzed_replies_raise_only_reply_errors_from_the_parsers():
    """The parsers themselves never slip (the catch-all in ask_all is a net, not the path)."""
    kinds = Counter()
    for text in fuzz_cases(seed=7):
        try:
            proposal = repair_reply(parse_clusters(parse_json(text)), K)
            assert sorted(m for c in proposal.clusters for m in c) == list(range(K))
            kinds["ok"] += 1
        except ReplyError as exc:
            kinds[exc.kind] += 1
        try:
            _parse_round(parse_json(text))
        except ReplyError:
            pass
    assert set(kinds) == {"ok", "json", "schema"}


def test_regression_superscript_member_crashed_scoring():
    """Bug: a member "²" passed str.isdigit() and int("²") raised ValueError outside the
    repair path, crashing the whole scoring run. It is now an out-of-range member."""
    reply = json.dumps({"clusters": [{"members": ["²", 1, 2]}, {"members": [3, "٣"]}]})
    backend = ScriptedJudgeBackend(cluster=lambda request: reply, verify=valid_verdicts)
    texts = [f"text {i}" for i in range(12)]
    report = score_corpus(texts, ClusterAgentJudge(backend, JUDGE_CRITERIA), k=K, rng=np.random.default_rng(0),
                          num_batches=3)
    assert report.num_failed == 0
    assert report.repairs["out_of_range"] == 3 and report.repairs["duplicate"] == 3  # "²" out; "٣" is 3 again
    assert report.score == pytest.approx((2 + 7) ** 2 / K)  # {1,2}, {3}, 7 singletons


@pytest.mark.parametrize("member, number", [("٣", 3), ("３", 3), ("१०", 10), (" 7 ", 7), (4.0, 4), (7, 7),
                                            ("²", None), ("Ⅲ", None), (2.5, None), (True, None), (None, None),
                                            ("", None), ("1e3", None), (float("inf"), None), ([1], None)])
def test_member_numbers(member, number):
    assert member_number(member) == number


def test_zero_based_answer_is_shifted_and_counted():
    proposal = repair_reply(parse_clusters({"clusters": [{"members": [0, 1]}, {"members": [2, 3, 4]}]}), 5)
    assert proposal.clusters == ((0, 1), (2, 3, 4)) and proposal.fixes["zero_based"] == 1
    assert sum(proposal.repairs.values()) == 0


def test_empty_clusters_are_counted_and_dropped():
    proposal = repair_reply(parse_clusters({"clusters": [{"members": []}, {"members": [1, 2, 3]}]}), 3)
    assert proposal.clusters == ((0, 1, 2),) and proposal.fixes["empty_cluster"] == 1


def test_prose_with_braces_after_the_json_is_ignored():
    assert parse_json('{"clusters": [1]}\nThese {two} were {hard}.') == {"clusters": [1]}
    assert parse_json('Thoughts {draft}: {"a": {"b": 2}} done {x}') == {"a": {"b": 2}}
    with pytest.raises(ReplyError) as info:
        parse_json('{"clusters": [{"members": [1, 2')
    assert info.value.kind == "json"
