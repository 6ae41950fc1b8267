"""A fake OTLP/HTTP trace collector on 127.0.0.1 (aiohttp.web), for the OTLP delivery tests.

It decodes every request with the official ``opentelemetry-proto`` classes (protobuf, or
OTLP/JSON through ``google.protobuf.json_format`` after turning hex ids into base64) and
answers in the request's encoding, as the OTLP spec says. ``behavior(n, spans)`` decides the
fate of request ``n`` (from 0):

* ``"ok"``: 200, the spans are stored;
* ``("partial", rejected, message)``: 200 with ``partial_success``; all but the first
  ``rejected`` spans are stored;
* ``("status", code, headers)``: that status with a ``google.rpc.Status``-shaped body,
  nothing stored;
* ``"hang"``: never answer.

Runs on its own loop in a daemon thread, like :mod:`tests.faultserver`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

CollectorBehavior = Callable[[int, list[dict[str, Any]]], Any]


def _ok(n: int, spans: list[dict[str, Any]]) -> Any:
    return "ok"


def _hex_to_b64(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                else _hex_to_b64(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_hex_to_b64(v) for v in obj]
    return obj


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which)


def flatten_request(req: Any) -> list[dict[str, Any]]:
    """The spans of an ``ExportTraceServiceRequest`` as plain dicts (ids hex)."""
    out = []
    for rs in req.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    {
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex() or None,
                        "attrs": {kv.key: _value(kv.value) for kv in s.attributes},
                        "events": [e.name for e in s.events],
                        "status": (s.status.code, s.status.message),
                        "resource": resource,
                    }
                )
    return out


class OTLPCollector:
    """See the module docstring. A context manager; ``url`` is the base endpoint."""

    def __init__(self, behavior: CollectorBehavior = _ok) -> None:
        self.behavior = behavior
        self.spans: list[dict[str, Any]] = []
        self.statuses: list[int | str] = []
        self.content_types: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        with self._cond:
            return len(self.statuses)

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

    async def _traces(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        is_json = ctype.startswith("application/json")
        if is_json:
            req = json_format.Parse(
                orjson.dumps(_hex_to_b64(orjson.loads(raw))), ExportTraceServiceRequest()
            )
        else:
            req = ExportTraceServiceRequest.FromString(raw)
        spans = flatten_request(req)
        with self._cond:
            n = len(self.statuses)
            self.content_types.append(ctype)
            self.headers.append(dict(request.headers))
            self.times.append(time.monotonic())
        decision = self.behavior(n, spans)
        resp_type = "application/json" if is_json else "application/x-protobuf"
        status: int | str
        if decision == "hang":
            with self._cond:
                self.statuses.append("hang")
                self._cond.notify_all()
            assert self._stop is not None
            await self._stop.wait()
            return web.Response(status=503)
        if decision == "ok":
            status, kept, reply = 200, spans, ExportTraceServiceResponse()
            extra: dict[str, str] = {}
        elif decision[0] == "partial":
            _, rejected, message = decision
            status, kept = 200, spans[rejected:]
            reply = ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(
                    rejected_spans=rejected, error_message=message
                )
            )
            extra = {}
        else:
            _, status, extra = decision
            kept, reply = [], None
        with self._cond:
            self.statuses.append(status)
            self.spans.extend(kept)
            self._cond.notify_all()
        assert isinstance(status, int)
        if reply is None:
            error = {"code": 14, "message": f"fake collector says {status}"}
            body = orjson.dumps(error) if is_json else b"\x08\x0e\x12\x04nope"
        else:
            body = (
                json_format.MessageToJson(reply).encode() if is_json else reply.SerializeToString()
            )
        return web.Response(status=status, body=body, headers={"Content-Type": resp_type, **extra})

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/traces", self._traces)
            runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(run())

    def __enter__(self) -> OTLPCollector:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
