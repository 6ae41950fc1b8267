"""An ingest server on 127.0.0.1 that injects faults, for the transport tests.

It runs on its own event loop in a daemon thread, so synchronous and asynchronous tests can
both use it. Every request's fate is decided by ``behavior(n, events)``, called with the
request number (from 0) and the decoded events; it returns one of:

* ``"ok"``: 200 and the events are stored;
* ``("status", code, body_dict_or_None, headers_or_None)``: that answer, nothing stored
  (a 207 stores the events whose ids are not in ``body["errors"]``);
* ``"hang"``: accept and never answer;
* ``("held", gate)``: the events are stored, and the 200 is sent once the ``threading.Event``
  ``gate`` is set (a server slow to answer what it already has);
* ``"close"``: send part of a response and close the connection;
* ``"garbage"``: answer bytes that are not HTTP, and close.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

Behavior = Callable[[int, list[dict[str, Any]]], Any]


def always_ok(n: int, events: list[dict[str, Any]]) -> Any:
    return "ok"


class FaultServer:
    """See the module docstring. Use as a context manager; ``url`` is the endpoint."""

    def __init__(self, behavior: Behavior = always_ok) -> None:
        self.behavior = behavior
        self.events: list[dict[str, Any]] = []
        self.envelopes: list[dict[str, Any]] = []
        self.agent_of: dict[str, str] = {}  # event_id -> the envelope's agent_id
        self.statuses: list[int | str] = []
        self.auth_headers: list[str | None] = []
        self.encodings: list[str | None] = []
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.statuses)

    def event_ids(self) -> list[str]:
        with self._lock:
            return [e["event_id"] for e in self.events]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a request finishes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _record(self, status: int | str, events: list[dict[str, Any]], env: Any) -> None:
        with self._cond:
            self.statuses.append(status)
            self.events.extend(events)
            if events:
                self.envelopes.append(env)
                for e in events:
                    self.agent_of[e["event_id"]] = env["agent_id"]
            self._cond.notify_all()

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        events: list[dict[str, Any]] = body["events"]
        with self._lock:
            n = len(self.statuses)
            self.auth_headers.append(request.headers.get("Authorization"))
            self.encodings.append(request.headers.get("Content-Encoding"))
        decision = self.behavior(n, events)
        if decision == "ok":
            self._record(200, events, body["envelope"])
            return web.json_response(
                {"accepted": len(events), "rejected": 0, "errors": [], "warnings": []}
            )
        if type(decision) is tuple and decision[0] == "held":
            self._record(200, events, body["envelope"])
            gate: threading.Event = decision[1]
            await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
            return web.json_response(
                {"accepted": len(events), "rejected": 0, "errors": [], "warnings": []}
            )
        if decision == "hang":
            self._record("hang", [], None)
            assert self._stop is not None
            await self._stop.wait()  # until the server stops; then close the connection
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        if decision == "close":
            self._record("close", [], None)
            resp = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
            await resp.prepare(request)
            await resp.write(b'{"accepted": ')
            assert request.transport is not None
            request.transport.close()
            return resp
        if decision == "garbage":
            self._record("garbage", [], None)
            assert request.transport is not None
            request.transport.write(b"HTTP/1.1 abc not-http\r\n\r\n")
            request.transport.close()
            return web.Response(status=500)
        _, code, payload, headers = decision
        kept: list[dict[str, Any]] = []
        if code == 207 and payload is not None:
            bad = {e.get("event_id") for e in payload.get("errors", [])}
            kept = [e for e in events if e["event_id"] not in bad]
        self._record(code, kept, body["envelope"])
        if payload is None:
            return web.Response(status=code, text="Internal Server Error", headers=headers)
        return web.json_response(payload, status=code, headers=headers)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            app = web.Application(client_max_size=16 * 1024 * 1024)
            app.router.add_post("/v1/ingest", self._ingest)
            self._runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(self._runner.addresses[0][1])
            self._ready.set()
            await self._stop.wait()
            await self._runner.cleanup()

        asyncio.run(run())

    def __enter__(self) -> FaultServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def free_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
