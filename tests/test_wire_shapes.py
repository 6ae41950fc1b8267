"""Every public recording method produces exactly the wire event of the contract (§1, §2)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import platform
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hiveloop_async
from hiveloop_async import Agent, HiveBoard, Task, tool_payload
from hiveloop_async.contrib.log_handler import HiveBoardLogHandler
from hiveloop_async.testing import EventCapture, capture_events
from tests.wire import (
    SEVERITY_DEFAULTS,
    TASK_FIELDS,
    norm,
    only,
)
from tests.wire import agent as agent
from tests.wire import cap as cap
from tests.wire import hb as hb
from tests.wire import task as task

# -- agent level -------------------------------------------------------------------------------


def test_agent_registered_and_envelope(hb: HiveBoard) -> None:
    """Registration records agent_registered; its envelope names the agent and the runtime."""
    with capture_events() as cap:
        agent = hb.agent("wire-agent", type="sales", version="1.0", stuck_threshold=120)
        again = hb.agent("wire-agent", type="support", version="2.0", framework="langchain")
        bare = hb.agent("bare-agent")
    assert again is agent
    assert agent.agent_type == "support"
    assert agent.version == "2.0"
    first, second = cap.events
    assert norm(first) == {
        "event_type": "agent_registered",
        "severity": "info",
        "payload": {
            "summary": "Agent wire-agent registered",
            "data": {
                "type": "sales",
                "version": "1.0",
                "framework": "custom",
                "stuck_threshold": 120,
            },
        },
    }
    assert norm(second)["payload"]["data"] == {
        "type": "general",
        "version": None,
        "framework": "custom",
        "stuck_threshold": 300,
    }
    runtime = f"python-{platform.python_version()}"
    assert re.match(r"^python-\d+\.\d+\.\d+", runtime)
    assert cap.envelope(first) == {
        "agent_id": "wire-agent",
        "agent_type": "support",
        "agent_version": "2.0",
        "framework": "langchain",
        "runtime": runtime,
        "sdk_version": hiveloop_async.SDK_VERSION,
        "environment": "staging",
        "group": "g1",
    }
    assert cap.envelope(second) == {
        "agent_id": "bare-agent",
        "agent_type": "general",
        "agent_version": None,
        "framework": "custom",
        "runtime": runtime,
        "sdk_version": hiveloop_async.SDK_VERSION,
        "environment": "staging",
        "group": "g1",
    }
    assert hb.get_agent("bare-agent") is bare
    assert hb.get_agent("nobody") is None


def test_envelope_defaults() -> None:
    """Without environment and group the envelope says production / default."""
    client = HiveBoard(api_key="hb_test_x", enabled=False)
    with capture_events() as cap:
        client.agent("defaults")
    env = cap.envelope(cap.events[0])
    assert env["environment"] == "production"
    assert env["group"] == "default"


@pytest.mark.parametrize("event_type", sorted(SEVERITY_DEFAULTS))
def test_agent_event_default_severity(event_type: str, agent: Agent, cap: EventCapture) -> None:
    """Agent.event sends the given type with the contract's default severity."""
    agent.event(event_type, {"summary": "x"})
    assert only(cap) == {
        "event_type": event_type,
        "severity": SEVERITY_DEFAULTS[event_type],
        "payload": {"summary": "x"},
    }


def test_agent_event_carries_no_task_fields(agent: Agent, task: Task, cap: EventCapture) -> None:
    """Agent.event inside a task and action carries neither task fields nor action_id."""
    with agent.track_context("busy"):
        agent.event(
            "custom", {"kind": "learning", "summary": "s"}, severity="warn", parent_event_id="pe-1"
        )
        agent.event("custom")
    first, second = cap.of_type("custom")
    assert norm(first) == {
        "event_type": "custom",
        "severity": "warn",
        "parent_event_id": "pe-1",
        "payload": {"kind": "learning", "summary": "s"},
    }
    assert norm(second) == {"event_type": "custom", "severity": "info"}


def test_invalid_severity_falls_back_to_default(agent: Agent, cap: EventCapture) -> None:
    """A severity HiveBoard does not know is replaced by the default."""
    agent.event("escalated", {"summary": "s"}, severity="fatal")
    assert only(cap)["severity"] == "warn"


@pytest.mark.parametrize(
    ("kwargs", "summary"),
    [
        (
            {"tokens_in": 10, "tokens_out": 5, "cost": 0.001},
            "reason → claude-x (10 in / 5 out, $0.001)",
        ),
        ({}, "reason → claude-x"),
        ({"tokens_in": 10, "cost": 0.5}, "reason → claude-x ($0.5)"),
        ({"tokens_out": 7}, "reason → claude-x"),
        ({"cost": 1e-05}, "reason → claude-x ($1e-05)"),
        ({"tokens_in": 3, "tokens_out": 4}, "reason → claude-x (3 in / 4 out)"),
    ],
)
def test_agent_llm_call_summaries(
    kwargs: dict[str, Any], summary: str, agent: Agent, cap: EventCapture
) -> None:
    """Agent.llm_call builds the LLM summary of §1.3 and only the given data keys."""
    agent.llm_call("reason", "claude-x", **kwargs)
    assert only(cap) == {
        "event_type": "custom",
        "severity": "info",
        "payload": {
            "kind": "llm_call",
            "summary": summary,
            "data": {"name": "reason", "model": "claude-x", **kwargs},
            "tags": ["llm"],
        },
    }


def test_agent_llm_call_all_fields_no_task(agent: Agent, task: Task, cap: EventCapture) -> None:
    """Agent.llm_call with every option has them all in data and no task fields or action."""
    with agent.track_context("thinking"):
        agent.llm_call(
            "plan",
            "claude-y",
            tokens_in=100,
            tokens_out=50,
            cost=0.25,
            duration_ms=1200,
            prompt_preview="p",
            response_preview="r",
            metadata={"temperature": 0.2},
        )
    (ev,) = cap.of_type("custom")
    assert norm(ev) == {
        "event_type": "custom",
        "severity": "info",
        "payload": {
            "kind": "llm_call",
            "summary": "plan → claude-y (100 in / 50 out, $0.25)",
            "data": {
                "name": "plan",
                "model": "claude-y",
                "tokens_in": 100,
                "tokens_out": 50,
                "cost": 0.25,
                "duration_ms": 1200,
                "prompt_preview": "p",
                "response_preview": "r",
                "metadata": {"temperature": 0.2},
            },
            "tags": ["llm"],
        },
    }


def test_queue_snapshot(agent: Agent, cap: EventCapture) -> None:
    """queue_snapshot sends kind queue_snapshot with severity debug."""
    agent.queue_snapshot(3, oldest_age_seconds=12.5, items=[{"id": "a"}], processing={"id": "b"})
    agent.queue_snapshot(0)
    full, empty = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "custom",
        "severity": "debug",
        "payload": {
            "kind": "queue_snapshot",
            "summary": "Queue: 3 items, oldest 12.5s",
            "data": {
                "depth": 3,
                "oldest_age_seconds": 12.5,
                "items": [{"id": "a"}],
                "processing": {"id": "b"},
            },
            "tags": ["queue"],
        },
    }
    assert empty == {
        "event_type": "custom",
        "severity": "debug",
        "payload": {
            "kind": "queue_snapshot",
            "summary": "Queue: 0 items",
            "data": {"depth": 0},
            "tags": ["queue"],
        },
    }


@pytest.mark.parametrize(("action", "severity"), [("created", "info"), ("failed", "warn")])
def test_todo(action: str, severity: str, agent: Agent, cap: EventCapture) -> None:
    """todo sends kind todo; a failed todo is a warning."""
    agent.todo(
        "td-1",
        action,
        "Follow up with Acme",
        priority="high",
        source="llm",
        context={"lead": 7},
        due_by="2026-12-01",
    )
    agent.todo("td-2", action, "Minimal")
    full, minimal = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "custom",
        "severity": severity,
        "payload": {
            "kind": "todo",
            "summary": "Follow up with Acme",
            "data": {
                "todo_id": "td-1",
                "action": action,
                "priority": "high",
                "source": "llm",
                "context": {"lead": 7},
                "due_by": "2026-12-01",
            },
            "tags": ["todo", action],
        },
    }
    assert minimal["payload"]["data"] == {"todo_id": "td-2", "action": action}


def test_scheduled(agent: Agent, cap: EventCapture) -> None:
    """scheduled names the count and the earliest next run's time of day."""
    items: list[dict[str, Any]] = [
        {"name": "digest", "next_run": "2026-11-24T10:00:00Z"},
        {"name": "sync", "next_run": "2026-11-24T09:00:00Z"},
        {"name": "paused", "next_run": None},
    ]
    agent.scheduled(items)
    agent.scheduled([])
    full, empty = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "custom",
        "severity": "info",
        "payload": {
            "kind": "scheduled",
            "summary": "3 scheduled items, next at 09:00:00Z",
            "data": {"items": items},
            "tags": ["scheduled"],
        },
    }
    assert empty["payload"]["summary"] == "0 scheduled items"
    assert empty["payload"]["data"] == {"items": []}


@pytest.mark.parametrize(
    ("level", "severity"),
    [("critical", "error"), ("high", "error"), ("medium", "warn"), ("low", "info")],
)
def test_report_issue(level: str, severity: str, agent: Agent, cap: EventCapture) -> None:
    """report_issue sends kind issue; the event severity follows the issue's severity."""
    agent.report_issue(
        "CRM unreachable",
        level,
        issue_id="crm-down",
        category="connectivity",
        context={"host": "crm"},
        occurrence_count=3,
    )
    agent.report_issue("Bare", level)
    full, bare = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "custom",
        "severity": severity,
        "payload": {
            "kind": "issue",
            "summary": "CRM unreachable",
            "data": {
                "severity": level,
                "action": "reported",
                "issue_id": "crm-down",
                "category": "connectivity",
                "context": {"host": "crm"},
                "occurrence_count": 3,
            },
            "tags": ["issue", "connectivity"],
        },
    }
    assert bare["payload"] == {
        "kind": "issue",
        "summary": "Bare",
        "data": {"severity": level, "action": "reported"},
        "tags": ["issue"],
    }


def test_resolve_issue(agent: Agent, cap: EventCapture) -> None:
    """resolve_issue sends kind issue, action resolved, severity low (event info)."""
    agent.resolve_issue("CRM back", issue_id="crm-down")
    agent.resolve_issue("All good")
    with_id, without = (norm(e) for e in cap.events)
    assert with_id == {
        "event_type": "custom",
        "severity": "info",
        "payload": {
            "kind": "issue",
            "summary": "CRM back",
            "data": {"severity": "low", "action": "resolved", "issue_id": "crm-down"},
            "tags": ["issue", "resolved"],
        },
    }
    assert without["payload"]["data"] == {"severity": "low", "action": "resolved"}


# -- tasks -------------------------------------------------------------------------------------


def test_task_with_block(agent: Agent, cap: EventCapture) -> None:
    """A task block records task_started and task_completed with every task field."""
    with agent.task("t1", project="proj", type="lead", correlation_id="c1") as t:
        pass
    started, completed = cap.events
    assert started["task_run_id"] == completed["task_run_id"] == t.task_run_id
    assert norm(started) == {
        "event_type": "task_started",
        "severity": "info",
        **TASK_FIELDS,
        "payload": {"summary": "Task t1 started"},
    }
    completed = norm(completed)
    assert type(completed.pop("duration_ms")) is int
    assert completed == {
        "event_type": "task_completed",
        "severity": "info",
        **TASK_FIELDS,
        "status": "success",
        "payload": {"summary": "Task t1 completed"},
    }


def test_task_minimal_fields_and_given_run_id(agent: Agent, cap: EventCapture) -> None:
    """Only non-None task fields are sent; a given task_run_id is kept verbatim."""
    with agent.task("bare"):
        pass
    with agent.task("run", task_run_id="run-1"):
        pass
    bare = norm(cap.events[0])
    assert bare == {
        "event_type": "task_started",
        "severity": "info",
        "task_id": "bare",
        "task_run_id": "<uuid>",
        "payload": {"summary": "Task bare started"},
    }
    assert cap.events[2]["task_run_id"] == "run-1"


@pytest.mark.parametrize("exc", [ValueError("bad lead"), asyncio.CancelledError("stop")])
def test_task_block_exception(exc: BaseException, agent: Agent, cap: EventCapture) -> None:
    """An exception in a task block records task_failed with its type and message."""
    with pytest.raises(type(exc)), agent.task("t-fail"):
        raise exc
    failed = norm(cap.events[-1])
    assert type(failed.pop("duration_ms")) is int
    payload: dict[str, Any] = {
        "summary": "Task t-fail failed",
        "exception_type": type(exc).__name__,
        "exception_message": str(exc),
    }
    if isinstance(exc, asyncio.CancelledError):
        payload["cancelled"] = True
    assert failed == {
        "event_type": "task_failed",
        "severity": "error",
        "task_id": "t-fail",
        "task_run_id": "<uuid>",
        "status": "failure",
        "payload": payload,
    }


def test_start_task_complete_status_verbatim(agent: Agent, cap: EventCapture) -> None:
    """complete(status=...) is sent verbatim; a truthy payload replaces set_payload's."""
    t = agent.start_task("t-partial", project="proj")
    assert hiveloop_async.current_task() is t
    t.set_payload({"from_set_payload": True})
    t.complete(status="partial", payload={"processed": 7})
    t.complete()
    t.fail(ValueError("late"))
    assert hiveloop_async.current_task() is None
    started, completed = cap.events
    assert norm(started)["payload"] == {"summary": "Task t-partial started"}
    completed = norm(completed)
    completed.pop("duration_ms")
    assert completed == {
        "event_type": "task_completed",
        "severity": "info",
        "task_id": "t-partial",
        "project_id": "proj",
        "task_run_id": "<uuid>",
        "status": "partial",
        "payload": {"summary": "Task t-partial completed", "processed": 7},
    }


def test_complete_with_failure_status_is_still_task_completed(
    agent: Agent, cap: EventCapture
) -> None:
    """``complete(status="failure")`` sends task_completed with that status (contract §1.4)."""
    agent.start_task("t-status").complete(status="failure")
    completed = cap.events[-1]
    assert completed["event_type"] == "task_completed"
    assert completed["status"] == "failure"


def test_task_payload_override_rules(agent: Agent, cap: EventCapture) -> None:
    """set_payload replaces, merges into the closing payload, and may override summary."""
    with agent.task("t-a") as a:
        a.set_payload({"first": 1})
        a.set_payload({"summary": "Qualified Acme", "score": 0.9})
    b = agent.start_task("t-b")
    b.set_payload({"kept": True})
    b.complete(payload={})
    c = agent.start_task("t-c")
    c.set_payload({"exception_message": "redacted", "extra": 1})
    c.fail(RuntimeError("secret detail"))
    d = agent.start_task("t-d")
    d.fail(payload={"reason": "gave up"})
    closing = [norm(e) for e in cap.of_type("task_completed", "task_failed")]
    assert [e["payload"] for e in closing] == [
        {"summary": "Qualified Acme", "score": 0.9},
        {"summary": "Task t-b completed", "kept": True},
        {
            "summary": "Task t-c failed",
            "exception_type": "RuntimeError",
            "exception_message": "redacted",
            "extra": 1,
        },
        {"summary": "Task t-d failed", "reason": "gave up"},
    ]
    assert [(e["event_type"], e["status"]) for e in closing] == [
        ("task_completed", "success"),
        ("task_completed", "success"),
        ("task_failed", "failure"),
        ("task_failed", "failure"),
    ]


def test_exit_after_complete_records_nothing_more(agent: Agent, cap: EventCapture) -> None:
    """Only the first complete/fail/exit of a task records a closing event."""
    with agent.task("t-once") as t:
        t.complete(status="early")
    assert [e["event_type"] for e in cap.events] == ["task_started", "task_completed"]
    assert cap.events[-1]["status"] == "early"


# -- task-scoped events ------------------------------------------------------------------------


def test_task_event_with_and_without_action(agent: Agent, task: Task, cap: EventCapture) -> None:
    """Task.event carries the task fields, parent_event_id, and the current action's id."""
    task.event("custom", {"kind": "memory_op", "summary": "saved"}, parent_event_id="pe-9")
    with agent.track_context("acting") as ctx:
        task.event("custom", {"summary": "inside"}, severity="debug")
    outside, inside = cap.of_type("custom")
    assert norm(outside) == {
        "event_type": "custom",
        "severity": "info",
        **TASK_FIELDS,
        "parent_event_id": "pe-9",
        "payload": {"kind": "memory_op", "summary": "saved"},
    }
    assert inside["action_id"] == ctx.action_id_str
    assert norm(inside) == {
        "event_type": "custom",
        "severity": "debug",
        **TASK_FIELDS,
        "action_id": "<uuid>",
        "payload": {"summary": "inside"},
    }


def test_task_llm_call_attaches_to_action(agent: Agent, task: Task, cap: EventCapture) -> None:
    """Task.llm_call carries the task fields and, inside an action, its action_id."""
    task.llm_call("triage", "claude-x", tokens_in=1, tokens_out=2)
    with agent.track_context("reasoning") as ctx:
        task.llm_call("deep", "claude-y", cost=0.5)
    outside, inside = cap.of_type("custom")
    assert norm(outside) == {
        "event_type": "custom",
        "severity": "info",
        **TASK_FIELDS,
        "payload": {
            "kind": "llm_call",
            "summary": "triage → claude-x (1 in / 2 out)",
            "data": {"name": "triage", "model": "claude-x", "tokens_in": 1, "tokens_out": 2},
            "tags": ["llm"],
        },
    }
    assert inside["action_id"] == ctx.action_id_str
    assert inside["payload"]["summary"] == "deep → claude-y ($0.5)"


def test_plan_and_plan_steps(agent: Agent, task: Task, cap: EventCapture) -> None:
    """plan records plan_created; plan_step takes total_steps and revision from the last plan."""
    task.plan_step(0, "started", "before any plan")
    task.plan("Qualify Acme", ["search", "score", "email"])
    task.plan_step(0, "completed", "searched", turns=2, tokens=300)
    task.plan("Qualify Acme v2", ["search", "email"], revision=2)
    task.plan_step(1, "failed", "email bounced")
    task.plan_step(1, "started", "retrying", total_steps=5, plan_revision=9)
    before, plan, step0, plan2, failed, explicit = (norm(e) for e in cap.events)
    assert before == {
        "event_type": "custom",
        "severity": "info",
        **TASK_FIELDS,
        "payload": {
            "kind": "plan_step",
            "summary": "Step 0 started: before any plan",
            "data": {"step_index": 0, "total_steps": None, "action": "started", "plan_revision": 0},
            "tags": ["plan", "step_started"],
        },
    }
    assert plan == {
        "event_type": "custom",
        "severity": "info",
        **TASK_FIELDS,
        "payload": {
            "kind": "plan_created",
            "summary": "Qualify Acme",
            "data": {
                "goal": "Qualify Acme",
                "steps": [
                    {"index": 0, "description": "search"},
                    {"index": 1, "description": "score"},
                    {"index": 2, "description": "email"},
                ],
                "revision": 0,
            },
            "tags": ["plan", "created"],
        },
    }
    assert step0["payload"] == {
        "kind": "plan_step",
        "summary": "Step 0 completed: searched",
        "data": {
            "step_index": 0,
            "total_steps": 3,
            "action": "completed",
            "turns": 2,
            "tokens": 300,
            "plan_revision": 0,
        },
        "tags": ["plan", "step_completed"],
    }
    assert plan2["payload"]["data"]["revision"] == 2
    assert failed["severity"] == "error"
    assert failed["payload"]["data"] == {
        "step_index": 1,
        "total_steps": 2,
        "action": "failed",
        "plan_revision": 2,
    }
    assert explicit["payload"]["data"] == {
        "step_index": 1,
        "total_steps": 5,
        "action": "started",
        "plan_revision": 9,
    }


def test_escalate(task: Task, cap: EventCapture) -> None:
    """escalate sends escalated (warn); data only when assigned_to or reason is given."""
    task.escalate("Needs a human", assigned_to="ops", reason="low confidence", parent_event_id="e1")
    task.escalate("Bare")
    task.escalate(reason="refund over limit", assigned_to="finance")
    full, bare, spec = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "escalated",
        "severity": "warn",
        **TASK_FIELDS,
        "parent_event_id": "e1",
        "payload": {
            "summary": "Needs a human",
            "data": {"assigned_to": "ops", "reason": "low confidence"},
        },
    }
    assert bare["payload"] == {"summary": "Bare"}
    assert spec["payload"] == {
        "summary": "refund over limit",
        "data": {"assigned_to": "finance", "reason": "refund over limit"},
    }


def test_request_approval(task: Task, cap: EventCapture) -> None:
    """request_approval sends approval_requested; the spec form takes approver and reason."""
    task.request_approval("Send contract?", approver="manager", parent_event_id="e2")
    task.request_approval("Bare")
    task.request_approval(approver="manager", reason="discount over 20%")
    full, bare, spec = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "approval_requested",
        "severity": "info",
        **TASK_FIELDS,
        "parent_event_id": "e2",
        "payload": {"summary": "Send contract?", "data": {"approver": "manager"}},
    }
    assert bare["payload"] == {"summary": "Bare"}
    assert spec["payload"] == {
        "summary": "discount over 20%",
        "data": {"approver": "manager", "reason": "discount over 20%"},
    }


def test_approval_received(task: Task, cap: EventCapture) -> None:
    """approval_received always has data.decision; the spec form needs no summary."""
    task.approval_received("Manager said no", approved_by="manager", decision="rejected")
    task.approval_received("Fine")
    task.approval_received(approved_by="manager", decision="approved")
    full, default, spec = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "approval_received",
        "severity": "info",
        **TASK_FIELDS,
        "payload": {
            "summary": "Manager said no",
            "data": {"decision": "rejected", "approved_by": "manager"},
        },
    }
    assert default["payload"] == {"summary": "Fine", "data": {"decision": "approved"}}
    assert spec["payload"] == {
        "summary": "Approval approved by manager",
        "data": {"decision": "approved", "approved_by": "manager"},
    }


def test_retry(task: Task, cap: EventCapture) -> None:
    """retry sends retry_started (warn); the spec form takes attempt, reason and backoff."""
    task.retry("Retrying CRM", attempt=2, backoff_seconds=1.5, parent_event_id="e3")
    task.retry("Bare")
    task.retry(attempt=3, reason="CRM timeout", backoff_seconds=4)
    full, bare, spec = (norm(e) for e in cap.events)
    assert full == {
        "event_type": "retry_started",
        "severity": "warn",
        **TASK_FIELDS,
        "parent_event_id": "e3",
        "payload": {"summary": "Retrying CRM", "data": {"attempt": 2, "backoff_seconds": 1.5}},
    }
    assert bare["payload"] == {"summary": "Bare"}
    assert spec["payload"] == {
        "summary": "CRM timeout",
        "data": {"attempt": 3, "backoff_seconds": 4, "reason": "CRM timeout"},
    }


TASK_CALLS: dict[str, Callable[[Task], None]] = {
    "event": lambda t: t.event("custom", {"summary": "e"}),
    "llm_call": lambda t: t.llm_call("n", "m"),
    "plan": lambda t: t.plan("g", ["a"]),
    "plan_step": lambda t: t.plan_step(0, "started", "s"),
    "escalate": lambda t: t.escalate("s"),
    "request_approval": lambda t: t.request_approval("s"),
    "approval_received": lambda t: t.approval_received("s"),
    "retry": lambda t: t.retry("s"),
}


@pytest.mark.parametrize("method", sorted(TASK_CALLS))
def test_task_methods_attach_to_current_action(
    method: str, agent: Agent, task: Task, cap: EventCapture
) -> None:
    """Every Task method called inside an action carries the task fields and its action_id."""
    with agent.track_context("host") as ctx:
        TASK_CALLS[method](task)
    TASK_CALLS[method](task)
    inside, outside = (e for e in cap.events if not e["event_type"].startswith("action_"))
    assert inside["action_id"] == ctx.action_id_str
    assert "action_id" not in outside
    for ev in (inside, outside):
        assert {k: norm(ev)[k] for k in TASK_FIELDS} == TASK_FIELDS


# -- tool_payload and the log handler ----------------------------------------------------------


def test_tool_payload() -> None:
    """tool_payload cuts long args and the result, and adds only the given optional keys."""
    assert tool_payload() == {"success": True}
    assert tool_payload(
        args={"query": "x" * 600, "limit": 5},
        result="r" * 2000,
        success=False,
        error="timeout",
        duration_ms=12,
        tool_category="crm",
        http_status=503,
        result_size_bytes=2000,
    ) == {
        "success": False,
        "args": {"query": "x" * 500, "limit": 5},
        "result": "r" * 1000,
        "error": "timeout",
        "duration_ms": 12,
        "tool_category": "crm",
        "http_status": 503,
        "result_size_bytes": 2000,
    }
    assert tool_payload(args={"a": "abcdef"}, result=12345, args_max_len=3, result_max_len=2) == {
        "success": True,
        "args": {"a": "abc"},
        "result": "12",
    }


def test_tool_payload_odd_args_stay_json_safe(agent: Agent, cap: EventCapture) -> None:
    """Short non-JSON args kept by tool_payload are made JSON-safe on the wire."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    with agent.track_context("crm_search") as ctx:
        ctx.set_payload(tool_payload(args={"since": when, "ids": {1}}, result="ok"))
    payload = cap.events[-1]["payload"]
    json.dumps(payload, allow_nan=False)
    assert payload["args"]["since"].startswith("2026-01-02T03:04:05")
    assert payload["args"]["ids"] == [1]
    assert payload["result"] == "ok"
    assert payload["success"] is True


@pytest.fixture
def log_handler(agent: Agent) -> Iterator[HiveBoardLogHandler]:
    handler = HiveBoardLogHandler(agent)
    app = logging.getLogger("myapp")
    sdk = logging.getLogger("hiveloop_async.transport")
    app.addHandler(handler)
    sdk.addHandler(handler)
    old_level = app.level
    app.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        app.removeHandler(handler)
        sdk.removeHandler(handler)
        app.setLevel(old_level)


def test_log_handler_maps_levels_to_issues(
    log_handler: HiveBoardLogHandler, agent: Agent, cap: EventCapture
) -> None:
    """WARNING/ERROR/CRITICAL records become issues; lower levels are ignored."""
    log = logging.getLogger("myapp")
    with agent.task("t-log"), agent.track_context("act"):
        log.info("ignored")
        log.debug("ignored")
        log.warning("disk at %d%%", 91)
    log.error("lost connection")
    log.critical("down")
    log.log(35, "between warning and error")
    issues = [norm(e) for e in cap.of_type("custom")]
    assert [e["severity"] for e in issues] == ["warn", "error", "error", "warn"]
    assert [e["payload"]["data"]["severity"] for e in issues] == [
        "medium",
        "high",
        "critical",
        "medium",
    ]
    first = issues[0]
    context = first["payload"]["data"].pop("context")
    assert first == {
        "event_type": "custom",
        "severity": "warn",
        "payload": {
            "kind": "issue",
            "summary": "disk at 91%",
            "data": {
                "severity": "medium",
                "action": "reported",
                "issue_id": "log-myapp-WARNING",
                "category": "log",
            },
            "tags": ["issue", "log"],
        },
    }
    assert context == {
        "logger": "myapp",
        "filename": "test_wire_shapes.py",
        "lineno": context["lineno"],
        "funcName": "test_log_handler_maps_levels_to_issues",
    }
    assert type(context["lineno"]) is int
    assert issues[3]["payload"]["data"]["issue_id"] == "log-myapp-Level 35"


def test_log_handler_formatter_and_summary_cut(
    log_handler: HiveBoardLogHandler, cap: EventCapture
) -> None:
    """A formatter shapes the summary, which is cut to 512 characters."""
    log_handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    logging.getLogger("myapp").warning("y" * 1000)
    (ev,) = cap.events
    assert ev["payload"]["summary"] == ("[myapp] " + "y" * 1000)[:512]


def test_log_handler_ignores_sdk_loggers(
    log_handler: HiveBoardLogHandler, cap: EventCapture
) -> None:
    """Records from ``hiveloop_async.*`` loggers never become events (no feedback loop)."""
    logging.getLogger("hiveloop_async.transport").error("Event queue full")
    log_handler.handle(
        logging.LogRecord("hiveloop_async", logging.ERROR, __file__, 1, "own", None, None)
    )
    assert cap.events == []
