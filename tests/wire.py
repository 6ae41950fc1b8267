"""What the wire-shape suites share: id and timestamp patterns, normalising, fixtures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from hiveloop_async import Agent, HiveBoard, Task
from hiveloop_async.testing import EventCapture, capture_events

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MAX_PAYLOAD = 32_768

SEVERITY_DEFAULTS = {
    "agent_registered": "info",
    "heartbeat": "debug",
    "task_started": "info",
    "task_completed": "info",
    "task_failed": "error",
    "action_started": "info",
    "action_completed": "info",
    "action_failed": "error",
    "retry_started": "warn",
    "escalated": "warn",
    "approval_requested": "info",
    "approval_received": "info",
    "custom": "info",
}


def norm(ev: dict[str, Any]) -> dict[str, Any]:
    """Check the format of the random fields, then replace them with placeholders."""
    out = dict(ev)
    assert UUID4.match(out.pop("event_id")), ev
    assert TIMESTAMP.match(out.pop("timestamp")), ev
    for key in ("task_run_id", "action_id", "parent_action_id"):
        if key in out:
            assert UUID4.match(out[key]), (key, ev)
            out[key] = "<uuid>"
    assert all(value is not None for value in out.values()), ev
    return out


def only(cap: EventCapture) -> dict[str, Any]:
    """The single captured event, normalised."""
    (ev,) = cap.events
    return norm(ev)


@pytest.fixture
def hb() -> Iterator[HiveBoard]:
    client = HiveBoard(api_key="hb_test_x", enabled=False, environment="staging", group="g1")
    yield client
    client.shutdown(timeout=0)


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("wire-agent", type="sales", version="1.0")


@pytest.fixture
def cap(agent: Agent) -> Iterator[EventCapture]:
    with capture_events() as captured:
        yield captured


@pytest.fixture
def task(agent: Agent) -> Iterator[Task]:
    with agent.task("t1", project="proj", type="lead", correlation_id="c1") as t:
        yield t


TASK_FIELDS = {
    "task_id": "t1",
    "project_id": "proj",
    "task_type": "lead",
    "task_run_id": "<uuid>",
    "correlation_id": "c1",
}
