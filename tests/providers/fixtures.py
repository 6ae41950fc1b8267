"""Pytest helpers shared by the provider integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hiveloop_async.testing import EventCapture


def llm_calls(cap: EventCapture) -> list[dict[str, Any]]:
    """The captured ``llm_call`` events."""
    return [e for e in cap.events if (e.get("payload") or {}).get("kind") == "llm_call"]


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``cond()`` holds (polling), or fail."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)
