"""The sender: an anyio task group on an asyncio loop that batches, sends and retries.

``Engine`` runs either as a task on the application's loop (``async with HiveBoard``) or in
``ThreadRunner``'s daemon thread with a private loop. It pops records from the client's
queue, encodes them (orjson, off the hot path), groups them per agent into batches of at most
``batch_size`` events and 1 MB, and POSTs them to ``/v1/ingest`` with at most
``max_concurrent_requests`` in flight. Every event ends in exactly one counter: ``sent`` or
one drop reason. Nothing here raises into the host program.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from yarl import URL  # aiohttp's URL type, installed with it

from ._client import _Waiter
from ._internal import internal_error, logger, warn_once
from ._payloads import queue_snapshot_payload
from ._resolve import ExitSafeResolver
from ._serialize import (
    MAX_BATCH_BYTES,
    RecordEncoder,
    build_body,
    encode_envelope,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._agent import Agent, HeartbeatCallback
    from ._client import HiveBoard

#: Backoff for 5xx and network errors: full jitter over an exponential ceiling.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: Delay for a 429 that names none.
DEFAULT_RETRY_AFTER = 2.0
#: While shutting down, no backoff sleep is longer than this.
SHUTDOWN_BACKOFF_CAP = 0.2
#: At most one summary line of drops per this many seconds.
DROP_LOG_INTERVAL = 10.0
#: The sender yields to the event loop (and, in thread mode, the GIL) after encoding for
#: this long, so the application's loop lag stays well under a millisecond.
ENCODE_SLICE_S = 0.0002

_ENVELOPE_OVERHEAD = 64


class _Batch:
    """One agent's events on their way; tracks how many are not yet accounted for."""

    __slots__ = ("agent", "events", "outstanding")

    def __init__(self, agent: Agent, events: list[bytes]) -> None:
        self.agent = agent
        self.events = events
        self.outstanding = len(events)


class _Group:
    __slots__ = ("events", "size")

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.size = _ENVELOPE_OVERHEAD


class Engine:
    """Sender and heartbeats of one client, on one asyncio loop. See the module docstring."""

    def __init__(self, client: HiveBoard) -> None:
        self.client = client
        self.settings = client.settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._wake_requested = False
        self._wake_ev: asyncio.Event | None = None
        self._close_ev: asyncio.Event | None = None
        self._sender_done: asyncio.Event | None = None
        self._closing = False
        self._handover = False
        self._deadline = math.inf
        self._task: asyncio.Task[None] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._batches_out: MemoryObjectSendStream[tuple[int, _Batch]] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: URL | None = None
        self._encoder = RecordEncoder()
        self._envelopes: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._heartbeats: set[str] = set()
        self._batch_seq = 0
        self._open_batches: dict[int, _Batch] = {}
        self._flush_waiters: list[tuple[int, _Waiter]] = []
        self._unauthorized = False
        self._last_drop_log = time.monotonic()
        self._logged_drops = 0
        self._rejections: Counter[str] = Counter()

    # -- thread-safe controls ------------------------------------------------------------

    def on_current_thread(self) -> bool:
        """True when called on the thread running this engine's loop."""
        return self._thread_id == threading.get_ident()

    def loop_alive(self) -> bool:
        loop = self.loop
        return loop is not None and not loop.is_closed() and not self._finished.is_set()

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self.loop
        if loop is None or self._wake_ev is None:
            return
        if self.on_current_thread():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            pass

    def wake(self) -> None:
        """Ask the sender to drain the queue now. Thread-safe; never blocks."""
        if self._wake_ev is None:
            self._wake_requested = True
            return
        self._call_soon(self._wake_ev.set)

    def add_agent(self, agent: Agent) -> None:
        """Start heartbeats for an agent registered after the engine started. Thread-safe."""
        self._call_soon(self._start_heartbeat, agent)

    def request_close(self, deadline: float) -> None:
        """On the engine's loop: stop heartbeats and drain until ``deadline`` (monotonic)."""
        self._deadline = min(self._deadline, deadline)
        self._closing = True
        if self._close_ev is not None:
            self._close_ev.set()
        if self._wake_ev is not None:
            self._wake_ev.set()

    def close_threadsafe(self, deadline: float) -> None:
        """From another thread: close and wait, at most until ``deadline`` plus a grace."""
        if not self._ready.wait(max(0.0, deadline - time.monotonic())):
            return
        self._call_soon(self.request_close, deadline)
        self._finished.wait(max(0.0, deadline - time.monotonic()) + 0.1)

    def hand_over(self, deadline: float) -> None:
        """From another thread: stop taking records (another engine takes the queue over)."""
        self._handover = True
        self.close_threadsafe(deadline)

    async def start_on_loop(self) -> None:
        """Run the engine as a task of the running loop; return once it is ready."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        self._task = loop.create_task(self.run(on_ready), name="hiveloop_async.engine")
        await ready

    async def close(self, deadline: float) -> None:
        """On the engine's own loop: close and wait until done or ``deadline``."""
        self.request_close(deadline)
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()) + 0.1)

    # -- main ----------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """The engine's body: session, task group, sender, heartbeats, bounded close."""
        self.loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake_ev = asyncio.Event()
        self._close_ev = asyncio.Event()
        self._sender_done = asyncio.Event()
        if self._wake_requested:
            self._wake_ev.set()
        settings = self.settings
        try:
            timeout = aiohttp.ClientTimeout(
                total=settings.request_timeout, sock_connect=min(5.0, settings.request_timeout)
            )
            headers = {
                "Authorization": f"Bearer {settings.api_key}",
                "Content-Type": "application/json",
                "User-Agent": f"hiveloop-async/{__version__}",
            }
            # An explicit resolver, whether aiodns is installed or not: it resolves a host
            # name at interpreter exit too (see _resolve.py). aiohttp caches what it resolves
            # for 10 s (ttl_dns_cache), per connector.
            connector = aiohttp.TCPConnector(
                limit=settings.max_concurrent_requests, resolver=ExitSafeResolver()
            )
            async with aiohttp.ClientSession(
                timeout=timeout, headers=headers, connector=connector
            ) as session:
                self._session = session
                # Parsed once: a str URL is parsed again on every request (about 8% of
                # aiohttp's CPU per request, measured here).
                self._url = URL(settings.ingest_url)
                # A fixed pool of request workers fed through an unbuffered stream: at most
                # max_concurrent_requests batches in flight, and the drain waits (the queue
                # keeps absorbing) while they are all busy.
                batches_out, batches_in = anyio.create_memory_object_stream[tuple[int, _Batch]](0)
                self._batches_out = batches_out
                async with batches_out, batches_in, anyio.create_task_group() as tg:
                    self._tg = tg
                    for i in range(settings.max_concurrent_requests):
                        tg.start_soon(
                            self._request_worker, batches_in, name=f"hiveloop_async.request.{i}"
                        )
                    tg.start_soon(self._sender_loop, name="hiveloop_async.sender")
                    for agent in self.client.agents:
                        self._start_heartbeat(agent)
                    self._ready.set()
                    if on_ready is not None:
                        on_ready()
                    await self._close_ev.wait()
                    with anyio.move_on_after(max(0.0, self._deadline - time.monotonic())):
                        await self._sender_done.wait()
                    tg.cancel_scope.cancel()
        except Exception:
            internal_error("engine")
        finally:
            self._ready.set()
            if on_ready is not None:
                on_ready()
            self._finish(summary=True)

    def _finish(self, summary: bool = False) -> None:
        """Account for everything left when the engine stops, and release flush waiters.

        With ``summary``, a closing engine also logs what was dropped since the last summary
        (those counted while its last batches were retried or cut off at the deadline).
        """
        client = self.client
        try:
            if not self._handover and client.closed:
                with client._lock:
                    while True:
                        try:
                            rec = client._q.popleft()
                        except IndexError:
                            break
                        client._discard(rec, "shutdown")
            for batch in self._open_batches.values():
                if not batch.outstanding:
                    continue
                if client.closed or batch.outstanding != len(batch.events):
                    self._settle(batch, batch.outstanding, "shutdown")
                else:  # the next sender sends it (the events stay counted in flight)
                    client._stash.append((batch.agent, batch.events))
            self._open_batches.clear()
            if client.closed and client.in_flight:
                client._release(client.in_flight, "shutdown")
                client._stash.clear()
            for _, waiter in self._flush_waiters:
                waiter.resolve()
            self._flush_waiters.clear()
            if summary and self._closing:
                self._log_drops()
        except Exception:
            internal_error("engine finish")
        finally:
            self._finished.set()

    async def _sender_loop(self) -> None:
        assert self._wake_ev is not None and self._sender_done is not None
        try:
            while self.client._stash:  # batches a previous sender could not finish
                agent, events = self.client._stash.pop(0)
                await self._dispatch(agent, events)
            while True:
                if not self._closing:
                    with anyio.move_on_after(self.settings.flush_interval):
                        await self._wake_ev.wait()
                self._wake_ev.clear()
                if self._handover:
                    await self._wait_batches()
                    return
                await self._drain()
                self._log_drops()
                if self._closing:
                    if not self.client._q:
                        await self._wait_batches()
                        return
                elif self.client._rearm():
                    self._wake_ev.set()
        except Exception:
            internal_error("sender loop")
        finally:
            self._sender_done.set()

    async def _wait_batches(self) -> None:
        while self._open_batches:
            waiter = _LocalWaiter()
            self._flush_waiters.append((self._batch_seq, waiter))  # type: ignore[arg-type]
            await waiter.event.wait()

    # -- encoding and batching -----------------------------------------------------------------

    def _envelope(self, agent: Agent) -> bytes:
        cached = self._envelopes.get(agent.agent_id)
        if cached is None or cached[0] is not agent.envelope:
            cached = (agent.envelope, encode_envelope(agent))
            self._envelopes[agent.agent_id] = cached
        return cached[1]

    async def _drain(self) -> None:
        client = self.client
        popleft = client._q.popleft
        # Taking a record and counting it happen under the client's lock, so that stats()
        # never sees a record both in the queue and taken, or in neither.
        lock = client._lock
        encode = self._encoder.encode
        self._encoder.recalibrate()
        batch_size = self.settings.batch_size
        max_event = MAX_BATCH_BYTES - _ENVELOPE_OVERHEAD  # bytes of one event, at most
        groups: dict[Agent, _Group] = {}
        # The group of the agent of the last event (consecutive events mostly share one).
        agent: Agent | None = None
        group = _Group()
        n = 0
        clock = time.perf_counter
        slice_end = clock() + ENCODE_SLICE_S
        try:
            while not self._handover:
                with lock:
                    try:
                        rec = popleft()
                    except IndexError:
                        break
                    waiter = type(rec) is _Waiter
                    if not waiter:
                        client._popped += 1
                        client.in_flight += 1  # from here until it is sent or dropped
                if waiter:
                    await self._dispatch_all(groups)
                    agent = None
                    self._add_flush_waiter(rec)
                    continue
                try:
                    out = encode(rec)
                    if out is None:
                        client._release(1, None)
                        continue
                    rec_agent, data = out
                except Exception:
                    internal_error("serialize")
                    client._release(1, "serialization")
                    continue
                size = len(data)
                if size > max_event:
                    client._release(1, "oversize")
                    continue
                if rec_agent is not agent:
                    agent = rec_agent
                    found = groups.get(agent)
                    if found is None:
                        group = groups[agent] = _Group()
                    else:
                        group = found
                size += 1  # and its comma
                if len(group.events) >= batch_size or group.size + size > MAX_BATCH_BYTES:
                    await self._dispatch(agent, group.events)
                    group = groups[agent] = _Group()
                group.events.append(data)
                group.size += size
                n += 1
                if not n & 15 and clock() >= slice_end:
                    await asyncio.sleep(0)  # a checkpoint; cheaper than anyio's on asyncio
                    slice_end = clock() + ENCODE_SLICE_S
            await self._dispatch_all(groups)
        except BaseException:
            # Cancelled without a shutdown: what was taken from the queue goes to the stash.
            if not client.closed:
                client._stash.extend((a, g.events) for a, g in groups.items() if g.events)
            raise

    async def _dispatch_all(self, groups: dict[Agent, _Group]) -> None:
        """Dispatch every group; a group leaves ``groups`` only once it is dispatched."""
        for agent in list(groups):
            await self._dispatch(agent, groups[agent].events)
            del groups[agent]

    async def _dispatch(self, agent: Agent, events: list[bytes]) -> None:
        if not events:
            return
        assert self._batches_out is not None
        self._batch_seq += 1
        seq = self._batch_seq
        batch = self._open_batches[seq] = _Batch(agent, events)
        await self._batches_out.send((seq, batch))

    # -- flush bookkeeping ---------------------------------------------------------------------

    def _add_flush_waiter(self, waiter: _Waiter) -> None:
        if not self._open_batches:
            waiter.resolve()
        else:
            self._flush_waiters.append((self._batch_seq, waiter))

    def _batch_done(self, seq: int) -> None:
        self._open_batches.pop(seq, None)
        lowest = min(self._open_batches) if self._open_batches else math.inf
        keep = []
        for upto, waiter in self._flush_waiters:
            if upto < lowest:
                waiter.resolve()
            else:
                keep.append((upto, waiter))
        self._flush_waiters = keep

    # -- delivery ------------------------------------------------------------------------------

    def _settle(self, batch: _Batch, n: int, reason: str | None) -> None:
        """Account ``n`` events of ``batch``: sent when ``reason`` is None, else dropped."""
        n = min(n, batch.outstanding)
        if n <= 0:
            return
        batch.outstanding -= n
        self.client._release(n, reason)

    async def _request_worker(self, batches: MemoryObjectReceiveStream[tuple[int, _Batch]]) -> None:
        async for seq, batch in batches:
            await self._send_batch(seq, batch)

    async def _send_batch(self, seq: int, batch: _Batch) -> None:
        try:
            await self._deliver(
                batch, batch.events, time.monotonic() + self.settings.retry_deadline
            )
        except Exception:
            internal_error("send batch")
            self._settle(batch, batch.outstanding, "shutdown")
        finally:
            # Cancelled: at shutdown what is left is lost (counted); otherwise (the loop
            # ended under us, a hand-over) the batch stays open and _finish stashes it.
            if batch.outstanding and self.client.closed:
                self._settle(batch, batch.outstanding, "shutdown")
            if not batch.outstanding:
                self._batch_done(seq)

    async def _deliver(self, batch: _Batch, events: list[bytes], deadline: float) -> None:
        """Send ``events`` until accepted or given up; split on 400 to isolate bad ones."""
        client = self.client
        n = len(events)
        body = build_body(self._envelope(batch.agent), events)
        attempt = 0
        while True:
            if self._unauthorized:
                self._settle(batch, n, "unauthorized")
                return
            client.batches += 1
            status, raw, retry_after_header = await self._post(body)
            if status == 200:
                self._settle(batch, n, None)
                logger.debug("hiveloop_async: delivered %d events", n)
                return
            if status == 207:
                self._partial(batch, n, raw)
                return
            if status in (400, 413, 422):
                client.last_error = f"HTTP {status}: {_error_text(raw)}"
                if n == 1:
                    self._settle(batch, 1, "rejected")
                    self._rejections["validation_error"] += 1
                    return
                half = n // 2
                await self._deliver(batch, events[:half], deadline)
                await self._deliver(batch, events[half:], deadline)
                return
            if status in (401, 403):
                self._unauthorized = True
                client.last_error = f"HTTP {status}: {_error_text(raw)}"
                logger.error(
                    "hiveloop_async: the server refused the API key (HTTP %d); events will be "
                    "counted as dropped (unauthorized) and not sent",
                    status,
                )
                self._settle(batch, n, "unauthorized")
                return
            if status == 429:
                delay = _retry_after(raw, retry_after_header)
                client.last_error = "HTTP 429: rate limited"
            elif status >= 500 or status < 0:
                delay = random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                if status >= 500:
                    client.last_error = f"HTTP {status}"
            else:
                client.last_error = f"HTTP {status}: {_error_text(raw)}"
                self._settle(batch, n, "rejected")
                return
            attempt += 1
            if self._closing:
                delay = min(delay, SHUTDOWN_BACKOFF_CAP)
            if time.monotonic() + delay > deadline:
                self._settle(batch, n, "retries_exhausted")
                return
            client.retries += 1
            await self._backoff(delay)

    def _partial(self, batch: _Batch, n: int, raw: bytes | None) -> None:
        """207: count accepted as sent and rejected by the server's reason."""
        try:
            info = orjson.loads(raw or b"{}")
            errors = info.get("errors") or []
            rejected = int(info.get("rejected", len(errors)))
        except Exception:
            errors, rejected = [], 0
        rejected = max(0, min(rejected, n))
        oversize = 0
        for err in errors:
            code = str(err.get("error", "unknown")) if isinstance(err, dict) else "unknown"
            self._rejections[code] += 1
            if code == "payload_too_large":
                oversize += 1
        oversize = min(oversize, rejected)
        self._settle(batch, n - rejected, None)
        if oversize:
            self._settle(batch, oversize, "oversize")
        self._settle(batch, rejected - oversize, "rejected")
        if rejected:
            self.client.last_error = f"HTTP 207: {rejected} events rejected"

    async def _post(self, body: bytes) -> tuple[int, bytes | None, str | None]:
        """POST one body. Returns (status, body, Retry-After); status -1 on network errors."""
        assert self._session is not None and self._url is not None
        try:
            async with self._session.post(self._url, data=body) as resp:
                raw = await resp.read()
                return resp.status, raw, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            cause = getattr(exc, "os_error", exc)  # aiohttp wraps the resolver's error
            if isinstance(cause, socket.gaierror):
                self.client.last_error = f"cannot resolve the endpoint's host name: {cause}"
            else:
                self.client.last_error = f"{type(exc).__name__}: network error"
            return -1, None, None
        except Exception as exc:  # an HTTP stack failure we do not know: retry, say so once
            self.client.last_error = f"{type(exc).__name__}: unexpected error while sending"
            warn_once(
                "post-unexpected",
                "hiveloop_async: unexpected %s while sending; retrying",
                type(exc).__name__,
            )
            return -1, None, None

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay``; a shutdown cuts it short."""
        assert self._close_ev is not None
        if self._closing:
            await anyio.sleep(delay)
            return
        with anyio.move_on_after(delay):
            await self._close_ev.wait()

    def _log_drops(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log < DROP_LOG_INTERVAL and not self._closing:
            return
        stats = self.client.stats()
        total = stats["dropped_total"]
        if total > self._logged_drops:
            reasons = ", ".join(f"{k}={v}" for k, v in stats["dropped"].items() if v)
            logger.warning(
                "hiveloop_async: %d events dropped so far (%s); last error: %s",
                total,
                reasons,
                stats["last_error"],
            )
            self._logged_drops = total
        self._last_drop_log = now

    # -- heartbeats ----------------------------------------------------------------------------

    def _start_heartbeat(self, agent: Agent) -> None:
        if self._tg is None or self._closing or agent.agent_id in self._heartbeats:
            return
        if agent.heartbeat_interval <= 0 or agent._heartbeat_stopped:
            return
        self._heartbeats.add(agent.agent_id)
        self._tg.start_soon(
            self._heartbeat_loop, agent, name=f"hiveloop_async.heartbeat.{agent.agent_id}"
        )

    async def _heartbeat_loop(self, agent: Agent) -> None:
        assert self._close_ev is not None
        try:
            while True:
                interval = agent.heartbeat_interval
                if interval <= 0:
                    return
                with anyio.move_on_after(interval):
                    await self._close_ev.wait()
                if self._closing or agent._heartbeat_stopped:
                    return
                payload = await self._callback(agent, agent.heartbeat_payload, "heartbeat_payload")
                agent._emit("heartbeat", payload if payload is not None else None)
                if agent.queue_provider is not None:
                    snap = await self._callback(agent, agent.queue_provider, "queue_provider")
                    if isinstance(snap, dict):
                        agent._emit("custom", queue_snapshot_payload(snap))
        except Exception:
            internal_error("heartbeat")
        finally:
            self._heartbeats.discard(agent.agent_id)

    async def _callback(
        self, agent: Agent, fn: HeartbeatCallback | None, what: str
    ) -> dict[str, Any] | None:
        """Call a sync or async user callback; a failing one is logged once and skipped."""
        if fn is None:
            return None
        try:
            result: Any = fn()
            if inspect.isawaitable(result):
                result = await result
            return result  # type: ignore[no-any-return]
        except Exception:
            warn_once(
                f"callback:{agent.agent_id}:{what}",
                "hiveloop_async: %s of agent %r raised; heartbeats go on without it",
                what,
                agent.agent_id,
            )
            return None


class _LocalWaiter:
    """A flush waiter local to the engine's loop (used to wait for open batches)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def resolve(self) -> None:
        self.event.set()


def _error_text(raw: bytes | None) -> str:
    if not raw:
        return ""
    try:
        info = orjson.loads(raw)
        if isinstance(info, dict):
            return str(info.get("message") or info.get("error") or info.get("detail") or "")[:200]
    except orjson.JSONDecodeError:
        pass
    return raw[:200].decode("utf-8", "replace")


def _retry_after(raw: bytes | None, header: str | None) -> float:
    """Delay for a 429: ``details.retry_after_seconds``, else ``Retry-After``, else 2 s."""
    try:
        info = orjson.loads(raw or b"{}")
        value = info.get("details", {}).get("retry_after_seconds")
        if value is not None and float(value) >= 0:
            return min(float(value), 300.0)
    except Exception:
        pass
    if header:
        try:
            return min(max(0.0, float(header)), 300.0)
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
                return min(max(0.0, when.timestamp() - time.time()), 300.0)
            except (TypeError, ValueError):
                pass
    return DEFAULT_RETRY_AFTER


class ThreadRunner:
    """Runs an :class:`Engine` on a private event loop in a daemon thread.

    When no thread can start (CPython 3.12 forbids new threads once ``atexit`` hooks run) or
    at exit (``start()`` never called), :meth:`close` runs the final drain in the calling
    thread instead, on a fresh event loop, bounded by the same deadline.
    """

    def __init__(self, client: HiveBoard) -> None:
        self.engine = Engine(client)
        self._thread = threading.Thread(
            target=self._main, name="hiveloop_async.sender", daemon=True
        )
        self._started = False
        self._drain_lock = threading.Lock()

    def start(self) -> bool:
        """Start the thread; False when it cannot start (``close()`` then drains here)."""
        try:
            self._thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            if "shutdown" in str(exc):
                logger.debug("hiveloop_async: no sender thread at shutdown; draining at close")
            else:
                warn_once(
                    "thread-start",
                    "hiveloop_async: could not start the sender thread (%s); events stay "
                    "queued until shutdown() or aclose()",
                    exc,
                )
            return False
        self._started = True
        return True

    def _main(self) -> None:
        try:
            asyncio.run(self.engine.run())
        except Exception:
            internal_error("sender thread")

    def close(self, deadline: float) -> None:
        """Close the engine and join the thread, both bounded by ``deadline``."""
        if not self._started:
            self._drain_here(deadline)
            return
        self.engine.close_threadsafe(deadline)
        self._thread.join(max(0.0, deadline - time.monotonic()) + 0.1)

    def hand_over(self, timeout: float) -> None:
        """Stop consuming the queue so an engine on the application's loop can take it."""
        if not self._started:
            return  # nothing took records from the queue: the new engine takes it as it is
        self.engine.hand_over(time.monotonic() + timeout)
        self._thread.join(timeout + 0.1)

    def _drain_here(self, deadline: float) -> None:
        """The final drain on a fresh event loop in the calling thread, until ``deadline``.

        Not ``asyncio.run()``: its executor shutdown starts a thread. Runs in an empty
        context so the caller's scope does not leak into the engine. One caller at a time.
        """
        if not self._drain_lock.acquire(timeout=max(0.0, deadline - time.monotonic()) + 0.1):
            return
        try:
            if self.engine._finished.is_set():
                return  # drained by an earlier close()
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:  # this thread runs a loop, and no thread could start: nowhere to send from
                self._give_up(
                    "no sender thread could start and shutdown() was called from a running "
                    "event loop (use 'await hb.aclose()')"
                )
                return
            loop = asyncio.new_event_loop()
            try:
                contextvars.Context().run(loop.run_until_complete, self._final_drain(deadline))
            except Exception:
                internal_error("exit drain")
            finally:
                _close_loop(loop, deadline)
                if not self.engine._finished.is_set():
                    self.engine._finish()
        finally:
            self._drain_lock.release()

    async def _final_drain(self, deadline: float) -> None:
        engine = self.engine
        client = engine.client
        if not client._q and not client._stash:
            return
        await engine.start_on_loop()
        await engine.close(deadline)

    def _give_up(self, why: str) -> None:
        """Count everything left as dropped (``shutdown``), with one warning."""
        client = self.engine.client
        before = client.stats()["dropped_total"]
        self.engine._finish()
        lost = client.stats()["dropped_total"] - before
        if lost:
            logger.warning("hiveloop_async: %d events dropped (shutdown): %s", lost, why)


def _close_loop(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Close a loop of :meth:`ThreadRunner._drain_here`, within 0.15 s past ``deadline``."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:  # an engine cut off at its deadline: let it account for what is left
            grace = max(0.01, deadline + 0.1 - time.monotonic())
            loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
        loop.run_until_complete(
            asyncio.wait({loop.create_task(loop.shutdown_asyncgens())}, timeout=0.05)
        )
    except Exception:
        internal_error("exit drain")
    finally:
        loop.close()
