"""Delivery policy (``_delivery.py``) without a loop or a server: batching and responses.

The fault-server suites (``test_transport.py``, ``test_end_to_end.py``) prove the same
behaviour end to end; these pin each decision down one input at a time.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import orjson
import pytest

from hiveloop_async import _delivery
from hiveloop_async._delivery import (
    DEFAULT_RETRY_AFTER,
    MAX_RETRY_AFTER,
    NETWORK_ERROR,
    SHUTDOWN_BACKOFF_CAP,
    Batcher,
    classify,
    error_text,
    parse_retry_after,
    retry_delay,
)
from hiveloop_async._wire import MAX_BATCH_BYTES


def no_jitter(lo: float, hi: float) -> float:
    """The ceiling of the jitter range: makes the backoff ceiling observable."""
    return hi


# -- classify --------------------------------------------------------------------------------


def test_200_delivers_every_event() -> None:
    out = classify(200, b"{}", None, 7, 0)
    assert (out.kind, out.sent, out.drops, out.error) == ("delivered", 7, {}, None)


def test_207_counts_accepted_and_rejected_by_reason() -> None:
    body = orjson.dumps(
        {
            "accepted": 7,
            "rejected": 3,
            "errors": [
                {"event_id": "a", "error": "payload_too_large"},
                {"event_id": "b", "error": "invalid_event_type"},
                {"event_id": "c", "error": "invalid_event_type"},
            ],
        }
    )
    out = classify(207, body, None, 10, 0)
    assert out.kind == "partial"
    assert out.sent == 7
    assert out.drops == {"oversize": 1, "rejected": 2}
    assert out.codes == {"payload_too_large": 1, "invalid_event_type": 2}
    assert out.error == "HTTP 207: 3 events rejected"


def test_207_with_nothing_rejected_keeps_the_last_error() -> None:
    out = classify(207, b'{"accepted": 4, "rejected": 0, "errors": []}', None, 4, 0)
    assert (out.sent, out.drops, out.error) == (4, {}, None)


@pytest.mark.parametrize("body", [b"not json", b"", None, b'{"rejected": "x"}', b"[1]"])
def test_207_with_an_unreadable_body_counts_everything_sent(body: bytes | None) -> None:
    out = classify(207, body, None, 5, 0)
    assert (out.kind, out.sent, out.drops) == ("partial", 5, {})


def test_207_never_rejects_more_than_the_batch() -> None:
    out = classify(207, b'{"rejected": 99}', None, 3, 0)
    assert out.sent == 0
    assert out.drops == {"rejected": 3}


@pytest.mark.parametrize("status", [400, 413, 422])
def test_validation_errors_split_a_batch_and_reject_a_single_event(status: int) -> None:
    body = b'{"message": "bad event"}'
    split = classify(status, body, None, 8, 0)
    assert split.kind == "split"
    assert split.error == f"HTTP {status}: bad event"
    single = classify(status, body, None, 1, 0)
    assert single.kind == "rejected"
    assert single.drops == {"rejected": 1}
    assert single.codes == {"validation_error": 1}


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_unauthorized_for_the_whole_batch(status: int) -> None:
    out = classify(status, b'{"error": "invalid key"}', None, 6, 0)
    assert out.kind == "unauthorized"
    assert out.drops == {"unauthorized": 6}
    assert out.error == f"HTTP {status}: invalid key"


def test_429_waits_as_long_as_the_server_asks() -> None:
    out = classify(429, b"{}", "7", 3, 0)
    assert (out.kind, out.delay, out.error) == ("retry", 7.0, "HTTP 429: rate limited")
    body = b'{"details": {"retry_after_seconds": 1.5}}'
    assert classify(429, body, "7", 3, 0).delay == 1.5  # the body's figure wins


@pytest.mark.parametrize("status", [500, 502, 503, 504, NETWORK_ERROR])
def test_server_and_network_errors_back_off_exponentially_with_full_jitter(status: int) -> None:
    ceilings = [classify(status, None, None, 1, a, uniform=no_jitter).delay for a in range(8)]
    assert ceilings[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(ceilings) == _delivery.BACKOFF_CAP
    drawn = classify(status, None, None, 1, 3).delay
    assert 0.0 <= drawn <= 4.0
    out = classify(status, None, None, 1, 0)
    assert out.error == (None if status == NETWORK_ERROR else f"HTTP {status}")


@pytest.mark.parametrize("status", [404, 405, 409, 418])
def test_other_client_errors_reject_the_batch(status: int) -> None:
    out = classify(status, b"nope", None, 4, 0)
    assert out.kind == "rejected"
    assert out.drops == {"rejected": 4}
    assert out.error == f"HTTP {status}: nope"


# -- retry_delay and Retry-After -------------------------------------------------------------


def test_retry_delay_respects_the_deadline_and_shutdown() -> None:
    assert retry_delay(2.0, closing=False, now=100.0, deadline=103.0) == 2.0
    assert retry_delay(4.0, closing=False, now=100.0, deadline=103.0) is None
    assert retry_delay(4.0, closing=True, now=100.0, deadline=103.0) == SHUTDOWN_BACKOFF_CAP
    assert retry_delay(0.1, closing=True, now=100.0, deadline=100.05) is None


def test_retry_after_as_seconds_date_and_garbage() -> None:
    assert parse_retry_after(None, "3") == 3.0
    assert parse_retry_after(None, "-4") == 0.0
    assert parse_retry_after(None, "100000") == MAX_RETRY_AFTER
    now = 1_700_000_000.0
    when = format_datetime(datetime.fromtimestamp(now + 42, timezone.utc), usegmt=True)
    assert parse_retry_after(None, when, now=lambda: now) == pytest.approx(42.0, abs=1.0)
    past = format_datetime(datetime.fromtimestamp(now - 42, timezone.utc), usegmt=True)
    assert parse_retry_after(None, past, now=lambda: now) == 0.0
    assert parse_retry_after(None, "soon") == DEFAULT_RETRY_AFTER
    assert parse_retry_after(b"{broken", None) == DEFAULT_RETRY_AFTER
    assert parse_retry_after(b'{"details": {"retry_after_seconds": -1}}', "5") == 5.0


def test_error_text_reads_message_error_or_detail_and_cuts_at_200() -> None:
    assert error_text(b'{"message": "m", "error": "e"}') == "m"
    assert error_text(b'{"error": "e"}') == "e"
    assert error_text(b'{"detail": "d"}') == "d"
    assert error_text(b"x" * 500) == "x" * 200
    assert error_text(None) == ""
    assert error_text(b"\xff\xfe plain") == "\ufffd\ufffd plain"


# -- Batcher ---------------------------------------------------------------------------------


def test_batcher_groups_per_agent_and_by_count() -> None:
    b: Batcher[str] = Batcher(batch_size=3)
    full = [b.add(agent, f"{agent}{i}".encode()) for i, agent in enumerate("aabab")]
    assert full == [None] * 5
    assert b.add("a", b"a5") == [b"a0", b"a1", b"a3"]  # a's batch was full: sent first
    assert b.pending() == [("a", [b"a5"]), ("b", [b"b2", b"b4"])]
    assert b.pop() == ("a", [b"a5"])
    assert b.pop() == ("b", [b"b2", b"b4"])
    assert b.pop() is None
    assert b.add("a", b"again") is None  # a popped key starts afresh
    assert b.pending() == [("a", [b"again"])]


def test_batcher_keeps_every_batch_under_the_byte_limit() -> None:
    b: Batcher[str] = Batcher(batch_size=500)
    event = b"x" * 100_000
    sent: list[list[bytes]] = []
    for _ in range(25):
        full = b.add("a", event)
        if full is not None:
            sent.append(full)
    while (rest := b.pop()) is not None:
        sent.append(rest[1])
    assert sum(len(batch) for batch in sent) == 25
    for batch in sent:
        body = b'{"envelope":{},"events":[' + b",".join(batch) + b"]}"
        assert len(body) <= MAX_BATCH_BYTES
    assert [len(batch) for batch in sent[:-1]] == [9] * (len(sent) - 1)


def test_an_event_at_the_largest_size_fits_alone() -> None:
    b: Batcher[str] = Batcher(batch_size=500)
    assert b.add("a", b"1") is None
    big = b"y" * Batcher.MAX_EVENT_BYTES
    assert b.add("a", big) == [b"1"]  # it does not fit beside another event
    assert b.pop() == ("a", [big])
    assert b.add("b", big) is None  # alone in a fresh batch: no empty batch before it
    assert b.pop() == ("b", [big])
