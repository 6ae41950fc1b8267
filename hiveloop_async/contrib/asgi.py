"""FastAPI, Starlette and any ASGI 3 app: one HiveLoop task per request.

::

    from hiveloop_async.contrib.asgi import HiveLoopMiddleware, lifespan

    hb = hiveloop_async.HiveBoard(api_key=..., endpoint=...)
    agent = hb.agent("research-svc")
    app = FastAPI(lifespan=lifespan(hb))          # the sender runs on the server's loop
    app.add_middleware(HiveLoopMiddleware, agent=agent)

or ``app = HiveLoopMiddleware(app, agent=agent, hb=hb)``, which also starts ``hb`` on the ASGI
``lifespan.startup`` and closes it (delivering what is queued) on ``lifespan.shutdown``.

Each HTTP request becomes a task of ``agent``: task id from a valid ``X-Request-ID`` (else
generated), type ``"POST /qualify/{lead_id}"`` from the router (the raw path when there is no
router), payload ``method``, ``route``, ``status_code``, ``response_bytes``. An exception
from the app fails the task and propagates unchanged; a 5xx fails it (``failed=`` decides);
a client that disconnects or a cancelled request fails it with ``cancelled: true``.
Streaming and SSE responses keep the task open until their body ends. Inside the handler,
``hiveloop.current_task()``, ``track_context`` and ``@track`` need no plumbing, and
``BackgroundTasks`` and ``asyncio.create_task`` started there nest under the task.

The middleware is pure ASGI (not ``BaseHTTPMiddleware``). Its bookkeeping never raises into
the request: an internal error is logged once and the request goes on untracked.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .._client import HiveBoard
from . import propagation as prop
from ._service import AgentSpec, ExcludeSpec, RequestInfo, RequestTasks, ServedRequest, log_once

__all__ = ["HiveLoopMiddleware", "lifespan"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The request headers the middleware reads (the others are never decoded).
_READ = frozenset({b"x-request-id", prop.TRACEPARENT.encode(), prop.CONTEXT_HEADER.encode()})


def lifespan(
    hb: HiveBoard,
    inner: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    """A ``lifespan=`` for FastAPI/Starlette that runs ``hb`` on the server's loop.

    Starts the sender at startup (``await hb.start()``) and closes it at shutdown
    (``await hb.aclose()``, bounded by ``shutdown_timeout``). ``inner`` is the app's own
    lifespan, entered inside; its state is passed through. Raises only what ``inner`` raises
    (and :class:`~hiveloop_async.HiveLoopUsageError` when ``hb`` was already closed).
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        await hb.start()
        try:
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state
        finally:
            await hb.aclose()

    return run


class HiveLoopMiddleware:
    """Pure ASGI middleware: one task of ``agent`` per request. See the module docstring.

    Options: ``hb`` (start/close it on the app's lifespan), ``task_id`` and ``task_type``
    (callables of the ASGI scope), ``project``, ``exclude`` (paths, ``"/prefix*"``, or a
    predicate of the scope), ``trust_incoming`` (False by default; True, networks such as
    ``["10.0.0.0/8"]``, or a predicate of the scope: only then are a caller's
    ``hiveloop-context`` and ``traceparent`` headers used), ``failed`` (a predicate of the
    status code; default ``>= 500``), ``websockets`` (track WebSocket connections too).
    Raises :class:`ValueError` at construction for a bad network; never during a request.
    """

    def __init__(
        self,
        app: ASGIApp,
        agent: AgentSpec,
        *,
        hb: HiveBoard | None = None,
        task_id: Callable[[Any], str] | None = None,
        task_type: Callable[[Any], str] | None = None,
        project: str | None = None,
        exclude: ExcludeSpec = None,
        trust_incoming: prop.TrustSpec = False,
        failed: Callable[[int], bool] | None = None,
        websockets: bool = False,
    ) -> None:
        self.app = app
        self._hb = hb
        self._websockets = websockets
        self._tasks = RequestTasks(
            agent,
            task_id=task_id,
            task_type=task_type,
            project=project,
            exclude=exclude,
            trust_incoming=trust_incoming,
            failed=failed,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http" or (kind == "websocket" and self._websockets):
            served = self._begin(scope, kind)
            if served is None:
                await self.app(scope, receive, send)
            elif kind == "http":
                await self._http(served, scope, receive, send)
            else:
                await self._websocket(served, scope, receive, send)
        elif kind == "lifespan" and self._hb is not None:
            await self._lifespan(self._hb, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _begin(self, scope: Scope, kind: str) -> ServedRequest | None:
        try:
            path = scope.get("path") or "/"
            if self._tasks.excluded(path, scope):
                return None
            headers = {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in scope.get("headers") or ()
                if k in _READ  # ASGI header names are lower-case
            }
            client = scope.get("client")
            info = RequestInfo(
                request=scope,
                method=scope.get("method", "GET") if kind == "http" else "WEBSOCKET",
                path=path,
                route=route_template(scope, self.app),
                headers=headers,
                peer=client[0] if client else None,
                kind=kind,
            )
        except Exception:
            log_once("asgi request")
            return None
        return self._tasks.begin(info)

    async def _http(
        self, served: ServedRequest, scope: Scope, receive: Receive, send: Send
    ) -> None:
        state = _Response()

        async def receive_watch() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not state.done:
                state.disconnected = True
            return message

        async def send_watch(message: Message) -> None:
            # Lean: one lookup for the body messages (all but one of a response's messages).
            try:
                kind = message.get("type")
                if kind == "http.response.body":
                    body = message.get("body")
                    if body:
                        served.bytes_sent += len(body)
                    if not message.get("more_body", False):
                        state.done = True
                elif kind == "http.response.start":
                    state.started(served, message)
            except Exception:
                log_once("asgi send")
            try:
                await send(message)
            except OSError:
                state.disconnected = True  # the client went away while we were writing
                raise

        try:
            await self.app(scope, receive_watch, send_watch)
        except BaseException as exc:
            served.finish(exc, cancelled=state.disconnected, complete=state.done)
            raise
        served.finish(cancelled=state.disconnected and not state.done, complete=state.done)

    async def _websocket(
        self, served: ServedRequest, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def send_watch(message: Message) -> None:
            try:
                kind = message.get("type")
                if kind == "websocket.accept":
                    served.status = 101
                elif kind == "websocket.close":
                    served.status = served.status or 403  # closed before accepting: refused
                elif kind == "websocket.send":
                    data = message.get("bytes") or message.get("text") or b""
                    served.bytes_sent += len(data)
            except Exception:
                log_once("asgi websocket send")
            await send(message)

        try:
            await self.app(scope, receive, send_watch)
        except BaseException as exc:
            served.finish(exc)
            raise
        served.finish()

    async def _lifespan(self, hb: HiveBoard, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_start() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await hb.start()
            return message

        async def send_close(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await hb.aclose()
            await send(message)

        await self.app(scope, receive_start, send_close)


class _Response:
    """What the app sent so far."""

    __slots__ = ("disconnected", "done")

    def __init__(self) -> None:
        self.done = False
        self.disconnected = False

    def started(self, served: ServedRequest, message: Message) -> None:
        """``http.response.start``: the status, and the header naming the task if asked."""
        served.status = int(message.get("status", 200))
        header = served.response_header()
        if header is not None:
            name, value = header
            headers = list(message.get("headers") or ())
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
            message["headers"] = headers


def route_template(scope: Scope, app: Any = None) -> str | None:
    """The path template of the route that will serve ``scope`` (Starlette/FastAPI routers).

    Matches the router's routes against the scope, as the router itself will, descending
    into mounts. None when the app has no Starlette-style router or nothing matches.
    Raises nothing.
    """
    try:
        owner = scope.get("app") or app
        routes = getattr(getattr(owner, "router", None), "routes", None)
        if routes is None:
            routes = getattr(owner, "routes", None)
        if not routes:
            return None
        try:
            static = _STATIC.get(owner)
            if static is None:
                static = _STATIC[owner] = {}
        except TypeError:  # an owner that cannot be weakly referenced: no cache
            static = {}
        key = (
            len(routes),
            scope.get("type"),
            scope.get("method"),
            scope.get("root_path", ""),
            scope.get("path"),
        )
        template = static.get(key)
        if template is not None:
            return template
        template = _match(routes, dict(scope), "")
        if template is not None and "{" not in template and template == scope.get("path"):
            # A route without parameters: the same path always gives the same template.
            if len(static) >= _STATIC_MAX:
                static.clear()
            static[key] = template
        return template
    except Exception:
        return None


#: Per app (weakly), templates of parameterless routes by (number of routes, type, method,
#: root path, path): the router's matching costs tens of µs a request, and most service
#: endpoints are static. Paths with parameters and paths that match nothing are never kept
#: (a scanner's paths would fill it), so each holds at most the app's static routes.
_STATIC: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()
_STATIC_MAX = 4096


def _match(routes: Any, scope: dict[str, Any], prefix: str) -> str | None:
    partial: str | None = None
    # Without a root path, a Starlette route's path is the scope's path: a route whose own
    # regex rejects it cannot match, and skipping its matches() (parameter conversion, a
    # child scope) is most of the cost on an app with many routes.
    plain = scope.get("path") if not scope.get("root_path") else None
    for route in routes:
        matches = getattr(route, "matches", None)
        path = getattr(route, "path", None)
        if matches is None or not isinstance(path, str):
            continue
        if plain is not None:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(plain) is None:
                continue
        match, child = matches(scope)
        name = getattr(match, "name", "")
        if name == "FULL":
            inner = getattr(route, "routes", None)
            if inner:  # a Mount: descend with the scope the mount would pass down
                deeper = _match(inner, {**scope, **child}, prefix + path)
                if deeper is not None:
                    return deeper
            return prefix + path
        if name == "PARTIAL" and partial is None:
            partial = prefix + path  # the path matched, the method did not (405)
    return partial
