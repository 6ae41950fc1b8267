"""The HiveBoard client: settings, agents, and the lifecycle of the queue and its sender.

``HiveBoard`` owns one :class:`~._queue.EventQueue` (recording and accounting) and starts its
consumer, an :class:`~._transport.Engine`, either on the application's loop (``start()``) or
on demand in a :class:`~._runner.ThreadRunner`. It answers ``stats()``, ``flush()`` and
``shutdown()`` by asking the queue. No I/O happens here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypedDict

from . import _runner
from ._agent import Agent
from ._config import Settings, resolve_settings
from ._exceptions import HiveLoopConfigError, HiveLoopUsageError
from ._forward import parameters_of
from ._hooks import BeforeSendCallback, OnError, make_before_send
from ._internal import internal_error, warn_once
from ._otlp._pipeline import OTLPCounts, SpanPipeline
from ._payloads import agent_registered_payload
from ._queue import DROP_REASONS, DropPolicy, EventQueue
from ._runner import ThreadRunner
from ._sampling import TaskInfo
from ._scrub import Scrubber, make_scrubber
from ._transport import Engine

__all__ = ["DROP_REASONS", "FlushResult", "HiveBoard", "Stats"]

_NEW: Literal["new"] = "new"
_RUNNING: Literal["running"] = "running"
_CLOSED: Literal["closed"] = "closed"

#: Every live client (test isolation shuts them down).
_clients: weakref.WeakSet[HiveBoard] = weakref.WeakSet()


class Stats(TypedDict):
    """What :meth:`HiveBoard.stats` returns: a plain ``dict`` with these keys."""

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
    state: Literal["new", "running", "closed"]
    mode: Literal["loop", "thread"] | None
    endpoint: str
    #: The OTLP destination's accounting in spans, or None when OTLP export is off.
    otlp: OTLPCounts | None
    #: Secrets replaced by the default scrubbing (0 with ``scrub=False``).
    scrubbed: int


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


class HiveBoard:
    """A HiveBoard client: owns the event queue, the agents, and the sender.

    Two ways to run it, one engine:

    * on your event loop: ``async with HiveBoard(...) as hb:`` (or ``await hb.start()`` and
      ``await hb.aclose()``, for example in a FastAPI lifespan);
    * on a private loop in a daemon thread, started on first use when you never call
      ``start()``: ``hb = HiveBoard(...)`` or ``hiveloop_async.init(...)`` from synchronous
      code. An ``atexit`` hook drains it, bounded by ``shutdown_timeout``.

    The constructor does no I/O. It raises :class:`HiveLoopConfigError` when the API key is
    missing or does not start with ``hb_`` (unless ``enabled=False``), or when
    ``drop_policy`` is neither ``"oldest"`` nor ``"newest"``; every other bad value falls
    back to its default with one warning.

    ``otlp_endpoint`` (or ``HIVELOOP_OTLP_ENDPOINT``) also exports the same timelines as
    OpenTelemetry spans over OTLP/HTTP to ``{otlp_endpoint}/v1/traces``, with
    ``otlp_headers`` (a dict or ``"k=v,k2=v2"``), ``otlp_protocol`` (``"http/protobuf"``,
    the default, or ``"http/json"``; neither needs an extra dependency), ``otlp_service_name`` and
    ``otlp_capture_content`` (LLM previews on the spans). Without an API key, only OTLP is
    sent to. Invalid OTLP settings raise :class:`HiveLoopConfigError`.
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
        drop_policy: DropPolicy = "oldest",
        read_local_config: bool = False,
        otlp_endpoint: str | None = None,
        otlp_headers: dict[str, str] | str | None = None,
        otlp_protocol: str | None = None,
        otlp_service_name: str | None = None,
        otlp_capture_content: bool | None = None,
        auth_retry_interval: float | None = None,
        sample_rate: float | None = None,
        keep_failed: bool = True,
        sampler: Callable[[TaskInfo], bool] | None = None,
        scrub: bool | Scrubber = True,
        scrub_patterns: Mapping[str, str | re.Pattern[str]] | None = None,
        scrub_keys: Iterable[str] | None = None,
        before_send: BeforeSendCallback | None = None,
        before_send_errors: OnError = "send",
        compression: Literal["gzip"] | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
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
            otlp_endpoint=otlp_endpoint,
            otlp_headers=otlp_headers,
            otlp_protocol=otlp_protocol,
            otlp_service_name=otlp_service_name,
            otlp_capture_content=otlp_capture_content,
            auth_retry_interval=auth_retry_interval,
            sample_rate=sample_rate,
            keep_failed=keep_failed,
            sampler=sampler,
            compression=compression,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
        )
        #: Redaction and the user's hook, run by the sender (never on the recording path).
        self._scrubber = make_scrubber(scrub, extra_patterns=scrub_patterns, extra_keys=scrub_keys)
        self._before_send = make_before_send(before_send, before_send_errors)
        otlp = self.settings.otlp
        #: The OTLP destination's spans and accounting (outlives a sender hand-over).
        self._otlp = SpanPipeline(otlp) if otlp is not None else None
        if drop_policy not in ("oldest", "newest"):
            raise HiveLoopConfigError("drop_policy must be 'oldest' or 'newest'")
        self.environment = self.settings.environment
        self.group = self.settings.group
        self._queue = EventQueue(
            self,
            max_size=self.settings.max_queue_size,
            batch_size=self.settings.batch_size,
            drop_policy=drop_policy,
            enabled=self.settings.enabled,
            on_demand=self._on_demand_locked,
            on_fork=self._after_fork_locked,
        )
        #: What agents append to (see :class:`~._queue.Route`).
        self._route = self._queue.route
        #: Guards the client's state together with the queue's (one lock).
        self._lock = self._queue.lock
        self._state: Literal["new", "running", "closed"] = _NEW
        self._engine: Engine | None = None
        self._thread: ThreadRunner | None = None
        self._agents: dict[str, Agent] = {}
        self._pid = os.getpid()
        _clients.add(self)
        _runner.register(self._at_exit, self._after_fork_child)

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

    # -- the sender's lifecycle --------------------------------------------------------------

    def _new_engine(self) -> Engine:
        return Engine(
            self._queue,
            self.settings,
            lambda: list(self._agents.values()),
            self._otlp,
            scrubber=self._scrubber,
            before_send=self._before_send,
        )

    def _on_demand_locked(self) -> None:
        """The first record while no sender runs: start the private one (thread mode)."""
        if self._state == _NEW:
            self._start_thread_locked()

    def _start_thread_locked(self, *, spawn: bool = True) -> None:
        """Create the private sender and start its thread.

        Without a thread (``spawn=False`` at exit, or one that cannot start because the
        interpreter is shutting down) the records wait in the queue and ``shutdown()`` drains
        them in the calling thread.
        """
        self._state = _RUNNING
        engine = self._new_engine()
        runner = ThreadRunner(engine)
        self._thread = runner
        self._engine = engine
        self._queue.attach_locked(engine.wake)
        if spawn:
            runner.start()

    async def start(self) -> None:
        """Run the sender and heartbeats on the running event loop.

        Returns once the sender is ready. If a private-thread sender had already started
        (because events were recorded before this call), it hands the queue over. Idempotent
        while running, and does nothing for a disabled client; raises
        :class:`HiveLoopUsageError` if the client was closed.
        """
        with self._lock:
            if self._state == _CLOSED:
                raise HiveLoopUsageError("this HiveBoard client was shut down; create a new one")
            if not self.settings.enabled or (self._engine is not None and self._thread is None):
                return  # disabled: nothing to run; running on a loop already: nothing to do
            old_thread = self._thread
            engine = self._new_engine()
            self._engine = engine
            self._thread = None
            self._state = _RUNNING
            self._queue.attach_locked(engine.wake)
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
        before = self._queue.totals()
        engine, thread = self._close()
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
        before = self._queue.totals()
        engine, thread = self._close()
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

    def _close(self) -> tuple[Engine | None, ThreadRunner | None]:
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork_locked()
            if self._state == _CLOSED:
                return self._engine, self._thread
            self._state = _CLOSED
            self._queue.close_locked()
            for agent in self._agents.values():
                agent.stop_heartbeat()
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

    def _mark(self) -> Any:
        """Queue a flush marker; None when there is nothing to wait for."""
        with self._lock:
            nothing = self._engine is None and not len(self._queue)
            if self._state == _CLOSED or not self.settings.enabled or nothing:
                return None
        return self._queue.mark()

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Block until every event recorded before this call is delivered or given up.

        Returns on delivery, or when ``timeout`` (default ``shutdown_timeout``) passes.
        Call it from any thread but the one running the SDK's own loop; there it returns at
        once (use ``await hb.aflush()``). Never raises.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        before = self._queue.totals()
        engine = self._engine
        if engine is not None and engine.on_current_thread():
            warn_once(
                "flush-on-loop",
                "hiveloop_async: flush() called on the SDK's own event loop would block it; "
                "use 'await hb.aflush()'",
            )
            engine.wake()
            return self._result(before, timed_out=True)
        marker = self._mark()
        done = marker is None or marker.done.wait(max(0.0, timeout))
        return self._result(before, timed_out=not done)

    async def aflush(self, timeout: float | None = None) -> FlushResult:
        """Wait, without blocking the loop, until every event recorded before the call is
        delivered or given up, or ``timeout`` (default ``shutdown_timeout``) passes.
        Never raises.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        before = self._queue.totals()
        marker = self._mark()
        done = True
        if marker is not None:
            fut = marker.bind()
            try:
                await asyncio.wait_for(asyncio.shield(fut), max(0.0, timeout))
            except asyncio.TimeoutError:
                done = False
        return self._result(before, timed_out=not done)

    # -- statistics --------------------------------------------------------------------------

    def _result(self, before: tuple[int, int, int], *, timed_out: bool) -> FlushResult:
        sent, dropped, _ = self._queue.totals()
        return FlushResult(
            delivered=sent - before[0],
            dropped=dropped - before[1],
            pending=self._queue.pending(),
            timed_out=timed_out,
        )

    def _closed_result(self, before: tuple[int, int, int]) -> FlushResult:
        """After a close: it timed out if anything is left or was cut off by the deadline."""
        cut = self._queue.totals()[2] > before[2]
        return self._result(before, timed_out=cut or self._queue.pending() > 0)

    def stats(self) -> Stats:
        """A snapshot of the client's own accounting. Never blocks or raises.

        Keys: ``recorded`` (events accepted into the queue), ``sent`` (accepted by the
        server), ``dropped`` (count per reason, every reason present), ``dropped_total``,
        ``retries``, ``batches``, ``queue_depth``, ``in_flight``, ``last_error``, ``state``,
        ``mode`` (``"loop"``, ``"thread"`` or None), ``endpoint`` and ``otlp``. Always
        ``recorded == sent + dropped_total + queue_depth + in_flight``. With OTLP only (no
        API key), ``sent`` counts events handed to the OTLP destination.

        ``otlp`` (None when off) accounts in spans: ``finished``, ``sent``, ``dropped`` (per
        reason), ``dropped_total``, ``pending``, ``in_flight``, ``open_spans``, ``evicted``,
        ``requests``, ``retries``, ``partial_rejected``, ``last_error``, ``url`` and
        ``protocol``; always ``finished == sent + dropped_total + pending + in_flight``.
        """
        counts = self._queue.counts()
        mode: Literal["loop", "thread"] | None = (
            None if self._engine is None else ("thread" if self._thread else "loop")
        )
        return {
            **counts,
            "state": self._state,
            "mode": mode,
            "endpoint": self.settings.endpoint,
            "otlp": None if self._otlp is None else self._otlp.counts(),
            "scrubbed": 0 if self._scrubber is None else self._scrubber.redactions,
        }

    @property
    def sent(self) -> int:
        """Events accepted by the server so far."""
        return self._queue.sent

    @property
    def in_flight(self) -> int:
        """Events taken by the sender and not yet sent or dropped."""
        return self._queue.in_flight

    @property
    def retries(self) -> int:
        """Requests retried so far."""
        return self._queue.retries

    @property
    def batches(self) -> int:
        """Requests sent so far (retries included)."""
        return self._queue.batches

    @property
    def last_error(self) -> str | None:
        """The last delivery error, or None (never contains a secret)."""
        return self._queue.last_error

    # -- process hooks -------------------------------------------------------------------------

    def _at_exit(self) -> None:
        """At interpreter exit: drain, bounded by ``shutdown_timeout``."""
        if self.closed:
            return
        engine = self._engine
        if engine is not None and self._thread is None:
            if not engine.loop_alive():
                self._drain_orphaned()
            return  # its loop still runs: it drains when the loop ends
        self.shutdown()

    def _drain_orphaned(self) -> None:
        """A client whose event loop ended without ``aclose()``: drain it in this thread (no
        new thread: CPython 3.12 refuses them at exit)."""
        with self._lock:
            self._engine = None
            self._state = _NEW
            self._queue.attach_locked(None)
            if self._queue.has_work:
                self._start_thread_locked(spawn=False)
        self.shutdown()

    def _after_fork_locked(self) -> None:
        """In a forked child: forget the parent's buffer, sender and counters."""
        self._pid = os.getpid()
        self._queue.reset_after_fork_locked()
        if self.settings.otlp is not None:  # the parent's spans are the parent's to send
            self._otlp = SpanPipeline(self.settings.otlp)
        self._engine = None
        self._thread = None
        if self._state == _RUNNING:
            self._state = _NEW
        if self._state != _CLOSED:
            for agent in self._agents.values():
                agent.resume_heartbeat()

    def _after_fork_child(self) -> None:
        self._queue.renew_lock_after_fork()
        self._lock = self._queue.lock
        with self._lock:
            self._after_fork_locked()

    def __repr__(self) -> str:
        return (
            f"<HiveBoard endpoint={self.settings.endpoint!r} state={self._state} "
            f"agents={len(self._agents)}>"
        )
