"""An OpenAI-compatible chat-completions endpoint (`vllm serve`, hosted APIs), as a stream.

One asyncio loop in a daemon thread drives every request over one pooled `httpx.AsyncClient`
(keep-alive, sized to `concurrency`). At most `concurrency` requests are open at once. A request
is retried on connection errors, timeouts, 408/409/429 and 5xx after an exponential backoff with
jitter derived from its id (or the server's `Retry-After`, capped at `max_retry_after_s`); it
gives up its slot while it waits. A row that still fails is recorded, not raised. The API key
is read from the environment variable named by `api_key_env`; a request's JSON schema goes in
`response_format`.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import queue
import threading
import time
from typing import Sequence

from generator.errors import UserError
from generator.records import Request, Result, chat_messages, derive_seed, failed_result, generate_all, take_finished

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, *, base_url: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 256, timeout_s: float = 120.0, max_retries: int = 3,
                 backoff_s: float = 1.0, max_retry_after_s: float = 60.0, check: bool = True):
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"endpoint {base_url!r} is not an http(s) URL", fix="e.g. http://localhost:8000/v1")
        if concurrency < 1:
            raise UserError(f"engine.concurrency is {concurrency}", fix="set engine.concurrency to 1 or more")
        self.model, self.concurrency = model, concurrency
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.max_retry_after_s = max_retry_after_s
        key = os.environ.get(api_key_env, "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._done: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._finished_tokens = 0  # written on the loop thread only
        self._tasks: set[asyncio.Task] = set()  # touched only on the loop thread
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True)
        self._thread.start()
        self._client, self._slots = self._call(self._open())
        if check:
            self._check_reachable(base_url)

    async def _open(self):
        import httpx
        return (httpx.AsyncClient(headers=self._headers, limits=self._limits, timeout=self.timeout_s),
                asyncio.Semaphore(self.concurrency))

    def _call(self, coro):
        """Run `coro` on the loop thread and wait for its value."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _check_reachable(self, base_url: str) -> None:
        import httpx
        try:
            self._call(self._client.get(base_url.rstrip("/") + "/models", timeout=min(10.0, self.timeout_s)))
        except httpx.HTTPError as exc:
            self.close()
            raise UserError(f"endpoint {base_url} is unreachable ({type(exc).__name__})",
                            fix="start the server or correct --judge-endpoint / engine.base_url") from None

    @property
    def capacity(self) -> int:
        return self.concurrency

    @property
    def in_flight(self) -> int:
        """Requests submitted whose results `poll` has not yet returned."""
        with self._lock:
            return self._in_flight

    @property
    def generated_tokens(self) -> int:
        """Completion tokens of the requests finished so far (an endpoint shows no running count)."""
        return self._finished_tokens

    def submit(self, requests: Sequence[Request]) -> None:
        if self._closed:
            raise RuntimeError("openai backend: submit() after close()")
        if not requests:
            return
        with self._lock:
            self._in_flight += len(requests)
        self._loop.call_soon_threadsafe(self._start, list(requests))

    def _start(self, requests: list[Request]) -> None:
        for r in requests:
            task = self._loop.create_task(self._run(r))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def poll(self, timeout_s: float) -> list[Result]:
        if not self.in_flight:
            return []
        results = take_finished(self._done, timeout_s)
        with self._lock:
            self._in_flight -= len(results)
        return results

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        return generate_all(self, requests)

    async def _run(self, r: Request) -> None:
        try:
            result = await self._attempts(r)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unforeseen client error: still one recorded row
            log.exception("openai backend: request %s failed unexpectedly", r.id)
            result = failed_result(r, f"{type(exc).__name__}: {exc}")
        self._finished_tokens += result.num_tokens
        self._done.put(result)

    async def _attempts(self, r: Request) -> Result:
        import httpx

        reason, wait_s = "not attempted", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(wait_s)  # holds no slot: other requests go on
            async with self._slots:
                try:
                    resp = await self._client.post(self.url, json=self._payload(r))
                except httpx.TransportError as exc:
                    reason, wait_s = f"{type(exc).__name__}: {exc}", self._backoff_s(r, attempt)
                    continue
            if resp.status_code in _RETRY_STATUS:
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                wait_s = self._retry_after_s(resp.headers.get("Retry-After"))
                wait_s = self._backoff_s(r, attempt) if wait_s is None else wait_s
                log.debug("openai backend: %s got %s, retrying in %.2f s", r.id, resp.status_code, wait_s)
                continue
            if resp.status_code != 200:
                return failed_result(r, f"HTTP {resp.status_code}: {resp.text[:200]}")
            return parse_completion(r, resp)
        return failed_result(r, f"gave up after {self.max_retries + 1} attempts: {reason}")

    def _backoff_s(self, r: Request, attempt: int) -> float:
        """`backoff_s * 2**attempt`, scaled by a jitter in [0.5, 1.5) derived from the request id."""
        jitter = 0.5 + derive_seed(r.id, attempt) / 2**31
        return self.backoff_s * 2**attempt * jitter

    def _retry_after_s(self, value: str | None) -> float | None:
        """Seconds a `Retry-After` header asks for (delta seconds or an HTTP date), capped."""
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return None
        return min(max(seconds, 0.0), self.max_retry_after_s)

    def _payload(self, r: Request) -> dict:
        body = {"model": self.model, "messages": chat_messages(r), "max_tokens": r.max_tokens,
                "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed}
        if r.json_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": json.loads(r.json_schema), "strict": True}}
        return body

    def close(self) -> None:
        """Cancel what is still running, close the client and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()


def parse_completion(r: Request, resp) -> Result:
    """The result in a chat-completions answer; a malformed answer is a failed row."""
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
