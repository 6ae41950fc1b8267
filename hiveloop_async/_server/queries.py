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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .derive import build_timeline, derive_agent_status
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
    q: str | None = None


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


_SEVERITY = _field("$.severity")
_ENVIRONMENT = _field("$.environment")
_GROUP = _field("$.group")
_PROJECT = _field("$.project_id")


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
    conn: sqlite3.Connection,
    query: EventQuery,
    cursors: CursorCache | None = None,
    *,
    task_number: Callable[[str], int | None],
) -> dict[str, Any]:
    """``GET /v1/events``: ``{"data": [...], "pagination": {"cursor", "has_more"}}``.

    :param task_number: maps a task id to its number in the ``tasks`` table (the indexed
        column of its events), or None for a task with no events.
    """
    cursors = cursors if cursors is not None else CursorCache()
    where: list[str] = []
    params: list[Any] = []
    if query.task_id:
        number = task_number(query.task_id)
        if number is None:
            return {"data": [], "pagination": {"cursor": None, "has_more": False}}
        where.append("task_no = ?")
        params.append(number)
    for column, value in (
        ("agent_id", query.agent_id),
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


_TASK_ITEM_COLUMNS = (
    "task_id, task_type, task_run_id, agent_id, project_id, status, first_ts, terminal_ts, "
    "duration_ms, cost, action_count, error_count, n_escalated, n_requested + n_received, "
    "llm_count, tokens_in, tokens_out"
)

#: Sort orders of ``GET /v1/tasks``: the key expressions (all descending unless "oldest").
_TASK_SORTS: dict[str, tuple[str, ...]] = {
    "newest": ("first_ts", "first_seq"),
    "oldest": ("first_ts", "first_seq"),
    "duration": ("COALESCE(duration_ms, 0)", "first_ts", "first_seq"),
    "cost": ("cost", "first_ts", "first_seq"),
}


def _count(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_tasks(
    conn: sqlite3.Connection, query: TaskQuery, task_number: Callable[[str], int | None]
) -> dict[str, Any]:
    """``GET /v1/tasks``: task summaries with HiveBoard's keys, filtering and cursor.

    Reads the ``tasks`` summary table (see ``summary.py``) with keyset paging, so a page
    costs the same at 100 or 100,000 tasks. ``q`` (ours, not HiveBoard's) keeps the tasks
    whose id contains it. ``task_number`` maps a cursor (a task id) to its row number.
    """
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("agent_id", query.agent_id),
        ("project_id", query.project_id),
        ("task_type", query.task_type),
        ("environment", query.environment),
        ("status", query.status),
    ):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if query.q:
        where.append("task_id LIKE ? ESCAPE '\\'")
        params.append(f"%{_like_escape(query.q)}%")
    if query.since is not None:
        where.append("(started_epoch IS NULL OR started_epoch >= ?)")
        params.append(query.since.timestamp())
    if query.until is not None:
        where.append("(started_epoch IS NULL OR started_epoch <= ?)")
        params.append(query.until.timestamp())
    keys = _TASK_SORTS.get(query.sort, _TASK_SORTS["newest"])
    if query.sort not in _TASK_SORTS:
        keys = ("first_seq",)  # HiveBoard leaves unknown sorts in grouping order
    ascending = query.sort == "oldest" or query.sort not in _TASK_SORTS
    if query.cursor:
        number = task_number(query.cursor)
        position = None
        if number is not None:
            position = conn.execute(
                f"SELECT {', '.join(keys)} FROM tasks WHERE task_no = ?", (number,)
            ).fetchone()
        if position is None:
            return {"data": [], "pagination": {"cursor": None, "has_more": False}}
        marks = ", ".join("?" * len(keys))
        where.append(f"({', '.join(keys)}) {'>' if ascending else '<'} ({marks})")
        params.extend(position)
    sql = f"SELECT {_TASK_ITEM_COLUMNS} FROM tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    direction = "" if ascending else " DESC"
    sql += " ORDER BY " + ", ".join(f"{key}{direction}" for key in keys) + " LIMIT ?"
    params.append(query.limit + 1)
    items: list[dict[str, Any]] = []
    for row in conn.execute(sql, params):
        (
            task_id,
            task_type,
            task_run_id,
            agent_id,
            project_id,
            status,
            started_at,
            completed_at,
            duration_ms,
            cost,
            action_count,
            error_count,
            escalated,
            human,
            llm_count,
            tokens_in,
            tokens_out,
        ) = row
        items.append(
            {
                "task_id": task_id,
                "task_type": task_type,
                "task_run_id": task_run_id,
                "agent_id": agent_id,
                "project_id": project_id,
                "derived_status": status,
                "started_at": started_at,
                "completed_at": completed_at,
                "duration_ms": duration_ms,
                "total_cost": cost if cost > 0 else None,
                "action_count": action_count,
                "error_count": error_count,
                "has_escalation": bool(escalated),
                "has_human_intervention": bool(human),
                "llm_call_count": llm_count,
                "total_tokens_in": _count(tokens_in),
                "total_tokens_out": _count(tokens_out),
            }
        )
    page = items[: query.limit]
    has_more = len(items) > query.limit
    cursor = page[-1]["task_id"] if has_more and page else None
    return {"data": page, "pagination": {"cursor": cursor, "has_more": has_more}}


def task_timeline(
    conn: sqlite3.Connection,
    task_id: str,
    *,
    action_tree: bool = True,
    task_number: Callable[[str], int | None],
) -> dict[str, Any] | None:
    """``GET /v1/tasks/{task_id}/timeline``, or None when the task has no events.

    ``action_tree=False`` (``?action_tree=false``, ours) answers an empty ``action_tree``.
    ``task_number`` is as for :func:`list_events`.
    """
    number = task_number(task_id) if task_id else None
    if number is None:
        return None
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE task_no = ? ORDER BY timestamp, seq",
        (number,),
    ).fetchall()
    if not rows:
        return None
    return build_timeline(task_id, [expand_event(row) for row in rows], action_tree=action_tree)


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


# --------------------------------------------------------------------------- LLM calls, cost

#: HiveBoard's ``range`` values; ``all`` (ours) reads every stored call.
RANGE_SECONDS: dict[str, float] = {
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}


@dataclass(frozen=True)
class LlmCallQuery:
    """Filters of ``GET /v1/llm-calls`` (and ``/v1/cost/calls``)."""

    project_id: str | None = None
    agent_id: str | None = None
    model: str | None = None
    task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def _llm_rows(
    conn: sqlite3.Connection,
    *,
    agent_id: str | None,
    project_id: str | None,
    task_id: str | None,
    since: datetime | None,
    before: tuple[str, int] | None = None,
    task_no: int | None = None,
) -> sqlite3.Cursor:
    where = ["payload_kind = 'llm_call'"]
    params: list[Any] = []
    if task_id:
        where.append("task_no = ?")
        params.append(task_no)
    for column, value in (("agent_id", agent_id), (_PROJECT, project_id)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("timestamp >= ?")
        params.append(_since_prefilter(since))
    if before is not None:
        where.append("(timestamp < ? OR (timestamp = ? AND seq < ?))")
        params.extend((before[0], before[0], before[1]))
    return conn.execute(
        f"SELECT seq, event_id, timestamp, agent_id, task_id, body FROM events "
        f"WHERE {' AND '.join(where)} ORDER BY timestamp DESC, seq DESC",
        params,
    )


def _llm_data(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    event = orjson.loads(body)
    payload = event.get("payload")
    data = payload.get("data") if isinstance(payload, dict) else None
    return event, data if isinstance(data, dict) else {}


def _num(value: Any) -> float | int:
    return value if type(value) is int or type(value) is float else 0


def list_llm_calls(
    conn: sqlite3.Connection,
    query: LlmCallQuery,
    cursors: CursorCache | None = None,
    *,
    task_number: Callable[[str], int | None],
) -> dict[str, Any]:
    """``GET /v1/llm-calls``: HiveBoard's LLM call records, newest first, with page totals.

    Unlike HiveBoard (which ignores it), the ``task_id`` filter is applied
    (``task_number`` is as for :func:`list_events`).
    """
    cursors = cursors if cursors is not None else CursorCache()
    task_no = task_number(query.task_id) if query.task_id else None
    before = cursors.find(conn, query.cursor) if query.cursor else None
    if (query.task_id and task_no is None) or (query.cursor and before is None):
        return {
            "data": [],
            "pagination": {"cursor": None, "has_more": False},
            "totals": {"cost": 0, "tokens_in": 0, "tokens_out": 0, "call_count": 0},
        }
    records: list[dict[str, Any]] = []
    last: tuple[str, int] | None = None
    has_more = False
    for seq, event_id, timestamp, agent_id, task_id, body in _llm_rows(
        conn,
        agent_id=query.agent_id,
        project_id=query.project_id,
        task_id=query.task_id,
        since=query.since,
        before=before,
        task_no=task_no,
    ):
        if (query.since or query.until) and not _in_window(timestamp, query.since, query.until):
            continue
        event, data = _llm_data(body)
        model = data.get("model", "unknown")
        if query.model and model != query.model:
            continue
        if len(records) == query.limit:
            has_more = True
            break
        last = (timestamp, seq)
        records.append(
            {
                "event_id": event_id,
                "agent_id": agent_id,
                "project_id": event.get("project_id"),
                "task_id": task_id,
                "timestamp": timestamp,
                "name": data.get("name", "unknown"),
                "model": model,
                "tokens_in": data.get("tokens_in"),
                "tokens_out": data.get("tokens_out"),
                "cost": data.get("cost"),
                "duration_ms": data.get("duration_ms"),
                "cost_source": data.get("cost_source"),
                "cost_model_matched": data.get("cost_model_matched"),
                "prompt_preview": data.get("prompt_preview"),
                "response_preview": data.get("response_preview"),
            }
        )
    cursor = None
    if has_more and records and last is not None:
        cursor = records[-1]["event_id"]
        cursors.put(cursor, last)
    return {
        "data": records,
        "pagination": {"cursor": cursor, "has_more": has_more},
        "totals": {
            "cost": sum(_num(r["cost"]) for r in records),
            "tokens_in": sum(_num(r["tokens_in"]) for r in records),
            "tokens_out": sum(_num(r["tokens_out"]) for r in records),
            "call_count": len(records),
        },
    }


def cost_summary(
    conn: sqlite3.Connection,
    *,
    agent_id: str | None = None,
    project_id: str | None = None,
    range_: str = "24h",
    now: datetime | None = None,
) -> dict[str, Any]:
    """``GET /v1/cost``: totals, ``by_agent`` and ``by_model`` over the ``range`` window."""
    now = now or datetime.now(timezone.utc)
    since = None
    if range_ != "all":
        since = now - timedelta(seconds=RANGE_SECONDS.get(range_, 86400))
    total_cost = reported = estimated = 0.0
    total_in: float | int = 0
    total_out: float | int = 0
    count = 0
    by_agent: dict[str, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Any]] = {}
    for _seq, _event_id, timestamp, agent, _task, body in _llm_rows(
        conn, agent_id=agent_id, project_id=project_id, task_id=None, since=since
    ):
        if since is not None and not _in_window(timestamp, since, None):
            continue
        _event, data = _llm_data(body)
        cost, t_in, t_out = (
            _num(data.get("cost")),
            _num(data.get("tokens_in")),
            _num(data.get("tokens_out")),
        )
        source = data.get("cost_source")
        count += 1
        total_cost += cost
        total_in += t_in
        total_out += t_out
        if source == "reported":
            reported += cost
        elif source == "estimated":
            estimated += cost
        model = data.get("model", "unknown")
        for table, key, name in ((by_agent, "agent_id", agent), (by_model, "model", model)):
            if not isinstance(name, str):
                name = str(name)
            entry = table.get(name)
            if entry is None:
                entry = table[name] = {
                    key: name,
                    "cost": 0,
                    "call_count": 0,
                    "tokens_in": 0,
                    "tokens_out": 0,
                    "estimated_cost": 0,
                }
            entry["cost"] += cost
            entry["call_count"] += 1
            entry["tokens_in"] += t_in
            entry["tokens_out"] += t_out
            if source == "estimated":
                entry["estimated_cost"] += cost
    return {
        "total_cost": total_cost,
        "call_count": count,
        "total_tokens_in": _count(total_in),
        "total_tokens_out": _count(total_out),
        "by_agent": sorted(by_agent.values(), key=lambda e: -e["cost"]),
        "by_model": sorted(by_model.values(), key=lambda e: -e["cost"]),
        "reported_cost": reported,
        "estimated_cost": estimated,
    }


# --------------------------------------------------------------------------- pipeline

_PIPELINE_KINDS = ("queue_snapshot", "todo", "scheduled", "issue")


def agent_pipeline(conn: sqlite3.Connection, agent_id: str) -> dict[str, Any]:
    """``GET /v1/agents/{agent_id}/pipeline``: latest queue, active todos and issues,
    latest scheduled items (HiveBoard's ``get_pipeline``; an unknown agent is empty)."""
    rows = conn.execute(
        f"SELECT timestamp, payload_kind, body FROM events WHERE agent_id = ? "
        f"AND event_type = 'custom' AND payload_kind IN ({','.join('?' * 4)}) "
        f"ORDER BY timestamp, seq",
        (agent_id, *_PIPELINE_KINDS),
    ).fetchall()
    queue: dict[str, Any] | None = None
    scheduled: list[Any] = []
    todos: dict[Any, dict[str, Any]] = {}
    issues: dict[Any, dict[str, Any]] = {}
    for timestamp, kind, body in rows:
        payload = orjson.loads(body).get("payload")
        if not isinstance(payload, dict):
            continue
        data = payload.get("data", {})
        if not isinstance(data, dict):
            data = {}
        if kind == "queue_snapshot":
            queue = {**data, "snapshot_at": timestamp}
        elif kind == "scheduled":
            items = data.get("items", [])
            scheduled = items if isinstance(items, list) else []
        elif kind == "todo":
            todo_id = data.get("todo_id")
            if todo_id and isinstance(todo_id, (str, int)):
                todos[todo_id] = {
                    "todo_id": todo_id,
                    "action": data.get("action"),
                    "priority": data.get("priority"),
                    "source": data.get("source"),
                    "context": data.get("context"),
                    "due_by": data.get("due_by"),
                    "timestamp": timestamp,
                }
        else:
            issue_id = data.get("issue_id") or payload.get("summary", "")
            if not isinstance(issue_id, (str, int)):
                issue_id = str(issue_id)
            issues[issue_id] = {
                "issue_id": issue_id,
                "severity": data.get("severity"),
                "category": data.get("category"),
                "context": data.get("context"),
                "action": data.get("action", "reported"),
                "occurrence_count": data.get("occurrence_count"),
                "summary": payload.get("summary"),
                "timestamp": timestamp,
            }
    return {
        "agent_id": agent_id,
        "queue": queue,
        "todos": [t for t in todos.values() if t["action"] not in ("completed", "dismissed")],
        "scheduled": scheduled,
        "issues": [i for i in issues.values() if i["action"] != "resolved"],
    }


def fleet_pipeline(conn: sqlite3.Connection) -> dict[str, Any]:
    """``GET /v1/pipeline``: per-agent queue depth and active todo/issue/scheduled counts."""
    totals = {"queue_depth": 0, "active_issues": 0, "active_todos": 0, "scheduled_count": 0}
    agents: list[dict[str, Any]] = []
    for (agent_id,) in conn.execute("SELECT agent_id FROM agents ORDER BY agent_id").fetchall():
        pipeline = agent_pipeline(conn, agent_id)
        queue = pipeline["queue"]
        depth = 0
        if queue:
            items = queue.get("items", [])
            depth = queue.get("depth", len(items) if isinstance(items, list) else 0)
        summary = {
            "agent_id": agent_id,
            "queue_depth": depth if type(depth) is int else 0,
            "active_todos": len(pipeline["todos"]),
            "active_issues": len(pipeline["issues"]),
            "scheduled_count": len(pipeline["scheduled"]),
        }
        for key in totals:
            totals[key] += summary[key]
        agents.append(summary)
    return {"totals": totals, "agents": agents}


# --------------------------------------------------------------------------- projects


def list_projects(conn: sqlite3.Connection) -> dict[str, Any]:
    """``GET /v1/projects``: one project per ``project_id`` the SDK sent (the slug).

    The local server has no project records: a project exists once a task names it.
    ``project_id`` and ``slug`` are both that string; ``event_count`` counts the events of
    the project's tasks.
    """
    rows = conn.execute(
        "SELECT project_id, MIN(first_ts), MAX(first_ts), SUM(event_count) FROM tasks "
        "WHERE project_id IS NOT NULL GROUP BY project_id ORDER BY project_id"
    ).fetchall()
    return {"data": [_project(*row) for row in rows]}


def _project(slug: str, created: str, updated: str, events: int) -> dict[str, Any]:
    return {
        "project_id": slug,
        "tenant_id": "local",
        "name": slug,
        "slug": slug,
        "description": None,
        "environment": "production",
        "settings": {},
        "is_archived": False,
        "auto_created": True,
        "created_at": created,
        "updated_at": updated,
        "event_count": events,
    }


def get_project(conn: sqlite3.Connection, project_id: str) -> dict[str, Any] | None:
    """``GET /v1/projects/{id_or_slug}``, or None when no task names that project."""
    row = conn.execute(
        "SELECT project_id, MIN(first_ts), MAX(first_ts), SUM(event_count) FROM tasks "
        "WHERE project_id = ? GROUP BY project_id",
        (project_id,),
    ).fetchone()
    if row is None:
        return None
    project = _project(*row)
    del project["event_count"]
    return project


# --------------------------------------------------------------------------- live stream


def events_after(
    conn: sqlite3.Connection, seq: int, limit: int = 500
) -> list[tuple[int, dict[str, Any]]]:
    """Events stored after insertion number ``seq`` (heartbeats left out), oldest first."""
    rows = conn.execute(
        f"SELECT seq, {EVENT_COLUMNS} FROM events WHERE seq > ? AND event_type != 'heartbeat' "
        "ORDER BY seq LIMIT ?",
        (seq, limit),
    ).fetchall()
    return [(row[0], expand_event(row[1:])) for row in rows]


def last_seq(conn: sqlite3.Connection) -> int:
    """The insertion number of the newest stored event (0 when there is none)."""
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
