"""Every fake the tests use: backends, judges and embedders with known behaviour (never used by the product)."""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from generator.judges.protocol import BatchClustering
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
            # sentences of seven words, so an answer cut at max_tokens can be trimmed back
            text = " ".join(WORDS[b % len(WORDS)] + ("." if i % 7 == 6 else "")
                            for i, b in enumerate((h * 4)[:n]))
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
        out = []
        for batch in batches:
            groups: dict = {}
            for i, text in enumerate(batch):
                groups.setdefault(self.key(text), []).append(i)
            out.append(BatchClustering(clusters=tuple(tuple(g) for g in groups.values()), calls=1))
        return out


def fake_embed(texts):
    """Deterministic 16-d vectors from a hash of each text (no model needed)."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], dtype=np.uint8) for t in texts]
    return np.asarray(rows, dtype=np.float32) / 255.0


def group_embed(texts):
    """Fake embedder: text 'g<group>-<i>' -> a unit vector near axis <group>, the same for
    the same text. Distances: same group about 0.02, different groups about 1."""
    out = []
    for text in texts:
        group = int(text.split("-")[0][1:])
        noise = np.random.default_rng(abs(hash(text)) % 2**32).normal(0, 0.1, 8)
        vector = np.eye(8)[group] + noise * np.r_[np.zeros(4), np.ones(4)]
        out.append(vector / np.linalg.norm(vector))
    return np.array(out, dtype=np.float32)


class CountingEmbed:
    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, texts):
        self.seen.extend(texts)
        return group_embed(texts)


class GroupJudge:
    """A stand-in LLM judge that clusters by the group written in each text; fails batch 0."""

    name = "group-judge"

    def cluster(self, batches):
        out = [BatchClustering(clusters=(), failed=True, error="first batch fails")]
        for batch in batches[1:]:
            groups: dict[str, list[int]] = {}
            for position, text in enumerate(batch):
                groups.setdefault(text.split("-")[0], []).append(position)
            out.append(BatchClustering(clusters=tuple(tuple(g) for g in groups.values())))
        return out


class Crash(Exception):
    pass


class CrashingEcho(EchoBackend):
    """Dies (like a killed process) on its n-th call, after earlier batches were persisted."""

    def __init__(self, crash_on_call: int):
        super().__init__()
        self.crash_on_call = crash_on_call

    def generate(self, requests):
        if len(self.calls) + 1 == self.crash_on_call:
            raise Crash()
        return super().generate(requests)


class RepeatingBackend(FakeBackend):
    """Every third answer repeats the first answer it ever gave."""

    def generate(self, requests):
        results = super().generate(requests)
        out = []
        for r in results:
            if not hasattr(self, "first"):
                self.first = r.text
            elif self.seen % 3 == 0:
                r = Result(id=r.id, text=self.first, finish_reason="stop", num_tokens=r.num_tokens)
            out.append(r)
            self.seen += 1
        return out


def _hash_vector(key: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim)


class TopicEmbed:
    """Fake embedder for echo documents (first line = topic): a document's vector is its
    domain's direction, moved a little by its topic and very little by the rest of the text,
    so documents of one domain lie close together and far from other domains. `calls` counts
    the texts embedded."""

    def __init__(self, domain_of: dict, dim: int = 32):
        self.domain_of, self.dim, self.calls = domain_of, dim, 0

    def __call__(self, texts):
        self.calls += len(texts)
        rows = []
        for text in texts:
            topic = text.splitlines()[0]
            v = (_hash_vector(self.domain_of.get(topic, topic), self.dim) + 0.3 * _hash_vector(topic, self.dim)
                 + 0.05 * _hash_vector(text, self.dim))
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


class CountingJudge(KeyJudge):
    """A KeyJudge that counts the batches it clusters."""

    def __init__(self, key, name="key"):
        super().__init__(key, name)
        self.batches = 0

    def cluster(self, batches):
        self.batches += len(batches)
        return super().cluster(batches)
