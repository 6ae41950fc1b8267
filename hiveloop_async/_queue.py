"""The event queue and its accounting: every recorded event is queued, in flight, sent or dropped.

One :class:`EventQueue` per client. It holds records, not events: the hot path must not
format anything, so a record is one of

* an ``ActionScope`` or a ``Task``, appended once when it opens and once when it closes (the
  same object: no allocation per event). Its ``opened`` flag is set when its opening event
  was taken (encoded by the sender or discarded here), so the second sighting is the closing
  event;
* a tuple ``(agent, t_ns, event_type, task, action_id, payload, severity, parent_event_id)``
  for every other event;
* a :class:`FlushMarker`, a point in the queue that a flush waits for (never an event).

The invariant, kept under one lock: ``recorded == sent + dropped + queued + in_flight``.
Events enter through :class:`Route` (what scopes and agents append to); the consumer (the
sender) only calls :meth:`EventQueue.take`, :meth:`~EventQueue.give_back`,
:meth:`~EventQueue.settle`, :meth:`~EventQueue.stash` and :meth:`~EventQueue.rearm`. The
queue knows nothing about I/O: it wakes its consumer through the callback given to
:meth:`~EventQueue.attach_locked`, and asks its owner for one through ``on_demand``.

Test helpers see records before the queue does through taps (:func:`add_tap`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypedDict

from ._internal import internal_error

__all__ = [
    "DROP_REASONS",
    "DropPolicy",
    "EventQueue",
    "FlushMarker",
    "QueueCounts",
    "Route",
    "Tap",
    "add_tap",
    "remove_tap",
]

#: Every reason an event can be dropped for; ``stats()["dropped"]`` has one count per reason.
DROP_REASONS = (
    "queue_full",
    "rejected",
    "oversize",
    "unauthorized",
    "retries_exhausted",
    "shutdown",
    "serialization",
    "disabled",
    "sampled_out",
    "before_send",
)

#: The settle "reason" of events written to the disk spool: kept, neither sent nor dropped.
SPOOLED = "spooled"

#: What a full queue gives up: the oldest queued events, or the event being recorded.
DropPolicy = Literal["oldest", "newest"]


class Route:
    """Where the hot path appends: the queue's deque, the threshold, and the slow path.

    Below ``wake_at`` queued records an event is one ``q.append``; at or above it the record
    goes to ``put_slow``. Setting ``wake_at`` to 0 routes every record through the slow path,
    which is how "not started yet", "closed", "forked child" and "tapped by a test" cost
    nothing on the fast path. Agents keep a reference, so a scope reads one object.
    """

    __slots__ = ("put_slow", "q", "wake_at")

    def __init__(self, q: deque[Any], put_slow: Callable[[Any], None]) -> None:
        self.q = q
        self.put_slow = put_slow
        self.wake_at = 0

    def put(self, rec: Any) -> None:
        """Queue one record: the fast append, or the slow path. Never blocks or raises."""
        q = self.q
        if len(q) < self.wake_at:
            q.append(rec)
        else:
            self.put_slow(rec)


class FlushMarker:
    """A point in the queue; done once everything queued before it was sent or given up.

    Observable from any thread (``done``) and from a coroutine (:meth:`bind`).
    """

    __slots__ = ("_future", "_loop", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None

    def bind(self) -> asyncio.Future[None]:
        """A future of the running loop, resolved with the marker."""
        self._loop = asyncio.get_running_loop()
        self._future = self._loop.create_future()
        if self.done.is_set():
            self._future.set_result(None)
        return self._future

    def resolve(self) -> None:
        """Mark done and wake whoever waits. Thread-safe; never raises."""
        self.done.set()
        loop, fut = self._loop, self._future
        if loop is not None and fut is not None:
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Tap(Protocol):
    """Sees records before the queue (``hiveloop_async.testing`` captures are taps)."""

    def offer(self, owner: object, rec: Any) -> bool:
        """Take a look at ``rec`` recorded by ``owner``; True keeps it from the queue."""
        ...


_taps: list[Tap] = []
_queues: weakref.WeakSet[EventQueue] = weakref.WeakSet()


def add_tap(tap: Tap) -> None:
    """Give every record of every client to ``tap`` first, until :func:`remove_tap`.

    While any tap is active every record takes the slow path. Never raises.
    """
    _taps.append(tap)
    _refresh_all()


def remove_tap(tap: Tap) -> None:
    """Stop offering records to ``tap`` (no error when it is not installed)."""
    if tap in _taps:
        _taps.remove(tap)
    _refresh_all()


def clear_taps() -> None:
    """Remove every tap (test isolation)."""
    _taps.clear()
    _refresh_all()


def _refresh_all() -> None:
    for queue in list(_queues):
        with queue.lock:
            queue.refresh_locked()


def _offer(owner: object, rec: Any) -> bool:
    """Give a record to the taps; True when one of them keeps it from the queue."""
    if type(rec) is FlushMarker:
        return False
    kept = False
    for tap in list(_taps):
        kept = tap.offer(owner, rec) or kept
    return kept


class QueueCounts(TypedDict):
    """The queue's part of ``HiveBoard.stats()``: one consistent snapshot."""

    recorded: int
    sent: int
    spooled: int
    replayed: int
    dropped: dict[str, int]
    dropped_total: int
    retries: int
    batches: int
    queue_depth: int
    in_flight: int
    last_error: str | None


class EventQueue:
    """A bounded queue of records with exact accounting; see the module docstring.

    ``lock`` guards the queue and its counters; the owner may hold it to change its own
    state atomically with the queue's (methods named ``*_locked`` expect it held). No method
    blocks beyond that lock, does I/O, or raises.
    """

    def __init__(
        self,
        owner: object,
        *,
        max_size: int,
        batch_size: int,
        drop_policy: DropPolicy = "oldest",
        enabled: bool = True,
        on_demand: Callable[[], None] | None = None,
        on_fork: Callable[[], None] | None = None,
    ) -> None:
        self.owner = owner
        self.lock = threading.Lock()
        self._q: deque[Any] = deque()
        self.route = Route(self._q, self.put_slow)
        self._max = max_size
        self._batch = batch_size
        self._drop_oldest = drop_policy == "oldest"
        self._enabled = enabled
        #: Called (under the lock) by the first record while no consumer is attached.
        self._on_demand = on_demand
        #: Called (under the lock) when a record shows the process was forked; it must call
        #: :meth:`reset_after_fork_locked`. Default: that alone.
        self._on_fork = on_fork if on_fork is not None else self.reset_after_fork_locked
        self._wake: Callable[[], None] | None = None
        self._wake_pending = False
        self._closed = False
        self._pid = os.getpid()
        #: Encoded batches a consumer was cancelled with; the next consumer sends them.
        self._stash: list[tuple[Any, list[bytes]]] = []
        self._reset_counts()
        _queues.add(self)

    def _reset_counts(self) -> None:
        self._taken = 0
        self._discarded = 0  # records discarded on their way into (or out of) the queue
        self._dropped: Counter[str] = Counter()
        self.sent = 0
        self.spooled = 0  # kept on disk for a later replay (see _spooler)
        self.replayed = 0  # sent from the spool (possibly recorded by another process)
        self.in_flight = 0
        self.retries = 0
        self.batches = 0
        self.last_error: str | None = None
        #: Set by the consumer once the server refused the key (so it says so once).
        self.auth_refused = False

    # -- producers -------------------------------------------------------------------------

    def put_slow(self, rec: Any) -> None:
        """Everything but the plain append: taps, demand, wake, overflow, closed, fork."""
        try:
            if _taps and _offer(self.owner, rec):
                return
            with self.lock:
                # Fork is handled by register_at_fork; this check is the fallback, made once
                # per batch rather than on every overflowing event.
                if not self._wake_pending and self._pid != os.getpid():
                    self._on_fork()
                if self._closed or not self._enabled:
                    self._discard(rec, "shutdown" if self._closed else "disabled")
                    return
                if self._wake is None and self._on_demand is not None:
                    self._on_demand()
                q = self._q
                marker = type(rec) is FlushMarker
                if len(q) >= self._max and not marker:  # a flush marker is never dropped
                    if self._drop_oldest:
                        self._drop_oldest_locked()
                    else:
                        self._discard(rec, "queue_full")
                        return
                q.append(rec)
                if marker or (len(q) >= self._batch and not self._wake_pending):
                    self._wake_pending = True
                    if self._wake is not None:
                        self._wake()
                self.refresh_locked()
        except Exception:
            internal_error("enqueue")

    def mark(self) -> FlushMarker:
        """Queue a flush marker and return it (see :class:`FlushMarker`)."""
        marker = FlushMarker()
        self.put_slow(marker)
        return marker

    def _drop_oldest_locked(self) -> None:
        """Drop the oldest 1% of the queue (at least one event), keeping flush markers.

        Dropping a slice at once lets the next events take the fast path again instead of
        each paying for the overflow; under overload the same events would go one by one.
        """
        self._drop_locked(max(1, self._max // 100), oldest=True)

    def _drop_locked(self, n: int, *, oldest: bool) -> None:
        """Drop ``n`` events from the front (``oldest``) or the back, counted as
        ``queue_full``; flush markers met on the way stay where they were."""
        q = self._q
        markers = []
        pop = q.popleft if oldest else q.pop
        try:
            while n > 0:
                rec = pop()
                if type(rec) is FlushMarker:
                    markers.append(rec)
                else:
                    self._discard(rec, "queue_full")
                    n -= 1
        except IndexError:
            pass
        put = q.appendleft if oldest else q.append
        for marker in reversed(markers):
            put(marker)

    def _discard(self, rec: Any, reason: str | None) -> None:
        """Drop one record: count it under ``reason`` (None: not counted) or end a flush."""
        if type(rec) is FlushMarker:
            rec.resolve()
            return
        if type(rec) is not tuple and not rec.opened:
            # The opening record of a scope or task: its closing one must not be taken for it.
            rec.opened = True
        self._discarded += 1
        if reason is not None:
            self._dropped[reason] += 1

    # -- the consumer's side ----------------------------------------------------------------

    def refresh_locked(self) -> None:
        """Set where the fast path hands over to the slow path.

        Below ``batch_size - 1`` events the fast path appends; the append that fills a batch
        goes through the slow path, which wakes the consumer once and lets the fast path run
        up to ``max_size`` until the consumer has drained.
        """
        if _taps or self._closed or self._wake is None:
            self.route.wake_at = 0
        elif self._wake_pending:
            self.route.wake_at = self._max
        else:
            self.route.wake_at = min(self._batch - 1, self._max)

    def attach_locked(self, wake: Callable[[], None] | None) -> None:
        """Set the consumer's wake-up callback (None: no consumer; records wait)."""
        self._wake = wake
        self.route.wake_at = 0  # the next record re-arms the threshold through the slow path

    def close_locked(self) -> None:
        """Refuse new records from now on (counted as ``shutdown``)."""
        self._closed = True
        self.route.wake_at = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close_locked` was called."""
        return self._closed

    def __len__(self) -> int:
        """Queued records, flush markers included."""
        return len(self._q)

    def records(self) -> list[Any]:
        """A copy of the queued records, oldest first (for tests and benchmarks)."""
        return list(self._q)

    @property
    def wake_pending(self) -> bool:
        """True between waking the consumer and its :meth:`rearm`."""
        return self._wake_pending

    def take(self, limit: int) -> list[Any]:
        """Take up to ``limit`` records, oldest first, in one locked step.

        Every event taken counts as in flight until :meth:`settle` accounts for it, or
        :meth:`give_back` returns it. Flush markers come along in their place.
        """
        q = self._q
        out: list[Any] = []
        with self.lock:
            popleft = q.popleft
            try:
                for _ in range(limit):
                    out.append(popleft())
            except IndexError:
                pass
            n = len(out)
            for rec in out:
                if type(rec) is FlushMarker:
                    n -= 1
            self._taken += n
            self.in_flight += n
        return out

    def give_back(self, recs: list[Any], *, trim: bool = True) -> None:
        """Return records taken but not used, to the front of the queue, in order.

        The queue may have filled up while they were out: with ``trim``, what then exceeds
        ``max_size`` is dropped by the drop policy and counted as ``queue_full``, so that the
        bound holds while the sender runs. A cancelled sender gives back without ``trim``:
        the next sender, or the shutdown's own accounting, takes them as they are.
        """
        if not recs:
            return
        with self.lock:
            q = self._q
            n = 0
            for rec in reversed(recs):
                q.appendleft(rec)
                if type(rec) is not FlushMarker:
                    n += 1
            self._taken -= n
            self.in_flight -= n
            if trim and len(q) > self._max:
                self._drop_locked(len(q) - self._max, oldest=self._drop_oldest)

    def note_replayed(self, n: int) -> None:
        """``n`` events were delivered from the spool."""
        with self.lock:
            self.replayed += n

    def settle(self, n: int, reason: str | None) -> None:
        """``n`` events in flight are done: sent (``reason`` None), kept in the spool
        (:data:`SPOOLED`), or dropped for ``reason``.

        One locked step, so that stats() sees each event in exactly one place.
        """
        if n <= 0:
            return
        with self.lock:
            self.in_flight -= n
            if reason is None:
                self.sent += n
            elif reason == SPOOLED:
                self.spooled += n
            else:
                self._dropped[reason] += n

    def rearm(self) -> bool:
        """Called by the consumer after draining; True when the queue already needs it again."""
        with self.lock:
            self._wake_pending = False
            self.refresh_locked()
            return len(self._q) >= self._batch

    def discard_all(self, reason: str) -> None:
        """Drop every queued record (markers are resolved) as ``reason``."""
        with self.lock:
            q = self._q
            while q:
                self._discard(q.popleft(), reason)

    def stash(self, agent: Any, events: list[bytes]) -> None:
        """Keep an encoded batch (its events stay in flight) for the next consumer."""
        self._stash.append((agent, events))

    def unstash(self) -> tuple[Any, list[bytes]] | None:
        """The oldest stashed batch, or None."""
        return self._stash.pop(0) if self._stash else None

    @property
    def has_work(self) -> bool:
        """True when records are queued or batches stashed."""
        return bool(self._q or self._stash)

    def drop_stash(self) -> None:
        """Forget stashed batches (their events were settled by the caller)."""
        self._stash.clear()

    # -- delivery figures (written by the consumer) ----------------------------------------

    def count_attempt(self) -> None:
        """One more request sent."""
        self.batches += 1

    def count_retry(self) -> None:
        """One more retry scheduled."""
        self.retries += 1

    def note_error(self, text: str) -> None:
        """Remember the last delivery error (never contains a secret)."""
        self.last_error = text

    # -- snapshots -------------------------------------------------------------------------

    def depth(self) -> int:
        """Queued events (flush markers not counted)."""
        return sum(1 for r in list(self._q) if type(r) is not FlushMarker)

    def pending(self) -> int:
        """Events queued or in flight."""
        return self.depth() + self.in_flight

    def totals(self) -> tuple[int, int, int]:
        """``(sent, dropped total, dropped at shutdown)``, for flush results."""
        return self.sent, sum(self._dropped.values()), self._dropped.get("shutdown", 0)

    def counts(self) -> QueueCounts:
        """One consistent snapshot of every counter. Never blocks beyond the lock."""
        with self.lock:
            dropped = {reason: self._dropped.get(reason, 0) for reason in DROP_REASONS}
            depth = self.depth()
            taken = self._taken
            discarded = self._discarded
            sent = self.sent
            spooled = self.spooled
            replayed = self.replayed
            in_flight = self.in_flight
        return {
            "recorded": taken + depth + discarded,
            "sent": sent,
            "spooled": spooled,
            "replayed": replayed,
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "retries": self.retries,
            "batches": self.batches,
            "queue_depth": depth,
            "in_flight": in_flight,
            "last_error": self.last_error,
        }

    # -- fork ------------------------------------------------------------------------------

    @property
    def forked(self) -> bool:
        """True in a forked child that has not reset the queue yet."""
        return self._pid != os.getpid()

    def reset_after_fork_locked(self) -> None:
        """In a forked child: forget the parent's records, consumer and counters."""
        self._pid = os.getpid()
        self._q.clear()
        self._stash.clear()
        self._wake = None
        self._wake_pending = False
        self.route.wake_at = 0
        self._reset_counts()

    def renew_lock_after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held at fork)."""
        self.lock = threading.Lock()
