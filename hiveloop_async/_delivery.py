"""Delivery decisions without I/O: how events become batches, and what a response means.

* :class:`Batcher` groups encoded events per agent into batches of at most ``batch_size``
  events and :data:`~hiveloop_async._wire.MAX_BATCH_BYTES` bytes;
* :func:`classify` turns one HTTP response (status, body, ``Retry-After``) into an
  :class:`Outcome`: delivered, partially accepted (207), split (400/413/422 on more than one
  event), retry after N seconds (429, 5xx, network errors), unauthorized (401/403), or
  rejected;
* :func:`retry_delay` applies the retry deadline and shutdown to a proposed delay.

Pure functions and plain objects: :mod:`._transport` performs the requests and applies the
outcomes to the queue. Nothing here raises for any response.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, TypeVar

import orjson

from ._wire import MAX_BATCH_BYTES

#: Backoff for 5xx and network errors: full jitter over an exponential ceiling.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: Delay for a 429 that names none.
DEFAULT_RETRY_AFTER = 2.0
#: The longest wait a server may ask for.
MAX_RETRY_AFTER = 300.0
#: While shutting down, no backoff sleep is longer than this.
SHUTDOWN_BACKOFF_CAP = 0.2
#: What the envelope and the body's brackets add to a batch, in bytes (an upper bound).
ENVELOPE_OVERHEAD = 64
#: Status of a request that got no HTTP response (network error, timeout).
NETWORK_ERROR = -1

Kind = Literal["delivered", "partial", "split", "retry", "unauthorized", "rejected"]


@dataclass(frozen=True)
class Outcome:
    """What to do with a batch after one response.

    ``sent``: events accepted. ``drops``: events given up, per drop reason. ``codes``:
    the server's rejection codes (for the per-code log). ``delay``: seconds before a retry
    (``retry``). ``error``: the text for ``stats()["last_error"]``, None to keep the last.
    """

    kind: Kind
    sent: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0
    error: str | None = None


def classify(
    status: int,
    body: bytes | None,
    retry_after: str | None,
    n: int,
    attempt: int,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
    now: Callable[[], float] = time.time,
) -> Outcome:
    """Classify the response to a batch of ``n`` events, sent for the ``attempt``-th time.

    ``status`` is :data:`NETWORK_ERROR` when no response came. ``uniform`` draws the jitter
    and ``now`` gives wall time for an HTTP-date ``Retry-After`` (parameters for tests).
    """
    if status == 200:
        return Outcome("delivered", sent=n)
    if status == 207:
        return _partial(body, n)
    if status in (400, 413, 422):
        error = f"HTTP {status}: {error_text(body)}"
        if n == 1:
            return Outcome(
                "rejected",
                drops={"rejected": 1},
                codes={"validation_error": 1},
                error=error,
            )
        return Outcome("split", error=error)
    if status in (401, 403):
        return Outcome(
            "unauthorized", drops={"unauthorized": n}, error=f"HTTP {status}: {error_text(body)}"
        )
    if status == 429:
        return Outcome(
            "retry",
            delay=parse_retry_after(body, retry_after, now),
            error="HTTP 429: rate limited",
        )
    if status >= 500 or status < 0:
        delay = uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
        return Outcome("retry", delay=delay, error=f"HTTP {status}" if status >= 500 else None)
    return Outcome("rejected", drops={"rejected": n}, error=f"HTTP {status}: {error_text(body)}")


def _partial(body: bytes | None, n: int) -> Outcome:
    """207: accepted events are sent; rejected ones are dropped by the server's reason."""
    try:
        info = orjson.loads(body or b"{}")
        errors = info.get("errors") or []
        rejected = int(info.get("rejected", len(errors)))
    except Exception:
        errors, rejected = [], 0
    rejected = max(0, min(rejected, n))
    codes: dict[str, int] = {}
    oversize = 0
    for err in errors:
        code = str(err.get("error", "unknown")) if isinstance(err, dict) else "unknown"
        codes[code] = codes.get(code, 0) + 1
        if code == "payload_too_large":
            oversize += 1
    oversize = min(oversize, rejected)
    drops = {}
    if oversize:
        drops["oversize"] = oversize
    if rejected - oversize:
        drops["rejected"] = rejected - oversize
    return Outcome(
        "partial",
        sent=n - rejected,
        drops=drops,
        codes=codes,
        error=f"HTTP 207: {rejected} events rejected" if rejected else None,
    )


def retry_delay(delay: float, *, closing: bool, now: float, deadline: float) -> float | None:
    """The delay to wait before retrying, or None when the retry deadline forbids it.

    While shutting down no delay is longer than :data:`SHUTDOWN_BACKOFF_CAP`.
    """
    if closing:
        delay = min(delay, SHUTDOWN_BACKOFF_CAP)
    if now + delay > deadline:
        return None
    return delay


def error_text(body: bytes | None) -> str:
    """The server's error message from a response body, at most 200 characters."""
    if not body:
        return ""
    try:
        info = orjson.loads(body)
        if isinstance(info, dict):
            return str(info.get("message") or info.get("error") or info.get("detail") or "")[:200]
    except orjson.JSONDecodeError:
        pass
    return body[:200].decode("utf-8", "replace")


def parse_retry_after(
    body: bytes | None, header: str | None, now: Callable[[], float] = time.time
) -> float:
    """Delay for a 429: ``details.retry_after_seconds``, else ``Retry-After``, else 2 s.

    ``Retry-After`` may be seconds or an HTTP date; every delay is capped at 300 s.
    """
    try:
        info = orjson.loads(body or b"{}")
        value = info.get("details", {}).get("retry_after_seconds")
        if value is not None and float(value) >= 0:
            return min(float(value), MAX_RETRY_AFTER)
    except Exception:
        pass
    if header:
        try:
            return min(max(0.0, float(header)), MAX_RETRY_AFTER)
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
                return min(max(0.0, when.timestamp() - now()), MAX_RETRY_AFTER)
            except (TypeError, ValueError):
                pass
    return DEFAULT_RETRY_AFTER


_K = TypeVar("_K")


class _Group:
    __slots__ = ("events", "size")

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.size = ENVELOPE_OVERHEAD


class Batcher(Generic[_K]):
    """Groups encoded events per key (an agent) into batches within HiveBoard's limits.

    :meth:`add` returns a full batch to send before the event joins a new one; :meth:`drain`
    returns every batch still forming. One per drain; not thread-safe.
    """

    __slots__ = ("_batch_size", "_group", "_groups", "_key")

    #: An encoded event longer than this can never fit a batch.
    MAX_EVENT_BYTES = MAX_BATCH_BYTES - ENVELOPE_OVERHEAD

    def __init__(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self._groups: dict[_K, _Group] = {}
        # The group of the key of the last event (consecutive events mostly share one).
        self._key: Any = _NO_KEY
        self._group = _Group()

    def add(self, key: _K, data: bytes) -> list[bytes] | None:
        """Add one event (at most :attr:`MAX_EVENT_BYTES`); return a full batch of ``key``.

        The returned batch (events in order) must be sent before this event's batch.
        """
        group = self._group
        if key is not self._key:
            self._key = key
            found = self._groups.get(key)
            if found is None:
                group = self._groups[key] = _Group()
            else:
                group = found
            self._group = group
        size = len(data) + 1  # and its comma
        full = None
        events = group.events
        if events and (len(events) >= self._batch_size or group.size + size > MAX_BATCH_BYTES):
            full = group.events
            group = self._group = self._groups[key] = _Group()
        group.events.append(data)
        group.size += size
        return full

    def forget_position(self) -> None:
        """The next event starts a lookup (call after sending part of the batches)."""
        self._key = _NO_KEY

    def pending(self) -> list[tuple[_K, list[bytes]]]:
        """The batches still forming, without removing them."""
        return [(k, g.events) for k, g in self._groups.items() if g.events]

    def pop(self) -> tuple[_K, list[bytes]] | None:
        """Remove and return one forming batch (oldest key first), or None."""
        for key in self._groups:
            group = self._groups.pop(key)
            self._key = _NO_KEY
            return key, group.events
        return None


_NO_KEY: Any = object()
