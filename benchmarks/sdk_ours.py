"""hiveloop_async's side of every figure (runs in our virtual environment).

Each public function measures one figure and returns a JSON-ready dict; ``benchmarks.worker``
runs one per subprocess for ``benchmarks.run``, ``benchmarks.hot_path`` and the smoke test call
them in-process.

Shapes of a block (inside an open task, on a real client whose sender is live):

* ``with``: ``with agent.track_context("step") as ctx: ctx.set_payload({...3 keys})``;
* ``async with``: the same with ``async with`` (client run with ``async with HiveBoard``);
* ``sync decorator`` / ``async decorator``: a call of a function decorated with
  ``@agent.track("step")`` whose body only returns (there is no public way to reach the
  current action from inside a decorated function, so no ``set_payload`` there).

Sync shapes run with the sender on its private thread (a client never ``start()``-ed, as
from synchronous code); async shapes run with the sender on the application's loop.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import hiveloop_async as hl
from hiveloop_async import HiveBoard
from hiveloop_async._config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_QUEUE_SIZE

from . import _harness as h

API_KEY = "hb_bench"
ATimedLoop = Callable[[int, "array.array[int]", int], Awaitable[None]]

SYNC_SHAPES = ("with", "sync decorator")
ASYNC_SHAPES = ("async with", "async decorator")
SHAPES = ("with", "async with", "sync decorator", "async decorator")


def defaults() -> dict[str, Any]:
    return {
        "max_queue_size": DEFAULT_MAX_QUEUE_SIZE,
        "batch_size": DEFAULT_BATCH_SIZE,
        "version": hl.__version__,
    }


def client(endpoint: str, **kw: Any) -> HiveBoard:
    return HiveBoard(api_key=API_KEY, endpoint=endpoint, **kw)


# -- the shapes, timed per block and untimed -------------------------------------------------


def sync_timed(agent: hl.Agent, shape: str) -> h.TimedLoop:
    pc = time.perf_counter_ns
    if shape == "with":
        tc = agent.track_context

        def timed_with(n: int, out: array.array[int], off: int) -> None:
            for i in range(n):
                t0 = pc()
                with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})
                t1 = pc()
                out[off + i] = t1 - t0

        return timed_with

    @agent.track("step")
    def step() -> None:
        return None

    def timed_deco(n: int, out: array.array[int], off: int) -> None:
        for i in range(n):
            t0 = pc()
            step()
            t1 = pc()
            out[off + i] = t1 - t0

    return timed_deco


def sync_loop(agent: hl.Agent, shape: str) -> Callable[[int], None]:
    if shape == "with":
        tc = agent.track_context

        def loop_with(n: int) -> None:
            for i in range(n):
                with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})

        return loop_with

    @agent.track("step")
    def step() -> None:
        return None

    def loop_deco(n: int) -> None:
        for _ in range(n):
            step()

    return loop_deco


def async_timed(agent: hl.Agent, shape: str) -> ATimedLoop:
    pc = time.perf_counter_ns
    if shape == "async with":
        tc = agent.track_context

        async def timed_with(n: int, out: array.array[int], off: int) -> None:
            for i in range(n):
                t0 = pc()
                async with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})
                t1 = pc()
                out[off + i] = t1 - t0

        return timed_with

    @agent.track("step")
    async def step() -> None:
        return None

    async def timed_deco(n: int, out: array.array[int], off: int) -> None:
        for i in range(n):
            t0 = pc()
            await step()
            t1 = pc()
            out[off + i] = t1 - t0

    return timed_deco


def async_loop(agent: hl.Agent, shape: str) -> Callable[[int], Awaitable[None]]:
    if shape == "async with":
        tc = agent.track_context

        async def loop_with(n: int) -> None:
            for i in range(n):
                async with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})

        return loop_with

    @agent.track("step")
    async def step() -> None:
        return None

    async def loop_deco(n: int) -> None:
        for _ in range(n):
            await step()

    return loop_deco


# -- caller cost -----------------------------------------------------------------------------


def _sync_shape(
    endpoint: str,
    shape: str,
    n: int,
    overhead: float,
    drained: bool,
    size: int | None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-block figures and loop totals of one sync shape, gc on and off, fresh clients."""
    out: dict[str, Any] = {}
    for gc_on in (True, False):
        key = "gc_on" if gc_on else "gc_off"
        for per_block in (True, False):
            hb = client(endpoint, max_queue_size=size, **(options or {}))
            agent = hb.agent("bench", heartbeat_interval=0)

            def between(hb: HiveBoard = hb) -> None:
                hb.flush(30)

            with agent.task("bench-task"):
                if per_block:
                    timed = sync_timed(agent, shape)
                    timed(200, h.new_samples(200), 0)  # warm up; starts the sender thread
                    if drained:
                        hb.flush(30)
                    with h.gc_disabled() if not gc_on else contextlib.nullcontext():
                        gc.collect()
                        samples = h.per_block(
                            timed,
                            n,
                            burst=h.BURST if drained else None,
                            between=between if drained else None,
                        )
                    out[key] = h.summarize(samples, overhead)
                else:
                    loop = sync_loop(agent, shape)
                    loop(200)
                    if drained:
                        hb.flush(30)
                    total = 0.0
                    with h.gc_disabled() if not gc_on else contextlib.nullcontext():
                        gc.collect()
                        step = h.BURST if drained else n
                        done = 0
                        while done < n:
                            k = min(step, n - done)
                            total += h.loop_total(loop, k)
                            done += k
                            if drained:
                                hb.flush(30)
                    out["loop_us_" + key] = round(total * 1e6 / n, 3)
                    if gc_on:
                        stats = hb.stats()
                        out["stats"] = {k: stats[k] for k in ("recorded", "sent", "dropped_total")}
            hb.shutdown(30 if drained else 0.05)
            del hb, agent
            gc.collect()
    return out


def _async_shape(
    endpoint: str,
    shape: str,
    n: int,
    overhead: float,
    drained: bool,
    size: int | None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for gc_on in (True, False):
            key = "gc_on" if gc_on else "gc_off"
            for per_block in (True, False):
                hb = client(endpoint, max_queue_size=size, **(options or {}))
                await hb.start()
                agent = hb.agent("bench", heartbeat_interval=0)

                async def between(hb: HiveBoard = hb) -> None:
                    await hb.aflush(30)

                async with agent.task("bench-task"):
                    if per_block:
                        timed = async_timed(agent, shape)
                        await timed(200, h.new_samples(200), 0)
                        if drained:
                            await hb.aflush(30)
                        gc.collect()
                        if not gc_on:
                            gc.disable()
                        try:
                            samples = await h.aper_block(
                                timed,
                                n,
                                burst=h.BURST if drained else None,
                                between=between if drained else None,
                            )
                        finally:
                            gc.enable()
                        out[key] = h.summarize(samples, overhead)
                    else:
                        loop = async_loop(agent, shape)
                        await loop(200)
                        if drained:
                            await hb.aflush(30)
                        gc.collect()
                        if not gc_on:
                            gc.disable()
                        total = 0.0
                        try:
                            step = h.BURST if drained else n
                            done = 0
                            while done < n:
                                k = min(step, n - done)
                                t0 = time.perf_counter()
                                await loop(k)
                                total += time.perf_counter() - t0
                                done += k
                                if drained:
                                    await hb.aflush(30)
                        finally:
                            gc.enable()
                        out["loop_us_" + key] = round(total * 1e6 / n, 3)
                        if gc_on:
                            stats = hb.stats()
                            out["stats"] = {
                                k: stats[k] for k in ("recorded", "sent", "dropped_total")
                            }
                await hb.aclose(30 if drained else 0.05)
                del hb, agent
                gc.collect()
        return out

    return asyncio.run(main())


#: The queue size of the "full queue" variant: small enough to be full after a few blocks.
FULL_QUEUE_SIZE = 10_000


def caller_cost(
    endpoint: str,
    blocks: int,
    drained: bool = True,
    shapes: tuple[str, ...] = SHAPES,
    rounds: int | None = None,
    full_queue: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-block caller cost of each shape against the floor, all measured here.

    ``drained``: the sink answers and the sender drains after every burst of
    :data:`_harness.BURST` blocks (default queue); ``blocks`` are split into ``rounds``
    (default 3) that each measure the floor and every shape, merged by median. Otherwise
    ``endpoint`` refuses connections and the queue (sized to hold everything) grows by two
    records per block, in one round; with ``full_queue`` the queue holds 10,000 records
    instead, so it is full after the first 10,000 records and every record drops the oldest
    (the overflow path a user hits when the server has been down for a while).
    ``options``: more ``HiveBoard`` keyword arguments for every client measured.
    """
    rounds = rounds or (3 if drained else 1)
    if rounds > 1:
        per = max(1, blocks // rounds)
        merged = h.merge_rounds(
            [
                caller_cost(endpoint, per, drained, shapes, 1, full_queue, options)
                for _ in range(rounds)
            ]
        )
        merged["blocks"] = per * rounds
        merged["rounds"] = rounds
        return merged
    size = FULL_QUEUE_SIZE if full_queue else None if drained else 2 * blocks + 10_000
    floor = h.floor_figures(blocks, drained=drained)
    overhead = floor["timer_overhead_ns"]
    result: dict[str, Any] = {
        "sdk": "hiveloop_async",
        "drained": drained,
        "max_queue_size": size or DEFAULT_MAX_QUEUE_SIZE,
        "blocks": blocks,
        "floor": floor,
        "shapes": {},
        "defaults": defaults(),
    }
    for shape in shapes:
        if shape in SYNC_SHAPES:
            fig = _sync_shape(endpoint, shape, blocks, overhead, drained, size, options)
            fig["sender"] = "thread"
        else:
            fig = _async_shape(endpoint, shape, blocks, overhead, drained, size, options)
            fig["sender"] = "loop"
        result["shapes"][shape] = fig
    return result


#: The client options of :func:`caller_cost_features`, by name.
FEATURES = ("defaults", "off", "on")


def feature_options(features: str, spool_dir: str) -> dict[str, Any]:
    """``HiveBoard`` options for ``features``: ``"defaults"`` (none given: scrubbing on),
    ``"off"`` (every production-safety feature off: ``scrub=False``) or ``"on"`` (every one
    on: scrubbing, a ``before_send`` copying each event, a sampler deciding every root task,
    gzip bodies and a spool directory)."""
    if features == "defaults":
        return {}
    if features == "off":
        return {"scrub": False}
    if features == "on":
        return {
            "before_send": lambda event: {**event},
            "sampler": lambda info: True,  # decides every root task, keeps all: most work
            "compression": "gzip",
            "spool_dir": spool_dir,
        }
    raise ValueError(f"features must be one of {FEATURES}")


def caller_cost_features(
    endpoint: str, blocks: int, features: str = "defaults", rounds: int = 1
) -> dict[str, Any]:
    """:func:`caller_cost` (sink answering, drained) with the options of ``features``."""
    import tempfile

    with tempfile.TemporaryDirectory() as spool_dir:
        options = feature_options(features, spool_dir)
        result = caller_cost(endpoint, blocks, rounds=rounds, options=options)
    result["features"] = features
    result["options"] = sorted(options)
    result["sdk_file"] = hl.__file__  # which checkout's package was measured
    return result


# -- a 100,000-block burst -------------------------------------------------------------------


def burst(
    endpoint: str, blocks: int, queue: str = "default", mode: str = "thread"
) -> dict[str, Any]:
    """Record ``blocks`` blocks back to back, then shut down; count what reached the sink.

    ``queue``: ``default`` (the SDK's default max_queue_size) or ``big`` (holds the burst).
    ``mode``: ``thread`` (sync app, sender on its thread) or ``loop`` (``async with
    HiveBoard``, ``async with`` blocks, one ``await asyncio.sleep(0)`` per 100 blocks).
    """
    size = None if queue == "default" else 2 * blocks + 10_000
    before = h.sink_counts(endpoint)
    gc.collect()
    if mode == "thread":
        hb = client(endpoint, max_queue_size=size)
        agent = hb.agent("bench", heartbeat_interval=0)
        hb.flush(10)  # the sender is up before the clock starts
        loop = sync_loop(agent, "with")
        cpu0 = h.cpu_seconds()
        t0 = time.monotonic()
        with agent.task("burst"):
            loop(blocks)
        t_loop = time.monotonic()
        res = hb.shutdown(120)
        t_end = time.monotonic()
        cpu1 = h.cpu_seconds()
        stats: dict[str, Any] = dict(hb.stats())
    else:

        async def main() -> tuple[float, float, float, float, float, Any, dict[str, Any]]:
            hb = client(endpoint, max_queue_size=size)
            await hb.start()
            agent = hb.agent("bench", heartbeat_interval=0)
            await hb.aflush(10)
            tc = agent.track_context
            cpu0 = h.cpu_seconds()
            t0 = time.monotonic()
            async with agent.task("burst"):
                for i in range(blocks):
                    async with tc("step") as ctx:
                        ctx.set_payload({"tool": "search", "rows": i, "cached": False})
                    if i % 100 == 99:
                        await asyncio.sleep(0)
            t_loop = time.monotonic()
            res = await hb.aclose(120)
            t_end = time.monotonic()
            return cpu0, h.cpu_seconds(), t0, t_loop, t_end, res, dict(hb.stats())

        cpu0, cpu1, t0, t_loop, t_end, res, stats = asyncio.run(main())
    after = h.sink_counts(endpoint)
    delivered = h.delta(after, before, "type:action_started") + h.delta(
        after, before, "type:action_completed"
    )
    events = h.delta(after, before, "hiveboard_events")
    last_t = float(after.get("last_t", t_end))
    e2e = max(1e-9, min(t_end, last_t) - t0)
    return {
        "sdk": "hiveloop_async",
        "mode": mode,
        "queue": queue,
        "max_queue_size": size or DEFAULT_MAX_QUEUE_SIZE,
        "blocks": blocks,
        "expected_block_events": 2 * blocks,
        "delivered_block_events": delivered,
        "delivered_events": events,
        "share": round(delivered / (2 * blocks), 4),
        "loop_s": round(t_loop - t0, 4),
        "amortized_us": round((t_loop - t0) * 1e6 / blocks, 3),
        "cpu_us_per_block": round((cpu1 - cpu0) * 1e6 / blocks, 3),
        "e2e_s": round(e2e, 4),
        "shutdown_s": round(t_end - t_loop, 4),
        "events_per_s": round(events / e2e),
        "blocks_per_s": round(delivered / 2 / e2e),
        "dropped": stats["dropped"],
        "timed_out": res.timed_out,
    }


# -- memory while the server is down ---------------------------------------------------------


def memory(endpoint: str, blocks: int) -> dict[str, Any]:
    """Bytes per queued event while ``endpoint`` refuses connections (queue holds them all).

    RSS delta (no tracing) on a first client, then tracemalloc on a second one.
    """
    size = 2 * blocks + 10_000
    out: dict[str, Any] = {"sdk": "hiveloop_async", "blocks": blocks, "events": 2 * blocks}
    for method in ("rss", "tracemalloc"):
        hb = client(endpoint, max_queue_size=size)
        agent = hb.agent("bench", heartbeat_interval=0)
        loop = sync_loop(agent, "with")
        with agent.task("mem"):
            loop(600)  # the sender has taken its few in-flight batches
            time.sleep(0.3)
            gc.collect()
            if method == "tracemalloc":
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
            else:
                base = h.rss_bytes()
            loop(blocks)
            gc.collect()
            if method == "tracemalloc":
                used = tracemalloc.get_traced_memory()[0] - base
                tracemalloc.stop()
            else:
                used = h.rss_bytes() - base
        depth = hb.stats()["queue_depth"]
        out[method] = {
            "bytes": used,
            "per_event": round(used / (2 * blocks), 1),
            "per_block": round(used / blocks, 1),
            "queue_depth": depth,
        }
        hb.shutdown(0.2)
        del hb, agent, loop
        gc.collect()
    return out


# -- event-loop lag --------------------------------------------------------------------------


async def _ticker(stop: asyncio.Event, lags: list[float], period: float) -> None:
    pc = time.perf_counter
    while not stop.is_set():
        t = pc()
        await asyncio.sleep(period)
        lags.append(pc() - t - period)


async def _paced(rate_blocks: float, seconds: float, block: Callable[[int], None]) -> int:
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = 0
    while True:
        elapsed = loop.time() - start
        if elapsed >= seconds:
            return done
        target = int(elapsed * rate_blocks)
        while done < target:
            block(done)
            done += 1
        await asyncio.sleep(0.0005)


def _lag_summary(lags: list[float]) -> dict[str, float]:
    values = sorted(int(x * 1e9) for x in lags)
    return {
        "p50_ms": round(h.percentile(values, 50) / 1e6, 3),
        "p99_ms": round(h.percentile(values, 99) / 1e6, 3),
        "max_ms": round((values[-1] if values else 0) / 1e6, 3),
        "ticks": len(values),
    }


def loop_lag(endpoint: str, seconds: float = 3.0, events_per_s: int = 50_000) -> dict[str, Any]:
    """Loop lag (1 ms ticker) while the app records ``events_per_s`` on the same loop.

    Baseline: the same app doing the floor's work with no SDK. ``loop``: ``async with
    HiveBoard`` (sender on this loop). ``thread``: a client never started on the loop (its
    sender on its own thread, competing for the GIL).
    """
    rate = events_per_s / 2
    period = 0.001

    async def run(kind: str) -> dict[str, Any]:
        stop = asyncio.Event()
        lags: list[float] = []
        hb: HiveBoard | None = None
        if kind == "baseline":
            q: list[dict[str, int]] = []

            def block(i: int) -> None:
                h.floor_loop(1)
                if len(q) > 10_000:
                    q.clear()

            ticker = asyncio.ensure_future(_ticker(stop, lags, period))
            await asyncio.sleep(0.1)
            n = await _paced(rate, seconds, block)
        else:
            hb = client(endpoint)
            if kind == "loop":
                await hb.start()
            agent = hb.agent("bench", heartbeat_interval=0)
            tc = agent.track_context

            def block(i: int) -> None:
                with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})

            async with agent.task("lag"):
                block(0)
                await asyncio.sleep(0.1)
                ticker = asyncio.ensure_future(_ticker(stop, lags, period))
                await asyncio.sleep(0.1)
                n = await _paced(rate, seconds, block)
        stop.set()
        await ticker
        result: dict[str, Any] = {"blocks": n, "events_per_s": round(2 * n / seconds)}
        result.update(_lag_summary(lags))
        if hb is not None:
            if kind == "loop":
                res = await hb.aclose(30)
            else:
                res = await asyncio.to_thread(hb.shutdown, 30)
            stats = hb.stats()
            result["sent"] = stats["sent"]
            result["dropped_total"] = stats["dropped_total"]
            result["timed_out"] = res.timed_out
        return result

    out: dict[str, Any] = {"sdk": "hiveloop_async", "seconds": seconds, "target": events_per_s}
    for kind in ("baseline", "loop", "thread", "baseline_after"):
        gc.collect()
        out[kind] = asyncio.run(run(kind.split("_")[0]))
    # the quieter of the two baselines: noise elsewhere on the machine is not credited to us
    base = min(out["baseline"]["p99_ms"], out["baseline_after"]["p99_ms"])
    out["baseline_p99_ms"] = base
    out["added_p99_ms_loop"] = round(out["loop"]["p99_ms"] - base, 3)
    out["added_p99_ms_thread"] = round(out["thread"]["p99_ms"] - base, 3)
    return out


# -- shutdown against a server that never answers --------------------------------------------


def shutdown_never(endpoint: str, blocks: int = 1000, timeout: float = 2.0) -> dict[str, Any]:
    """How long ``shutdown(timeout)`` / ``aclose(timeout)`` take when requests hang."""
    out: dict[str, Any] = {"sdk": "hiveloop_async", "timeout": timeout}

    hb = client(endpoint)
    agent = hb.agent("bench", heartbeat_interval=0)
    loop = sync_loop(agent, "with")
    with agent.task("shutdown"):
        loop(blocks)
    time.sleep(0.3)  # batches are in flight, hanging
    t0 = time.monotonic()
    res = hb.shutdown(timeout)
    out["thread"] = {
        "seconds": round(time.monotonic() - t0, 3),
        "delivered": res.delivered,
        "dropped": res.dropped,
        "pending": res.pending,
        "timed_out": res.timed_out,
    }

    async def main() -> dict[str, Any]:
        hb = client(endpoint)
        await hb.start()
        agent = hb.agent("bench", heartbeat_interval=0)
        tc = agent.track_context
        async with agent.task("shutdown"):
            for i in range(blocks):
                async with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        res = await hb.aclose(timeout)
        return {
            "seconds": round(time.monotonic() - t0, 3),
            "delivered": res.delivered,
            "dropped": res.dropped,
            "pending": res.pending,
            "timed_out": res.timed_out,
        }

    out["loop"] = asyncio.run(main())
    alive = [t.name for t in threading.enumerate() if t.name.startswith("hiveloop_async")]
    out["sender_threads_left"] = alive
    return out


# -- the local server's ingest rate (someone else's module) ----------------------------------


def server_ingest(events: int) -> dict[str, Any]:
    """The local server's ingest rate: ``benchmarks.server_ingest.run(events)``."""
    from benchmarks.server_ingest import run

    result = run(events)
    return {"summary": f"{result['events_per_sec_median']:,.0f} events/s", **result}


# -- soak: RSS over time under overload ------------------------------------------------------


def soak(endpoint: str, minutes: float, every: float = 10.0) -> dict[str, Any]:
    """Record as fast as possible for ``minutes`` while ``endpoint`` refuses connections
    (default settings: the queue fills, then drops oldest); sample RSS every ``every`` s."""
    hb = client(endpoint)
    agent = hb.agent("bench", heartbeat_interval=0)
    loop = sync_loop(agent, "with")
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    end = t0 + minutes * 60
    blocks = 0
    next_sample = t0
    with agent.task("soak"):
        while True:
            now = time.monotonic()
            if now >= next_sample:
                st = hb.stats()
                samples.append(
                    {
                        "t": round(now - t0, 1),
                        "rss": h.rss_bytes(),
                        "blocks": blocks,
                        "dropped": st["dropped_total"],
                        "queue_depth": st["queue_depth"],
                    }
                )
                next_sample += every
            if now >= end:
                break
            loop(10_000)
            blocks += 10_000
    hb.shutdown(1.0)
    after_1min = [s["rss"] for s in samples if s["t"] >= 60] or [samples[-1]["rss"]]
    return {
        "sdk": "hiveloop_async",
        "minutes": minutes,
        "blocks": blocks,
        "samples": samples,
        "rss_growth_after_1min": max(after_1min) - after_1min[0],
    }
