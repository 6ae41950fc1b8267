"""The bounded queue: overflow by policy with exact accounting, flush markers, no blocking.

A client pointed at ``http://127.0.0.1:9`` (connection refused) with ``batch_size=1`` and
``max_concurrent_requests=1`` holds its first two events in flight, retrying, and keeps every
later event in its queue: the queue's content is then fully known.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import anyio
import pytest

from hiveloop_async import Agent, FlushResult, HiveBoard, HiveLoopConfigError
from hiveloop_async._queue import DropPolicy, EventQueue, add_tap, remove_tap
from hiveloop_async._queue import FlushMarker as _Waiter

STATS_KEYS = {
    "recorded",
    "sent",
    "dropped",
    "dropped_total",
    "retries",
    "batches",
    "queue_depth",
    "in_flight",
    "otlp",
    "spooled",
    "replayed",
    "scrubbed",
    "last_error",
    "state",
    "mode",
    "endpoint",
}
DROP_REASONS = {
    "queue_full",
    "disabled",
    "rejected",
    "oversize",
    "unauthorized",
    "retries_exhausted",
    "shutdown",
    "serialization",
    "sampled_out",
    "before_send",
}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def poll(condition: Callable[[], bool], seconds: float) -> bool:
    """Check ``condition`` every millisecond on the loop; True once it holds."""
    for _ in range(int(seconds * 1000)):
        if condition():
            return True
        await anyio.sleep(0.001)
    return condition()


def stuck_client(max_queue_size: int, drop_policy: DropPolicy = "oldest") -> HiveBoard:
    return HiveBoard(
        api_key="hb_x",
        endpoint="http://127.0.0.1:9",
        max_queue_size=max_queue_size,
        batch_size=1,
        max_concurrent_requests=1,
        retry_deadline=60,
        flush_interval=60,
        shutdown_timeout=0.2,
        drop_policy=drop_policy,
    )


def assert_balanced(stats: Mapping[str, Any]) -> None:
    """Every recorded event is sent, dropped, queued or in flight: exactly once."""
    assert stats["recorded"] == (
        stats["sent"] + stats["dropped_total"] + stats["queue_depth"] + stats["in_flight"]
    ), stats
    assert stats["dropped_total"] == sum(stats["dropped"].values())


def queued_numbers(hb: HiveBoard) -> list[int]:
    """The ``i`` of every queued ``agent.event("custom", {"i": i})`` record."""
    records = hb._queue.records()
    return [rec[5]["i"] for rec in records if type(rec) is tuple and "i" in (rec[5] or {})]


@pytest.fixture
def stuck(request: pytest.FixtureRequest) -> Iterator[tuple[HiveBoard, Agent]]:
    """A stuck client (queue size 10) with two events in flight and an empty queue."""
    hb = stuck_client(10, getattr(request, "param", "oldest"))
    agent = hb.agent("queue-agent")
    agent.event("custom", {"i": -1})
    # No flush marker here: with the one worker busy, the sender can be waiting to hand over
    # the second event when a marker is queued, and the marker would then stay queued.
    wait_until(lambda: hb.in_flight == 2 and not len(hb._queue))
    yield hb, agent
    hb.shutdown(timeout=0.2)


@pytest.mark.parametrize(
    ("stuck", "kept"),
    [("oldest", list(range(15, 25))), ("newest", list(range(10)))],
    indirect=["stuck"],
)
def test_overflow_drops_by_policy_and_counts_exactly(
    stuck: tuple[HiveBoard, Agent], kept: list[int]
) -> None:
    """25 events into a queue of 10 keep the policy's 10 and count 15 as queue_full."""
    hb, agent = stuck
    assert_balanced(hb.stats())
    for i in range(25):
        agent.event("custom", {"i": i})
    stats = hb.stats()
    assert queued_numbers(hb) == kept
    assert stats["recorded"] == 27
    assert stats["queue_depth"] == 10
    assert stats["in_flight"] == 2
    assert stats["sent"] == 0
    assert stats["dropped"]["queue_full"] == 15
    assert stats["dropped_total"] == 15
    assert_balanced(stats)
    result = hb.shutdown(timeout=0.2)
    assert isinstance(result, FlushResult)
    after = hb.stats()
    assert after["queue_depth"] == after["in_flight"] == 0
    assert after["dropped"]["queue_full"] == 15
    assert after["dropped"]["shutdown"] == 12
    assert after["state"] == "closed"
    assert_balanced(after)


@pytest.mark.anyio
@pytest.mark.parametrize(("policy", "kept"), [("oldest", [5, 6, 7]), ("newest", [0, 1, 2])])
async def test_overflow_on_the_application_loop(policy: DropPolicy, kept: list[int]) -> None:
    """On the app's loop, recording without awaiting fills the queue; overflow is exact."""
    async with HiveBoard(
        api_key="hb_x",
        endpoint="http://127.0.0.1:9",
        max_queue_size=4,
        batch_size=2,
        drop_policy=policy,
        shutdown_timeout=0.2,
        flush_interval=60,
    ) as hb:
        agent = hb.agent("loop-agent")
        for i in range(8):
            agent.event("custom", {"i": i})
        stats = hb.stats()
        assert stats["mode"] == "loop"
        assert stats["recorded"] == 9
        assert stats["queue_depth"] == 4
        assert stats["dropped"]["queue_full"] == 5
        assert queued_numbers(hb)[-3:] == kept
        assert_balanced(stats)
    final = hb.stats()
    assert final["queue_depth"] == final["in_flight"] == 0
    assert_balanced(final)


@pytest.mark.anyio
async def test_queue_bound_holds_when_smaller_than_batch_size() -> None:
    """max_queue_size is a hard bound even when it is below batch_size."""
    async with HiveBoard(
        api_key="hb_x",
        endpoint="http://127.0.0.1:9",
        max_queue_size=4,
        batch_size=100,
        shutdown_timeout=0.2,
        flush_interval=60,
    ) as hb:
        agent = hb.agent("small-queue")
        for i in range(8):
            agent.event("custom", {"i": i})
        stats = hb.stats()
        assert len(hb._queue) == 4
        assert stats["queue_depth"] == 4
        assert stats["dropped"]["queue_full"] == 5
        assert_balanced(stats)


@pytest.mark.anyio
async def test_reaching_batch_size_wakes_the_sender() -> None:
    """The sender drains as soon as the queue holds batch_size events, not one event later."""
    async with HiveBoard(
        api_key="hb_x",
        endpoint="http://127.0.0.1:9",
        batch_size=3,
        flush_interval=60,
        retry_deadline=60,
        shutdown_timeout=0.2,
    ) as hb:
        agent = hb.agent("batcher")
        # The start-up drain takes the registration and re-arms the threshold.
        assert await poll(lambda: not len(hb._queue) and not hb._queue.wake_pending, 5.0)
        for i in range(3):
            agent.event("custom", {"i": i})
        drained = await poll(lambda: hb.stats()["queue_depth"] == 0, 2.0)
        assert drained, "a full batch waited for the flush interval"
        assert hb.stats()["in_flight"] == 4


@pytest.mark.parametrize("stuck", ["newest"], indirect=True)
def test_flush_on_a_full_queue_waits_newest_policy(stuck: tuple[HiveBoard, Agent]) -> None:
    """With drop_policy newest, a flush on a full queue is not dropped: it waits and times out."""
    hb, agent = stuck
    for i in range(10):
        agent.event("custom", {"i": i})
    started = time.monotonic()
    result = hb.flush(timeout=0.3)
    assert result.delivered == 0
    assert result.timed_out is True
    assert time.monotonic() - started >= 0.29
    assert queued_numbers(hb) == list(range(10))
    assert_balanced(hb.stats())


@pytest.mark.parametrize("stuck", ["oldest"], indirect=True)
def test_flush_marker_survives_overflow_oldest_policy(stuck: tuple[HiveBoard, Agent]) -> None:
    """Overflow never drops a flush marker: the flush keeps waiting for the in-flight events."""
    hb, agent = stuck
    for i in range(5):
        agent.event("custom", {"i": i})
    results: list[FlushResult] = []
    flusher = threading.Thread(target=lambda: results.append(hb.flush(timeout=30)))
    flusher.start()
    wait_until(lambda: any(type(r) is _Waiter for r in hb._queue.records()))
    (marker,) = [r for r in hb._queue.records() if type(r) is _Waiter]
    for i in range(5, 40):
        agent.event("custom", {"i": i})
    assert not marker.done.is_set(), "the flush was released although nothing was delivered"
    assert any(r is marker for r in hb._queue.records())
    assert results == []
    assert_balanced(hb.stats())
    hb.shutdown(timeout=0.2)
    flusher.join(timeout=10)
    assert len(results) == 1
    assert results[0].delivered == 0


def test_recording_never_blocks_on_a_stuck_sender() -> None:
    """20,000 events into a small queue whose sender cannot deliver return at once."""
    hb = stuck_client(100)
    agent = hb.agent("fast")
    try:
        started = time.monotonic()
        slowest = 0.0
        for i in range(20_000):
            t0 = time.monotonic()
            with agent.track_context("tool"):
                agent.event("custom", {"i": i})
            slowest = max(slowest, time.monotonic() - t0)
        elapsed = time.monotonic() - started
        assert elapsed < 5.0
        assert slowest < 0.5
        stats = hb.stats()
        assert stats["queue_depth"] <= 100
        assert stats["dropped"]["queue_full"] >= 60_000 - 100 - 2
        assert_balanced(stats)
    finally:
        hb.shutdown(timeout=0.2)


@pytest.mark.anyio
async def test_aflush_with_undeliverable_events_times_out_without_blocking_the_loop() -> None:
    """aflush on the app's loop gives up at its timeout while the loop keeps running."""
    async with HiveBoard(
        api_key="hb_x", endpoint="http://127.0.0.1:9", shutdown_timeout=0.2, retry_deadline=60
    ) as hb:
        agent = hb.agent("loop-flush")
        agent.event("custom", {"i": 0})
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            result = await hb.aflush(timeout=0.3)
            done = True
        assert result.timed_out is True
        assert result.delivered == 0
        assert result.pending >= 1
        assert ticks >= 5


def test_stats_keys_and_initial_values() -> None:
    """stats() has every documented key and one count per drop reason."""
    hb = HiveBoard(api_key="hb_test_x", enabled=False)
    stats = hb.stats()
    assert set(stats) == STATS_KEYS
    assert set(stats["dropped"]) == DROP_REASONS
    assert stats["dropped"] == dict.fromkeys(DROP_REASONS, 0)
    assert stats["recorded"] == stats["sent"] == stats["dropped_total"] == 0
    assert stats["queue_depth"] == stats["in_flight"] == stats["retries"] == stats["batches"] == 0
    assert stats["state"] == "new"
    assert stats["mode"] is None
    assert stats["last_error"] is None
    assert stats["endpoint"].startswith("http")


def test_events_after_shutdown_are_counted_and_balanced() -> None:
    """Events recorded on a closed client are dropped as ``shutdown`` and keep the books exact."""
    hb = stuck_client(10)
    agent = hb.agent("closing")
    hb.shutdown(timeout=0.2)
    before = hb.stats()
    assert_balanced(before)
    for i in range(3):
        agent.event("custom", {"i": i})
    after = hb.stats()
    assert after["dropped"]["shutdown"] == before["dropped"]["shutdown"] + 3
    assert after["queue_depth"] == 0
    assert_balanced(after)


def test_flush_with_nothing_recorded_returns_at_once() -> None:
    """A flush with nothing to deliver returns immediately and reports success."""
    hb = HiveBoard(api_key="hb_x", endpoint="http://127.0.0.1:9", shutdown_timeout=0.2)
    try:
        started = time.monotonic()
        result = hb.flush(timeout=10)
        assert time.monotonic() - started < 1.0
        assert result == FlushResult(delivered=0, dropped=0, pending=0, timed_out=False)
        assert bool(result) is True
    finally:
        hb.shutdown(timeout=0.2)


def test_invalid_drop_policy_is_a_config_error() -> None:
    """Only the drop policies "oldest" and "newest" exist."""
    with pytest.raises(HiveLoopConfigError, match="drop_policy"):
        HiveBoard(api_key="hb_test_x", enabled=False, drop_policy="random")  # type: ignore[arg-type]


# -- EventQueue on its own: no client, no loop, no server --------------------------------------


def _queue(max_size: int = 10, batch_size: int = 4, **kw: Any) -> tuple[EventQueue, list[str]]:
    woken: list[str] = []
    q = EventQueue(object(), max_size=max_size, batch_size=batch_size, **kw)
    with q.lock:
        q.attach_locked(lambda: woken.append("wake"))
    return q, woken


def _event(i: int) -> tuple[Any, ...]:
    return (None, 0, "custom", None, None, {"i": i}, None, None)


def test_queue_accounts_each_event_in_exactly_one_place() -> None:
    q, _ = _queue()
    for i in range(6):
        q.route.put(_event(i))
    taken = q.take(4)
    assert [r[5]["i"] for r in taken] == [0, 1, 2, 3]
    assert q.counts()["in_flight"] == 4
    q.give_back(taken[2:])
    assert [r[5]["i"] for r in q.records()] == [2, 3, 4, 5]
    q.settle(1, None)
    q.settle(1, "rejected")
    counts = q.counts()
    assert counts["sent"] == 1
    assert counts["dropped"]["rejected"] == 1
    assert (counts["queue_depth"], counts["in_flight"], counts["recorded"]) == (4, 0, 6)
    assert_balanced(counts)


def test_queue_wakes_its_consumer_once_per_batch_and_rearms() -> None:
    q, woken = _queue(batch_size=4)
    for i in range(10):
        q.route.put(_event(i))
    assert woken == ["wake"]  # the fourth record woke it; the rest took the fast path
    assert q.wake_pending
    q.take(10)
    assert q.rearm() is False
    for i in range(4):
        q.route.put(_event(i))
    assert woken == ["wake", "wake"]


def test_queue_overflow_drops_by_policy_and_keeps_markers() -> None:
    q, _ = _queue(max_size=4, batch_size=100)
    marker = q.mark()
    for i in range(6):
        q.route.put(_event(i))
    # The marker takes a place (the queue's length bounds memory) but is never dropped.
    assert q.counts()["dropped"]["queue_full"] == 3
    assert q.records()[0] is marker
    assert [r[5]["i"] for r in q.records()[1:]] == [3, 4, 5]
    newest, _ = _queue(max_size=4, batch_size=100, drop_policy="newest")
    for i in range(6):
        newest.route.put(_event(i))
    assert [r[5]["i"] for r in newest.records()] == [0, 1, 2, 3]
    assert_balanced(newest.counts())


@pytest.mark.parametrize(
    ("policy", "kept"), [("oldest", [10, 11, 12, 13, 14]), ("newest", [0, 1, 2, 3, 4])]
)
def test_records_given_back_to_a_queue_that_filled_meanwhile_keep_the_bound(
    policy: DropPolicy, kept: list[int]
) -> None:
    """The sender hands back what it took while the app refilled the queue: still max_size."""
    q, _ = _queue(max_size=6, batch_size=100, drop_policy=policy)
    for i in range(5):
        q.route.put(_event(i))
    taken = q.take(5)
    marker = q.mark()
    for i in range(10, 15):
        q.route.put(_event(i))
    q.give_back(taken)
    records = q.records()
    assert len(records) == 6
    assert marker in records  # a flush marker is never dropped
    assert [r[5]["i"] for r in records if r is not marker] == kept
    counts = q.counts()
    assert counts["queue_depth"] == 5
    assert counts["dropped"]["queue_full"] == 5
    assert_balanced(counts)


def test_queue_without_a_consumer_asks_its_owner_once() -> None:
    asked: list[int] = []
    q = EventQueue(object(), max_size=10, batch_size=4, on_demand=lambda: asked.append(1))
    q.route.put(_event(0))
    assert asked == [1]  # every record asks until a consumer attaches
    with q.lock:
        q.attach_locked(lambda: None)
    q.route.put(_event(1))
    assert asked == [1]


def test_closed_and_disabled_queues_count_what_they_refuse() -> None:
    q, _ = _queue()
    q.route.put(_event(0))
    with q.lock:
        q.close_locked()
    q.route.put(_event(1))
    q.discard_all("shutdown")
    counts = q.counts()
    assert counts["dropped"]["shutdown"] == 2
    assert_balanced(counts)
    off = EventQueue(object(), max_size=10, batch_size=4, enabled=False)
    off.route.put(_event(0))
    assert off.counts()["dropped"]["disabled"] == 1


def test_a_tap_sees_records_first_and_can_keep_them() -> None:
    owner = object()
    q = EventQueue(owner, max_size=10, batch_size=4)
    seen: list[Any] = []

    class Keep:
        def offer(self, who: object, rec: Any) -> bool:
            seen.append((who, rec))
            return True

    tap = Keep()
    add_tap(tap)
    try:
        q.route.put(_event(0))
    finally:
        remove_tap(tap)
    assert seen == [(owner, _event(0))]
    assert len(q) == 0
    q.route.put(_event(1))
    assert len(seen) == 1


def test_a_stash_keeps_encoded_batches_in_flight_for_the_next_consumer() -> None:
    q, _ = _queue()
    q.route.put(_event(0))
    q.take(1)
    q.stash("agent", [b"{}"])
    assert q.has_work
    assert q.unstash() == ("agent", [b"{}"])
    assert q.unstash() is None
    assert q.counts()["in_flight"] == 1
