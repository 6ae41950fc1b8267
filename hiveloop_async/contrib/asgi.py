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
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .._client import HiveBoard
from . import propagation as prop
from ._service import AgentSpec, ExcludeSpec, RequestTasks, ServedRequest, log_once

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
            tasks = self._tasks
            if tasks.excluded(path, scope):
                return None
            headers = {}
            for name, value in scope.get("headers") or ():
                if name in _READ:  # ASGI header names are lower-case; the others stay bytes
                    headers[name.decode("latin-1")] = value.decode("latin-1")
            client = scope.get("client")
            return tasks.begin_request(
                scope,
                scope.get("method", "GET") if kind == "http" else "WEBSOCKET",
                path,
                route_template(scope, self.app),
                headers,
                client[0] if client else None,
                kind,
            )
        except Exception:
            log_once("asgi request")
            return None

    async def _http(
        self, served: ServedRequest, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def receive_watch() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not served.done:
                served.disconnected = True
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
                        served.done = True
                elif kind == "http.response.start":
                    _started(served, message)
            except Exception:
                log_once("asgi send")
            try:
                await send(message)
            except OSError:
                served.disconnected = True  # the client went away while we were writing
                raise

        try:
            await self.app(scope, receive_watch, send_watch)
        except BaseException as exc:
            served.finish(exc, cancelled=served.disconnected, complete=served.done)
            raise
        served.finish(cancelled=served.disconnected and not served.done, complete=served.done)

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


def _started(served: ServedRequest, message: Message) -> None:
    """``http.response.start``: the status, and the header naming the task if asked."""
    served.status = int(message.get("status", 200))
    if served.answer_caller:
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
        if owner is None:
            return None
        last, table = _LAST
        if last() is not owner:
            table = None
        if table is None or table.size != len(table.routes):
            routes = getattr(getattr(owner, "router", None), "routes", None)
            if routes is None:
                routes = getattr(owner, "routes", None)
            if not routes:
                return None
            table = _table(owner, routes)
        path = scope.get("path")
        root = scope.get("root_path", "")
        key = (scope.get("type"), scope.get("method"), root, path)
        template = table.static.get(key)
        if template is not None:
            return template
        if not root and type(path) is str and key[0] == "http" and "fastapi" not in scope:
            template = _match_plain(table, scope, path, key[1])
        else:
            template = _match(table.routes, dict(scope), "")
        if template is not None and "{" not in template and template == path:
            # A route without parameters: the same path always gives the same template.
            static = table.static
            if len(static) >= _STATIC_MAX:
                static.clear()
            static[key] = template
        return template
    except Exception:
        return None


class _Table:
    """One app's routes, prepared for :func:`route_template` (rebuilt when their number
    changes), and the templates of its parameterless routes by (type, method, root path,
    path): most service endpoints are static. Paths with parameters and paths that match
    nothing are never kept (a scanner's paths would fill it), so ``static`` holds at most
    the app's static routes."""

    __slots__ = ("plain", "routes", "size", "static")

    def __init__(self, routes: Any) -> None:
        self.routes = routes
        self.size = len(routes)
        self.static: dict[tuple[Any, ...], str] = {}
        #: Per route: (its path regex's ``match``, its path, its methods) for a plain
        #: Starlette ``Route`` / FastAPI ``APIRoute`` (matched here by regex and method, as
        #: their ``matches()`` would, without building the child scope), else None (its own
        #: ``matches()`` decides).
        self.plain: list[tuple[Callable[[str], Any], str, Any] | None] = []
        known = _plain_matches()
        for route in routes:
            regex = getattr(route, "path_regex", None)
            path = getattr(route, "path", None)
            if (
                getattr(type(route), "matches", None) in known
                and regex is not None
                and isinstance(path, str)
            ):
                self.plain.append((regex.match, path, getattr(route, "methods", None)))
            else:
                self.plain.append(None)


def _nobody() -> Any:
    return _NOBODY


_NOBODY = object()
#: The app whose table was used last (weakly) and that table, as one tuple so that a thread
#: never reads one app's reference with another's table: a service has one app.
_LAST: tuple[Callable[[], Any], _Table | None] = (_nobody, None)
#: Per app (weakly): its :class:`_Table`.
_TABLES: weakref.WeakKeyDictionary[Any, _Table] = weakref.WeakKeyDictionary()
_STATIC_MAX = 4096


def _table(owner: Any, routes: Any) -> _Table:
    try:
        table = _TABLES.get(owner)
    except TypeError:  # an owner that cannot be weakly referenced: no cache
        return _Table(routes)
    if table is None or table.routes is not routes or table.size != len(routes):
        table = _TABLES[owner] = _Table(routes)
    global _LAST
    _LAST = (weakref.ref(owner), table)
    return table


def _plain_matches() -> tuple[Any, ...]:
    """The ``matches`` functions of the route classes :class:`_Table` matches itself."""
    out = []
    starlette = sys.modules.get("starlette.routing")
    if starlette is not None:
        out.append(getattr(getattr(starlette, "Route", None), "matches", None))
    fastapi = sys.modules.get("fastapi.routing")
    if fastapi is not None:
        out.append(getattr(getattr(fastapi, "APIRoute", None), "matches", None))
    return tuple(m for m in out if m is not None)


def _match_plain(table: _Table, scope: Scope, path: str, method: Any) -> str | None:
    """:func:`_match` for an HTTP scope without a root path, plain routes by regex alone."""
    partial: str | None = None
    copy: dict[str, Any] | None = None
    for route, plain in zip(table.routes, table.plain, strict=False):
        if plain is not None:
            regex_match, template, methods = plain
            if regex_match(path) is None:
                continue
            if methods and method not in methods:
                if partial is None:
                    partial = template  # the path matched, the method did not (405)
                continue
            return template
        if copy is None:
            copy = dict(scope)
        found, full = _match_one(route, copy, path, "")
        if full:
            return found
        if found is not None and partial is None:
            partial = found
    return partial


def _match(routes: Any, scope: dict[str, Any], prefix: str) -> str | None:
    partial: str | None = None
    # Without a root path, a Starlette route's path is the scope's path: a route whose own
    # regex rejects it cannot match, and skipping its matches() (parameter conversion, a
    # child scope) is most of the cost on an app with many routes.
    plain = scope.get("path") if not scope.get("root_path") else None
    for route in routes:
        found, full = _match_one(route, scope, plain, prefix)
        if full:
            return found
        if found is not None and partial is None:
            partial = found
    return partial


def _match_one(
    route: Any, scope: dict[str, Any], plain: Any, prefix: str
) -> tuple[str | None, bool]:
    """One route's template and whether it matched fully (else the method only, or None)."""
    matches = getattr(route, "matches", None)
    path = getattr(route, "path", None)
    if matches is None or not isinstance(path, str):
        return None, False
    if plain is not None:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(plain) is None:
            return None, False
    match, child = matches(scope)
    name = getattr(match, "name", "")
    if name == "FULL":
        inner = getattr(route, "routes", None)
        if inner:  # a Mount: descend with the scope the mount would pass down
            deeper = _match(inner, {**scope, **child}, prefix + path)
            if deeper is not None:
                return deeper, True
        return prefix + path, True
    if name == "PARTIAL":
        return prefix + path, False  # the path matched, the method did not (405)
    return None, False
