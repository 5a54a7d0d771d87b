"""An OpenAI-compatible chat-completions endpoint (`vllm serve`, hosted APIs).

Requests run on a thread pool of `concurrency` workers; each is retried with exponential
backoff on connection errors, timeouts, 429 and 5xx; a row that still fails is recorded, not
raised. The API key is read from the environment variable named by `api_key_env`.
`response_format` carries a JSON schema when the request has one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from generator.errors import UserError
from generator.records import Request, Result, chat_messages, failed_result

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, *, base_url: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 3,
                 backoff_s: float = 1.0, check: bool = True):
        import requests

        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"endpoint {base_url!r} is not an http(s) URL", fix="e.g. http://localhost:8000/v1")
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.session = requests.Session()
        key = os.environ.get(api_key_env, "")
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"
        if check:
            self._check_reachable(base_url)

    def _check_reachable(self, base_url: str) -> None:
        import requests
        try:
            self.session.get(base_url.rstrip("/") + "/models", timeout=min(10.0, self.timeout_s))
        except requests.RequestException as exc:
            raise UserError(f"endpoint {base_url} is unreachable ({type(exc).__name__})",
                            fix="start the server or correct --judge-endpoint / engine.base_url") from None

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def _payload(self, r: Request) -> dict:
        messages = chat_messages(r)
        body = {"model": self.model, "messages": messages, "max_tokens": r.max_tokens,
                "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed}
        if r.json_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": json.loads(r.json_schema), "strict": True}}
        return body

    def _one(self, r: Request) -> Result:
        import requests

        reason = "not attempted"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.session.post(self.url, json=self._payload(r), timeout=self.timeout_s)
            except requests.RequestException as exc:
                reason = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in _RETRY_STATUS:
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code != 200:
                return failed_result(r, f"HTTP {resp.status_code}: {resp.text[:200]}")
            try:
                body = resp.json()
                choice = body["choices"][0]
                usage = body.get("usage") or {}
                return Result(id=r.id, text=choice["message"]["content"] or "",
                              finish_reason=choice.get("finish_reason") or "stop",
                              num_prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              num_tokens=int(usage.get("completion_tokens", 0)))
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return failed_result(r, f"malformed response: {exc}")
        return failed_result(r, f"gave up after {self.max_retries + 1} attempts: {reason}")

    def close(self) -> None:
        self.session.close()
