"""Read-side SQL for the local server. Every function runs on the store's DB thread.

Each function takes the worker's :class:`sqlite3.Connection` and returns plain JSON-ready
Python objects, so the event loop only serialises the answer. Semantics follow HiveBoard's
``storage_json.py`` (contract §2.7):

* tasks are events grouped by ``task_id`` alone; the ``agent_id``, ``task_type``,
  ``environment`` and ``project_id`` filters select *events* before grouping;
  ``since``/``until`` compare the task's first event time; the cursor is the last item's
  ``task_id``;
* events are newest first (ties: most recently inserted first); ``since``/``until`` compare
  parsed times (unparseable timestamps are never filtered out by them); the cursor is the
  last item's ``event_id``; an unknown cursor yields an empty page.
"""

from __future__ import annotations

import collections
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .derive import build_timeline, derive_agent_status, derive_task_status
from .ingest import EVENT_COLUMNS, expand_event, parse_timestamp

__all__ = [
    "AgentQuery",
    "CursorCache",
    "EventQuery",
    "TaskQuery",
    "get_agent",
    "list_agents",
    "list_events",
    "list_tasks",
    "task_timeline",
]


@dataclass(frozen=True)
class EventQuery:
    """Filters of ``GET /v1/events``."""

    project_id: str | None = None
    agent_id: str | None = None
    task_id: str | None = None
    event_type: str | None = None
    severity: str | None = None
    environment: str | None = None
    group: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    exclude_heartbeats: bool = True
    payload_kind: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class TaskQuery:
    """Filters of ``GET /v1/tasks``."""

    project_id: str | None = None
    agent_id: str | None = None
    task_type: str | None = None
    status: str | None = None
    environment: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "newest"
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class AgentQuery:
    """Filters of ``GET /v1/agents``."""

    environment: str | None = None
    group: str | None = None
    status: str | None = None
    sort: str = "last_seen"
    limit: int = 50


def _field(path: str) -> str:
    """SQL reading one field of an event's JSON body (fields without a column)."""
    return f"json_extract(CAST(body AS TEXT), '{path}')"


def _llm_number(key: str) -> str:
    path = f"$.payload.data.{key}"
    return (
        f"(CASE WHEN payload_kind = 'llm_call' AND json_type(CAST(body AS TEXT), '{path}') "
        f"IN ('integer', 'real') THEN {_field(path)} END)"
    )


_SEVERITY = _field("$.severity")
_ENVIRONMENT = _field("$.environment")
_GROUP = _field("$.group")
_PROJECT = _field("$.project_id")
_TASK_TYPE = _field("$.task_type")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def _in_window(ts: str, since: datetime | None, until: datetime | None) -> bool:
    parsed = parse_timestamp(ts)
    if parsed is None:
        return True
    if since is not None and parsed < since:
        return False
    return not (until is not None and parsed > until)


def _since_prefilter(since: datetime) -> str:
    # Any timestamp at or after ``since`` (whatever its UTC offset) starts with a date no
    # earlier than two days before it, and ISO dates sort as strings; the exact comparison
    # is then done in Python on parsed times.
    return (since.astimezone(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%d")


class CursorCache:
    """Positions ``(timestamp, seq)`` of recently issued event cursors (worker thread only).

    ``event_id`` has no index (see the store), so resolving a cursor this server handed out
    is a dictionary lookup; an unknown cursor costs one table scan.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._positions: collections.OrderedDict[str, tuple[str, int]] = collections.OrderedDict()

    def put(self, event_id: str, position: tuple[str, int]) -> None:
        """Remember where ``event_id`` sits in the newest-first order."""
        self._positions[event_id] = position
        self._positions.move_to_end(event_id)
        while len(self._positions) > self._size:
            self._positions.popitem(last=False)

    def find(self, conn: sqlite3.Connection, event_id: str) -> tuple[str, int] | None:
        """The position of ``event_id``, or None if no such event is stored."""
        position = self._positions.get(event_id)
        if position is not None:
            return position
        row = conn.execute(
            "SELECT timestamp, seq FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
        return (row[0], row[1]) if row is not None else None

    def clear(self) -> None:
        """Forget every position (after the events were deleted)."""
        self._positions.clear()


def list_events(
    conn: sqlite3.Connection, query: EventQuery, cursors: CursorCache | None = None
) -> dict[str, Any]:
    """``GET /v1/events``: ``{"data": [...], "pagination": {"cursor", "has_more"}}``."""
    cursors = cursors if cursors is not None else CursorCache()
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("agent_id", query.agent_id),
        ("task_id", query.task_id),
        ("payload_kind", query.payload_kind),
        (_PROJECT, query.project_id),
        (_ENVIRONMENT, query.environment),
        (_GROUP, query.group),
    ):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    for column, value in (("event_type", query.event_type), (_SEVERITY, query.severity)):
        if value:
            values = _split(value)
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    if query.exclude_heartbeats:
        where.append("event_type != 'heartbeat'")
    if query.since is not None:
        where.append("timestamp >= ?")
        params.append(_since_prefilter(query.since))
    if query.cursor:
        found = cursors.find(conn, query.cursor)
        if found is None:
            return {"data": [], "pagination": {"cursor": None, "has_more": False}}
        where.append("(timestamp < ? OR (timestamp = ? AND seq < ?))")
        params.extend((found[0], found[0], found[1]))
    sql = f"SELECT seq, {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY timestamp DESC, seq DESC"
    window = query.since is not None or query.until is not None
    wanted = query.limit + 1
    found_rows: list[tuple[Any, ...]] = []
    for row in conn.execute(sql, params):  # (seq, event_id, timestamp, ...)
        if window and not _in_window(row[2], query.since, query.until):
            continue
        found_rows.append(row)
        if len(found_rows) >= wanted:
            break
    has_more = len(found_rows) > query.limit
    page = found_rows[: query.limit]
    data = [expand_event(row[1:]) for row in page]
    cursor = None
    if has_more and data:
        cursor = data[-1]["event_id"]
        cursors.put(cursor, (page[-1][2], page[-1][0]))
    return {"data": data, "pagination": {"cursor": cursor, "has_more": has_more}}


_TASK_SQL = """
WITH agg AS (
  SELECT task_id,
    MIN(seq) AS first_insert,
    MIN(timestamp || char(1) || printf('%020d', seq)) AS first_key,
    MAX(CASE WHEN event_type IN ('task_completed', 'task_failed')
        THEN timestamp || char(1) || printf('%020d', seq) END) AS terminal_key,
    MAX(event_type = 'task_completed') AS has_completed,
    MAX(event_type = 'task_failed') AS has_failed,
    MAX(event_type = 'escalated') AS has_escalated,
    MAX(event_type = 'approval_requested') AS has_requested,
    MAX(event_type = 'approval_received') AS has_received,
    SUM(event_type = 'action_started') AS action_count,
    SUM(event_type IN ('action_failed', 'task_failed')) AS error_count,
    COUNT(CASE WHEN payload_kind = 'llm_call' THEN 1 END) AS llm_count,
    TOTAL({cost}) AS cost,
    TOTAL({tokens_in}) AS tokens_in,
    TOTAL({tokens_out}) AS tokens_out
  FROM events
  WHERE {where}
  GROUP BY task_id
)
SELECT agg.*, f.timestamp, f.agent_id, f.body, t.timestamp, t.body
FROM agg
JOIN events f ON f.seq = CAST(substr(agg.first_key, instr(agg.first_key, char(1)) + 1)
                              AS INTEGER)
LEFT JOIN events t ON t.seq = CAST(substr(agg.terminal_key, instr(agg.terminal_key, char(1)) + 1)
                                   AS INTEGER)
ORDER BY agg.first_insert
"""


def _count(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def list_tasks(conn: sqlite3.Connection, query: TaskQuery) -> dict[str, Any]:
    """``GET /v1/tasks``: task summaries with HiveBoard's keys, filtering and cursor."""
    where = ["task_id IS NOT NULL", "task_id != ''"]
    params: list[Any] = []
    for column, value in (
        ("agent_id", query.agent_id),
        (_PROJECT, query.project_id),
        (_TASK_TYPE, query.task_type),
        (_ENVIRONMENT, query.environment),
    ):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    items: list[dict[str, Any]] = []
    sql = _TASK_SQL.format(
        where=" AND ".join(where),
        cost=_llm_number("cost"),
        tokens_in=_llm_number("tokens_in"),
        tokens_out=_llm_number("tokens_out"),
    )
    for row in conn.execute(sql, params):
        (
            task_id,
            _first_insert,
            _first_key,
            _terminal_key,
            has_completed,
            has_failed,
            has_escalated,
            has_requested,
            has_received,
            action_count,
            error_count,
            llm_count,
            cost,
            tokens_in,
            tokens_out,
            started_at,
            agent_id,
            first_body,
            completed_at,
            terminal_body,
        ) = row
        types = {
            name
            for name, present in (
                ("task_completed", has_completed),
                ("task_failed", has_failed),
                ("escalated", has_escalated),
                ("approval_requested", has_requested),
                ("approval_received", has_received),
            )
            if present
        }
        status = derive_task_status(types)
        if query.status and status != query.status:
            continue
        if (query.since is not None or query.until is not None) and not _in_window(
            started_at, query.since, query.until
        ):
            continue
        first = orjson.loads(first_body)
        duration_ms = orjson.loads(terminal_body).get("duration_ms") if terminal_body else None
        items.append(
            {
                "task_id": task_id,
                "task_type": first.get("task_type"),
                "task_run_id": first.get("task_run_id"),
                "agent_id": agent_id,
                "project_id": first.get("project_id"),
                "derived_status": status,
                "started_at": started_at,
                "completed_at": completed_at,
                "duration_ms": duration_ms,
                "total_cost": cost if cost > 0 else None,
                "action_count": action_count,
                "error_count": error_count,
                "has_escalation": bool(has_escalated),
                "has_human_intervention": bool(has_requested or has_received),
                "llm_call_count": llm_count,
                "total_tokens_in": _count(tokens_in),
                "total_tokens_out": _count(tokens_out),
            }
        )
    if query.sort == "newest":
        items.sort(key=lambda item: item["started_at"], reverse=True)
    elif query.sort == "oldest":
        items.sort(key=lambda item: item["started_at"])
    elif query.sort == "duration":
        items.sort(key=lambda item: item["duration_ms"] or 0, reverse=True)
    elif query.sort == "cost":
        items.sort(key=lambda item: item["total_cost"] or 0, reverse=True)
    if query.cursor:
        for index, item in enumerate(items):
            if item["task_id"] == query.cursor:
                items = items[index + 1 :]
                break
        else:
            items = []
    page = items[: query.limit]
    has_more = len(items) > query.limit
    cursor = page[-1]["task_id"] if has_more and page else None
    return {"data": page, "pagination": {"cursor": cursor, "has_more": has_more}}


def task_timeline(conn: sqlite3.Connection, task_id: str) -> dict[str, Any] | None:
    """``GET /v1/tasks/{task_id}/timeline``, or None when the task has no events."""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE task_id = ? ORDER BY timestamp, seq",
        (task_id,),
    ).fetchall()
    if not rows:
        return None
    return build_timeline(task_id, [expand_event(row) for row in rows])


_AGENT_COLUMNS = (
    "agent_id, agent_type, agent_version, framework, runtime, sdk_version, environment, grp, "
    "first_seen, last_seen, last_seen_epoch, last_heartbeat, last_heartbeat_epoch, "
    "last_event_type, last_task_id, last_project_id, stuck_threshold"
)


def _agent_item(row: tuple[Any, ...], now: datetime) -> dict[str, Any]:
    (
        agent_id,
        agent_type,
        agent_version,
        framework,
        runtime,
        sdk_version,
        environment,
        group,
        first_seen,
        last_seen,
        last_seen_epoch,
        last_heartbeat,
        last_heartbeat_epoch,
        last_event_type,
        last_task_id,
        last_project_id,
        stuck_threshold,
    ) = row
    status = derive_agent_status(
        now=now,
        last_heartbeat_epoch=last_heartbeat_epoch,
        last_seen_epoch=last_seen_epoch,
        last_event_type=last_event_type,
        stuck_threshold=stuck_threshold,
    )
    heartbeat_age = (
        int(now.timestamp() - last_heartbeat_epoch) if last_heartbeat_epoch is not None else None
    )
    return {
        "agent_id": agent_id,
        "agent_type": agent_type,
        "agent_version": agent_version,
        "framework": framework,
        "runtime": runtime,
        "sdk_version": sdk_version,
        "environment": environment,
        "group": group,
        "derived_status": status,
        "current_task_id": last_task_id,
        "current_project_id": last_project_id,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "last_heartbeat": last_heartbeat,
        "heartbeat_age_seconds": heartbeat_age,
        "is_stuck": status == "stuck",
        "stuck_threshold_seconds": stuck_threshold,
        "last_event_type": last_event_type,
        "last_task_id": last_task_id,
        "_sort": last_seen_epoch if last_seen_epoch is not None else float("-inf"),
    }


_STATUS_PRIORITY = {"stuck": 0, "error": 1, "waiting_approval": 2, "processing": 3, "idle": 4}


def list_agents(
    conn: sqlite3.Connection, query: AgentQuery, now: datetime | None = None
) -> dict[str, Any]:
    """``GET /v1/agents``: ``{"data": [...]}``, most recently seen first."""
    now = now or datetime.now(timezone.utc)
    where: list[str] = []
    params: list[Any] = []
    if query.environment:
        where.append("environment = ?")
        params.append(query.environment)
    if query.group:
        where.append("grp = ?")
        params.append(query.group)
    sql = f"SELECT {_AGENT_COLUMNS} FROM agents"
    if where:
        sql += " WHERE " + " AND ".join(where)
    items = [_agent_item(row, now) for row in conn.execute(sql, params)]
    items.sort(key=lambda item: item["_sort"], reverse=True)
    items = items[: query.limit]
    if query.status:
        items = [item for item in items if item["derived_status"] == query.status]
    if query.sort == "attention":
        items.sort(key=lambda item: _STATUS_PRIORITY.get(item["derived_status"], 5))
    elif query.sort == "name":
        items.sort(key=lambda item: item["agent_id"])
    for item in items:
        del item["_sort"]
    return {"data": items}


def get_agent(
    conn: sqlite3.Connection, agent_id: str, now: datetime | None = None
) -> dict[str, Any] | None:
    """``GET /v1/agents/{agent_id}``, or None when the agent is unknown."""
    row = conn.execute(
        f"SELECT {_AGENT_COLUMNS} FROM agents WHERE agent_id = ?", (agent_id,)
    ).fetchone()
    if row is None:
        return None
    item = _agent_item(row, now or datetime.now(timezone.utc))
    del item["_sort"]
    return item
