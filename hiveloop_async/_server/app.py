"""The aiohttp application: HiveBoard's ingest contract and read endpoints.

Request flow, as in HiveBoard (auth middleware, then rate limiting, then routing):

1. ``GET /health`` needs no credentials.
2. Everything else needs ``Authorization: Bearer hb_...`` (exact, case-sensitive prefix).
   With ``api_keys`` given only those keys are valid; otherwise any ``hb_`` key is. A
   ``hb_read_`` key may read but not ``POST`` (403). Any non-``hb_`` token is treated as a
   dashboard JWT, which this server never accepts (401 "Invalid or expired token").
3. ``POST /v1/ingest`` is rate limited per key when ``rate_limit`` is set (sliding 1 s
   window, HiveBoard's 429 body and ``X-RateLimit-*`` headers).
4. A path with a trailing slash that exists without it is answered with a 307 redirect.

The handlers never touch SQLite: they await jobs on the store's worker thread. Large ingest
bodies are decoded and validated on the store's thread as well, so the loop stays responsive.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_exceptions import HTTPMethodNotAllowed, HTTPNotFound

from .ingest import parse_timestamp
from .queries import AgentQuery, EventQuery, LlmCallQuery, TaskQuery
from .store import Store

__all__ = ["COUNTER_KEY", "STORE_KEY", "RequestCounter", "create_app"]

_INGEST_PATH = "/v1/ingest"
_PUBLIC_PATHS = frozenset({"/health", "/"})
_STATIC_DIR = Path(__file__).parent / "static"
_STATIC_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: The page's own files only: no inline script, no other origin (payloads are shown as text,
#: and even a mistake there could not run a script).
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_MSG_FORBIDDEN_HOST = "Host header is not a loopback name; open the page at http://127.0.0.1"
_MAX_BODY_BYTES = 256 * 1024 * 1024
#: A body sent with a ``Content-Encoding`` (gzip, deflate) may expand to at most this many
#: bytes; past it the request is refused with 413 having held at most this much in memory
#: (aiohttp inflates in bounded steps as the body is read), so a zip bomb costs nothing.
MAX_DECODED_BODY_BYTES = 32 * 1024 * 1024

_MAX_WINDOWS = 10_000
_MSG_BAD_HEADER = "Missing or invalid Authorization header. Use: Bearer {api_key_or_jwt}"


class RequestCounter:
    """Thread-safe count of ``POST /v1/ingest`` answers by HTTP status code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[int] = collections.Counter()

    def add(self, status: int) -> None:
        """Count one answer; never blocks for long."""
        with self._lock:
            self._counts[status] += 1

    def snapshot(self) -> collections.Counter[int]:
        """A copy of the counts (missing statuses read as 0)."""
        with self._lock:
            return collections.Counter(self._counts)

    def clear(self) -> None:
        """Reset every count to zero."""
        with self._lock:
            self._counts.clear()


class _Config:
    def __init__(
        self, api_keys: Iterable[str] | None, rate_limit: int | None, open_reads: bool
    ) -> None:
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.rate_limit = rate_limit
        self.open_reads = open_reads
        self.windows: dict[str, collections.deque[float]] = {}
        self.stopping = asyncio.Event()


STORE_KEY: web.AppKey[Store] = web.AppKey("hiveloop_async_store", Store)
COUNTER_KEY: web.AppKey[RequestCounter] = web.AppKey("hiveloop_async_counter", RequestCounter)
_CONFIG_KEY: web.AppKey[_Config] = web.AppKey("hiveloop_async_config", _Config)
_STATIC_KEY: web.AppKey[dict[str, Path]] = web.AppKey("hiveloop_async_static", dict)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    try:
        data = orjson.dumps(body)
    except TypeError:  # integers wider than 64 bits, which orjson refuses
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def _error(status: int, error: str, message: str) -> web.Response:
    return _json({"error": error, "message": message, "status": status}, status)


def _authenticate(request: web.Request, config: _Config) -> tuple[web.Response | None, str]:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return _error(401, "authentication_failed", _MSG_BAD_HEADER), ""
    token = header[7:]
    if not token.startswith("hb_"):
        return _error(401, "authentication_failed", "Invalid or expired token"), ""
    if config.api_keys is not None and token not in config.api_keys:
        return _error(401, "authentication_failed", "Invalid API key"), ""
    if token.startswith("hb_read_") and request.method in ("POST", "PUT", "DELETE"):
        message = "Read-only API key cannot perform write operations"
        return _error(403, "insufficient_permissions", message), token
    return None, token


def _rate_limit(config: _Config, token: str) -> tuple[web.Response | None, dict[str, str] | None]:
    limit = config.rate_limit
    if limit is None:
        return None, None
    now = time.time()
    if len(config.windows) > _MAX_WINDOWS:  # forget keys that went quiet
        quiet = [key for key, w in config.windows.items() if not w or now - w[-1] >= 1.0]
        for key in quiet:
            del config.windows[key]
    window = config.windows.setdefault(token, collections.deque())
    while window and now - window[0] >= 1.0:
        window.popleft()
    remaining = max(0, limit - len(window))
    reset_at = str(int(now) + 1)
    if remaining == 0:
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset_at,
        }
        body = {
            "error": "rate_limit_exceeded",
            "message": f"Rate limit of {limit} requests/second exceeded",
            "status": 429,
            "details": {"retry_after_seconds": 1},
        }
        return _json(body, 429, headers), None
    window.append(now)
    return None, {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining - 1),
        "X-RateLimit-Reset": reset_at,
    }


async def _route_or_redirect(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPNotFound:
        path = request.path
        if path != "/" and path.endswith("/"):
            stripped = request.clone(rel_url=request.rel_url.with_path(path.rstrip("/")))
            match = await request.app.router.resolve(stripped)
            if match.http_exception is None:
                location = request.url.with_path(path.rstrip("/")).with_query(request.url.query)
                raise web.HTTPTemporaryRedirect(location) from None
        return _json({"detail": "Not Found"}, 404)
    except HTTPMethodNotAllowed:
        return _json({"detail": "Method Not Allowed"}, 405)


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    is_ingest = request.method == "POST" and request.path.rstrip("/") == _INGEST_PATH
    counter = request.app[COUNTER_KEY]
    status = 500
    try:
        response = await _dispatch(request, handler, is_ingest)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if is_ingest:
            counter.add(status)


def _loopback_host(request: web.Request) -> bool:
    """True when the Host header names a loopback address (DNS rebinding guard)."""
    name = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def _dispatch(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    is_ingest: bool,
) -> web.StreamResponse:
    path = request.path
    if path.rstrip("/") in _PUBLIC_PATHS or path in _PUBLIC_PATHS or path.startswith("/static/"):
        return await _route_or_redirect(request, handler)
    config = request.app[_CONFIG_KEY]
    if (
        config.open_reads
        and request.method in ("GET", "HEAD")
        and "Authorization" not in request.headers
    ):
        # Bound to loopback: the page and the read API work without a key, but only for
        # requests addressed to a loopback name (a rebound DNS name gets nothing).
        if not _loopback_host(request):
            return _error(403, "forbidden_host", _MSG_FORBIDDEN_HOST)
        return await _route_or_redirect(request, handler)
    refused, token = _authenticate(request, config)
    if refused is not None:
        return refused
    headers = None
    if is_ingest:
        refused, headers = _rate_limit(config, token)
        if refused is not None:
            return refused
    response = await _route_or_redirect(request, handler)
    if headers:
        response.headers.update(headers)
    return response


# --------------------------------------------------------------------------- handlers


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


class _DecodedTooLarge(Exception):
    pass


async def _read_body(request: web.Request) -> bytes:
    """The request body, inflated by aiohttp when it has a ``Content-Encoding``.

    :raises _DecodedTooLarge: when an encoded body inflates past ``MAX_DECODED_BODY_BYTES``.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return await request.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_DECODED_BODY_BYTES:
            raise _DecodedTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _ingest(request: web.Request) -> web.Response:
    try:
        raw = await _read_body(request)
    except web.HTTPException:
        raise
    except _DecodedTooLarge:
        return _error(
            413,
            "payload_too_large",
            f"Decompressed request body exceeds {MAX_DECODED_BODY_BYTES} bytes",
        )
    except Exception:  # e.g. a body that is not valid gzip for its Content-Encoding
        body = {
            "error": "validation_error",
            "message": "Request validation failed",
            "status": 400,
            "details": {
                "fields": [
                    {
                        "field": "body",
                        "message": "There was an error parsing the body",
                        "type": "body_decode_error",
                    }
                ]
            },
        }
        return _json(body, 400)
    content_type = request.headers.get("Content-Type")
    received_at = datetime.now(timezone.utc).isoformat()
    # Decoding, validation and insertion all run on the store's thread: the loop only
    # moves bytes, and the work is not split between two threads fighting for the GIL.
    status, body = await request.app[STORE_KEY].ingest(raw, content_type, received_at)
    return _json(body, status)


class _QueryError(Exception):
    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("invalid query")
        self.fields = fields


def _query_error(fields: list[dict[str, str]]) -> web.Response:
    return _json(
        {
            "error": "validation_error",
            "message": "Request validation failed",
            "status": 400,
            "details": {"fields": fields},
        },
        400,
    )


def _limit(request: web.Request, default: int = 50, maximum: int = 200) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise _QueryError(
            [
                {
                    "field": "query.limit",
                    "message": "Input should be a valid integer, unable to parse string as an "
                    "integer",
                    "type": "int_parsing",
                }
            ]
        ) from None
    if value > maximum:
        raise _QueryError(
            [
                {
                    "field": "query.limit",
                    "message": f"Input should be less than or equal to {maximum}",
                    "type": "less_than_equal",
                }
            ]
        )
    if value < 1:
        raise _QueryError(
            [
                {
                    "field": "query.limit",
                    "message": "Input should be greater than or equal to 1",
                    "type": "greater_than_equal",
                }
            ]
        )
    return value


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _QueryError(
        [
            {
                "field": f"query.{name}",
                "message": "Input should be a valid boolean, unable to interpret input",
                "type": "bool_parsing",
            }
        ]
    )


def _text(request: web.Request, name: str) -> str | None:
    return request.query.get(name) or None


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    return parse_timestamp(raw) if raw else None


async def _list_events(request: web.Request) -> web.Response:
    try:
        query = EventQuery(
            project_id=_text(request, "project_id"),
            agent_id=_text(request, "agent_id"),
            task_id=_text(request, "task_id"),
            event_type=_text(request, "event_type"),
            severity=_text(request, "severity"),
            environment=_text(request, "environment"),
            group=_text(request, "group"),
            since=_time(request, "since"),
            until=_time(request, "until"),
            exclude_heartbeats=_flag(request, "exclude_heartbeats", True),
            payload_kind=_text(request, "payload_kind"),
            limit=_limit(request),
            cursor=_text(request, "cursor"),
        )
    except _QueryError as exc:
        return _query_error(exc.fields)
    return _json(await request.app[STORE_KEY].list_events(query))


async def _list_tasks(request: web.Request) -> web.Response:
    try:
        query = TaskQuery(
            project_id=_text(request, "project_id"),
            agent_id=_text(request, "agent_id"),
            task_type=_text(request, "task_type"),
            status=_text(request, "status"),
            environment=_text(request, "environment"),
            since=_time(request, "since"),
            until=_time(request, "until"),
            sort=request.query.get("sort", "newest"),
            limit=_limit(request),
            cursor=_text(request, "cursor"),
            q=_text(request, "q"),
        )
    except _QueryError as exc:
        return _query_error(exc.fields)
    return _json(await request.app[STORE_KEY].list_tasks(query))


async def _timeline(request: web.Request) -> web.Response:
    try:
        tree = _flag(request, "action_tree", True)
    except _QueryError as exc:
        return _query_error(exc.fields)
    timeline = await request.app[STORE_KEY].task_timeline(
        request.match_info["task_id"], action_tree=tree
    )
    if timeline is None:
        return _error(404, "not_found", "Task not found")
    return _json(timeline)


async def _list_agents(request: web.Request) -> web.Response:
    try:
        query = AgentQuery(
            environment=_text(request, "environment"),
            group=_text(request, "group"),
            status=_text(request, "status"),
            sort=request.query.get("sort", "last_seen"),
            limit=_limit(request),
        )
    except _QueryError as exc:
        return _query_error(exc.fields)
    return _json(await request.app[STORE_KEY].list_agents(query))


async def _get_agent(request: web.Request) -> web.Response:
    agent = await request.app[STORE_KEY].get_agent(request.match_info["agent_id"])
    if agent is None:
        return _error(404, "not_found", "Agent not found")
    return _json(agent)


async def _list_llm_calls(request: web.Request) -> web.Response:
    try:
        query = LlmCallQuery(
            project_id=_text(request, "project_id"),
            agent_id=_text(request, "agent_id"),
            model=_text(request, "model"),
            task_id=_text(request, "task_id"),
            since=_time(request, "since"),
            until=_time(request, "until"),
            limit=_limit(request),
            cursor=_text(request, "cursor"),
        )
    except _QueryError as exc:
        return _query_error(exc.fields)
    answer = await request.app[STORE_KEY].list_llm_calls(query)
    if request.path.rstrip("/") == "/v1/cost/calls":  # HiveBoard's page has no totals
        del answer["totals"]
    return _json(answer)


async def _cost(request: web.Request) -> web.Response:
    return _json(
        await request.app[STORE_KEY].cost_summary(
            agent_id=_text(request, "agent_id"),
            project_id=_text(request, "project_id"),
            range_=request.query.get("range", "24h"),
        )
    )


async def _agent_pipeline(request: web.Request) -> web.Response:
    return _json(await request.app[STORE_KEY].agent_pipeline(request.match_info["agent_id"]))


async def _fleet_pipeline(request: web.Request) -> web.Response:
    return _json(await request.app[STORE_KEY].fleet_pipeline())


async def _list_projects(request: web.Request) -> web.Response:
    return _json(await request.app[STORE_KEY].list_projects())


async def _get_project(request: web.Request) -> web.Response:
    project = await request.app[STORE_KEY].get_project(request.match_info["project_id"])
    if project is None:
        return _error(404, "not_found", "Project not found")
    return _json(project)


#: How often the live stream looks for new commits, and sends a comment to keep it open.
_STREAM_POLL = 0.1
_STREAM_KEEPALIVE = 15.0


async def _stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/stream``: Server-Sent Events, one ``event`` message per stored event.

    Ours, not HiveBoard's (which has a WebSocket). Starts after the newest stored event,
    or after ``?after=SEQ`` / ``Last-Event-ID``; each message's ``id`` is the event's
    insertion number. New events are sent within ``_STREAM_POLL`` s of their commit.
    """
    store = request.app[STORE_KEY]
    stopping = request.app[_CONFIG_KEY].stopping
    start = request.query.get("after") or request.headers.get("Last-Event-ID")
    try:
        last = int(start) if start else await store.last_seq()
    except ValueError:
        return _query_error(
            [
                {
                    "field": "query.after",
                    "message": "Input should be a valid integer",
                    "type": "int_parsing",
                }
            ]
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    try:
        await response.write(b"retry: 1000\n: connected\n\n")
        seen = -1
        quiet_since = loop.time()
        while not stopping.is_set():
            count = store.stored_count
            if count != seen:
                seen = count
                found = await store.events_after(last)
                if found:
                    chunks = []
                    for seq, event in found:
                        chunks.append(b"id: %d\nevent: event\ndata: " % seq)
                        chunks.append(orjson.dumps(event, default=str))
                        chunks.append(b"\n\n")
                        last = seq
                    await response.write(b"".join(chunks))
                    quiet_since = loop.time()
                    if len(found) >= 500:
                        seen = -1  # more are waiting
                        continue
            if loop.time() - quiet_since >= _STREAM_KEEPALIVE:
                await response.write(b": keepalive\n\n")
                quiet_since = loop.time()
            try:
                await asyncio.wait_for(stopping.wait(), _STREAM_POLL)
            except asyncio.TimeoutError:
                pass
    except (ConnectionResetError, ConnectionError):
        pass
    return response


def _static_files() -> dict[str, Path]:
    if not _STATIC_DIR.is_dir():
        return {}
    return {p.name: p for p in _STATIC_DIR.iterdir() if p.suffix in _STATIC_TYPES}


async def _page_file(request: web.Request, name: str) -> web.Response:
    path = request.app[_STATIC_KEY].get(name)
    if path is None:
        return _json({"detail": "Not Found"}, 404)
    body = await asyncio.to_thread(path.read_bytes)
    return web.Response(body=body, content_type=_STATIC_TYPES[path.suffix], headers=_PAGE_HEADERS)


async def _index(request: web.Request) -> web.Response:
    return await _page_file(request, "index.html")


async def _static(request: web.Request) -> web.Response:
    return await _page_file(request, request.match_info["name"])


def create_app(
    store: Store,
    *,
    api_keys: Iterable[str] | None = None,
    rate_limit: int | None = None,
    counter: RequestCounter | None = None,
    open_reads: bool = False,
) -> web.Application:
    """Build the HiveBoard-compatible aiohttp application over ``store``.

    Does not block and starts nothing; run it with an ``aiohttp.web.AppRunner`` (or wrap it
    in a test app). The app does not own the store: closing the app leaves it open.

    :param store: where events are kept.
    :param api_keys: the only accepted keys; None accepts any key starting with ``hb_``.
    :param rate_limit: ingest requests per second per key; None disables limiting.
    :param counter: where ingest answers are counted by status (a new one if omitted;
        available afterwards as ``app[COUNTER_KEY]``).
    :param open_reads: serve ``GET`` requests without an ``Authorization`` header (for a
        server bound to loopback: the dashboard then needs no key); such requests must
        name a loopback host. Requests that do send a key are checked as usual.
    :raises ValueError: if ``rate_limit`` is not positive.
    """
    if rate_limit is not None and rate_limit < 1:
        raise ValueError("rate_limit must be a positive number of requests per second")
    app = web.Application(middlewares=[_middleware], client_max_size=_MAX_BODY_BYTES)
    app[STORE_KEY] = store
    config = app[_CONFIG_KEY] = _Config(api_keys, rate_limit, open_reads)
    app[_STATIC_KEY] = _static_files()

    async def stop_streams(app: web.Application) -> None:
        config.stopping.set()

    app.on_shutdown.append(stop_streams)
    app[COUNTER_KEY] = counter if counter is not None else RequestCounter()
    app.router.add_get("/health", _health)
    app.router.add_post(_INGEST_PATH, _ingest)
    app.router.add_get("/v1/events", _list_events)
    app.router.add_get("/v1/tasks", _list_tasks)
    app.router.add_get("/v1/tasks/{task_id}/timeline", _timeline)
    app.router.add_get("/v1/agents", _list_agents)
    app.router.add_get("/v1/agents/{agent_id}", _get_agent)
    app.router.add_get("/v1/agents/{agent_id}/pipeline", _agent_pipeline)
    app.router.add_get("/v1/pipeline", _fleet_pipeline)
    app.router.add_get("/v1/llm-calls", _list_llm_calls)
    app.router.add_get("/v1/cost/calls", _list_llm_calls)
    app.router.add_get("/v1/cost", _cost)
    app.router.add_get("/v1/projects", _list_projects)
    app.router.add_get("/v1/projects/{project_id}", _get_project)
    app.router.add_get("/v1/stream", _stream)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static)
    return app
