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


@pytest.fixture(scope="module")
def vllm_server():
    from generator.backends.models import resolve_model

    port = free_port()
    model = resolve_model("embedded:smollm2-135m")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
    # vLLM's OpenAI-compatible server (what `vllm serve` runs). The `vllm` console script of the
    # CPU build looks up package metadata named "vllm" and fails, so start the module directly.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "smollm2", "--dtype", "float32",
           "--max-model-len", "1024", "--enforce-eager", "--no-enable-chunked-prefill",
           "--max-num-batched-tokens", "8192"]
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
