"""The OTLP destination's I/O: one aiohttp session POSTing span batches to ``/v1/traces``.

Runs as a task of the engine's task group, on the engine's loop. It takes batches from the
:class:`~._otlp._pipeline.SpanPipeline`, encodes them (:mod:`._otlp._encode`), POSTs them one
at a time (in order, so flushes can count), and applies
:func:`~._otlp._response.classify_response`.

When it sends: a full batch (``batch_size`` spans) as soon as there is one (the engine calls
:meth:`OTLPSender.wake_full` while it drains a burst); everything waiting once the engine has
drained its queue (:meth:`OTLPSender.wake`), when closing, or after ``flush_interval`` with
neither a wake nor a new span. So a burst goes out in full batches, not in one small request
per drain slice (each POST costs far more than its spans' encoding), and a quiet program's
spans go out as soon as the drain that made them is done, as before. Verdicts:

* success: the spans are sent; partial success: ``rejected_spans`` are dropped
  (``rejected``), the rest sent, never retried;
* 429/502/503/504 and network errors: retried after ``Retry-After`` (at most 300 s) or a
  jittered exponential backoff, until the retry deadline (``retries_exhausted``);
* any other status: dropped (``rejected``).

At shutdown it ends the still-open spans, sends what it can before the deadline, and the
rest is counted as ``shutdown``. Nothing here raises into the host program.
"""

from __future__ import annotations

import asyncio
import math
import random
import time

import aiohttp
import anyio
from yarl import URL

from ._delivery import BACKOFF_BASE, BACKOFF_CAP, MAX_RETRY_AFTER, retry_delay
from ._internal import internal_error, logger
from ._otlp._encode import encode
from ._otlp._pipeline import SpanPipeline
from ._otlp._response import classify_response
from ._otlp._spans import Span
from ._resolve import ExitSafeResolver
from ._version import __version__


class OTLPSender:
    """See the module docstring. One per engine; the pipeline outlives it."""

    def __init__(
        self,
        pipeline: SpanPipeline,
        *,
        flush_interval: float,
        request_timeout: float,
        retry_deadline: float,
    ) -> None:
        self.pipeline = pipeline
        self._flush_interval = flush_interval
        self._request_timeout = request_timeout
        self._retry_deadline = retry_deadline
        self._wake_ev: asyncio.Event | None = None
        #: the engine drained its queue: send what waits, even less than a batch
        self._drained = False
        self._closing = False
        self._deadline = math.inf
        self._close_ev: asyncio.Event | None = None
        self._idle_ev: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """On the engine's loop: send what is waiting now (the engine drained its queue)."""
        self._drained = True
        if self._wake_ev is not None:
            self._wake_ev.set()

    def wake_full(self) -> None:
        """On the engine's loop: a full batch is waiting (sent now, the rest stays)."""
        if self._wake_ev is not None:
            self._wake_ev.set()

    async def close(self, deadline: float) -> None:
        """On the engine's loop: end open spans, send what is left until ``deadline``."""
        self._closing = True
        self._deadline = min(self._deadline, deadline)
        self.pipeline.close_open()
        if self._close_ev is not None:
            self._close_ev.set()
        self.wake()
        if self._idle_ev is None:
            return
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await self._idle_ev.wait()

    async def run(self) -> None:
        """The sender's body: until cancelled (or closed and idle)."""
        self._wake_ev = asyncio.Event()
        self._close_ev = asyncio.Event()
        self._idle_ev = asyncio.Event()
        settings = self.pipeline.settings
        headers = {
            **settings.headers,
            "User-Agent": f"hiveloop-async/{__version__}",
        }
        timeout = aiohttp.ClientTimeout(
            total=self._request_timeout, sock_connect=min(5.0, self._request_timeout)
        )
        connector = aiohttp.TCPConnector(limit=2, resolver=ExitSafeResolver())
        url = URL(settings.url)
        batch: list[Span] = []
        try:
            async with aiohttp.ClientSession(
                timeout=timeout, headers=headers, connector=connector
            ) as session:
                self._session = session
                pipeline = self.pipeline
                full = pipeline.batch_size
                while True:
                    pending = pipeline.pending_count
                    if pending >= full or (pending and (self._drained or self._closing)):
                        batch = pipeline.take()
                        await self._deliver(url, batch)
                        batch = []
                        continue
                    if not pending:
                        self._drained = False  # everything the last drain made is out
                        if self._closing:
                            self._idle_ev.set()
                    with anyio.move_on_after(self._flush_interval) as waited:
                        await self._wake_ev.wait()
                    self._wake_ev.clear()
                    if waited.cancelled_caught and pipeline.pending_count == pending:
                        self._drained = True  # no wake and no new span for a while
        except BaseException:
            if batch:  # cancelled mid-request: the next sender (or the shutdown) has them
                self.pipeline.give_back(batch)
            raise
        finally:
            self._session = None

    async def _deliver(self, url: URL, spans: list[Span]) -> None:
        pipeline = self.pipeline
        n = len(spans)
        try:
            body, content_type = encode(spans, pipeline.settings.protocol)
        except Exception:
            internal_error("otlp encode")
            pipeline.settle(n, "serialization")
            return
        deadline = time.monotonic() + self._retry_deadline
        attempt = 0
        while True:
            pipeline.note_request()
            status, raw, headers = await self._post(url, body, content_type)
            if status < 0:
                verdict, retry_after, rejected, message = "retry", None, 0, ""
            else:
                outcome = classify_response(status, headers, raw, now=time.time())
                verdict, retry_after = outcome.verdict, outcome.retry_after
                rejected, message = outcome.rejected, outcome.message
            if verdict == "success":
                if message:
                    logger.warning("hiveloop_async: OTLP collector warning: %s", message)
                pipeline.settle(n, None)
                return
            if verdict == "partial":
                rejected = min(rejected, n)
                pipeline.note_partial(rejected)
                pipeline.note_error(f"OTLP partial success: {rejected} spans rejected")
                pipeline.settle(n - rejected, None)
                pipeline.settle(rejected, "rejected")
                return
            if verdict == "drop":
                pipeline.note_error(f"OTLP HTTP {status}: {message}"[:300])
                pipeline.settle(n, "rejected")
                return
            if status >= 0:
                pipeline.note_error(f"OTLP HTTP {status}")
            attempt += 1
            if retry_after is not None:
                delay = min(retry_after, MAX_RETRY_AFTER)
            else:
                delay = random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
            wait = retry_delay(
                delay,
                closing=self._closing,
                now=time.monotonic(),
                deadline=min(deadline, self._deadline),
            )
            if wait is None:
                pipeline.settle(n, "retries_exhausted" if not self._closing else "shutdown")
                return
            pipeline.note_retry()
            await self._sleep(wait)

    async def _post(
        self, url: URL, body: bytes, content_type: str
    ) -> tuple[int, bytes, dict[str, str]]:
        """POST one body; status -1 when no response came."""
        assert self._session is not None
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": content_type}
            ) as resp:
                raw = await resp.read()
                return resp.status, raw, dict(resp.headers)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.pipeline.note_error(f"OTLP {type(exc).__name__}: network error")
            return -1, b"", {}
        except Exception as exc:
            self.pipeline.note_error(f"OTLP {type(exc).__name__}: unexpected error while sending")
            return -1, b"", {}

    async def _sleep(self, delay: float) -> None:
        assert self._close_ev is not None
        if self._closing:
            await anyio.sleep(delay)
            return
        with anyio.move_on_after(delay):
            await self._close_ev.wait()
