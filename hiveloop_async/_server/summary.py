"""Per-task summary rows, kept up to date at ingest so the task list is paged in SQL.

``GET /v1/tasks`` used to group every event by ``task_id`` on each request, which costs
seconds at 100,000 tasks. Instead each committed batch folds its new events into one
``tasks`` row per task (an upsert that adds counters and keeps the earliest first event and
the latest terminal event), and the list query is a keyset-paged ``SELECT`` on that table.

Rows are keyed by ``task_no``, a number given in order of first appearance, not by the task
id: task ids are random strings, and a B-tree on them makes every batch dirty about one page
per task, each written to the WAL at commit (it doubled the commit's cost). New tasks append
at the end of the table instead, and :class:`TaskSummaries` maps task ids to numbers in
memory (reloaded at start, like the store's set of event ids). Events carry the same number
(``events.task_no``, set at insert from :meth:`TaskSummaries.with_numbers`), and the task
filters of the read API use its index, for the same reason: an index on the random task id
cost about 1.5 µs per ingested event (insert, commit and checkpoint).

The task fields, ``duration_ms`` and the ``llm_call`` cost and tokens are read from the
events as prepared at ingest; only rows read back from the database (a rebuild) have their
bodies decoded. Everything here runs on the store's worker thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .ingest import parse_timestamp

__all__ = ["SCHEMA", "TaskRow", "TaskSummaries", "fold_rows"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_no INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
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
    "task_no, task_id, first_ts, first_seq, started_epoch, agent_id, project_id, task_type, "
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
    f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' * 25)}) "
    "ON CONFLICT(task_no) DO UPDATE SET "
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

#: One task's contribution of a batch, in ``_COLUMNS`` order (a list while it is built);
#: ``task_no`` (index 0) is None until :meth:`TaskSummaries.add` numbers it.
TaskRow = list[Any]

_I_TASK_ID, _I_FIRST_TS, _I_FIRST_SEQ, _I_EPOCH, _I_AGENT = 1, 2, 3, 4, 5
_I_TERMINAL_TS, _I_TERMINAL_SEQ, _I_DURATION = 10, 11, 12
_COUNTERS = {
    "task_completed": 13,
    "task_failed": 14,
    "escalated": 15,
    "approval_requested": 16,
    "approval_received": 17,
    "action_started": 18,
}
_I_ERRORS, _I_LLM, _I_EVENTS, _I_COST, _I_IN, _I_OUT = 19, 20, 21, 22, 23, 24


def _decode(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:  # integers wider than 64 bits
        value = json.loads(body)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | int:
    return value if type(value) is int or type(value) is float else 0


def fold_rows(
    rows: Iterable[Sequence[Any]],
    first_seq: int,
    stored: Sequence[dict[str, Any]] | None = None,
) -> list[TaskRow]:
    """Fold stored event rows into one summary contribution per task (pure CPU).

    :param rows: ``(event_id, timestamp, event_type, agent_id, task_id, payload_kind, body)``
        in insertion order, the first one stored with ``seq == first_seq``.
    :param stored: the events' decoded bodies, aligned with ``rows`` (as
        :func:`~.ingest.prepare_batch` built them); without them, the bodies that matter
        are decoded from the rows.
    :return: rows for :meth:`TaskSummaries.add`, in order of each task's first row.
    """
    tasks: dict[str, TaskRow] = {}
    firsts: dict[str, Any] = {}  # task id -> its first event's body, decoded or not
    counters = _COUNTERS
    blank = (None, None, None, None, None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0)
    for index, row in enumerate(rows):
        task_id = row[4]
        if not task_id:
            continue
        timestamp, event_type = row[1], row[2]
        task = tasks.get(task_id)
        if task is None:
            task = [None, task_id, timestamp, first_seq + index, None, row[3], None, None]
            task += blank
            tasks[task_id] = task
            firsts[task_id] = row[6] if stored is None else stored[index]
        elif timestamp < task[_I_FIRST_TS]:
            task[_I_FIRST_TS], task[_I_FIRST_SEQ] = timestamp, first_seq + index
            task[_I_AGENT] = row[3]
            firsts[task_id] = row[6] if stored is None else stored[index]
        task[_I_EVENTS] += 1
        counter = counters.get(event_type)
        if counter is not None:
            task[counter] += 1
            if event_type == "task_completed" or event_type == "task_failed":
                if event_type == "task_failed":
                    task[_I_ERRORS] += 1
                if task[_I_TERMINAL_TS] is None or timestamp >= task[_I_TERMINAL_TS]:
                    body = _decode(row[6]) if stored is None else stored[index]
                    duration = body.get("duration_ms")
                    task[_I_TERMINAL_TS], task[_I_TERMINAL_SEQ] = timestamp, first_seq + index
                    task[_I_DURATION] = duration if type(duration) is int else None
        elif event_type == "action_failed":
            task[_I_ERRORS] += 1
        if row[5] == "llm_call":
            body = _decode(row[6]) if stored is None else stored[index]
            payload = body.get("payload")
            data = payload.get("data") if isinstance(payload, dict) else None
            if isinstance(data, dict):
                task[_I_LLM] += 1
                task[_I_COST] += _number(data.get("cost"))
                task[_I_IN] += _number(data.get("tokens_in"))
                task[_I_OUT] += _number(data.get("tokens_out"))
    for task_id, task in tasks.items():
        first = firsts[task_id]
        if type(first) is not dict:
            first = _decode(first)
        parsed = parse_timestamp(task[_I_FIRST_TS])
        task[_I_EPOCH] = parsed.timestamp() if parsed is not None else None
        task[6], task[7] = first.get("project_id"), first.get("task_type")
        task[8], task[9] = first.get("task_run_id"), first.get("environment")
    return list(tasks.values())


class TaskSummaries:
    """The writer of the ``tasks`` table, with the map of task ids to row numbers.

    Owned by the store's worker thread (not thread-safe); every method runs SQL on the
    connection given and blocks on it.
    """

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}
        self._next = 1

    def open(self, conn: sqlite3.Connection) -> bool:
        """Create the table, or rebuild it from the events if it is missing or predates
        ``task_no``, then load the task numbers. Runs inside the caller's transaction.

        :return: True if the rows were rebuilt (the task numbers may then differ from those
            the events were stored with).
        :raises sqlite3.Error: if the database refuses the statements.
        """
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        rebuilt = "task_no" not in columns  # no summaries yet, or keyed by task id (before)
        if rebuilt:
            conn.execute("DROP TABLE IF EXISTS tasks")
            _create(conn)
            self.rebuild(conn)
        else:
            _create(conn)
        self.load(conn)
        return rebuilt

    def load(self, conn: sqlite3.Connection) -> None:
        """Read the task numbers from the table (replacing those in memory)."""
        self._numbers = dict(conn.execute("SELECT task_id, task_no FROM tasks"))
        self._next = max(self._numbers.values(), default=0) + 1

    def number(self, task_id: str) -> int | None:
        """The row number of ``task_id``, or None if the task has no row."""
        return self._numbers.get(task_id)

    def number_tasks(
        self,
        rows: Sequence[Sequence[Any]],
        first_seq: int,
        stored: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[TaskRow], list[str]]:
        """Fold event rows not yet inserted (see :func:`fold_rows`) and number their tasks.

        Pure CPU: nothing is written. Give the rows to :meth:`with_numbers` to insert them,
        and the folded rows to :meth:`write`.

        :return: ``(folded rows, ids of the tasks this call numbered)``; if the transaction
            is rolled back, pass the ids to :meth:`forget`.
        """
        folded = fold_rows(rows, first_seq, stored)
        numbers = self._numbers
        added: list[str] = []
        number = self._next
        for task in folded:
            task_id = task[_I_TASK_ID]
            known = numbers.get(task_id)
            if known is None:
                numbers[task_id] = task[0] = number
                number += 1
                added.append(task_id)
            else:
                task[0] = known
        self._next = number
        return folded, added

    def with_numbers(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows`` (event rows, task id at index 4) each with its task's number appended
        (None for events without a numbered task). Pure CPU."""
        number = self._numbers.get
        return [(*row, number(row[4])) for row in rows]

    @staticmethod
    def write(conn: sqlite3.Connection, folded: Sequence[TaskRow]) -> None:
        """Upsert the rows :meth:`number_tasks` folded into the table.

        :raises sqlite3.Error: if the database refuses the write.
        """
        if folded:
            conn.executemany(_UPSERT, folded)

    def add(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[Sequence[Any]],
        first_seq: int,
        stored: Sequence[dict[str, Any]] | None = None,
    ) -> list[str]:
        """Fold already inserted event rows (see :func:`fold_rows`) into the table.

        :return: the ids of the tasks this call numbered; if the transaction is rolled back,
            pass them to :meth:`forget`.
        :raises sqlite3.Error: if the database refuses the write (nothing is numbered then).
        """
        folded, added = self.number_tasks(rows, first_seq, stored)
        try:
            self.write(conn, folded)
        except BaseException:
            self.forget(added)
            raise
        return added

    def numbers(self) -> dict[str, int]:
        """A copy of the task id to row number map."""
        return dict(self._numbers)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop the numbers of tasks whose rows were rolled back."""
        numbers = self._numbers
        for task_id in task_ids:
            numbers.pop(task_id, None)

    def clear(self, conn: sqlite3.Connection) -> None:
        """Delete every summary row."""
        conn.execute("DELETE FROM tasks")
        self._numbers.clear()
        self._next = 1

    def rebuild(self, conn: sqlite3.Connection, chunk: int = 20_000) -> None:
        """Recompute every summary row from the stored events (inside the caller's
        transaction)."""
        self.clear(conn)
        last = 0
        while True:
            rows = conn.execute(
                "SELECT seq, event_id, timestamp, event_type, agent_id, task_id, payload_kind, "
                "body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, chunk),
            ).fetchall()
            if not rows:
                return
            # fold_rows numbers rows consecutively; stored seqs may have gaps, so fold runs.
            start = 0
            for index in range(1, len(rows) + 1):
                if index == len(rows) or rows[index][0] != rows[index - 1][0] + 1:
                    run = rows[start:index]
                    self.add(conn, [r[1:] for r in run], run[0][0])
                    start = index
            last = rows[-1][0]


def _create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
