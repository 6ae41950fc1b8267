"""The figures measured the same way for every peer SDK, through a small adapter.

Standard library only: this runs in the peers' virtual environment. An adapter
(``sdk_hiveloop``, ``sdk_otel``, ``sdk_sentry``) configures its SDK as its documentation
recommends for production, pointed at the sink, and provides the ``with`` block, a way to
wait for delivery, and a bounded shutdown.
"""

from __future__ import annotations

import array
import contextlib
import gc
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from . import _harness as h


class Adapter(Protocol):
    name: str
    #: wire items per block (2 events for HiveBoard, 1 span for OTel and Sentry)
    per_block: int
    #: sink counters whose sum is the number of block items delivered
    sink_keys: tuple[str, ...]

    def start(self, endpoint: str, capacity: int | None) -> None:
        """Configure the SDK; ``capacity``: resize its queue to hold that many items."""

    def defaults(self) -> dict[str, Any]:
        """The SDK's version and default queue/batch settings."""

    def task(self) -> contextlib.AbstractContextManager[Any]:
        """The open task (or root span / transaction) the blocks run in."""

    def timed(self) -> h.TimedLoop:
        """The ``with`` block, each one timed."""

    def loop(self) -> Callable[[int], None]:
        """The ``with`` block, untimed."""

    def between(self) -> None:
        """After a burst: whatever the SDK needs before its items can be delivered."""

    def pending(self) -> int:
        """Items waiting in the SDK's queue (best effort, private attributes)."""

    def shutdown(self, timeout: float) -> None:
        """Shut down as its documentation says, with ``timeout`` where it takes one."""


def _delivered(ad: Adapter, before: dict[str, Any], after: dict[str, Any]) -> int:
    return sum(h.delta(after, before, k) for k in ad.sink_keys)


def _wait_delivered(ad: Adapter, endpoint: str, before: dict[str, Any], expected: int) -> None:
    """Wait until the sink saw ``expected`` block items since ``before`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _delivered(ad, before, h.sink_counts(endpoint)) >= expected:
            return
        time.sleep(0.005)


def caller_cost(ad: Adapter, endpoint: str, blocks: int, rounds: int = 3) -> dict[str, Any]:
    """Per-block cost of the ``with`` block, sender live and drained after every burst;
    ``rounds`` rounds (floor, then the SDK) merged by median."""
    per = max(1, blocks // rounds)
    ad.start(endpoint, None)
    results = [_caller_round(ad, endpoint, per) for _ in range(rounds)]
    ad.shutdown(10)
    out = h.merge_rounds(results)
    out["blocks"] = per * rounds
    out["rounds"] = rounds
    return out


def _caller_round(ad: Adapter, endpoint: str, blocks: int) -> dict[str, Any]:
    floor = h.floor_figures(blocks)
    overhead = floor["timer_overhead_ns"]
    out: dict[str, Any] = {"sdk": ad.name, "blocks": blocks, "floor": floor}
    out["defaults"] = ad.defaults()
    shape: dict[str, Any] = {}
    recorded = 0
    base = h.sink_counts(endpoint)

    def between() -> None:
        ad.between()
        _wait_delivered(ad, endpoint, base, recorded * ad.per_block)

    with ad.task():
        sdk_timed = ad.timed()
        sdk_loop = ad.loop()

        def timed(n: int, out: array.array[int], off: int) -> None:
            nonlocal recorded
            recorded += n
            sdk_timed(n, out, off)

        def loop(n: int) -> None:
            nonlocal recorded
            recorded += n
            sdk_loop(n)

        timed(h.BURST, h.new_samples(h.BURST), 0)  # warm up
        between()
        for gc_on in (True, False):
            key = "gc_on" if gc_on else "gc_off"
            with contextlib.nullcontext() if gc_on else h.gc_disabled():
                gc.collect()
                samples = h.per_block(timed, blocks, between=between)
            shape[key] = h.summarize(samples, overhead)
        for gc_on in (True, False):
            key = "gc_on" if gc_on else "gc_off"
            with contextlib.nullcontext() if gc_on else h.gc_disabled():
                gc.collect()
                total = h.loop_total_bursts(loop, blocks, between=between)
            shape["loop_us_" + key] = round(total * 1e6 / blocks, 3)
    shape["delivered"] = _delivered(ad, base, h.sink_counts(endpoint))
    shape["recorded"] = recorded * ad.per_block
    out["shapes"] = {"with": shape}
    return out


def burst(ad: Adapter, endpoint: str, blocks: int, queue: str = "default") -> dict[str, Any]:
    """``blocks`` blocks back to back, then shutdown; what reached the sink, how fast."""
    capacity = None if queue == "default" else blocks * ad.per_block + 10_000
    before = h.sink_counts(endpoint)
    ad.start(endpoint, capacity)
    loop = ad.loop()
    gc.collect()
    cpu0 = h.cpu_seconds()
    t0 = time.monotonic()
    with ad.task():
        loop(blocks)
    t_loop = time.monotonic()
    ad.between()
    ad.shutdown(120)
    t_end = time.monotonic()
    cpu1 = h.cpu_seconds()
    after = h.sink_counts(endpoint)
    delivered = _delivered(ad, before, after)
    last_t = float(after.get("last_t", t_end))
    e2e = max(1e-9, min(t_end, last_t) - t0)
    expected = blocks * ad.per_block
    return {
        "sdk": ad.name,
        "queue": queue,
        "capacity": capacity,
        "defaults": ad.defaults(),
        "blocks": blocks,
        "expected_block_items": expected,
        "delivered_block_items": delivered,
        "share": round(delivered / expected, 4),
        "loop_s": round(t_loop - t0, 4),
        "amortized_us": round((t_loop - t0) * 1e6 / blocks, 3),
        "cpu_us_per_block": round((cpu1 - cpu0) * 1e6 / blocks, 3),
        "e2e_s": round(e2e, 4),
        "shutdown_s": round(t_end - t_loop, 4),
        "items_per_s": round(delivered / e2e),
        "blocks_per_s": round(delivered / ad.per_block / e2e),
    }


def memory(ad: Adapter, endpoint: str, blocks: int) -> dict[str, Any]:
    """Bytes per held item while ``endpoint`` refuses connections (tracemalloc)."""
    ad.start(endpoint, blocks * ad.per_block + 10_000)
    loop = ad.loop()
    out: dict[str, Any] = {"sdk": ad.name, "blocks": blocks, "items": blocks * ad.per_block}
    with ad.task():
        loop(600)
        time.sleep(0.3)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        loop(blocks)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out["pending"] = ad.pending()
    out["tracemalloc"] = {
        "bytes": used,
        "per_item": round(used / (blocks * ad.per_block), 1),
        "per_block": round(used / blocks, 1),
    }
    return out  # the worker ends the process with os._exit: no waiting for a dead server


@contextlib.contextmanager
def _watchdog(seconds: float, result: dict[str, Any]) -> Iterator[None]:
    """Past ``seconds``, print ``result`` and end the process (the call is still stuck)."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            h.emit(result)
            os._exit(0)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()


def shutdown_never(
    ad: Adapter, endpoint: str, blocks: int = 1000, timeout: float = 2.0, bound: float = 10.0
) -> dict[str, Any]:
    """How long shutdown takes when requests hang; past ``bound`` seconds, the process is
    ended and the figure is "> bound"."""
    ad.start(endpoint, None)
    loop = ad.loop()
    with ad.task():
        loop(blocks)
    time.sleep(0.3)  # its sender has batches in flight, hanging
    out: dict[str, Any] = {"sdk": ad.name, "timeout": timeout, "bound_s": bound}
    t0 = time.monotonic()
    with _watchdog(bound, {**out, "seconds": None, "killed_after_s": bound}):
        ad.shutdown(timeout)
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


FIGURES: dict[str, Callable[..., dict[str, Any]]] = {
    "caller_cost": caller_cost,
    "burst": burst,
    "memory": memory,
    "shutdown_never": shutdown_never,
}


def run_figure(ad: Adapter, figure: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    result = FIGURES[figure](ad, **kwargs)
    result["python"] = sys.version.split()[0]
    return result
