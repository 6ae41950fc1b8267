"""The embedded HiveBoard-compatible server (aiohttp + SQLite), for laptops, demos and tests.

``POST /v1/ingest`` follows HiveBoard's wire contract exactly (validation, 200/207/400/401/
403/429 answers, deduplication by ``event_id``); the read endpoints (``/v1/tasks``,
``/v1/tasks/{id}/timeline``, ``/v1/events``, ``/v1/agents``, ``/v1/agents/{id}/pipeline``,
``/v1/pipeline``, ``/v1/llm-calls``, ``/v1/cost``, ``/v1/cost/calls``, ``/v1/projects``,
``/v1/projects/{id_or_slug}``) return HiveBoard's shapes. ``/`` serves the dashboard (static
files in ``static/``) and ``/v1/stream`` its live Server-Sent Events.

Keys: bound to loopback (the default), ``GET`` requests without an ``Authorization`` header
are served, so the dashboard needs no key (a Host header that is not a loopback name gets
403, against DNS rebinding); ingest always needs a key. Bound to any other address, API keys
are required at start and every API request, reads and the stream included, needs one.

Differences from HiveBoard, all deliberate:

* single tenant: stored events carry ``tenant_id: "local"``, and ``project_id`` is the string
  the SDK sent (HiveBoard resolves it to a project UUID, auto-creating projects); so no
  "Auto-created project" warning is ever returned;
* no LLM cost estimation; ``Content-Encoding: gzip`` bodies are accepted;
* the agent row is kept per event ``agent_id`` (HiveBoard: per envelope), its stuck threshold
  comes from ``agent_registered`` data (HiveBoard always uses 300 s), and heartbeats do not
  change ``last_event_type``;
* ``GET /v1/tasks`` reads a summary table maintained at ingest (paged in SQL); its
  ``agent_id``/``project_id``/``task_type``/``environment`` filters apply to the task's
  first event (HiveBoard: to events before grouping; the same unless a task spans agents),
  and ``q`` (ours) matches part of the task id; ``/v1/llm-calls`` applies ``task_id``;
  ``/v1/cost`` also takes ``range=all``;
* timelines also report ``llm_call_count``/``total_tokens_in``/``total_tokens_out`` and never
  fail on a ``plan_step`` without ``total_steps``.

Storage (see ``store.py``): SQLite in WAL mode (``synchronous=NORMAL``) owned by one worker
thread, so the event loop never waits on the database; decoding and validating ingest bodies
happens on that thread too. Deduplication keeps the stored event ids in memory (about
110 bytes per event, reloaded at start) instead of a unique index, which would cost more
than the rest of the insert; for the same reason the task summaries are keyed by a number
given in order of arrival, with the task id to number map in memory (reloaded at start).
File databases also get a checkpoint thread with its own connection that never touches rows.

Entry points: :func:`start_server` on a running event loop, :class:`ServerThread` for
synchronous code, :func:`create_app` to embed or wrap the application.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from .app import COUNTER_KEY, STORE_KEY, RequestCounter, create_app
from .store import Store

__all__ = [
    "COUNTER_KEY",
    "DEFAULT_PORT",
    "STORE_KEY",
    "LocalServer",
    "RequestCounter",
    "ServerThread",
    "Store",
    "create_app",
    "default_db_path",
    "is_loopback",
    "start_server",
]

#: The port ``hiveloop-async serve`` listens on by default.
DEFAULT_PORT = 8766


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/hiveloop-async/events.db``, else ``~/.local/share/hiveloop-async/...``.

    Does not create anything.
    """
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "hiveloop-async" / "events.db"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(host: str, api_keys: Iterable[str] | None) -> None:
    if not is_loopback(host) and not api_keys:
        raise ValueError(
            f"host must be a loopback address, not {host!r}, unless API keys are given "
            "(then the read API and the dashboard need one of them)"
        )


class LocalServer:
    """A running local server on the current event loop (see :func:`start_server`).

    Use ``async with`` or call :meth:`close`. The ``*_sync`` helpers block the calling
    thread and are meant for other threads; the async helpers never block the loop.
    """

    def __init__(
        self,
        *,
        runner: web.AppRunner,
        store: Store,
        host: str,
        port: int,
        counter: RequestCounter,
    ) -> None:
        self._runner = runner
        self._store = store
        self._host = host
        self._port = port
        self._counter = counter
        self._closed = False

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def store(self) -> Store:
        """The event store behind the server."""
        return self._store

    @property
    def app(self) -> web.Application:
        """The running aiohttp application."""
        return self._runner.app

    @property
    def requests(self) -> collections.Counter[int]:
        """A snapshot of ``POST /v1/ingest`` answers by status code; never blocks."""
        return self._counter.snapshot()

    async def events(
        self,
        *,
        event_type: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events in insertion order, optionally filtered by exact values.

        Events of one request are inserted in timestamp order (as HiveBoard does).
        """
        return await self._store.events(event_type=event_type, task_id=task_id, agent_id=agent_id)

    def events_sync(
        self,
        *,
        event_type: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Blocking variant of :meth:`events` for other threads."""
        return self._store.events_sync(event_type=event_type, task_id=task_id, agent_id=agent_id)

    async def event_count(self) -> int:
        """The exact number of stored events."""
        return await self._store.event_count()

    def event_count_sync(self) -> int:
        """Blocking variant of :meth:`event_count` for other threads."""
        return self._store.event_count_sync()

    async def wait_for_events(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` events are stored; False after ``timeout`` seconds."""
        return await self._store.wait_for_count(n, timeout)

    def wait_for_events_sync(self, n: int, timeout: float = 10.0) -> bool:
        """Blocking variant of :meth:`wait_for_events` for other threads."""
        return self._store.wait_for_count_sync(n, timeout)

    async def clear(self) -> None:
        """Delete stored events and agents and reset the request counts."""
        await self._store.clear()
        self._counter.clear()

    def clear_sync(self) -> None:
        """Blocking variant of :meth:`clear` for other threads."""
        self._store.clear_sync()
        self._counter.clear()

    async def close(self) -> None:
        """Stop listening, finish in-flight requests, close the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._runner.cleanup()
        finally:
            await self._store.aclose()

    async def __aenter__(self) -> LocalServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    db: str | os.PathLike[str] = ":memory:",
    api_keys: Iterable[str] | None = None,
    rate_limit: int | None = None,
) -> LocalServer:
    """Start the local server on the running event loop and return once it listens.

    The database is opened on the store's own thread, so this never blocks the loop.

    :param host: the address to listen on. On loopback, ``GET`` requests need no key (the
        dashboard at ``/`` just works); any other address requires ``api_keys``, and then
        every API request, reads included, needs one of them.
    :param port: the TCP port; 0 picks a free one (read it from ``LocalServer.port``).
    :param db: a SQLite file path (created with its directory if needed) or ``":memory:"``.
    :param api_keys: the only accepted API keys; None accepts any key starting with ``hb_``.
    :param rate_limit: ingest requests per second per key (HiveBoard's 429); None = off.
    :raises ValueError: for a non-loopback host without API keys, or a non-positive rate
        limit.
    :raises OSError: if the port cannot be bound.
    :raises RuntimeError: if the database cannot be opened.
    """
    api_keys = list(api_keys) if api_keys is not None else None
    _check_host(host, api_keys)
    if rate_limit is not None and rate_limit < 1:
        raise ValueError("rate_limit must be a positive number of requests per second")
    counter = RequestCounter()
    store = Store(db)
    try:
        await store.call(lambda conn: None)
        app = create_app(
            store,
            api_keys=api_keys,
            rate_limit=rate_limit,
            counter=counter,
            open_reads=is_loopback(host),
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
    except BaseException:
        await store.aclose()
        raise
    return LocalServer(runner=runner, store=store, host=host, port=bound_port, counter=counter)


class ServerThread:
    """The local server on its own event loop in a daemon thread, for synchronous code.

    ``with ServerThread(memory=True) as srv: requests to srv.url``. :meth:`start` blocks
    until the server listens; :meth:`stop` blocks until it has shut down and is idempotent.
    The helpers (:meth:`events`, :meth:`event_count`, ...) block the calling thread and
    must not be called from the server's own loop.

    :param host: the address (non-loopback ones need ``api_keys``, see :func:`start_server`).
    :param port: the TCP port; 0 picks a free one.
    :param db: a SQLite file path; None (the default) or ``memory=True`` uses ``":memory:"``.
    :param memory: use an in-memory database.
    :param api_keys: the only accepted API keys; None accepts any ``hb_`` key.
    :param rate_limit: ingest requests per second per key; None = off.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str | os.PathLike[str] | None = None,
        memory: bool = False,
        api_keys: Iterable[str] | None = None,
        rate_limit: int | None = None,
    ) -> None:
        if memory and db is not None and os.fspath(db) != ":memory:":
            raise ValueError("pass either db=PATH or memory=True, not both")
        keys = list(api_keys) if api_keys is not None else None
        _check_host(host, keys)
        self._host = host
        self._port = port
        self._db: str | os.PathLike[str] = ":memory:" if db is None or memory else db
        self._api_keys = keys
        self._rate_limit = rate_limit
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: LocalServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start the server thread and block until it listens.

        :return: self.
        :raises RuntimeError: if it was already started, or failed to start (the cause is
            chained), or did not start within ``timeout`` seconds.
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("ServerThread.start() was already called")
            self._thread = threading.Thread(
                target=self._main, name="hiveloop-async-server", daemon=True
            )
            self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the local server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"the local server failed to start: {self._error}") from (
                self._error
            )
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._server = loop.run_until_complete(
                    start_server(
                        host=self._host,
                        port=self._port,
                        db=self._db,
                        api_keys=self._api_keys,
                        rate_limit=self._rate_limit,
                    )
                )
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def stop(self) -> None:
        """Shut the server down and join its thread; idempotent, blocks until done."""
        with self._lock:
            if self._stopped or self._thread is None:
                self._stopped = True
                return
            self._stopped = True
        loop = self._loop
        if loop is not None and self._server is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the loop is already closed
                pass
        self._thread.join()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def _running(self) -> LocalServer:
        if self._server is None:
            raise RuntimeError("the server is not running; call start() first")
        return self._server

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return self._running.url

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._running.port

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._running.host

    @property
    def store(self) -> Store:
        """The event store (use its ``*_sync`` methods from this thread)."""
        return self._running.store

    @property
    def requests(self) -> collections.Counter[int]:
        """A snapshot of ``POST /v1/ingest`` answers by status code; never blocks."""
        return self._running.requests

    def events(
        self,
        *,
        event_type: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events in insertion order, optionally filtered; blocks for the answer."""
        return self._running.store.events_sync(
            event_type=event_type, task_id=task_id, agent_id=agent_id
        )

    def event_count(self) -> int:
        """The exact number of stored events; blocks until the store answers."""
        return self._running.store.event_count_sync()

    def wait_for_events(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` events are stored; False after ``timeout`` seconds."""
        return self._running.store.wait_for_count_sync(n, timeout)

    def clear(self) -> None:
        """Delete stored events and agents and reset the request counts; blocks."""
        server = self._running
        server.store.clear_sync()
        server.app[COUNTER_KEY].clear()
