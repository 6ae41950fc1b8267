"""Hundreds of agent tasks at once in an anyio task group, with nested actions.

Every task runs in its own child task of the task group, and each child starts with a copy
of the parent's context: the SDK's current task and current action live in ContextVars, so
concurrent tasks never see each other's actions, and blocks opened inside an action nest
under it. Recording never awaits or blocks; a single sender batches everything.

At the end the client's own accounting (``hb.stats()``) says how many events were sent
and how many were dropped (for example when the queue overflowed).

Run it against a local server::

    hiveloop-async serve                        # in another terminal
    python -m examples.concurrent_runner --tasks 300
"""

from __future__ import annotations

import argparse
import os
import random
import uuid
from typing import Any

import anyio

import hiveloop_async as hiveloop

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"


async def process_job(
    agent: hiveloop.Agent, job_id: str, limiter: anyio.CapacityLimiter, rng: random.Random
) -> None:
    """One task: fetch (with a nested parse), then store."""
    delays = [rng.uniform(0.005, 0.03) for _ in range(3)]
    # The limiter lets at most N jobs talk to the (pretend) backends at once.
    async with limiter, agent.task(job_id, project="batch-import", type="import_job") as task:
        async with agent.track_context("fetch") as fetch:
            await anyio.sleep(delays[0])
            async with agent.track_context("parse") as parse:  # a child of "fetch"
                await anyio.sleep(delays[1])
                parse.set_payload({"records": 25})
            fetch.set_payload({"source": f"s3://imports/{job_id}.json"})
        async with agent.track_context("store"):
            await anyio.sleep(delays[2])
        task.set_payload({"records": 25})


async def amain(
    endpoint: str,
    api_key: str = DEFAULT_API_KEY,
    *,
    tasks: int = 300,
    concurrency: int = 100,
    seed: int = 1,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run ``tasks`` tasks, ``concurrency`` at a time; return ``hb.stats()`` at the end."""
    run_id = uuid.uuid4().hex[:6]
    rng = random.Random(seed)
    async with hiveloop.HiveBoard(
        api_key=api_key, endpoint=endpoint, flush_interval=0.25, shutdown_timeout=10.0
    ) as hb:
        agent = hb.agent("import-worker", type="batch", framework="anyio")
        limiter = anyio.CapacityLimiter(concurrency)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(tasks):
                    tg.start_soon(process_job, agent, f"job-{run_id}-{i:04d}", limiter, rng)
        delivered = await hb.aflush(timeout=10.0)  # bounded wait for delivery
        stats = hb.stats()
    if verbose:
        print(
            f"concurrent_runner: {tasks} tasks, recorded {stats['recorded']} events, "
            f"sent {stats['sent']}, dropped {stats['dropped_total']}, "
            f"{stats['batches']} batches" + ("" if delivered else " (flush timed out)")
        )
    return dict(stats)


def main(
    endpoint: str, api_key: str = DEFAULT_API_KEY, *, tasks: int = 300, verbose: bool = True
) -> dict[str, Any]:
    """Synchronous entry point: run :func:`amain` with anyio (asyncio backend)."""
    result: dict[str, Any] = anyio.run(
        lambda: amain(endpoint, api_key, tasks=tasks, verbose=verbose)
    )
    return result


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and run the example."""
    parser = argparse.ArgumentParser(description="hundreds of concurrent agent tasks")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args(argv)
    stats = main(
        args.endpoint, os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY, tasks=args.tasks
    )
    return 0 if stats["dropped_total"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(cli())
