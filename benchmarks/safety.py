"""Costs of the production-safety parts, per event, on this machine: ``make bench-safety``.

* scrubbing (``_scrub.Scrubber``) of realistic wire events recorded through the public API,
  clean and with one event in ten carrying a secret, as dicts and as encoded bytes;
* a ``before_send`` that copies each event (shallow and deep), through ``_hooks.BeforeSend``;
* the disk spool (``_spool.Spool``): write (with fsync) and replay (claim + confirm) of
  100-event batches, in events per second;
* the real sender, per event: a thread-mode client records the same workload against the
  local sink (:mod:`benchmarks.sink`) and flushes, once per configuration (``scrub=False``,
  the defaults, ``before_send`` copying shallow and deep, ``sample_rate=0.5``, gzip, a spool
  directory while the server is up), the configurations alternated over rounds; the
  sender's CPU is the process CPU minus the recording thread's, medians per event sent;
* spool replay through the sender: batches spooled for the sink's URL are replayed by a new
  client at start, timed until the sink has counted every event (events per second).

Sender-side costs only: none of this runs on the recording path (``make bench-hot
--safety`` measures the recording path with these features on and off).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson

import hiveloop_async as hl
from hiveloop_async._hooks import BeforeSend
from hiveloop_async._scrub import Scrubber
from hiveloop_async._spool import Spool
from hiveloop_async.testing import capture_events

from .sink import Sink

SECRET = "sk-" + "proj-" + "A1b2C3d4E5f6G7h8J9k0" * 2


def record(agent: hl.Agent, tasks: int, first: int = 0) -> None:
    """Record ``tasks`` support tickets: task, 3 tool actions, 2 LLM calls each."""
    for i in range(first, first + tasks):
        with agent.task(f"ticket-{i}", project="support", type="triage") as task:
            for tool in ("lookup_customer", "search_orders", "draft_reply"):
                with agent.track_context(tool) as action:
                    action.set_payload(
                        {
                            "args": {"customer_id": f"c_{i}", "query": "where is my order"},
                            "result_preview": "Order 4521 shipped on Tuesday via UPS",
                        }
                    )
                task.llm_call(
                    "reason",
                    "gpt-4o",
                    tokens_in=1200,
                    tokens_out=180,
                    prompt_preview="You are a support agent. The customer writes: "
                    f"my order {i} has not arrived, can you check?",
                    response_preview="I checked the order and it shipped on Tuesday.",
                )


def workload(tasks: int) -> list[dict[str, Any]]:
    """Wire events of ``tasks`` support tickets (see :func:`record`)."""
    hb = hl.HiveBoard(api_key="hb_bench_x", enabled=False)
    agent = hb.agent("bench-safety", heartbeat_interval=0)
    with capture_events(hb) as captured:
        record(agent, tasks)
        events = captured.events
    hb.shutdown(timeout=0)
    return events


def with_secrets(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(events)
    for ev in out[::10]:
        payload = ev.setdefault("payload", {})
        payload["leak"] = {"api_key": SECRET, "note": f"Authorization: Bearer {SECRET}"}
    return out


def per_event(fn: Callable[[], object], n_events: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``n_events``), in µs per event."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n_events * 1e6


def bench_scrub(events: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, evs in (("clean", events), ("1 in 10 with a secret", with_secrets(events))):
        encoded = [orjson.dumps(e) for e in evs]
        scrubber = Scrubber()

        def run_bytes(scrubber: Scrubber = scrubber, encoded: list[bytes] = encoded) -> None:
            for data in encoded:
                scrubber.scrub_encoded(data)

        def run_dicts(scrubber: Scrubber = scrubber, evs: list[dict[str, Any]] = evs) -> None:
            for ev in evs:
                scrubber.scrub_event(dict(ev))

        def decode_encode(encoded: list[bytes] = encoded) -> None:
            for data in encoded:
                orjson.dumps(orjson.loads(data))

        out[f"scrub_encoded, {label}"] = per_event(run_bytes, len(encoded))
        out[f"scrub_event, {label}"] = per_event(run_dicts, len(evs))
        out[f"(reference: orjson loads+dumps, {label})"] = per_event(decode_encode, len(evs))
    return out


def bench_before_send(events: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    hooks: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "before_send returning the event": lambda e: e,
        "before_send shallow copy {**e}": lambda e: {**e},
        "before_send copy.deepcopy": copy.deepcopy,
    }

    async def measure() -> None:
        for label, fn in hooks.items():
            runner = BeforeSend(fn)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                await runner.apply(events)
                best = min(best, time.perf_counter() - start)
            out[label] = best / len(events) * 1e6

    anyio.run(measure)  # one loop for all: the hook runs inside the sender's loop
    return out


def bench_spool(events: list[dict[str, Any]], batches: int) -> dict[str, float]:
    encoded = [orjson.dumps(e) for e in events[:100]]
    body = b'{"envelope":{"agent_id":"bench-safety"},"events":[' + b",".join(encoded) + b"]}"
    n = len(encoded)
    with tempfile.TemporaryDirectory() as directory:
        spool = Spool(directory, max_bytes=1 << 40)
        start = time.perf_counter()
        for _ in range(batches):
            spool.write(body, "http://127.0.0.1:8766/v1/ingest", n)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        replayed = 0
        for batch in spool.replay():
            replayed += batch.events
            spool.confirm(batch)
        replay_s = time.perf_counter() - start
        spool.close()
    assert replayed == n * batches
    return {
        "batch bytes": float(len(body)),
        "spool write, events/s (fsync per batch)": n * batches / write_s,
        "spool write, batches/s": batches / write_s,
        "spool replay (claim + read + confirm), events/s": n * batches / replay_s,
    }


def sender_configs(spool_dir: str) -> dict[str, dict[str, Any]]:
    """The client options measured by :func:`bench_sender`, by label."""
    return {
        "scrub=False (every feature off)": {"scrub": False},
        "defaults (scrub on)": {},
        "before_send shallow copy {**e}": {"before_send": lambda e: {**e}},
        "before_send copy.deepcopy": {"before_send": copy.deepcopy},
        "sample_rate=0.5": {"sample_rate": 0.5},
        'compression="gzip"': {"compression": "gzip"},
        "spool_dir, server up": {"spool_dir": spool_dir},
    }


def _sender_cpu(url: str, tasks: int, options: dict[str, Any]) -> tuple[float, int]:
    """Sender CPU (s) and events handled for one client recording ``tasks`` tickets."""
    hb = hl.HiveBoard(
        api_key="hb_bench_x", endpoint=url, max_queue_size=tasks * 12 + 1000, **options
    )
    agent = hb.agent("bench-safety", heartbeat_interval=0)
    try:
        record(agent, 2, first=10**6)  # warm up: the sender thread is up, agent registered
        hb.flush(timeout=30)
        before = hb.stats()
        cpu0, thread0 = time.process_time(), time.thread_time()
        record(agent, tasks)
        hb.flush(timeout=120)
        cpu = (time.process_time() - cpu0) - (time.thread_time() - thread0)
        after = hb.stats()
    finally:
        hb.shutdown(timeout=30)
    handled = after["recorded"] - before["recorded"]
    lost = after["dropped_total"] - before["dropped_total"]
    lost -= after.get("dropped", {}).get("sampled_out", 0) - before.get("dropped", {}).get(
        "sampled_out", 0
    )
    if lost or after["queue_depth"]:
        raise RuntimeError(f"the sender lost events: {after}")
    return cpu, handled


def bench_sender(tasks: int, rounds: int) -> dict[str, float]:
    """Median sender CPU per event of each configuration, alternated over ``rounds``."""
    samples: dict[str, list[float]] = {}
    with Sink("ok") as sink, tempfile.TemporaryDirectory() as spool_dir:
        configs = sender_configs(spool_dir)
        order = list(configs)
        for r in range(rounds):
            for label in order if r % 2 == 0 else reversed(order):
                cpu, handled = _sender_cpu(sink.url, tasks, configs[label])
                samples.setdefault(label, []).append(cpu / handled * 1e6)
    return {label: statistics.median(values) for label, values in samples.items()}


def bench_replay(events: list[dict[str, Any]], batches: int) -> dict[str, float]:
    """Events/s a new client replays from its spool to the sink at start, end to end."""
    encoded = [orjson.dumps(e) for e in events[:100]]
    body = b'{"envelope":{"agent_id":"bench-safety"},"events":[' + b",".join(encoded) + b"]}"
    n = len(encoded)
    with Sink("ok") as sink, tempfile.TemporaryDirectory() as directory:
        spool = Spool(directory, max_bytes=1 << 40)
        for _ in range(batches):
            spool.write(body, f"{sink.url}/v1/ingest", n)
        spool.close()
        start = time.perf_counter()
        hb = hl.HiveBoard(api_key="hb_bench_x", endpoint=sink.url, spool_dir=directory)
        hb.agent("bench-replay", heartbeat_interval=0)  # starts the sender
        deadline = start + 120
        while sink.counts().get("hiveboard_events", 0) < n * batches:
            if time.perf_counter() > deadline:
                break
            time.sleep(0.005)  # polling the sink's counter
        elapsed = time.perf_counter() - start
        delivered = sink.counts().get("hiveboard_events", 0)
        stats = hb.stats()
        hb.shutdown(timeout=30)
    if delivered < n * batches:
        raise RuntimeError(f"replay delivered {delivered} of {n * batches}: {stats}")
    return {
        "replay to the sink at start, events/s": n * batches / elapsed,
        "replayed (stats)": float(stats.get("replayed", 0)),
    }


def run(
    tasks: int = 200, batches: int = 200, sender_tasks: int = 2000, rounds: int = 5
) -> dict[str, dict[str, float]]:
    events = workload(tasks)
    return {
        "scrub (µs per event)": bench_scrub(events),
        "before_send (µs per event)": bench_before_send(events),
        "spool": {**bench_spool(events, batches), **bench_replay(events, batches)},
        "sender CPU, thread mode, µs per event (medians)": bench_sender(sender_tasks, rounds),
        "events": {"count": float(len(events))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--sender-tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.tasks, args.batches, args.sender_tasks, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for section, figures in result.items():
        print(section)
        for name, value in figures.items():
            print(f"  {name:<55} {value:>12,.2f}")


if __name__ == "__main__":
    main()
