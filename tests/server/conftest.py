"""Fixtures for the local server tests: real servers on 127.0.0.1 and an HTTP client.

Every test talks to a real :func:`start_server` / :class:`ServerThread` over TCP; nothing is
mocked. Waiting is always a bounded poll on a condition, never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from hiveloop_async._server import LocalServer, ServerThread, start_server


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    """A local server with an in-memory database on the test's event loop."""
    async with await start_server() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session (no default headers)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def server_thread() -> Iterator[ServerThread]:
    """A local server on its own thread, for synchronous tests."""
    with ServerThread(memory=True) as srv:
        yield srv
