"""Tracked generators and async generators: one action per whole iteration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import hiveloop_async
from hiveloop_async import Agent, HiveBoard
from hiveloop_async.testing import EventCapture


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("gen-agent")


def _names(cap: EventCapture) -> list[tuple[str, str]]:
    return [(e["event_type"], e["payload"]["action_name"]) for e in cap.events]


def _started(cap: EventCapture) -> dict[str, dict[str, Any]]:
    return {e["payload"]["action_name"]: e for e in cap.of_type("action_started")}


def _closing(cap: EventCapture, name: str) -> dict[str, Any]:
    (ev,) = [
        e
        for e in cap.of_type("action_completed", "action_failed")
        if e["payload"]["action_name"] == name
    ]
    return ev


def test_sync_generator_full_iteration_and_return_value(agent: Agent, cap: EventCapture) -> None:
    """A fully consumed generator is one successful action; its return value passes through."""
    inside: list[str | None] = []

    @agent.track("numbers")
    def numbers(n: int) -> Generator[int, None, str]:
        for i in range(n):
            inside.append(hiveloop_async.current_action_id())
            yield i
        return "total"

    results: list[str] = []

    def consumer() -> Iterator[int]:
        result = yield from numbers(3)
        results.append(result)

    with agent.task("t-gen"):
        got = list(consumer())
    assert got == [0, 1, 2]
    assert results == ["total"]
    started, completed = cap.of_type("action_started", "action_completed", "action_failed")
    assert completed["event_type"] == "action_completed"
    assert completed["status"] == "success"
    assert completed["task_id"] == started["task_id"] == "t-gen"
    assert completed["payload"] == {
        "action_name": "numbers",
        "function": f"{numbers.__module__}.{numbers.__qualname__}",
    }
    assert inside == [started["action_id"]] * 3


@pytest.mark.anyio
async def test_async_generator_full_iteration(agent: Agent, cap: EventCapture) -> None:
    """A fully consumed async generator is one successful action spanning the iteration."""
    inside: list[str | None] = []

    @agent.track("stream")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await anyio.lowlevel.checkpoint()
            inside.append(hiveloop_async.current_action_id())
            yield i

    got = [x async for x in stream(4)]
    assert got == [0, 1, 2, 3]
    started, completed = cap.events
    assert completed["event_type"] == "action_completed"
    assert completed["status"] == "success"
    assert completed["payload"]["function"] == f"{stream.__module__}.{stream.__qualname__}"
    assert inside == [started["action_id"]] * 4


def test_sync_generator_early_break_is_generator_exit(agent: Agent, cap: EventCapture) -> None:
    """Breaking out and closing gives action_failed (GeneratorExit); cleanup nests under it."""

    @agent.track("paged")
    def paged() -> Generator[int, None, None]:
        try:
            yield from range(10)
        finally:
            with agent.track_context("cleanup"):
                pass

    gen = paged()
    for x in gen:
        if x == 2:
            break
    gen.close()
    started = _started(cap)
    failed = _closing(cap, "paged")
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "GeneratorExit"
    assert "cancelled" not in failed["payload"]
    assert started["cleanup"]["parent_action_id"] == started["paged"]["action_id"]
    assert _names(cap)[-1] == ("action_failed", "paged")


@pytest.mark.anyio
async def test_async_generator_early_break_is_generator_exit(
    agent: Agent, cap: EventCapture
) -> None:
    """Leaving ``async for`` early and closing gives action_failed with GeneratorExit."""

    @agent.track("feed")
    async def feed() -> AsyncGenerator[int, None]:
        for i in range(10):
            await anyio.lowlevel.checkpoint()
            yield i

    async with aclosing(feed()) as items:
        async for x in items:
            if x == 1:
                break
    failed = _closing(cap, "feed")
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "GeneratorExit"


@pytest.mark.anyio
async def test_aclose_from_another_task(agent: Agent, cap: EventCapture) -> None:
    """``aclose()`` called from another asyncio task closes the action as GeneratorExit."""
    in_finally: list[str | None] = []

    @agent.track("watch")
    async def watch() -> AsyncGenerator[int, None]:
        try:
            while True:
                await anyio.lowlevel.checkpoint()
                yield 1
        finally:
            in_finally.append(hiveloop_async.current_action_id())

    agen = watch()

    async def consume_one() -> int:
        return await agen.__anext__()

    assert await asyncio.ensure_future(consume_one()) == 1

    async def closer() -> None:
        await agen.aclose()

    await asyncio.ensure_future(closer())
    started = _started(cap)
    failed = _closing(cap, "watch")
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "GeneratorExit"
    assert in_finally == [started["watch"]["action_id"]]
    assert hiveloop_async.current_action_id() is None


def test_sync_generator_exception_inside(agent: Agent, cap: EventCapture) -> None:
    """An exception raised by the body fails the action and reaches the consumer unchanged."""
    error = LookupError("row 3 missing")

    @agent.track("rows")
    def rows() -> Iterator[int]:
        yield 1
        raise error

    with pytest.raises(LookupError) as excinfo:
        list(rows())
    assert excinfo.value is error
    failed = _closing(cap, "rows")
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "LookupError"
    assert failed["payload"]["exception_message"] == "row 3 missing"


@pytest.mark.anyio
async def test_async_generator_exception_inside(agent: Agent, cap: EventCapture) -> None:
    """An exception raised in an async generator body fails the action and propagates."""
    error = OSError("disk")

    @agent.track("lines")
    async def lines() -> AsyncIterator[str]:
        yield "a"
        await anyio.lowlevel.checkpoint()
        raise error

    with pytest.raises(OSError, match="disk") as excinfo:
        async for _ in lines():
            pass
    assert excinfo.value is error
    failed = _closing(cap, "lines")
    assert failed["payload"]["exception_type"] == "OSError"
    assert failed["payload"]["exception_message"] == "disk"


@pytest.mark.anyio
async def test_async_generator_cancelled_while_inside(agent: Agent, cap: EventCapture) -> None:
    """Cancelling the consumer while the body awaits fails the action with ``cancelled``."""
    waiting = anyio.Event()
    never = anyio.Event()

    @agent.track("slow_feed")
    async def slow_feed() -> AsyncGenerator[int, None]:
        yield 0
        waiting.set()
        await never.wait()
        yield 1

    async def consume() -> None:
        async with aclosing(slow_feed()) as items:
            async for _ in items:
                pass

    task = asyncio.ensure_future(consume())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failed = _closing(cap, "slow_feed")
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "CancelledError"
    assert failed["payload"]["cancelled"] is True


def test_sync_generator_send_and_throw_pass_through(agent: Agent, cap: EventCapture) -> None:
    """``send`` values reach the body, a handled ``throw`` resumes it, an unhandled one ends it."""
    received: list[Any] = []

    @agent.track("echo")
    def echo() -> Generator[str, str, None]:
        value = yield "ready"
        while True:
            try:
                received.append(value)
                value = yield f"echo:{value}"
            except KeyError as exc:
                value = yield f"recovered:{exc.args[0]}"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "echo:a"
    assert gen.throw(KeyError("k")) == "recovered:k"
    assert gen.send("b") == "echo:b"
    fatal = ValueError("fatal")
    with pytest.raises(ValueError, match="fatal") as excinfo:
        gen.throw(fatal)
    assert excinfo.value is fatal
    assert received == ["a", "b"]
    failed = _closing(cap, "echo")
    assert failed["event_type"] == "action_failed"
    assert failed["payload"]["exception_type"] == "ValueError"
    assert len(cap.of_type("action_started")) == 1


@pytest.mark.anyio
async def test_async_generator_asend_and_athrow_pass_through(
    agent: Agent, cap: EventCapture
) -> None:
    """``asend`` values reach the body and a handled ``athrow`` resumes it."""
    received: list[Any] = []

    @agent.track("aecho")
    async def aecho() -> AsyncGenerator[str, str]:
        value = yield "ready"
        while True:
            try:
                received.append(value)
                await anyio.lowlevel.checkpoint()
                value = yield f"echo:{value}"
            except KeyError as exc:
                value = yield f"recovered:{exc.args[0]}"
            if value == "stop":
                return

    agen = aecho()
    assert await agen.__anext__() == "ready"
    assert await agen.asend("a") == "echo:a"
    assert await agen.athrow(KeyError("k")) == "recovered:k"
    assert await agen.asend("b") == "echo:b"
    with pytest.raises(StopAsyncIteration):
        await agen.asend("stop")
    assert received == ["a", "b"]
    completed = _closing(cap, "aecho")
    assert completed["event_type"] == "action_completed"


def test_action_not_current_in_consumer_between_yields(agent: Agent, cap: EventCapture) -> None:
    """Between yields the consumer's own action is current, not the generator's."""
    consumer_ids: list[str | None] = []

    @agent.track("producer")
    def producer() -> Iterator[int]:
        for i in range(2):
            with agent.track_context(f"produce_{i}"):
                pass
            yield i

    with agent.track_context("consumer") as consumer:
        for i in producer():
            consumer_ids.append(hiveloop_async.current_action_id())
            with agent.track_context(f"consume_{i}"):
                pass
    assert hiveloop_async.current_action_id() is None
    started = _started(cap)
    consumer_id = started["consumer"]["action_id"]
    assert consumer.action_id_str == consumer_id
    assert consumer_ids == [consumer_id, consumer_id]
    producer_id = started["producer"]["action_id"]
    assert started["producer"]["parent_action_id"] == consumer_id
    for i in range(2):
        assert started[f"produce_{i}"]["parent_action_id"] == producer_id
        assert started[f"consume_{i}"]["parent_action_id"] == consumer_id


@pytest.mark.anyio
async def test_async_action_not_current_in_consumer_between_yields(
    agent: Agent, cap: EventCapture
) -> None:
    """Between async yields, actions the consumer opens are not children of the generator."""

    @agent.track("aproducer")
    async def aproducer() -> AsyncIterator[int]:
        for i in range(2):
            async with agent.track_context(f"aproduce_{i}"):
                await anyio.lowlevel.checkpoint()
            yield i

    async for i in aproducer():
        assert hiveloop_async.current_action_id() is None
        async with agent.track_context(f"aconsume_{i}"):
            await anyio.lowlevel.checkpoint()
    started = _started(cap)
    producer_id = started["aproducer"]["action_id"]
    for i in range(2):
        assert started[f"aproduce_{i}"]["parent_action_id"] == producer_id
        assert "parent_action_id" not in started[f"aconsume_{i}"]


def test_nested_scope_spanning_a_yield_stays_current_in_body(
    agent: Agent, cap: EventCapture
) -> None:
    """A block the body opened before a yield is still current in the body after it."""
    seen: list[str | None] = []

    @agent.track("batches")
    def batches() -> Iterator[int]:
        with agent.track_context("batch") as batch:
            yield 1
            seen.append(hiveloop_async.current_action_id())
            seen.append(batch.action_id_str)
            with agent.track_context("item"):
                pass
            yield 2

    assert list(batches()) == [1, 2]
    started = _started(cap)
    assert started["batch"]["parent_action_id"] == started["batches"]["action_id"]
    assert seen[0] == seen[1]
    assert started["item"]["parent_action_id"] == started["batch"]["action_id"]


@pytest.mark.anyio
async def test_async_nested_scope_spanning_a_yield_stays_current_in_body(
    agent: Agent, cap: EventCapture
) -> None:
    """In an async generator, a block opened before a yield is current after it."""

    @agent.track("abatches")
    async def abatches() -> AsyncIterator[int]:
        async with agent.track_context("abatch"):
            yield 1
            async with agent.track_context("aitem"):
                await anyio.lowlevel.checkpoint()
            yield 2

    assert [x async for x in abatches()] == [1, 2]
    started = _started(cap)
    assert started["aitem"]["parent_action_id"] == started["abatch"]["action_id"]
