"""Shared fixtures: asyncio as anyio's backend, a clean SDK state, and no swallowed errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hiveloop_async
from hiveloop_async import _client, _internal, _module
from hiveloop_async._context import current_scope


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
    _client._captures.clear()
    if _module._instance is not None:
        hiveloop_async.reset()
    for client in list(_client._clients):
        if not client.closed:
            client.shutdown(timeout=1.0)
    if swallowed and request.node.get_closest_marker("allows_internal_errors") is None:
        pytest.fail(f"the SDK swallowed internal errors: {swallowed!r}")
