"""The sender's resolver: aiohttp's threaded lookup, and the same once the thread pool refuses.

At interpreter exit ``concurrent.futures`` refuses new work; a loop whose default executor
was shut down refuses it the same way, which lets these tests run in process.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
import pytest

from hiveloop_async._resolve import ExitSafeResolver

T = TypeVar("T")


def on_refusing_loop(make: Any) -> Any:
    """Run the coroutine ``make()`` on a fresh loop whose default executor refuses work."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(loop.shutdown_default_executor())
        return loop.run_until_complete(make())
    finally:
        loop.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def threaded(host: str, port: int) -> Any:
    return await aiohttp.ThreadedResolver().resolve(host, port)


async def exit_safe(host: str, port: int) -> Any:
    return await ExitSafeResolver().resolve(host, port)


def test_aiohttps_resolver_refuses_when_the_thread_pool_does() -> None:
    """The premise: aiohttp's ThreadedResolver raises RuntimeError on such a loop."""
    with pytest.raises(RuntimeError):
        on_refusing_loop(lambda: threaded("localhost", 80))


@pytest.mark.parametrize("threads", [True, False], ids=["own-thread", "no-thread"])
def test_resolves_like_aiohttp_when_the_thread_pool_refuses(
    monkeypatch: pytest.MonkeyPatch, threads: bool
) -> None:
    """Without the pool, in a thread of its own or (no thread can start) in the loop's
    thread, the result is what aiohttp's ThreadedResolver returns with the pool."""
    expected = run(threaded("localhost", 8080))
    assert expected and all(r["host"] in ("127.0.0.1", "::1") for r in expected)
    assert run(exit_safe("localhost", 8080)) == expected  # the normal path: aiohttp's
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        if not threads:
            raise RuntimeError("can't create new thread at interpreter shutdown")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    got = on_refusing_loop(lambda: exit_safe("localhost", 8080))
    assert got == expected
    assert started == ["hiveloop_async.resolve"]


def test_a_name_that_does_not_resolve_raises_oserror_as_aiohttps_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiohttp turns an OSError from the resolver into ClientConnectorError (a network
    error the sender retries and counts); the fallback raises the same gaierror."""

    def unknown(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(socket.gaierror):
        run(threaded("nowhere.localhost", 80))
    with pytest.raises(socket.gaierror):
        on_refusing_loop(lambda: exit_safe("nowhere.localhost", 80))


def test_a_hung_lookup_in_its_own_thread_can_be_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup in its own thread is awaited, so the sender's deadlines still apply."""
    release = threading.Event()
    entered = threading.Event()

    def hang(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hang)

    async def bounded() -> None:
        await asyncio.wait_for(exit_safe("localhost", 80), 0.2)

    try:
        with pytest.raises(asyncio.TimeoutError):
            on_refusing_loop(bounded)
        assert entered.is_set()
    finally:
        release.set()
