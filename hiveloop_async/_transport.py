r"""The sender: an anyio task group on an asyncio loop that encodes, batches, sends and retries.

``Engine`` runs either as a task on the application's loop (``async with HiveBoard``) or in
:class:`~._runner.ThreadRunner`'s daemon thread with a private loop. The path of one event:

1. :meth:`Engine._drain` takes records from the :class:`~._queue.EventQueue` (``take``),
   encodes them (:mod:`._serialize`, orjson, off the hot path) and groups them per agent
   (:class:`~._delivery.Batcher`);
2. a fixed pool of request workers POSTs each batch to ``/v1/ingest``, at most
   ``max_concurrent_requests`` in flight;
3. :func:`~._delivery.classify` says what the response means, and the engine applies it:
   the queue ``settle``\ s every event as sent or dropped for one reason, or the batch waits
   and is retried.

With an OTLP destination, every encoded event is also fed to the client's
:class:`~._otlp._pipeline.SpanPipeline`, and an :class:`~._otlp_sender.OTLPSender` task
exports the finished spans; without HiveBoard ingest (OTLP only) an event is settled as sent
once the pipeline has it. Heartbeats run here too, one task per agent. Nothing here raises
into the host program.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import anyio
import anyio.to_thread
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from yarl import URL  # aiohttp's URL type, installed with it

from ._config import Settings
from ._delivery import NETWORK_ERROR, Batcher, classify, retry_delay
from ._hooks import BeforeSend
from ._internal import internal_error, logger, warn_once
from ._otlp._pipeline import SpanPipeline
from ._otlp_sender import OTLPSender
from ._payloads import queue_snapshot_payload
from ._queue import EventQueue, FlushMarker
from ._resolve import ExitSafeResolver
from ._sampling import TaskSampler
from ._scrub import Scrubber
from ._serialize import RecordEncoder, build_body, encode_envelope
from ._spool import open_spool
from ._spooler import Spooler
from ._version import __version__

if TYPE_CHECKING:
    from ._agent import Agent, HeartbeatCallback

#: At most one summary line of drops per this many seconds.
DROP_LOG_INTERVAL = 10.0
#: The sender yields to the event loop (and, in thread mode, the GIL) after encoding for
#: this long, so the application's loop lag stays well under a millisecond.
ENCODE_SLICE_S = 0.0002
#: Records taken from the queue in one locked step.
TAKE_CHUNK = 64
#: Request bodies at least this long are gzipped in a worker thread (the loop goes on).
GZIP_IN_THREAD_BYTES = 256 * 1024


#: Tasks started from loop callbacks, kept referenced until they finish.
_PENDING: set[asyncio.Task[None]] = set()


class _Resolvable(Protocol):
    def resolve(self) -> None: ...


class _Batch:
    """One agent's events on their way; tracks how many are not yet accounted for."""

    __slots__ = ("agent", "events", "outstanding")

    def __init__(self, agent: Agent, events: list[bytes]) -> None:
        self.agent = agent
        self.events = events
        self.outstanding = len(events)


class Engine:
    """Sender and heartbeats of one queue, on one asyncio loop. See the module docstring.

    ``agents`` returns the client's agents (heartbeats start for each when the engine runs).
    """

    def __init__(
        self,
        queue: EventQueue,
        settings: Settings,
        agents: Callable[[], list[Agent]],
        otlp: SpanPipeline | None = None,
        *,
        scrubber: Scrubber | None = None,
        before_send: BeforeSend | None = None,
    ) -> None:
        self.queue = queue
        self._scrubber = scrubber
        self._hook = before_send
        #: Set once the engine runs, when ``spool_dir`` is configured (opening it is I/O).
        self._spooler: Spooler | None = None
        #: The last attempt found the server unreachable or failing (5xx, 429, network).
        self._outage = False
        self._replay_ev: asyncio.Event | None = None
        #: Set while no spooled batch is being replayed (a shutdown waits for it).
        self._replay_idle: asyncio.Event | None = None
        self.otlp = otlp
        self._otlp_sender = (
            None
            if otlp is None
            else OTLPSender(
                otlp,
                flush_interval=settings.flush_interval,
                request_timeout=settings.request_timeout,
                retry_deadline=settings.retry_deadline,
            )
        )
        self.settings = settings
        self._agents = agents
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
        self._encoder = RecordEncoder(scrubber if before_send is None else None)
        self._envelopes: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._heartbeats: set[str] = set()
        self._batch_seq = 0
        self._open_batches: dict[int, _Batch] = {}
        self._flush_waiters: list[tuple[int, _Resolvable]] = []
        #: After a refused key: when the next probe may go out (monotonic), else None.
        self._auth_probe_at: float | None = None
        self._probing = False
        self._last_drop_log = time.monotonic()
        self._logged_drops = 0
        self._rejections: Counter[str] = Counter()
        self._sampler: TaskSampler | None = None
        if settings.sample_rate < 1.0 or settings.sampler is not None:
            self._sampler = TaskSampler(
                settings.sample_rate, settings.sampler, keep_failed=settings.keep_failed
            )

    # -- thread-safe controls ------------------------------------------------------------

    def on_current_thread(self) -> bool:
        """True when called on the thread running this engine's loop."""
        return self._thread_id == threading.get_ident()

    def loop_alive(self) -> bool:
        """True while the engine's loop runs and the engine has not finished."""
        loop = self.loop
        return loop is not None and not loop.is_closed() and not self._finished.is_set()

    @property
    def finished(self) -> bool:
        """True once the engine accounted for everything it held and stopped."""
        return self._finished.is_set()

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
        self._call_soon(self._start_heartbeat_in_task, agent)

    def _start_heartbeat_in_task(self, agent: Agent) -> None:
        """``_start_heartbeat`` from inside a task, never from a bare loop callback.

        anyio asks sniffio (when it is installed, e.g. by openai or anthropic) which library
        runs, and sniffio answers only inside a task: ``start_soon`` from a callback raised.
        """
        if asyncio.current_task() is not None:
            self._start_heartbeat(agent)
            return

        async def start() -> None:
            self._start_heartbeat(agent)

        task = asyncio.get_running_loop().create_task(start())
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)

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
            if settings.spool_dir is not None and settings.ingest and self._spooler is None:
                try:
                    spool = await anyio.to_thread.run_sync(
                        open_spool, settings.spool_dir, settings.spool_max_bytes
                    )
                except Exception as exc:
                    warn_once(
                        "spool-open",
                        "hiveloop_async: cannot open the spool directory (%s); not spooling",
                        type(exc).__name__,
                    )
                else:
                    self._spooler = Spooler(spool, settings.ingest_url)
                    self._replay_ev = asyncio.Event()
                    self._replay_ev.set()  # replay what an earlier process left, at once
                    self._replay_idle = asyncio.Event()
                    self._replay_idle.set()
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
                    if self._spooler is not None:
                        tg.start_soon(self._replay_loop, name="hiveloop_async.replay")
                    if self._otlp_sender is not None:
                        tg.start_soon(self._otlp_sender.run, name="hiveloop_async.otlp")
                    for agent in self._agents():
                        self._start_heartbeat(agent)
                    self._ready.set()
                    if on_ready is not None:
                        on_ready()
                    await self._close_ev.wait()
                    with anyio.move_on_after(max(0.0, self._deadline - time.monotonic())):
                        await self._sender_done.wait()
                        if self._replay_idle is not None:
                            # A batch being replayed may have reached the server already:
                            # wait for its answer, so that it is confirmed, not sent twice.
                            await self._replay_idle.wait()
                    tg.cancel_scope.cancel()
        except Exception:
            internal_error("engine")
        finally:
            self._ready.set()
            if on_ready is not None:
                on_ready()
            self.finish(summary=True)

    def finish(self, summary: bool = False) -> None:
        """Account for everything left when the engine stops, and release flush waiters.

        Called when the engine's body ends, and by the runner when no body could run. With
        ``summary``, a closing engine also logs what was dropped since the last summary
        (those counted while its last batches were retried or cut off at the deadline).
        """
        queue = self.queue
        try:
            if self._spooler is not None and queue.closed and not self._handover:
                self._spool_leftovers()
            if not self._handover and queue.closed:
                queue.discard_all("shutdown")
            for batch in self._open_batches.values():
                if not batch.outstanding:
                    continue
                if queue.closed or batch.outstanding != len(batch.events):
                    self._settle(batch, batch.outstanding, "shutdown")
                else:  # the next sender sends it (the events stay counted in flight)
                    queue.stash(batch.agent, batch.events)
            self._open_batches.clear()
            if self._sampler is not None:  # held trees whose root did not end: sampled out
                queue.settle(self._sampler.release_held(), "sampled_out")
            if queue.closed and queue.in_flight:
                queue.settle(queue.in_flight, "shutdown")
                queue.drop_stash()
            for _, waiter in self._flush_waiters:
                waiter.resolve()
            self._flush_waiters.clear()
            if self.otlp is not None:
                if queue.closed:
                    self.otlp.drop_all("shutdown")
                self.otlp.release_waiters()
            if summary and self._closing:
                self._log_drops()
        except Exception:
            internal_error("engine finish")
        finally:
            self._finished.set()

    async def _sender_loop(self) -> None:
        assert self._wake_ev is not None and self._sender_done is not None
        queue = self.queue
        try:
            while (stashed := queue.unstash()) is not None:  # what a previous sender left
                await self._dispatch(*stashed)
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
                if self._otlp_sender is not None:
                    self._otlp_sender.wake()
                if self._closing:
                    if not len(queue):
                        if self._otlp_sender is None:
                            await self._wait_batches()
                        else:  # both destinations finish side by side, to one deadline
                            async with anyio.create_task_group() as both:
                                both.start_soon(self._wait_batches)
                                both.start_soon(self._otlp_sender.close, self._deadline)
                        return
                elif queue.rearm():
                    self._wake_ev.set()
        except Exception:
            internal_error("sender loop")
        finally:
            self._sender_done.set()

    async def _wait_batches(self) -> None:
        while self._open_batches:
            waiter = _LocalWaiter()
            self._flush_waiters.append((self._batch_seq, waiter))
            await waiter.event.wait()

    # -- encoding and batching -----------------------------------------------------------------

    def _envelope(self, agent: Agent) -> bytes:
        cached = self._envelopes.get(agent.agent_id)
        if cached is None or cached[0] is not agent.envelope:
            cached = (agent.envelope, encode_envelope(agent))
            self._envelopes[agent.agent_id] = cached
        return cached[1]

    async def _drain(self) -> None:
        """Take, encode and batch everything queued; dispatch the batches to the workers."""
        queue = self.queue
        encoder = self._encoder
        encode = encoder.encode
        # With a scrubber, the encoder's verdicts spare decoding the clean events; without
        # one (or with before_send, which decodes every event anyway) there is none to ask.
        encode_checked = encoder.encode_checked if encoder.gives_verdicts else None
        encoder.recalibrate()
        batcher: Batcher[Agent] = Batcher(self.settings.batch_size)
        max_event = Batcher.MAX_EVENT_BYTES
        settle = queue.settle
        otlp = self.otlp
        otlp_full = otlp.batch_size if otlp is not None else 0
        otlp_wake_full = self._otlp_sender.wake_full if self._otlp_sender is not None else _no_wake
        ingest = self.settings.ingest
        sampler = self._sampler
        scrubber = self._scrubber
        hook = self._hook
        closing = False
        chunk: list[Any] = []
        i = end = 0  # chunk[i:end] is taken and not handled yet
        marker: FlushMarker | None = None  # taken, not yet registered as a flush waiter
        n = 0
        clock = time.perf_counter
        slice_end = clock() + ENCODE_SLICE_S
        try:
            while not self._handover:
                chunk = queue.take(TAKE_CHUNK)
                i = 0
                if not chunk:
                    break
                end = len(chunk)
                while i < end and not self._handover:
                    rec = chunk[i]
                    i += 1
                    if type(rec) is FlushMarker:
                        # Dispatching may wait for a free worker: what is not taken yet
                        # stays in the queue meanwhile (where overflow can drop it).
                        queue.give_back(chunk[i:end])
                        end = i
                        marker = rec
                        await self._dispatch_all(batcher)
                        self._add_flush_waiter(rec)
                        marker = None
                        continue
                    if sampler is not None:
                        closing = type(rec) is not tuple and rec.opened
                    try:
                        if encode_checked is not None:
                            checked = encode_checked(rec)
                            if checked is None:
                                settle(1, None)
                                continue
                            agent, data, clean = checked
                        else:
                            out = encode(rec)
                            if out is None:
                                settle(1, None)
                                continue
                            agent, data = out
                            clean = False
                    except Exception:
                        internal_error("serialize")
                        settle(1, "serialization")
                        continue
                    event: dict[str, Any] | None = None  # data decoded, when it is
                    if hook is not None:
                        try:
                            filtered = await self._before_send(hook, data)
                        except BaseException:
                            settle(1, "shutdown")  # cancelled inside the user's hook
                            raise
                        if filtered is None:
                            settle(1, "before_send")
                            continue
                        data = filtered
                    elif scrubber is not None:
                        if clean:  # the encoder's verdict: scrubbing would change nothing
                            scrubber.count_clean()
                            if otlp is not None and sampler is None:
                                event = orjson.loads(data)
                        elif otlp is None or sampler is not None:
                            data = scrubber.scrub_encoded(data)[0]
                        else:  # the scrubbed dict goes to the span assembler: decoded once
                            data, event, _ = scrubber.scrub_decoding(data)
                    if sampler is None:
                        items: Any = ((agent, data),)
                    else:  # the tree's decision applies to both destinations
                        items, dropped = sampler.route(rec, closing, agent, data)
                        if dropped:
                            settle(dropped, "sampled_out")
                    for agent, data in items:
                        if otlp is not None:
                            try:
                                pending = (
                                    otlp.feed(agent.envelope, data)
                                    if event is None
                                    else otlp.feed_event(agent.envelope, event)
                                )
                                if pending >= otlp_full:
                                    otlp_wake_full()  # a burst: send full batches meanwhile
                            except Exception:
                                internal_error("otlp feed")
                            if not ingest:  # OTLP alone: handed over is done
                                settle(1, None)
                                continue
                        if len(data) > max_event:
                            settle(1, "oversize")
                            continue
                        full = batcher.add(agent, data)
                        if full is not None:
                            # As above: the dispatch may wait. chunk[i:end], so that a second
                            # full batch of the same record's items gives nothing back twice.
                            queue.give_back(chunk[i:end])
                            end = i
                            await self._dispatch(agent, full)
                    n += 1
                    if not n & 15 and clock() >= slice_end:
                        await asyncio.sleep(0)  # a checkpoint; cheaper than anyio's on asyncio
                        slice_end = clock() + ENCODE_SLICE_S
                queue.give_back(chunk[i:end])  # handed over mid-chunk: the next engine takes them
                chunk = []
            await self._dispatch_all(batcher)
        except BaseException:
            # Cancelled: what was taken but not encoded goes back to the queue, and what was
            # encoded but not dispatched to the stash (the next sender sends both).
            queue.give_back(([marker] if marker is not None else []) + chunk[i:end], trim=False)
            for agent, events in batcher.pending():  # finish() spools or counts them if closed
                queue.stash(agent, events)
            raise

    async def _dispatch_all(self, batcher: Batcher[Agent]) -> None:
        """Dispatch every batch still forming (each one registered before any await)."""
        while (item := batcher.pop()) is not None:
            await self._dispatch(*item)

    async def _dispatch(self, agent: Agent, events: list[bytes]) -> None:
        if not events:
            return
        assert self._batches_out is not None
        self._batch_seq += 1
        seq = self._batch_seq
        batch = self._open_batches[seq] = _Batch(agent, events)
        if self._outage and self._spooler is not None:
            try:
                self._batches_out.send_nowait((seq, batch))
                return
            except anyio.WouldBlock:
                # Every worker is retrying against a failing server: to the disk with it,
                # rather than waiting while the queue overflows.
                body = build_body(self._envelope(agent), events)
                if await self._spooler.write(body, len(events)):
                    self._settle(batch, batch.outstanding, "spooled")
                    self._batch_done(seq)
                    return
        await self._batches_out.send((seq, batch))

    # -- flush bookkeeping ---------------------------------------------------------------------

    def _add_flush_waiter(self, waiter: _Resolvable) -> None:
        if self.otlp is not None:
            # Both destinations: the flush is done when HiveBoard's batches so far are, and
            # then every span finished so far is sent or dropped.
            waiter = _ThenOTLP(waiter, self.otlp)
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
        self.queue.settle(n, reason)

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
            # ended under us, a hand-over) the batch stays open and finish() stashes it.
            if batch.outstanding and self.queue.closed:
                self._settle(batch, batch.outstanding, "shutdown")
            if not batch.outstanding:
                self._batch_done(seq)

    async def _deliver(self, batch: _Batch, events: list[bytes], deadline: float) -> None:
        """Deliver ``events``; while the key is refused, count them or probe with one."""
        probe = self._auth_probe_at
        if probe is not None:  # the key was refused: count, or probe with one event
            if self._probing or time.monotonic() < probe:
                self._settle(batch, len(events), "unauthorized")
                return
            self._probing = True
            try:
                await self._send(batch, events[:1], deadline)
            finally:
                self._probing = False
            if self._auth_probe_at is None:  # accepted: the rest goes out as usual
                logger.warning("hiveloop_async: the server accepts the API key again")
                if len(events) > 1:
                    await self._deliver(batch, events[1:], deadline)
            else:
                self._settle(batch, len(events) - 1, "unauthorized")
            return
        await self._send(batch, events, deadline)

    async def _send(self, batch: _Batch, events: list[bytes], deadline: float) -> None:
        """Send ``events`` until accepted or given up (see :func:`~._delivery.classify`)."""
        queue = self.queue
        n = len(events)
        body = build_body(self._envelope(batch.agent), events)
        wire = await self._compress(body)
        attempt = 0
        while True:
            queue.count_attempt()
            status, raw, retry_after = await self._post(wire)
            outcome = classify(status, raw, retry_after, n, attempt)
            if outcome.error is not None:
                queue.note_error(outcome.error)
            for code, count in outcome.codes.items():
                self._rejections[code] += count
            kind = outcome.kind
            if kind == "retry":
                self._outage = True
                attempt += 1
                delay = retry_delay(
                    outcome.delay, closing=self._closing, now=time.monotonic(), deadline=deadline
                )
                if delay is None:
                    spooler = self._spooler
                    if spooler is not None and await spooler.write(body, n):
                        self._settle(batch, n, "spooled")
                    else:
                        self._settle(batch, n, "retries_exhausted")
                    return
                queue.count_retry()
                await self._backoff(delay)
                continue
            if kind == "split":  # isolate the events the server refuses
                half = n // 2
                await self._deliver(batch, events[:half], deadline)
                await self._deliver(batch, events[half:], deadline)
                return
            if kind == "unauthorized":
                interval = self.settings.auth_retry_interval
                self._auth_probe_at = time.monotonic() + interval
                if not queue.auth_refused:
                    queue.auth_refused = True  # one error line per client, in either mode
                    logger.error(
                        "hiveloop_async: the server refused the API key (HTTP %d); events "
                        "are counted as dropped (unauthorized) and not sent; one event is "
                        "tried again every %g s",
                        status,
                        interval,
                    )
            elif self._auth_probe_at is not None:
                self._auth_probe_at = None  # the probe got through: the key works again
            elif kind == "delivered":
                logger.debug("hiveloop_async: delivered %d events", n)
            if kind in ("delivered", "partial") and self._outage:
                # The server answers again: replay the spool. Only after a failure: every
                # batch spooled in this process was spooled during one (retries ran out, or
                # the outage overflow), and what earlier processes left is replayed at
                # start. Waking the replay after every delivered batch cost a thread hop
                # and a directory scan per batch (+4 µs/event, make bench-safety).
                self._outage = False
                if self._replay_ev is not None:
                    self._replay_ev.set()
            self._settle(batch, outcome.sent, None)
            for reason, count in outcome.drops.items():
                self._settle(batch, count, reason)
            return

    async def _post(self, body: bytes) -> tuple[int, bytes | None, str | None]:
        """POST one body. Returns (status, body, Retry-After); NETWORK_ERROR on no response."""
        assert self._session is not None and self._url is not None
        try:
            headers = _GZIP_HEADERS if self.settings.compression == "gzip" else None
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                raw = await resp.read()
                return resp.status, raw, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            cause = getattr(exc, "os_error", exc)  # aiohttp wraps the resolver's error
            if isinstance(cause, socket.gaierror):
                self.queue.note_error(f"cannot resolve the endpoint's host name: {cause}")
            elif isinstance(exc, aiohttp.ClientSSLError):
                # Retried like any network error (a certificate may be renewed, a proxy
                # restarted), but rarely transient: say so once, with what to check.
                what = (
                    "certificate verification failed"
                    if isinstance(exc, aiohttp.ClientConnectorCertificateError)
                    else "TLS handshake failed"
                )
                self.queue.note_error(f"{type(exc).__name__}: {what}")
                warn_once(
                    "post-tls",
                    "hiveloop_async: %s talking to the endpoint (%s); retrying. Check the "
                    "endpoint's scheme and port, its certificate, or your CA bundle",
                    what,
                    type(exc).__name__,
                )
            else:
                self.queue.note_error(f"{type(exc).__name__}: network error")
            return NETWORK_ERROR, None, None
        except Exception as exc:  # an HTTP stack failure we do not know: retry, say so once
            self.queue.note_error(f"{type(exc).__name__}: unexpected error while sending")
            warn_once(
                "post-unexpected",
                "hiveloop_async: unexpected %s while sending; retrying",
                type(exc).__name__,
            )
            return NETWORK_ERROR, None, None

    async def _compress(self, body: bytes) -> bytes:
        """The request body as sent: gzipped when ``compression="gzip"``."""
        if self.settings.compression != "gzip":
            return body
        if len(body) < GZIP_IN_THREAD_BYTES:
            return gzip.compress(body, 5)
        return await anyio.to_thread.run_sync(gzip.compress, body, 5)

    async def _post_body(self, body: bytes) -> tuple[int, bytes | None, str | None]:
        """POST an uncompressed body (compressing it as configured): for the replay."""
        return await self._post(await self._compress(body))

    async def _replay_loop(self) -> None:
        """Replay the spool when the engine starts and whenever the server answers again."""
        assert self._replay_ev is not None and self._spooler is not None
        assert self._replay_idle is not None
        spooler, replay_ev, idle = self._spooler, self._replay_ev, self._replay_idle
        try:
            while not self._closing:
                await replay_ev.wait()
                replay_ev.clear()
                if self._closing:
                    break
                idle.clear()
                try:
                    await spooler.replay(
                        self._post_body, self.queue.note_replayed, lambda: not self._closing
                    )
                finally:
                    idle.set()
        except Exception:
            internal_error("spool replay")

    async def _before_send(self, hook: BeforeSend, data: bytes) -> bytes | None:
        """Run the user's hook on one encoded event, then scrub; None: the hook dropped it."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        kept = await hook.arun(event) if hook.is_async else hook.run(event)
        return self._after_hook(kept, data)

    def _before_send_now(self, hook: BeforeSend, data: bytes) -> bytes | None:
        """:meth:`_before_send` in this thread (at close); an async hook cannot run here."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        return self._after_hook(hook.run(event), data)

    def _after_hook(self, kept: dict[str, Any] | None, data: bytes) -> bytes | None:
        scrubber = self._scrubber
        if kept is None:
            return None
        if scrubber is not None:
            scrubber.scrub_event(kept)
        try:
            return orjson.dumps(kept, default=str, option=orjson.OPT_NON_STR_KEYS)
        except Exception:  # the hook put something JSON cannot carry: send it as it was
            warn_once(
                "before-send-json",
                "hiveloop_async: before_send returned a dict "
                "that cannot be encoded; the event is sent as it was",
            )
            return data if scrubber is None else scrubber.scrub_encoded(data)[0]

    def _spool_leftovers(self) -> None:
        """At close: spool what would be counted as ``shutdown`` (blocks on the disk)."""
        spooler = self._spooler
        assert spooler is not None
        queue = self.queue
        for batch in self._open_batches.values():
            n = batch.outstanding
            if n and spooler.write_now(
                build_body(self._envelope(batch.agent), batch.events[-n:]), n
            ):
                self._settle(batch, n, "spooled")
        while (stashed := queue.unstash()) is not None:
            agent, events = stashed
            if not spooler.write_now(build_body(self._envelope(agent), events), len(events)):
                queue.stash(agent, events)  # counted as shutdown below
                break
            queue.settle(len(events), "spooled")
        batcher: Batcher[Agent] = Batcher(self.settings.batch_size)
        while recs := queue.take(TAKE_CHUNK):
            for rec in recs:
                if type(rec) is FlushMarker:
                    rec.resolve()
                    continue
                try:
                    out = self._encoder.encode(rec)
                except Exception:
                    queue.settle(1, "serialization")
                    continue
                if out is None:
                    queue.settle(1, None)
                    continue
                agent, data = out
                if self._hook is not None:
                    filtered = self._before_send_now(self._hook, data)
                    if filtered is None:
                        queue.settle(1, "before_send")
                        continue
                    data = filtered
                elif self._scrubber is not None:
                    data = self._scrubber.scrub_encoded(data)[0]
                full = batcher.add(agent, data)
                if full is not None:
                    self._spool_or_drop(spooler, agent, full)
        while (item := batcher.pop()) is not None:
            self._spool_or_drop(spooler, *item)

    def _spool_or_drop(self, spooler: Spooler, agent: Agent, events: list[bytes]) -> None:
        body = build_body(self._envelope(agent), events)
        ok = spooler.write_now(body, len(events))
        self.queue.settle(len(events), "spooled" if ok else "shutdown")

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
        counts = self.queue.counts()
        total = counts["dropped_total"]
        if total > self._logged_drops:
            reasons = ", ".join(f"{k}={v}" for k, v in counts["dropped"].items() if v)
            logger.warning(
                "hiveloop_async: %d events dropped so far (%s); last error: %s",
                total,
                reasons,
                counts["last_error"],
            )
            self._logged_drops = total
        self._last_drop_log = now

    # -- heartbeats ----------------------------------------------------------------------------

    def _start_heartbeat(self, agent: Agent) -> None:
        if self._tg is None or self._closing or agent.agent_id in self._heartbeats:
            return
        if agent.heartbeat_interval <= 0 or agent.heartbeat_stopped:
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
                if self._closing or agent.heartbeat_stopped:
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


def _no_wake() -> None:
    """No OTLP sender to wake."""


class _ThenOTLP:
    """A flush waiter that, once HiveBoard's part is done, waits for the OTLP spans."""

    __slots__ = ("_otlp", "_waiter")

    def __init__(self, waiter: _Resolvable, otlp: SpanPipeline) -> None:
        self._waiter = waiter
        self._otlp = otlp

    def resolve(self) -> None:
        self._otlp.add_waiter(self._waiter)


_GZIP_HEADERS = {"Content-Encoding": "gzip"}


class _LocalWaiter:
    """A flush waiter local to the engine's loop (used to wait for open batches)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def resolve(self) -> None:
        self.event.set()
