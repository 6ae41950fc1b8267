"""The optional C hot path (``hiveloop_async._speedups``) against the pure-Python one.

The scope-level test modules also run once more with ``HIVELOOP_ASYNC_PURE_PYTHON=1`` (see
the Makefile's ``unit`` target), so every behaviour they name is checked on both. Here: that
the extension is really in use, that both implementations record the same events for the
same program, and what only the C type can get wrong (references, the awaitable protocol,
errors raised inside the SDK).
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import pytest

import hiveloop_async
from hiveloop_async import Agent, HiveBoard, _accel, _internal, _track
from hiveloop_async._context import current_scope
from hiveloop_async.testing import EventCapture, capture_events

PURE = os.environ.get("HIVELOOP_ASYNC_PURE_PYTHON", "").strip() not in ("", "0")
needs_c = pytest.mark.skipif(PURE, reason="HIVELOOP_ASYNC_PURE_PYTHON is set")


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("speedups-agent")


def test_the_implementation_in_use_is_the_one_chosen() -> None:
    if PURE:
        assert _accel.speedups is None
        assert hiveloop_async.ActionScope is _track.PyActionScope
    else:
        # Built by `pip install -e .` (setup.py, optional); CI has a compiler, so a missing
        # extension there is a build failure, not a reason to test the fallback twice.
        assert _accel.speedups is not None, "hiveloop_async._speedups was not built"
        assert hiveloop_async.ActionScope is _accel.speedups.ActionScope
        assert hiveloop_async.ActionScope is not _track.PyActionScope


# -- the same program, both implementations ------------------------------------------------

SCENARIO = textwrap.dedent(
    """
    import asyncio, contextvars, json, sys, threading
    import hiveloop_async as hiveloop
    from hiveloop_async import _track
    from hiveloop_async.testing import capture_events

    hb = hiveloop.HiveBoard(api_key="hb_test_x", enabled=False)
    agent = hb.agent("parity", framework="custom")

    @agent.track("decorated")
    def decorated(x):
        with agent.track_context("inside-decorated") as s:
            s.set_payload({"x": x})
        return x

    @agent.track("gen")
    def gen(n):
        for i in range(n):
            with agent.track_context("gen-step"):
                yield i

    async def main():
        async with agent.task("t-async", project="p") as t:
            async with agent.track_context("a1") as a1:
                a1.set_payload({"k": [1, 2], "n": None})
                try:
                    async with agent.track_context("a2"):
                        raise KeyError("missing")
                except KeyError:
                    pass
            try:
                async with agent.track_context("cancelled"):
                    raise asyncio.CancelledError()
            except asyncio.CancelledError:
                pass

    with capture_events() as cap:
        with agent.task("t1", project="p", type="kind") as task:
            with agent.track_context("outer") as outer:
                outer.set_payload({"a": 1})
                with agent.track_context("inner") as inner:
                    inner.set_payload("not a dict")
                    agent.llm_call("llm", "model-x", tokens_in=3, tokens_out=4)
                    task.event("custom", {"kind": "note"})
            try:
                with agent.track_context("fails"):
                    raise ValueError("boom")
            except ValueError:
                pass
            decorated(7)
            list(gen(2))
            # manual enter/exit, out of order
            m1 = agent.track_context("m1")
            m2 = agent.track_context("m2")
            m1.__enter__()
            m2.__enter__()
            m1.__exit__(None, None, None)
            m2.__exit__(None, None, None)
            after = hiveloop.current_action_id()
            # closed from another thread than the one that entered it
            far = agent.track_context("far")
            far.__enter__()
            th = threading.Thread(target=far.__exit__, args=(None, None, None))
            th.start()
            th.join()
            # the task ends inside an open action
            with agent.track_context("outlives") as o:
                task.complete()
            after_task = hiveloop.current_task()
        asyncio.run(main())
        try:
            with agent.track_context("twice") as s:
                s.__enter__()
        except hiveloop.HiveLoopUsageError as e:
            usage = str(e)
        with agent.track_context("no-task"):
            pass

    ids = {}
    def norm(v):
        if isinstance(v, str) and len(v) == 36 and v.count("-") == 4:
            return ids.setdefault(v, f"id{len(ids)}")
        return v
    out = []
    for ev in cap.events:
        ev = {k: norm(v) for k, v in ev.items() if k not in ("timestamp", "duration_ms")}
        out.append(ev)
    print(json.dumps({
        "events": out,
        "after": after is None,
        "after_task": after_task is None,
        "usage": usage,
        "impl": "c" if _track.ActionScope is not _track.PyActionScope else "py",
    }, sort_keys=True, default=str))
    """
)


def _run_scenario(pure: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("HIVELOOP_ASYNC_PURE_PYTHON", None)
    if pure:
        env["HIVELOOP_ASYNC_PURE_PYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@needs_c
def test_c_and_python_scopes_record_the_same_events() -> None:
    c, py = _run_scenario(pure=False), _run_scenario(pure=True)
    assert (c.pop("impl"), py.pop("impl")) == ("c", "py")
    assert len(c["events"]) > 30
    assert c == py


# -- what only the C type can get wrong ----------------------------------------------------


def test_blocks_keep_no_references_to_what_they_recorded(agent: Agent, hb: HiveBoard) -> None:
    name = "".join(["leak", "check"])  # a fresh str object, not an interned constant
    payload = {"k": 1}
    refs_before = sys.getrefcount(name), sys.getrefcount(payload), sys.getrefcount(agent)
    with agent.task("leak-task"):
        for _ in range(1000):
            with agent.track_context(name) as s:
                s.set_payload(payload)
            try:
                with agent.track_context(name):
                    raise RuntimeError("x")
            except RuntimeError:
                pass
    del s
    hb._q.clear()
    gc.collect()
    assert (sys.getrefcount(name), sys.getrefcount(payload), sys.getrefcount(agent)) == (
        refs_before
    )


def test_a_scope_in_a_cycle_through_its_payload_is_collected(agent: Agent, hb: HiveBoard) -> None:
    # A closed scope leaves the cyclic GC only when its payload cannot refer back to it.
    name = "".join(["cycle", "check"])
    before = sys.getrefcount(name)
    with agent.track_context(name) as s:
        s.set_payload({"me": s, "plain": 1})
    del s
    hb._q.clear()
    gc.collect()
    assert sys.getrefcount(name) == before


def test_a_scope_is_not_awaitable_outside_async_with(agent: Agent) -> None:
    scope = agent.track_context("plain")

    async def await_it() -> Any:
        return await scope  # type: ignore[misc]

    coro = await_it()
    with pytest.raises(TypeError):
        coro.send(None)


async def test_async_with_binds_the_scope_and_returns_none_from_aexit(agent: Agent) -> None:
    scope = agent.track_context("s")
    async with scope as bound:
        assert bound is scope
        assert hiveloop_async.current_action_id() == scope.action_id_str
    # Already closed: a no-op whose result is falsy (a truthy one would swallow exceptions).
    assert await scope.__aexit__(None, None, None) is None  # type: ignore[func-returns-value]


async def test_async_with_under_a_tracer_gets_the_same_results(agent: Agent) -> None:
    # With a trace function CPython 3.11 steps awaitables with next(), not am_send.
    seen: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        seen.append(event)
        return tracer

    sys.settrace(tracer)
    try:
        async with agent.track_context("traced") as bound:
            inside = hiveloop_async.current_action_id()
        with pytest.raises(ValueError, match="kept"):
            async with agent.track_context("traced-fail"):
                raise ValueError("kept")
    finally:
        sys.settrace(None)
    assert seen
    assert isinstance(bound, hiveloop_async.ActionScope)
    assert inside == bound.action_id_str


@pytest.mark.allows_internal_errors
def test_an_error_inside_the_sdk_is_swallowed_and_reported(agent: Agent) -> None:
    swallowed: list[tuple[str, str]] = []
    _internal.error_hook = lambda exc, where: swallowed.append((where, str(exc)))

    class Broken:
        client = agent._client
        wake_at = 1_000

        @property
        def q(self) -> Any:
            raise RuntimeError("queue gone")

    real = agent._route
    agent._route = Broken()  # type: ignore[assignment]
    try:
        with agent.track_context("survives") as s:
            s.set_payload({"a": 1})
            inside = hiveloop_async.current_action_id()
        after = hiveloop_async.current_action_id()
    finally:
        agent._route = real
    assert inside is not None  # the block still became current
    assert after is None  # and was left
    assert swallowed == [("action enter", "queue gone"), ("action exit", "queue gone")]


def test_keyboard_interrupt_inside_the_sdk_is_not_swallowed(agent: Agent) -> None:
    class Interrupting:
        q: tuple[Any, ...] = ()
        wake_at = 0

        class client:  # the route's client attribute
            @staticmethod
            def _put_slow(rec: Any) -> None:
                raise KeyboardInterrupt

    real = agent._route
    agent._route = Interrupting()  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            agent.track_context("interrupted").__enter__()
    finally:
        agent._route = real


def test_a_scope_entered_twice_raises_usage_error(agent: Agent) -> None:
    with agent.track_context("once") as s, pytest.raises(hiveloop_async.HiveLoopUsageError):
        s.__enter__()


def test_track_context_takes_exactly_the_action_name(agent: Agent) -> None:
    assert agent.track_context(action_name="kw").name == "kw"
    with pytest.raises(TypeError):
        agent.track_context()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        agent.track_context("a", "b")  # type: ignore[call-arg]


def test_scope_attributes_before_and_after(agent: Agent, cap: EventCapture) -> None:
    s = agent.track_context("attrs")
    assert (repr(s), s.action_id_str, s.payload) == ("<ActionScope 'attrs' new>", None, None)
    with s:
        assert repr(s) == "<ActionScope 'attrs' open>"
        assert s.parent is None and s.task is None
    assert repr(s) == "<ActionScope 'attrs' closed>"
    assert s.exc_type is None
    assert s.t1 >= s.t0 > 0
    s.set_payload({"late": True})  # ignored once closed
    assert s.payload is None
    assert [e["event_type"] for e in cap.events] == ["action_started", "action_completed"]


@pytest.mark.allows_internal_errors
def test_a_scope_built_for_something_else_than_an_agent_records_nothing() -> None:
    swallowed: list[str] = []
    _internal.error_hook = lambda exc, where: swallowed.append(where)
    scope = hiveloop_async.ActionScope(object(), "stray")  # type: ignore[arg-type]
    with scope:
        assert hiveloop_async.current_action_id() == scope.action_id_str
    assert hiveloop_async.current_action_id() is None
    assert swallowed == ["action enter", "action exit"]


# -- the sender's encoder: C against Python, byte for byte ------------------------------------

NAMES = [
    "plain",
    'quo"te',
    "back\\slash",
    "ctl\x01\x1f\n\t\r\b\f",
    "é ✓ 𝄞",
    "del\x7f",
    "",
    "lone\udc80",
]
PAYLOADS: list[Any] = [
    None,
    {},
    {"tool": "search", "rows": 3, "cached": False},
    {"nested": {"a": [1, 2.5, None, True]}, "s": "x\ny"},
    {"summary": "s" * 600},
    {"action_name": "overridden"},
    {"function": "overridden"},
    {"when": datetime.datetime(2026, 1, 2, 3, 4, 5)},
    {1: "int key", None: "none key"},
    {"big": "x" * 9000},
    {"huge": "y" * 40000},
    "not a dict",
    [1, 2],
    {"bad": "\ud800"},
    {"nan": float("nan")},
]


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_the_c_encoder_writes_what_the_python_one_writes(agent: Agent, name: str) -> None:
    from hiveloop_async._serialize import RecordEncoder

    c_enc, py_enc = RecordEncoder(), RecordEncoder(accelerated=False)
    py_enc._offset = c_enc._offset
    records: list[tuple[bool, Any]] = []
    with capture_events() as cap, agent.task('task "quoted"', project="p\\q"):
        for i, payload in enumerate(PAYLOADS):
            scope = hiveloop_async.ActionScope(agent, name, None if i % 2 else f"mod.{name}")
            with scope:
                with agent.track_context("child") as child:
                    child.set_payload(payload)
                scope.set_payload(payload)
        records = list(cap._records)
    compared = 0
    for ended, rec in records:
        if type(rec) is not hiveloop_async.ActionScope:
            continue
        c_out, py_out = c_enc.encode_phase(rec, ended), py_enc.encode_phase(rec, ended)
        assert c_out is not None and py_out is not None
        c_ev, py_ev = json.loads(c_out[1]), json.loads(py_out[1])
        assert c_ev.pop("event_id") != py_ev.pop("event_id")  # each encoder draws its own
        assert c_ev == py_ev
        # Byte for byte apart from the event id (36 characters in both).
        assert len(c_out[1]) == len(py_out[1])
        compared += 1
    assert compared == 4 * len(PAYLOADS)


@needs_c
def test_the_c_encoder_leaves_failed_and_odd_scopes_to_python(agent: Agent) -> None:
    assert _accel.speedups is not None
    encode = _accel.speedups.encode_action
    with capture_events():
        failed = agent.track_context("failed")
        with pytest.raises(ValueError, match="x"), failed:
            raise ValueError("x")
        odd = hiveloop_async.ActionScope(agent, 42)  # type: ignore[arg-type]
        with odd:
            pass
        listed = agent.track_context("listed")
        with listed:
            listed.set_payload([1])  # type: ignore[arg-type]
        plain = agent.track_context("plain")
        with plain:
            plain.set_payload({"tool": "search", "rows": 3})
    # The common case is the C encoder's: it must not quietly hand everything to Python.
    assert encode(plain, False, 0, "p", "") is not None
    assert encode(plain, True, 0, "p", "") is not None
    assert encode(failed, False, 0, "p", "") is not None  # its start is a plain event
    assert encode(failed, True, 0, "p", "") is None
    assert encode(odd, True, 0, "p", "") is None
    assert encode(listed, True, 0, "p", "") is None
    with pytest.raises(TypeError):
        encode(object(), True, 0, "p", "")


def test_a_cycle_through_an_agent_callback_and_a_kept_scope_is_collected() -> None:
    # A client per job whose heartbeat callback is a method of a worker that keeps its last
    # scope: client -> agent -> callback -> worker -> scope -> agent. It must be freed.
    class Worker:
        last: Any = None

        def status(self) -> dict[str, Any]:
            return {"busy": self.last is not None}

    refs = []
    for _ in range(3):
        client = HiveBoard(api_key="hb_test_x", enabled=False)
        worker = Worker()
        agent = client.agent("job", heartbeat_interval=0, heartbeat_payload=worker.status)
        with agent.task("t"), agent.track_context("step") as scope:
            scope.set_payload({"n": 1})
        worker.last = scope
        client.shutdown(timeout=0)
        refs.append(weakref.ref(client))
        del client, worker, agent, scope
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


async def test_aenter_awaited_through_ensure_future(agent: Agent) -> None:
    # asyncio on 3.10/3.11 wraps a non-coroutine awaitable with `yield from`.
    scope = agent.track_context("wrapped")
    bound = await asyncio.ensure_future(scope.__aenter__())
    assert bound is scope
    await asyncio.gather(scope.__aexit__(None, None, None))
    assert repr(scope) == "<ActionScope 'wrapped' closed>"


@pytest.mark.allows_internal_errors
def test_an_entry_that_failed_early_records_no_closing_event(
    agent: Agent, cap: EventCapture
) -> None:
    class Foreign:
        @property
        def _state(self) -> int:
            raise RuntimeError("not a scope")

    token = current_scope.set(Foreign())
    try:
        with agent.track_context("early"):
            pass
    finally:
        current_scope.reset(token)
    assert cap.events == []
