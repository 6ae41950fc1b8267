"""Shared fixtures: asyncio as anyio's backend, a clean SDK state, and no swallowed errors."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

import hiveloop_async
from hiveloop_async import Agent, HiveBoard, _api, _client, _internal, _queue
from hiveloop_async._context import current_scope
from hiveloop_async.testing import EventCapture, capture_events

# A run started in the background of a non-interactive shell inherits SIGINT ignored, and so
# would every subprocess a test interrupts with Ctrl-C (the tail, the demo): they would never
# see it. A handler, unlike SIG_IGN, is reset to the default in an exec'd child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def hb() -> Iterator[HiveBoard]:
    """A client that records but never sends (override it for other settings)."""
    client = HiveBoard(api_key="hb_test_x", enabled=False)
    yield client
    client.shutdown(timeout=0)


@pytest.fixture
def cap(agent: Agent) -> Iterator[EventCapture]:
    """Captures every event recorded during the test (the test module defines ``agent``)."""
    with capture_events() as captured:
        yield captured


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_sdk_state(request: pytest.FixtureRequest) -> Iterator[list[BaseException]]:
    """Reset module state between tests and fail a test whose SDK swallowed an error.

    Tests that exercise the swallowing itself opt out with ``@pytest.mark.allows_internal_errors``.
    """
    swallowed: list[BaseException] = []
    _internal.error_hook = lambda exc, where: swallowed.append(exc)
    token = current_scope.set(None)
    yield swallowed
    current_scope.reset(token)
    _internal.error_hook = None
    _queue.clear_taps()
    if _api._instance is not None:
        hiveloop_async.reset()
    for client in list(_client._clients):
        if not client.closed:
            client.shutdown(timeout=1.0)
    if swallowed and request.node.get_closest_marker("allows_internal_errors") is None:
        pytest.fail(f"the SDK swallowed internal errors: {swallowed!r}")
