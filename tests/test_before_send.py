"""The ``before_send`` runner (``hiveloop_async._hooks``): changing, dropping, raising."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest

from hiveloop_async import HiveBoard, HiveLoopConfigError
from hiveloop_async._hooks import BeforeSend, make_before_send
from hiveloop_async._server import ServerThread
from hiveloop_async.testing import capture_events

Event = dict[str, Any]


def ev(i: int, **extra: Any) -> Event:
    return {"event_id": f"e{i}", "event_type": "custom", "payload": {"n": i, **extra}}


def test_a_hook_can_change_events_in_place_or_return_new_ones() -> None:
    def hook(event: Event) -> Event:
        if event["payload"]["n"] % 2:
            return {**event, "payload": {"n": event["payload"]["n"], "odd": True}}
        event["payload"]["seen"] = True
        return event

    runner = BeforeSend(hook)
    out = [runner.run(ev(i)) for i in range(4)]
    assert out == [
        {"event_id": "e0", "event_type": "custom", "payload": {"n": 0, "seen": True}},
        {"event_id": "e1", "event_type": "custom", "payload": {"n": 1, "odd": True}},
        {"event_id": "e2", "event_type": "custom", "payload": {"n": 2, "seen": True}},
        {"event_id": "e3", "event_type": "custom", "payload": {"n": 3, "odd": True}},
    ]
    assert runner.stats() == {"dropped": 0, "errors": 0, "changed": 2}


async def test_a_hook_returning_none_drops_the_event_and_counts_it() -> None:
    runner = BeforeSend(lambda e: None if e["payload"]["n"] < 3 else e)
    kept = await runner.apply([ev(i) for i in range(5)])
    assert [e["event_id"] for e in kept] == ["e3", "e4"]
    assert runner.dropped == 3 and runner.errors == 0


@pytest.mark.parametrize("on_error", ["send", "drop"])
async def test_a_raising_hook_is_logged_once_without_the_event_and_sends_or_drops(
    on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-" + "proj-" + "A1b2C3d4E5f6G7h8J9k0"

    def hook(event: Event) -> Event:
        raise ValueError(f"cannot handle {event['payload']['secret']}")

    runner = BeforeSend(hook, on_error=on_error)  # type: ignore[arg-type]
    events = [ev(i, secret=secret) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="hiveloop_async"):
        kept = await runner.apply(events)
        runner.run(ev(9, secret=secret))
    if on_error == "send":
        assert kept == events  # unchanged, the same objects
        assert all(a is b for a, b in zip(kept, events, strict=True))
        assert runner.dropped == 0
    else:
        assert kept == []
        assert runner.dropped == 4
    assert runner.errors == 4
    records = [r for r in caplog.records if "before_send" in r.getMessage()]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "ValueError" in line and "hook" in line
    assert secret not in line and "cannot handle" not in line
    assert records[0].exc_info is None  # no traceback: it would quote the message


@pytest.mark.parametrize("bad", [42, "event", ["list"], (1, 2)])
def test_a_hook_returning_something_else_counts_as_a_failure(bad: Any) -> None:
    runner = BeforeSend(lambda e: bad)
    event = ev(1)
    assert runner.run(event) is event
    assert runner.errors == 1 and runner.dropped == 0


async def test_async_hooks_run_on_the_loop() -> None:
    async def hook(event: Event) -> Event | None:
        await asyncio.sleep(0)
        if event["payload"]["n"] == 1:
            return None
        event["payload"]["async"] = True
        return event

    runner = BeforeSend(hook)
    assert runner.is_async
    kept = await runner.apply([ev(i) for i in range(3)])
    assert [(e["event_id"], e["payload"].get("async")) for e in kept] == [
        ("e0", True),
        ("e2", True),
    ]
    assert runner.dropped == 1


async def test_an_object_with_an_async_call_and_a_lambda_returning_a_coroutine() -> None:
    class Hook:
        async def __call__(self, event: Event) -> Event:
            event["payload"]["obj"] = True
            return event

    async def inner(event: Event) -> Event:
        event["payload"]["lambda"] = True
        return event

    assert BeforeSend(Hook()).is_async
    assert (await BeforeSend(Hook()).arun(ev(1)) or {})["payload"]["obj"] is True
    runner = BeforeSend(lambda e: inner(e))
    assert not runner.is_async
    kept = await runner.apply([ev(1), ev(2)])
    assert [e["payload"]["lambda"] for e in kept] == [True, True]
    assert runner.is_async  # learnt from the first call


def test_an_async_hook_called_synchronously_fails_cleanly() -> None:
    async def hook(event: Event) -> Event:
        return event

    runner = BeforeSend(hook, on_error="drop")
    # The coroutine is closed (no "never awaited" warning: warnings are errors here).
    assert runner.run(ev(1)) is None
    assert runner.errors == 1 and runner.dropped == 1


async def test_cancellation_and_keyboard_interrupt_pass_through_unchanged() -> None:
    cancel = asyncio.CancelledError()

    async def cancelled(event: Event) -> Event:
        raise cancel

    with pytest.raises(asyncio.CancelledError) as info:
        await BeforeSend(cancelled).apply([ev(1)])
    assert info.value is cancel
    interrupt = KeyboardInterrupt()

    def interrupted(event: Event) -> Event:
        raise interrupt

    with pytest.raises(KeyboardInterrupt) as info2:
        BeforeSend(interrupted).run(ev(1))
    assert info2.value is interrupt


def test_configuration_errors() -> None:
    with pytest.raises(HiveLoopConfigError):
        BeforeSend("not callable")  # type: ignore[arg-type]
    with pytest.raises(HiveLoopConfigError):
        BeforeSend(lambda e: e, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(HiveLoopConfigError):
        make_before_send(None, "maybe")  # type: ignore[arg-type]
    assert make_before_send(None) is None
    assert isinstance(make_before_send(lambda e: e, "drop"), BeforeSend)


async def test_events_changed_and_dropped_by_the_hook_at_a_real_server() -> None:
    """SDK events through the hook, then ingested: the server has exactly what it returned."""
    hb = HiveBoard(api_key="hb_test_x", enabled=False)
    agent = hb.agent("hook-agent", heartbeat_interval=0)
    with capture_events(hb) as captured:
        for i in range(4):
            with agent.task(f"t-{i}"), agent.track_context("step") as action:
                action.set_payload({"customer_email": f"user{i}@example.com"})
        events = captured.events
    hb.shutdown(timeout=0)

    def hook(event: Event) -> Event | None:
        if event.get("task_id") == "t-0":
            return None  # this task's events are not wanted
        payload = event.get("payload") or {}
        for where in (payload, payload.get("data")):
            if isinstance(where, dict) and "customer_email" in where:
                where["customer_email"] = "<removed>"
        return event

    runner = BeforeSend(hook)
    kept = await runner.apply(events)
    assert runner.dropped == len(events) - len(kept) > 0
    body = {"envelope": {"agent_id": "hook-agent"}, "events": kept}
    with ServerThread(memory=True) as srv:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{srv.url}/v1/ingest",
                data=orjson.dumps(body),
                headers={"Authorization": "Bearer hb_test_key", "Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 200
        stored = srv.events()
    assert {e["event_id"] for e in stored} == {e["event_id"] for e in kept}
    assert not [e for e in stored if e.get("task_id") == "t-0"]
    text = orjson.dumps(stored).decode()
    assert "@example.com" not in text and "<removed>" in text
