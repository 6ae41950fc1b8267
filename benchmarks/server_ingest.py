"""Ingest throughput of the local server: ``python -m benchmarks.server_ingest [--events N]``.

Each run starts ``python -m hiveloop_async serve`` in a subprocess with a SQLite file in a
fresh temporary directory, then this (client) process posts the events in batches of 500
over a few concurrent aiohttp connections, exactly as an SDK would, and times from the
first request to the last answer. The batch bodies are built and serialised before the
clock starts, so the figure is the server's: decode, validate, deduplicate, store, commit.

Events are shaped like the SDK's (uuid ids, millisecond ``Z`` timestamps, task fields,
action ids, ``llm_call`` payloads, heartbeats); a run's events are all new to its server.
The result is the median events/s over the runs. ``--baseline [LABEL=]DIR`` also serves
another checkout (say a ``git worktree`` at an older commit) in the same session, round by
round with this one in a rotating order, and prints both medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson

__all__ = ["compare", "compare_table", "main", "make_batches", "run", "table"]

_ROOT = Path(__file__).resolve().parent.parent
_KEY = "hb_bench_local"


def make_batches(events: int, batch_size: int = 500, agents: int = 4) -> list[bytes]:
    """Serialised ``/v1/ingest`` bodies holding ``events`` new SDK-shaped events.

    One agent per batch (round robin over ``agents``), as the SDK groups batches by envelope.
    Every sixth event is a heartbeat; the others form tasks of task_started, action_started,
    an ``llm_call`` inside the action, action_completed and task_completed.
    """
    base = datetime.now(timezone.utc) - timedelta(hours=1)
    bodies: list[bytes] = []
    made = 0
    task = 0
    while made < events:
        size = min(batch_size, events - made)
        agent = f"bench-agent-{len(bodies) % agents}"
        envelope = {
            "agent_id": agent,
            "agent_type": "sales",
            "agent_version": "1.0",
            "framework": "custom",
            "runtime": "python-3.11",
            "sdk_version": "hiveloop-async-bench",
            "environment": "production",
            "group": "default",
        }
        batch: list[dict[str, Any]] = []
        while len(batch) < size:
            task += 1
            task_id = f"task-{uuid.uuid4().hex[:12]}"
            common = {
                "task_id": task_id,
                "project_id": "bench",
                "task_type": "lead",
                "task_run_id": str(uuid.uuid4()),
            }
            action_id = str(uuid.uuid4())

            def stamp(step: int, task: int = task) -> str:
                moment = base + timedelta(milliseconds=task * 7 + step)
                return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

            for event in (
                {
                    "event_type": "task_started",
                    **common,
                    "payload": {"summary": f"Task {task_id} started"},
                    "severity": "info",
                },
                {
                    "event_type": "action_started",
                    **common,
                    "action_id": action_id,
                    "payload": {"action_name": "crm_search", "function": "app.tools.crm_search"},
                    "severity": "info",
                },
                {
                    "event_type": "custom",
                    **common,
                    "action_id": action_id,
                    "payload": {
                        "kind": "llm_call",
                        "summary": "reason → claude-x (1200 in / 340 out, $0.0042)",
                        "data": {
                            "name": "reason",
                            "model": "claude-x",
                            "tokens_in": 1200,
                            "tokens_out": 340,
                            "cost": 0.0042,
                            "duration_ms": 812,
                        },
                        "tags": ["llm"],
                    },
                    "severity": "info",
                },
                {
                    "event_type": "action_completed",
                    **common,
                    "action_id": action_id,
                    "status": "success",
                    "duration_ms": 830,
                    "payload": {
                        "action_name": "crm_search",
                        "function": "app.tools.crm_search",
                        "result_preview": "{'name': 'Acme Corp', 'email': 'jane@acme.com'}",
                    },
                    "severity": "info",
                },
                {
                    "event_type": "task_completed",
                    **common,
                    "status": "success",
                    "duration_ms": 1210,
                    "payload": {"summary": f"Task {task_id} completed"},
                    "severity": "info",
                },
                {"event_type": "heartbeat", "severity": "debug"},
            ):
                if len(batch) == size:
                    break
                step = len(batch)
                batch.append({"event_id": str(uuid.uuid4()), "timestamp": stamp(step), **event})
        bodies.append(orjson.dumps({"envelope": envelope, "events": batch}))
        made += size
    return bodies


def _start_server(db_path: str, root: Path = _ROOT) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "hiveloop_async", "serve", "--port", "0", "--db", db_path]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE)
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None or not selector.select(remaining):
            process.kill()
            process.wait()
            raise RuntimeError(f"the server did not start: {line!r}")
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            continue
        line += chunk
    selector.close()
    text = line.decode()
    marker = "listening on "
    if marker not in text:
        process.kill()
        process.wait()
        raise RuntimeError(f"unexpected server banner: {text!r}")
    return process, text.split(marker, 1)[1].split()[0]


def _stop_server(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
    finally:
        if process.stdout is not None:
            process.stdout.close()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _post_all(
    url: str, bodies: list[bytes], concurrency: int, pid: int | None = None
) -> dict[str, Any]:
    pending = list(reversed(bodies))
    accepted = rejected = requests = 0
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal accepted, rejected, requests
            while pending:
                body = pending.pop()
                async with session.post(f"{url}/v1/ingest", data=body) as response:
                    answer = orjson.loads(await response.read())
                requests += 1
                statuses[response.status] = statuses.get(response.status, 0) + 1
                accepted += int(answer.get("accepted", 0))
                rejected += int(answer.get("rejected", 0))

        cpu_start = _cpu_seconds(pid) if pid is not None else None
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        cpu_end = _cpu_seconds(pid) if pid is not None else None
    server_cpu = None
    if cpu_start is not None and cpu_end is not None:
        server_cpu = cpu_end - cpu_start
    return {
        "server_cpu_seconds": server_cpu,
        "accepted": accepted,
        "rejected": rejected,
        "requests": requests,
        "statuses": statuses,
        "seconds": seconds,
    }


def run(
    events: int,
    *,
    runs: int = 3,
    concurrency: int = 4,
    batch_size: int = 500,
    root: Path = _ROOT,
) -> dict[str, Any]:
    """Measure the server's ingest rate; blocks until every run is done.

    :param events: events posted per run (each run gets a fresh server and database).
    :param runs: how many runs the median is taken over.
    :param concurrency: concurrent client connections.
    :param batch_size: events per request (the server accepts at most 500).
    :param root: the checkout whose ``hiveloop_async`` the server runs (this one by default).
    :return: ``{"events", "batch_size", "concurrency", "runs": [...],
        "events_per_sec_median", "requests", "rejected"}``; each run reports accepted,
        rejected, requests, HTTP statuses, seconds, events_per_sec and stored (the count the
        server holds afterwards, read back from its database file).
    :raises RuntimeError: if a server cannot be started.
    """
    results: list[dict[str, Any]] = []
    for _ in range(runs):
        bodies = make_batches(events, batch_size)
        with tempfile.TemporaryDirectory(prefix="hiveloop-bench-") as tmp:
            db_path = os.path.join(tmp, "events.db")
            process, url = _start_server(db_path, root)
            try:
                outcome = asyncio.run(_post_all(url, bodies, concurrency, process.pid))
            finally:
                _stop_server(process)
            conn = sqlite3.connect(db_path)
            try:
                outcome["stored"] = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            finally:
                conn.close()
        seconds = outcome["seconds"]
        outcome["events_per_sec"] = outcome["accepted"] / seconds if seconds > 0 else 0.0
        cpu = outcome["server_cpu_seconds"]
        accepted = outcome["accepted"]
        outcome["server_cpu_us_per_event"] = cpu * 1e6 / accepted if cpu and accepted else None
        results.append(outcome)
    return {
        "events": events,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "runs": results,
        "events_per_sec_median": statistics.median(r["events_per_sec"] for r in results),
        "server_cpu_us_per_event_median": _cpu_median(results),
        "requests": sum(r["requests"] for r in results),
        "rejected": sum(r["rejected"] for r in results),
    }


def _cpu_median(runs: list[dict[str, Any]]) -> float | None:
    values = [r["server_cpu_us_per_event"] for r in runs if r["server_cpu_us_per_event"]]
    return statistics.median(values) if values else None


def table(result: dict[str, Any]) -> str:
    """A small text table of :func:`run`'s result."""
    lines = [
        f"local server ingest: {result['events']:,} events per run, batches of "
        f"{result['batch_size']}, {result['concurrency']} connections, SQLite file (WAL)",
        f"{'run':>3}  {'events':>9}  {'requests':>8}  {'rejected':>8}  {'stored':>9}  "
        f"{'seconds':>7}  {'events/s':>9}",
    ]
    for number, outcome in enumerate(result["runs"], 1):
        lines.append(
            f"{number:>3}  {outcome['accepted']:>9,}  {outcome['requests']:>8,}  "
            f"{outcome['rejected']:>8,}  {outcome['stored']:>9,}  {outcome['seconds']:>7.2f}  "
            f"{outcome['events_per_sec']:>9,.0f}"
        )
    lines.append(f"median: {result['events_per_sec_median']:,.0f} events/s")
    cpu = result["server_cpu_us_per_event_median"]
    if cpu is not None:
        lines.append(f"server CPU (all its threads, while posting): {cpu:.1f} µs/event median")
    return "\n".join(lines)


def compare(
    events: int,
    roots: dict[str, Path],
    *,
    rounds: int = 3,
    concurrency: int = 4,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Measure several checkouts' servers round by round; blocks until every round is done.

    Each round runs every checkout once (a fresh server and database each), in a rotating
    order, so machine noise spreads over all of them; the first checkout is the reference.

    :param roots: label -> checkout directory (its ``hiveloop_async`` is the one served).
    :return: ``{"events", "rounds", "results": {label: run() result over its rounds},
        "ratios": {label: median / the first label's median}}``.
    :raises RuntimeError: if a server cannot be started.
    """
    labels = list(roots)
    per_label: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for number in range(rounds):
        shift = number % len(labels)
        for label in labels[shift:] + labels[:shift]:
            outcome = run(
                events,
                runs=1,
                concurrency=concurrency,
                batch_size=batch_size,
                root=roots[label],
            )
            per_label[label].extend(outcome["runs"])
    results: dict[str, Any] = {}
    for label in labels:
        runs = per_label[label]
        results[label] = {
            "events": events,
            "batch_size": batch_size,
            "concurrency": concurrency,
            "runs": runs,
            "events_per_sec_median": statistics.median(r["events_per_sec"] for r in runs),
            "server_cpu_us_per_event_median": _cpu_median(runs),
            "requests": sum(r["requests"] for r in runs),
            "rejected": sum(r["rejected"] for r in runs),
        }
    reference = results[labels[0]]["events_per_sec_median"]
    return {
        "events": events,
        "rounds": rounds,
        "results": results,
        "ratios": {
            label: (results[label]["events_per_sec_median"] / reference if reference else 0.0)
            for label in labels
        },
        "round_ratios": {
            label: statistics.median(
                run["events_per_sec"] / first["events_per_sec"]
                for run, first in zip(per_label[label], per_label[labels[0]], strict=True)
                if first["events_per_sec"]
            )
            for label in labels
        },
    }


def compare_table(result: dict[str, Any], roots: dict[str, Path]) -> str:
    """A side-by-side text table of :func:`compare`'s result."""
    labels = list(result["results"])
    lines = [
        f"local server ingest, {result['events']:,} events per run, {result['rounds']} "
        "interleaved rounds (fresh server + SQLite file each)",
        "ratio: of the medians; per round: median of each round's ratio to the first checkout; "
        "CPU: the server process's (all threads) while posting, per event",
        f"{'checkout':<10}  {'median':>9}  {'ratio':>6}  {'per round':>9}  {'CPU µs/ev':>9}  "
        "runs (events/s)",
    ]
    for label in labels:
        entry = result["results"][label]
        runs = ", ".join(f"{r['events_per_sec']:,.0f}" for r in entry["runs"])
        cpu = entry["server_cpu_us_per_event_median"]
        cpu_text = f"{cpu:.1f}" if cpu is not None else "-"
        lines.append(
            f"{label:<10}  {entry['events_per_sec_median']:>9,.0f}  "
            f"{result['ratios'][label]:>5.2f}x  {result['round_ratios'][label]:>8.2f}x  "
            f"{cpu_text:>9}  {runs}"
        )
    lines.extend(f"  {label}: {root}" for label, root in roots.items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the table and returns 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_ingest")
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--runs", type=int, default=5, help="runs (the median is reported)")
    parser.add_argument("--concurrency", type=int, default=4, help="client connections")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="another checkout (e.g. a git worktree at an older commit) measured in the same "
        "session, round by round with this one; may be repeated",
    )
    args = parser.parse_args(argv)
    if not args.baseline:
        print(table(run(args.events, runs=args.runs, concurrency=args.concurrency)))
        return 0
    roots: dict[str, Path] = {}
    for number, spec in enumerate(args.baseline, 1):
        label, _, directory = spec.rpartition("=")
        roots[label or f"baseline{number}"] = Path(directory).resolve()
    roots["this"] = _ROOT
    result = compare(args.events, roots, rounds=args.runs, concurrency=args.concurrency)
    print(compare_table(result, roots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
