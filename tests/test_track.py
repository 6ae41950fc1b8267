"""Tracked actions: the four shapes (sync/async decorator, ``with``/``async with``) and misuse."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest

import hiveloop_async
from hiveloop_async import ActionScope, Agent, HiveBoard, HiveLoopUsageError
from hiveloop_async.testing import EventCapture

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

SHAPES = ["sync_decorator", "async_decorator", "with", "async_with"]
SYNC_SHAPES = {"sync_decorator", "with"}

_T = TypeVar("_T")

Body = Callable[[ActionScope | None], Coroutine[Any, Any, None]]


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("track-agent", type="tester")


def _drive(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that must not suspend (a sync shape's body) to completion."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the body of a sync shape suspended")


async def _nothing(ctx: ActionScope | None) -> None:
    return None


async def run_shape(shape: str, agent: Agent, name: str, body: Body = _nothing) -> str | None:
    """Run ``body`` inside an action ``name`` of the given shape; return the expected
    ``function`` payload value for decorator shapes (None for context managers)."""
    if shape == "with":
        with agent.track_context(name) as ctx:
            _drive(body(ctx))
        return None
    if shape == "async_with":
        async with agent.track_context(name) as actx:
            await anyio.lowlevel.checkpoint()
            await body(actx)
            await anyio.lowlevel.checkpoint()
        return None
    if shape == "sync_decorator":

        @agent.track(name)
        def tracked() -> None:
            _drive(body(None))

        tracked()
        return f"{tracked.__module__}.{tracked.__qualname__}"

    @agent.track(name)
    async def atracked() -> None:
        await anyio.lowlevel.checkpoint()
        await body(None)
        await anyio.lowlevel.checkpoint()

    await atracked()
    return f"{atracked.__module__}.{atracked.__qualname__}"


def _base_payload(name: str, function: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"action_name": name}
    if function is not None:
        payload["function"] = function
    return payload


def _strip_volatile(ev: dict[str, Any]) -> dict[str, Any]:
    """Check the format of the random fields and drop them."""
    out = dict(ev)
    assert UUID4.match(out.pop("event_id"))
    assert TIMESTAMP.match(out.pop("timestamp"))
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("shape", SHAPES)
async def test_success_records_started_and_completed(
    shape: str, agent: Agent, cap: EventCapture
) -> None:
    """A clean exit records action_started then action_completed with the task's fields."""
    seen_ids: list[str | None] = []

    async def body(ctx: ActionScope | None) -> None:
        seen_ids.append(hiveloop_async.current_action_id())

    with agent.task("t-1", project="proj", type="lead", correlation_id="corr") as task:
        function = await run_shape(shape, agent, "do_work", body)
    started, completed = cap.of_type("action_started", "action_completed", "action_failed")
    action_id = started["action_id"]
    assert UUID4.match(action_id)
    assert seen_ids == [action_id]
    task_fields = {
        "task_id": "t-1",
        "project_id": "proj",
        "task_type": "lead",
        "task_run_id": task.task_run_id,
        "correlation_id": "corr",
    }
    assert _strip_volatile(started) == {
        "event_type": "action_started",
        "severity": "info",
        **task_fields,
        "action_id": action_id,
        "payload": _base_payload("do_work", function),
    }
    duration = completed.pop("duration_ms")
    assert type(duration) is int
    assert duration >= 0
    assert _strip_volatile(completed) == {
        "event_type": "action_completed",
        "severity": "info",
        **task_fields,
        "action_id": action_id,
        "status": "success",
        "payload": _base_payload("do_work", function),
    }
    assert hiveloop_async.current_action_id() is None


@pytest.mark.anyio
@pytest.mark.parametrize("shape", SHAPES)
async def test_exception_records_failure_and_propagates_same_object(
    shape: str, agent: Agent, cap: EventCapture
) -> None:
    """An exception gives action_failed with its type and message and is re-raised as is."""
    error = ValueError("CRM API timeout after 5000ms")

    async def body(ctx: ActionScope | None) -> None:
        raise error

    with pytest.raises(ValueError, match="CRM API timeout") as excinfo:
        await run_shape(shape, agent, "crm_search", body)
    assert excinfo.value is error
    started, failed = cap.events
    assert failed["event_type"] == "action_failed"
    assert failed["severity"] == "error"
    assert failed["status"] == "failure"
    assert failed["action_id"] == started["action_id"]
    assert type(failed["duration_ms"]) is int
    assert "parent_action_id" not in failed
    assert failed["payload"]["exception_type"] == "ValueError"
    assert failed["payload"]["exception_message"] == "CRM API timeout after 5000ms"
    assert failed["payload"]["action_name"] == "crm_search"
    assert "cancelled" not in failed["payload"]
    assert hiveloop_async.current_action_id() is None


@pytest.mark.anyio
@pytest.mark.parametrize("shape", SHAPES)
async def test_cancellation_records_failure_with_cancelled_flag(
    shape: str, agent: Agent, cap: EventCapture
) -> None:
    """A cancelled action gives action_failed with ``cancelled: true``; the same error goes on."""
    inner: list[BaseException] = []
    outer: list[BaseException] = []
    entered = anyio.Event()
    never = anyio.Event()

    async def body(ctx: ActionScope | None) -> None:
        try:
            if shape in SYNC_SHAPES:
                raise asyncio.CancelledError("stop")
            entered.set()
            await never.wait()
        except BaseException as exc:
            inner.append(exc)
            raise

    async def victim() -> None:
        try:
            await run_shape(shape, agent, "long_tool", body)
        except BaseException as exc:
            outer.append(exc)
            raise

    task = asyncio.ensure_future(victim())
    if shape not in SYNC_SHAPES:
        await entered.wait()
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(inner) == 1
    assert outer == inner
    assert outer[0] is inner[0]
    started, failed = cap.events
    assert started["event_type"] == "action_started"
    assert failed["event_type"] == "action_failed"
    assert failed["status"] == "failure"
    assert failed["action_id"] == started["action_id"]
    assert failed["payload"]["exception_type"] == "CancelledError"
    assert failed["payload"]["cancelled"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("shape", SHAPES)
async def test_base_exceptions_record_failure(
    shape: str, exc_type: type[BaseException], agent: Agent, cap: EventCapture
) -> None:
    """KeyboardInterrupt and SystemExit inside an action record action_failed and propagate."""
    error = exc_type("bye")

    async def body(ctx: ActionScope | None) -> None:
        raise error

    with pytest.raises(exc_type) as excinfo:
        await run_shape(shape, agent, "interrupted", body)
    assert excinfo.value is error
    started, failed = cap.events
    assert failed["event_type"] == "action_failed"
    assert failed["action_id"] == started["action_id"]
    assert failed["payload"]["exception_type"] == exc_type.__name__
    assert failed["payload"]["exception_message"] == "bye"
    assert "cancelled" not in failed["payload"]


@pytest.mark.anyio
@pytest.mark.parametrize("shape", SHAPES)
async def test_nesting_links_parent_action_ids(shape: str, agent: Agent, cap: EventCapture) -> None:
    """Actions opened inside an action are its children; siblings share the parent."""
    ids: dict[str, str | None] = {}

    async def leaf(ctx: ActionScope | None) -> None:
        with agent.track_context("leaf"):
            ids["leaf"] = hiveloop_async.current_action_id()

    async def middle(ctx: ActionScope | None) -> None:
        ids["middle"] = hiveloop_async.current_action_id()
        await run_shape(shape, agent, "inner", leaf)
        assert hiveloop_async.current_action_id() == ids["middle"]
        await run_shape(shape, agent, "sibling")

    await run_shape(shape, agent, "outer", middle)
    started = {e["payload"]["action_name"]: e for e in cap.of_type("action_started")}
    closed = {e["payload"]["action_name"]: e for e in cap.of_type("action_completed")}
    assert set(started) == set(closed) == {"outer", "inner", "leaf", "sibling"}
    parent_of = {name: ev.get("parent_action_id") for name, ev in started.items()}
    assert parent_of == {
        "outer": None,
        "inner": started["outer"]["action_id"],
        "sibling": started["outer"]["action_id"],
        "leaf": started["inner"]["action_id"],
    }
    assert {name: ev.get("parent_action_id") for name, ev in closed.items()} == parent_of
    assert ids == {"middle": started["outer"]["action_id"], "leaf": started["leaf"]["action_id"]}
    order = [(e["event_type"], e["payload"]["action_name"]) for e in cap.events]
    assert order == [
        ("action_started", "outer"),
        ("action_started", "inner"),
        ("action_started", "leaf"),
        ("action_completed", "leaf"),
        ("action_completed", "inner"),
        ("action_started", "sibling"),
        ("action_completed", "sibling"),
        ("action_completed", "outer"),
    ]
    assert hiveloop_async.current_action_id() is None


@pytest.mark.anyio
@pytest.mark.parametrize("shape", SHAPES)
async def test_payload_merges_into_closing_event(
    shape: str, agent: Agent, cap: EventCapture
) -> None:
    """set_payload data (context shapes) merges into the closing payload, success or failure."""

    async def ok(ctx: ActionScope | None) -> None:
        if ctx is not None:
            ctx.set_payload({"first": True})
            ctx.set_payload({"result_preview": "Acme", "success": True})

    async def bad(ctx: ActionScope | None) -> None:
        if ctx is not None:
            ctx.set_payload({"attempt": 2, "action_name": "renamed"})
        raise RuntimeError("nope")

    function = await run_shape(shape, agent, "tool_ok", ok)
    with pytest.raises(RuntimeError):
        await run_shape(shape, agent, "tool_bad", bad)
    s_ok, c_ok, s_bad, f_bad = cap.events
    assert s_ok["payload"] == _base_payload("tool_ok", function)
    assert s_bad["payload"] == _base_payload("tool_bad", function)
    if shape in ("with", "async_with"):
        assert c_ok["payload"] == {
            "action_name": "tool_ok",
            "result_preview": "Acme",
            "success": True,
        }
        assert f_bad["payload"] == {
            "action_name": "renamed",
            "exception_type": "RuntimeError",
            "exception_message": "nope",
            "attempt": 2,
        }
    else:
        assert c_ok["payload"] == _base_payload("tool_ok", function)
        assert f_bad["payload"] == {
            **_base_payload("tool_bad", function),
            "exception_type": "RuntimeError",
            "exception_message": "nope",
        }


def test_set_payload_after_close_is_ignored(agent: Agent, cap: EventCapture) -> None:
    """A set_payload call after the block closed does not change the recorded event."""
    with agent.track_context("done") as ctx:
        ctx.set_payload({"kept": 1})
    ctx.set_payload({"late": 2})
    assert cap.events[-1]["payload"] == {"action_name": "done", "kept": 1}


def test_manual_enter_exit_success(agent: Agent, cap: EventCapture) -> None:
    """Manual ``__enter__()`` / ``__exit__(None, None, None)`` (manual §11.3) records a success."""
    hl_ctx = agent.track_context("crm_search")
    returned = hl_ctx.__enter__()
    assert returned is hl_ctx
    assert hiveloop_async.current_action_id() == cap.events[0]["action_id"]
    hl_ctx.set_payload({"success": False, "error": "404 Not Found"})
    hl_ctx.__exit__(None, None, None)
    assert hiveloop_async.current_action_id() is None
    started, completed = cap.events
    assert completed["event_type"] == "action_completed"
    assert completed["status"] == "success"
    assert completed["action_id"] == started["action_id"]
    assert completed["payload"] == {
        "action_name": "crm_search",
        "success": False,
        "error": "404 Not Found",
    }


def test_manual_exit_with_exception_records_failure(agent: Agent, cap: EventCapture) -> None:
    """Manual ``__exit__`` given an exception records action_failed and returns falsy."""
    ctx = agent.track_context("tool")
    ctx.__enter__()
    err = ConnectionError("down")
    ctx.__exit__(ConnectionError, err, None)
    failed = cap.events[-1]
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "ConnectionError"
    assert failed["payload"]["exception_message"] == "down"


def test_manual_pattern_13_3_runs_tool_once(agent: Agent, cap: EventCapture) -> None:
    """The §13.3 single-execution pattern runs the tool once and records one action."""
    calls: list[str] = []
    tool_name = "send_email"

    def execute_tool(name: str) -> str:
        calls.append(name)
        return "sent"

    ctx: ActionScope | None = None
    try:
        ctx = agent.track_context(tool_name)
        ctx.__enter__()
    except Exception:
        ctx = None
    result = execute_tool(tool_name)
    if ctx:
        try:
            ctx.__exit__(None, None, None)
        except Exception:
            pass
    assert result == "sent"
    assert calls == [tool_name]
    assert [e["event_type"] for e in cap.events] == ["action_started", "action_completed"]


@pytest.mark.anyio
async def test_entering_a_scope_twice_raises_usage_error(agent: Agent, cap: EventCapture) -> None:
    """A scope (or task) can be entered once: a second entry raises HiveLoopUsageError."""
    ctx = agent.track_context("once")
    with ctx, pytest.raises(HiveLoopUsageError):
        ctx.__enter__()
    with pytest.raises(HiveLoopUsageError), ctx:
        pass
    actx = agent.track_context("once_async")
    async with actx:
        pass
    with pytest.raises(HiveLoopUsageError):
        async with actx:
            pass
    task = agent.task("t-twice")
    with task:
        pass
    with pytest.raises(HiveLoopUsageError), task:
        pass
    kinds = [(e["event_type"], e["payload"].get("action_name")) for e in cap.events]
    assert kinds == [
        ("action_started", "once"),
        ("action_completed", "once"),
        ("action_started", "once_async"),
        ("action_completed", "once_async"),
        ("task_started", None),
        ("task_completed", None),
    ]
    assert hiveloop_async.current_action_id() is None


def test_out_of_order_exits_never_raise_and_restore_context(
    agent: Agent, cap: EventCapture
) -> None:
    """Leaving an outer scope before its child records both and leaves no stale current action."""
    outer = agent.track_context("outer")
    inner = agent.track_context("inner")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    names = [(e["event_type"], e["payload"]["action_name"]) for e in cap.events]
    assert names == [
        ("action_started", "outer"),
        ("action_started", "inner"),
        ("action_completed", "outer"),
        ("action_completed", "inner"),
    ]
    # Both scopes are closed: nothing may stay current, and new actions are top level.
    assert hiveloop_async.current_action_id() is None
    with agent.track_context("after"):
        pass
    assert "parent_action_id" not in cap.events[-1]


def test_exit_in_another_thread_never_raises(agent: Agent, cap: EventCapture) -> None:
    """A scope entered here and left on another thread records its close and raises nothing."""
    ctx = agent.track_context("handed_off")
    ctx.__enter__()
    errors: list[BaseException] = []

    def leave() -> None:
        try:
            ctx.__exit__(None, None, None)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=leave)
    thread.start()
    thread.join()
    assert errors == []
    started, completed = cap.events
    assert completed["event_type"] == "action_completed"
    assert completed["action_id"] == started["action_id"]


@pytest.mark.anyio
async def test_exit_in_another_task_never_raises(agent: Agent, cap: EventCapture) -> None:
    """A scope entered in one asyncio task and left in another raises nothing into either."""
    ctx = agent.track_context("cross_task")

    async def enter() -> None:
        await ctx.__aenter__()

    async def leave() -> None:
        await ctx.__aexit__(None, None, None)

    await asyncio.ensure_future(enter())
    await asyncio.ensure_future(leave())
    assert [e["event_type"] for e in cap.events] == ["action_started", "action_completed"]
    assert cap.events[0]["action_id"] == cap.events[1]["action_id"]


@pytest.mark.anyio
async def test_module_track_context_with_current_agent(agent: Agent, cap: EventCapture) -> None:
    """Module-level track_context records under the agent of the current task or action."""
    async with agent.task("t-mod") as task:
        with hiveloop_async.track_context("mod_sync") as ctx:
            ctx.set_payload({"n": 1})
        async with hiveloop_async.track_context("mod_async"):
            pass
    with agent.track_context("parent"):
        async with hiveloop_async.track_context("child_of_parent"):
            pass
    started = {e["payload"]["action_name"]: e for e in cap.of_type("action_started")}
    assert started["mod_sync"]["task_id"] == "t-mod"
    assert started["mod_sync"]["task_run_id"] == task.task_run_id
    assert started["mod_async"]["task_id"] == "t-mod"
    assert started["child_of_parent"]["parent_action_id"] == started["parent"]["action_id"]
    assert "task_id" not in started["child_of_parent"]
    completed = cap.of_type("action_completed")
    assert completed[0]["payload"] == {"action_name": "mod_sync", "n": 1}
    assert {ev["event_id"] for ev in cap.events_of("track-agent")} == {
        ev["event_id"] for ev in cap.events
    }


@pytest.mark.anyio
async def test_module_track_context_without_agent_runs_untracked(cap: EventCapture) -> None:
    """With no current agent, module-level track_context runs the block and records nothing."""
    ran: list[str] = []
    with hiveloop_async.track_context("nobody") as ctx:
        ctx.set_payload({"ignored": True})
        ran.append("sync")
    async with hiveloop_async.track_context("nobody_async"):
        ran.append("async")
    error = KeyError("k")
    with pytest.raises(KeyError) as excinfo, hiveloop_async.track_context("nobody_fails"):
        raise error
    assert excinfo.value is error
    assert ran == ["sync", "async"]
    assert cap.events == []


@pytest.mark.anyio
async def test_module_track_decorator_follows_current_agent(
    agent: Agent, cap: EventCapture
) -> None:
    """Module-level ``track`` records under the current agent, and runs plainly without one."""

    @hiveloop_async.track("mod_fn")
    def mod_fn(x: int) -> int:
        return x + 1

    @hiveloop_async.track("mod_coro")
    async def mod_coro(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * 2

    assert mod_fn(1) == 2
    assert await mod_coro(2) == 4
    assert cap.events == []
    with agent.task("t-deco"):
        assert mod_fn(3) == 4
        assert await mod_coro(4) == 8
    names = [(e["event_type"], e["payload"].get("action_name")) for e in cap.events]
    assert names == [
        ("task_started", None),
        ("action_started", "mod_fn"),
        ("action_completed", "mod_fn"),
        ("action_started", "mod_coro"),
        ("action_completed", "mod_coro"),
        ("task_completed", None),
    ]
    assert all(e["task_id"] == "t-deco" for e in cap.events)


def _sync_fn(a: int, b: str = "x") -> str:
    """Sync docstring."""
    return f"{a}{b}"


async def _async_fn(a: int) -> int:
    """Async docstring."""
    return a


def _gen_fn(n: int) -> Iterator[int]:
    """Generator docstring."""
    yield from range(n)


@pytest.mark.parametrize("fn", [_sync_fn, _async_fn, _gen_fn])
@pytest.mark.parametrize("module_level", [False, True])
def test_decorator_keeps_function_metadata(
    fn: Callable[..., Any], module_level: bool, agent: Agent
) -> None:
    """``functools.wraps`` metadata (name, doc, module, wrapped, signature) is kept."""
    decorator = hiveloop_async.track("meta") if module_level else agent.track("meta")
    wrapped = decorator(fn)
    for attr in functools.WRAPPER_ASSIGNMENTS:
        assert getattr(wrapped, attr) == getattr(fn, attr), attr
    assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)


@pytest.mark.anyio
async def test_decorated_functions_pass_arguments_and_return_values(
    agent: Agent, cap: EventCapture
) -> None:
    """Decorated sync and async functions get their arguments and return their results."""

    @agent.track("add")
    def add(a: int, b: int = 0, *, scale: int = 1) -> int:
        return (a + b) * scale

    @agent.track("aadd")
    async def aadd(a: int, b: int = 0, *, scale: int = 1) -> int:
        await anyio.lowlevel.checkpoint()
        return (a + b) * scale

    assert add(1, 2, scale=3) == 9
    assert await aadd(2, b=3, scale=2) == 10
    assert [e["event_type"] for e in cap.events] == [
        "action_started",
        "action_completed",
        "action_started",
        "action_completed",
    ]
