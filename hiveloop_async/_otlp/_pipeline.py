"""The OTLP destination's state and accounting: spans assembled, waiting, in flight, done.

One :class:`SpanPipeline` per client, owned like the event queue (it outlives a sender
handing over to another). The engine feeds it every encoded event; the OTLP sender takes
batches of finished spans and settles each one as sent or dropped for a reason. No I/O.

The invariant, under one lock: ``finished == sent + dropped + pending + in_flight``, where
``finished`` counts every span the assembler completed (``close()`` included). Spans that
never finish (evicted while open and never ended) are counted in ``evicted``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, Protocol, TypedDict

import orjson

from ._config import OTLPSettings
from ._spans import Span, SpanAssembler

#: Every reason a span can be dropped for (``stats()["otlp"]["dropped"]``).
SPAN_DROP_REASONS = ("queue_full", "rejected", "retries_exhausted", "shutdown", "serialization")
#: Spans waiting to be sent, at most (the oldest are dropped beyond, as ``queue_full``).
DEFAULT_MAX_PENDING_SPANS = 100_000
#: Spans per export request (the OpenTelemetry SDK's default ``max_export_batch_size``).
DEFAULT_SPAN_BATCH = 512


class _Resolvable(Protocol):
    def resolve(self) -> None: ...


class OTLPCounts(TypedDict):
    """``stats()["otlp"]``: the OTLP destination's own accounting, in spans."""

    url: str
    protocol: str
    finished: int
    sent: int
    dropped: dict[str, int]
    dropped_total: int
    pending: int
    in_flight: int
    open_spans: int
    evicted: int
    requests: int
    retries: int
    partial_rejected: int
    last_error: str | None


class SpanPipeline:
    """See the module docstring. Thread-safe; no method blocks beyond its lock or raises."""

    def __init__(
        self,
        settings: OTLPSettings,
        *,
        max_pending: int = DEFAULT_MAX_PENDING_SPANS,
        batch_size: int = DEFAULT_SPAN_BATCH,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.lock = threading.Lock()
        self._assembler = SpanAssembler(
            service_name=settings.service_name, capture_content=settings.capture_content
        )
        self._pending: deque[Span] = deque()
        self._max_pending = max_pending
        self._finished = 0
        self._done = 0  # sent + dropped (spans settle in the order they were taken)
        self.sent = 0
        self.in_flight = 0
        self._dropped: Counter[str] = Counter()
        self.requests = 0
        self.retries = 0
        self.partial_rejected = 0
        self.last_error: str | None = None
        self._waiters: list[tuple[int, _Resolvable]] = []
        self._closed_open = False

    # -- producer (the engine's drain) ---------------------------------------------------------

    def feed(self, envelope: Mapping[str, Any], data: bytes) -> int:
        """Add one encoded wire event of the agent ``envelope``; return the pending count."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return len(self._pending)
        return self.feed_event(envelope, event)

    def feed_event(self, envelope: Mapping[str, Any], event: Any) -> int:
        """:meth:`feed` of an event already decoded (the dict ``orjson.loads`` gives for it).

        The dict is only read. Returns the pending count.
        """
        with self.lock:
            spans = self._assembler.add(envelope, event)
            if spans:
                self._add_locked(spans)
            return len(self._pending)

    def close_open(self, now_ns: int | None = None) -> None:
        """End every open span now (ERROR "still open at shutdown") and queue it. Once."""
        with self.lock:
            if self._closed_open:
                return
            self._closed_open = True
            self._add_locked(self._assembler.close(time.time_ns() if now_ns is None else now_ns))

    def _add_locked(self, spans: list[Span]) -> None:
        self._finished += len(spans)
        pending = self._pending
        pending.extend(spans)
        over = len(pending) - self._max_pending
        if over > 0:
            for _ in range(over):
                pending.popleft()
            self._drop_locked(over, "queue_full")

    # -- consumer (the OTLP sender) ------------------------------------------------------------

    def take(self, limit: int | None = None) -> list[Span]:
        """Take up to ``limit`` (default ``batch_size``) waiting spans, oldest first."""
        n = self.batch_size if limit is None else limit
        with self.lock:
            pending = self._pending
            out = [pending.popleft() for _ in range(min(n, len(pending)))]
            self.in_flight += len(out)
            return out

    def give_back(self, spans: list[Span]) -> None:
        """Return taken spans to the front (a sender cancelled without a verdict)."""
        with self.lock:
            self._pending.extendleft(reversed(spans))
            self.in_flight -= len(spans)

    def settle(self, n: int, reason: str | None) -> None:
        """``n`` spans in flight are done: sent (``reason`` None) or dropped for ``reason``."""
        if n <= 0:
            return
        with self.lock:
            self.in_flight -= n
            if reason is None:
                self.sent += n
                self._done += n
                self._resolve_locked()
            else:
                self._drop_locked(n, reason)

    def _drop_locked(self, n: int, reason: str) -> None:
        self._dropped[reason] += n
        self._done += n
        self._resolve_locked()

    def drop_all(self, reason: str) -> None:
        """Drop every waiting and in-flight span (the sender stopped for good)."""
        with self.lock:
            n = len(self._pending) + self.in_flight
            self._pending.clear()
            self.in_flight = 0
            if n:
                self._drop_locked(n, reason)
            self._resolve_locked()

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def pending_count(self) -> int:
        """Spans waiting to be taken (a snapshot, without the lock)."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in flight."""
        return not self._pending and not self.in_flight

    def note_request(self) -> None:
        self.requests += 1

    def note_retry(self) -> None:
        self.retries += 1

    def note_error(self, text: str) -> None:
        self.last_error = text

    def note_partial(self, rejected: int) -> None:
        self.partial_rejected += rejected

    # -- flush ---------------------------------------------------------------------------------

    def add_waiter(self, waiter: _Resolvable) -> None:
        """Resolve ``waiter`` once every span finished so far is sent or dropped."""
        with self.lock:
            upto = self._finished
            if self._done >= upto:
                waiter.resolve()
            else:
                self._waiters.append((upto, waiter))

    def _resolve_locked(self) -> None:
        if not self._waiters:
            return
        keep = []
        for upto, waiter in self._waiters:
            if self._done >= upto:
                waiter.resolve()
            else:
                keep.append((upto, waiter))
        self._waiters = keep

    def release_waiters(self) -> None:
        """Resolve every waiter (the sender stopped)."""
        with self.lock:
            for _, waiter in self._waiters:
                waiter.resolve()
            self._waiters.clear()

    # -- snapshot ------------------------------------------------------------------------------

    def counts(self) -> OTLPCounts:
        """One consistent snapshot of the OTLP accounting. Never blocks beyond the lock."""
        with self.lock:
            dropped = {reason: self._dropped.get(reason, 0) for reason in SPAN_DROP_REASONS}
            stats = self._assembler.stats
            return {
                "url": self.settings.url,
                "protocol": self.settings.protocol,
                "finished": self._finished,
                "sent": self.sent,
                "dropped": dropped,
                "dropped_total": sum(dropped.values()),
                "pending": len(self._pending),
                "in_flight": self.in_flight,
                "open_spans": self._assembler.open_spans,
                "evicted": stats.evicted,
                "requests": self.requests,
                "retries": self.retries,
                "partial_rejected": self.partial_rejected,
                "last_error": self.last_error,
            }
