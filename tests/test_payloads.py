"""Unit tests of the payload builders in ``_payloads``: exact dicts, key order, edge cases.

Pure functions, so no client, loop or server; the wire shapes through a real client are in
``test_wire_shapes.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from hiveloop_async import _payloads as p


def keys(d: dict[str, Any]) -> list[str]:
    return list(d)


def test_summary_payload_keeps_only_given_values_in_order() -> None:
    """``data`` holds the non-None keywords in call order; with none, there is no ``data``."""
    assert p.summary_payload("s") == {"summary": "s"}
    assert p.summary_payload("s", a=None, b=None) == {"summary": "s"}
    out = p.summary_payload("s", b=2, a=None, c=0, d=False)
    assert out == {"summary": "s", "data": {"b": 2, "c": 0, "d": False}}
    assert keys(out["data"]) == ["b", "c", "d"]


def test_agent_registered_payload() -> None:
    """Every field is sent, None included."""
    assert p.agent_registered_payload("a1", "sales", None, "custom", 300) == {
        "summary": "Agent a1 registered",
        "data": {"type": "sales", "version": None, "framework": "custom", "stuck_threshold": 300},
    }


@pytest.mark.parametrize(
    ("tokens_in", "tokens_out", "cost", "summary"),
    [
        (10, 5, 0.001, "chat → gpt-4o (10 in / 5 out, $0.001)"),
        (10, 5, None, "chat → gpt-4o (10 in / 5 out)"),
        (None, None, 0.5, "chat → gpt-4o ($0.5)"),
        (10, None, None, "chat → gpt-4o"),
        (None, 5, 0.0, "chat → gpt-4o ($0.0)"),
        (None, None, None, "chat → gpt-4o"),
        (0, 0, None, "chat → gpt-4o (0 in / 0 out)"),
    ],
)
def test_llm_summary_formats(
    tokens_in: int | None, tokens_out: int | None, cost: float | None, summary: str
) -> None:
    """Tokens only with both counts; the cost whenever given, zero included."""
    assert p.llm_summary("chat", "gpt-4o", tokens_in, tokens_out, cost) == summary


def test_llm_payload_minimal_and_full() -> None:
    """Missing fields are left out of ``data``; given ones keep hiveloop's order."""
    assert p.llm_payload("chat", "m") == {
        "kind": "llm_call",
        "summary": "chat → m",
        "data": {"name": "chat", "model": "m"},
        "tags": ["llm"],
    }
    full = p.llm_payload("chat", "m", 1, 2, 0.5, 30, "hi", "yo", {"k": "v"})
    assert full["data"] == {
        "name": "chat",
        "model": "m",
        "tokens_in": 1,
        "tokens_out": 2,
        "cost": 0.5,
        "duration_ms": 30,
        "prompt_preview": "hi",
        "response_preview": "yo",
        "metadata": {"k": "v"},
    }
    assert keys(full["data"]) == [
        "name",
        "model",
        "tokens_in",
        "tokens_out",
        "cost",
        "duration_ms",
        "prompt_preview",
        "response_preview",
        "metadata",
    ]
    assert keys(full) == ["kind", "summary", "data", "tags"]
    assert full["summary"] == "chat → m (1 in / 2 out, $0.5)"
    only_out = p.llm_payload("chat", "m", tokens_out=7)
    assert only_out["data"] == {"name": "chat", "model": "m", "tokens_out": 7}
    assert only_out["summary"] == "chat → m"


def test_queue_summary() -> None:
    assert p.queue_summary(3, None) == "Queue: 3 items"
    assert p.queue_summary(3, 7) == "Queue: 3 items, oldest 7s"
    assert p.queue_summary(0, 0) == "Queue: 0 items, oldest 0s"


def test_queue_snapshot_data_and_payload() -> None:
    """``depth`` is always there; the rest only when given; ``data`` is passed through as is."""
    assert p.queue_snapshot_data(0) == {"depth": 0}
    data = p.queue_snapshot_data(2, 1.5, [{"id": 1}], {"id": 0})
    assert data == {
        "depth": 2,
        "oldest_age_seconds": 1.5,
        "items": [{"id": 1}],
        "processing": {"id": 0},
    }
    payload = p.queue_snapshot_payload(data)
    assert payload == {
        "kind": "queue_snapshot",
        "summary": "Queue: 2 items, oldest 1.5s",
        "data": data,
        "tags": ["queue"],
    }
    assert payload["data"] is data


def test_queue_snapshot_payload_from_a_provider_without_depth() -> None:
    """A ``queue_provider`` dict without ``depth`` reads as 0 in the summary, sent unchanged."""
    snap: dict[str, Any] = {"items": []}
    assert p.queue_snapshot_payload(snap) == {
        "kind": "queue_snapshot",
        "summary": "Queue: 0 items",
        "data": {"items": []},
        "tags": ["queue"],
    }


def test_todo_payload() -> None:
    assert p.todo_payload("t1", "created", "Call back") == {
        "kind": "todo",
        "summary": "Call back",
        "data": {"todo_id": "t1", "action": "created"},
        "tags": ["todo", "created"],
    }
    full = p.todo_payload("t1", "completed", "s", "high", "crm", {"x": 1}, "2026-01-01")
    assert full["data"] == {
        "todo_id": "t1",
        "action": "completed",
        "priority": "high",
        "source": "crm",
        "context": {"x": 1},
        "due_by": "2026-01-01",
    }
    assert full["tags"] == ["todo", "completed"]


def test_scheduled_summary_and_payload() -> None:
    """The count, then the earliest ``next_run``'s time of day (or the whole value)."""
    items: list[dict[str, Any]] = [
        {"name": "a", "next_run": "2026-01-02T10:00:00Z"},
        {"name": "b", "next_run": "2026-01-02T09:00:00Z"},
        {"name": "c"},
    ]
    assert p.scheduled_summary(items) == "3 scheduled items, next at 09:00:00Z"
    assert p.scheduled_summary([]) == "0 scheduled items"
    assert p.scheduled_summary([{"next_run": "tomorrow"}]) == "1 scheduled items, next at tomorrow"
    assert p.scheduled_summary([{"next_run": ""}, {"next_run": None}]) == "2 scheduled items"
    assert p.scheduled_payload(items, "S") == {
        "kind": "scheduled",
        "summary": "S",
        "data": {"items": items},
        "tags": ["scheduled"],
    }
    assert p.SCHEDULED_FALLBACK_SUMMARY == "scheduled items"


def test_scheduled_summary_raises_on_malformed_items() -> None:
    """Malformed items raise; ``Agent.scheduled`` then sends the fallback summary."""
    bad: Any = 5
    with pytest.raises(TypeError):
        p.scheduled_summary(bad)


def test_issue_payloads() -> None:
    assert p.issue_reported_payload("CRM down", "high") == {
        "kind": "issue",
        "summary": "CRM down",
        "data": {"severity": "high", "action": "reported"},
        "tags": ["issue"],
    }
    full = p.issue_reported_payload("CRM down", "high", "crm-1", "api", {"code": 503}, 4)
    assert full["data"] == {
        "severity": "high",
        "action": "reported",
        "issue_id": "crm-1",
        "category": "api",
        "context": {"code": 503},
        "occurrence_count": 4,
    }
    assert full["tags"] == ["issue", "api"]
    assert p.issue_reported_payload("s", "low", category="")["tags"] == ["issue"]
    assert p.issue_resolved_payload("back") == {
        "kind": "issue",
        "summary": "back",
        "data": {"severity": "low", "action": "resolved"},
        "tags": ["issue", "resolved"],
    }
    assert p.issue_resolved_payload("back", "crm-1")["data"] == {
        "severity": "low",
        "action": "resolved",
        "issue_id": "crm-1",
    }


def test_plan_payload() -> None:
    assert p.plan_payload("Ship it", ["build", "test"], 2) == {
        "kind": "plan_created",
        "summary": "Ship it",
        "data": {
            "goal": "Ship it",
            "steps": [{"index": 0, "description": "build"}, {"index": 1, "description": "test"}],
            "revision": 2,
        },
        "tags": ["plan", "created"],
    }
    assert p.plan_payload("g", [])["data"] == {"goal": "g", "steps": [], "revision": 0}


def test_plan_step_payload() -> None:
    """``total_steps`` and ``plan_revision`` always sent (None and 0 too), in wire order."""
    out = p.plan_step_payload(1, "completed", "built", None, 0)
    assert out == {
        "kind": "plan_step",
        "summary": "Step 1 completed: built",
        "data": {"step_index": 1, "total_steps": None, "action": "completed", "plan_revision": 0},
        "tags": ["plan", "step_completed"],
    }
    full = p.plan_step_payload(0, "started", "s", 3, 1, turns=2, tokens=90)
    assert keys(full["data"]) == [
        "step_index",
        "total_steps",
        "action",
        "turns",
        "tokens",
        "plan_revision",
    ]
    assert full["data"]["turns"] == 2 and full["data"]["tokens"] == 90


def test_escalated_payload_summaries() -> None:
    assert p.escalated_payload("help") == {"summary": "help"}
    assert p.escalated_payload(None) == {"summary": "Escalated"}
    assert p.escalated_payload(None, assigned_to="ops") == {
        "summary": "Escalated to ops",
        "data": {"assigned_to": "ops"},
    }
    assert p.escalated_payload(None, "ops", "too big") == {
        "summary": "too big",
        "data": {"assigned_to": "ops", "reason": "too big"},
    }


def test_approval_payloads() -> None:
    assert p.approval_requested_payload(None) == {"summary": "Approval requested"}
    assert p.approval_requested_payload(None, approver="lead") == {
        "summary": "Approval requested from lead",
        "data": {"approver": "lead"},
    }
    assert p.approval_requested_payload("ok?", "lead", "refund")["summary"] == "ok?"
    assert p.approval_requested_payload(None, reason="refund")["summary"] == "refund"
    assert p.approval_received_payload(None) == {
        "summary": "Approval approved",
        "data": {"decision": "approved"},
    }
    assert p.approval_received_payload(None, "lead", "rejected") == {
        "summary": "Approval rejected by lead",
        "data": {"decision": "rejected", "approved_by": "lead"},
    }


def test_retry_started_payload() -> None:
    assert p.retry_started_payload(None) == {"summary": "Retry"}
    assert p.retry_started_payload(None, attempt=0) == {
        "summary": "Retry attempt 0",
        "data": {"attempt": 0},
    }
    out = p.retry_started_payload(None, 2, "timeout", 1.5)
    assert out == {
        "summary": "timeout",
        "data": {"attempt": 2, "backoff_seconds": 1.5, "reason": "timeout"},
    }
    assert keys(out["data"]) == ["attempt", "backoff_seconds", "reason"]


def test_tool_payload_cuts_long_values() -> None:
    """Long args (by ``str()``) and results are cut; None fields are left out."""
    assert p.tool_payload() == {"success": True}
    out = p.tool_payload(
        args={"q": "x" * 10, "n": 5},
        result="r" * 10,
        success=False,
        error="boom",
        duration_ms=3,
        tool_category="search",
        http_status=500,
        result_size_bytes=10,
        args_max_len=4,
        result_max_len=3,
    )
    assert out == {
        "success": False,
        "args": {"q": "xxxx", "n": 5},
        "result": "rrr",
        "error": "boom",
        "duration_ms": 3,
        "tool_category": "search",
        "http_status": 500,
        "result_size_bytes": 10,
    }
