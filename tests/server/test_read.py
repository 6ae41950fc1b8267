"""Read endpoints (§2.7): timeline, tasks, events and agents on a real server."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from hiveloop_async._server import LocalServer

from .helpers import batch, event, get, ingest, stamp

pytestmark = pytest.mark.anyio

_T0 = datetime(2026, 11, 24, 6, 1, 0, tzinfo=timezone.utc)


def at(ms: int) -> str:
    return stamp(ms, _T0)


def lead_task() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A realistic failed task: plan, nested actions, LLM calls, retry, escalation, approval."""
    task = {
        "task_id": "task-lead-4801",
        "project_id": "sales",
        "task_type": "lead",
        "task_run_id": "run-1",
    }
    ids = {name: str(uuid.uuid4()) for name in ("failed_email", "retry", "escalated")}

    def ev(ms: int, event_type: str, **fields: Any) -> dict[str, Any]:
        return event(event_type, timestamp=at(ms), **task, **fields)

    events = [
        ev(0, "task_started", payload={"summary": "Task task-lead-4801 started"}),
        ev(
            10,
            "custom",
            payload={
                "kind": "plan_created",
                "summary": "Qualify the lead",
                "data": {
                    "goal": "Qualify the lead",
                    "steps": [
                        {"index": 0, "description": "research"},
                        {"index": 1, "description": "score"},
                        {"index": 2, "description": "email"},
                    ],
                    "revision": 0,
                },
                "tags": ["plan", "created"],
            },
        ),
        ev(
            20,
            "custom",
            payload={
                "kind": "plan_step",
                "summary": "Step 0 started: research",
                "data": {"step_index": 0, "total_steps": 3, "action": "started"},
            },
        ),
        ev(30, "action_started", action_id="a1", payload={"action_name": "process_lead"}),
        ev(
            40,
            "custom",
            action_id="a1",
            payload={
                "kind": "llm_call",
                "summary": "phase1 → claude-sonnet (1200 in / 340 out, $0.0042)",
                "data": {
                    "name": "phase1",
                    "model": "claude-sonnet",
                    "tokens_in": 1200,
                    "tokens_out": 340,
                    "cost": 0.0042,
                    "duration_ms": 3100,
                },
                "tags": ["llm"],
            },
        ),
        ev(
            50,
            "action_started",
            action_id="a2",
            parent_action_id="a1",
            payload={"action_name": "crm_search"},
        ),
        ev(
            60,
            "action_completed",
            action_id="a2",
            parent_action_id="a1",
            status="success",
            duration_ms=800,
            payload={"action_name": "crm_search", "args": {"query": "Acme Corp"}},
        ),
        ev(
            70,
            "action_started",
            action_id="a3",
            parent_action_id="a1",
            payload={"action_name": "send_email"},
        ),
        ev(
            80,
            "action_failed",
            action_id="a3",
            parent_action_id="a1",
            status="failure",
            duration_ms=300,
            event_id=ids["failed_email"],
            payload={
                "action_name": "send_email",
                "exception_type": "ConnectionError",
                "exception_message": "SMTP timeout",
            },
        ),
        ev(
            90,
            "retry_started",
            event_id=ids["retry"],
            parent_event_id=ids["failed_email"],
            payload={"summary": "retrying the email", "data": {"attempt": 1}},
        ),
        ev(
            100,
            "escalated",
            event_id=ids["escalated"],
            parent_event_id=ids["failed_email"],
            payload={"summary": "needs a human", "data": {"assigned_to": "ops"}},
        ),
        ev(110, "approval_requested", payload={"summary": "send anyway?"}),
        ev(120, "approval_received", payload={"summary": "ok", "data": {"decision": "approved"}}),
        ev(
            130,
            "action_completed",
            action_id="a1",
            status="success",
            duration_ms=1800,
            payload={"action_name": "process_lead"},
        ),
        ev(
            140,
            "custom",
            payload={
                "kind": "plan_step",
                "summary": "Step 0 completed: research",
                "data": {"step_index": 0, "total_steps": 3, "action": "completed"},
            },
        ),
        ev(
            150,
            "custom",
            payload={
                "kind": "llm_call",
                "summary": "summarize → claude-haiku",
                "data": {
                    "name": "summarize",
                    "model": "claude-haiku",
                    "tokens_in": 200,
                    "tokens_out": 50,
                    "cost": 0.001,
                },
            },
        ),
        ev(
            155,
            "action_started",
            action_id="orphan",
            parent_action_id="ghost",
            payload={"data": {"action_name": "late_cleanup"}},
        ),
        ev(
            160,
            "task_failed",
            status="failure",
            duration_ms=12400,
            payload={
                "summary": "Task task-lead-4801 failed",
                "exception_type": "ValueError",
                "exception_message": "bad lead",
            },
        ),
    ]
    return events, ids


async def test_timeline_of_a_realistic_task(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    events, ids = lead_task()
    # the agent sends out of order: the timeline is in timestamp order regardless
    answer = await ingest(http, server, batch(*events[9:], agent_id="lead-qualifier"))
    assert answer.status == 200
    answer = await ingest(http, server, batch(*events[:9], agent_id="lead-qualifier"))
    assert answer.status == 200
    timeline = (await get(http, server, "/v1/tasks/task-lead-4801/timeline")).body

    assert list(timeline)[:10] == [
        "task_id",
        "task_run_id",
        "agent_id",
        "project_id",
        "task_type",
        "derived_status",
        "started_at",
        "completed_at",
        "duration_ms",
        "total_cost",
    ]
    assert {k: timeline[k] for k in list(timeline)[:9]} == {
        "task_id": "task-lead-4801",
        "task_run_id": "run-1",
        "agent_id": "lead-qualifier",
        "project_id": "sales",
        "task_type": "lead",
        "derived_status": "failed",
        "started_at": at(0),
        "completed_at": at(160),
        "duration_ms": 12400,
    }
    assert timeline["total_cost"] == pytest.approx(0.0052)
    assert (
        timeline["llm_call_count"],
        timeline["total_tokens_in"],
        timeline["total_tokens_out"],
    ) == (2, 1400, 390)
    assert [e["event_id"] for e in timeline["events"]] == [e["event_id"] for e in events]

    def shape(node: dict[str, Any]) -> tuple[Any, ...]:
        return (
            node["action_id"],
            node["parent_action_id"],
            node["name"],
            node["status"],
            node["duration_ms"],
            [e["event_type"] for e in node["events"]],
            [shape(child) for child in node["children"]],
        )

    assert [shape(root) for root in timeline["action_tree"]] == [
        (
            "a1",
            None,
            "process_lead",
            "success",
            1800,
            ["action_started", "action_completed"],
            [
                (
                    "a2",
                    "a1",
                    "crm_search",
                    "success",
                    800,
                    ["action_started", "action_completed"],
                    [],
                ),
                ("a3", "a1", "send_email", "failure", 300, ["action_started", "action_failed"], []),
            ],
        ),
        ("orphan", "ghost", "late_cleanup", None, None, ["action_started"], []),
    ]
    assert [
        (c["event_id"], c["event_type"], c["parent_event_id"], c["timestamp"])
        for c in timeline["error_chains"]
    ] == [
        (ids["retry"], "retry_started", ids["failed_email"], at(90)),
        (ids["escalated"], "escalated", ids["failed_email"], at(100)),
    ]
    assert timeline["error_chains"][1]["payload"]["summary"] == "needs a human"
    assert timeline["plan"] == {
        "goal": "Qualify the lead",
        "steps": [
            {
                "index": 0,
                "description": "research",
                "action": "completed",
                "started_at": at(20),
                "completed_at": at(140),
            },
            {"index": 1, "description": "score"},
            {"index": 2, "description": "email"},
        ],
        "progress": {"completed": 1, "total": 3},
    }


async def test_timeline_ties_keep_insertion_order(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    same = at(500)
    first = event("task_started", task_id="tie", timestamp=same)
    second = event("custom", task_id="tie", timestamp=same, payload={"summary": "b"})
    third = event("custom", task_id="tie", timestamp=same, payload={"summary": "c"})
    await ingest(http, server, batch(first, second))
    await ingest(http, server, batch(third))
    timeline = (await get(http, server, "/v1/tasks/tie/timeline")).body
    assert [e["event_id"] for e in timeline["events"]] == [
        first["event_id"],
        second["event_id"],
        third["event_id"],
    ]
    assert timeline["derived_status"] == "processing"
    assert (timeline["completed_at"], timeline["duration_ms"], timeline["total_cost"]) == (
        None,
        None,
        None,
    )
    assert (timeline["action_tree"], timeline["error_chains"], timeline["plan"]) == ([], [], None)


async def test_plan_step_without_total_steps_does_not_break_the_timeline(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    step = event(
        task_id="no-plan",
        payload={
            "kind": "plan_step",
            "summary": "Step 0 started: look",
            "data": {"step_index": 0, "total_steps": None, "action": "started", "plan_revision": 0},
        },
    )
    await ingest(http, server, batch(step))
    answer = await get(http, server, "/v1/tasks/no-plan/timeline")
    assert answer.status == 200
    assert answer.body["plan"] == {
        "goal": None,
        "steps": [
            {"index": 0, "description": None, "action": "started", "started_at": step["timestamp"]}
        ],
        "progress": {"completed": 0, "total": 1},
    }


async def test_unknown_task_timeline_is_404(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await get(http, server, "/v1/tasks/nope/timeline")
    assert (answer.status, answer.body) == (
        404,
        {"error": "not_found", "message": "Task not found", "status": 404},
    )


# --------------------------------------------------------------------------- tasks


async def _seed_tasks(server: LocalServer, http: aiohttp.ClientSession) -> None:
    def task_events(
        task_id: str, start: int, task_type: str, end: str | None, duration: int | None, cost: float
    ) -> list[dict[str, Any]]:
        fields = {"task_id": task_id, "task_type": task_type, "task_run_id": f"run-{task_id}"}
        out = [event("task_started", timestamp=at(start), **fields)]
        out.append(
            event(
                "action_started",
                timestamp=at(start + 1),
                action_id=f"{task_id}-a",
                **fields,
            )
        )
        if cost:
            out.append(
                event(
                    "custom",
                    timestamp=at(start + 2),
                    payload={
                        "kind": "llm_call",
                        "data": {
                            "name": "n",
                            "model": "m",
                            "tokens_in": 10,
                            "tokens_out": 5,
                            "cost": cost,
                        },
                    },
                    **fields,
                )
            )
        if end == "approval":
            out.append(event("approval_requested", timestamp=at(start + 3), **fields))
        elif end == "escalated":
            out.append(event("escalated", timestamp=at(start + 3), **fields))
        elif end is not None:
            out.append(event(end, timestamp=at(start + 3), duration_ms=duration, **fields))
        return out

    await ingest(
        http,
        server,
        batch(
            *task_events("A", 1000, "lead", "task_completed", 1000, 0.5),
            *task_events("C", 3000, "support", "escalated", None, 0.0),
            agent_id="x",
        ),
    )
    await ingest(
        http,
        server,
        batch(
            *task_events("B", 2000, "lead", "task_failed", 5000, 0.1),
            *task_events("D", 4000, "support", "approval", None, 0.0),
            agent_id="y",
        ),
    )
    await ingest(
        http,
        server,
        batch(
            *task_events("E", 5000, "lead", None, None, 0.0), agent_id="x", environment="staging"
        ),
    )


async def _task_ids(http: aiohttp.ClientSession, server: LocalServer, query: str) -> list[str]:
    answer = await get(http, server, f"/v1/tasks{query}")
    assert answer.status == 200, answer.body
    return [item["task_id"] for item in answer.body["data"]]


async def test_task_summaries(server: LocalServer, http: aiohttp.ClientSession) -> None:
    await _seed_tasks(server, http)
    answer = (await get(http, server, "/v1/tasks")).body
    assert answer["pagination"] == {"cursor": None, "has_more": False}
    by_id = {item["task_id"]: item for item in answer["data"]}
    assert list(by_id["A"]) == [
        "task_id",
        "task_type",
        "task_run_id",
        "agent_id",
        "project_id",
        "derived_status",
        "started_at",
        "completed_at",
        "duration_ms",
        "total_cost",
        "action_count",
        "error_count",
        "has_escalation",
        "has_human_intervention",
        "llm_call_count",
        "total_tokens_in",
        "total_tokens_out",
    ]
    assert by_id["A"] == {
        "task_id": "A",
        "task_type": "lead",
        "task_run_id": "run-A",
        "agent_id": "x",
        "project_id": None,
        "derived_status": "completed",
        "started_at": at(1000),
        "completed_at": at(1003),
        "duration_ms": 1000,
        "total_cost": 0.5,
        "action_count": 1,
        "error_count": 0,
        "has_escalation": False,
        "has_human_intervention": False,
        "llm_call_count": 1,
        "total_tokens_in": 10,
        "total_tokens_out": 5,
    }
    assert {k: v["derived_status"] for k, v in by_id.items()} == {
        "A": "completed",
        "B": "failed",
        "C": "escalated",
        "D": "waiting",
        "E": "processing",
    }
    assert (by_id["B"]["error_count"], by_id["B"]["duration_ms"]) == (1, 5000)
    assert (by_id["C"]["has_escalation"], by_id["D"]["has_human_intervention"]) == (True, True)
    assert (by_id["C"]["total_cost"], by_id["C"]["llm_call_count"]) == (None, 0)


async def test_task_filters_and_sorting(server: LocalServer, http: aiohttp.ClientSession) -> None:
    await _seed_tasks(server, http)
    assert await _task_ids(http, server, "") == ["E", "D", "C", "B", "A"]
    assert await _task_ids(http, server, "?sort=oldest") == ["A", "B", "C", "D", "E"]
    assert (await _task_ids(http, server, "?sort=duration"))[:2] == ["B", "A"]
    assert (await _task_ids(http, server, "?sort=cost"))[:2] == ["A", "B"]
    assert await _task_ids(http, server, "?agent_id=y") == ["D", "B"]
    assert await _task_ids(http, server, "?task_type=support") == ["D", "C"]
    assert await _task_ids(http, server, "?status=failed") == ["B"]
    assert await _task_ids(http, server, "?environment=staging") == ["E"]
    since = at(2000).replace("Z", "%2B00:00")
    assert await _task_ids(http, server, f"?since={since}&until={at(4000)}") == ["D", "C", "B"]


async def test_task_pagination_visits_every_task_once(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    await _seed_tasks(server, http)
    seen: list[str] = []
    query = "?limit=2"
    while True:
        answer = (await get(http, server, f"/v1/tasks{query}")).body
        seen.extend(item["task_id"] for item in answer["data"])
        if not answer["pagination"]["has_more"]:
            assert answer["pagination"]["cursor"] is None
            break
        assert answer["pagination"]["cursor"] == seen[-1]
        query = f"?limit=2&cursor={answer['pagination']['cursor']}"
    assert seen == ["E", "D", "C", "B", "A"]
    assert await _task_ids(http, server, "?cursor=unknown") == []


async def test_limit_is_validated(server: LocalServer, http: aiohttp.ClientSession) -> None:
    for path in ("/v1/tasks?limit=201", "/v1/events?limit=201"):
        answer = await get(http, server, path)
        assert answer.status == 400
        assert answer.body["details"]["fields"] == [
            {
                "field": "query.limit",
                "message": "Input should be less than or equal to 200",
                "type": "less_than_equal",
            }
        ]
    assert (await get(http, server, "/v1/tasks?limit=abc")).status == 400
    assert (await get(http, server, "/v1/events?limit=200")).status == 200


# --------------------------------------------------------------------------- events


async def test_event_filters(server: LocalServer, http: aiohttp.ClientSession) -> None:
    beat = event("heartbeat", timestamp=at(1))
    started = event("task_started", timestamp=at(2), task_id="t1")
    llm = event(
        "custom",
        timestamp=at(3),
        task_id="t1",
        payload={"kind": "llm_call", "data": {"name": "n", "model": "m"}},
    )
    failed = event("action_failed", timestamp=at(4), task_id="t1", action_id="a")
    other = event("task_started", timestamp=at(5), task_id="t2", agent_id="other")
    await ingest(http, server, batch(beat, started, llm, failed, environment="dev", group="g1"))
    await ingest(http, server, batch(other))

    async def ids(query: str) -> list[str]:
        answer = await get(http, server, f"/v1/events{query}")
        assert answer.status == 200, answer.body
        return [e["event_id"] for e in answer.body["data"]]

    newest_first = [other, failed, llm, started]
    assert await ids("") == [e["event_id"] for e in newest_first]
    assert await ids("?exclude_heartbeats=false") == [e["event_id"] for e in [*newest_first, beat]]
    assert await ids("?agent_id=other") == [other["event_id"]]
    assert await ids("?task_id=t1") == [failed["event_id"], llm["event_id"], started["event_id"]]
    assert await ids("?event_type=task_started,action_failed") == [
        other["event_id"],
        failed["event_id"],
        started["event_id"],
    ]
    assert await ids("?severity=error") == [failed["event_id"]]
    assert await ids("?severity=debug,error&exclude_heartbeats=false") == [
        failed["event_id"],
        beat["event_id"],
    ]
    assert await ids("?environment=dev&group=g1&event_type=custom") == [llm["event_id"]]
    assert await ids("?environment=production") == [other["event_id"]]
    assert await ids("?payload_kind=llm_call") == [llm["event_id"]]
    assert await ids(f"?since={at(3)}&until={at(4)}") == [failed["event_id"], llm["event_id"]]
    assert (await get(http, server, "/v1/events?exclude_heartbeats=maybe")).status == 400


async def test_event_pagination(server: LocalServer, http: aiohttp.ClientSession) -> None:
    sent = [event(timestamp=at(i)) for i in range(7)]
    await ingest(http, server, batch(*sent))
    seen: list[str] = []
    query = "?limit=3"
    pages = 0
    while True:
        answer = (await get(http, server, f"/v1/events{query}")).body
        pages += 1
        seen.extend(e["event_id"] for e in answer["data"])
        cursor = answer["pagination"]["cursor"]
        if not answer["pagination"]["has_more"]:
            assert cursor is None
            break
        assert cursor == seen[-1]
        query = f"?limit=3&cursor={cursor}"
    assert pages == 3
    assert seen == [e["event_id"] for e in reversed(sent)]
    # a cursor this process did not hand out is resolved too; an unknown one ends the list
    answer = (await get(http, server, f"/v1/events?cursor={sent[2]['event_id']}")).body
    assert [e["event_id"] for e in answer["data"]] == [sent[1]["event_id"], sent[0]["event_id"]]
    assert (await get(http, server, "/v1/events?cursor=missing")).body == {
        "data": [],
        "pagination": {"cursor": None, "has_more": False},
    }


# --------------------------------------------------------------------------- agents


def _ago(seconds: float) -> str:
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_agent_statuses(server: LocalServer, http: aiohttp.ClientSession) -> None:
    registered = event(
        "agent_registered",
        timestamp=_ago(60),
        payload={"summary": "Agent quick registered", "data": {"stuck_threshold": 5}},
    )
    await ingest(http, server, batch(registered, agent_id="quick"))
    await ingest(http, server, batch(event("heartbeat", timestamp=_ago(60)), agent_id="patient"))
    await ingest(http, server, batch(event("task_started", task_id="w1"), agent_id="old"))
    await ingest(
        http, server, batch(event("task_started", timestamp=_ago(1), task_id="p1"), agent_id="busy")
    )
    await ingest(
        http,
        server,
        batch(
            event("action_failed", timestamp=_ago(2), task_id="f1"),
            event("heartbeat", timestamp=_ago(1)),
            agent_id="broken",
        ),
    )
    await ingest(
        http,
        server,
        batch(event("approval_requested", timestamp=_ago(1), task_id="a1"), agent_id="asking"),
    )
    agents = {a["agent_id"]: a for a in (await get(http, server, "/v1/agents")).body["data"]}
    assert {k: v["derived_status"] for k, v in agents.items()} == {
        "quick": "stuck",  # its own threshold (5 s) is exceeded
        "patient": "idle",  # 60 s without news is fine with the default 300 s
        "old": "stuck",  # 2026-11-24 is long ago for this clock
        "busy": "processing",
        "broken": "error",  # a heartbeat does not hide the last real event
        "asking": "waiting_approval",
    }
    assert agents["quick"]["stuck_threshold_seconds"] == 5
    assert agents["quick"]["is_stuck"] is True
    broken = agents["broken"]
    assert broken["last_event_type"] == "action_failed"
    assert (broken["last_task_id"], broken["current_task_id"]) == ("f1", "f1")
    assert broken["last_heartbeat"] is not None and broken["heartbeat_age_seconds"] is not None
    assert broken["last_seen"] == broken["last_heartbeat"]
    assert set(broken) >= {
        "agent_id",
        "agent_type",
        "agent_version",
        "framework",
        "environment",
        "group",
        "first_seen",
        "last_seen",
        "last_heartbeat",
        "last_event_type",
        "last_task_id",
        "derived_status",
    }
    assert next(iter(agents)) in ("busy", "broken", "asking")  # most recently seen first
    single = await get(http, server, "/v1/agents/busy")
    assert (single.status, single.body["derived_status"]) == (200, "processing")
    missing = await get(http, server, "/v1/agents/nobody")
    assert (missing.status, missing.body["error"]) == (404, "not_found")
    assert [
        a["agent_id"] for a in (await get(http, server, "/v1/agents?status=error")).body["data"]
    ] == ["broken"]
