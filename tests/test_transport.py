"""The sender against a real ingest server on 127.0.0.1 that injects faults.

Each test checks exactly which events arrived, which were counted as dropped and why, and
that nothing was raised into the caller.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import hiveloop_async as hl
from hiveloop_async import _delivery

from .faultserver import FaultServer, free_port

KEY = "hb_test_transport_0123456789abcdef"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shrink backoff so retry tests take milliseconds, not seconds; collect garbage after
    each test so a leaked socket is reported against the test that leaked it."""
    monkeypatch.setattr(_delivery, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(_delivery, "BACKOFF_CAP", 0.05)
    yield
    gc.collect()


def client(url: str, **kw: Any) -> hl.HiveBoard:
    kw.setdefault("flush_interval", 0.05)
    return hl.HiveBoard(api_key=KEY, endpoint=url, **kw)


def record(hb: hl.HiveBoard, n: int, agent_id: str = "agent-1") -> list[int]:
    agent = hb.agent(agent_id, heartbeat_interval=0)
    for i in range(n):
        agent.event("custom", {"kind": "probe", "i": i})
    return list(range(n))


def probes(srv: FaultServer) -> list[int]:
    return sorted(
        e["payload"]["i"] for e in srv.events if (e.get("payload") or {}).get("kind") == "probe"
    )


def test_server_errors_then_recovery_delivers_everything() -> None:
    """Three 500s, then 200: every event arrives once and retries are counted."""
    with FaultServer(lambda n, ev: ("status", 500, None, None) if n < 3 else "ok") as srv:
        hb = client(srv.url)
        sent = record(hb, 50)
        result = hb.flush(10)
        assert result.timed_out is False
        assert probes(srv) == sent
        stats = hb.stats()
        assert stats["retries"] == 3
        assert stats["dropped_total"] == 0
        assert srv.statuses[:3] == [500, 500, 500]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["body", "header", "http-date"])
def test_429_waits_for_the_server_delay(how: str) -> None:
    """A 429 is retried after the delay it names (body, or Retry-After seconds/date)."""
    answered: list[float] = []

    def behave(n: int, events: list[dict[str, Any]]) -> Any:
        answered.append(time.monotonic())
        if n > 0:
            return "ok"
        if how == "body":
            body = {"error": "rate_limit_exceeded", "details": {"retry_after_seconds": 1}}
            return ("status", 429, body, None)
        if how == "header":
            return ("status", 429, {"error": "rate_limit_exceeded"}, {"Retry-After": "1"})
        from email.utils import formatdate

        date = formatdate(time.time() + 2, usegmt=True)
        return ("status", 429, {"error": "rate_limit_exceeded"}, {"Retry-After": date})

    with FaultServer(behave) as srv:
        hb = client(srv.url)
        sent = record(hb, 10)
        assert hb.flush(10)
        assert probes(srv) == sent
        assert answered[1] - answered[0] >= 0.9
        assert hb.stats()["dropped_total"] == 0


def test_400_isolates_the_poisoned_event() -> None:
    """A 400 splits the batch until the one event the server refuses is alone."""

    def behave(n: int, events: list[dict[str, Any]]) -> Any:
        if any(e.get("payload", {}).get("i") == 13 for e in events):
            return ("status", 400, {"error": "validation_error", "message": "bad"}, None)
        return "ok"

    with FaultServer(behave) as srv:
        hb = client(srv.url, batch_size=100)
        sent = record(hb, 40)
        assert hb.flush(10)
        assert probes(srv) == [i for i in sent if i != 13]
        stats = hb.stats()
        assert stats["dropped"]["rejected"] == 1
        assert stats["dropped_total"] == 1


def test_401_stops_sending_and_logs_once_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """401: one clear error line, no key material, later events counted as unauthorized."""
    with FaultServer(
        lambda n, ev: ("status", 401, {"error": "authentication_failed"}, None)
    ) as srv:
        hb = client(srv.url)
        with caplog.at_level(logging.DEBUG, logger="hiveloop_async"):
            record(hb, 5)
            hb.flush(5)
            requests_after_401 = srv.requests
            record(hb, 7, agent_id="agent-2")
            hb.flush(5)
        assert srv.requests == requests_after_401 == 1
        stats = hb.stats()
        assert stats["sent"] == 0
        assert stats["dropped"]["unauthorized"] == 5 + 1 + 7 + 1  # + agent_registered events
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        text = caplog.text + repr(hb) + repr(stats) + repr(hb.settings)
        assert "transport_0123" not in text
        assert "Bearer" not in text


def test_207_counts_rejected_events_by_reason() -> None:
    """207: accepted events count as sent, the rejected ones as dropped with their reason."""

    def behave(n: int, events: list[dict[str, Any]]) -> Any:
        errors = [
            {"event_id": e["event_id"], "error": "invalid_event_type", "message": "x"}
            for e in events
            if e.get("payload", {}).get("i") in (3, 4)
        ]
        errors += [
            {"event_id": e["event_id"], "error": "payload_too_large", "message": "x"}
            for e in events
            if e.get("payload", {}).get("i") == 5
        ]
        if not errors:
            return "ok"
        body = {"accepted": len(events) - len(errors), "rejected": len(errors), "errors": errors}
        return ("status", 207, body, None)

    with FaultServer(behave) as srv:
        hb = client(srv.url)
        sent = record(hb, 10)
        assert hb.flush(5)
        assert probes(srv) == [i for i in sent if i not in (3, 4, 5)]
        stats = hb.stats()
        assert stats["dropped"]["rejected"] == 2
        assert stats["dropped"]["oversize"] == 1
        assert stats["sent"] == 10 + 1 - 3


def test_connection_refused_is_retried_then_given_up() -> None:
    """Nothing listening: retried under the batch deadline, then counted, never raised."""
    hb = client(f"http://127.0.0.1:{free_port()}", retry_deadline=0.5)
    record(hb, 20)
    result = hb.flush(5)
    assert not result.timed_out
    stats = hb.stats()
    assert stats["dropped"]["retries_exhausted"] == 21
    assert stats["retries"] >= 1
    assert "network error" in (stats["last_error"] or "")


def test_server_that_never_answers_times_out_and_retries() -> None:
    """A hung request times out, is retried, and the retry is delivered."""
    with FaultServer(lambda n, ev: "hang" if n == 0 else "ok") as srv:
        hb = client(srv.url, request_timeout=0.3)
        sent = record(hb, 10)
        assert hb.flush(10)
        assert probes(srv) == sent
        assert srv.statuses[0] == "hang"
        assert hb.stats()["retries"] == 1


def test_server_closing_mid_response_is_retried() -> None:
    """A connection closed in the middle of a response is retried; events arrive (maybe twice,
    since the server had received them: HiveBoard dedups by event_id)."""
    with FaultServer(lambda n, ev: "close" if n == 0 else "ok") as srv:
        hb = client(srv.url)
        sent = record(hb, 10)
        assert hb.flush(10)
        assert sorted(set(probes(srv))) == sent
        assert hb.stats()["dropped_total"] == 0


@pytest.mark.slow
def test_zero_loss_through_an_outage() -> None:
    """100,000 events through a server that fails for a while and recovers: all arrive once."""
    failing_until = time.monotonic() + 2.0

    def behave(n: int, events: list[dict[str, Any]]) -> Any:
        if time.monotonic() < failing_until:
            return ("status", 503, None, None)
        return "ok"

    with FaultServer(behave) as srv:
        hb = client(srv.url, max_queue_size=200_000, batch_size=500)
        agent = hb.agent("bulk", heartbeat_interval=0)
        for i in range(100_000):
            agent.event("custom", {"kind": "probe", "i": i})
        result = hb.flush(60)
        assert result.timed_out is False
        ids = srv.event_ids()
        got = probes(srv)
        assert len(set(ids)) == len(ids) == 100_001
        assert got == list(range(100_000))
        assert hb.stats()["dropped_total"] == 0
        assert srv.statuses.count(503) >= 1


def test_flush_returns_only_after_delivery() -> None:
    """The server has the events before flush() returns (hiveloop 0.2.0's returned at once)."""
    with FaultServer() as srv:
        hb = client(srv.url, flush_interval=60)
        sent = record(hb, 25)
        result = hb.flush(5)
        assert probes(srv) == sent
        assert result.delivered == 26
        assert result.pending == 0


async def test_aflush_returns_only_after_delivery_on_the_app_loop() -> None:
    """Loop mode: await aflush() returns once the server has every earlier event."""
    with FaultServer() as srv:
        async with client(srv.url, flush_interval=60) as hb:
            sent = record(hb, 25)
            result = await hb.aflush(5)
            assert probes(srv) == sent
            assert result.delivered >= 25
            assert hb.stats()["mode"] == "loop"


@pytest.mark.slow
def test_shutdown_against_a_hung_server_is_bounded_thread_mode() -> None:
    """shutdown(2.0) returns within 2.2 s when the server never answers; the loss is counted."""
    with FaultServer(lambda n, ev: "hang") as srv:
        hb = client(srv.url, request_timeout=30)
        record(hb, 30)
        assert srv.wait_for(lambda: srv.requests >= 1)
        t0 = time.monotonic()
        result = hb.shutdown(2.0)
        elapsed = time.monotonic() - t0
        assert elapsed < 2.2
        assert result.timed_out is True
        assert hb.stats()["dropped"]["shutdown"] == 31


@pytest.mark.slow
async def test_aclose_against_a_hung_server_is_bounded_loop_mode() -> None:
    """await aclose(2.0) returns within 2.2 s when the server never answers."""
    with FaultServer(lambda n, ev: "hang") as srv:
        hb = client(srv.url, request_timeout=30)
        await hb.start()
        record(hb, 30)
        await asyncio.to_thread(srv.wait_for, lambda: srv.requests >= 1)
        t0 = time.monotonic()
        result = await hb.aclose(2.0)
        assert time.monotonic() - t0 < 2.2
        assert result.timed_out is True
        assert hb.stats()["dropped"]["shutdown"] == 31


def test_events_from_16_threads_arrive_complete() -> None:
    """Events recorded from 16 threads at once all arrive."""
    import threading

    with FaultServer() as srv:
        hb = client(srv.url, max_queue_size=20_000)
        agent = hb.agent("threads", heartbeat_interval=0)

        def work(t: int) -> None:
            for i in range(1000):
                agent.event("custom", {"kind": "probe", "i": t * 1000 + i})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert hb.flush(20)
        assert probes(srv) == list(range(16_000))


async def test_events_from_threads_and_the_loop_at_once_arrive_complete() -> None:
    """Loop mode: the loop and worker threads record concurrently; nothing is lost."""
    with FaultServer() as srv:
        async with client(srv.url) as hb:
            agent = hb.agent("mixed", heartbeat_interval=0)

            def work(t: int) -> None:
                for i in range(500):
                    agent.event("custom", {"kind": "probe", "i": t * 500 + i})

            async def on_loop() -> None:
                for i in range(500):
                    agent.event("custom", {"kind": "probe", "i": 8 * 500 + i})
                    if i % 50 == 0:
                        await asyncio.sleep(0)

            await asyncio.gather(on_loop(), *(asyncio.to_thread(work, t) for t in range(8)))
            assert await hb.aflush(20)
            assert probes(srv) == list(range(9 * 500))


def test_awkward_payload_values_arrive_with_the_rest_of_the_batch() -> None:
    """datetime, Decimal, bytes, sets, dataclasses, objects, NaN/inf and cycles never cost
    the batch: every event arrives, the odd values converted."""
    import dataclasses
    import datetime
    import decimal

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    cycle: dict[str, Any] = {"name": "loop"}
    cycle["self"] = cycle
    awkward = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "price": decimal.Decimal("1.50"),
        "raw": b"bytes\xff",
        "tags": {"a"},
        "point": Point(1, 2),
        "obj": Opaque(),
        "nan": float("nan"),
        "inf": float("inf"),
        "cycle": cycle,
        "huge": 2**80,
    }
    with FaultServer() as srv:
        hb = client(srv.url)
        agent = hb.agent("odd", heartbeat_interval=0)
        agent.event("custom", {"kind": "probe", "i": 0})
        agent.event("custom", {"kind": "probe", "i": 1, "data": awkward})
        agent.event("custom", {"kind": "probe", "i": 2})
        assert hb.flush(5)
        assert probes(srv) == [0, 1, 2]
        data = next(e for e in srv.events if e["payload"].get("i") == 1)["payload"]["data"]
        assert data["when"].startswith("2026-01-02T03:04:05")
        assert data["price"] == 1.5
        assert data["raw"].startswith("bytes")
        assert data["tags"] == ["a"]
        assert data["point"] == {"x": 1, "y": 2}
        assert data["obj"] == "<Opaque>"
        assert data["nan"] is None
        assert data["inf"] is None
        assert data["cycle"]["self"] == "<cycle>"
        assert data["huge"] == str(2**80)
        assert hb.stats()["dropped_total"] == 0


@pytest.fixture
def hung() -> Iterator[FaultServer]:
    with FaultServer(lambda n, ev: "hang") as srv:
        yield srv


@pytest.mark.slow
def test_recording_never_blocks_while_the_server_hangs(hung: FaultServer) -> None:
    """With the server hung and the queue full, recording still returns at once and drops
    the oldest events, counted."""
    hb = client(hung.url, max_queue_size=1000, request_timeout=30)
    agent = hb.agent("busy", heartbeat_interval=0)
    for i in range(20_000):
        agent.event("custom", {"kind": "probe", "i": i})
    stats = hb.stats()
    hb.shutdown(1.0)  # before the hung server goes away under its requests
    assert stats["dropped"]["queue_full"] > 0
    assert stats["queue_depth"] <= 1000
    assert stats["recorded"] == 20_001
    assert (
        stats["recorded"]
        == stats["sent"] + stats["dropped_total"] + stats["queue_depth"] + stats["in_flight"]
    )


def test_batches_are_split_to_stay_under_one_megabyte() -> None:
    """Large events are sent in several requests, none over 1 MB, all events delivered."""
    bodies: list[int] = []

    def behave(n: int, events: list[dict[str, Any]]) -> Any:
        import orjson

        bodies.append(len(orjson.dumps({"events": events})))
        return "ok"

    with FaultServer(behave) as srv:
        hb = client(srv.url, batch_size=500)
        agent = hb.agent("big", heartbeat_interval=0)
        for i in range(100):
            agent.event("custom", {"kind": "probe", "i": i, "blob": "x" * 30_000})
        assert hb.flush(10)
        assert probes(srv) == list(range(100))
        assert len(bodies) >= 3
        assert max(bodies) < 1_000_000


def test_a_garbled_response_is_retried() -> None:
    """A response that is not HTTP at all (bad status line) is retried, then delivered."""
    with FaultServer(lambda n, ev: "garbage" if n == 0 else "ok") as srv:
        hb = client(srv.url)
        sent = record(hb, 5)
        assert hb.flush(10)
        assert sorted(set(probes(srv))) == sent
        assert hb.stats()["retries"] == 1
        assert hb.stats()["dropped_total"] == 0


def test_an_unreadable_207_body_is_accounted_never_raised() -> None:
    """A 207 whose body is not JSON counts the batch as accepted and raises nothing."""
    with FaultServer(lambda n, ev: ("status", 207, None, None)) as srv:
        hb = client(srv.url)
        record(hb, 3)
        assert hb.flush(5)
        stats = hb.stats()
        assert stats["sent"] == stats["recorded"] == 4


class _KeyRotation:
    """A server that refuses the key until ``valid`` is set, then accepts everything."""

    def __init__(self) -> None:
        self.valid = False

    def __call__(self, n: int, events: list[dict[str, Any]]) -> Any:
        if self.valid:
            return "ok"
        return ("status", 401, {"error": "authentication_failed"}, None)


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def test_a_key_that_becomes_valid_resumes_delivery_in_thread_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401 in thread mode: one error line, nothing sent until a probe succeeds, then all."""
    rotation = _KeyRotation()
    with FaultServer(rotation) as srv:
        hb = client(srv.url, auth_retry_interval=0.3)
        with caplog.at_level(logging.DEBUG, logger="hiveloop_async"):
            record(hb, 5)
            hb.flush(5)
            refused_requests = srv.requests
            record(hb, 4)  # within the interval: counted, not sent
            hb.flush(5)
            assert srv.requests == refused_requests
            rotation.valid = True
            time.sleep(0.35)  # the probe interval itself is what this test is about
            agent = hb.agent("agent-1", heartbeat_interval=0)
            for i in range(5, 8):
                agent.event("custom", {"kind": "probe", "i": i})
            assert _wait(lambda: hb.flush(5) and probes(srv) == [5, 6, 7])
        stats = hb.stats()
        assert stats["sent"] == 3
        assert stats["dropped"]["unauthorized"] == 5 + 1 + 4
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "transport_0123" not in caplog.text
        hb.shutdown(2)


async def test_a_key_that_becomes_valid_resumes_delivery_in_loop_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401 on the application's loop: the same behaviour (it used to never try again)."""
    rotation = _KeyRotation()
    with FaultServer(rotation) as srv:
        async with client(srv.url, auth_retry_interval=0.3) as hb:
            with caplog.at_level(logging.DEBUG, logger="hiveloop_async"):
                record(hb, 5)
                await hb.aflush(5)
                refused_requests = srv.requests
                record(hb, 4)
                await hb.aflush(5)
                assert srv.requests == refused_requests
                rotation.valid = True
                await asyncio.sleep(0.35)
                agent = hb.agent("agent-1", heartbeat_interval=0)
                for i in range(5, 8):
                    agent.event("custom", {"kind": "probe", "i": i})
                await hb.aflush(5)
                assert probes(srv) == [5, 6, 7]
            stats = hb.stats()
            assert stats["sent"] == 3
            assert stats["dropped"]["unauthorized"] == 5 + 1 + 4
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1
