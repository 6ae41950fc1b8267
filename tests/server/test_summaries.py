"""The task summary table across restarts and older database layouts (``summary.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from hiveloop_async._server.ingest import prepare_request
from hiveloop_async._server.queries import EventQuery, LlmCallQuery, TaskQuery
from hiveloop_async._server.store import Store

from .helpers import batch, event

pytestmark = pytest.mark.anyio


def _llm(task_id: str) -> dict[str, Any]:
    data = {"name": "turn", "model": "m", "tokens_in": 100, "tokens_out": 7, "cost": 0.25}
    return event(task_id=task_id, payload={"kind": "llm_call", "data": data})


async def _insert(store: Store, *events: dict[str, Any], agent_id: str = "agent-1") -> None:
    body = orjson.dumps(batch(*events, agent_id=agent_id))
    assert await store.insert(prepare_request(body, "application/json")) == len(events)


async def _tasks(store: Store, **filters: Any) -> list[dict[str, Any]]:
    answer = await store.list_tasks(TaskQuery(**filters))
    data: list[dict[str, Any]] = answer["data"]
    return data


async def test_a_task_continued_after_a_restart_keeps_one_row_and_its_cursor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = Store(path)
    await _insert(
        store,
        event("task_started", task_id="t0"),
        event("task_started", task_id="t1", project_id="p", task_type="lead"),
        event("action_started", task_id="t1", action_id="a1"),
        _llm("t1"),
    )
    await store.aclose()

    store = Store(path)
    try:
        await _insert(
            store,
            _llm("t1"),
            event("task_completed", task_id="t1", status="success", duration_ms=900),
            event("task_started", task_id="t2", project_id="p"),
        )
        t2, t1, t0 = await _tasks(store)
        assert (t0["task_id"], t1["task_id"], t2["task_id"]) == ("t0", "t1", "t2")
        assert (t0["derived_status"], t0["action_count"], t0["llm_call_count"]) == (
            "processing",
            0,
            0,
        )
        assert (t1["derived_status"], t1["duration_ms"], t1["project_id"]) == (
            "completed",
            900,
            "p",
        )
        assert (t1["action_count"], t1["llm_call_count"], t1["total_tokens_in"]) == (1, 2, 200)
        assert t1["total_cost"] == pytest.approx(0.5)
        # The cursor of a task untouched since the restart still finds its place.
        first = await store.list_tasks(TaskQuery(limit=1, sort="oldest"))
        assert [t["task_id"] for t in first["data"]] == ["t0"]
        cursor = first["pagination"]["cursor"]
        second = await store.list_tasks(TaskQuery(limit=2, sort="oldest", cursor=cursor))
        assert [t["task_id"] for t in second["data"]] == ["t1", "t2"]
        assert second["pagination"]["has_more"] is False
    finally:
        await store.aclose()


_OLD_TASKS = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    first_ts TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    event_count INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tasks VALUES ('stale', '2020-01-01T00:00:00Z', 1, 99);
"""


def _rewrite(path: Path, *statements: str) -> None:
    """Run ``statements`` on a closed store's file: the layout an older version left."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.executescript(statement)
    finally:
        conn.close()


@pytest.mark.parametrize("layout", ["no summaries", "summaries by task id"])
async def test_an_older_database_gets_its_summaries_rebuilt(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "events.db"
    store = Store(path)
    await _insert(
        store,
        event("task_started", task_id="t1", project_id="p"),
        event("action_failed", task_id="t1", action_id="a1"),
        _llm("t1"),
        event("task_failed", task_id="t1", duration_ms=40),
    )
    await _insert(store, event("task_started", task_id="t2"), agent_id="agent-2")
    expected = await _tasks(store)
    await store.aclose()
    assert [t["task_id"] for t in expected] == ["t2", "t1"]

    _rewrite(path, "DROP TABLE tasks", *([_OLD_TASKS] if layout == "summaries by task id" else []))

    store = Store(path)
    try:
        assert await _tasks(store) == expected
        assert [t["task_id"] for t in await _tasks(store, agent_id="agent-2")] == ["t2"]
        assert [t["task_id"] for t in await _tasks(store, status="failed")] == ["t1"]
        await _insert(store, event("task_completed", task_id="t2", duration_ms=5))
        assert [t["derived_status"] for t in await _tasks(store)] == ["completed", "failed"]
    finally:
        await store.aclose()


@pytest.mark.parametrize("summaries", ["kept", "missing"])
async def test_events_written_before_task_numbers_get_numbered(
    tmp_path: Path, summaries: str
) -> None:
    path = tmp_path / "events.db"
    store = Store(path)
    await _insert(
        store,
        event("task_started", task_id="t1"),
        _llm("t1"),
        event("task_started", task_id="t2"),
        event("heartbeat"),
    )
    await store.aclose()

    _rewrite(  # the layout before events carried a task number
        path,
        "DROP INDEX events_task_no",
        "ALTER TABLE events DROP COLUMN task_no",
        "CREATE INDEX events_task ON events(task_id) WHERE task_id IS NOT NULL",
        *(["DROP TABLE tasks"] if summaries == "missing" else []),
    )

    store = Store(path)
    try:
        timeline = await store.task_timeline("t1")
        assert timeline is not None
        assert len(timeline["events"]) == 2
        page = await store.list_events(EventQuery(task_id="t2"))
        assert [e["event_type"] for e in page["data"]] == ["task_started"]
        calls = await store.list_llm_calls(LlmCallQuery(task_id="t1"))
        assert [c["task_id"] for c in calls["data"]] == ["t1"]
        assert (await store.list_llm_calls(LlmCallQuery(task_id="t2")))["data"] == []
        await _insert(store, event("task_completed", task_id="t1"), _llm("t3"))
        timeline = await store.task_timeline("t1")
        assert timeline is not None
        assert len(timeline["events"]) == 3
        assert await store.task_timeline("unknown") is None
        assert (await store.list_events(EventQuery(task_id="unknown")))["data"] == []
        calls = await store.list_llm_calls(LlmCallQuery(task_id="t3"))
        assert [c["task_id"] for c in calls["data"]] == ["t3"]
    finally:
        await store.aclose()
    conn = sqlite3.connect(path)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "events_task_no" in names
        assert "events_task" not in names
        unnumbered = conn.execute(
            "SELECT COUNT(*) FROM events WHERE task_id IS NOT NULL AND task_no IS NULL"
        ).fetchone()[0]
        assert unnumbered == 0
    finally:
        conn.close()


async def test_rebuilt_summaries_renumber_the_events(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = Store(path)
    await _insert(store, event("task_started", task_id="t1"), _llm("t1"))
    await _insert(store, event("task_started", task_id="t2"))
    await store.aclose()

    # Numbers the rebuild will not give again (e.g. after gaps).
    _rewrite(path, "UPDATE events SET task_no = task_no + 100", "DROP TABLE tasks")

    store = Store(path)
    try:
        timeline = await store.task_timeline("t1")
        assert timeline is not None
        assert len(timeline["events"]) == 2
        page = await store.list_events(EventQuery(task_id="t2"))
        assert [e["event_type"] for e in page["data"]] == ["task_started"]
    finally:
        await store.aclose()
