"""What an OTLP/HTTP response means for the batch that got it, as the OTLP spec says.

* 2xx: accepted. The body (``ExportTraceServiceResponse``, in the request's encoding) may
  carry ``partial_success``: ``rejected_spans`` > 0 means that many spans were refused and
  must not be retried; an ``error_message`` alone is a warning.
* 429, 502, 503, 504: retryable, after ``Retry-After`` (seconds or an HTTP-date) when the
  server sends it, else after the sender's own backoff.
* Any other status: not retryable; the batch is dropped. The body may be a
  ``google.rpc.Status`` whose ``message`` is kept (cut) for the log.

Pure: no I/O, no clock (``now`` is passed in). Raises nothing for any input.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})
_MAX_MESSAGE: Final = 500

Verdict = Literal["success", "partial", "retry", "drop"]


@dataclass(frozen=True)
class OTLPOutcome:
    """The verdict on one export request.

    ``rejected``: spans the server refused (partial success; the rest were accepted).
    ``retry_after``: seconds the server asked to wait before retrying, if it said.
    ``message``: the server's error or warning message, cut, for the log.
    """

    verdict: Verdict
    status: int
    rejected: int = 0
    retry_after: float | None = None
    message: str = ""


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (Unix time): delta-seconds or an HTTP-date.

    None when absent or malformed; never negative. Raises nothing.
    """
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110: HTTP-dates are in GMT
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, when.timestamp() - now)


# -- a minimal protobuf reader: the two small messages a response can carry -------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> dict[int, list[int | bytes]]:
    """The top-level fields of a protobuf message: number -> values (varints or bytes)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError("unsupported wire type")
        out.setdefault(number, []).append(value)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else ""
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def _partial_protobuf(body: bytes) -> tuple[int, str]:
    # ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
    # ExportTracePartialSuccess { int64 rejected_spans = 1; string error_message = 2; }
    partial = _fields(body).get(1)
    if not partial or not isinstance(partial[-1], bytes):
        return 0, ""
    fields = _fields(partial[-1])
    rejected = fields.get(1, [0])[-1]
    message = fields.get(2, [b""])[-1]
    count = rejected if isinstance(rejected, int) else 0
    if count >= 2**63:  # int64 on the wire
        count -= 2**64
    return max(0, count), _text(message)


def _partial_json(body: bytes) -> tuple[int, str]:
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        return 0, ""
    partial = doc.get("partialSuccess", doc.get("partial_success"))
    if not isinstance(partial, dict):
        return 0, ""
    raw = partial.get("rejectedSpans", partial.get("rejected_spans", 0))
    try:
        count = int(raw) if isinstance(raw, (int, str)) else 0
    except ValueError:
        count = 0
    message = partial.get("errorMessage", partial.get("error_message", ""))
    return max(0, count), _text(message)


def _status_message(body: bytes, json_body: bool) -> str:
    """``google.rpc.Status.message`` (field 2) of an error body, or its start as text."""
    if not body:
        return ""
    try:
        if json_body:
            doc = orjson.loads(body)
            return _text(doc.get("message", "")) if isinstance(doc, dict) else ""
        return _text(_fields(body).get(2, [b""])[-1])
    except (ValueError, orjson.JSONDecodeError):
        return _text(body[:_MAX_MESSAGE])


def classify_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
) -> OTLPOutcome:
    """The verdict on an OTLP/HTTP trace export response. Pure; raises nothing.

    ``headers`` are looked up case-insensitively for ``Content-Type`` and ``Retry-After``
    (pass a ``CIMultiDict`` or a plain dict); ``now`` is the Unix time, for an HTTP-date
    ``Retry-After``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "")
    json_body = "json" in content_type.lower()
    if 200 <= status < 300:
        if not body:
            return OTLPOutcome("success", status)
        try:
            rejected, message = _partial_json(body) if json_body else _partial_protobuf(body)
        except (ValueError, orjson.JSONDecodeError):
            return OTLPOutcome("success", status, message="unreadable response body")
        if rejected:
            return OTLPOutcome("partial", status, rejected=rejected, message=message)
        return OTLPOutcome("success", status, message=message)
    message = _status_message(body, json_body)
    if status in RETRYABLE_STATUSES:
        retry_after = parse_retry_after(lowered.get("retry-after"), now)
        return OTLPOutcome("retry", status, retry_after=retry_after, message=message)
    return OTLPOutcome("drop", status, message=message)
