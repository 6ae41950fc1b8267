"""aiohttp: a task per request on the server, and context on outgoing client requests.

Server::

    from hiveloop_async.contrib import aiohttp as hl_aiohttp

    app = web.Application()
    hl_aiohttp.setup(app, hb, agent=hb.agent("research-svc"))

``setup`` adds a middleware with the same behaviour and options as the ASGI one
(:class:`hiveloop_async.contrib.asgi.HiveLoopMiddleware`), and a ``cleanup_ctx`` that starts
``hb`` on the app's loop and closes it (delivering what is queued) at cleanup. The task type
is the resource's canonical path (``"POST /qualify/{lead_id}"``).

Client::

    session = aiohttp.ClientSession(trace_configs=[hl_aiohttp.trace_config()])

Requests made inside a task carry ``traceparent`` and ``hiveloop-context`` (see
:mod:`hiveloop_async.contrib.propagation`); ``track_requests=True`` records each as an action.
aiohttp is already a dependency of the SDK; this module imports nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from aiohttp import (
    ClientSession,
    TraceConfig,
    TraceRequestEndParams,
    TraceRequestExceptionParams,
    TraceRequestStartParams,
    web,
)

from .._client import HiveBoard
from . import propagation as prop
from ._outgoing import OutgoingRequest, header_value
from ._service import AgentSpec, ExcludeSpec, RequestTasks, ServedRequest, log_once

__all__ = ["middleware", "setup", "trace_config"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SERVED: web.RequestKey[ServedRequest] = web.RequestKey("hiveloop_served", ServedRequest)
_CLIENT_ERRORS = (ConnectionResetError, BrokenPipeError)
_READ = ("x-request-id", prop.TRACEPARENT, prop.CONTEXT_HEADER)


def setup(
    app: web.Application,
    hb: HiveBoard | None = None,
    *,
    agent: AgentSpec,
    task_id: Callable[[web.Request], str] | None = None,
    task_type: Callable[[web.Request], str] | None = None,
    project: str | None = None,
    exclude: ExcludeSpec = None,
    trust_incoming: prop.TrustSpec = False,
    failed: Callable[[int], bool] | None = None,
) -> None:
    """Track every request of ``app`` as a task of ``agent``; run ``hb`` on the app's loop.

    Options as for the ASGI middleware; callables receive the ``web.Request``. Call before
    the app starts (it appends to ``app.middlewares``, ``app.cleanup_ctx`` and
    ``app.on_response_prepare``). Raises :class:`ValueError` for a bad network in
    ``trust_incoming``; never during a request.
    """
    app.middlewares.append(
        middleware(
            agent,
            task_id=task_id,
            task_type=task_type,
            project=project,
            exclude=exclude,
            trust_incoming=trust_incoming,
            failed=failed,
        )
    )
    app.on_response_prepare.append(_answer_caller)
    if hb is not None:

        async def run_client(app: web.Application) -> AsyncIterator[None]:
            await hb.start()
            yield
            await hb.aclose()

        app.cleanup_ctx.append(run_client)


def middleware(
    agent: AgentSpec,
    *,
    task_id: Callable[[web.Request], str] | None = None,
    task_type: Callable[[web.Request], str] | None = None,
    project: str | None = None,
    exclude: ExcludeSpec = None,
    trust_incoming: prop.TrustSpec = False,
    failed: Callable[[int], bool] | None = None,
) -> Any:
    """The middleware alone (``setup`` adds it); for apps that order their middlewares."""
    tasks = RequestTasks(
        agent,
        task_id=task_id,
        task_type=task_type,
        project=project,
        exclude=exclude,
        trust_incoming=trust_incoming,
        failed=failed,
    )

    @web.middleware
    async def hiveloop_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        served = _begin(tasks, request)
        if served is None:
            return await handler(request)
        request[_SERVED] = served
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # an answer, raised: its status decides
            served.status = exc.status
            served.finish()
            raise
        except _CLIENT_ERRORS as exc:
            served.finish(exc, cancelled=True)
            raise
        except BaseException as exc:  # includes CancelledError: recorded as cancelled
            if not isinstance(exc, asyncio.CancelledError):
                served.status = 500  # what aiohttp answers for an unhandled exception
            served.finish(exc)
            raise
        try:
            served.status = response.status
            served.bytes_sent = _body_length(response)
        except Exception:
            log_once("aiohttp response")
        served.finish()
        return response

    return hiveloop_middleware


def _begin(tasks: RequestTasks, request: web.Request) -> ServedRequest | None:
    try:
        if tasks.excluded(request.path, request):
            return None
        info = request.match_info
        resource = info.route.resource if info is not None else None
        route = resource.canonical if resource is not None else None
        raw = request.headers
        headers = {name: raw[name] for name in _READ if name in raw}
        websocket = raw.get("Upgrade", "").lower() == "websocket"
        return tasks.begin_request(
            request,
            request.method,
            request.path,
            route,
            headers,
            request.remote,
            "websocket" if websocket else "http",
        )
    except Exception:
        log_once("aiohttp request")
        return None


async def _answer_caller(request: web.Request, response: web.StreamResponse) -> None:
    try:
        served = request.get(_SERVED)
        header = served.response_header() if served is not None else None
        if header is not None:
            response.headers[header[0]] = header[1]
    except Exception:
        log_once("aiohttp response header")


def _body_length(response: web.StreamResponse) -> int:
    """The body's size for a ``web.Response``; for a streamed one, what went on the wire
    (aiohttp counts its status line, headers and chunk framing there too)."""
    length = response.body_length
    if not length and isinstance(response, web.Response) and response.body is not None:
        length = response.content_length or 0
    return int(length or 0)


# -- client ------------------------------------------------------------------------------------


def trace_config(*, track_requests: bool = False, record_delegation: bool = True) -> TraceConfig:
    """A ``TraceConfig`` for ``aiohttp.ClientSession(trace_configs=[...])``.

    Requests made inside a task carry ``traceparent`` and ``hiveloop-context``;
    ``track_requests=True`` records each as an action (``"GET host:port/path"``: status,
    duration, failed on an exception or a 5xx); ``record_delegation`` records a
    ``delegation`` event when the server answers with ``hiveloop-task``. Never raises into
    the request.
    """
    config = TraceConfig()

    async def on_start(
        session: ClientSession, ctx: SimpleNamespace, params: TraceRequestStartParams
    ) -> None:
        try:
            out = OutgoingRequest(
                params.method,
                str(params.url),
                track=track_requests,
                delegation=record_delegation,
            )
            ctx.hiveloop = out
            for name, value in out.headers().items():
                params.headers[name] = value
        except Exception:
            log_once("aiohttp client start")

    async def on_end(
        session: ClientSession, ctx: SimpleNamespace, params: TraceRequestEndParams
    ) -> None:
        out: OutgoingRequest | None = getattr(ctx, "hiveloop", None)
        if out is not None:
            ctx.hiveloop = None
            out.response(
                params.response.status,
                header_value(params.response.headers, prop.RESPONSE_HEADER),
            )

    async def on_exception(
        session: ClientSession, ctx: SimpleNamespace, params: TraceRequestExceptionParams
    ) -> None:
        out: OutgoingRequest | None = getattr(ctx, "hiveloop", None)
        if out is not None:
            ctx.hiveloop = None
            out.failed(params.exception)

    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config
