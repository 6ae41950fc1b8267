"""The HiveBoard client: settings, the bounded event queue, agents, and the sender's lifecycle.

The queue is a ``collections.deque`` shared by every thread and the sender. Recording an
event is one length check and one ``append`` (both atomic under the GIL); everything else
(starting the sender, waking it once per batch, dropping on overflow, shutdown) happens on a
slow path that only runs when the queue length reaches ``_route.wake_at``. Setting it to 0
routes every event through the slow path, which is how "not started yet", "closed",
"forked child" and "captured by a test" are handled at no cost to the fast path.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import os
import sys
import threading
import time
import weakref
from collections import Counter, deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._agent import Agent
from ._config import Settings, resolve_settings
from ._exceptions import HiveLoopConfigError
from ._forward import parameters_of
from ._internal import internal_error, warn_once
from ._payloads import agent_registered_payload

if TYPE_CHECKING:
    from ._transport import Engine, ThreadRunner

__all__ = ["DROP_REASONS", "FlushResult", "HiveBoard"]

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
)

_NEW, _RUNNING, _CLOSED = "new", "running", "closed"

_clients: weakref.WeakSet[HiveBoard] = weakref.WeakSet()

#: Active ``hiveloop_async.testing`` captures. While any is active every client routes
#: events through the slow path, where the captures see them first.
_captures: list[Any] = []


def _offer(client: HiveBoard, rec: Any) -> bool:
    """Give a record to the active captures; True when one of them keeps it from the queue."""
    if type(rec) is _Waiter:
        return False
    kept = False
    for capture in list(_captures):
        if capture._wants(client):
            capture._take(rec)
            kept = kept or not capture.send
    return kept


class _Route:
    """Where the fast path appends: a client's queue, the client, and the threshold.

    Below ``wake_at`` queued records an event is one ``append``; at or above it the event
    goes through ``client._put_slow``. Agents keep a reference to it (and C scopes, from
    their agent), so the hot path reads one object instead of walking agent -> client -> queue.
    """

    __slots__ = ("client", "q", "wake_at")

    def __init__(self, q: deque[Any], client: HiveBoard) -> None:
        self.q = q
        self.client = client
        self.wake_at = 0


Route = _Route


def _set_capturing(active: bool) -> None:
    """Route every client's events through the slow path while a capture is active."""
    for client in list(_clients):
        with client._lock:
            if active:
                client._route.wake_at = 0
            else:
                client._set_threshold_locked()


@dataclasses.dataclass(frozen=True)
class FlushResult:
    """What a flush or shutdown achieved.

    ``delivered``: events accepted by the server while waiting. ``dropped``: events given up
    while waiting (by any reason). ``pending``: events still queued or in flight on return.
    ``timed_out``: the timeout passed before everything recorded before the call was
    delivered or given up. True when it did not time out.
    """

    delivered: int
    dropped: int
    pending: int
    timed_out: bool

    def __bool__(self) -> bool:
        return not self.timed_out


class _Waiter:
    """Completion of a flush marker, observable from any thread and from a coroutine."""

    __slots__ = ("_future", "_loop", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None

    def bind(self) -> asyncio.Future[None]:
        self._loop = asyncio.get_running_loop()
        self._future = self._loop.create_future()
        if self.done.is_set():
            self._future.set_result(None)
        return self._future

    def resolve(self) -> None:
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


class HiveBoard:
    """A HiveBoard client: owns the event queue, the agents, and the sender.

    Two ways to run it, one engine:

    * on your event loop: ``async with HiveBoard(...) as hb:`` (or ``await hb.start()`` and
      ``await hb.aclose()``, for example in a FastAPI lifespan);
    * on a private loop in a daemon thread, started on first use when you never call
      ``start()``: ``hb = HiveBoard(...)`` or ``hiveloop_async.init(...)`` from synchronous
      code. An ``atexit`` hook drains it, bounded by ``shutdown_timeout``.

    The constructor does no I/O. It raises :class:`HiveLoopConfigError` when the API key is
    missing or does not start with ``hb_`` (unless ``enabled=False``); every other bad value
    falls back to its default with one warning.
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        environment: str | None = None,
        group: str | None = None,
        flush_interval: float | None = None,
        batch_size: int | None = None,
        max_queue_size: int | None = None,
        debug: bool | None = None,
        *,
        enabled: bool | None = None,
        shutdown_timeout: float | None = None,
        request_timeout: float | None = None,
        retry_deadline: float | None = None,
        max_concurrent_requests: int | None = None,
        drop_policy: str = "oldest",
        read_local_config: bool = False,
    ) -> None:
        self.settings: Settings = resolve_settings(
            api_key=api_key,
            endpoint=endpoint,
            environment=environment,
            group=group,
            flush_interval=flush_interval,
            batch_size=batch_size,
            max_queue_size=max_queue_size,
            debug=debug,
            enabled=enabled,
            shutdown_timeout=shutdown_timeout,
            request_timeout=request_timeout,
            retry_deadline=retry_deadline,
            max_concurrent_requests=max_concurrent_requests,
            read_local_config=read_local_config,
        )
        if drop_policy not in ("oldest", "newest"):
            raise HiveLoopConfigError("drop_policy must be 'oldest' or 'newest'")
        self.environment = self.settings.environment
        self.group = self.settings.group
        self._drop_oldest = drop_policy == "oldest"
        self._q: deque[Any] = deque()
        self._max = self.settings.max_queue_size
        self._batch = self.settings.batch_size
        #: What the fast path reads (also from C): the queue and the slow-path threshold.
        self._route: _Route = Route(self._q, self)
        self._wake_pending = False
        self._lock = threading.Lock()
        self._state = _NEW
        self._engine: Engine | None = None
        self._thread: ThreadRunner | None = None
        self._agents: dict[str, Agent] = {}
        self._pid = os.getpid()
        # Counters. ``_popped``, ``sent`` & co. are written by the sender only.
        #: Encoded batches a sender was cancelled with (its loop ended); the next one sends them.
        self._stash: list[tuple[Agent, list[bytes]]] = []
        self._popped = 0
        self._put_dropped = 0  # records discarded on their way into (or out of) the queue
        self._dropped: Counter[str] = Counter()
        self.sent = 0
        self.retries = 0
        self.batches = 0
        self.in_flight = 0
        self.last_error: str | None = None
        _clients.add(self)

    # -- agents ------------------------------------------------------------------------------

    @parameters_of(Agent.__init__)
    def agent(self, *args: Any, **options: Any) -> Agent:
        """Return the agent ``agent_id``, registering it (``agent_registered``) when new.

        Takes :class:`Agent`'s parameters (``agent_id``, ``type``, ``version``, ...) and
        passes them on. A known id returns the same object with its type, version, framework
        and callbacks updated, and records nothing. Starts heartbeats when the sender runs.
        Never blocks; raises ``TypeError`` for arguments ``Agent`` does not take.
        """
        agent = Agent(self, *args, **options)
        with self._lock:
            existing = self._agents.get(agent.agent_id)
            if existing is not None:
                existing._update_from(agent)
                return existing
            self._agents[agent.agent_id] = agent
        agent._emit(
            "agent_registered",
            agent_registered_payload(
                agent.agent_id,
                agent.agent_type,
                agent.version,
                agent.framework,
                agent.stuck_threshold,
            ),
        )
        engine = self._engine
        if engine is not None:
            engine.add_agent(agent)
        return agent

    def get_agent(self, agent_id: str) -> Agent | None:
        """Return the registered agent ``agent_id`` or None."""
        return self._agents.get(agent_id)

    @property
    def agents(self) -> list[Agent]:
        """The registered agents."""
        return list(self._agents.values())

    # -- the queue ---------------------------------------------------------------------------

    def _put(self, rec: Any) -> None:
        q = self._q
        if len(q) < self._route.wake_at:
            q.append(rec)
        else:
            self._put_slow(rec)

    def _put_slow(self, rec: Any) -> None:
        """Everything but the plain append: start, wake, overflow, closed, capture, fork."""
        try:
            if _captures and _offer(self, rec):
                return
            with self._lock:
                # Fork is handled by register_at_fork; this check is the fallback, made once
                # per batch rather than on every overflowing event.
                if not self._wake_pending and self._pid != os.getpid():
                    self._after_fork_locked()
                if self._state == _CLOSED or not self.settings.enabled:
                    self._discard(rec, "shutdown" if self._state == _CLOSED else "disabled")
                    return
                if self._state == _NEW:
                    self._start_thread_locked()
                q = self._q
                waiter = type(rec) is _Waiter
                if len(q) >= self._max and not waiter:  # a flush marker is never dropped
                    if self._drop_oldest:
                        self._drop_oldest_locked()
                    else:
                        self._discard(rec, "queue_full")
                        return
                q.append(rec)
                if waiter or (len(q) >= self._batch and not self._wake_pending):
                    self._wake_pending = True
                    engine = self._engine
                    if engine is not None:
                        engine.wake()
                self._set_threshold_locked()
        except Exception:
            internal_error("enqueue")

    def _set_threshold_locked(self) -> None:
        """Where the fast path hands over to the slow path (see the module docstring).

        Below ``batch_size - 1`` events the fast path appends; the append that fills a batch
        goes through the slow path, which wakes the sender once and lets the fast path run
        up to ``max_queue_size`` until the sender has drained.
        """
        if _captures or self._state != _RUNNING or self._engine is None:
            self._route.wake_at = 0
        elif self._wake_pending:
            self._route.wake_at = self._max
        else:
            self._route.wake_at = min(self._batch - 1, self._max)

    def _drop_oldest_locked(self) -> None:
        """Drop the oldest 1% of the queue (at least one event), keeping flush markers.

        Dropping a slice at once lets the next events take the fast path again instead of
        each paying for the overflow; under overload the same events would go one by one.
        """
        q = self._q
        markers = []
        left = max(1, self._max // 100)
        try:
            while left:
                old = q.popleft()
                if type(old) is _Waiter:
                    markers.append(old)
                else:
                    self._discard(old, "queue_full")
                    left -= 1
        except IndexError:
            pass
        for marker in reversed(markers):
            q.appendleft(marker)

    def _discard(self, rec: Any, reason: str | None) -> None:
        """Drop one record: count it under ``reason`` (None: not counted) or end a flush."""
        if type(rec) is _Waiter:
            rec.resolve()
            return
        if type(rec) is not tuple and not rec._sent:
            # The opening record of a scope or task: its closing one must not be taken for it.
            rec._sent = True
        self._put_dropped += 1
        if reason is not None:
            self._dropped[reason] += 1

    def _count_dropped(self, reason: str, n: int) -> None:
        with self._lock:
            self._dropped[reason] += n

    def _release(self, n: int, reason: str | None) -> None:
        """``n`` events in flight are done: sent (``reason`` None) or dropped for ``reason``.

        One locked step, so that stats() sees each event in exactly one place.
        """
        with self._lock:
            self.in_flight -= n
            if reason is None:
                self.sent += n
            else:
                self._dropped[reason] += n

    def _rearm(self) -> bool:
        """Called by the sender after draining; True when the queue already needs it again."""
        with self._lock:
            self._wake_pending = False
            self._set_threshold_locked()
            return len(self._q) >= self._batch

    def _start_thread_locked(self, *, spawn: bool = True) -> None:
        """Create the private sender and start its thread.

        Without a thread (``spawn=False`` at exit, or one that cannot start because the
        interpreter is shutting down) the records wait in the queue and ``shutdown()`` drains
        them in the calling thread.
        """
        from ._transport import ThreadRunner

        self._state = _RUNNING
        runner = ThreadRunner(self)
        self._thread = runner
        self._engine = runner.engine
        if spawn:
            runner.start()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the sender and heartbeats on the running event loop.

        Returns once the sender is ready. If a private-thread sender had already started
        (because events were recorded before this call), it hands the queue over. Idempotent
        while running, and does nothing for a disabled client; raises
        :class:`HiveLoopUsageError` if the client was closed.
        """
        from ._exceptions import HiveLoopUsageError
        from ._transport import Engine

        with self._lock:
            if self._state == _CLOSED:
                raise HiveLoopUsageError("this HiveBoard client was shut down; create a new one")
            if not self.settings.enabled or (self._engine is not None and self._thread is None):
                return  # disabled: nothing to run; running on a loop already: nothing to do
            old_thread = self._thread
            engine = Engine(self)
            self._engine = engine
            self._thread = None
            self._state = _RUNNING
            self._route.wake_at = 0  # the next event re-arms the threshold through the slow path
        if old_thread is not None:
            await asyncio.to_thread(old_thread.hand_over, 2.0)
        await engine.start_on_loop()
        engine.wake()

    async def aclose(self, timeout: float | None = None) -> FlushResult:
        """Stop heartbeats, deliver what is queued, close the HTTP session.

        Returns within ``timeout`` (default ``shutdown_timeout``) whatever the server does;
        what could not be delivered by then is counted as dropped (``shutdown``). Idempotent.
        Never raises.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        before = self._snapshot()
        engine, thread = self._close_locked()
        try:
            deadline = time.monotonic() + timeout
            if engine is not None:
                if thread is not None:
                    await asyncio.to_thread(thread.close, deadline)
                else:
                    await engine.close(deadline)
        except Exception:
            internal_error("aclose")
        return self._closed_result(before)

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Blocking twin of :meth:`aclose`, for synchronous code. Never raises.

        From inside the event loop the client runs on, use ``await hb.aclose()``: this call
        then only starts the shutdown and returns at once.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        before = self._snapshot()
        engine, thread = self._close_locked()
        try:
            deadline = time.monotonic() + timeout
            if thread is not None:
                thread.close(deadline)
            elif engine is not None:
                if engine.on_current_thread():
                    engine.request_close(deadline)
                    warn_once(
                        "shutdown-on-loop",
                        "hiveloop_async: shutdown() called on the SDK's own event loop; "
                        "use 'await hb.aclose()' to wait for delivery",
                    )
                else:
                    engine.close_threadsafe(deadline)
        except Exception:
            internal_error("shutdown")
        return self._closed_result(before)

    def _close_locked(self) -> tuple[Engine | None, ThreadRunner | None]:
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork_locked()
            if self._state == _CLOSED:
                return self._engine, self._thread
            self._state = _CLOSED
            self._route.wake_at = 0
            for agent in self._agents.values():
                agent._heartbeat_stopped = True
            return self._engine, self._thread

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` or ``aclose()`` was called."""
        return self._state == _CLOSED

    async def __aenter__(self) -> HiveBoard:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> HiveBoard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- flush -------------------------------------------------------------------------------

    def _mark(self) -> _Waiter | None:
        """Queue a flush marker; None when there is nothing to wait for."""
        with self._lock:
            nothing = self._engine is None and not self._q
            if self._state == _CLOSED or not self.settings.enabled or nothing:
                return None
        waiter = _Waiter()
        self._put_slow(waiter)
        return waiter

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Block until every event recorded before this call is delivered or given up.

        Returns on delivery, or when ``timeout`` (default ``shutdown_timeout``) passes.
        Call it from any thread but the one running the SDK's own loop; there it returns at
        once (use ``await hb.aflush()``). Never raises.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        before = self._snapshot()
        engine = self._engine
        if engine is not None and engine.on_current_thread():
            warn_once(
                "flush-on-loop",
                "hiveloop_async: flush() called on the SDK's own event loop would block it; "
                "use 'await hb.aflush()'",
            )
            engine.wake()
            return self._result(before, timed_out=True)
        waiter = self._mark()
        done = waiter is None or waiter.done.wait(max(0.0, timeout))
        return self._result(before, timed_out=not done)

    async def aflush(self, timeout: float | None = None) -> FlushResult:
        """Wait, without blocking the loop, until every event recorded before the call is
        delivered or given up, or ``timeout`` (default ``shutdown_timeout``) passes.
        Never raises.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        before = self._snapshot()
        waiter = self._mark()
        done = True
        if waiter is not None:
            fut = waiter.bind()
            try:
                await asyncio.wait_for(asyncio.shield(fut), max(0.0, timeout))
            except asyncio.TimeoutError:
                done = False
        return self._result(before, timed_out=not done)

    # -- statistics --------------------------------------------------------------------------

    def _pending(self) -> int:
        return sum(1 for r in list(self._q) if type(r) is not _Waiter) + self.in_flight

    def _snapshot(self) -> tuple[int, int, int]:
        return self.sent, sum(self._dropped.values()), self._dropped.get("shutdown", 0)

    def _result(self, before: tuple[int, int, int], *, timed_out: bool) -> FlushResult:
        sent, dropped, _ = self._snapshot()
        return FlushResult(
            delivered=sent - before[0],
            dropped=dropped - before[1],
            pending=self._pending(),
            timed_out=timed_out,
        )

    def _closed_result(self, before: tuple[int, int, int]) -> FlushResult:
        """After a close: it timed out if anything is left or was cut off by the deadline."""
        cut = self._dropped.get("shutdown", 0) > before[2]
        return self._result(before, timed_out=cut or self._pending() > 0)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the client's own accounting. Never blocks or raises.

        Keys: ``recorded`` (events accepted into the queue), ``sent`` (accepted by the
        server), ``dropped`` (count per reason, every reason present), ``dropped_total``,
        ``retries``, ``batches``, ``queue_depth``, ``in_flight``, ``last_error``, ``state``,
        ``mode`` (``"loop"``, ``"thread"`` or None) and ``endpoint``.
        """
        with self._lock:
            dropped = {reason: self._dropped.get(reason, 0) for reason in DROP_REASONS}
            depth = sum(1 for r in list(self._q) if type(r) is not _Waiter)
            popped = self._popped
            put_dropped = self._put_dropped
            sent = self.sent
            in_flight = self.in_flight
        mode = None if self._engine is None else ("thread" if self._thread else "loop")
        return {
            "recorded": popped + depth + put_dropped,
            "sent": sent,
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "retries": self.retries,
            "batches": self.batches,
            "queue_depth": depth,
            "in_flight": in_flight,
            "last_error": self.last_error,
            "state": self._state,
            "mode": mode,
            "endpoint": self.settings.endpoint,
        }

    # -- fork --------------------------------------------------------------------------------

    def _after_fork_locked(self) -> None:
        """In a forked child: forget the parent's buffer, sender and counters."""
        self._pid = os.getpid()
        self._q.clear()
        self._engine = None
        self._thread = None
        if self._state == _RUNNING:
            self._state = _NEW
        self._route.wake_at = 0
        self._wake_pending = False
        self._popped = self._put_dropped = 0
        self.sent = self.retries = self.batches = self.in_flight = 0
        self._dropped = Counter()
        self.last_error = None
        for agent in self._agents.values():
            if agent.heartbeat_interval > 0 and self._state != _CLOSED:
                agent._heartbeat_stopped = False

    def _after_fork_child(self) -> None:
        self._lock = threading.Lock()
        with self._lock:
            self._after_fork_locked()

    def __repr__(self) -> str:
        return (
            f"<HiveBoard endpoint={self.settings.endpoint!r} state={self._state} "
            f"agents={len(self._agents)}>"
        )


# -- process hooks ---------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    from . import _internal

    _internal._lock = threading.Lock()
    for client in list(_clients):
        try:
            client._after_fork_child()
        except Exception:
            internal_error("after fork")


def _shutdown_all_at_exit() -> None:
    """Drain every live client at interpreter exit, each bounded by its shutdown_timeout."""
    for client in list(_clients):
        try:
            if client.closed:
                continue
            if client._engine is not None and client._thread is None:
                if not client._engine.loop_alive():
                    _drain_orphaned(client)
                continue
            client.shutdown()
        except Exception:
            internal_error("atexit")


def _drain_orphaned(client: HiveBoard) -> None:
    """A client whose event loop ended without ``aclose()``: drain it in this thread (no new
    thread: CPython 3.12 refuses them at exit)."""
    with client._lock:
        client._engine = None
        client._state = _NEW
        if client._q or client._stash:
            client._start_thread_locked(spawn=False)
    client.shutdown()


class _ForkToken:
    """Kept alive for multiprocessing's after-fork registry (which holds weak references)."""


_fork_token = _ForkToken()
_mp_hooked = False


def _before_fork() -> None:
    """multiprocessing children leave through ``os._exit``, so ``atexit`` never runs there:
    ask multiprocessing to register our exit drain in each child it starts."""
    global _mp_hooked
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and not _mp_hooked:
        _mp_hooked = True
        mp_util.register_after_fork(_fork_token, _in_multiprocessing_child)


def _in_multiprocessing_child(_: object) -> None:
    mp_util = sys.modules["multiprocessing.util"]
    mp_util.Finalize(None, _shutdown_all_at_exit, exitpriority=100)


atexit.register(_shutdown_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
