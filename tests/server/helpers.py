"""Helpers for the local server tests: an HTTP client wrapper and SDK-shaped events."""

from __future__ import annotations

import io
import itertools
import json
import os
import selectors
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from hiveloop_async._server import LocalServer

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "hb_test_key"


@dataclass
class Answer:
    """One HTTP answer: status, decoded JSON body (None if not JSON) and headers."""

    status: int
    body: Any
    headers: dict[str, str]


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    key: str | None = KEY,
    json_body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    allow_redirects: bool = True,
) -> Answer:
    """Send one request and read the whole answer."""
    all_headers: dict[str, str] = {}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    payload: bytes | io.BytesIO | None = data
    if data is not None and len(data) > 512 * 1024:
        payload = io.BytesIO(data)  # aiohttp warns about large raw bytes bodies
    async with session.request(
        method,
        url,
        data=payload,
        headers=all_headers,
        params=params,
        allow_redirects=allow_redirects,
        skip_auto_headers=["Content-Type"],
    ) as response:
        raw = await response.read()
        try:
            body = json.loads(raw) if raw else None  # the stdlib keeps wide integers exact
        except ValueError:
            body = None
        return Answer(response.status, body, dict(response.headers))


async def ingest(
    session: aiohttp.ClientSession, srv: LocalServer, body: Any, **kwargs: Any
) -> Answer:
    """``POST /v1/ingest`` with a JSON body."""
    return await request(session, "POST", f"{srv.url}/v1/ingest", json_body=body, **kwargs)


async def get(session: aiohttp.ClientSession, srv: LocalServer, path: str, **kwargs: Any) -> Answer:
    """``GET path`` with the test key."""
    return await request(session, "GET", f"{srv.url}{path}", **kwargs)


_BASE = datetime(2026, 11, 24, 6, 0, 0, tzinfo=timezone.utc)


def stamp(offset_ms: int, base: datetime = _BASE) -> str:
    """The SDK's timestamp format (UTC, milliseconds, ``Z``) ``offset_ms`` after ``base``."""
    moment = base + timedelta(milliseconds=offset_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_clock = itertools.count()


def event(event_type: str = "custom", **fields: Any) -> dict[str, Any]:
    """An SDK-shaped event with a fresh id and a strictly increasing timestamp."""
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "timestamp": stamp(next(_clock)),
        "event_type": event_type,
    }
    body.update(fields)
    return body


def envelope(agent_id: str = "agent-1", **fields: Any) -> dict[str, Any]:
    """An SDK-shaped envelope."""
    body: dict[str, Any] = {
        "agent_id": agent_id,
        "agent_type": "sales",
        "agent_version": "1.0",
        "framework": "custom",
        "runtime": "python-3.11.7",
        "sdk_version": "hiveloop-async-test",
        "environment": "production",
        "group": "default",
    }
    body.update(fields)
    return body


def batch(*events: dict[str, Any], **envelope_fields: Any) -> dict[str, Any]:
    """An ingest body: one envelope and the given events."""
    return {"envelope": envelope(**envelope_fields), "events": list(events)}


def read_line(process: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    """The next stdout line of ``process`` ("" if none comes within ``timeout`` seconds).

    Reads byte by byte once data is ready, so nothing after the line is consumed.
    """
    assert process.stdout is not None
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return ""
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                return ""
            line += chunk
    return line.decode()


def load_fixture(name: str) -> Any:
    """A JSON fixture from ``tests/server/fixtures``."""
    return orjson.loads((FIXTURES / name).read_bytes())
