"""One configuration of ``make bench-llm`` in this process; the driver is :mod:`benchmarks.llm`.

``python -m benchmarks.llm_worker CONFIG JSON_KWARGS`` prints ``RESULT {json}`` on its last
line. CONFIG is one of :data:`CONFIGS`:

``bare``
    the OpenAI client as it is;
``ours``
    ``hiveloop_async.contrib.openai.instrument(client)``, the HiveBoard client exporting to
    the sink's ``/v1/ingest`` (thread mode for the sync client, ``async with`` on the loop
    for the async one);
``ours_nousage``
    the same with ``include_usage=False`` (no usage chunk asked for: what the peers ask);
``langfuse``
    Langfuse's drop-in ``from langfuse.openai import OpenAI, AsyncOpenAI``, exporting OTLP
    to the sink (``LANGFUSE_BASE_URL``, set by the driver);
``langsmith``
    ``langsmith.wrappers.wrap_openai(client)`` with ``LANGSMITH_TRACING=true``, exporting
    runs to the sink (``LANGSMITH_ENDPOINT``, set by the driver).

Cases (:data:`CASES`): ``plain``; ``stream`` (``chunks`` content chunks, the caller asks
for no usage: ours adds ``stream_options.include_usage`` unless ``ours_nousage``, the peers
do not); ``stream_usage`` (the same stream, the caller passes
``stream_options={"include_usage": True}`` itself: every configuration, the bare client
included, gets and parses the usage chunk, and every wrapper can read the stream's tokens).

For every mode (``sync``, ``async``) and case (``plain``, ``stream`` with ``chunks``
chunks): warm-up calls and a flush, then ``calls`` calls and the SDK's own flush inside
the measured window: the process CPU time of that window (every thread: the peers'
exporters run on background threads) and the wall time of each call. What reached the
sink is counted afterwards: for the wrappers, the items that stand for one call each
(HiveBoard ``llm_call`` events, Langfuse spans, LangSmith runs) must equal ``calls``.

Only the standard library, ``openai`` and the configuration's own SDK are imported.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import statistics
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from typing import Any

CONFIGS = ("bare", "ours", "ours_nousage", "langfuse", "langsmith")
#: The sink counter with one item per exported call, per configuration.
PER_CALL_KEY = {
    "ours": "hiveboard_llm_calls",
    "ours_nousage": "hiveboard_llm_calls",
    "langfuse": "langfuse_spans",
    "langsmith": "langsmith_posts",
}
MSGS: Any = [{"role": "user", "content": "hi"}]
CASES = ("plain", "stream", "stream_usage")
USAGE: Any = {"include_usage": True}


def sink_counts(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/count", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def _exported(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    keys = {k for k in after if not k.endswith("_t") and k != "bytes"}
    out = {k: _delta(after, before, k) for k in sorted(keys)}
    return {k: v for k, v in out.items() if v}


class Setup:
    """The client of one configuration and mode, and how to flush and close its SDK."""

    def __init__(self, config: str, mode: str, provider_url: str, sink_url: str) -> None:
        self.config = config
        self.mode = mode
        self.hb: Any = None
        self.flush: Callable[[], None] = lambda: None
        self.aflush: Callable[[], Any] | None = None
        self.close: Callable[[], None] = lambda: None
        kw: dict[str, Any] = {"api_key": "sk-bench", "base_url": provider_url, "max_retries": 0}
        is_async = mode == "async"
        if config == "bare":
            import openai

            self.client: Any = (openai.AsyncOpenAI if is_async else openai.OpenAI)(**kw)
        elif config in ("ours", "ours_nousage"):
            import openai

            from hiveloop_async import HiveBoard
            from hiveloop_async.contrib.openai import instrument

            self.hb = HiveBoard(api_key="hb_bench", endpoint=sink_url)
            self.client = instrument(
                (openai.AsyncOpenAI if is_async else openai.OpenAI)(**kw),
                include_usage=config == "ours",
            )
            hb = self.hb
            self.flush = lambda: _check_flush(hb.flush(timeout=30))
            self.close = lambda: None if hb.closed else hb.shutdown(timeout=10)
        elif config == "langfuse":
            from langfuse import get_client
            from langfuse.openai import AsyncOpenAI, OpenAI

            self.client = (AsyncOpenAI if is_async else OpenAI)(**kw)
            lf = get_client()
            self.flush = lf.flush
        elif config == "langsmith":
            import openai
            from langsmith import run_trees
            from langsmith.wrappers import wrap_openai

            self.client = wrap_openai((openai.AsyncOpenAI if is_async else openai.OpenAI)(**kw))
            ls = run_trees.get_cached_client()
            self.flush = ls.flush
        else:
            raise SystemExit(f"unknown configuration {config!r}")


def _check_flush(result: Any) -> None:
    if getattr(result, "timed_out", False):
        raise RuntimeError(f"flush timed out: {result!r}")


def _plain(c: Any) -> None:
    c.chat.completions.create(model="gpt-4o", messages=MSGS)


def _stream(c: Any, chunks: int, usage: bool = False) -> None:
    extra: dict[str, Any] = {"stream_options": USAGE} if usage else {}
    for _ in c.chat.completions.create(
        model="gpt-4o", messages=MSGS, stream=True, extra_body={"chunks": chunks}, **extra
    ):
        pass


async def _aplain(c: Any) -> None:
    await c.chat.completions.create(model="gpt-4o", messages=MSGS)


async def _astream(c: Any, chunks: int, usage: bool = False) -> None:
    extra: dict[str, Any] = {"stream_options": USAGE} if usage else {}
    async for _ in await c.chat.completions.create(
        model="gpt-4o", messages=MSGS, stream=True, extra_body={"chunks": chunks}, **extra
    ):
        pass


def _sync_call(c: Any, case: str, chunks: int) -> Callable[[], None]:
    """One call of ``case`` on client ``c``."""
    if case == "plain":
        return lambda: _plain(c)
    usage = _usage_of(case)
    return lambda: _stream(c, chunks, usage)


async def _async_call(c: Any, case: str, chunks: int) -> None:
    if case == "plain":
        await _aplain(c)
    else:
        await _astream(c, chunks, _usage_of(case))


def _usage_of(case: str) -> bool:
    if case not in CASES:
        raise SystemExit(f"unknown case {case!r}")
    return case == "stream_usage"


def _figures(
    config: str,
    calls: int,
    walls: list[float],
    cpu: float,
    wall_total: float,
    flush_s: float,
    exported: dict[str, int],
) -> dict[str, Any]:
    key = PER_CALL_KEY.get(config)
    per_call = exported.get(key, 0) if key else 0
    return {
        "calls": calls,
        "cpu_us_per_call": round(cpu * 1e6 / calls, 2),
        "wall_median_us": round(statistics.median(walls) * 1e6, 2),
        "wall_us_per_call": round(wall_total * 1e6 / calls, 2),
        "flush_ms": round(flush_s * 1e3, 2),
        "exported": exported,
        "per_call_key": key,
        "per_call_items": per_call,
        "verified": key is None or per_call == calls,
    }


def _wait_for(sink_url: str, before: dict[str, Any], config: str, want: int) -> dict[str, Any]:
    """The sink's counters once it holds ``want`` per-call items since ``before`` (10 s)."""
    key = PER_CALL_KEY.get(config)
    deadline = time.monotonic() + 10
    while True:
        now = sink_counts(sink_url)
        if key is None or _delta(now, before, key) >= want or time.monotonic() > deadline:
            return now
        time.sleep(0.01)


def run_sync(
    s: Setup, sink_url: str, case: str, calls: int, warm: int, chunks: int
) -> dict[str, Any]:
    c = s.client
    call = _sync_call(c, case, chunks)
    task = s.hb.agent("bench-llm").task(f"bench-{case}") if s.hb is not None else None
    if task is not None:
        task.__enter__()
    try:
        before_warm = sink_counts(sink_url)
        for _ in range(warm):
            call()
        s.flush()
        _wait_for(sink_url, before_warm, s.config, warm)
        before = sink_counts(sink_url)
        walls: list[float] = []
        pc = time.perf_counter
        gc.collect()
        cpu0 = time.process_time()
        t0 = pc()
        for _ in range(calls):
            a = pc()
            call()
            walls.append(pc() - a)
        f0 = pc()
        s.flush()
        t1 = pc()
        cpu1 = time.process_time()
    finally:
        if task is not None:
            task.__exit__(None, None, None)
    after = _wait_for(sink_url, before, s.config, calls)
    return _figures(s.config, calls, walls, cpu1 - cpu0, t1 - t0, t1 - f0, _exported(before, after))


async def run_async(
    s: Setup, sink_url: str, case: str, calls: int, warm: int, chunks: int
) -> dict[str, Any]:
    c = s.client

    async def call() -> None:
        await _async_call(c, case, chunks)

    async def flush() -> None:
        if s.hb is not None:
            _check_flush(await s.hb.aflush(timeout=30))
        else:
            s.flush()  # Langfuse's and LangSmith's flush block: there is no async one

    task = s.hb.agent("bench-llm").task(f"bench-{case}") if s.hb is not None else None
    if task is not None:
        await task.__aenter__()
    try:
        before_warm = sink_counts(sink_url)
        for _ in range(warm):
            await call()
        await flush()
        _wait_for(sink_url, before_warm, s.config, warm)
        before = sink_counts(sink_url)
        walls: list[float] = []
        pc = time.perf_counter
        gc.collect()
        cpu0 = time.process_time()
        t0 = pc()
        for _ in range(calls):
            a = pc()
            await call()
            walls.append(pc() - a)
        f0 = pc()
        await flush()
        t1 = pc()
        cpu1 = time.process_time()
    finally:
        if task is not None:
            await task.__aexit__(None, None, None)
    after = _wait_for(sink_url, before, s.config, calls)
    return _figures(s.config, calls, walls, cpu1 - cpu0, t1 - t0, t1 - f0, _exported(before, after))


def run(
    config: str,
    provider_url: str,
    sink_url: str,
    calls: int,
    warm: int = 20,
    chunks: int = 50,
    modes: tuple[str, ...] = ("sync", "async"),
    cases: tuple[str, ...] = CASES,
) -> dict[str, Any]:
    """Every mode and case of ``config``: ``{"sync/plain": figures, ...}``."""
    out: dict[str, Any] = {"config": config, "python": sys.version.split()[0]}
    for mode in modes:
        if mode == "sync":
            s = Setup(config, mode, provider_url, sink_url)
            for case in cases:
                out[f"{mode}/{case}"] = run_sync(s, sink_url, case, calls, warm, chunks)
            s.close()
            s.client.close()
        else:

            async def main(mode: str = mode) -> None:
                s = Setup(config, mode, provider_url, sink_url)
                if s.hb is not None:
                    await s.hb.start()
                try:
                    for case in cases:
                        out[f"{mode}/{case}"] = await run_async(
                            s, sink_url, case, calls, warm, chunks
                        )
                finally:
                    if s.hb is not None:
                        await s.hb.aclose()
                    await s.client.close()

            asyncio.run(main())
    out["versions"] = versions(config)
    return out


# -- the A/B method: bare and wrapped calls alternated block by block in one process ------------


class Toggle:
    """Switches the calls of this process between the bare client and the wrapped one.

    Ours and LangSmith's wrap one client instance: the bare client is a second instance,
    nothing to switch. Langfuse's drop-in patches the ``openai`` classes at import (every
    client of the process is traced): :meth:`bare` puts the original class attributes back
    (``create``/``parse`` of the resources it wraps, ``Stream.__iter__``,
    ``AsyncStream.__aiter__``), :meth:`wrapped` its versions again. Switching happens
    between blocks, outside the measured windows.
    """

    def __init__(self) -> None:
        self.swaps: list[tuple[type, str, Any, Any]] = []  # (class, name, original, patched)

    def bare(self) -> None:
        for cls, name, original, _ in self.swaps:
            setattr(cls, name, original)

    def wrapped(self) -> None:
        for cls, name, _, patched in self.swaps:
            setattr(cls, name, patched)


def langfuse_toggle() -> Toggle:
    """Import Langfuse's drop-in and return the switch between its patches and the originals."""
    import importlib

    import openai

    streams = [(openai.Stream, "__iter__"), (openai.AsyncStream, "__aiter__")]
    before = {(cls, name): cls.__dict__[name] for cls, name in streams}
    import langfuse.openai as lo

    toggle = Toggle()
    for (cls, name), original in before.items():
        patched = cls.__dict__[name]
        if patched is not original:
            toggle.swaps.append((cls, name, original, patched))
    for d in lo.OPENAI_METHODS_V1:
        try:
            cls = getattr(importlib.import_module(d.module), d.object)
        except (ImportError, AttributeError):
            continue
        patched = cls.__dict__.get(d.method)
        original = getattr(patched, "__wrapped__", None)
        if original is not None:
            toggle.swaps.append((cls, d.method, original, patched))
    if not toggle.swaps:
        raise RuntimeError("langfuse.openai patched nothing this benchmark can switch off")
    return toggle


#: What :meth:`Clocks.read` returns.
Reading = tuple[int, dict[int, tuple[str, int]], int, int]


class Clocks:
    """CPU clocks of this process: the calling thread, every other thread, the process."""

    def __init__(self) -> None:
        self.me = threading.get_ident()

    def read(self) -> Reading:
        """(calling thread ns, {ident: (name, ns)} of the other live threads, process ns,
        wall ns)."""
        caller = time.thread_time_ns()
        others: dict[int, tuple[str, int]] = {}
        for t in threading.enumerate():
            ident = t.ident
            if ident is None or ident == self.me:
                continue
            try:
                ns = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
            except OSError:  # it ended meanwhile
                continue
            others[ident] = (t.name, ns)
        return caller, others, time.process_time_ns(), time.perf_counter_ns()


def _block_cpu(a: Reading, b: Reading) -> dict[str, Any]:
    """The CPU of one block from the clocks read before (``a``) and after (``b``) it: the
    calling thread, the other threads (a thread born inside the block counts from 0), by
    thread name, and the process."""
    by_name: dict[str, int] = {}
    for ident, (name, ns) in b[1].items():
        d = ns - a[1].get(ident, (name, 0))[1]
        if d:
            key = _thread_kind(name)
            by_name[key] = by_name.get(key, 0) + d
    return {
        "caller": b[0] - a[0],
        "threads": sum(by_name.values()),
        "by_thread": by_name,
        "process": b[2] - a[2],
        "wall": b[3] - a[3],
    }


def _thread_kind(name: str) -> str:
    """A thread name without its serial number (``Thread-3 (run)`` -> ``Thread (run)``)."""
    return re.sub(r"[-_ ]?\d+", "", name) or name


def run_ab(
    config: str,
    provider_url: str,
    sink_url: str,
    calls: int,
    block: int = 25,
    warm: int = 2,
    chunks: int = 50,
    modes: tuple[str, ...] = ("sync", "async"),
    cases: tuple[str, ...] = CASES,
) -> dict[str, Any]:
    """``config`` (``ours``, ``langfuse``, ``langsmith``) against the bare client in this
    process, per mode and case: ``calls`` wrapped calls and as many bare ones, in blocks of
    ``block`` calls alternated A B B A (after ``warm`` pairs of warm-up blocks). A wrapped
    block ends with the SDK's own flush, inside its window, so that all the exporting work
    for its calls (on the SDK's threads, or on the loop for ours in async mode) falls in it.

    Returns ``{"sync/plain": {"pairs": [...], "exported": ..., "verified": ...}, ...}``: per
    pair of adjacent blocks, the CPU of each (:func:`_block_cpu`).
    """
    out: dict[str, Any] = {"config": config, "python": sys.version.split()[0], "block": block}
    toggle = langfuse_toggle() if config == "langfuse" else Toggle()
    pairs = max(1, calls // block)
    for mode in modes:
        if mode == "sync":
            bare = Setup("bare", mode, provider_url, sink_url)
            s = Setup(config, mode, provider_url, sink_url)
            for case in cases:
                out[f"{mode}/{case}"] = _ab_sync(
                    s, bare, toggle, sink_url, case, pairs, block, warm, chunks
                )
            s.close()
            s.client.close()
            bare.client.close()
        else:

            async def main(mode: str = mode) -> None:
                bare = Setup("bare", mode, provider_url, sink_url)
                s = Setup(config, mode, provider_url, sink_url)
                if s.hb is not None:
                    await s.hb.start()
                try:
                    for case in cases:
                        out[f"{mode}/{case}"] = await _ab_async(
                            s, bare, toggle, sink_url, case, pairs, block, warm, chunks
                        )
                finally:
                    if s.hb is not None:
                        await s.hb.aclose()
                    await s.client.close()
                    await bare.client.close()

            asyncio.run(main())
    toggle.wrapped()
    out["versions"] = versions(config)
    return out


def _ab_result(
    s: Setup, sink_url: str, before: dict[str, Any], made: int, pairs: list[Any]
) -> dict[str, Any]:
    after = _wait_for(sink_url, before, s.config, made)
    exported = _exported(before, after)
    key = PER_CALL_KEY[s.config]
    return {
        "pairs": pairs,
        "wrapped_calls": made,
        "exported": exported,
        "per_call_key": key,
        "per_call_items": exported.get(key, 0),
        "verified": exported.get(key, 0) == made,
    }


def _ab_sync(
    s: Setup,
    bare: Setup,
    toggle: Toggle,
    sink_url: str,
    case: str,
    pairs: int,
    block: int,
    warm: int,
    chunks: int,
) -> dict[str, Any]:
    clocks = Clocks()
    rng = range(block)
    calls = {
        "bare": _sync_call(bare.client, case, chunks),
        "wrapped": _sync_call(s.client, case, chunks),
    }

    def run_block(which: str) -> dict[str, Any]:
        (toggle.bare if which == "bare" else toggle.wrapped)()
        call = calls[which]
        a = clocks.read()
        for _ in rng:
            call()
        if which == "wrapped":
            s.flush()
        return _block_cpu(a, clocks.read())

    task = s.hb.agent("bench-llm").task(f"ab-{case}") if s.hb is not None else None
    if task is not None:
        task.__enter__()
    before = sink_counts(sink_url)
    out: list[Any] = []
    try:
        for j in range(warm + pairs):
            if j == warm:
                gc.collect()
            order = ("bare", "wrapped") if j % 2 == 0 else ("wrapped", "bare")
            got = {w: run_block(w) for w in order}
            if j >= warm:
                out.append(got)
    finally:
        if task is not None:
            task.__exit__(None, None, None)
    return _ab_result(s, sink_url, before, (warm + pairs) * block, out)


async def _ab_async(
    s: Setup,
    bare: Setup,
    toggle: Toggle,
    sink_url: str,
    case: str,
    pairs: int,
    block: int,
    warm: int,
    chunks: int,
) -> dict[str, Any]:
    clocks = Clocks()
    rng = range(block)
    clients = {"bare": bare.client, "wrapped": s.client}

    async def run_block(which: str) -> dict[str, Any]:
        (toggle.bare if which == "bare" else toggle.wrapped)()
        c = clients[which]
        a = clocks.read()
        for _ in rng:
            await _async_call(c, case, chunks)
        if which == "wrapped":
            if s.hb is not None:
                _check_flush(await s.hb.aflush(timeout=30))
            else:
                s.flush()  # Langfuse's and LangSmith's flush block: there is no async one
        return _block_cpu(a, clocks.read())

    task = s.hb.agent("bench-llm").task(f"ab-{case}") if s.hb is not None else None
    if task is not None:
        await task.__aenter__()
    before = sink_counts(sink_url)
    out: list[Any] = []
    try:
        for j in range(warm + pairs):
            if j == warm:
                gc.collect()
            order = ("bare", "wrapped") if j % 2 == 0 else ("wrapped", "bare")
            got = {}
            for w in order:
                got[w] = await run_block(w)
            if j >= warm:
                out.append(got)
    finally:
        if task is not None:
            await task.__aexit__(None, None, None)
    return _ab_result(s, sink_url, before, (warm + pairs) * block, out)


def versions(config: str) -> dict[str, str]:
    from importlib import metadata

    names = {"bare": ["openai"], "ours": ["openai"], "langfuse": ["openai", "langfuse"]}
    names["langsmith"] = ["openai", "langsmith"]
    out = {}
    for n in names.get(config, []):
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "?"
    return out


def main(argv: list[str]) -> None:
    config = argv[0]
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    for k in ("modes", "cases"):
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k])
    method = kwargs.pop("method", "process")
    code = 0
    try:
        result = run_ab(config, **kwargs) if method == "ab" else run(config, **kwargs)
        print("RESULT " + json.dumps(result))
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no exporter's exit hook runs outside the measurement


if __name__ == "__main__":
    main(sys.argv[1:])
