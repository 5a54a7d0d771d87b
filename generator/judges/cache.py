"""A persistent cache of judge calls: a re-run, or a resumed controller, repeats none.

`CachedBackend` wraps any `Backend`. A request's key is the hash of the model and everything
that shapes the answer (prompt, system prompt, JSON schema, max_tokens, temperature, top_p,
seed), not its id; a request repeated within one call is sent once. Answered results are stored in a SQLite file; error rows are not, so they
are tried again next time. Calls that hit the cache cost nothing and are counted in `hits`.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Sequence

from generator.records import BESIDE_FIELDS, Backend, Request, Result


def request_key(model: str, request: Request) -> str:
    fields = [model, request.prompt, request.system, request.json_schema, request.max_tokens,
              request.temperature, request.top_p, request.seed]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class CachedBackend:
    """Implements `records.Backend` over `backend`, answering repeated requests from `path`."""

    def __init__(self, backend: Backend, path: str | Path):
        self.backend = backend
        self.name = backend.name
        self.model = backend.model
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        keys = [request_key(self.model, r) for r in requests]
        found = {}
        for key in set(keys):
            row = self._db.execute("SELECT result FROM calls WHERE key = ?", (key,)).fetchone()
            if row is not None:
                found[key] = json.loads(row[0])
        todo = list({key: i for i, key in reversed(list(enumerate(keys))) if key not in found}.values())
        fresh = self.backend.generate([requests[i] for i in todo]) if todo else []
        for i, result in zip(todo, fresh):
            found[keys[i]] = {k: v for k, v in vars(result).items() if k != "id" and k not in BESIDE_FIELDS}
            if result.ok:
                self._db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)",
                                 (keys[i], json.dumps(found[keys[i]])))
        self._db.commit()
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        return [Result(id=request.id, **found[key]) for request, key in zip(requests, keys)]

    def close(self) -> None:
        self._db.close()
        self.backend.close()
