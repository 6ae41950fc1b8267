"""A minimal, fast sink on 127.0.0.1 for the benchmarks, run in its own process.

``python -m benchmarks.sink --mode MODE [--port N]`` prints ``{"port": N}`` on its first line
of stdout once it is ready, then serves until killed. Modes:

``ok``
    aiohttp server answering

    * ``POST /v1/ingest`` (HiveBoard): counts the events of the batch (the body is parsed
      with orjson; ``bytes`` counts bodies inflated, ``wire_bytes`` as sent; ``llm_call``
      payloads also as ``hiveboard_llm_calls``) and answers 200
      ``{"accepted": n, "rejected": 0, "errors": [], "warnings": []}``;
    * ``POST /v1/traces`` (OTLP/HTTP): counts the spans of an ``ExportTraceServiceRequest``,
      in total and by span name; protobuf (walked with a few lines of wire-format decoding:
      every span is counted and only its name read) or JSON; answers 200 with an empty
      ``ExportTraceServiceResponse``;
    * ``POST /api/{project}/envelope/`` (Sentry): counts transactions and the spans they carry;
    * ``POST /api/public/otel/v1/traces`` (Langfuse's OTLP exporter): its spans, as
      ``langfuse_spans`` and by name; ``POST /api/public/ingestion`` (Langfuse's older batch
      API): its events, answered 207 as the real API does;
    * ``GET /info``, ``POST /runs/batch``, ``POST /runs/multipart`` (LangSmith): the server
      info the client asks for first (multipart ingestion, no zstd), then the runs created
      (``langsmith_posts``) and completed (``langsmith_patches``);
    * anything else: counted as ``unrouted:METHOD PATH`` and answered 404;
    * ``GET /count``: the counters as JSON (``first_t``/``last_t`` are ``time.monotonic()``
      of the first and last counted request, comparable across processes on Linux);
      ``POST /reset`` zeroes them.

``never``
    accepts connections and reads whatever comes, never answers (a hung server).

``refuse``
    holds the port bound but not listening: every connection is refused (a server that is
    down).

:class:`Sink` starts one in a subprocess and reads its counters.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# -- counting ----------------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _len_fields(buf: bytes, start: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """Offsets of the length-delimited fields numbered ``wanted`` in ``buf[start:end]``."""
    out = []
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if field == wanted:
                out.append((i, i + n))
            i += n
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def count_otlp_protobuf(buf: bytes) -> Counter[str]:
    """Spans by name in an ``ExportTraceServiceRequest``.

    resource_spans (1) > scope_spans (2) > spans (2) > name (5).
    """
    names: Counter[str] = Counter()
    for rs, re_ in _len_fields(buf, 0, len(buf), 1):
        for ss, se in _len_fields(buf, rs, re_, 2):
            for sp, spe in _len_fields(buf, ss, se, 2):
                found = _len_fields(buf, sp, spe, 5)
                names[buf[found[0][0] : found[0][1]].decode() if found else ""] += 1
    return names


def count_otlp_json(data: Any) -> Counter[str]:
    names: Counter[str] = Counter()
    for rs in data.get("resourceSpans") or data.get("resource_spans") or []:
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
            for span in ss.get("spans") or []:
                names[str(span.get("name", ""))] += 1
    return names


def count_sentry_envelope(body: bytes) -> tuple[int, int]:
    """(transactions, spans) in a Sentry envelope."""
    transactions = spans = 0
    nl = body.find(b"\n")
    i = len(body) if nl < 0 else nl + 1
    while i < len(body):
        nl = body.find(b"\n", i)
        if nl < 0:
            break
        header = json.loads(body[i:nl])
        i = nl + 1
        length = header.get("length")
        if length is None:
            end = body.find(b"\n", i)
            end = len(body) if end < 0 else end
        else:
            end = i + int(length)
        if header.get("type") == "transaction":
            transactions += 1
            spans += len(json.loads(body[i:end]).get("spans") or [])
        i = end + 1
    return transactions, spans


#: What the LangSmith API answers on ``GET /info`` (multipart ingestion, compression off).
LANGSMITH_INFO: dict[str, Any] = {
    "version": "0.0.0-bench-sink",
    "license_expiration_time": None,
    "batch_ingest_config": {
        "use_multipart_endpoint": True,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
    },
    "instance_flags": {},
}


def count_langsmith_multipart(body: bytes, content_type: str, header: str) -> tuple[int, int]:
    """(runs created, runs completed) in a LangSmith ``/runs/multipart`` body: the parts
    named ``post.<run id>`` and ``patch.<run id>`` (their ``.inputs``/``.outputs`` parts and
    attachments are not runs)."""
    if not content_type.startswith("multipart/"):
        raise ValueError(f"not multipart: {content_type}")
    boundary = header.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"').encode()
    posts = patches = 0
    for part in body.split(b"--" + boundary)[1:]:
        head = part.split(b"\r\n\r\n", 1)[0]
        marker = b'name="'
        at = head.find(marker)
        if at < 0:
            continue
        name = head[at + len(marker) : head.find(b'"', at + len(marker))].decode()
        kind, _, rest = name.partition(".")
        if rest and "." not in rest:
            posts += kind == "post"
            patches += kind == "patch"
    return posts, patches


def _decode(body: bytes, encoding: str | None) -> bytes:
    """Undo ``Content-Encoding`` if aiohttp has not already done it."""
    if encoding == "gzip" and body[:2] == b"\x1f\x8b":
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return body
    return body


# -- the ok server -----------------------------------------------------------------------


def _serve_ok(port: int) -> None:
    import orjson
    from aiohttp import web

    counts: Counter[str] = Counter()
    times: dict[str, float] = {}

    def seen(kind: str, n: int, nbytes: int) -> None:
        now = time.monotonic()
        counts[kind] += n
        counts[kind + "_requests"] += 1
        counts["bytes"] += nbytes
        times.setdefault("first_t", now)
        times["last_t"] = now

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            events = orjson.loads(body)["events"]
            n = len(events)
            for ev in events:
                counts["type:" + ev["event_type"]] += 1
                payload = ev.get("payload")
                if isinstance(payload, dict) and payload.get("kind") == "llm_call":
                    counts["hiveboard_llm_calls"] += 1
        except Exception:
            counts["bad_requests"] += 1
            return web.json_response({"error": "validation_error"}, status=400)
        seen("hiveboard_events", n, len(body))
        # aiohttp inflates a gzip body transparently: what crossed the wire is Content-Length.
        counts["wire_bytes"] += request.content_length or len(body)
        return web.Response(
            body=b'{"accepted":%d,"rejected":0,"errors":[],"warnings":[]}' % n,
            content_type="application/json",
        )

    async def traces(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = _decode(raw, request.headers.get("Content-Encoding"))
            if request.content_type == "application/json":
                names = count_otlp_json(orjson.loads(body))
            else:
                names = count_otlp_protobuf(body)
        except Exception:
            counts["bad_requests"] += 1
            return web.Response(status=400)
        for name, k in names.items():
            counts["otlp_name:" + name] += k
        seen("otlp_spans", sum(names.values()), len(raw))
        if request.content_type == "application/json":
            return web.json_response({})
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def envelope(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            tx, n = count_sentry_envelope(_decode(raw, request.headers.get("Content-Encoding")))
        except Exception:
            counts["bad_requests"] += 1
            return web.Response(status=400)
        counts["sentry_transactions"] += tx
        seen("sentry_spans", n, len(raw))
        return web.json_response({})

    async def langfuse_otel(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = _decode(raw, request.headers.get("Content-Encoding"))
            if request.content_type == "application/json":
                names = count_otlp_json(orjson.loads(body))
            else:
                names = count_otlp_protobuf(body)
        except Exception:
            counts["bad_requests"] += 1
            return web.Response(status=400)
        for name, k in names.items():
            counts["langfuse_name:" + name] += k
        seen("langfuse_spans", sum(names.values()), len(raw))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def langfuse_ingestion(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            batch = orjson.loads(_decode(raw, request.headers.get("Content-Encoding")))["batch"]
        except Exception:
            counts["bad_requests"] += 1
            return web.Response(status=400)
        seen("langfuse_events", len(batch), len(raw))
        ok = [{"id": ev.get("id"), "status": 201} for ev in batch]
        return web.json_response({"successes": ok, "errors": []}, status=207)

    async def langsmith_info(request: web.Request) -> web.Response:
        return web.json_response(LANGSMITH_INFO)

    async def langsmith_batch(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            data = orjson.loads(_decode(raw, request.headers.get("Content-Encoding")))
            posts, patches = len(data.get("post") or []), len(data.get("patch") or [])
        except Exception:
            counts["bad_requests"] += 1
            return web.Response(status=400)
        counts["langsmith_patches"] += patches
        seen("langsmith_posts", posts, len(raw))
        return web.json_response({})

    async def langsmith_multipart(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            posts, patches = count_langsmith_multipart(
                _decode(raw, request.headers.get("Content-Encoding")),
                request.content_type,
                request.headers.get("Content-Type", ""),
            )
        except Exception:
            counts["bad_requests"] += 1
            return web.Response(status=400)
        counts["langsmith_patches"] += patches
        seen("langsmith_posts", posts, len(raw))
        return web.json_response({}, status=202)

    async def unrouted(request: web.Request) -> web.Response:
        await request.read()
        counts[f"unrouted:{request.method} {request.path}"] += 1
        return web.json_response({"error": "not found"}, status=404)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({**counts, **times})

    async def reset(request: web.Request) -> web.Response:
        counts.clear()
        times.clear()
        return web.json_response({})

    async def main() -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/ingest", ingest)
        app.router.add_post("/v1/traces", traces)
        app.router.add_post("/api/{project}/envelope/", envelope)
        app.router.add_get("/count", count)
        app.router.add_post("/reset", reset)
        app.router.add_post("/api/public/otel/v1/traces", langfuse_otel)
        app.router.add_post("/api/public/ingestion", langfuse_ingestion)
        app.router.add_get("/info", langsmith_info)
        app.router.add_post("/runs/batch", langsmith_batch)
        app.router.add_post("/runs/multipart", langsmith_multipart)
        app.router.add_route("*", "/{tail:.*}", unrouted)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        _ready(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the failing servers -----------------------------------------------------------------


def _serve_never(port: int) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)  # keep the connection open, never answer
        while await reader.read(65536):
            pass

    writers: set[asyncio.StreamWriter] = set()

    async def main() -> None:
        server = await asyncio.start_server(swallow, "127.0.0.1", port, backlog=1024)
        _ready(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_refuse(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))  # bound, never listening: connections are refused
    _ready(sock.getsockname()[1])
    while True:
        time.sleep(3600)


def _ready(port: int) -> None:
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()


# -- the handle used by the benchmarks ---------------------------------------------------


class Sink:
    """A sink process. ``with Sink("ok") as sink: sink.url, sink.counts()``."""

    def __init__(self, mode: str = "ok", python: str | None = None) -> None:
        self.mode = mode
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "benchmarks.sink", "--mode", mode],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError(f"the {mode} sink did not start")
        self.port = int(json.loads(line)["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, Any]:
        """The ok sink's counters (empty for the other modes)."""
        if self.mode != "ok":
            return {}
        with urllib.request.urlopen(self.url + "/count", timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def reset(self) -> None:
        if self.mode == "ok":
            req = urllib.request.Request(self.url + "/reset", data=b"", method="POST")
            with urllib.request.urlopen(req, timeout=10):
                pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--mode", choices=("ok", "never", "refuse"), default="ok")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    {"ok": _serve_ok, "never": _serve_never, "refuse": _serve_refuse}[args.mode](args.port)


if __name__ == "__main__":
    main()
