"""A deterministic fake backend for unit tests of the loop's logic (never used by the product)."""
from __future__ import annotations

import hashlib
from typing import Sequence

from generator.records import Request, Result, failed_result

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega").split()


class FakeBackend:
    """Echoes a text derived from the prompt. `collapse=True` makes every answer the same
    (mode collapse); `fail_every=n` fails every n-th request; `empty_every=n` returns empty text."""

    name = "fake"
    model = "fake"

    def __init__(self, *, collapse: bool = False, fail_every: int = 0, empty_every: int = 0,
                 words: int = 40):
        self.collapse = collapse
        self.fail_every = fail_every
        self.empty_every = empty_every
        self.words = words
        self.calls: list[int] = []
        self.seen = 0

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        self.calls.append(len(requests))
        out = []
        for r in requests:
            self.seen += 1
            if self.fail_every and self.seen % self.fail_every == 0:
                out.append(failed_result(r, "simulated engine error"))
                continue
            if self.empty_every and self.seen % self.empty_every == 0:
                out.append(Result(id=r.id, text="  ", finish_reason="stop", num_tokens=0))
                continue
            key = "same" if self.collapse else r.prompt + str(r.seed)
            h = hashlib.sha256(key.encode()).digest()
            n = min(self.words, r.max_tokens)
            text = " ".join(WORDS[b % len(WORDS)] for b in (h * 4)[:n])
            out.append(Result(id=r.id, text=text, finish_reason="length" if n == r.max_tokens else "stop",
                              num_prompt_tokens=len(r.prompt.split()), num_tokens=n))
        return out

    def close(self) -> None:
        pass


NOVEL = ["volcanic eruptions", "medieval banking", "jazz improvisation", "sourdough baking",
         "satellite orbits", "coral reef ecology", "contract negotiation", "bird migration",
         "quantum tunnelling", "origami folding", "tax policy", "glacier retreat", "chess openings",
         "vaccine trials", "silk road trade", "urban beekeeping"]


class EchoBackend(FakeBackend):
    """Answers with the prompt's first line (so a document's subject is known exactly), and
    answers grid-growth requests with fresh topic names, one per line."""

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        self.calls.append(len(requests))
        out = []
        for r in requests:
            if r.prompt.startswith("Here are subjects from the field of"):
                domain = r.prompt.split("field of ", 1)[1].split(",", 1)[0]
                start = r.seed % len(NOVEL)
                text = "\n".join(NOVEL[(start + i) % len(NOVEL)] for i in range(8))
            else:
                text = r.prompt.splitlines()[0] + f"\nvariant {r.seed}"
            out.append(Result(id=r.id, text=text, finish_reason="stop", num_prompt_tokens=10, num_tokens=12))
        return out


class KeyJudge:
    """Clusters each batch by a key of each text (exact grouping): a judge whose score is a
    known function of the sampling distribution."""

    def __init__(self, key, name="key"):
        self.key = key
        self.name = name

    def cluster(self, batches):
        from generator.diversity import BatchClustering
        out = []
        for batch in batches:
            groups: dict = {}
            for i, text in enumerate(batch):
                groups.setdefault(self.key(text), []).append(i)
            out.append(BatchClustering(clusters=tuple(tuple(g) for g in groups.values()), calls=1))
        return out


# ---- the LLM judge ------------------------------------------------------------------------------

def _judge_criteria():
    from generator.cluster_agent import Criteria
    return Criteria(
        metadata=(("domain", "The subject area."), ("form", "How the text is organised.")),
        metrics=(("technicality", "1 plain words, 3 some terms, 5 expert jargon."),),
        sentences=(("domain", "Documents belong together when they share a subject area."),
                   ("form", "Documents belong together when their text is organised the same way."),
                   ("technicality", "Documents belong together when they are about as technical.")),
        judge_model="scripted-judge", k=10, num_rounds=3)


JUDGE_CRITERIA = _judge_criteria()


def valid_verdicts(request: Request) -> str:
    """A verification answer that finds every cluster asked about valid."""
    import json
    ids = json.loads(request.json_schema)["required"]
    return json.dumps({i: {"reason": "alike", "valid": True} for i in ids})


def criteria_answers(request: Request) -> str:
    """Answers to the criteria stages: rounds, summaries and sentences."""
    import json
    stage = request.id.split("-")[0]
    if stage == "criteria":
        return json.dumps({"metadata": [{"name": n, "definition": "d"} for n in ("domain", "form", "tone")],
                           "metrics": [{"name": n, "rubric": "1-5"} for n in ("depth", "clarity", "tone")]})
    if stage == "summary":
        return json.dumps({"items": [{"name": "domain", "definition": "subject"},
                                     {"name": "tone", "definition": "voice"}]})
    names = json.loads(request.json_schema)["properties"]["criteria"]["required"]
    return json.dumps({"criteria": {n: f"Group by {n}." for n in names}})


class ScriptedJudgeBackend:
    """A judge backend answering by stage (the request id's prefix): `cluster(request)`,
    `verify(request)` and `criteria(request)` return answer text or a ready `Result`. Every
    answered request costs 100 prompt and 20 completion tokens; `num_requests` counts them."""

    name = "scripted"

    def __init__(self, cluster=None, verify=valid_verdicts, criteria=criteria_answers, model="scripted-judge"):
        self.cluster, self.verify, self.criteria = cluster, verify, criteria
        self.model = model
        self.num_requests = 0
        self.generate_calls: list[list[Request]] = []

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        self.generate_calls.append(list(requests))
        out = []
        for r in requests:
            self.num_requests += 1
            stage = r.id.split("-")[0]
            answer = {"cluster": self.cluster, "verify": self.verify}.get(stage, self.criteria)(r)
            if isinstance(answer, str):
                answer = Result(id=r.id, text=answer, finish_reason="stop", num_prompt_tokens=100, num_tokens=20)
            out.append(answer)
        return out

    def close(self) -> None:
        pass
