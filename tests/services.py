"""Real servers for the services integrations' tests: uvicorn in a thread, aiohttp.web in-loop.

Both bind 127.0.0.1 on a free port. Reading what a service recorded goes through the local
HiveBoard-compatible server (``ServerThread``) the service's client delivers to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from aiohttp import web

from hiveloop_async._server import ServerThread

Event = dict[str, Any]


class Uvicorn:
    """An ASGI app served by uvicorn on its own thread and loop (lifespan on)."""

    def __init__(self, app: Any, *, graceful: int | None = None) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            log_level="critical",
            lifespan="on",
            timeout_graceful_shutdown=graceful,
        )
        self.server = uvicorn.Server(config)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)  # allowed-sleep: polling for the server thread's start flag
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self._sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def __enter__(self) -> Uvicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def aiohttp_server(
    app: web.Application, *, shutdown_timeout: float = 60.0
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 in the running loop; yields its base URL. Leaving waits up
    to ``shutdown_timeout`` for running handlers, then cancels them."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def wait_until(ready: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Block until ``ready()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened")
        time.sleep(0.01)  # allowed-sleep: polling a condition


async def await_until(
    ready: Callable[[], bool], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Wait until ``ready()`` (checked off the loop when it blocks); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(ready):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened")
        await asyncio.sleep(0.01)


def events_by_task(server: ServerThread, agent_id: str | None = None) -> dict[str, list[Event]]:
    """The stored events grouped by task id (events without a task left out)."""
    grouped: dict[str, list[Event]] = {}
    for ev in server.events(agent_id=agent_id):
        if ev["task_id"] is not None:
            grouped.setdefault(ev["task_id"], []).append(ev)
    return grouped


def closed_tasks(server: ServerThread, agent_id: str | None = None) -> dict[str, Event]:
    """Task id → its closing event (``task_completed`` or ``task_failed``)."""
    return {
        ev["task_id"]: ev
        for ev in server.events(agent_id=agent_id)
        if ev["event_type"] in ("task_completed", "task_failed")
    }


def started(events: list[Event]) -> Event:
    """The ``task_started`` event among ``events``."""
    (ev,) = [e for e in events if e["event_type"] == "task_started"]
    return ev


def closing(events: list[Event]) -> Event:
    """The task's closing event among ``events``."""
    (ev,) = [e for e in events if e["event_type"] in ("task_completed", "task_failed")]
    return ev


def action_tree(events: list[Event]) -> list[tuple[str, str | None]]:
    """(action name, parent action name) for each started action, in order."""
    names = {
        e["action_id"]: e["payload"]["action_name"]
        for e in events
        if e["event_type"] == "action_started"
    }
    return [
        (e["payload"]["action_name"], names.get(e["parent_action_id"]))
        for e in events
        if e["event_type"] == "action_started"
    ]


@contextlib.contextmanager
def local_server() -> Iterator[ServerThread]:
    """A local HiveBoard-compatible server with an in-memory store."""
    with ServerThread(memory=True) as srv:
        yield srv
