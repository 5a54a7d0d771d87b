"""The controller sees quality: a persona whose documents the gates mostly reject loses sampling
weight at the next main round (rejected.jsonl against the kept corpus), the other personas none."""
from __future__ import annotations

import json
from collections import Counter

from conftest import echo_recipe
from fakes import EchoBackend, KeyJudge
from generator.files import read_documents
from generator.recipe import load_recipe
from generator.run import controller, knobs
from generator.run.rejections import rejection_counts, rejection_factors


class ShortForOnePersona(EchoBackend):
    """Echoes the topic, except that one persona's documents are a single word (under min_tokens)."""

    def __init__(self, bad: str):
        super().__init__()
        self.bad = bad

    def generate(self, requests):
        return [r if self.bad not in q.prompt else type(r)(id=r.id, text="Short", finish_reason="stop",
                                                             num_prompt_tokens=10, num_tokens=1)
                for q, r in zip(requests, super().generate(requests))]


def test_rejection_factors_lower_only_the_values_rejected_more_than_their_column():
    rows = [{"sample_index": i, "template": "t",
             "grid_values": json.dumps({"persona": "bad", "topic": f"x{i % 3}"})} for i in range(12)]
    rows.append({"sample_index": 99, "template": "t", "grid_values": json.dumps({"persona": "good"})})
    counts = rejection_counts(rows, below=50)  # the row at 99 is past the round
    assert counts["persona"] == Counter({"bad": 12})
    kept = {"persona": ["good"] * 90 + ["bad"] * 10, "template": ["t"] * 100}
    factors = rejection_factors(counts, kept, kept_total=100)
    assert set(factors) == {"persona"} and set(factors["persona"]) == {"bad"}
    assert 0.2 <= factors["persona"]["bad"] < 0.6  # 10 of 22 kept against 100 of 112 in its column
    assert rejection_factors(rejection_counts([], 50), kept, 100) == {}


def test_a_persona_the_gates_reject_loses_weight_in_the_main_rounds(tmp_path):
    plan = load_recipe(echo_recipe(tmp_path, "gated-steer", 11, "{num_docs: 900, shard_rows: 100}",
                                   "{score: 3.0, tolerance: 0.3, pilot_docs: 100}",
                                   "quality: {min_tokens: 3, max_rejection_rate: 0.9}\nmax_failure_rate: 0.9\n"))
    out = tmp_path / "run"
    order = knobs.axis_orders(plan.grid, plan.recipe.seed)["persona"]
    bad = order[0]  # active at every concentration
    controller.run(plan, out, ShortForOnePersona(bad), judge=KeyJudge(lambda t: t.splitlines()[0]))
    steering = json.loads((out / "state.json").read_text())["steering"]
    factors = steering["rejection_factors"]
    assert list(factors["persona"]) == [bad] and factors["persona"][bad] < 0.5
    # a topic may move too where the rounds' mixes differ (one active while the bad persona weighed
    # more), never as far as the persona that fails
    assert all(f > factors["persona"][bad] for f in factors.get("topic", {}).values())
    last = steering["epochs"][-1]["weights"]["persona"]
    active = [v for v in order if last.get(v, 0) > 0]
    # the last active value is the concentration's edge, which weighs only a fraction
    others = [last[v] for v in active[:-1] if v != bad]
    assert others and last[bad] < 0.5 * min(others)  # active personas otherwise weigh alike at most 2× apart
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    starts = [e["start"] for e in steering["epochs"]]
    early = sum(r["sample_index"] < starts[-1] for r in rejected) / starts[-1]
    late_total = json.loads((out / "state.json").read_text())["counters"]["next_index"] - starts[-1]
    late = sum(r["sample_index"] >= starts[-1] for r in rejected) / max(1, late_total)
    assert late < early  # fewer samples are spent on the rejected persona once it lost weight
    assert read_documents(out).num_rows == 900
