"""Thread-mode flush diagnostics: ``python -m benchmarks.flush_cost``.

For the thread-mode sender's figures (``make bench-llm``'s thread column: a flush per block
of calls). Two parts, each alternated round by round in one process:

**The sender thread's CPU per flush**, by events in the flush (2, 27, 100: a task with 0,
25, 98 ``llm_call`` events), scrubbing on and off: a real client against the local sink
(:mod:`benchmarks.sink`); the sender thread's own CPU clock is read around ``flush()``.
The 2-event row is the fixed cost of a flush (wake-up, dispatch, one POST, the answer); the
slope is the cost per event.

**What waking costs any thread here.** A worker thread runs one fixed piece of pure-Python
work, standing in for a drain (25 event dicts through orjson, a body joined and parsed
back, some arithmetic), timed on its own CPU clock:

``back-to-back``
    the worker is handed the next piece as soon as it finishes the last;
``after 25 ms idle``
    the process sleeps 25 ms first (nothing runs);
``after 25 ms busy``
    the main thread runs Python for 25 ms first (as a caller between two flushes does).

The same code on the same thread: any difference is what waking costs on this machine
(caches, frequency, the hypervisor), not anything the SDK does.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import orjson

import hiveloop_async as hl

from .sink import Sink

EVENT: dict[str, Any] = {
    "event_id": "0" * 32,
    "timestamp": "2026-12-07T20:00:00.000Z",
    "event_type": "custom",
    "payload": {
        "kind": "llm_call",
        "model": "gpt-4o",
        "tokens_in": 1200,
        "tokens_out": 180,
        "prompt_preview": "You are a support agent. " * 4,
    },
}
CONDITIONS = ("back-to-back", "after 25 ms idle", "after 25 ms busy")


def work() -> int:
    """The fixed piece of work (about 200 µs of CPU on this VM when warm)."""
    out = []
    for i in range(25):
        event = dict(EVENT)
        event["i"] = i
        out.append(orjson.dumps(event))
    parsed = orjson.loads(b"[" + b",".join(out) + b"]")
    total = len(parsed)
    for i in range(3000):
        total += i * i
    return total


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    scratch: dict[int, str] = {}
    while time.perf_counter() < end:
        for i in range(200):
            scratch[i] = str(i) * 3


def run(rounds: int = 300, pause: float = 0.025) -> dict[str, float]:
    """Median worker CPU (µs) per piece of work in each condition, alternated."""
    go, done = threading.Event(), threading.Event()
    took: list[int] = []
    stop = False

    def worker() -> None:
        while True:
            go.wait()
            go.clear()
            if stop:
                return
            t0 = time.thread_time_ns()
            work()
            took.append(time.thread_time_ns() - t0)
            done.set()

    thread = threading.Thread(target=worker, name="wake-worker", daemon=True)
    thread.start()
    samples: dict[str, list[float]] = {c: [] for c in CONDITIONS}

    def once() -> float:
        go.set()
        done.wait()
        done.clear()
        return took[-1] / 1000

    for _ in range(5):  # warm up
        once()
    for r in range(rounds):
        order = CONDITIONS if r % 2 == 0 else CONDITIONS[::-1]
        for condition in order:
            if condition == "back-to-back":
                once()  # the piece before runs right before: the worker is warm
            elif condition == "after 25 ms idle":
                time.sleep(pause)  # allowed-sleep: the idle spell is what is measured
            else:
                _busy(pause)
            samples[condition].append(once())
    stop = True
    go.set()
    thread.join(5)
    return {c: statistics.median(v) for c, v in samples.items()}


FLUSH_SIZES = (0, 25, 98)  # llm_call events per task: flushes of 2, 27 and 100 events


def _sender_thread_clock() -> int:
    for thread in threading.enumerate():
        if thread.name == "hiveloop_async.sender" and thread.ident is not None:
            return time.pthread_getcpuclockid(thread.ident)
    raise RuntimeError("no sender thread")


def _flush_of(hb: hl.HiveBoard, agent: hl.Agent, clock: int, n: int) -> float:
    """Record a task with ``n`` LLM calls, flush: the sender thread's CPU (µs) meanwhile."""
    with agent.task(f"t{time.monotonic_ns()}") as task:
        for _ in range(n):
            task.llm_call("chat", "gpt-4o", tokens_in=10, tokens_out=5, duration_ms=3)
    c0 = time.clock_gettime(clock)
    hb.flush(10)
    return (time.clock_gettime(clock) - c0) * 1e6


def flush_cost(rounds: int = 100) -> dict[str, dict[int, float]]:
    """Median sender-thread CPU (µs) per flush by events flushed, scrubbing on and off."""
    out: dict[str, dict[int, float]] = {}
    with Sink("ok") as sink:
        for label, scrub in (("scrub on", True), ("scrub off", False)):
            hb = hl.HiveBoard(api_key="hb_bench_x", endpoint=sink.url, scrub=scrub)
            agent = hb.agent("flush-cost", heartbeat_interval=0)
            try:
                agent.event("custom", {"kind": "warm-up"})
                hb.flush(10)
                clock = _sender_thread_clock()

                samples: dict[int, list[float]] = {n: [] for n in FLUSH_SIZES}
                for r in range(rounds):
                    for n in FLUSH_SIZES if r % 2 == 0 else FLUSH_SIZES[::-1]:
                        _flush_of(
                            hb, agent, clock, n
                        )  # the same flush just before: the thread is warm
                        samples[n].append(_flush_of(hb, agent, clock, n))
                if hb.stats()["dropped_total"]:
                    raise RuntimeError(f"events were dropped: {hb.stats()['dropped']}")
            finally:
                hb.shutdown(10)
            out[label] = {n + 2: statistics.median(v) for n, v in samples.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--flush-rounds", type=int, default=100)
    args = parser.parse_args()
    flushes = flush_cost(args.flush_rounds)
    print("sender thread CPU per flush, µs (medians; sizes alternated)")
    for label, by_size in flushes.items():
        sizes = sorted(by_size)
        slope = (by_size[sizes[-1]] - by_size[sizes[0]]) / (sizes[-1] - sizes[0])
        row = "  ".join(f"{n:>3} events {by_size[n]:7.1f}" for n in sizes)
        print(f"  {label:<10} {row}   per event {slope:5.2f}")
    result = run(args.rounds)
    warm = result["back-to-back"] or 1e-9
    print("a worker thread's CPU per fixed piece of work, µs (medians; conditions alternated)")
    for condition, value in result.items():
        print(f"  {condition:<20} {value:8.1f}   {value / warm:5.2f}×")


if __name__ == "__main__":
    main()
