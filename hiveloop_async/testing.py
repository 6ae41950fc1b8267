"""Helpers for testing your own instrumentation, without a server.

``capture_events()`` collects what the SDK records, as the exact dicts that would go on the
wire (after the same encoding the sender does), while its block is active::

    from hiveloop_async.testing import capture_events

    def test_tool_is_tracked():
        with capture_events() as captured:
            with agent.track_context("crm_search") as ctx:
                ctx.set_payload({"found": True})
        assert [e["event_type"] for e in captured.events] == [
            "action_started", "action_completed"]

It works with ``async with`` too, and as the pytest fixture ``hiveloop_events`` (installed
with the package as a pytest plugin). Captured events are not sent unless ``send=True``.
Reading ``events`` may happen from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from ._queue import add_tap, remove_tap
from ._serialize import RecordEncoder, encode_envelope

if TYPE_CHECKING:
    from ._agent import Agent
    from ._client import HiveBoard

__all__ = ["EventCapture", "capture_events"]


class EventCapture:
    """Collects recorded events while active. Create it with :func:`capture_events`."""

    def __init__(self, client: HiveBoard | None = None, *, send: bool = False) -> None:
        self.client = client
        self.send = send
        self._records: list[tuple[bool, Any]] = []
        self._encoded: list[tuple[Agent, dict[str, Any]]] = []
        self._encoder = RecordEncoder()
        self._lock = threading.Lock()

    def offer(self, owner: object, rec: Any) -> bool:
        """The queue's tap (see ``hiveloop_async._queue.add_tap``): keep a recorded record.

        A scope or task is offered open (its opening event) and closed (its closing one).
        Returns True (keep it from the queue) unless ``send=True``.
        """
        if self.client is not None and owner is not self.client:
            return False
        self._records.append((getattr(rec, "closed", False), rec))
        return not self.send

    def _encode_new(self) -> list[tuple[Agent, dict[str, Any]]]:
        with self._lock:
            while len(self._encoded) < len(self._records):
                ended, rec = self._records[len(self._encoded)]
                out = self._encoder.encode_phase(rec, ended)
                if out is None:
                    self._records.pop(len(self._encoded))
                    continue
                agent, data = out
                self._encoded.append((agent, orjson.loads(data)))
            return list(self._encoded)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every captured event, in recording order, as the wire dict the server would get."""
        return [ev for _, ev in self._encode_new()]

    def events_of(self, agent_id: str) -> list[dict[str, Any]]:
        """The captured events of one agent (the agent is in the envelope, not the event)."""
        return [ev for agent, ev in self._encode_new() if agent.agent_id == agent_id]

    def of_type(self, *event_types: str) -> list[dict[str, Any]]:
        """The captured events whose ``event_type`` is one of ``event_types``."""
        return [ev for ev in self.events if ev["event_type"] in event_types]

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        """The envelope that would carry ``event`` (its agent's), as sent on the wire."""
        for agent, ev in self._encode_new():
            if ev is event or ev["event_id"] == event.get("event_id"):
                envelope: dict[str, Any] = orjson.loads(encode_envelope(agent))
                return envelope
        raise KeyError("event not captured here")

    def clear(self) -> None:
        """Forget everything captured so far."""
        with self._lock:
            self._records.clear()
            self._encoded.clear()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    # -- activation ------------------------------------------------------------------------

    def start(self) -> EventCapture:
        """Start capturing (what ``with`` does)."""
        add_tap(self)
        return self

    def stop(self) -> None:
        """Stop capturing; the events stay readable."""
        remove_tap(self)

    def __enter__(self) -> EventCapture:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EventCapture:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def capture_events(client: HiveBoard | None = None, *, send: bool = False) -> EventCapture:
    """Capture the events recorded by ``client`` (default: every client) while active.

    Use as ``with``, ``async with``, or call ``start()``/``stop()``. With ``send=False``
    (the default) captured events do not reach the queue, so no server is needed.
    Never blocks.
    """
    return EventCapture(client, send=send)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def hiveloop_events() -> Iterator[EventCapture]:
        """pytest fixture: an active :func:`capture_events` for the test's duration."""
        with capture_events() as captured:
            yield captured
