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


def fake_embed(texts, dim: int = 1024):
    """Bag-of-words embedder: each word hashed into one of `dim` slots, rows L2-normalised, so
    texts sharing words are similar (a stand-in for the sentence embedder in unit tests)."""
    import re

    import numpy as np

    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"[a-z]+", text.lower()):
            out[row, int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little") % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)
