"""Every fake the tests use: backends, judges and embedders with known behaviour (never used by the product)."""
from __future__ import annotations

import hashlib
import zlib
from typing import Sequence

import numpy as np

from generator.judges.protocol import BatchClustering
from generator.records import Request, Result, failed_result

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega").split()


class FakeBackend:
    """Echoes a text derived from the prompt. `collapse=True` makes every answer the same
    (mode collapse); `fail_every=n` fails every n-th request; `empty_every=n` returns empty text.
    As a stream it holds up to `capacity` submitted requests; each poll answers the oldest
    `answer` of them (all by default) through `generate`, newest first when `reverse` is set
    (results out of sample order)."""

    name = "fake"
    model = "fake"
    capacity = 64
    answer = 0
    reverse = False

    def __init__(self, *, collapse: bool = False, fail_every: int = 0, empty_every: int = 0,
                 words: int = 40):
        self.collapse = collapse
        self.fail_every = fail_every
        self.empty_every = empty_every
        self.words = words
        self.calls: list[int] = []
        self.seen = 0
        self.queue: list[Request] = []

    @property
    def in_flight(self) -> int:
        return len(self.queue)

    def submit(self, requests: Sequence[Request]) -> None:
        self.queue.extend(requests)

    def poll(self, timeout_s: float) -> list[Result]:
        n = self.answer or len(self.queue)
        batch, self.queue = self.queue[:n], self.queue[n:]
        results = self.generate(batch) if batch else []
        return results[::-1] if self.reverse else results

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


class TricklingBackend(FakeBackend):
    """An engine slow to finish: each poll, every request in flight generates `step_tokens`
    tokens (counted in `generated_tokens`, as a streaming engine counts them); no result comes
    back before poll number `first_result_poll`, then FakeBackend's answers do."""

    step_tokens = 5
    first_result_poll = 4

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.polls = 0
        self.generated_tokens = 0

    def poll(self, timeout_s: float) -> list[Result]:
        self.polls += 1
        self.generated_tokens += self.step_tokens * len(self.queue)
        return super().poll(timeout_s) if self.polls >= self.first_result_poll else []


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


def fake_embed(texts, dim: int = 384, **_) -> np.ndarray:
    """Hashed bag of words, L2-normalised: texts sharing words get close vectors (no model)."""
    from generator.measure.proxies import tokenize
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in tokenize(text) or ["<empty>"]:
            out[row, zlib.crc32(token.encode()) % dim] += 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def group_embed(texts):
    """Fake embedder: text 'g<group>-<i>' -> a unit vector near axis <group>, the same for
    the same text. Distances: same group about 0.02, different groups about 1."""
    out = []
    for text in texts:
        group = int(text.split("-")[0][1:])
        noise = np.random.default_rng(zlib.crc32(text.encode())).normal(0, 0.1, 8)  # hash() differs per process
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
                self.first = r
            elif self.seen % 3 == 0:  # the same answer, ended the same way (so trimming keeps it equal)
                r = Result(id=r.id, text=self.first.text, finish_reason=self.first.finish_reason,
                           num_tokens=r.num_tokens)
            out.append(r)
            self.seen += 1
        return out


class SeededFaultsBackend(FakeBackend):
    """Fails the requests whose seed is divisible by 7 and answers those divisible by 5 with one
    fixed text (exact duplicates): by seed, so a resumed run fails and repeats the same samples."""

    def generate(self, requests):
        out = []
        for r, result in zip(requests, super().generate(requests)):
            if r.seed % 7 == 0:
                result = failed_result(r, "simulated engine error")
            elif r.seed % 5 == 0:
                result = Result(id=r.id, text="The same answer again.", finish_reason="stop", num_tokens=4)
            out.append(result)
        return out


# ---- the LLM judge ------------------------------------------------------------------------------

def _judge_criteria():
    from generator.judges.cluster_agent import Criteria
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


class ScriptedJudgeServer:
    """An OpenAI-compatible judge on localhost (stdlib `http.server` in a thread) that clusters
    each batch by hidden labels written in the documents as "[label N]". Each document leaves
    its label's cluster for a singleton with probability `noise`. A clustering answer is
    replaced by prose with probability `malformed_rate` (a `json` failure) or cut short with
    `finish_reason: length` with probability `cut_rate`; `injected` counts both by kind.
    Verification finds every cluster valid. Decisions are seeded per request (prompt and seed),
    so they do not depend on thread order. A quality-score request (a schema with `score`) is
    answered with `score_of(document)`: a score 1-5, or a text sent as the raw reply."""

    def __init__(self, *, noise: float = 0.0, malformed_rate: float = 0.0, cut_rate: float = 0.0,
                 seed: int = 0, model: str = "scripted-judge", score_of=None):
        import threading
        from collections import Counter
        from http.server import ThreadingHTTPServer

        self.noise, self.malformed_rate, self.cut_rate, self.seed, self.model = (
            noise, malformed_rate, cut_rate, seed, model)
        self.score_of = score_of or (lambda document: 3)
        self.injected: Counter = Counter()
        self.num_requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedJudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: dict) -> tuple[str, str]:
        """(text, finish_reason) for one chat-completions body."""
        import json
        import re

        import numpy as np

        prompt = body["messages"][-1]["content"]
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
        if "score" in schema.get("properties", {}):
            document = re.search(r"<document>\n(.*?)\n</document>", prompt, flags=re.S).group(1)
            score = self.score_of(document)
            return (score, "stop") if isinstance(score, str) else (
                json.dumps({"reason": f"scored {score} by the script", "score": score}), "stop")
        if "clusters" not in schema.get("properties", {}):
            return json.dumps({i: {"reason": "alike", "valid": True} for i in schema.get("required", [])}), "stop"
        key = hashlib.sha256(f"{self.seed}\x00{body.get('seed')}\x00{prompt}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
        docs = re.findall(r"<document (\d+)>\n(.*?)\n</document \1>", prompt, flags=re.S)
        groups: dict = {}
        for number, text in docs:
            label = re.search(r"\[label (\d+)\]", text).group(1)
            groups.setdefault(f"alone {number}" if rng.random() < self.noise else label, []).append(int(number))
        text = json.dumps({"clusters": [{"cluster_id": j + 1, "members": members, "reason": "same label"}
                                        for j, members in enumerate(groups.values())]})
        draw = rng.random()
        with self._lock:
            if draw < self.malformed_rate:
                self.injected["json"] += 1
                return "Documents 1 and 2 go together; the rest are alone.", "stop"
            if draw < self.malformed_rate + self.cut_rate:
                self.injected["length"] += 1
                return text[: len(text) // 2], "length"
        return text, "stop"

    def _handler(self):
        import json
        from http.server import BaseHTTPRequestHandler

        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": server.model, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.num_requests += 1
                text, finish = server.answer(body)
                self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": finish}],
                            "usage": {"prompt_tokens": len(body["messages"][-1]["content"]) // 4,
                                      "completion_tokens": len(text) // 4}})

        return Handler


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


class SplittingJudge:
    """Groups documents by their first line (the topic) but splits each one off alone with
    probability `noise`, seeded by the batch's texts (the same batch is always judged the same
    way). Each batch costs `calls` calls and `tokens` (prompt, completion) tokens, like an LLM
    judge; `batches` counts the batches judged."""

    def __init__(self, noise: float, *, name: str = "splitting", calls: int = 1, tokens: tuple[int, int] = (0, 0)):
        self.noise, self.name, self.calls, self.tokens = noise, name, calls, tokens
        self.batches = 0

    def cluster(self, batches):
        self.batches += len(batches)
        out = []
        for batch in batches:
            # noise 0 splits nothing off: no draw is needed (a draw in [0, 1) is never below 0)
            draws = (np.random.default_rng(zlib.crc32("\x00".join(batch).encode())).random(len(batch))
                     if self.noise > 0 else np.ones(len(batch)))
            groups: dict = {}
            for i, text in enumerate(batch):
                groups.setdefault(text.splitlines()[0] if draws[i] >= self.noise else f"alone {i}", []).append(i)
            out.append(BatchClustering(clusters=tuple(tuple(g) for g in groups.values()), calls=self.calls,
                                       prompt_tokens=self.tokens[0], completion_tokens=self.tokens[1]))
        return out


class CountingJudge(KeyJudge):
    """A KeyJudge that counts the batches it clusters."""

    def __init__(self, key, name="key"):
        super().__init__(key, name)
        self.batches = 0

    def cluster(self, batches):
        self.batches += len(batches)
        return super().cluster(batches)


class EmbeddingKeyJudge(KeyJudge):
    """A KeyJudge that also embeds (with fake_embed), as the embedding judge does, so the
    controller can measure on-topic fidelity with it."""

    def embed(self, texts):
        return fake_embed(list(texts))


class WordTokenizer:
    """A tokenizer for the judge's context plan: one token per whitespace-separated word, a chat
    template that adds two, offsets as a fast tokenizer gives them."""

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return list(range(len(" ".join(m["content"] for m in messages).split()) + 2))

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
        import re
        return {"offset_mapping": [m.span() for m in re.finditer(r"\S+", text)]}


def fake_judge_model(monkeypatch, context: int = 8192) -> None:
    """Make any judge model name plannable without a tokenizer or config on disk: words are
    tokens and the model's own context is `context`."""
    from generator.judges.config import TokenCounter
    monkeypatch.setattr("generator.judges.config.load_counter", lambda settings: TokenCounter(WordTokenizer()))
    monkeypatch.setattr("generator.judges.config.model_context", lambda settings: context)
