"""Task context across service boundaries: the headers, their format, and who is trusted.

An outgoing request made inside a task carries two headers:

* ``traceparent`` (W3C Trace Context, version 00): the trace id of the task run (the caller's
  inherited trace when the task itself was started from a trusted request) and, as parent id,
  the span id of the current action (of the task run when no action is open). Services
  instrumented with OpenTelemetry in between keep the chain; the OTLP exporter writes the
  same ids (see ``hiveloop_async._tracecontext``).
* ``hiveloop-context``: HiveBoard's linkage,
  ``v=1;agent=<id>;task=<id>;run=<id>;action=<id>;corr=<id>``, every value percent-encoded
  (RFC 3986 unreserved characters are kept). ``action`` is omitted when no action is open;
  ``corr`` is the chain's correlation id (the first caller's ``correlation_id``, else its
  task run id), which every task down the chain carries. At most 1,024 characters; each id
  at most 256.

A service that trusted such a request answers with ``hiveloop-task``:
``v=1;agent=<id>;task=<id>;run=<id>`` naming the task that served it, and the caller's hook
records a ``delegation`` event (``custom`` with ``kind: "delegation"``, the shape HiveBoard's
Claude integration emits) linking its action to the callee's task.

Incoming linkage is ignored unless the service says whom it trusts (:class:`Trust`): a request
from the internet must not attach itself to somebody else's task. Malformed headers are
ignored without an error and counted (:func:`malformed_count`, logged at debug level).
Everything here is pure and raises nothing on any input.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import quote, unquote

from .. import _tracecontext as tc
from .._api import current_action_id, current_task
from .._task import Task

__all__ = [
    "CONTEXT_HEADER",
    "RESPONSE_HEADER",
    "TRACEPARENT",
    "Linkage",
    "Trust",
    "TrustSpec",
    "delegation_payload",
    "format_linkage",
    "malformed_count",
    "outgoing_headers",
    "parse_linkage",
    "task_header",
]

_log = logging.getLogger("hiveloop_async.contrib")

TRACEPARENT: Final = "traceparent"
CONTEXT_HEADER: Final = "hiveloop-context"
RESPONSE_HEADER: Final = "hiveloop-task"
_MAX_HEADER: Final = 1024
_MAX_ID: Final = 256
_SAFE: Final = "-._~"


@dataclass(frozen=True)
class Linkage:
    """A task (and optionally the action within it) named in a header."""

    agent_id: str
    task_id: str
    task_run_id: str
    action_id: str | None = None
    #: The chain's correlation id: the first caller's ``correlation_id`` or task run id.
    correlation_id: str | None = None


def format_linkage(link: Linkage) -> str:
    """The header value for ``link`` (``v=1;agent=…;task=…;run=…[;action=…]``). Pure."""
    parts = [
        "v=1",
        f"agent={quote(link.agent_id, safe=_SAFE)}",
        f"task={quote(link.task_id, safe=_SAFE)}",
        f"run={quote(link.task_run_id, safe=_SAFE)}",
    ]
    if link.action_id:
        parts.append(f"action={quote(link.action_id, safe=_SAFE)}")
    if link.correlation_id:
        parts.append(f"corr={quote(link.correlation_id, safe=_SAFE)}")
    return ";".join(parts)


_malformed = 0
_malformed_lock = threading.Lock()


def _count_malformed(what: str) -> None:
    global _malformed
    with _malformed_lock:
        _malformed += 1
    _log.debug("hiveloop: ignored a malformed %s header", what)


def malformed_count() -> int:
    """How many malformed incoming ``traceparent``/linkage headers were ignored so far."""
    return _malformed


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_ID and value.isprintable()


def parse_linkage(value: str | None, *, need_run: bool = True) -> Linkage | None:
    """Parse a ``hiveloop-context`` / ``hiveloop-task`` value; None when absent or malformed.

    Unknown keys are ignored (a later version may add some); a missing ``agent``, ``task``
    or ``run``, an id longer than 256 characters or containing control characters, or a
    value over 1,024 characters makes the whole header malformed. Raises nothing.
    """
    if value is None:
        return None
    try:
        if not value or len(value) > _MAX_HEADER:
            raise ValueError
        fields: dict[str, str] = {}
        for part in value.split(";"):
            key, sep, raw = part.strip().partition("=")
            if not sep:
                raise ValueError
            text = unquote(raw, errors="strict")
            if not _valid_id(text):
                raise ValueError
            fields[key] = text
        if fields.get("v") != "1":
            raise ValueError
        agent, task, run = fields.get("agent"), fields.get("task"), fields.get("run")
        if agent is None or task is None or (run is None and need_run):
            raise ValueError
        return Linkage(agent, task, run or "", fields.get("action"), fields.get("corr"))
    except (ValueError, UnicodeDecodeError):
        _count_malformed("linkage")
        return None


def parse_traceparent(value: str | None) -> tc.TraceParent | None:
    """A W3C ``traceparent``, or None (counted when present but malformed). Raises nothing."""
    if value is None:
        return None
    parsed = tc.parse_traceparent(value)
    if parsed is None:
        _count_malformed("traceparent")
    return parsed


def task_trace_id(task: Task) -> str:
    """The trace id a task's spans and outgoing ``traceparent`` headers use."""
    return tc.trace_id_of(task.task_run_id, task.start_payload)


#: Headers by what they are made of: within a task (and action) they are the same for every
#: request, and building them (two hashes, percent-encoding) costs more than the lookup.
_headers_cache: dict[tuple[Any, ...], dict[str, str]] = {}
_HEADERS_CACHE_SIZE: Final = 1024


def outgoing_headers(task: Task | None = None) -> dict[str, str]:
    """The headers an outgoing request made now should carry; empty outside a task.

    ``task`` defaults to the current one; the parent is the action open in this context.
    Returns a new dict each time. Never blocks or raises.
    """
    try:
        task = task if task is not None else current_task()
        if task is None:
            return {}
        action_id = current_action_id()
        corr = task.correlation_id or task.task_run_id
        payload = task.start_payload
        inherited = payload.get("trace_id") if payload else None
        if type(inherited) is not str:
            inherited = None  # only a string can be an inherited trace id (and is hashable)
        key = (task.agent.agent_id, task.task_id, task.task_run_id, action_id, corr, inherited)
        cached = _headers_cache.get(key)
        if cached is None:
            parent = tc.span_id_for(action_id if action_id else task.task_run_id)
            link = Linkage(task.agent.agent_id, task.task_id, task.task_run_id, action_id, corr)
            cached = {
                TRACEPARENT: tc.TraceParent(task_trace_id(task), parent, True).header(),
                CONTEXT_HEADER: format_linkage(link),
            }
            if len(_headers_cache) >= _HEADERS_CACHE_SIZE:
                _headers_cache.clear()
            _headers_cache[key] = cached
        return dict(cached)
    except Exception:
        _log.debug("hiveloop: could not build propagation headers", exc_info=True)
        return {}


def task_header(task: Task) -> str:
    """The ``hiveloop-task`` value naming ``task`` (answered to a trusted caller). Pure."""
    return format_linkage(Linkage(task.agent.agent_id, task.task_id, task.task_run_id))


def delegation_payload(callee: Linkage, target: str) -> dict[str, Any]:
    """The ``custom`` payload of a ``delegation`` event from the caller to ``callee``.

    The ``data`` keys ``subagent_name``, ``subagent_id`` and ``sub_task_id`` are the ones
    HiveBoard's Claude integration sends; ``sub_task_run_id`` and ``target`` add the run and
    the request that delegated.
    """
    return {
        "kind": "delegation",
        "summary": f"Delegated to {callee.agent_id}: task {callee.task_id}",
        "data": {
            "subagent_name": callee.agent_id,
            "subagent_id": callee.agent_id,
            "sub_task_id": callee.task_id,
            "sub_task_run_id": callee.task_run_id,
            "target": target,
        },
    }


# -- trust -------------------------------------------------------------------------------------

#: What ``trust_incoming=`` accepts: False/True, networks (``"10.0.0.0/8"``, ``"127.0.0.1"``),
#: or a predicate of the framework's request object (the ASGI scope, an aiohttp request).
TrustSpec: TypeAlias = "bool | Iterable[str] | Callable[[Any], bool]"


class Trust:
    """Decides whether a request's incoming context may be used. Built once per middleware.

    Raises :class:`ValueError` at construction for a network that does not parse (bad
    configuration); :meth:`trusts` itself never raises (a failing predicate means no).
    """

    __slots__ = ("_all", "_networks", "_predicate")

    def __init__(self, spec: TrustSpec = False) -> None:
        self._all = spec is True
        self._predicate: Callable[[Any], bool] | None = None
        self._networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        if isinstance(spec, bool):
            return
        if callable(spec):
            self._predicate = spec
            return
        if isinstance(spec, str):
            spec = [spec]
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in spec)

    @property
    def enabled(self) -> bool:
        """False when nothing can ever be trusted (the default): headers are not even read."""
        return self._all or self._predicate is not None or bool(self._networks)

    def trusts(self, request: Any, peer: str | None) -> bool:
        """True when ``request`` (from address ``peer``) may attach to the caller's task."""
        if self._all:
            return True
        if self._predicate is not None:
            try:
                return bool(self._predicate(request))
            except Exception:
                _log.debug("hiveloop: trust_incoming predicate raised", exc_info=True)
                return False
        if not self._networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._networks)


def incoming(headers: Mapping[str, str]) -> tuple[Linkage | None, tc.TraceParent | None]:
    """The caller's linkage and ``traceparent`` from lower-cased ``headers``. Raises nothing.

    Call it only for a trusted request.
    """
    return (
        parse_linkage(headers.get(CONTEXT_HEADER)),
        parse_traceparent(headers.get(TRACEPARENT)),
    )


def caller_fields(link: Linkage | None, parent: tc.TraceParent | None) -> dict[str, Any]:
    """The ``task_started`` payload fields naming the caller (and its trace). Pure."""
    fields: dict[str, Any] = {}
    if link is not None:
        fields["caller_agent_id"] = link.agent_id
        fields["caller_task_id"] = link.task_id
        fields["caller_task_run_id"] = link.task_run_id
        if link.action_id:
            fields["caller_action_id"] = link.action_id
    if parent is not None:
        fields["trace_id"] = parent.trace_id
        fields["parent_span_id"] = parent.parent_id
    return fields
