"""What aiohttp alone can deliver to the benchmark sink: the ceiling of our sender.

``python -m benchmarks.http_ceiling [--requests N] [--events-per-request K]``

Posts one pre-built HiveBoard body of K events (the wire shape of an ``action_completed``
event, 334 bytes each) N times to the ``ok`` sink (:mod:`benchmarks.sink`, its own process
on 127.0.0.1) with an ``aiohttp.ClientSession``, 1, 4 (the SDK's default
``max_concurrent_requests``) and 8 requests at a time. No SDK, no encoding, no app: what is
left is aiohttp, the kernel and the sink. Prints events/s and the client's CPU per request
(process time, every thread), medians over 3 rounds.

Then the SDK itself against the same sink with ``compression=None`` and ``"gzip"``
(``--sdk-events N``, rounds interleaved): events/s from the first record to the end of
``flush()``, process CPU per event (recording + sender, every thread; the recording is the
same in both, so the difference is the cost of gzip) and bytes per event on the wire.

Last (``--floor-rounds R``), what replacing aiohttp could save at most: one keep-alive
connection, the same body posted by ``aiohttp.ClientSession.post`` and by a minimal HTTP/1.1
exchange on asyncio streams (request head written by hand, ``Content-Length`` answers only:
no TLS, proxies, redirects, chunked bodies, timeouts or connection pool), alternated in
blocks; CPU of the posting thread per request, medians over the blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp
import orjson
from yarl import URL

import hiveloop_async as hl

from .sink import Sink

EVENT = orjson.dumps(
    {
        "event_id": "6f1c2d3e-4b5a-4c7d-8e9f-000000000001",
        "timestamp": "2026-12-05T08:00:00.000Z",
        "event_type": "action_completed",
        "severity": "info",
        "task_id": "task-1",
        "action_id": "6f1c2d3e-4b5a-4c7d-8e9f-000000000002",
        "status": "success",
        "duration_ms": 0,
        "payload": {"action_name": "step", "tool": "search", "rows": 1, "cached": False},
    }
)


def _body(events: int) -> bytes:
    """A HiveBoard batch body of ``events`` copies of :data:`EVENT`."""
    return b'{"envelope":{"agent_id":"bench"},"events":[' + b",".join([EVENT] * events) + b"]}"


async def _post_all(url: URL, body: bytes, requests: int, concurrency: int) -> tuple[float, float]:
    """Wall seconds and client CPU seconds for ``requests`` POSTs, ``concurrency`` at a time."""
    headers = {"Authorization": "Bearer hb_bench", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=body) as resp:
                    await resp.read()

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - wall0, time.process_time() - cpu0


def run(requests: int = 1500, events_per_request: int = 100) -> list[dict[str, int]]:
    """Return one row per concurrency: events/s and client CPU µs per request (medians)."""
    body = _body(events_per_request)
    rows = []
    with Sink("ok") as sink:
        url = URL(f"http://127.0.0.1:{sink.port}/v1/ingest")
        asyncio.run(_post_all(url, body, 50, 4))  # warm up
        for concurrency in (1, 4, 8):
            rates, cpus = [], []
            for _ in range(3):
                sink.reset()
                wall, cpu = asyncio.run(_post_all(url, body, requests, concurrency))
                counted = sink.counts().get("hiveboard_events", 0)
                if counted != requests * events_per_request:  # every event really arrived
                    raise RuntimeError(f"the sink counted {counted} events")
                rates.append(requests * events_per_request / wall)
                cpus.append(cpu / requests * 1e6)
            rows.append(
                {
                    "concurrency": concurrency,
                    "events_per_s": round(statistics.median(rates)),
                    "client_cpu_us_per_request": round(statistics.median(cpus)),
                }
            )
    return rows


def _sdk_round(port: int, compression: str | None, events: int) -> tuple[float, float]:
    """Wall and process CPU seconds for ``events`` tracked blocks, recorded then flushed."""
    hb = hl.HiveBoard(
        api_key="hb_bench_x",
        endpoint=f"http://127.0.0.1:{port}",
        compression=compression,  # type: ignore[arg-type]
        flush_interval=0.05,
        max_queue_size=events + 1000,
    )
    agent = hb.agent("bench-http", heartbeat_interval=0)
    blocks = events // 2  # one action_started + one action_completed each
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with agent.task("bench-task", project="bench", type="bench"):
            for i in range(blocks):
                with agent.track_context("step") as action:
                    action.set_payload({"tool": "search", "rows": i, "cached": False})
        result = hb.flush(timeout=60)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if result.timed_out or hb.stats()["dropped_total"]:
            raise RuntimeError(f"the SDK did not deliver everything: {hb.stats()}")
        return wall, cpu
    finally:
        hb.shutdown(timeout=5)


def run_compression(events: int = 40_000, rounds: int = 3) -> list[dict[str, Any]]:
    """One row per ``compression`` setting: events/s, CPU µs and wire bytes per event."""
    settings: list[str | None] = [None, "gzip"]
    walls: dict[str | None, list[float]] = {c: [] for c in settings}
    cpus: dict[str | None, list[float]] = {c: [] for c in settings}
    wire: dict[str | None, list[float]] = {c: [] for c in settings}
    raw: dict[str | None, list[float]] = {c: [] for c in settings}
    with Sink("ok") as sink:
        _sdk_round(sink.port, None, 2000)  # warm up
        for _ in range(rounds):
            for compression in settings:
                sink.reset()
                wall, cpu = _sdk_round(sink.port, compression, events)
                counts = sink.counts()
                n = counts.get("hiveboard_events", 0)
                if n < events:  # the agent's registration and the task come on top
                    raise RuntimeError(f"the sink counted {n} events of {events}")
                walls[compression].append(n / wall)
                cpus[compression].append(cpu / n * 1e6)
                wire[compression].append(counts.get("wire_bytes", 0) / n)
                raw[compression].append(counts.get("bytes", 0) / n)
    return [
        {
            "compression": c or "none",
            "events_per_s": round(statistics.median(walls[c])),
            "cpu_us_per_event": round(statistics.median(cpus[c]), 2),
            "wire_bytes_per_event": round(statistics.median(wire[c]), 1),
            "json_bytes_per_event": round(statistics.median(raw[c]), 1),
        }
        for c in settings
    ]


async def _floor(port: int, body: bytes, rounds: int, block: int) -> dict[str, list[float]]:
    """Thread CPU µs per POST of ``body``: aiohttp against a hand-written exchange."""
    url = URL(f"http://127.0.0.1:{port}/v1/ingest")
    headers = {"Authorization": "Bearer hb_bench", "Content-Type": "application/json"}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer hb_bench\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body

    async def minimal() -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 2"):
            raise RuntimeError(f"the sink answered {head[:40]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)

    times: dict[str, list[float]] = {"aiohttp": [], "minimal": []}
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), headers=headers
        ) as session:

            async def with_aiohttp() -> None:
                async with session.post(url, data=body) as resp:
                    await resp.read()

            ways = [("aiohttp", with_aiohttp), ("minimal", minimal)]
            for r in range(rounds + 1):
                for name, post in ways if r % 2 else ways[::-1]:
                    t0 = time.thread_time_ns()
                    for _ in range(block):
                        await post()
                    if r:  # round 0 warms both up
                        times[name].append((time.thread_time_ns() - t0) / block / 1000)
    finally:
        writer.close()
    return times


def run_floor(rounds: int = 12, block: int = 200, events_per_request: int = 25) -> dict[str, float]:
    """Median thread CPU µs per POST: ``aiohttp``, ``minimal`` and their ``ratio``."""
    body = _body(events_per_request)
    with Sink("ok") as sink:
        times = asyncio.run(_floor(sink.port, body, rounds, block))
        counted = sink.counts().get("hiveboard_events", 0)
        expected = 2 * (rounds + 1) * block * events_per_request
        if counted != expected:  # every POST of both ways really arrived
            raise RuntimeError(f"the sink counted {counted} events of {expected}")
    a, m = statistics.median(times["aiohttp"]), statistics.median(times["minimal"])
    return {"aiohttp": round(a, 1), "minimal": round(m, 1), "ratio": round(a / m, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--events-per-request", type=int, default=100)
    parser.add_argument("--sdk-events", type=int, default=40_000)
    parser.add_argument("--floor-rounds", type=int, default=12)
    args = parser.parse_args()
    print(f"aiohttp {aiohttp.__version__}, {args.events_per_request} events per request")
    print(f"{'concurrent':>10} {'events/s':>12} {'client CPU µs/request':>22}")
    for row in run(args.requests, args.events_per_request):
        print(
            f"{row['concurrency']:>10} {row['events_per_s']:>12,} "
            f"{row['client_cpu_us_per_request']:>22,}"
        )

    print()
    print(f"the SDK, {args.sdk_events:,} events (tracked blocks) per round, medians of 3")
    print(
        f"{'compression':>11} {'events/s':>10} {'CPU µs/event':>13} "
        f"{'wire B/event':>13} {'JSON B/event':>13}"
    )
    for r in run_compression(args.sdk_events):
        print(
            f"{r['compression']:>11} {r['events_per_s']:>10,} {r['cpu_us_per_event']:>13} "
            f"{r['wire_bytes_per_event']:>13} {r['json_bytes_per_event']:>13}"
        )

    print()
    floor = run_floor(args.floor_rounds)
    print(
        "one POST of 25 events, thread CPU µs (medians of alternated blocks of 200): "
        f"aiohttp {floor['aiohttp']}, minimal HTTP/1.1 on asyncio streams {floor['minimal']} "
        f"(aiohttp {floor['ratio']}x)"
    )


if __name__ == "__main__":
    main()
