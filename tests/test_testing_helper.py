"""``hiveloop_async.testing``: capturing the wire events of your own instrumentation."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import orjson
import pytest

from hiveloop_async import Agent, HiveBoard
from hiveloop_async._serialize import encode_envelope
from hiveloop_async.testing import EventCapture, capture_events
from hiveloop_async.testing import hiveloop_events as hiveloop_events  # the pytest fixture


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("helper-agent")


@pytest.fixture
def live() -> Iterator[HiveBoard]:
    """An enabled client whose sender can never deliver (nothing listens on port 9)."""
    client = HiveBoard(
        api_key="hb_x", endpoint="http://127.0.0.1:9", flush_interval=60, shutdown_timeout=0.2
    )
    yield client
    client.shutdown(timeout=0.2)


def test_with_block_captures_only_while_active(agent: Agent) -> None:
    """Events are captured inside the block only, and stay readable after it."""
    agent.event("custom", {"summary": "before"})
    with capture_events() as cap, agent.track_context("tool"):
        agent.event("custom", {"summary": "during"})
    agent.event("custom", {"summary": "after"})
    assert [e["event_type"] for e in cap.events] == [
        "action_started",
        "custom",
        "action_completed",
    ]
    assert cap.of_type("custom")[0]["payload"] == {"summary": "during"}
    assert len(cap) == 3
    assert list(cap) == cap.events
    assert cap.events_of("helper-agent") == cap.events
    assert cap.events_of("someone-else") == []


@pytest.mark.anyio
async def test_async_with_block(agent: Agent) -> None:
    """``async with capture_events()`` captures like ``with``."""
    async with capture_events() as cap, agent.task("t-async"):
        pass
    assert [e["event_type"] for e in cap.events] == ["task_started", "task_completed"]
    assert cap.events[0]["task_id"] == "t-async"


def test_fixture_captures_the_test(hiveloop_events: EventCapture, agent: Agent) -> None:
    """The ``hiveloop_events`` fixture is an active capture for the whole test."""
    with agent.track_context("fixture_tool"):
        pass
    names = [e["payload"]["action_name"] for e in hiveloop_events.of_type("action_started")]
    assert names == ["fixture_tool"]


def test_start_stop_and_clear(agent: Agent) -> None:
    """start()/stop() bracket the capture; clear() forgets what was captured."""
    cap = capture_events().start()
    agent.event("custom", {"n": 1})
    assert len(cap.events) == 1
    cap.clear()
    assert cap.events == []
    agent.event("custom", {"n": 2})
    cap.stop()
    agent.event("custom", {"n": 3})
    assert [e["payload"]["n"] for e in cap.events] == [2]


def test_events_are_visible_while_a_scope_is_open(agent: Agent) -> None:
    """The opening event can be read before the block closes; the closing one after."""
    with capture_events() as cap:
        with agent.track_context("long") as ctx:
            assert [e["event_type"] for e in cap.events] == ["action_started"]
            ctx.set_payload({"late": True})
        assert cap.events[-1]["payload"] == {"action_name": "long", "late": True}


def test_per_client_capture(agent: Agent, live: HiveBoard) -> None:
    """capture_events(client) takes that client's events only; others go their usual way."""
    other = live.agent("other-agent")
    with capture_events(agent._client) as mine:
        agent.event("custom", {"who": "mine"})
        other.event("custom", {"who": "other"})
    assert [e["payload"] for e in mine.events] == [{"who": "mine"}]
    assert mine.events_of("other-agent") == []
    assert live.stats()["recorded"] == 2


def test_nested_captures_both_see_events(agent: Agent) -> None:
    """Two active captures both receive every event."""
    with capture_events() as outer:
        agent.event("custom", {"n": 1})
        with capture_events() as inner:
            agent.event("custom", {"n": 2})
    assert [e["payload"]["n"] for e in outer.events] == [1, 2]
    assert [e["payload"]["n"] for e in inner.events] == [2]


def test_send_false_keeps_events_from_the_queue(live: HiveBoard) -> None:
    """With send=False (the default) captured events never reach the client's queue."""
    with capture_events() as cap:
        agent = live.agent("quiet")
        for i in range(5):
            agent.event("custom", {"i": i})
    assert len(cap.events) == 6
    stats = live.stats()
    assert stats["recorded"] == 0
    assert stats["queue_depth"] == 0
    assert stats["state"] == "new"
    assert len(live._queue) == 0


def test_send_true_captures_and_queues(live: HiveBoard) -> None:
    """With send=True events are captured and still go to the client's queue."""
    with capture_events(send=True) as cap:
        agent = live.agent("loud")
        agent.event("custom", {"i": 0})
    assert [e["event_type"] for e in cap.events] == ["agent_registered", "custom"]
    stats = live.stats()
    assert stats["recorded"] == 2
    assert stats["state"] == "running"


def test_capture_from_many_threads(agent: Agent) -> None:
    """Events recorded from several threads at once are all captured."""
    with capture_events() as cap:

        def work(n: int) -> None:
            for i in range(200):
                with agent.track_context(f"t{n}-{i}"):
                    pass

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(cap.of_type("action_started")) == 1600
    assert len(cap.of_type("action_completed")) == 1600
    assert len({e["event_id"] for e in cap.events}) == 3200


def test_envelope_of_an_uncaptured_event_is_a_key_error(agent: Agent) -> None:
    """envelope() only knows the events of its own capture."""
    with capture_events() as cap:
        agent.event("custom")
    with pytest.raises(KeyError):
        cap.envelope({"event_id": "not-captured"})


def test_envelope_is_the_wire_envelope() -> None:
    """envelope() returns what the sender puts on the wire (environment and group cut)."""
    client = HiveBoard(api_key="hb_test_x", enabled=False, environment="e" * 100, group="g" * 200)
    with capture_events() as cap:
        agent = client.agent("long-env")
    wire = orjson.loads(encode_envelope(agent))
    assert len(wire["environment"]) == 64
    assert len(wire["group"]) == 128
    assert cap.envelope(cap.events[0]) == wire
