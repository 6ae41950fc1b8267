"""What aiohttp alone can deliver to the benchmark sink: the ceiling of our sender.

``python -m benchmarks.http_ceiling [--requests N] [--events-per-request K]``

Posts one pre-built HiveBoard body of K events (the wire shape of an ``action_completed``
event, 334 bytes each) N times to the ``ok`` sink (:mod:`benchmarks.sink`, its own process
on 127.0.0.1) with an ``aiohttp.ClientSession``, 1, 4 (the SDK's default
``max_concurrent_requests``) and 8 requests at a time. No SDK, no encoding, no app: what is
left is aiohttp, the kernel and the sink. Prints events/s and the client's CPU per request
(process time, every thread), medians over 3 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import orjson
from yarl import URL

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
    body = (
        b'{"envelope":{"agent_id":"bench"},"events":['
        + b",".join([EVENT] * events_per_request)
        + b"]}"
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--events-per-request", type=int, default=100)
    args = parser.parse_args()
    print(f"aiohttp {aiohttp.__version__}, {args.events_per_request} events per request")
    print(f"{'concurrent':>10} {'events/s':>12} {'client CPU µs/request':>22}")
    for row in run(args.requests, args.events_per_request):
        print(
            f"{row['concurrency']:>10} {row['events_per_s']:>12,} "
            f"{row['client_cpu_us_per_request']:>22,}"
        )


if __name__ == "__main__":
    main()
