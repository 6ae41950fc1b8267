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

With OTLP as the only destination, :class:`RecordEvents` gives the engine the wire event of
a queued record as the dict the span assembler reads, without writing HiveBoard's JSON and
decoding it back, for the records it can vouch for (see there).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import anyio
import orjson
from yarl import URL

from ._agent import Agent
from ._delivery import BACKOFF_BASE, BACKOFF_CAP, MAX_RETRY_AFTER, retry_delay
from ._ids import TimestampFormatter, format_id, new_id_str, wall_offset_ns
from ._internal import internal_error, logger
from ._otlp._encode import encode
from ._otlp._pipeline import SpanPipeline
from ._otlp._response import classify_response
from ._otlp._spans import Span
from ._resolve import ExitSafeResolver
from ._scrub import Scrubber
from ._serialize import RecordEncoder, default_severity
from ._task import Task
from ._track import ActionScope
from ._version import __version__
from ._wire import EVENT_TYPES, MAX_ID_LEN, MAX_SUMMARY_LEN, SEVERITIES


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


# -- OTLP alone: records to wire-event dicts without JSON ---------------------------------------

#: ``encode_payload`` measures (and may shrink) payloads whose JSON is longer than this.
_EXACT_PAYLOAD_BYTES = 32_768 // 4
_INT_MIN = -(2**63)
_UINT_MAX = 2**64 - 1
_INF = float("inf")
#: Nesting below which :func:`_plain_size` looks (deeper payloads take the JSON route).
_MAX_PLAIN_DEPTH = 32
_MAX_CACHED = 4096


def _utf8(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 text (no lone surrogates: orjson refuses those)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_safe(text: str) -> str:
    """``text`` with lone surrogates replaced by ``?`` (as the wire encoder writes it)."""
    if text.isascii() or _utf8(text):
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _as_str(value: Any, limit: int = MAX_ID_LEN) -> str:
    text = value if type(value) is str else str(value)
    return text if len(text) <= limit else text[:limit]


def _plain_size(value: dict[Any, Any], depth: int = 0) -> int:
    """A bound on the length of orjson's JSON of ``value`` when decoding that JSON gives an
    equal dict back, in the same key order (exact ``dict``/``list`` of exact ``str`` keys and
    values, ints orjson takes, finite floats, bools, None, valid UTF-8); -1 otherwise."""
    if depth > _MAX_PLAIN_DEPTH:
        return -1
    size = 2
    for key, item in value.items():
        if type(key) is not str or not (key.isascii() or _utf8(key)):
            return -1
        size += 6 * len(key) + 4
        n = _item_size(item, depth)
        if n < 0:
            return -1
        size += n
    return size


def _item_size(item: Any, depth: int) -> int:
    """:func:`_plain_size` of one value (a bound on its JSON's length, -1: not plain)."""
    t = type(item)
    if t is str:
        return 6 * len(item) + 2 if item.isascii() or _utf8(item) else -1
    if t is int:
        return 21 if _INT_MIN <= item <= _UINT_MAX else -1
    if t is float:
        return 25 if item == item and item != _INF and item != -_INF else -1
    if t is bool or item is None:
        return 5
    if t is dict:
        return _plain_size(item, depth + 1)
    if t is list:
        if depth >= _MAX_PLAIN_DEPTH:
            return -1
        size = 2
        for sub in item:
            n = _item_size(sub, depth + 1)
            if n < 0:
                return -1
            size += n + 1
        return size
    return -1


def _add_exception(payload: dict[str, Any], exc_type: type[BaseException], msg: str) -> None:
    payload["exception_type"] = exc_type.__name__
    payload["exception_message"] = msg
    if issubclass(exc_type, asyncio.CancelledError):
        payload["cancelled"] = True


def _merge(payload: dict[str, Any], extra: Any) -> None:
    if type(extra) is dict or isinstance(extra, Mapping):
        payload.update(extra)
    else:
        payload["value"] = extra


class RecordEvents:
    """Queued records as wire-event dicts, for the span assembler, without JSON.

    :meth:`event` gives, for one queued record, the dict ``orjson.loads`` would give of the
    JSON ``encoder.encode(rec)`` writes (the same fields and values, payload keys in the same
    order; its own fresh ``event_id``), when it can vouch for that: the payload is plain JSON
    data that encoding leaves as it is (no value converted, no summary cut, small enough not
    to be measured), the ids are the SDK's own. With a ``scrubber`` (which must give exact
    verdicts: ``encoder.gives_verdicts``), also only when the scrubber's verdict is that
    scrubbing the event would replace nothing. Otherwise None, and the record is left as it
    was: the caller then takes the JSON route (encode, scrub, decode) for it.

    One per engine, used on its loop only; not thread-safe. No I/O, never blocks.
    """

    def __init__(self, encoder: RecordEncoder, scrubber: Scrubber | None = None) -> None:
        self._encoder = encoder
        self._scrubber = scrubber
        self._text_fields: tuple[str, ...] = ()
        if scrubber is not None:
            fields = scrubber.checks_text_fields
            if fields is None or not encoder.gives_verdicts:
                raise ValueError("RecordEvents needs a scrubber giving exact verdicts")
            self._text_fields = tuple(fields)
        self._ts = TimestampFormatter()
        self._offset = wall_offset_ns()
        #: a task's fields fragment (``RecordEncoder.task_fields``) -> (fields, verdict)
        self._fields: dict[str, tuple[dict[str, Any], bool]] = {}

    def recalibrate(self) -> None:
        """Re-read wall minus monotonic time (as ``RecordEncoder.recalibrate``)."""
        self._offset = wall_offset_ns()

    def event(self, rec: Any) -> tuple[Agent, dict[str, Any]] | None:
        """``(agent, wire event dict)`` of ``rec`` (marking a scope or task as opened, as
        encoding does), or None: take the JSON route for this record (see the class
        docstring). Raises what reading an odd record raises (the caller then takes the
        JSON route, which accounts for it)."""
        kind = type(rec)
        if kind is ActionScope:
            out = self._scope(rec, rec.opened)
        elif kind is Task:
            out = self._task(rec, rec.opened)
        elif kind is tuple:
            return self._event(rec)
        else:
            return None
        if out is not None:
            rec.opened = True
        return out

    # -- parts -------------------------------------------------------------------------------

    def _task_fields(self, task: Task) -> tuple[dict[str, Any], bool] | None:
        """The task's fields as a dict and the scrubber's verdict on them (True without one)."""
        fragment = self._encoder.task_fields(task)
        known = self._fields.get(fragment)
        if known is None:
            fields: dict[str, Any] = orjson.loads(f"{{{fragment[:-1]}}}") if fragment else {}
            scrubber = self._scrubber
            verdict = scrubber is None or all(
                scrubber.clean_text(value)
                for name in self._text_fields
                if type(value := fields.get(name)) is str
            )
            if len(self._fields) >= _MAX_CACHED:
                self._fields.clear()
            known = self._fields[fragment] = (fields, verdict)
        return known

    def _stamp(self, t: int) -> str:
        t += self._offset
        ts = self._ts
        return ts.text if ts.lo <= t < ts.hi else ts(t)

    def _payload_ok(self, payload: dict[str, Any]) -> bool:
        """Whether ``payload`` goes out as it is and the scrubber finds nothing in it."""
        summary = payload.get("summary")
        if summary is not None and (type(summary) is not str or len(summary) > MAX_SUMMARY_LEN):
            return False
        size = _plain_size(payload)
        if size < 0 or size > _EXACT_PAYLOAD_BYTES:
            return False
        scrubber = self._scrubber
        return scrubber is None or scrubber.clean_payload(payload)

    def _scope(self, s: ActionScope, ended: bool) -> tuple[Agent, dict[str, Any]] | None:
        action_id = s.action_id
        if type(action_id) is not int:
            return None
        task = s.task
        if task is None:
            fields: dict[str, Any] = {}
        else:
            known = self._task_fields(task)
            if known is None or not known[1]:
                return None
            fields = known[0]
        event: dict[str, Any] = {
            "timestamp": self._stamp(s.t1 if ended else s.t0),
        }
        payload: dict[str, Any] = {"action_name": s.name}
        if s.function is not None:
            payload["function"] = s.function
        if not ended:
            event["event_type"] = "action_started"
            event["severity"] = "info"
        elif s.exc_type is None:
            event["event_type"] = "action_completed"
            event["severity"] = "info"
        else:
            event["event_type"] = "action_failed"
            event["severity"] = "error"
            _add_exception(payload, s.exc_type, s.exc_msg)
        event.update(fields)
        event["action_id"] = format_id(action_id)
        parent = s.parent
        if parent is not None:
            parent_id = parent.action_id
            if type(parent_id) is not int:
                return None
            event["parent_action_id"] = format_id(parent_id)
        if ended:
            event["status"] = "success" if s.exc_type is None else "failure"
            event["duration_ms"] = (s.t1 - s.t0) // 1_000_000
            extra = s.payload
            if extra:
                _merge(payload, extra)
        if not self._payload_ok(payload):
            return None
        event["payload"] = payload
        event["event_id"] = new_id_str()  # last: a record let go takes no id
        return s.agent, event

    def _task(self, t: Task, ended: bool) -> tuple[Agent, dict[str, Any]] | None:
        known = self._task_fields(t)
        if known is None or not known[1]:
            return None
        fields = known[0]
        if ended:
            if not t.failed:
                event: dict[str, Any] = {
                    "timestamp": self._stamp(t.t1),
                    "event_type": "task_completed",
                    "severity": "info",
                }
                payload: dict[str, Any] = {"summary": f"Task {t.task_id} completed"}
            else:
                event = {
                    "timestamp": self._stamp(t.t1),
                    "event_type": "task_failed",
                    "severity": "error",
                }
                payload = {"summary": f"Task {t.task_id} failed"}
                if t.exc_type is not None:
                    _add_exception(payload, t.exc_type, t.exc_msg)
            if t.payload:
                _merge(payload, t.payload)
            event.update(fields)
            event["status"] = _utf8_safe(_as_str(t.status))
            event["duration_ms"] = (t.t1 - t.t0) // 1_000_000
        else:
            event = {
                "timestamp": self._stamp(t.t0),
                "event_type": "task_started",
                "severity": "info",
            }
            payload = {"summary": f"Task {t.task_id} started"}
            if t.start_payload:
                _merge(payload, t.start_payload)
            event.update(fields)
        if not self._payload_ok(payload):
            return None
        event["payload"] = payload
        event["event_id"] = new_id_str()
        return t.agent, event

    def _event(self, rec: tuple[Any, ...]) -> tuple[Agent, dict[str, Any]] | None:
        agent, t_ns, event_type, task, action_id, payload, severity, parent = rec
        if type(event_type) is not str or event_type not in EVENT_TYPES:
            return None
        if payload is not None and type(payload) is not dict:
            payload = dict(payload) if isinstance(payload, Mapping) else {"value": payload}
        if severity not in SEVERITIES:
            severity = default_severity(event_type, payload)
        if action_id is not None and type(action_id) is not int:
            return None
        event: dict[str, Any] = {
            "timestamp": self._stamp(t_ns),
            "event_type": event_type,
            "severity": severity,
        }
        if task is not None:
            known = self._task_fields(task)
            if known is None or not known[1]:
                return None
            event.update(known[0])
        if action_id is not None:
            event["action_id"] = format_id(action_id)
        if parent is not None:
            event["parent_event_id"] = _utf8_safe(_as_str(parent))
        if payload is not None:
            if not self._payload_ok(payload):
                return None
            event["payload"] = payload
        event["event_id"] = new_id_str()
        return agent, event
