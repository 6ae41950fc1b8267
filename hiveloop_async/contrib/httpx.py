"""httpx: outgoing requests carry the task's context (``pip install 'hiveloop-async[httpx]'``).

::

    from hiveloop_async.contrib import httpx as hl_httpx

    client = httpx.AsyncClient(transport=hl_httpx.AsyncTransport())
    client = httpx.Client(transport=hl_httpx.Transport(track_requests=True))

A transport wraps the one httpx would use (``httpx.AsyncHTTPTransport()`` /
``httpx.HTTPTransport()`` by default, or the one given as ``wrapped=``). Requests sent inside
a task carry ``traceparent`` and ``hiveloop-context`` (see
:mod:`hiveloop_async.contrib.propagation`); ``track_requests=True`` records each request as an
action until its response headers arrive; a ``hiveloop-task`` answer records a
``delegation`` event. The request, its response and its exceptions are the wrapped
transport's, unchanged.
"""

from __future__ import annotations

from typing import Any

import httpx

from . import propagation as prop
from ._outgoing import OutgoingRequest, header_value
from ._service import log_once

__all__ = ["AsyncTransport", "Transport"]


def _start(request: httpx.Request, track: bool, delegation: bool) -> OutgoingRequest | None:
    try:
        out = OutgoingRequest(request.method, str(request.url), track=track, delegation=delegation)
        for name, value in out.headers().items():
            request.headers[name] = value
        return out
    except Exception:
        log_once("httpx request start")
        return None


class AsyncTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that propagates context around ``wrapped``.

    Sending never raises anything the wrapped transport did not.
    """

    def __init__(
        self,
        wrapped: httpx.AsyncBaseTransport | None = None,
        *,
        track_requests: bool = False,
        record_delegation: bool = True,
    ) -> None:
        self._wrapped = wrapped if wrapped is not None else httpx.AsyncHTTPTransport()
        self._track = track_requests
        self._delegation = record_delegation

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport (propagating context)."""
        out = _start(request, self._track, self._delegation)
        try:
            response = await self._wrapped.handle_async_request(request)
        except BaseException as exc:
            if out is not None:
                out.failed(exc)
            raise
        if out is not None:
            out.response(response.status_code, header_value(response.headers, prop.RESPONSE_HEADER))
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._wrapped.aclose()

    async def __aenter__(self) -> AsyncTransport:
        await self._wrapped.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._wrapped.__aexit__(*exc_info)


class Transport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` (sync client) that propagates context around ``wrapped``."""

    def __init__(
        self,
        wrapped: httpx.BaseTransport | None = None,
        *,
        track_requests: bool = False,
        record_delegation: bool = True,
    ) -> None:
        self._wrapped = wrapped if wrapped is not None else httpx.HTTPTransport()
        self._track = track_requests
        self._delegation = record_delegation

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport (propagating context)."""
        out = _start(request, self._track, self._delegation)
        try:
            response = self._wrapped.handle_request(request)
        except BaseException as exc:
            if out is not None:
                out.failed(exc)
            raise
        if out is not None:
            out.response(response.status_code, header_value(response.headers, prop.RESPONSE_HEADER))
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self._wrapped.close()

    def __enter__(self) -> Transport:
        self._wrapped.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._wrapped.__exit__(*exc_info)
