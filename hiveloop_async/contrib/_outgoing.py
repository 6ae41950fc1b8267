"""One outgoing HTTP request, for the aiohttp and httpx client hooks.

Carries the context (``traceparent`` and ``hiveloop-context``), optionally records the request
as an action (``"POST research-svc/v1/run"``), and records a ``delegation`` event when the
server names the task that served it. No I/O; never raises into the request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .._api import current_agent, current_task
from .._track import ActionScope
from . import propagation as prop
from ._service import log_once

__all__ = ["OutgoingRequest", "ServerError"]


class ServerError(Exception):
    """Stands for a 5xx answer in a failed request action (never raised to the host)."""


class OutgoingRequest:
    """The bookkeeping of one request: :meth:`headers` before sending, then one ``end``."""

    __slots__ = ("_action", "_delegation", "_target", "_url", "method")

    def __init__(self, method: str, url: str, *, track: bool, delegation: bool) -> None:
        self.method = method.upper()
        self._url = url
        self._target: str | None = None
        self._delegation = delegation
        self._action: ActionScope | None = None
        if track:
            try:
                agent = current_agent()
                if agent is not None and current_task() is not None:
                    action = ActionScope(agent, f"{self.method} {self.target}")
                    action.__enter__()
                    self._action = action
            except Exception:
                log_once("outgoing request start")

    @property
    def target(self) -> str:
        """``host[:port]/path`` of the request (parsed on first use: only an action or a
        delegation event needs it)."""
        target = self._target
        if target is None:
            target = self._target = _target(self._url)
        return target

    def headers(self) -> dict[str, str]:
        """The headers to add to the request (empty outside a task). Raises nothing."""
        return prop.outgoing_headers()

    def response(self, status: int, response_header: str | None) -> None:
        """The response arrived: record delegation, close the action. Raises nothing."""
        try:
            if self._delegation and response_header:
                callee = prop.parse_linkage(response_header)
                task = current_task()
                if callee is not None and task is not None:
                    task.event(
                        "custom",
                        prop.delegation_payload(callee, f"{self.method} {self.target}"),
                    )
            action = self._action
            if action is not None:
                self._action = None
                action.set_payload({"method": self.method, "url": self.target, "status": status})
                if status >= 500:
                    err = ServerError(f"HTTP {status} from {self.target}")
                    action.__exit__(ServerError, err, None)
                else:
                    action.__exit__(None, None, None)
        except Exception:
            log_once("outgoing request end")

    def failed(self, exc: BaseException) -> None:
        """The request raised ``exc`` (the caller re-raises it). Raises nothing."""
        try:
            action = self._action
            if action is not None:
                self._action = None
                action.set_payload({"method": self.method, "url": self.target})
                action.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            log_once("outgoing request failure")


def _target(url: str) -> str:
    """``host[:port]/path`` without scheme, credentials or query (they may hold secrets)."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"{host}{parts.path or '/'}"
    except Exception:
        return "?"


def header_value(headers: Any, name: str) -> str | None:
    """A header from a case-insensitive mapping, or None. Raises nothing."""
    try:
        value = headers.get(name)
        return value if isinstance(value, str) else None
    except Exception:
        return None
