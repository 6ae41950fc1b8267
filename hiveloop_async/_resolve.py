"""Host name lookups that still work while the interpreter shuts down.

aiohttp's default resolver (``ThreadedResolver``) runs ``socket.getaddrinfo`` in the event
loop's default thread pool. Once the interpreter shuts down, which is when the SDK's ``atexit``
hook drains what is left, ``concurrent.futures`` refuses new work with a ``RuntimeError`` on
every Python version, so an endpoint given as a host name could not be reached at exit.

:class:`ExitSafeResolver` takes aiohttp's threaded path and, when the thread pool refuses,
does the same lookup itself: in a daemon thread of its own, awaited on the loop so that every
deadline of the sender still cuts it short; or, when no thread can start either (CPython 3.12
at exit), blocking in the loop's thread, which only the system resolver's own timeouts bound
(``timeout``/``attempts`` in ``/etc/resolv.conf``). It is passed to the connector explicitly,
so the SDK resolves the same way (the system's ``getaddrinfo``) whether ``aiodns`` is
installed or not.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult

_T = TypeVar("_T")

# The flags aiohttp's ThreadedResolver passes and returns.
_AI_ADDRCONFIG = socket.AI_ADDRCONFIG
if hasattr(socket, "AI_MASK"):
    _AI_ADDRCONFIG &= socket.AI_MASK
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NAME_FLAGS = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


class ExitSafeResolver(aiohttp.ThreadedResolver):
    """aiohttp's ``ThreadedResolver``, which also resolves when its thread pool refuses work.

    Create it on the loop it resolves for. See the module docstring.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            return await super().resolve(host, port, family)
        except RuntimeError:
            # "cannot schedule new futures after interpreter shutdown", or the pool could not
            # start its thread: the thread pool cannot run the lookup, so do it here.
            pass
        try:
            infos = await _without_pool(_getaddrinfo, host, port, family, _AI_ADDRCONFIG)
        except socket.gaierror:
            if not (sys.platform == "win32" and host.rstrip(".").lower() == "localhost"):
                raise
            infos = await _without_pool(_getaddrinfo, host, port, family, 0)
        return _results(host, infos)


def _getaddrinfo(host: str, port: int, family: int, flags: int) -> list[Any]:
    return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, flags)


def _results(host: str, infos: list[Any]) -> list[ResolveResult]:
    """``getaddrinfo`` results shaped as aiohttp's ``ThreadedResolver`` shapes them."""
    hosts: list[ResolveResult] = []
    for family, _, proto, _, address in infos:
        if family == socket.AF_INET6:
            if len(address) < 3:  # IPv6 not supported by this build or host
                continue
            if address[3]:  # a link-local address needs its scope: numeric, no lookup
                resolved, service = socket.getnameinfo(address, _NAME_FLAGS)
                port = int(service)
            else:
                resolved, port = address[:2]
        elif family == socket.AF_INET:
            resolved, port = address
        else:
            continue
        hosts.append(
            {
                "hostname": host,
                "host": resolved,
                "port": port,
                "family": family,
                "proto": proto,
                "flags": _NUMERIC_FLAGS,
            }
        )
    return hosts


async def _without_pool(fn: Callable[..., _T], *args: Any) -> _T:
    """Run the blocking ``fn(*args)`` in a new daemon thread and await its result.

    The await can be cancelled (the thread then finishes on its own, unheard). When no
    thread can start, ``fn`` runs here, blocking the loop until it returns.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if done.done():
            return  # the awaiting task was cancelled
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    thread = threading.Thread(target=work, name="hiveloop_async.resolve", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown" (3.12)
        return fn(*args)
    return await done
