"""``make bench-web``: what our service integrations add per request, next to OpenTelemetry.

``python -m benchmarks.web [--rounds N] [--seconds S] [--concurrency C] [--rate R] [--only ...]``
``python -m benchmarks.web --method ab [--block N] [--rounds N] [--only ...]``

``--rate R`` (a diagnostic) paces the servers' load at R requests/s in all instead of
back to back, so that every configuration serves the same arrivals (in the saturated
default, a slower configuration also gets fewer requests per loop turn).

Server side (the figure is the CPU time of the *server process* per request served):

* ``fastapi-*``: a FastAPI app (``GET /ping`` and ``GET /items/{item_id}``, small JSON)
  served by uvicorn on 127.0.0.1: ``bare``; ``ours`` (:class:`HiveLoopMiddleware` +
  ``lifespan(hb)``, HiveBoard ingest to the sink); ``otel`` (``FastAPIInstrumentor`` +
  ``TracerProvider`` + ``BatchSpanProcessor`` + OTLP/HTTP protobuf exporter to the sink);
* ``aiohttp-*``: the same app on ``aiohttp.web``: ``bare``; ``ours``
  (``contrib.aiohttp.setup(app, hb, agent=...)``); ``otel``
  (``AioHttpServerInstrumentor``, same provider).

Diagnostics, only when named in ``--only`` (interleaved with the others, not rows of the
comparison): ``fastapi-ours-nosend`` / ``aiohttp-ours-nosend`` (ours with the sender off:
``HiveBoard(enabled=False)``, events discarded at the queue) and ``fastapi-ours-b500`` /
``aiohttp-ours-b500`` (ours with ``batch_size=500``). Every server round also reports, for
its window, ``diag``: GC time and collections, the loop's selector polls and ready events,
CPU per thread, user/system time and context switches.

Each server runs in its own subprocess; a separate load-generator process (aiohttp client,
``--concurrency`` connections, every request alternating the two routes) warms it up, pauses,
then loads it for ``--seconds``. Around that window the server flushes its exporter (ours:
``await hb.aflush()``, OTel: ``provider.force_flush()``) before reading ``time.process_time()``
and again before reading it at the end: the sender's work for the window's requests (batching,
encoding, the HTTP posts, in threads or on the loop) is inside the measured CPU, the warm-up's
is not. The handler counts the requests it served; the load generator's count must match.

Client side (the figure is the CPU time of the *calling process* per outgoing request), the
calls going to a bare aiohttp server in another process, ``--concurrency`` callers each inside
an open HiveLoop task (ours) or span (OTel) so that propagation happens:

* ``aiohttp-client-*``: ``ClientSession`` ``bare``; ``ours`` (``trace_config()``: context
  headers); ``ours-track`` (``trace_config(track_requests=True)``: also one action per
  request, the counterpart of OTel's client span); ``otel`` (``AioHttpClientInstrumentor``);
* ``httpx-client-*``: ``AsyncClient`` ``bare``; ``ours`` (``AsyncTransport()``);
  ``ours-track`` (``AsyncTransport(track_requests=True)``); ``otel``
  (``HTTPXClientInstrumentor``).

``--method ab [--block N] [--rounds R]`` (server rows only) puts a family's configurations
side by side in *one* server process instead: FastAPI's apps behind a pure ASGI dispatcher
(``/bare/...``, ``/ours/...``, ``/otel/...``, ``/ours-nosend/...``) on one uvicorn server,
aiohttp's as sub-apps of one ``web.Application``. One load generator sends blocks of N
requests to one app at a time, in mirrored order (``a b c c b a``, reversed every other
round); between blocks it asks ``GET /__mark``, which flushes every exporter and answers the
process's CPU time, so each block's figure holds its sender's work. A configuration's
figure in a round is its two blocks together; "added" is the median over rounds of
(configuration - the same round's bare blocks). Adjacent blocks share the machine's
moment, which the process method's windows, seconds apart, do not; OpenTelemetry's global
tracer provider is left unset there (FastAPI 0.165+ would otherwise trace the other apps
too). Results go to ``results/web.ab.json`` and ``web.ab.txt``.

Every round runs every configuration once, in the same order (interleaved: a noisy moment
spoils one round of each); the table shows medians over rounds of µs/request and of the
added µs/request against the bare configuration of the same round. What the sink received
is counted (events by type, spans by name), not estimated. Results go to
``benchmarks/results/web.json`` and ``web.txt``. The OpenTelemetry packages come from the
``bench`` extra (``pip install -e '.[bench]'``, done by ``make bench-web``); without them the
``otel`` configurations are reported as not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

SERVERS = (
    "fastapi-bare",
    "fastapi-ours",
    "fastapi-otel",
    "aiohttp-bare",
    "aiohttp-ours",
    "aiohttp-otel",
)
CLIENTS = (
    "aiohttp-client-bare",
    "aiohttp-client-ours",
    "aiohttp-client-ours-track",
    "aiohttp-client-otel",
    "httpx-client-bare",
    "httpx-client-ours",
    "httpx-client-ours-track",
    "httpx-client-otel",
)
CONFIGS = SERVERS + CLIENTS
#: Diagnostics, run only when named in ``--only`` (not rows of the table's comparison),
#: interleaved with the others: ours with the sender switched off (``-nosend``:
#: ``HiveBoard(enabled=False)``, events discarded at the queue; the middleware and the task
#: bookkeeping unchanged), and ours with ``batch_size=500`` (``-b500``: five times fewer,
#: larger drains and posts than the default 100).
DIAGNOSTICS = (
    "fastapi-ours-nosend",
    "aiohttp-ours-nosend",
    "fastapi-ours-b500",
    "aiohttp-ours-b500",
)
#: The OpenTelemetry packages each ``otel`` configuration needs (the ``bench`` extra).
OTEL_MODULES = {
    "fastapi-otel": "opentelemetry.instrumentation.fastapi",
    "aiohttp-otel": "opentelemetry.instrumentation.aiohttp_server",
    "aiohttp-client-otel": "opentelemetry.instrumentation.aiohttp_client",
    "httpx-client-otel": "opentelemetry.instrumentation.httpx",
}
AGENT = "bench-web"
SERVICE = "bench-web"


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def otel_available(config: str) -> bool:
    """True when ``config`` needs no OpenTelemetry package or has them installed."""
    module = OTEL_MODULES.get(config)
    if module is None:
        return True
    try:
        return (
            importlib.util.find_spec(module) is not None
            and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
        )
    except ModuleNotFoundError:
        return False


def sink_counts(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/count", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """What the sink counted between two readings (numeric counters only)."""
    out: dict[str, int] = {}
    for key, value in after.items():
        if key in ("first_t", "last_t") or not isinstance(value, int):
            continue
        d = value - int(before.get(key, 0))
        if d:
            out[key] = d
    return out


# -- the sender under test, in the measured process ----------------------------------------------


class _Otel:
    """``TracerProvider`` + ``BatchSpanProcessor`` (defaults) + OTLP/HTTP protobuf exporter."""

    def __init__(self, sink: str, *, global_provider: bool = True) -> None:
        """``global_provider=False`` leaves OpenTelemetry's global tracer provider unset:
        FastAPI (0.165+) traces every app by itself once a global provider is configured,
        which must not happen to the other apps of an A/B server process."""
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=sink + "/v1/traces"))
        )
        if global_provider:
            trace.set_tracer_provider(self.provider)

    async def flush(self) -> bool:
        # force_flush blocks until the export thread has posted what is queued
        return bool(await asyncio.to_thread(self.provider.force_flush, 60_000))

    def close(self) -> None:
        self.provider.shutdown()


def _hiveboard(sink: str, config: str = "") -> Any:
    import hiveloop_async as hl

    # BENCH_WEB_SENDER=off or a ``-nosend`` configuration (diagnostics, not configurations
    # of the table): enabled=False, the events are discarded at the queue, so what is left
    # is the middleware's own cost.
    enabled = os.environ.get("BENCH_WEB_SENDER", "on") != "off" and not config.endswith("-nosend")
    batch = 500 if config.endswith("-b500") else None
    return hl.HiveBoard(api_key="hb_bench", endpoint=sink, enabled=enabled, batch_size=batch)


# -- servers ---------------------------------------------------------------------------------------


class _Served:
    """Requests the handlers served (read by the control thread)."""

    n = 0


def _fastapi_app(
    config: str, sink: str, prefix: str = "", *, global_provider: bool = True
) -> tuple[Any, Callable[[], Coroutine[Any, Any, bool]]]:
    """The FastAPI app of ``config`` (routes under ``prefix``) and its exporter's flush;
    ``global_provider``: see :class:`_Otel`."""
    from fastapi import FastAPI

    flush: Callable[[], Coroutine[Any, Any, bool]] = _no_flush
    if config.startswith("fastapi-ours"):
        from hiveloop_async.contrib.asgi import HiveLoopMiddleware, lifespan

        hb = _hiveboard(sink, config)
        app = FastAPI(lifespan=lifespan(hb))
        app.add_middleware(HiveLoopMiddleware, agent=hb.agent(AGENT))

        async def flush_hb() -> bool:
            return bool(await hb.aflush(timeout=60))

        flush = flush_hb
    else:
        app = FastAPI()

    @app.get(prefix + "/ping")
    async def ping() -> dict[str, bool]:
        _Served.n += 1
        return {"ok": True}

    @app.get(prefix + "/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        _Served.n += 1
        return {"id": item_id}

    if config == "fastapi-otel":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        otel = _Otel(sink, global_provider=global_provider)
        FastAPIInstrumentor.instrument_app(app, tracer_provider=otel.provider)
        flush = otel.flush
    return app, flush


async def _no_flush() -> bool:
    return True


def _aiohttp_app(
    config: str, sink: str, *, global_provider: bool = True
) -> tuple[Any, Callable[[], Coroutine[Any, Any, bool]]]:
    """The aiohttp app of ``config`` and its exporter's flush; ``global_provider``: see
    :class:`_Otel`."""
    from aiohttp import web

    flush: Callable[[], Coroutine[Any, Any, bool]] = _no_flush
    if config == "aiohttp-otel":
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        otel = _Otel(sink, global_provider=global_provider)
        # patches web.Application: call before the app is created, as its documentation says
        AioHttpServerInstrumentor().instrument(tracer_provider=otel.provider)
        flush = otel.flush

    async def ping(request: web.Request) -> web.Response:
        _Served.n += 1
        return web.json_response({"ok": True})

    async def item(request: web.Request) -> web.Response:
        _Served.n += 1
        return web.json_response({"id": int(request.match_info["item_id"])})

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_get("/items/{item_id}", item)
    if config.startswith("aiohttp-ours"):
        from hiveloop_async.contrib import aiohttp as hl_aiohttp

        hb = _hiveboard(sink, config)
        hl_aiohttp.setup(app, hb, agent=hb.agent(AGENT))

        async def flush_hb() -> bool:
            return bool(await hb.aflush(timeout=60))

        flush = flush_hb
    return app, flush


def _control(
    loop: asyncio.AbstractEventLoop,
    flush: Callable[[], Coroutine[Any, Any, bool]],
    stop: Callable[[], None],
    prof: Any = None,
) -> None:
    """The driver's commands on stdin, one per line: ``start``, ``stop``, ``quit``.

    ``start``: flush the exporter, then read the process CPU and the served count;
    ``stop``: read the served count, flush, read the CPU; answer on stdout (one JSON line).
    ``prof`` (a ``cProfile.Profile``): enabled on the loop's thread for the window only
    (after ``start``'s flush, until ``stop``'s flush has finished).
    """
    cpu0 = 0.0
    n0 = 0
    diag0: dict[str, float] = {}
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "start":
            ok = asyncio.run_coroutine_threadsafe(flush(), loop).result()
            gc.collect()
            if prof is not None:
                asyncio.run_coroutine_threadsafe(_profiling(prof, True), loop).result()
            cpu0, n0 = time.process_time(), _Served.n
            diag0 = _Diag.snapshot()
            _reply({"started": True, "flushed": ok})
        elif cmd == "stop":
            n1 = _Served.n
            ok = asyncio.run_coroutine_threadsafe(flush(), loop).result()
            if prof is not None:
                asyncio.run_coroutine_threadsafe(_profiling(prof, False), loop).result()
            cpu1 = time.process_time()
            diag1 = _Diag.snapshot()
            diag: dict[str, Any] = {k: round(v - diag0.get(k, 0.0), 6) for k, v in diag1.items()}
            diag["threads"] = sorted(t.name for t in threading.enumerate())
            _reply({"cpu_s": cpu1 - cpu0, "requests": n1 - n0, "flushed": ok, "diag": diag})
        elif cmd == "quit":
            break
    loop.call_soon_threadsafe(stop)


class _Diag:
    """Diagnostics of the server process over the window (not part of the figure).

    ``gc_s``: time spent in the cyclic garbage collector (``gc.callbacks``), and collections
    per generation; ``loop_iterations``: the loop's selector polls (each a turn of the loop)
    and ``loop_events``: the ready events they returned (sockets, wake-ups).
    """

    gc_s = 0.0
    gc_t0 = 0.0
    sender_s = 0.0
    gc_n: ClassVar[list[int]] = [0, 0, 0]
    polls = 0
    ready = 0

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> None:
        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                cls.gc_t0 = time.perf_counter()
            else:
                cls.gc_s += time.perf_counter() - cls.gc_t0
                cls.gc_n[int(info.get("generation", 0))] += 1

        gc.callbacks.append(on_gc)
        selector = getattr(loop, "_selector", None)
        select = getattr(selector, "select", None)
        if selector is not None and select is not None:

            def counted(timeout: float | None = None) -> Any:
                events = select(timeout)
                cls.polls += 1
                cls.ready += len(events)
                return events

            selector.select = counted

    @classmethod
    def snapshot(cls) -> dict[str, float]:
        threads: dict[str, float] = {}
        for t in threading.enumerate():
            try:
                clock = time.pthread_getcpuclockid(t.ident or 0)
                threads["cpu_s:" + t.name] = time.clock_gettime(clock)
            except (OSError, AttributeError):
                pass
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **threads,
            "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime,
            "voluntary_switches": usage.ru_nvcsw,
            "involuntary_switches": usage.ru_nivcsw,
            "gc_s": cls.gc_s,
            "sender_s": cls.sender_s,
            "gc_gen0": cls.gc_n[0],
            "gc_gen1": cls.gc_n[1],
            "gc_gen2": cls.gc_n[2],
            "loop_iterations": cls.polls,
            "loop_events": cls.ready,
        }


class _Timed:
    """Await ``coro``, adding the thread CPU of each of its steps to ``_Diag.sender_s``."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        t0 = time.thread_time()
        try:
            return self.coro.send(value)
        finally:
            _Diag.sender_s += time.thread_time() - t0

    def throw(self, *exc: Any) -> Any:
        t0 = time.thread_time()
        try:
            return self.coro.throw(*exc)
        finally:
            _Diag.sender_s += time.thread_time() - t0

    def close(self) -> None:
        self.coro.close()


def _time_sender() -> None:
    """``BENCH_WEB_SENDER_CPU=1`` (a diagnostic): the thread CPU of the sender's own task
    steps (the drain: encoding, scrubbing, batching; the request workers: the posts) is
    added up in ``diag.sender_s``, from inside the server. What runs in aiohttp's protocol
    callbacks outside those steps (parsing the sink's answers) is not in it."""
    from hiveloop_async import _transport

    engine: Any = _transport.Engine
    sender_loop = engine._sender_loop
    request_worker = engine._request_worker

    async def timed_sender_loop(self: Any) -> None:
        await _Timed(sender_loop(self))

    async def timed_request_worker(self: Any, batches: Any) -> None:
        await _Timed(request_worker(self, batches))

    engine._sender_loop = timed_sender_loop
    engine._request_worker = timed_request_worker


async def _profiling(prof: Any, on: bool) -> None:
    """Switch ``prof`` on or off for the thread running the loop (cProfile is per thread)."""
    if on:
        prof.enable()
    else:
        prof.disable()


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _bound_socket() -> tuple[socket.socket, int]:
    """A TCP socket bound to a free port of 127.0.0.1 (not listening yet) and its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


async def _uvicorn(app: Any, sock: socket.socket) -> tuple[Any, asyncio.Task[None]]:
    """Serve ``app`` with uvicorn on ``sock`` (h11, asyncio loop, lifespan on); return the
    server and its task once it has started (its startup error raised, if any)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", loop="asyncio", backlog=1024
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    return server, serving


def serve(config: str, sink: str) -> None:
    """Run one server configuration until ``quit`` on stdin. Prints ``{"port": N}`` first.

    With ``BENCH_WEB_PROFILE=path`` (``{config}`` in it is replaced by the configuration's
    name), the loop's thread is profiled with cProfile during the measured window only (the
    handler, the middleware, a sender on the loop; not OpenTelemetry's export thread) and
    the profile is written to ``path`` at exit.
    """
    if os.environ.get("BENCH_WEB_SENDER_CPU") == "1":
        _time_sender()
    profile = os.environ.get("BENCH_WEB_PROFILE")
    prof: Any = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    sock, port = _bound_socket()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _Diag.install(loop)
        done = asyncio.Event()
        if config.startswith("fastapi"):
            app, flush = _fastapi_app(config, sink)
            server, serving = await _uvicorn(app, sock)

            def stop() -> None:
                server.should_exit = True

            _reply({"port": port, "http": str(server.config.http)})
            threading.Thread(target=_control, args=(loop, flush, stop, prof), daemon=True).start()
            await serving
        else:
            from aiohttp import web

            app, flush = _aiohttp_app(config, sink)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            sock.listen(1024)
            site = web.SockSite(runner, sock)
            await site.start()
            _reply({"port": port})
            threading.Thread(
                target=_control, args=(loop, flush, done.set, prof), daemon=True
            ).start()
            await done.wait()
            await runner.cleanup()

    asyncio.run(main())
    if prof is not None and profile:
        prof.dump_stats(profile.replace("{config}", config))


# -- the load generator ----------------------------------------------------------------------------


def load(url: str, concurrency: int, warmup: float, seconds: float, rate: float = 0.0) -> None:
    """Warm the server up, print ``WARM``, wait for ``go`` on stdin, load it for ``seconds``.

    Every connection sends requests back to back (``rate`` 0), or paced so that all of them
    together start ``rate`` requests per second (each connection every ``concurrency / rate``
    seconds, the connections spread evenly; a request that is late goes at once). Requests
    alternate ``/ping`` and ``/items/{n}``; the last line is the JSON count of answered
    requests and errors, and for a paced load how many started more than 10 ms late.
    """
    import aiohttp

    late = 0

    async def phase(session: aiohttp.ClientSession, seconds: float) -> tuple[int, int]:
        nonlocal late
        start = time.monotonic()
        deadline = start + seconds
        ok = 0
        errors = 0
        late = 0
        every = concurrency / rate if rate > 0 else 0.0

        async def worker(w: int) -> None:
            nonlocal ok, errors, late
            i = w
            due = start + w / rate if rate > 0 else 0.0
            while time.monotonic() < deadline:
                if every:
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    elif wait < -0.01:
                        late += 1
                    due += every
                    if due >= deadline + every:
                        break
                path = "/ping" if i % 2 else f"/items/{i % 1000}"
                i += 1
                try:
                    async with session.get(url + path) as resp:
                        await resp.read()
                        if resp.status == 200:
                            ok += 1
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return ok, errors

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await phase(session, warmup)
            _reply({"warm": True})
            await asyncio.to_thread(sys.stdin.readline)
            t0 = time.monotonic()
            ok, errors = await phase(session, seconds)
            _reply(
                {"requests": ok, "errors": errors, "wall_s": time.monotonic() - t0, "late": late}
            )

    asyncio.run(main())


# -- one server process, blocks alternated (``--method ab``) --------------------------------------

#: The configurations of one family that ``--method ab`` can put side by side in one process.
AB_NAMES = ("bare", "ours", "otel", "ours-nosend")
#: The path of the A/B server's mark (flush every exporter, then read the process's CPU).
MARK = "/__mark"


def _ab_apps(
    family: str, names: tuple[str, ...], sink: str
) -> tuple[dict[str, Any], list[Callable[[], Coroutine[Any, Any, bool]]]]:
    """The sub-apps of ``family`` for ``names`` (each under ``/{name}``) and their flushes.

    aiohttp's OpenTelemetry instrumentor patches ``web.Application`` for every app created
    after it, so the ``otel`` app is made last and the class restored right after.
    """
    apps: dict[str, Any] = {}
    flushes: list[Callable[[], Coroutine[Any, Any, bool]]] = []
    for name in sorted(names, key=lambda n: n == "otel"):
        config = f"{family}-{name}"
        if family == "fastapi":
            app, flush = _fastapi_app(config, sink, prefix=f"/{name}", global_provider=False)
        else:
            app, flush = _aiohttp_app(config, sink, global_provider=False)
            if name == "otel":
                from opentelemetry.instrumentation.aiohttp_server import (
                    AioHttpServerInstrumentor,
                )

                AioHttpServerInstrumentor().uninstrument()
        apps[name] = app
        flushes.append(flush)
    return apps, flushes


async def _mark(flushes: list[Callable[[], Coroutine[Any, Any, bool]]]) -> dict[str, Any]:
    """Flush every exporter (the block's sender work lands in the block), then read the CPU."""
    ok = True
    for flush in flushes:
        ok = await flush() and ok
    return {"cpu_s": time.process_time(), "served": _Served.n, "flushed": ok}


def _asgi_dispatcher(
    apps: dict[str, Any], flushes: list[Callable[[], Coroutine[Any, Any, bool]]]
) -> Callable[..., Coroutine[Any, Any, None]]:
    """One ASGI app: ``/{name}/...`` goes to ``apps[name]`` unchanged (its routes carry the
    prefix), ``GET /__mark`` answers :func:`_mark`; the lifespan runs every app's own."""

    async def lifespan(receive: Any, send: Any) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await receive()  # lifespan.startup
            for app in apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})

    async def dispatch(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == MARK:
            body = json.dumps(await _mark(flushes)).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await apps[path.split("/", 2)[1]](scope, receive, send)

    return dispatch


def serve_ab(family: str, names: tuple[str, ...], sink: str) -> None:
    """Serve ``names`` of ``family`` side by side in this process until ``quit`` on stdin.

    Prints ``{"port": N}`` when ready. FastAPI: one uvicorn server, a pure ASGI dispatcher
    in front of the apps; aiohttp: one ``web.Application`` with each app as a sub-app (no
    middleware of its own). ``GET /__mark`` flushes every exporter and answers the process's
    CPU time and the requests served so far.
    """
    sock, port = _bound_socket()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def quit_on_stdin() -> None:
            for line in sys.stdin:
                if line.strip() == "quit":
                    break
            loop.call_soon_threadsafe(done.set)

        apps, flushes = _ab_apps(family, names, sink)
        if family == "fastapi":
            server, serving = await _uvicorn(_asgi_dispatcher(apps, flushes), sock)
            _reply({"port": port})
            threading.Thread(target=quit_on_stdin, daemon=True).start()
            await done.wait()
            server.should_exit = True
            await serving
        else:
            from aiohttp import web

            async def mark(request: web.Request) -> web.Response:
                return web.json_response(await _mark(flushes))

            root = web.Application()
            root.router.add_get(MARK, mark)
            for name, app in apps.items():
                root.add_subapp(f"/{name}", app)
            runner = web.AppRunner(root, access_log=None)
            await runner.setup()
            sock.listen(1024)
            await web.SockSite(runner, sock).start()
            _reply({"port": port})
            threading.Thread(target=quit_on_stdin, daemon=True).start()
            await done.wait()
            await runner.cleanup()

    asyncio.run(main())


def load_ab(
    url: str, names: tuple[str, ...], concurrency: int, warmup: float, block: int, rounds: int
) -> None:
    """Load the A/B server in blocks of ``block`` requests, one name at a time.

    Warms every name up for ``warmup`` seconds in all, prints ``WARM``, waits for ``go``,
    then runs ``rounds`` rounds of blocks in mirrored order (``a b c c b a``, the order
    itself reversed every other round), a mark between blocks. Prints one JSON line: the
    blocks, each with the CPU and the requests the server counted between its two marks.
    """
    import aiohttp

    async def run_block(session: aiohttp.ClientSession, name: str, n: int) -> tuple[int, int]:
        left = n
        ok = errors = 0

        async def worker() -> None:
            nonlocal left, ok, errors
            while left > 0:
                left -= 1
                path = f"/{name}/ping" if left % 2 else f"/{name}/items/{left % 1000}"
                try:
                    async with session.get(url + path) as resp:
                        await resp.read()
                        if resp.status == 200:
                            ok += 1
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok, errors

    async def mark(session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(url + MARK) as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            end = time.monotonic() + warmup
            while time.monotonic() < end:
                for name in names:
                    await run_block(session, name, max(concurrency, block // 4))
            await mark(session)
            _reply({"warm": True})
            await asyncio.to_thread(sys.stdin.readline)
            blocks: list[dict[str, Any]] = []
            before = await mark(session)
            t0 = time.monotonic()
            for k in range(rounds):
                order = list(names) if k % 2 == 0 else list(reversed(names))
                for name in order + order[::-1]:
                    b0 = time.monotonic()
                    ok, errors = await run_block(session, name, block)
                    wall = time.monotonic() - b0
                    after = await mark(session)
                    blocks.append(
                        {
                            "round": k,
                            "name": name,
                            "requests": ok,
                            "errors": errors,
                            "served": after["served"] - before["served"],
                            "cpu_s": after["cpu_s"] - before["cpu_s"],
                            "wall_s": wall,
                            "flushed": after["flushed"],
                        }
                    )
                    before = after
            _reply({"blocks": blocks, "wall_s": time.monotonic() - t0})

    asyncio.run(main())


def ab_rounds(family: str, blocks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The blocks of an A/B run as rounds of per-configuration results (for :func:`summarize`):
    each configuration's CPU and requests over its two blocks of the round."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for b in blocks:
        res = by_round.setdefault(b["round"], {}).setdefault(
            b["name"],
            {
                "config": f"{family}-{b['name']}",
                "requests": 0,
                "load_requests": 0,
                "load_errors": 0,
                "cpu_s": 0.0,
                "wall_s": 0.0,
                "flushed": True,
            },
        )
        res["requests"] += b["served"]
        res["load_requests"] += b["requests"]
        res["load_errors"] += b["errors"]
        res["cpu_s"] += b["cpu_s"]
        res["wall_s"] += b["wall_s"]
        res["flushed"] = res["flushed"] and bool(b["flushed"])
    rounds: list[list[dict[str, Any]]] = []
    for k in sorted(by_round):
        results = []
        for res in by_round[k].values():
            n = max(1, res["requests"])
            res["us_per_request"] = round(res["cpu_s"] * 1e6 / n, 2)
            res["requests_per_s"] = round(n / max(1e-9, res.pop("wall_s")))
            res["cpu_s"] = round(res["cpu_s"], 4)
            results.append(res)
        rounds.append(results)
    return rounds


def run_ab(
    family: str,
    names: tuple[str, ...],
    sink: Any,
    concurrency: int,
    warmup: float,
    block: int,
    rounds: int,
) -> list[list[dict[str, Any]]]:
    """One A/B run of ``family`` (one server process, one load generator); its rounds.

    Delivery is checked over the whole run (the sink cannot tell the blocks apart): every
    round's result carries the same run-wide share, events or spans per request of the
    configuration that sends them.
    """
    server = _spawn("--serve-ab", family, "--names", *names, "--sink", sink.url)
    try:
        url = f"http://127.0.0.1:{int(_line(server, family + ' A/B server')['port'])}"
        loader = _spawn(
            "--load-ab",
            url,
            "--names",
            *names,
            "--concurrency",
            str(concurrency),
            "--warmup",
            str(warmup),
            "--block",
            str(block),
            "--rounds",
            str(rounds),
        )
        try:
            _line(loader, "A/B load generator")  # warm
            before = sink_counts(sink.url)
            _send(loader, "go")
            out = _line(loader, "A/B load generator")
            after = sink_counts(sink.url)
        finally:
            _end(loader, quit=False)
    finally:
        _end(server)
    for b in out["blocks"]:
        log(f"A/B {family} block {json.dumps(b)}")
    all_rounds = ab_rounds(family, out["blocks"])
    window = _window(before, after)
    totals: dict[str, int] = {}
    for rnd in all_rounds:
        for res in rnd:
            totals[res["config"]] = totals.get(res["config"], 0) + res["requests"]
    for rnd in all_rounds:
        for res in rnd:
            # what the sink got in the run, against this configuration's requests in the run
            whole = {**res, "requests": totals[res["config"]], "sink": window}
            res["delivery"] = check_delivery(whole)
    return all_rounds


def measure_ab(
    families: dict[str, tuple[str, ...]],
    rounds: int,
    block: int,
    warmup: float,
    concurrency: int,
) -> dict[str, Any]:
    """``--method ab``: each family's configurations side by side in one server process,
    blocks of requests alternated (see the module's docstring). Blocks for the whole run."""
    from .sink import Sink

    all_rounds: list[list[dict[str, Any]]] = [[] for _ in range(rounds)]
    skipped: dict[str, str] = {}
    configs: list[str] = []
    with Sink("ok") as sink:
        for family, wanted in families.items():
            names = tuple(n for n in wanted if otel_available(f"{family}-{n}"))
            skipped.update(
                {
                    f"{family}-{n}": "OpenTelemetry packages not installed (bench extra)"
                    for n in wanted
                    if n not in names
                }
            )
            configs += [f"{family}-{n}" for n in names]
            for k, rnd in enumerate(
                run_ab(family, names, sink, concurrency, warmup, block, rounds)
            ):
                all_rounds[k] += rnd
                log(f"A/B {family} round {k + 1}/{rounds} {json.dumps(rnd)}")
    return {
        "method": {
            "method": "ab",
            "rounds": rounds,
            "block": block,
            "warmup_s": warmup,
            "concurrency": concurrency,
            "figure": "process CPU time (time.process_time) of the one server process per"
            " request, between marks that flush every exporter (sender cost included);"
            " blocks of one configuration at a time, in mirrored order (a b c c b a)",
        },
        "not_run": skipped,
        "versions": _versions(),
        "summary": summarize(all_rounds, tuple(configs)),
        "rounds": all_rounds,
    }


# -- the calling side ------------------------------------------------------------------------------


def call(
    config: str, target: str, sink: str, concurrency: int, warmup: float, seconds: float
) -> None:
    """Measure one client configuration in this process; prints one JSON line at the end."""
    asyncio.run(_call(config, target, sink, concurrency, warmup, seconds))


async def _call(
    config: str, target: str, sink: str, concurrency: int, warmup: float, seconds: float
) -> None:
    lib = "httpx" if config.startswith("httpx") else "aiohttp"
    variant = config.split("-client-", 1)[1]
    otel: _Otel | None = None
    hb: Any = None
    if variant == "otel":
        otel = _Otel(sink)
        if lib == "aiohttp":
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

            AioHttpClientInstrumentor().instrument(tracer_provider=otel.provider)
        else:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor().instrument(tracer_provider=otel.provider)
    elif variant.startswith("ours"):
        hb = _hiveboard(sink)
        await hb.start()  # the sender on this loop, as lifespan(hb) does in a service
    track = variant == "ours-track"

    async def flush() -> bool:
        if otel is not None:
            return await otel.flush()
        if hb is not None:
            return bool(await hb.aflush(timeout=60))
        return True

    @contextlib.contextmanager
    def scope(w: int) -> Any:
        """The open task (ours) or span (OTel) a caller's requests are made in."""
        if hb is not None:
            with hb.agent(AGENT).task(f"caller-{w}", type="calls"):
                yield
        elif otel is not None:
            with otel.provider.get_tracer("bench-web").start_as_current_span(f"caller-{w}"):
                yield
        else:
            yield

    get: Callable[[str], Coroutine[Any, Any, int]]
    async with contextlib.AsyncExitStack() as stack:
        if lib == "aiohttp":
            import aiohttp

            trace_configs = []
            if hb is not None:
                from hiveloop_async.contrib import aiohttp as hl_aiohttp

                trace_configs.append(hl_aiohttp.trace_config(track_requests=track))
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=concurrency), trace_configs=trace_configs
                )
            )

            async def get_aiohttp(path: str) -> int:
                async with session.get(target + path) as resp:
                    await resp.read()
                    return resp.status

            get = get_aiohttp
        else:
            import httpx

            limits = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
            transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(limits=limits)
            if hb is not None:
                from hiveloop_async.contrib import httpx as hl_httpx

                transport = hl_httpx.AsyncTransport(transport, track_requests=track)
            client = await stack.enter_async_context(httpx.AsyncClient(transport=transport))

            async def get_httpx(path: str) -> int:
                resp = await client.get(target + path)
                return resp.status_code

            get = get_httpx

        async def phase(seconds: float) -> tuple[int, int]:
            deadline = time.monotonic() + seconds
            ok = 0
            errors = 0

            async def worker(w: int) -> None:
                nonlocal ok, errors
                i = w
                with scope(w):
                    while time.monotonic() < deadline:
                        path = "/ping" if i % 2 else f"/items/{i % 1000}"
                        i += 1
                        try:
                            if await get(path) == 200:
                                ok += 1
                            else:
                                errors += 1
                        except OSError:
                            errors += 1

            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            return ok, errors

        await phase(warmup)
        flushed0 = await flush()
        before = await asyncio.to_thread(sink_counts, sink)
        gc.collect()
        cpu0 = time.process_time()
        ok, errors = await phase(seconds)
        flushed1 = await flush()
        cpu1 = time.process_time()
        after = await asyncio.to_thread(sink_counts, sink)
    if hb is not None:
        await hb.aclose()
    if otel is not None:
        otel.close()
    _reply(
        {
            "cpu_s": cpu1 - cpu0,
            "requests": ok,
            "errors": errors,
            "flushed": flushed0 and flushed1,
            "sink": _window(before, after),
        }
    )


# -- the driver ------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIVELOOP_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.web", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )


def _line(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what}: the process ended (exit {proc.wait()})")
    data: dict[str, Any] = json.loads(line)
    return data


def _send(proc: subprocess.Popen[str], cmd: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(cmd + "\n")
    proc.stdin.flush()


def _end(proc: subprocess.Popen[str], *, quit: bool = True) -> None:
    """Ask the process to quit (``quit``), wait for it (killed after 20 s), close its pipes."""
    if quit:
        with contextlib.suppress(OSError, ValueError):
            _send(proc, "quit")
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class Server:
    """One server configuration in its own subprocess."""

    def __init__(self, config: str, sink: str) -> None:
        self.config = config
        self.proc = _spawn("--serve", config, "--sink", sink)
        ready = _line(self.proc, config)
        self.port = int(ready["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.info = ready

    def command(self, cmd: str) -> dict[str, Any]:
        _send(self.proc, cmd)
        return _line(self.proc, f"{self.config} {cmd}")

    def close(self) -> None:
        _end(self.proc)


def run_server(
    config: str, sink_url: str, concurrency: int, warmup: float, seconds: float, rate: float = 0.0
) -> dict[str, Any]:
    """One measured window of one server configuration (fresh server process); ``rate``
    paces the load (see :func:`load`), 0 sends back to back."""
    server = Server(config, sink_url)
    try:
        loader = _spawn(
            "--load",
            server.url,
            "--concurrency",
            str(concurrency),
            "--warmup",
            str(warmup),
            "--seconds",
            str(seconds),
            "--rate",
            str(rate),
        )
        try:
            _line(loader, "load generator")  # warm
            started = server.command("start")
            before = sink_counts(sink_url)
            _send(loader, "go")
            loaded = _line(loader, "load generator")
            stopped = server.command("stop")
            after = sink_counts(sink_url)
        finally:
            _end(loader, quit=False)
    finally:
        server.close()
    requests = int(stopped["requests"])
    return {
        "config": config,
        "requests": requests,
        "load_requests": int(loaded["requests"]),
        "load_errors": int(loaded["errors"]),
        "cpu_s": round(float(stopped["cpu_s"]), 4),
        "us_per_request": round(float(stopped["cpu_s"]) * 1e6 / max(1, requests), 2),
        "requests_per_s": round(requests / max(1e-9, float(loaded["wall_s"]))),
        **({"rate": rate, "late": int(loaded.get("late", 0))} if rate > 0 else {}),
        "flushed": bool(started["flushed"]) and bool(stopped["flushed"]),
        "sink": _window(before, after),
        "diag": stopped.get("diag", {}),
        **({"http": server.info["http"]} if "http" in server.info else {}),
    }


def run_client(
    config: str, target: str, sink_url: str, concurrency: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """One measured window of one client configuration (fresh calling process)."""
    proc = _spawn(
        "--call",
        config,
        "--target",
        target,
        "--sink",
        sink_url,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    )
    try:
        out = _line(proc, config)
    finally:
        _end(proc)
    requests = int(out["requests"])
    return {
        "config": config,
        "requests": requests,
        "errors": int(out["errors"]),
        "cpu_s": round(float(out["cpu_s"]), 4),
        "us_per_request": round(float(out["cpu_s"]) * 1e6 / max(1, requests), 2),
        "requests_per_s": round(requests / seconds),
        "flushed": bool(out["flushed"]),
        "sink": out["sink"],
    }


def expected(config: str) -> dict[str, Any]:
    """What the sink must have received per request in a configuration's window."""
    if (config in SERVERS and config.endswith("-ours")) or config.endswith("-b500"):
        return {"events": ("type:task_started", "type:task_completed")}
    if config.endswith("-ours-track"):
        return {"events": ("type:action_started", "type:action_completed")}
    if config.endswith("-otel"):
        return {"spans": True}
    return {}


def check_delivery(res: dict[str, Any]) -> dict[str, Any]:
    """Delivery per request, from the sink's counts (a share below 1 means drops)."""
    sink = res["sink"]
    n = max(1, res["requests"])
    want = expected(res["config"])
    out: dict[str, Any] = {}
    if "events" in want:
        got = [int(sink.get(k, 0)) for k in want["events"]]
        out["events_per_request"] = round(int(sink.get("hiveboard_events", 0)) / n, 3)
        out["delivered_share"] = round(min(got) / n, 4)
    if "spans" in want:
        spans = int(sink.get("otlp_spans", 0))
        names = {k[len("otlp_name:") :]: v for k, v in sink.items() if k.startswith("otlp_name:")}
        out["spans_per_request"] = round(spans / n, 3)
        out["span_names"] = names
        # the span standing for the request (server or client span), one per request
        out["delivered_share"] = round(_primary(names) / n, 4)
    return out


def _primary(names: dict[str, int]) -> int:
    """Spans that stand for the request itself (server or client span, not the extras)."""
    return sum(
        v
        for k, v in names.items()
        if not k.startswith("caller-") and not k.endswith((" http send", " http receive"))
    )


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def _bare_of(config: str) -> str:
    if "-client-" in config:
        return config.split("-client-", 1)[0] + "-client-bare"
    return config.split("-", 1)[0] + "-bare"


def summarize(rounds: list[list[dict[str, Any]]], configs: tuple[str, ...]) -> dict[str, Any]:
    """Medians over rounds: µs/request and added µs/request vs the same round's bare run."""
    out: dict[str, Any] = {}
    for config in configs:
        per: list[float] = []
        added: list[float] = []
        shares: list[float] = []
        for rnd in rounds:
            by = {r["config"]: r for r in rnd}
            r = by.get(config)
            if r is None or "error" in r:
                continue
            per.append(r["us_per_request"])
            bare = by.get(_bare_of(config))
            if bare is not None and "error" not in bare and config != _bare_of(config):
                added.append(r["us_per_request"] - bare["us_per_request"])
            share = r.get("delivery", {}).get("delivered_share")
            if share is not None:
                shares.append(share)
        if not per:
            continue
        entry: dict[str, Any] = {"us_per_request": _median(per), "rounds": len(per)}
        if added:
            entry["added_us"] = _median(added)
            entry["added_us_rounds"] = [round(a, 2) for a in added]
        if shares:
            entry["delivered_share_min"] = min(shares)
        out[config] = entry
    ratios: dict[str, float] = {}
    for ours, otel in (
        ("fastapi-ours", "fastapi-otel"),
        ("aiohttp-ours", "aiohttp-otel"),
        ("aiohttp-client-ours", "aiohttp-client-otel"),
        ("aiohttp-client-ours-track", "aiohttp-client-otel"),
        ("httpx-client-ours", "httpx-client-otel"),
        ("httpx-client-ours-track", "httpx-client-otel"),
    ):
        a = out.get(ours, {}).get("added_us")
        b = out.get(otel, {}).get("added_us")
        if a is not None and b:
            ratios[f"{ours} / {otel}"] = round(a / b, 3)
    return {"configs": out, "ratios_ours_over_otel": ratios}


def table(summary: dict[str, Any], rounds: list[list[dict[str, Any]]]) -> str:
    """The side-by-side table (medians over rounds)."""
    last = {r["config"]: r for rnd in rounds for r in rnd if "error" not in r}
    lines = [
        f"{'configuration':<28}{'CPU µs/req':>11}{'added µs':>10}{'req/s':>8}  delivered",
    ]
    for config, entry in summary["configs"].items():
        r = last.get(config, {})
        d = r.get("delivery", {})
        if "events_per_request" in d:
            what = f"{d['events_per_request']:.2f} events/req"
        elif "spans_per_request" in d:
            what = f"{d['spans_per_request']:.2f} spans/req"
        else:
            what = "-"
        share = entry.get("delivered_share_min")
        if share is not None:
            what += f", share {share:.4f}"
        added = entry.get("added_us")
        lines.append(
            f"{config:<28}{entry['us_per_request']:>11.1f}"
            f"{'' if added is None else f'{added:+.1f}':>10}{r.get('requests_per_s', 0):>8}  {what}"
        )
    lines.append("")
    for name, ratio in summary["ratios_ours_over_otel"].items():
        lines.append(f"added cost ratio {name}: {ratio:.3f}")
    return "\n".join(lines)


def breakdown_text(rounds: list[dict[str, Any]]) -> str:
    """Medians of :func:`breakdown` over its rounds, one line per scrub setting."""
    if not rounds:
        return ""
    lines = ["", "ours, server side, in-process split (CPU µs/request, median of rounds):"]
    for key in ("scrub_on", "scrub_off"):
        rec = _median([r[key]["record_us"] for r in rounds])
        snd = _median([r[key]["send_us"] for r in rounds])
        lines.append(
            f"  {key:<9}  middleware bookkeeping {rec:6.1f}   sender (2 events) {snd:6.1f}"
            f"   total {rec + snd:6.1f}"
        )
    full = [r["full_stack"] for r in rounds if "full_stack" in r]
    if full:
        lines.append(
            "  FastAPI through ASGI, no HTTP server: bare"
            f" {_median([f['bare_us'] for f in full]):6.1f}, ours added"
            f" {_median([f['added_us'] for f in full]):+6.1f} (ASGI wrapping + route +"
            " bookkeeping + sender)"
        )
    return "\n".join(lines)


def measure(
    configs: tuple[str, ...],
    rounds: int,
    seconds: float,
    warmup: float,
    concurrency: int,
    split_requests: int = 10_000,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Every configuration once per round, interleaved; sink and downstream shared.
    ``rate`` paces the servers' load (:func:`load`); 0 loads them back to back.

    Then, when an ``ours`` configuration ran, :func:`breakdown` once per round
    (``split_requests`` requests each). Blocks for the whole run.
    """
    from .sink import Sink

    skipped = [c for c in configs if not otel_available(c)]
    runnable = tuple(c for c in configs if c not in skipped)
    all_rounds: list[list[dict[str, Any]]] = []
    with Sink("ok") as sink:
        downstream: Server | None = None
        if any(c in CLIENTS for c in runnable):
            downstream = Server("aiohttp-bare", sink.url)
        try:
            for k in range(rounds):
                results: list[dict[str, Any]] = []
                for config in runnable:
                    try:
                        if config in SERVERS or config in DIAGNOSTICS:
                            res = run_server(config, sink.url, concurrency, warmup, seconds, rate)
                        else:
                            assert downstream is not None
                            res = run_client(
                                config, downstream.url, sink.url, concurrency, warmup, seconds
                            )
                        res["delivery"] = check_delivery(res)
                    except Exception as exc:  # one failed run must not lose the others
                        res = {"config": config, "error": f"{type(exc).__name__}: {exc}"}
                    results.append(res)
                    log(f"round {k + 1}/{rounds} {json.dumps(res)}")
                all_rounds.append(results)
        finally:
            if downstream is not None:
                downstream.close()
    summary = summarize(all_rounds, runnable)
    ours = any("-ours" in c for c in runnable)
    split = [breakdown(split_requests) for _ in range(rounds)] if ours else []
    return {
        "method": {
            "rounds": rounds,
            "seconds": seconds,
            "warmup_s": warmup,
            "concurrency": concurrency,
            "rate": rate,
            "figure": "process CPU time (time.process_time) of the measured process per request"
            " in the window, exporter flushed before and after (sender cost included)",
        },
        "not_run": {c: "OpenTelemetry packages not installed (bench extra)" for c in skipped},
        "versions": _versions(),
        "summary": summary,
        "breakdown_rounds": split,
        "rounds": all_rounds,
    }


def breakdown(requests: int = 10_000, burst: int = 1_000) -> dict[str, Any]:
    """Where our server-side time per request goes, in this process (no HTTP server).

    ``record``: the middleware's bookkeeping (:class:`RequestTasks` ``begin`` + ``finish``:
    the task and its two events queued); ``send``: the sender's work for them
    (``await hb.aflush()`` after each burst: encoding, scrubbing, the HTTP posts to the sink),
    with the default scrubber and with ``scrub=False``. Process CPU per request.
    """
    from hiveloop_async.contrib._service import RequestInfo, RequestTasks

    from .sink import Sink

    burst = max(1, min(burst, requests))

    async def one(url: str, scrub: bool) -> dict[str, float]:
        import hiveloop_async as hl

        hb = hl.HiveBoard(api_key="hb_bench", endpoint=url, scrub=scrub)
        await hb.start()
        tasks = RequestTasks(hb.agent(AGENT))
        info = RequestInfo(
            request=None,
            method="GET",
            path="/items/3",
            route="/items/{item_id}",
            headers={},
            peer="127.0.0.1",
        )
        await hb.aflush()
        record = send = 0.0
        for _ in range(max(1, requests // burst)):
            t0 = time.process_time()
            for _ in range(burst):
                served = tasks.begin(info)
                assert served is not None
                served.status = 200
                served.bytes_sent = 9
                served.finish()
            t1 = time.process_time()
            await hb.aflush(timeout=60)
            record += t1 - t0
            send += time.process_time() - t1
        await hb.aclose()
        n = max(1, requests // burst) * burst
        return {"record_us": round(record / n * 1e6, 2), "send_us": round(send / n * 1e6, 2)}

    with Sink("ok") as sink:
        out: dict[str, Any] = {
            "scrub_on": asyncio.run(one(sink.url, True)),
            "scrub_off": asyncio.run(one(sink.url, False)),
        }
        counts = sink_counts(sink.url)
        blocks = max(2, requests // burst)
        out["full_stack"] = asyncio.run(full_stack(sink.url, blocks, max(2, burst // 2)))
        after = sink_counts(sink.url)
    out["requests"] = max(1, requests // burst) * burst
    out["events_at_sink"] = int(counts.get("type:task_started", 0)) + int(
        counts.get("type:task_completed", 0)
    )
    out["full_stack"]["events_at_sink"] = int(after.get("type:task_completed", 0)) - int(
        counts.get("type:task_completed", 0)
    )
    return out


async def full_stack(sink: str, rounds: int, block: int) -> dict[str, Any]:
    """The FastAPI app bare and with ours (sender on, default scrubbing), called in this
    process through ASGI with no HTTP server: ``rounds`` rounds of a block of ``block``
    requests each, in mirrored order, each block ending with its exporter flushed. What the
    whole middleware adds inside the framework's stack (its ASGI wrapping, the route
    template, the bookkeeping, the sender), without the sockets' noise.

    Returns process CPU µs/request (medians over rounds) and the median of the per-round
    differences; ``requests`` is ours' count (one ``task_completed`` each at the sink).
    """
    apps = {name: _fastapi_app(f"fastapi-{name}", sink) for name in ("bare", "ours")}
    stack = contextlib.AsyncExitStack()
    for app, _ in apps.values():
        await stack.enter_async_context(app.router.lifespan_context(app))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def scope(i: int) -> dict[str, Any]:
        path = "/ping" if i % 2 else f"/items/{i % 1000}"
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 80),
        }

    async def run(name: str) -> float:
        app, flush = apps[name]
        t0 = time.process_time()
        for i in range(block):
            await app(scope(i), receive, send)
        await flush()
        return (time.process_time() - t0) * 1e6 / block

    try:
        for name in apps:  # warm-up
            await run(name)
        per: dict[str, list[float]] = {name: [] for name in apps}
        added: list[float] = []
        for k in range(rounds):
            order = ["bare", "ours"] if k % 2 == 0 else ["ours", "bare"]
            got = {name: 0.0 for name in apps}
            for name in order + order[::-1]:
                got[name] += await run(name) / 2
            for name in apps:
                per[name].append(got[name])
            added.append(got["ours"] - got["bare"])
    finally:
        await stack.aclose()
    return {
        "bare_us": _median(per["bare"]),
        "ours_us": _median(per["ours"]),
        "added_us": _median(added),
        "rounds": rounds,
        "block": block,
        "requests": (rounds * 2 + 1) * block,
    }


def _profile_group(path: str, name: str) -> str:
    """The component a profiled function belongs to (for :func:`profile_diff`)."""
    if path == "~":
        return "C functions"
    norm = path.replace(os.sep, "/")
    if "hiveloop_async/" in norm:  # by module: contrib.asgi, _task, _transport, _scrub, ...
        return "hiveloop " + norm.rsplit("hiveloop_async/", 1)[1].removesuffix(".py").replace(
            "/", "."
        )
    if "/benchmarks/" in norm:
        return "benchmark handlers"
    if "site-packages/" in norm:
        return norm.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    parts = norm.split("/")
    for i, part in enumerate(parts):
        if part.startswith("python3") and i + 1 < len(parts):
            return "stdlib " + parts[i + 1].removesuffix(".py")
    return "other"


def _profile_table(path: str) -> tuple[int, dict[tuple[str, int, str], float]]:
    """Requests served (calls of the benchmark's handlers) and own time per function."""
    import pstats

    stats: dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    requests = sum(
        v[1]
        for k, v in stats.items()
        if k[2] in ("ping", "item") and k[0].endswith(os.path.join("benchmarks", "web.py"))
    )
    return requests, {k: float(v[2]) for k, v in stats.items()}


def profile_diff(base: str, other: str, top: int = 20) -> str:
    """Own time per request by component and by function, ``other`` minus ``base``.

    Reads two profiles written with ``BENCH_WEB_PROFILE`` (window only); per request means
    per call of the benchmark's handlers. Profiled time: every figure is inflated by
    cProfile's own overhead (more for code making many small calls), so compare components
    with each other, not with the benchmark's unprofiled µs. Raises OSError for a missing file.
    """
    n_a, a = _profile_table(base)
    n_b, b = _profile_table(other)
    n_a, n_b = max(1, n_a), max(1, n_b)
    groups: dict[str, list[float]] = {}
    for key, tt in a.items():
        groups.setdefault(_profile_group(key[0], key[2]), [0.0, 0.0])[0] += tt / n_a * 1e6
    for key, tt in b.items():
        groups.setdefault(_profile_group(key[0], key[2]), [0.0, 0.0])[1] += tt / n_b * 1e6
    total_a = sum(g[0] for g in groups.values())
    total_b = sum(g[1] for g in groups.values())
    lines = [
        f"profiled own time, µs/request: {Path(base).name} ({n_a} requests) vs"
        f" {Path(other).name} ({n_b} requests)",
        f"{'component':<40}{'base':>9}{'other':>9}{'diff':>9}",
    ]
    for name, (x, y) in sorted(groups.items(), key=lambda kv: -(kv[1][1] - kv[1][0])):
        if abs(y - x) >= 0.5 or max(x, y) >= 5:
            lines.append(f"{name:<40}{x:>9.1f}{y:>9.1f}{y - x:>+9.1f}")
    lines.append(f"{'total':<40}{total_a:>9.1f}{total_b:>9.1f}{total_b - total_a:>+9.1f}")
    lines += ["", "functions, largest differences (µs/request, own time):"]
    keys = set(a) | set(b)
    diffs = sorted(((b.get(k, 0.0) / n_b - a.get(k, 0.0) / n_a) * 1e6, k) for k in keys)
    for d, (path, line, name) in sorted(diffs, key=lambda t: -abs(t[0]))[:top]:
        where = "~" if path == "~" else f"{'/'.join(Path(path).parts[-2:])}:{line}"
        lines.append(f"{d:>+9.1f}  {name}  ({where})")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib import metadata

    from . import _harness

    out: dict[str, str] = {"machine": json.dumps(_harness.machine())}
    for dist in (
        "fastapi",
        "starlette",
        "uvicorn",
        "h11",
        "aiohttp",
        "httpx",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-fastapi",
        "opentelemetry-instrumentation-aiohttp-server",
        "opentelemetry-instrumentation-aiohttp-client",
        "opentelemetry-instrumentation-httpx",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="per-request overhead of the web integrations")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--call", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--serve-ab", help=argparse.SUPPRESS)
    parser.add_argument("--load-ab", help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="*", choices=AB_NAMES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--method",
        choices=("process", "ab"),
        default="process",
        help="process: a server process per configuration and window; ab: a family's"
        " configurations in one server process, blocks of requests alternated",
    )
    parser.add_argument("--block", type=int, default=100, help="--method ab: requests per block")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default: 3; --method ab: 60)"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="pace the servers' load at this many requests/s in all (0: back to back)",
    )
    parser.add_argument(
        "--only", nargs="*", choices=CONFIGS + DIAGNOSTICS, help="configurations to run"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    parser.add_argument(
        "--profile-diff",
        nargs=2,
        metavar=("BASE", "OTHER"),
        help="compare two BENCH_WEB_PROFILE profiles per request and exit",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 60 if args.method == "ab" else 3
    if args.profile_diff:
        print(profile_diff(*args.profile_diff))
        return 0
    if args.serve:
        serve(args.serve, args.sink)
        return 0
    if args.load:
        load(args.load, args.concurrency, args.warmup, args.seconds, args.rate)
        return 0
    if args.call:
        call(args.call, args.target, args.sink, args.concurrency, args.warmup, args.seconds)
        return 0
    if args.serve_ab:
        serve_ab(args.serve_ab, tuple(args.names), args.sink)
        return 0
    if args.load_ab:
        load_ab(
            args.load_ab, tuple(args.names), args.concurrency, args.warmup, args.block, args.rounds
        )
        return 0
    if args.method == "ab":
        return main_ab(args)
    configs = tuple(args.only) if args.only else CONFIGS
    result = measure(
        configs, args.rounds, args.seconds, args.warmup, args.concurrency, rate=args.rate
    )
    text = table(result["summary"], result["rounds"])
    text += breakdown_text(result["breakdown_rounds"])
    for config, why in result["not_run"].items():
        text += f"\nnot run: {config}: {why}"
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "web.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "web.txt").write_text(text + "\n")
    return 0


def ab_families(only: list[str] | None) -> dict[str, tuple[str, ...]]:
    """The server configurations named (default: every family's bare, ours and otel), by
    family, for ``--method ab``; client configurations are not part of it."""
    wanted = only or [f"{f}-{n}" for f in ("fastapi", "aiohttp") for n in AB_NAMES[:3]]
    families: dict[str, list[str]] = {}
    for config in wanted:
        family, _, name = config.partition("-")
        if name in AB_NAMES and config in SERVERS + DIAGNOSTICS:
            families.setdefault(family, [])
            if name not in families[family]:
                families[family].append(name)
    for names in families.values():
        if "bare" not in names:
            names.insert(0, "bare")  # the added cost is against the same run's bare blocks
    return {f: tuple(n) for f, n in families.items()}


def main_ab(args: argparse.Namespace) -> int:
    """``--method ab``: measure, print the table, write ``results/web.ab.*``."""
    families = ab_families(args.only)
    if not families:
        log("--method ab: no server configuration among --only")
        return 2
    result = measure_ab(families, args.rounds, args.block, args.warmup, args.concurrency)
    text = f"method ab: blocks of {args.block} requests, {args.rounds} rounds of mirrored blocks\n"
    text += table(result["summary"], result["rounds"])
    for config, why in result["not_run"].items():
        text += f"\nnot run: {config}: {why}"
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "web.ab.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "web.ab.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
