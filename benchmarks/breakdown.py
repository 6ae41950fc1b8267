"""Where the time of a block and of an event goes (``python -m benchmarks.breakdown``).

Part 1, the caller: timeit-style loops (GC off, so the pieces add up) over the pieces of a
``with`` block and over the CPython primitives they are made of, plus the GC-tracked objects
and bytes a queued block holds.

Part 2, the sender: the cost per event of turning queued records into JSON (the encoder and
orjson, no network), then cProfile of a whole burst delivered to the sink in loop mode.
Uses the SDK's private modules read-only; nothing here changes the SDK.
"""

from __future__ import annotations

import asyncio
import contextvars
import cProfile
import gc
import io
import pstats
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiveloop_async as hl
from hiveloop_async import _serialize
from hiveloop_async._serialize import RecordEncoder, build_body

from . import _harness as h
from .sink import Sink

N = 200_000


def per_call_us(
    fn: Callable[[int], object],
    n: int = N // 10,
    repeat: int = 20,
    between: Callable[[], object] | None = None,
) -> float:
    """Best of ``repeat`` runs of ``fn(n)``, µs per iteration, GC off; ``between()`` (e.g.
    emptying the queue, so memory is reused rather than freshly faulted in) is not timed."""
    best = float("inf")
    with h.gc_disabled():
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(n)
            best = min(best, time.perf_counter() - t0)
            if between is not None:
                between()
    return best * 1e6 / n


_lean_var: contextvars.ContextVar[Any] = contextvars.ContextVar("lean", default=None)
_lean_q: deque[Any] = deque()


class _Lean:
    """A reference point, not a proposal: the least a pure-Python scope can do for a block.

    Parent from the ContextVar, set/reset by token (dropped at exit), two clock reads, two
    appends to a deque; no ids (the sender could assign them), no overflow check, no state
    machine, no error guards.
    """

    __slots__ = ("exc", "name", "parent", "payload", "t0", "t1", "token")

    token: contextvars.Token[Any] | None

    def __init__(self, name: str) -> None:
        self.name = name
        self.payload: Any = None

    def __enter__(self) -> _Lean:
        self.parent = _lean_var.get()
        self.token = _lean_var.set(self)
        self.t0 = time.monotonic_ns()
        _lean_q.append(self)
        return self

    def __exit__(self, et: Any, e: Any, tb: Any) -> None:
        self.t1 = time.monotonic_ns()
        self.exc = et
        if self.token is not None:
            _lean_var.reset(self.token)
        self.token = None
        _lean_q.append(self)

    def set_payload(self, payload: Any) -> None:
        self.payload = payload


def _lean_block_us() -> float:
    def lean(n: int) -> None:
        for i in range(n):
            with _Lean("step") as ctx:
                ctx.set_payload({"tool": "search", "rows": i, "cached": False})

    return per_call_us(lean, between=_lean_q.clear)


def caller(endpoint: str) -> dict[str, Any]:
    """The pieces of a ``with`` block, in µs, and what a queued block holds."""
    hb = hl.HiveBoard(api_key="hb_bench", endpoint=endpoint, max_queue_size=20 * N)
    agent = hb.agent("bench", heartbeat_interval=0)
    tc = agent.track_context
    out: dict[str, Any] = {}

    def empty(n: int) -> None:
        for _ in range(n):
            pass

    def create(n: int) -> None:
        for _ in range(n):
            tc("step")

    def enter_exit(n: int) -> None:
        for _ in range(n):
            with tc("step"):
                pass

    def full(n: int) -> None:
        for i in range(n):
            with tc("step") as ctx:
                ctx.set_payload({"tool": "search", "rows": i, "cached": False})

    def payload_only(n: int) -> None:
        for i in range(n):
            _ = {"tool": "search", "rows": i, "cached": False}

    out.update(_queued_block(hb, agent, full))

    def clear() -> None:  # a throwaway client: keep its queue from growing between runs
        hb._queue.discard_all("queue_full")

    with agent.task("breakdown"):
        loop = per_call_us(empty)
        t_create = per_call_us(create) - loop
        t_ee = per_call_us(enter_exit, between=clear) - loop
        t_full = per_call_us(full, between=clear) - loop
        t_payload = per_call_us(payload_only) - loop
        t_floor = per_call_us(h.floor_loop, between=h.floor_reset) - loop
    hb.shutdown(0.2)
    out["block_us"] = {
        "loop_overhead": round(loop, 3),
        "floor": round(t_floor, 3),
        "full_block": round(t_full, 3),
        "create (agent.track_context)": round(t_create, 3),
        "__enter__ + __exit__": round(t_ee - t_create, 3),
        "set_payload call": round(t_full - t_ee - t_payload, 3),
        "payload dict (user code)": round(t_payload, 3),
        "lean reference scope, full block (see _Lean)": round(_lean_block_us() - loop, 3),
    }

    # CPython primitives the SDK is made of
    cv: contextvars.ContextVar[object] = contextvars.ContextVar("x", default=None)
    obj = object()
    q: deque[object] = deque()
    getrandbits = random.getrandbits
    mono = time.monotonic_ns

    class Slots:
        __slots__ = ("a", "b", "c", "d", "e", "f")

        def __init__(self, a: object, b: object) -> None:
            self.a = a
            self.b = b
            self.c = None
            self.d = 0
            self.e = False

        def m(self) -> None:
            return None

    s = Slots(1, 2)

    def p_cv(n: int) -> None:
        for _ in range(n):
            cv.reset(cv.set(obj))

    def p_ids(n: int) -> None:
        for _ in range(n):
            getrandbits(128)

    def p_clock(n: int) -> None:
        for _ in range(n):
            mono()

    def p_new(n: int) -> None:
        for _ in range(n):
            Slots(1, 2)

    def p_method(n: int) -> None:
        for _ in range(n):
            s.m()

    def p_append(n: int) -> None:
        for _ in range(n):
            q.append(obj)
        q.clear()

    def p_with(n: int) -> None:
        for _ in range(n):
            with contextlib_null:
                pass

    import contextlib

    contextlib_null = contextlib.nullcontext()

    out["primitives_us"] = {
        "ContextVar set+reset": round(per_call_us(p_cv) - loop, 3),
        "random.getrandbits(128)": round(per_call_us(p_ids) - loop, 3),
        "time.monotonic_ns()": round(per_call_us(p_clock) - loop, 3),
        "new __slots__ object with __init__ (6 stores)": round(per_call_us(p_new) - loop, 3),
        "empty method call": round(per_call_us(p_method) - loop, 3),
        "deque.append": round(per_call_us(p_append) - loop, 3),
        "with on a C-level nullcontext (2 Python calls)": round(per_call_us(p_with) - loop, 3),
    }

    return out


def _queued_block(hb: hl.HiveBoard, agent: hl.Agent, full: Callable[[int], None]) -> dict[str, Any]:
    """GC-tracked objects and bytes that one queued block holds (the sender cannot drain)."""
    n = 50_000
    with agent.task("objects"):
        full(600)
        time.sleep(0.3)  # the sender took its few in-flight batches and is stuck retrying
        with h.gc_disabled():
            before = len(gc.get_objects())
            full(n)
            after = len(gc.get_objects())
        scope = hb._queue.records()[-1]
        sizes = {
            "ActionScope (getsizeof: fields + GC header)": sys.getsizeof(scope),
            "action_id (int object)": sys.getsizeof(scope.action_id),
            "t0, t1 (int objects)": sys.getsizeof(scope.t0) + sys.getsizeof(scope.t1),
            "contextvars.Token kept in _token": (
                sys.getsizeof(scope._token) if scope._token is not None else 0
            ),
            "payload dict (user's)": sys.getsizeof(scope.payload),
            "2 deque slots": 16,
        }
        hb._queue.discard_all("queue_full")
    return {
        "gc_tracked_objects_per_block": round((after - before) / n, 2),
        "bytes_per_block": sizes,
        "bytes_per_block_total": sum(sizes.values()),
    }


def sender(endpoint: str, blocks: int = 50_000) -> dict[str, Any]:
    """Cost per event of encoding, and a cProfile of a delivered burst (loop mode)."""
    out: dict[str, Any] = {}
    # Encoding only: records from a client that never sends.
    hb = hl.HiveBoard(api_key="hb_bench", endpoint=endpoint, max_queue_size=10 * blocks)
    agent = hb.agent("bench", heartbeat_interval=0)
    with agent.task("encode"):
        for i in range(200):
            with agent.track_context("step") as ctx:
                ctx.set_payload({"tool": "search", "rows": i, "cached": False})
        time.sleep(0.2)
        for i in range(blocks):
            with agent.track_context("step") as ctx:
                ctx.set_payload({"tool": "search", "rows": i, "cached": False})
    records = hb._queue.records()[-2 * blocks :]
    for r in records:
        r.opened = False
    enc = RecordEncoder()
    n = len(records)
    phase = [i % 2 == 1 for i in range(n)]  # started, completed, started, ...
    encode_phase = enc.encode_phase

    def wire(k: int) -> None:  # records to wire dicts, each dropped at once
        for r, ended in zip(records[:k], phase, strict=False):
            encode_phase(r, ended)

    # The encoder either returns wire dicts (then ``encode_event`` makes JSON) or JSON bytes.
    encode_event: Callable[[Any], tuple[bytes, bool]] | None = getattr(
        _serialize, "encode_event", None
    )

    def to_json(wired: Any) -> bytes:
        if isinstance(wired, bytes):
            return wired  # the encoder already wrote JSON: nothing left to do
        if encode_event is None:
            return bytes(wired)
        return encode_event(wired)[0]

    def wire_json(k: int) -> None:  # and each one to JSON while it is hot, as the sender does
        for r, ended in zip(records[:k], phase, strict=False):
            res = encode_phase(r, ended)
            if res is not None:
                to_json(res[1])

    enc_us = per_call_us(wire, n, repeat=3)
    dump_us = per_call_us(wire_json, n, repeat=3) - enc_us
    datas = []
    for r, ended in zip(records, phase, strict=False):
        res = encode_phase(r, ended)
        if res is not None:
            datas.append(to_json(res[1]))
    join_us = per_call_us(
        lambda k: [build_body(b"{}", datas[j : j + 100]) for j in range(0, k, 100)], n, repeat=3
    )
    hb.shutdown(0.2)
    out["scrub_us_per_event"] = scrub_paths()
    out["encode_us_per_event"] = {
        "record -> wire form (RecordEncoder)": round(enc_us, 3),
        "wire dict -> JSON (encode_event; 0 if the encoder made bytes)": round(dump_us, 3),
        "join into bodies of 100": round(join_us, 3),
        "bytes per event": round(sum(len(d) for d in datas) / n),
    }
    return out


def _scrub_records(n: int) -> dict[str, list[tuple[bool, Any]]]:
    """Records by kind, as (ended, record): a web request's task events, LLM calls, actions."""
    from hiveloop_async.testing import capture_events

    hb = hl.HiveBoard(api_key="hb_bench", enabled=False)
    agent = hb.agent("bench", heartbeat_interval=0)
    with capture_events() as cap:
        for i in range(n):
            with agent.task(f"0f8c1a2b3c4d5e6f7a8b9c0d{i:08x}", type="GET /items/{id}") as t:
                t.llm_call(
                    "chat",
                    "gpt-4o-mini",
                    tokens_in=120,
                    tokens_out=40,
                    cost=0.0012,
                    duration_ms=300,
                    prompt_preview="What is the capital of France? Answer in one word.",
                    response_preview="Paris",
                    metadata={"finish_reason": "stop", "ttft_ms": 80},
                )
                with agent.track_context("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})
                t.complete(payload={"method": "GET", "status_code": 200, "response_bytes": 17})
    hb.shutdown(0)
    kinds: dict[str, list[tuple[bool, Any]]] = {"task events": [], "llm_call": [], "actions": []}
    for ended, rec in cap._records:
        kind = "llm_call" if type(rec) is tuple else type(rec).__name__
        kinds[{"Task": "task events", "ActionScope": "actions"}.get(kind, kind)].append(
            (ended, rec)
        )
    return kinds


def scrub_paths(n: int = 2000, rounds: int = 9) -> dict[str, dict[str, float]]:
    """Encode + default scrubbing, µs per event, by record kind: decoding every event and
    scrubbing the dict (``Scrubber.scrub_encoded``, the sender's path before the verdicts)
    against the encoder's verdicts (``RecordEncoder.encode_checked``, decoding only events
    not found clean). Alternated round by round, thread CPU, GC off; medians."""
    from hiveloop_async._scrub import Scrubber

    out: dict[str, dict[str, float]] = {}
    checked = hasattr(RecordEncoder, "encode_checked")
    for kind, recs in _scrub_records(n).items():
        times: dict[str, list[float]] = {"decode": [], "verdict": []}
        old_scrub, new_scrub = Scrubber(), Scrubber()
        old_enc = RecordEncoder()
        new_enc: Any = RecordEncoder(new_scrub) if checked else None
        for _ in range(rounds):
            for path in ("decode", "verdict"):
                if path == "verdict" and new_enc is None:
                    continue
                for ended, rec in recs:  # the same records each round (task fields cached)
                    if type(rec) is not tuple:
                        rec.opened = ended
                with h.gc_disabled():
                    t0 = time.thread_time_ns()
                    if path == "decode":
                        for _, rec in recs:
                            res = old_enc.encode(rec)
                            assert res is not None
                            old_scrub.scrub_encoded(res[1])
                    else:
                        for _, rec in recs:
                            _, data, clean = new_enc.encode_checked(rec)
                            if clean:
                                new_scrub.count_clean()
                            else:
                                new_scrub.scrub_encoded(data)
                    times[path].append((time.thread_time_ns() - t0) / len(recs) / 1000)
        row = {path: round(statistics.median(v), 3) for path, v in times.items() if v}
        if "verdict" in row:
            row["ratio"] = round(row["verdict"] / row["decode"], 2)
        out[kind] = row
    return out


def burst_profile(endpoint: str, blocks: int = 50_000) -> dict[str, Any]:
    """cProfile of a burst recorded and delivered in loop mode (everything on one thread)."""
    batch = [100]

    async def main() -> float:
        async with hl.HiveBoard(
            api_key="hb_bench", endpoint=endpoint, max_queue_size=3 * blocks, batch_size=batch[0]
        ) as hb:
            agent = hb.agent("bench", heartbeat_interval=0)
            await hb.aflush(5)
            t0 = time.perf_counter()
            async with agent.task("burst"):
                for i in range(blocks):
                    async with agent.track_context("step") as ctx:
                        ctx.set_payload({"tool": "search", "rows": i, "cached": False})
                    if i % 100 == 99:
                        await asyncio.sleep(0)
            await hb.aflush(60)
            return time.perf_counter() - t0

    out: dict[str, Any] = {"blocks": blocks}
    # Without the profiler: delivery rate with the GC on, time spent in GC, and GC off.
    gc_time = [0.0, 0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - started[0]
            gc_time[1] += 1

    gc.collect()
    gc.callbacks.append(on_gc)
    try:
        took = asyncio.run(main())
    finally:
        gc.callbacks.remove(on_gc)
    out["gc_on"] = {
        "events_per_s": round(2 * blocks / took),
        "gc_seconds": round(gc_time[0], 3),
        "gc_share": round(gc_time[0] / took, 3),
        "collections": gc_time[1],
    }
    with h.gc_disabled():
        took = asyncio.run(main())
    out["gc_off"] = {"events_per_s": round(2 * blocks / took)}
    batch[0] = 500
    out["batch_500"] = {"events_per_s": round(2 * blocks / asyncio.run(main()))}
    batch[0] = 100
    prof = cProfile.Profile()
    prof.enable()
    took = asyncio.run(main())
    prof.disable()
    out["seconds_under_profiler"] = round(took, 2)
    out["top"] = _top(prof, 25)
    return out


def _top(prof: cProfile.Profile, n: int) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(n)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line.rstrip() for line in lines[start : start + n + 1])


def main() -> None:
    with Sink("ok") as ok, Sink("refuse") as refuse:
        c = caller(refuse.url)
        s = sender(refuse.url)
        b = burst_profile(ok.url)
    w = sys.stdout.write
    w("== caller: a `with` block, µs (timeit-style, GC off, loop overhead removed)\n")
    for k, v in c["block_us"].items():
        w(f"  {k:<48} {v:7.3f}\n")
    w("== CPython primitives, µs\n")
    for k, v in c["primitives_us"].items():
        w(f"  {k:<48} {v:7.3f}\n")
    w(f"== a queued block: {c['gc_tracked_objects_per_block']} GC-tracked objects, bytes:\n")
    for k, v in c["bytes_per_block"].items():
        w(f"  {k:<48} {v:7d}\n")
    w(f"  {'total':<48} {c['bytes_per_block_total']:7d}\n")
    w("== sender: µs per event, no network\n")
    for k, v in s["encode_us_per_event"].items():
        w(f"  {k:<48} {v}\n")
    w("== sender: encode + default scrubbing, µs per event (thread CPU, interleaved medians)\n")
    w("   decode: every event decoded and scrubbed; verdict: the encoder's verdicts first\n")
    for k, row in s["scrub_us_per_event"].items():
        cells = "  ".join(f"{p} {row[p]:6.2f}" for p in ("decode", "verdict") if p in row)
        ratio = f"  ratio {row['ratio']:.2f}" if "ratio" in row else ""
        w(f"  {k:<16} {cells}{ratio}\n")
    w(f"== a {b['blocks']:,}-block burst recorded and delivered in loop mode: ")
    w(f"{b['gc_on']['events_per_s']:,} events/s with the GC on ")
    w(f"({b['gc_on']['gc_seconds']} s in {b['gc_on']['collections']} collections, ")
    w(f"{100 * b['gc_on']['gc_share']:.0f}% of the time), ")
    w(f"{b['gc_off']['events_per_s']:,} events/s with the GC off; ")
    w(f"{b['batch_500']['events_per_s']:,} events/s with batch_size=500 (GC on)\n")
    w("== the same burst under cProfile ")
    w(f"({b['seconds_under_profiler']} s under the profiler)\n" + b["top"] + "\n")


if __name__ == "__main__":
    main()
