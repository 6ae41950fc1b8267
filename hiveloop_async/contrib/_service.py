"""One task per served request: the part shared by the ASGI and aiohttp middlewares.

A framework adapter turns its request into a :class:`RequestInfo`, calls
:meth:`RequestTasks.begin` (which starts the task and makes it current in the calling
context), runs the handler, then calls :meth:`ServedRequest.finish` once with what it saw.
Everything here is bookkeeping that never raises into the request: an internal error is
logged once and the request goes on untracked.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from .._agent import Agent
from .._ids import new_id_str
from .._task import Task
from . import propagation as prop

__all__ = ["RequestInfo", "RequestTasks", "ServedRequest"]

_log = logging.getLogger("hiveloop_async.contrib")
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

#: ``agent=``: an Agent, or a callable of the framework's request returning one (None: skip).
AgentSpec: TypeAlias = "Agent | Callable[[Any], Agent | None]"
#: ``exclude=``: paths (exact, or a prefix when ending in ``*``), or a predicate of the request.
ExcludeSpec: TypeAlias = "Iterable[str] | Callable[[Any], bool] | None"

_logged: set[str] = set()


def log_once(where: str) -> None:
    """Log an internal error of an integration once per place (with its traceback)."""
    if where not in _logged:
        _logged.add(where)
        _log.warning("hiveloop: internal error in %s (request unaffected)", where, exc_info=True)


@dataclass
class RequestInfo:
    """What the middleware knows about a request before its handler runs."""

    request: Any  #: the framework's object (ASGI scope, aiohttp request), for callables
    method: str
    path: str
    route: str | None  #: the route template, when the router could tell
    #: lower-cased names; at least ``x-request-id``, ``traceparent`` and ``hiveloop-context``
    headers: Mapping[str, str]
    peer: str | None
    kind: str = "http"  #: "http" or "websocket"


class RequestTasks:
    """The options of a middleware and the task each request gets. Built once per app.

    Raises :class:`ValueError` for a bad ``trust_incoming`` network (configuration); nothing
    else here raises.
    """

    def __init__(
        self,
        agent: AgentSpec,
        *,
        task_id: Callable[[Any], str] | None = None,
        task_type: Callable[[Any], str] | None = None,
        project: str | None = None,
        exclude: ExcludeSpec = None,
        trust_incoming: prop.TrustSpec = False,
        failed: Callable[[int], bool] | None = None,
    ) -> None:
        self._agent = agent
        #: The agent when it is one (not a callable): no isinstance per request.
        self._fixed_agent: Agent | None = agent if isinstance(agent, Agent) else None
        self._task_id = task_id
        self._task_type = task_type
        self._project = project
        self._failed = failed if failed is not None else _server_error
        self._trust = prop.Trust(trust_incoming)
        self._trusting = self._trust.enabled  # False by default: headers are not even parsed
        self._default_failed = failed is None
        self._exact: frozenset[str] = frozenset()
        self._prefixes: tuple[str, ...] = ()
        self._exclude_fn: Callable[[Any], bool] | None = None
        if callable(exclude):
            self._exclude_fn = exclude
        elif exclude is not None:
            paths = [exclude] if isinstance(exclude, str) else list(exclude)
            self._exact = frozenset(p for p in paths if not p.endswith("*"))
            self._prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))

    def failed_status(self, status: int | None) -> bool:
        """True when a response with ``status`` fails the task (``failed=``). Raises nothing."""
        if status is None:
            return False
        if self._default_failed:
            return status >= 500
        try:
            return bool(self._failed(status))
        except Exception:
            log_once("failed predicate")
            return status >= 500

    def excluded(self, path: str, request: Any) -> bool:
        """True when the request is not tracked (``exclude=``). Raises nothing."""
        if path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
            return True
        if self._exclude_fn is not None:
            try:
                return bool(self._exclude_fn(request))
            except Exception:
                log_once("exclude predicate")
        return False

    def begin(self, info: RequestInfo) -> ServedRequest | None:
        """Start the request's task, current in this context; None when it is not tracked.

        The adapter checks :meth:`excluded` first (it is not repeated here). Never raises: a
        failing callable or internal error means the request is untracked.
        """
        return self.begin_request(
            info.request, info.method, info.path, info.route, info.headers, info.peer, info.kind
        )

    def begin_request(
        self,
        request: Any,
        method: str,
        path: str,
        route: str | None,
        headers: Mapping[str, str],
        peer: str | None,
        kind: str = "http",
    ) -> ServedRequest | None:
        """:meth:`begin` with the fields of a :class:`RequestInfo` as arguments (no object
        built per request). Never raises."""
        try:
            agent = self._fixed_agent
            if agent is None:
                agent = self._agent(request)  # type: ignore[operator]
                if agent is None:
                    return None
            if not route:
                route = path
            if self._task_id is not None:
                task_id = self._task_id(request)
            else:
                task_id = headers.get("x-request-id") or ""
                if not task_id or not _REQUEST_ID.fullmatch(task_id):
                    task_id = "req-" + new_id_str()  # the SDK's own ids: a counter, no syscall
            if self._task_type is not None:
                task_type = self._task_type(request)
            elif kind == "http":
                task_type = method + " " + route
            else:
                task_type = "WS " + route
            start: dict[str, Any] = {"method": method, "route": route}
            if kind != "http":
                start["protocol"] = kind
            link = None
            correlation = None
            if self._trusting and self._trust.trusts(request, peer):
                link, parent = prop.incoming(headers)
                start.update(prop.caller_fields(link, parent))
                if link is not None:
                    correlation = link.correlation_id or link.task_run_id
            task = agent.task(task_id, self._project, task_type, None, correlation, payload=start)
            task.__enter__()
            return ServedRequest(self, task, route, method, link is not None)
        except Exception:
            log_once("request start")
            return None


class ServedRequest:
    """One tracked request: its task and what the response looked like so far."""

    __slots__ = (
        "_owner",
        "answer_caller",
        "bytes_sent",
        "disconnected",
        "done",
        "method",
        "route",
        "status",
        "task",
    )

    def __init__(
        self, owner: RequestTasks, task: Task, route: str, method: str, answer_caller: bool
    ) -> None:
        self._owner = owner
        self.task = task
        self.route = route
        self.method = method
        #: True when a trusted caller named its task: answer with ``hiveloop-task``.
        self.answer_caller = answer_caller
        self.status: int | None = None
        self.bytes_sent = 0
        #: The response's body was sent to its end (for adapters that watch it).
        self.done = False
        #: The client went away (for adapters that watch it).
        self.disconnected = False

    def response_header(self) -> tuple[str, str] | None:
        """The ``hiveloop-task`` header to add to the response, or None. Raises nothing."""
        if not self.answer_caller:
            return None
        try:
            return prop.RESPONSE_HEADER, prop.task_header(self.task)
        except Exception:
            log_once("response header")
            return None

    def finish(
        self,
        exc: BaseException | None = None,
        *,
        cancelled: bool = False,
        complete: bool = True,
    ) -> None:
        """Record the task's end once. Never raises.

        ``exc``: what the handler raised (recorded, never swallowed: the caller re-raises it);
        ``cancelled``: the client went away or the request was cancelled; ``complete``: the
        response was sent to its end (False for a body cut short).
        """
        try:
            task = self.task
            if isinstance(exc, asyncio.CancelledError):
                cancelled = True
            status = self.status
            if status is None and exc is not None and not cancelled:
                status = 500  # what the server answers for an exception before any response
            fields: dict[str, Any] = {"method": self.method, "route": self.route}
            if status is not None:
                fields["status_code"] = status
            fields["response_bytes"] = self.bytes_sent
            if cancelled:
                fields["cancelled"] = True
            elif exc is None and not complete:
                fields["incomplete"] = True  # the app returned before its body ended
            user = task.payload
            if user and isinstance(user, Mapping):  # None unless the handler set one
                fields.update(user)
            if exc is not None:
                task.fail(exc, fields)
            elif cancelled or not complete or self._owner.failed_status(status):
                task.fail(None, fields)
            else:
                task.complete("success", fields)
        except Exception:
            log_once("request end")
            try:
                self.task.complete()
            except Exception:
                log_once("request end")


def _server_error(status: int) -> bool:
    return status >= 500
