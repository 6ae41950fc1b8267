"""Per-task summary rows, kept up to date at ingest so the task list is paged in SQL.

``GET /v1/tasks`` used to group every event by ``task_id`` on each request, which costs
seconds at 100,000 tasks. Instead each committed batch folds its new events into one
``tasks`` row per task (an upsert that adds counters and keeps the earliest first event and
the latest terminal event), and the list query is a keyset-paged ``SELECT`` on that table.

Only the bodies that matter are decoded: the first event of each task in the batch (for
its task fields), terminal events (``duration_ms``) and ``llm_call`` payloads (cost and
tokens). Everything here runs on the store's worker thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .ingest import parse_timestamp

__all__ = ["SCHEMA", "TaskRow", "fold_rows", "rebuild", "upsert"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    first_ts TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    started_epoch REAL,
    agent_id TEXT,
    project_id TEXT,
    task_type TEXT,
    task_run_id TEXT,
    environment TEXT,
    terminal_ts TEXT,
    terminal_seq INTEGER,
    duration_ms INTEGER,
    n_completed INTEGER NOT NULL DEFAULT 0,
    n_failed INTEGER NOT NULL DEFAULT 0,
    n_escalated INTEGER NOT NULL DEFAULT 0,
    n_requested INTEGER NOT NULL DEFAULT 0,
    n_received INTEGER NOT NULL DEFAULT 0,
    action_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    llm_count INTEGER NOT NULL DEFAULT 0,
    event_count INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    tokens_in REAL NOT NULL DEFAULT 0,
    tokens_out REAL NOT NULL DEFAULT 0,
    status TEXT GENERATED ALWAYS AS (CASE
        WHEN n_completed > 0 THEN 'completed'
        WHEN n_failed > 0 THEN 'failed'
        WHEN n_escalated > 0 THEN 'escalated'
        WHEN n_requested > 0 AND n_received = 0 THEN 'waiting'
        ELSE 'processing' END) VIRTUAL
);
CREATE INDEX IF NOT EXISTS tasks_newest ON tasks(first_ts, first_seq);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks(agent_id, first_ts, first_seq);
"""

_COLUMNS = (
    "task_id, first_ts, first_seq, started_epoch, agent_id, project_id, task_type, "
    "task_run_id, environment, terminal_ts, terminal_seq, duration_ms, n_completed, n_failed, "
    "n_escalated, n_requested, n_received, action_count, error_count, llm_count, event_count, "
    "cost, tokens_in, tokens_out"
)
_FIRST = ("started_epoch", "agent_id", "project_id", "task_type", "task_run_id", "environment")
_TERMINAL = ("terminal_ts", "terminal_seq", "duration_ms")
_SUMS = (
    "n_completed",
    "n_failed",
    "n_escalated",
    "n_requested",
    "n_received",
    "action_count",
    "error_count",
    "llm_count",
    "event_count",
    "cost",
    "tokens_in",
    "tokens_out",
)

_EARLIER = "(excluded.first_ts, excluded.first_seq) < (first_ts, first_seq)"
_LATER_END = (
    "excluded.terminal_ts IS NOT NULL AND (terminal_ts IS NULL OR "
    "(excluded.terminal_ts, excluded.terminal_seq) > (terminal_ts, terminal_seq))"
)
_UPSERT = (
    f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' * 24)}) "
    "ON CONFLICT(task_id) DO UPDATE SET "
    + ", ".join(
        [f"{c} = CASE WHEN {_EARLIER} THEN excluded.{c} ELSE {c} END" for c in _FIRST]
        + [f"{c} = CASE WHEN {_LATER_END} THEN excluded.{c} ELSE {c} END" for c in _TERMINAL]
        + [f"{c} = {c} + excluded.{c}" for c in _SUMS]
        + [
            f"first_seq = CASE WHEN {_EARLIER} THEN excluded.first_seq ELSE first_seq END",
            f"first_ts = CASE WHEN {_EARLIER} THEN excluded.first_ts ELSE first_ts END",
        ]
    )
)

#: One task's contribution of a batch, in ``_COLUMNS`` order (a list while it is built).
TaskRow = list[Any]

_I_FIRST_TS, _I_FIRST_SEQ = 1, 2
_I_TERMINAL_TS, _I_TERMINAL_SEQ, _I_DURATION = 9, 10, 11
_COUNTERS = {
    "task_completed": 12,
    "task_failed": 13,
    "escalated": 14,
    "approval_requested": 15,
    "approval_received": 16,
    "action_started": 17,
}
_I_ERRORS, _I_LLM, _I_EVENTS, _I_COST, _I_IN, _I_OUT = 18, 19, 20, 21, 22, 23


def _decode(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:  # integers wider than 64 bits
        value = json.loads(body)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | int:
    return value if type(value) is int or type(value) is float else 0


def fold_rows(rows: Iterable[Sequence[Any]], first_seq: int) -> list[TaskRow]:
    """Fold stored event rows into one summary contribution per task.

    :param rows: ``(event_id, timestamp, event_type, agent_id, task_id, payload_kind, body)``
        in insertion order, the first one stored with ``seq == first_seq``.
    :return: rows for :func:`upsert`.
    """
    tasks: dict[str, TaskRow] = {}
    firsts: dict[str, bytes] = {}
    seq = first_seq - 1
    for row in rows:
        seq += 1
        task_id = row[4]
        if not task_id:
            continue
        timestamp, event_type = row[1], row[2]
        task = tasks.get(task_id)
        if task is None:
            task = tasks[task_id] = [task_id, timestamp, seq, None, row[3], None, None, None]
            task.extend((None, None, None, None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0))
            firsts[task_id] = row[6]
        elif timestamp < task[_I_FIRST_TS]:
            task[_I_FIRST_TS], task[_I_FIRST_SEQ], task[4] = timestamp, seq, row[3]
            firsts[task_id] = row[6]
        task[_I_EVENTS] += 1
        counter = _COUNTERS.get(event_type)
        if counter is not None:
            task[counter] += 1
        if event_type == "action_failed" or event_type == "task_failed":
            task[_I_ERRORS] += 1
        if (event_type == "task_completed" or event_type == "task_failed") and (
            task[_I_TERMINAL_TS] is None or timestamp >= task[_I_TERMINAL_TS]
        ):
            duration = _decode(row[6]).get("duration_ms")
            task[_I_TERMINAL_TS], task[_I_TERMINAL_SEQ] = timestamp, seq
            task[_I_DURATION] = duration if type(duration) is int else None
        if row[5] == "llm_call":
            payload = _decode(row[6]).get("payload")
            data = payload.get("data") if isinstance(payload, dict) else None
            if isinstance(data, dict):
                task[_I_LLM] += 1
                task[_I_COST] += _number(data.get("cost"))
                task[_I_IN] += _number(data.get("tokens_in"))
                task[_I_OUT] += _number(data.get("tokens_out"))
    for task_id, task in tasks.items():
        first = _decode(firsts[task_id])
        parsed = parse_timestamp(task[_I_FIRST_TS])
        task[3] = parsed.timestamp() if parsed is not None else None
        task[5], task[6] = first.get("project_id"), first.get("task_type")
        task[7], task[8] = first.get("task_run_id"), first.get("environment")
    return list(tasks.values())


def upsert(conn: sqlite3.Connection, rows: list[TaskRow]) -> None:
    """Add ``rows`` (from :func:`fold_rows`) to the ``tasks`` table."""
    if rows:
        conn.executemany(_UPSERT, rows)


def rebuild(conn: sqlite3.Connection, chunk: int = 20_000) -> None:
    """Recompute every summary row from the stored events (for databases made before)."""
    conn.execute("DELETE FROM tasks")
    last = 0
    while True:
        rows = conn.execute(
            "SELECT seq, event_id, timestamp, event_type, agent_id, task_id, payload_kind, body "
            "FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (last, chunk),
        ).fetchall()
        if not rows:
            return
        # fold_rows numbers rows consecutively; stored seqs may have gaps, so fold runs.
        start = 0
        for index in range(1, len(rows) + 1):
            if index == len(rows) or rows[index][0] != rows[index - 1][0] + 1:
                run = rows[start:index]
                upsert(conn, fold_rows((r[1:] for r in run), run[0][0]))
                start = index
        last = rows[-1][0]
