"""The OpenAI-compatible backend: retries and errors against a small scripted HTTP server on
localhost, and real generation against `vllm serve` of the embedded model on localhost."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from generator.backends.openai import OpenAIBackend
from generator.errors import UserError
from generator.records import Request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scripted(BaseHTTPRequestHandler):
    """Answers /chat/completions from a queue of (status, body); records what it received."""
    script: list[tuple[int, dict]] = []
    received: list[dict] = []

    def do_GET(self):
        self._send(200, {"data": []})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Scripted.received.append({"body": body, "auth": self.headers.get("Authorization")})
        status, payload = Scripted.script.pop(0) if Scripted.script else (500, {"error": "empty"})
        self._send(status, payload)

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.script, Scripted.received = [], []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def ok_body(text: str) -> dict:
    return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}


def test_retries_on_503_then_succeeds_and_sends_key_and_schema(scripted, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-test")
    Scripted.script = [(503, {"error": "busy"}), (200, ok_body("hi"))]
    b = OpenAIBackend("m", base_url=scripted, api_key_env="TEST_KEY", concurrency=1, backoff_s=0.01)
    schema = json.dumps({"type": "object"})
    [res] = b.generate([Request(id="a", prompt="p", max_tokens=4, json_schema=schema)])
    assert res.ok and res.text == "hi" and res.num_tokens == 2 and res.num_prompt_tokens == 5
    assert len(Scripted.received) == 2
    assert Scripted.received[0]["auth"] == "Bearer sk-test"
    assert Scripted.received[0]["body"]["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_gives_up_after_retries_with_a_recorded_failure(scripted):
    Scripted.script = [(500, {"error": "boom"})] * 3
    b = OpenAIBackend("m", base_url=scripted, concurrency=1, max_retries=2, backoff_s=0.01)
    [res] = b.generate([Request(id="a", prompt="p", max_tokens=4)])
    assert not res.ok and "gave up after 3 attempts" in res.error and "HTTP 500" in res.error


def test_client_error_is_not_retried(scripted):
    Scripted.script = [(400, {"error": "bad request"}), (200, ok_body("never"))]
    b = OpenAIBackend("m", base_url=scripted, concurrency=1, backoff_s=0.01)
    [res] = b.generate([Request(id="a", prompt="p", max_tokens=4)])
    assert not res.ok and res.error.startswith("HTTP 400") and len(Scripted.received) == 1


def test_malformed_json_answer_is_a_failed_row(scripted):
    Scripted.script = [(200, {"unexpected": True})]
    b = OpenAIBackend("m", base_url=scripted, concurrency=1)
    [res] = b.generate([Request(id="a", prompt="p", max_tokens=4)])
    assert not res.ok and "malformed response" in res.error


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(UserError, match="unreachable"):
        OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2)
    with pytest.raises(UserError, match="not an http"):
        OpenAIBackend("m", base_url="localhost:8000")


def test_bad_concurrency_is_a_clear_error(scripted):
    with pytest.raises(UserError, match="engine.concurrency is 0"):
        OpenAIBackend("m", base_url=scripted, concurrency=0)


class Answering(BaseHTTPRequestHandler):
    """Answers each chat request by calling the server's `answer(prompt) -> (status, body,
    headers)`; HTTP/1.1, so a client may keep its connection open for more requests."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._send(200, {"data": []}, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        self.server.seen(prompt, self.client_address)
        self._send(*self.server.answer(prompt))

    def _send(self, status, payload, headers):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class AnsweringServer(ThreadingHTTPServer):
    """A thread per connection; records each request's prompt, arrival time and client port,
    and the most requests it held open at once."""
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections opened together

    def __init__(self, answer):
        super().__init__(("127.0.0.1", 0), Answering)
        self.answer_fn, self.lock = answer, threading.Lock()
        self.arrivals: list[tuple[str, float]] = []
        self.ports: set[int] = set()
        self.open_now = self.most_open = 0

    def handle_error(self, request, client_address):
        pass  # a client that went away (the close test) is no error here

    def seen(self, prompt, client_address):
        with self.lock:
            self.arrivals.append((prompt, time.monotonic()))
            self.ports.add(client_address[1])

    def answer(self, prompt):
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        try:
            return self.answer_fn(prompt)
        finally:
            with self.lock:
                self.open_now -= 1


@pytest.fixture
def serve():
    """`serve(answer)` starts an AnsweringServer and returns (server, base_url)."""
    servers = []

    def start(answer):
        server = AnsweringServer(answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_port}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def echo(prompt):
    return 200, ok_body(prompt), {}


def requests_for(ids):
    return [Request(id=i, prompt=i, max_tokens=4) for i in ids]


def test_a_request_waiting_to_retry_holds_no_slot(serve):
    tries = {"slow": 0}

    def answer(prompt):
        if prompt == "slow" and tries["slow"] < 2:
            tries["slow"] += 1
            return 429, {"error": "rate limited"}, {"Retry-After": "1"}
        return echo(prompt)

    server, url = serve(answer)
    # one slot: "slow" takes it first; had it kept the slot while waiting out its Retry-After,
    # it would finish before the 50 others were even sent
    b = OpenAIBackend("m", base_url=url, concurrency=1, backoff_s=0.01)
    b.submit(requests_for(["slow", *(f"r{i}" for i in range(50))]))
    arrived = []
    while b.in_flight:
        arrived += b.poll(5.0)
    b.close()
    assert [r.id for r in arrived][-1] == "slow" and len(arrived) == 51
    assert all(r.ok and r.text == r.id for r in arrived)
    slow_times = [t for prompt, t in server.arrivals if prompt == "slow"]
    assert len(slow_times) == 3
    assert all(later - earlier >= 0.9 for earlier, later in zip(slow_times, slow_times[1:]))  # Retry-After honoured


def test_requests_run_concurrently(serve):
    def answer(prompt):
        time.sleep(0.3)
        return echo(prompt)

    server, url = serve(answer)
    b = OpenAIBackend("m", base_url=url, concurrency=64)
    start = time.monotonic()
    results = b.generate(requests_for(f"r{i}" for i in range(64)))
    elapsed = time.monotonic() - start
    b.close()
    assert all(r.ok for r in results)
    assert server.most_open >= 32, server.most_open
    assert elapsed < 5.0, elapsed  # one at a time would take 64 x 0.3 s = 19 s


def test_connections_are_kept_alive_and_reused(serve):
    server, url = serve(echo)
    b = OpenAIBackend("m", base_url=url, concurrency=8)
    for chunk in range(10):
        results = b.generate(requests_for(f"c{chunk}-{i}" for i in range(20)))
        assert all(r.ok for r in results)
    b.close()
    assert len(server.arrivals) == 200
    assert len(server.ports) <= 16, len(server.ports)  # 8 slots; one connection per request would be 200


def test_submit_and_poll_return_each_submitted_result_once(serve):
    def answer(prompt):
        if prompt == "bad":
            return 400, {"error": "no such model"}, {}
        time.sleep(0.01 * (10 - int(prompt[1:])))  # later ids finish first
        return echo(prompt)

    server, url = serve(answer)
    b = OpenAIBackend("m", base_url=url, concurrency=16)
    assert b.capacity == 16 and b.in_flight == 0 and b.poll(0.0) == []
    ids = [f"r{i}" for i in range(10)]
    b.submit(requests_for(ids))
    b.submit(requests_for(["bad"]))
    assert b.in_flight == 11
    got = []
    while b.in_flight:
        got += b.poll(5.0)
    assert sorted(r.id for r in got) == sorted([*ids, "bad"]) and b.in_flight == 0
    assert b.generated_tokens == 2 * len(ids)  # the completion tokens of each answer; none for the error
    [bad] = [r for r in got if r.id == "bad"]
    assert not bad.ok and "400" in bad.error and bad.finish_reason == "error"
    assert [r.id for r in b.generate(requests_for(ids))] == ids
    assert b.in_flight == 0
    b.close()
    b.close()


def test_close_cancels_requests_still_open(serve):
    release, answered = threading.Event(), []

    def answer(prompt):
        release.wait(10)
        answered.append(prompt)
        return echo(prompt)

    server, url = serve(answer)
    b = OpenAIBackend("m", base_url=url, concurrency=4)
    b.submit(requests_for(["a", "b", "c"]))
    while len(server.arrivals) < 3:
        time.sleep(0.01)
    b.close()
    assert answered == []  # close did not wait for the answers
    assert not b._thread.is_alive() and b._loop.is_closed()
    release.set()
    with pytest.raises(RuntimeError, match="after close"):
        b.submit(requests_for(["d"]))


def test_backoff_jitter_is_derived_from_the_request_and_bounded():
    b = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", backoff_s=1.0, max_retry_after_s=30, check=False)
    r = Request(id="x", prompt="p", max_tokens=1)
    waits = [b._backoff_s(r, attempt) for attempt in range(4)]
    assert waits == [b._backoff_s(r, attempt) for attempt in range(4)]
    assert all(0.5 * 2**a <= w < 1.5 * 2**a for a, w in enumerate(waits))
    assert b._retry_after_s("2") == 2.0 and b._retry_after_s("3600") == 30 and b._retry_after_s("soon") is None
    assert b._retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry at once
    b.close()


@pytest.fixture(scope="module")
def vllm_server():
    from generator.backends.models import resolve_model
    from generator.backends.vllm import cpu_dtype, cpu_flags

    port = free_port()
    model = resolve_model("embedded:smollm2-135m")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
    # vLLM's OpenAI-compatible server (what `vllm serve` runs). The `vllm` console script of the
    # CPU build looks up package metadata named "vllm" and fails, so start the module directly.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "smollm2", "--dtype", cpu_dtype(cpu_flags()),
           "--max-model-len", "4096", "--enforce-eager", "--no-enable-chunked-prefill",
           "--max-num-batched-tokens", "8192",
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if requests.get(url + "/models", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(2)
        else:
            raise RuntimeError("vllm serve did not come up in 300 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.integration
def test_real_vllm_serve_generates_in_order_with_schema(vllm_server):
    b = OpenAIBackend("smollm2", base_url=vllm_server, concurrency=4)
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    reqs = [Request(id=f"q{i}", prompt=f"Write one sentence about the number {i}.", max_tokens=16, seed=i)
            for i in range(6)]
    reqs.append(Request(id="json", prompt="Pick a colour. Answer in JSON.", max_tokens=20,
                        temperature=0.0, json_schema=json.dumps(schema)))
    results = b.generate(reqs)
    assert [r.id for r in results] == [q.id for q in reqs]
    assert all(r.ok and r.text for r in results), [r.error for r in results]
    assert all(0 < r.num_tokens <= q.max_tokens for q, r in zip(reqs, results))
    assert json.loads(results[-1].text)["colour"] in {"red", "blue"}


def served_requests(url: str) -> float:
    """Requests the vLLM server has finished, from its Prometheus metrics."""
    text = requests.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("vllm:request_success_total")]
    assert counts, "the server exports no vllm:request_success_total"
    return sum(counts)


@pytest.mark.integration
def test_the_llm_judge_scores_over_vllm_serve_within_budget_audited_and_cached(vllm_server, tmp_path):
    """`generator score --judge llm` against vLLM's OpenAI server: the context is planned from what
    the server reports, no call goes past it or past --max-calls, every call is in the audit
    file, and a re-run with the same --judge-cache sends the server nothing and reports the same.
    The 135M model rarely writes a valid clustering, so a run whose every batch failed is allowed
    (exit 1, said so); what is checked is the protocol around the answers."""
    import dataclasses

    from conftest import DATA
    from fakes import JUDGE_CRITERIA
    from generator.cli import main

    # forty documents: two batches of four need eight, and the score's other measures (on-topic
    # share, embedded on the CPU) are not what is under test
    corpus = tmp_path / "corpus.jsonl"
    sample = (DATA / "judge" / "generated_quickstart.jsonl").read_text().splitlines(True)[:40]
    corpus.write_text("".join(sample))
    # criteria given (writing them on a real engine is tests/judges/test_llm_judge_engine.py's)
    (tmp_path / "criteria.json").write_text(dataclasses.replace(JUDGE_CRITERIA, judge_model="smollm2", k=4).to_json())

    def score(name, max_calls=40, cache=True):
        before = served_requests(vllm_server)
        args = ["score", str(corpus), "--judge", "llm", "--judge-endpoint", vllm_server, "--judge-model", "smollm2",
                "--set", "judge.tokenizer=embedded:smollm2-135m", "--set", "judge.k=4",
                "--set", "judge.num_criteria_calls=2", "--set", "judge.docs_per_criteria_call=2",
                "--set", "judge.num_kept=2", "--set", "judge.cluster_max_tokens=96",
                "--set", "judge.verify_max_tokens=64", "--set", "judge.criteria_max_tokens=256",
                "--num-batches", "2", "--max-calls", str(max_calls), "--max-failure-share", "0.99", "--no-proxies",
                "--criteria", str(tmp_path / "criteria.json"),
                *(["--judge-cache", str(tmp_path / "cache.sqlite")] if cache else []),
                "--json", str(tmp_path / f"{name}.json"), "--audit", str(tmp_path / f"{name}.audit.jsonl")]
        code = main(args)
        assert code in (0, 1)  # 2 would be a usage error
        lines = [json.loads(x) for x in (tmp_path / f"{name}.audit.jsonl").read_text().splitlines()]
        report = json.loads((tmp_path / f"{name}.json").read_text()) if code == 0 else None
        return code, report, lines, served_requests(vllm_server) - before

    code, report, lines, sent = score("first")
    calls = [r for r in lines if r["type"] == "call"]
    assert 0 < sent <= 40 and len(calls) == sent
    assert all(c["prompt_sha256"] and c["answer"] is not None and c["completion_tokens"] <= c["max_tokens"]
               and c["prompt_tokens"] + c["max_tokens"] <= 4096 for c in calls)
    judged = [(c["stage"], c["answer"]) for c in calls]
    assert {c["stage"] for c in calls} <= {"cluster", "verify"} and any(c["stage"] == "cluster" for c in calls)
    if report is not None:
        assert report["calls_total"] == sent and report["judge_context"]["model_context"] == 4096
        assert sum(report["failures"].values()) == report["num_failed"]
        assert report["num_scored"] == 0 or 1 / 4 <= report["score"] <= 4
    code2, report2, lines2, sent2 = score("again")  # answers from the cache
    assert sent2 == 0 and code2 == code
    assert [(c["stage"], c["answer"]) for c in lines2 if c["type"] == "call"] == judged
    if report is not None:
        assert (report2["score"], report2["failures"]) == (report["score"], report["failures"])
    code3, _, lines3, sent3 = score("tight", max_calls=5, cache=False)  # no cache, 5 calls: one batch at most
    assert 0 < sent3 <= 5 and len([c for c in lines3 if c["type"] == "call"]) == sent3
