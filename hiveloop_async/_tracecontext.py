"""W3C trace-context ids derived from HiveLoop's own ids, shared by propagation and OTLP export.

One definition, so that the ``traceparent`` a service sends and the spans the OTLP exporter
writes name the same trace and the same parent:

* a task run's trace id is its ``task_run_id`` as 32 lowercase hex digits when the run id is a
  uuid (the SDK's own ids always are), else the first 32 hex digits of its SHA-256;
* the span id of a task run, an action or an LLM call is the first 16 hex digits of the
  SHA-256 of its wire id (``task_run_id`` for a task, ``action_id`` for an action,
  ``event_id`` for an event that stands alone).

A task started from a trusted incoming context keeps the caller's trace: its payload carries
``trace_id`` (and ``parent_span_id``), which :func:`trace_id_of` prefers. All pure functions:
no I/O, nothing raised for any string input.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_HEX16: Final = re.compile(r"[0-9a-f]{16}")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def trace_id_for_run(task_run_id: str) -> str:
    """Return the 32-hex trace id of a task run (never all zeros). Pure; raises nothing."""
    compact = task_run_id.replace("-", "").lower()
    if len(compact) == 32 and _HEX32.fullmatch(compact) and compact != _ZERO_TRACE:
        return compact
    return hashlib.sha256(task_run_id.encode("utf-8", "replace")).hexdigest()[:32]


def span_id_for(wire_id: str) -> str:
    """Return the 16-hex span id for a wire id (never all zeros). Pure; raises nothing."""
    digest = hashlib.sha256(wire_id.encode("utf-8", "replace")).hexdigest()
    span = digest[:16]
    return span if span != _ZERO_SPAN else digest[16:32]


def trace_id_of(task_run_id: str, payload: Mapping[str, Any] | None = None) -> str:
    """The trace id of a task: the inherited ``payload["trace_id"]`` if valid, else derived."""
    if payload:
        inherited = payload.get("trace_id")
        if is_trace_id(inherited):
            return str(inherited)
    return trace_id_for_run(task_run_id)


def is_trace_id(value: object) -> bool:
    """True for 32 lowercase hex digits that are not all zeros."""
    return isinstance(value, str) and bool(_HEX32.fullmatch(value)) and value != _ZERO_TRACE


def is_span_id(value: object) -> bool:
    """True for 16 lowercase hex digits that are not all zeros."""
    return isinstance(value, str) and bool(_HEX16.fullmatch(value)) and value != _ZERO_SPAN


class TraceParent(NamedTuple):
    """A parsed W3C ``traceparent`` header."""

    trace_id: str
    parent_id: str
    sampled: bool

    def header(self) -> str:
        """Format as a version-00 ``traceparent`` value."""
        return f"00-{self.trace_id}-{self.parent_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """Parse a ``traceparent`` value per W3C Trace Context; None when malformed. Raises nothing.

    Version ``ff`` is invalid; a higher version than ``00`` is accepted on its first four
    fields, as the spec asks. All-zero trace or parent ids are invalid.
    """
    if not value or len(value) > 512:
        return None
    value = value.strip()
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_id, parent_id, flags = m.groups()
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if version != "00" and len(value) > 55 and value[55] != "-":
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, bool(int(flags, 16) & 1))
