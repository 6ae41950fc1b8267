"""SQLite storage for the local server, owned by one dedicated worker thread.

The event loop never touches SQLite. Every database operation is a *job* (a function of the
connection) put on a queue and executed by the ``hiveloop-async-db`` thread, which owns the
only connection. Consecutive write jobs are grouped into one transaction (one commit for many
ingest requests under load). Callers on an event loop ``await`` the job; callers on other
threads block on it.

File databases use WAL with ``synchronous=NORMAL``. Events are deduplicated on ``event_id``
(``INSERT OR IGNORE``): the local server has one tenant.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import queries, summary
from .ingest import (
    EVENT_COLUMNS,
    AgentUpdate,
    BodyRejected,
    PreparedBatch,
    expand_event,
    prepare_request,
)

__all__ = ["Store"]

T = TypeVar("T")


# Only the indexed fields, the payload kind and the event id (for deduplication at startup)
# get columns; every other filterable field is read from the JSON body by the queries that
# need it (see queries.py). Binding few values per row is what makes ingest fast: SQLite
# computes even VIRTUAL generated columns on insert, so they are not used either.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    event_type TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    task_id TEXT,
    payload_kind TEXT,
    body BLOB NOT NULL,
    task_no INTEGER
);
"""

# The task index is on the task's number (see summary.py), not on the random task id: new
# tasks append at the end of the B-tree instead of dirtying a page each per commit.
_INDEXES = """
CREATE INDEX IF NOT EXISTS events_task_no ON events(task_no) WHERE task_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_agent ON events(agent_id, timestamp);
CREATE INDEX IF NOT EXISTS events_type ON events(event_type, timestamp);
CREATE INDEX IF NOT EXISTS events_timestamp ON events(timestamp);
CREATE INDEX IF NOT EXISTS events_llm ON events(timestamp) WHERE payload_kind = 'llm_call';
"""

_AGENTS = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    agent_type TEXT,
    agent_version TEXT,
    framework TEXT,
    runtime TEXT,
    sdk_version TEXT,
    environment TEXT,
    grp TEXT,
    first_seen TEXT,
    first_seen_epoch REAL,
    last_seen TEXT,
    last_seen_epoch REAL,
    last_heartbeat TEXT,
    last_heartbeat_epoch REAL,
    last_event_at TEXT,
    last_event_epoch REAL,
    last_event_type TEXT,
    last_task_id TEXT,
    last_project_id TEXT,
    stuck_threshold INTEGER NOT NULL DEFAULT 300
);
"""

_INSERT_EVENT = (
    "INSERT INTO events (event_id, timestamp, event_type, agent_id, task_id, payload_kind, body, "
    "task_no) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

#: WAL size (in pages) that triggers the writer's own checkpoint.
_WAL_PAGES = 32768

#: At most this many queued write jobs share one transaction.
_MAX_GROUP = 64


class _Closed(RuntimeError):
    """Raised for jobs still queued when the store stopped."""


class _Job:
    __slots__ = ("fn", "future", "write")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], write: bool) -> None:
        self.fn = fn
        self.write = write
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class Store:
    """The local server's event store: one SQLite connection on one worker thread.

    Creating a Store starts its worker thread and returns at once (the database is opened on
    that thread, so constructing one never blocks an event loop on disk I/O; an open failure
    is raised by the first job). The ``async`` methods may be awaited on any event loop; the
    ``*_sync`` methods block the calling thread and must not be called on an event loop.

    :param path: a database file path, or ``":memory:"``.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self._path = os.fspath(path)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._failure: BaseException | None = None
        self._close_lock = threading.Lock()
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._count = 0  # published after each commit; read from any thread
        self._pending_count = 0  # worker thread only
        self._seen: set[str] = set()  # worker thread only: the stored event ids
        self._group_added: list[str] = []  # worker thread only
        self._summaries = summary.TaskSummaries()  # worker thread only
        self._group_tasks: list[str] = []  # worker thread only: tasks numbered this group
        self._cursors = queries.CursorCache()  # worker thread only
        self._checkpointer: _Checkpointer | None = None  # worker thread only
        self._count_changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="hiveloop-async-db", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        """The database path given at construction (``":memory:"`` for an in-memory store)."""
        return self._path

    # ------------------------------------------------------------------ worker thread

    def _open(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self._path))
            os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            # Most checkpoint work runs on its own thread (see _Checkpointer); the writer's
            # own, rarer automatic checkpoint then has little left to copy and lets the WAL
            # start over, which keeps the WAL file bounded under continuous load.
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_PAGES * 4096}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        conn.executescript(_SCHEMA + _AGENTS)
        # One transaction: a database written by an earlier version gets the task number
        # column, its summary table (rebuilt if missing or keyed by task id) and the events'
        # numbers all at once, or not at all.
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            numbered = "task_no" in columns
            if not numbered:  # written before events carried their task's number
                conn.execute("ALTER TABLE events ADD COLUMN task_no INTEGER")
            if self._summaries.open(conn) or not numbered:
                _number_events(conn, self._summaries.numbers())
            for statement in _INDEXES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._seen = {row[0] for row in conn.execute("SELECT event_id FROM events")}
        self._pending_count = _count_events(conn)
        self._publish_count(conn, failed=False)
        if self._path != ":memory:":
            self._checkpointer = _Checkpointer(self._path)
        return conn

    def _run(self) -> None:
        try:
            conn = self._open()
        except Exception as exc:
            self._fail_all(exc)
            return
        backlog: list[_Job | None] = []
        try:
            while True:
                job = backlog.pop(0) if backlog else self._jobs.get()
                if job is None:
                    break
                if not job.write:
                    self._run_read(conn, job)
                    continue
                group = [job]
                while len(group) < _MAX_GROUP:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None or not more.write:
                        backlog.append(more)
                        break
                    group.append(more)
                self._run_writes(conn, group)
        finally:
            if self._checkpointer is not None:
                self._checkpointer.stop()
            conn.close()
            self._fail_all(_Closed("the store is closed"))

    def _fail_all(self, exc: BaseException) -> None:
        with self._close_lock:
            self._closed = True
            if self._failure is None:
                self._failure = exc
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(exc)
        if not self._stopped.done():
            self._stopped.set_result(None)

    @staticmethod
    def _run_read(conn: sqlite3.Connection, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            result = job.fn(conn)
        except Exception as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _run_writes(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        outcomes: list[tuple[_Job, bool, Any]] = []
        running: set[int] = set()
        self._group_added = []
        self._group_tasks = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                if not job.future.set_running_or_notify_cancel():
                    continue
                running.add(id(job))
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, False, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, True, result))
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed (locked, I/O error, ...)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._seen.difference_update(self._group_added)
            self._summaries.forget(self._group_tasks)
            for job in group:
                if id(job) in running or job.future.set_running_or_notify_cancel():
                    job.future.set_exception(exc)
            self._publish_count(conn, failed=True)
            return
        self._publish_count(conn, failed=any(not ok for _, ok, _ in outcomes))
        if self._checkpointer is not None:
            self._checkpointer.committed(sum(1 for _, ok, _ in outcomes if ok))
        for job, ok, value in outcomes:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _publish_count(self, conn: sqlite3.Connection, *, failed: bool) -> None:
        if failed:
            self._pending_count = _count_events(conn)
        with self._count_changed:
            self._count = self._pending_count
            self._count_changed.notify_all()

    # ------------------------------------------------------------------ job submission

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(connection)`` for the worker thread; never blocks.

        Write jobs run inside a transaction shared with other queued writes (each in its own
        savepoint, so one failing job does not undo the others) and resolve after the commit.

        :raises RuntimeError: if the store is closed.
        """
        job = _Job(fn, write)
        with self._close_lock:
            if self._closed:
                if self._failure is not None and not isinstance(self._failure, _Closed):
                    raise RuntimeError(f"the store could not be used: {self._failure}")
                raise RuntimeError("the store is closed")
            self._jobs.put(job)
        return job.future

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``fn(connection)`` on the worker thread and await its result.

        Does not block the event loop. Cancelling the awaiting task cancels the job if it has
        not started yet.

        :raises Exception: whatever ``fn`` raised; RuntimeError if the store is closed.
        """
        return await asyncio.wrap_future(self.submit(fn, write=write))

    def call_sync(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        write: bool = False,
        timeout: float | None = 30.0,
    ) -> T:
        """Run ``fn(connection)`` on the worker thread, blocking the calling thread.

        :raises TimeoutError: if the job does not finish within ``timeout`` seconds.
        :raises Exception: whatever ``fn`` raised; RuntimeError if the store is closed.
        """
        return self.submit(fn, write=write).result(timeout)

    # ------------------------------------------------------------------ writes

    def _write_batch(self, conn: sqlite3.Connection, batch: PreparedBatch) -> int:
        # Deduplication uses the in-memory set of stored event ids: a unique index on random
        # ids would cost more than everything else in the insert. Worker thread only.
        seen = self._seen
        rows = batch.rows
        stored = batch.stored
        ids = [row[0] for row in rows]
        added: list[str] = []
        fresh: list[tuple[Any, ...]] = []
        fresh_stored: list[dict[str, Any]] | None = None
        if seen.isdisjoint(ids) and len(set(ids)) == len(ids):  # all new: the usual case
            seen.update(ids)
            added, fresh = ids, rows
            fresh_stored = stored if len(stored) == len(rows) else None
        elif len(stored) == len(rows):  # the decoded bodies came along: keep them aligned
            fresh_stored = []
            for row, body in zip(rows, stored, strict=True):
                event_id = row[0]
                if event_id not in seen:
                    seen.add(event_id)
                    added.append(event_id)
                    fresh.append(row)
                    fresh_stored.append(body)
        else:
            for row in rows:
                event_id = row[0]
                if event_id not in seen:
                    seen.add(event_id)
                    added.append(event_id)
                    fresh.append(row)
        tasks: list[str] = []
        try:
            if fresh:
                top = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
                summaries = self._summaries
                folded, tasks = summaries.number_tasks(fresh, top + 1, fresh_stored)
                conn.executemany(_INSERT_EVENT, summaries.with_numbers(fresh))
                summaries.write(conn, folded)
            for update in batch.agents:
                _upsert_agent(conn, update)
        except BaseException:
            seen.difference_update(added)
            self._summaries.forget(tasks)
            raise
        self._group_added.extend(added)
        self._group_tasks.extend(tasks)
        self._pending_count += len(fresh)
        return len(fresh)

    def _ingest(
        self, conn: sqlite3.Connection, raw: bytes, content_type: str | None, received_at: str
    ) -> tuple[int, dict[str, Any]]:
        try:
            batch = prepare_request(raw, content_type, received_at)
        except BodyRejected as exc:
            return exc.status, exc.body
        if batch.rows:
            self._write_batch(conn, batch)
        return batch.status, batch.response()

    async def ingest(
        self, raw: bytes, content_type: str | None, received_at: str
    ) -> tuple[int, dict[str, Any]]:
        """Run the whole ``POST /v1/ingest`` pipeline on the worker thread.

        Decodes and validates ``raw`` (HiveBoard's rules), stores the accepted events and
        returns the HTTP status and JSON body to answer with. Does not block the event loop.

        :raises sqlite3.Error: if the database refuses the write.
        """
        return await self.call(
            lambda conn: self._ingest(conn, raw, content_type, received_at), write=True
        )

    async def insert(self, batch: PreparedBatch) -> int:
        """Store a prepared ingest batch (events and agent rows) in one transaction.

        Does not block the event loop; resolves after the commit.

        :return: the number of new events (duplicates of stored event ids are skipped).
        :raises sqlite3.Error: if the database refuses the write.
        """
        return await self.call(lambda conn: self._write_batch(conn, batch), write=True)

    def insert_sync(self, batch: PreparedBatch) -> int:
        """Blocking variant of :meth:`insert`, for threads without an event loop."""
        return self.call_sync(lambda conn: self._write_batch(conn, batch), write=True)

    def _clear(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM agents")
        self._summaries.clear(conn)
        self._seen.clear()
        self._cursors.clear()
        self._pending_count = 0

    async def clear(self) -> None:
        """Delete every stored event and agent. Does not block the event loop."""
        await self.call(self._clear, write=True)

    def clear_sync(self) -> None:
        """Blocking variant of :meth:`clear`."""
        self.call_sync(self._clear, write=True)

    # ------------------------------------------------------------------ test helpers

    @staticmethod
    def _events(
        conn: sqlite3.Connection,
        event_type: str | None,
        task_id: str | None,
        agent_id: str | None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("event_type", event_type),
            ("task_id", task_id),
            ("agent_id", agent_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        return [expand_event(row) for row in conn.execute(sql, params)]

    async def events(
        self,
        *,
        event_type: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every stored event (as the read endpoints return them), in insertion order.

        Within one request, events are inserted in timestamp order (as HiveBoard does).
        Does not block the event loop. The optional arguments filter on exact values.
        """
        return await self.call(lambda conn: self._events(conn, event_type, task_id, agent_id))

    def events_sync(
        self,
        *,
        event_type: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Blocking variant of :meth:`events`; must not be called on an event loop."""
        return self.call_sync(lambda conn: self._events(conn, event_type, task_id, agent_id))

    @property
    def queued_jobs(self) -> int:
        """Jobs waiting for the worker thread (approximate; never blocks)."""
        return self._jobs.qsize()

    @property
    def stored_count(self) -> int:
        """The number of stored events as of the last commit; never blocks."""
        return self._count

    async def event_count(self) -> int:
        """The exact number of stored events (a ``COUNT(*)``). Does not block the loop."""
        return await self.call(_count_events)

    def event_count_sync(self) -> int:
        """Blocking variant of :meth:`event_count`."""
        return self.call_sync(_count_events)

    def wait_for_count_sync(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` events are stored or ``timeout`` seconds pass.

        :return: True if the count was reached.
        """
        with self._count_changed:
            return self._count_changed.wait_for(lambda: self._count >= n, timeout)

    async def wait_for_count(self, n: int, timeout: float = 10.0) -> bool:
        """Wait (without blocking the loop) until at least ``n`` events are stored.

        :return: True if the count was reached within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._count < n:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # ------------------------------------------------------------------ read endpoints

    async def list_events(self, query: queries.EventQuery) -> dict[str, Any]:
        """``GET /v1/events`` (see :func:`queries.list_events`); does not block the loop."""
        return await self.call(
            lambda conn: queries.list_events(
                conn, query, self._cursors, task_number=self._summaries.number
            )
        )

    async def list_tasks(self, query: queries.TaskQuery) -> dict[str, Any]:
        """``GET /v1/tasks`` (see :func:`queries.list_tasks`); does not block the loop."""
        return await self.call(lambda conn: queries.list_tasks(conn, query, self._summaries.number))

    async def task_timeline(
        self, task_id: str, *, action_tree: bool = True
    ) -> dict[str, Any] | None:
        """``GET /v1/tasks/{id}/timeline``, or None if unknown; does not block the loop."""
        return await self.call(
            lambda conn: queries.task_timeline(
                conn, task_id, action_tree=action_tree, task_number=self._summaries.number
            )
        )

    async def list_agents(self, query: queries.AgentQuery) -> dict[str, Any]:
        """``GET /v1/agents``; does not block the loop."""
        return await self.call(lambda conn: queries.list_agents(conn, query))

    async def get_agent(self, agent_id: str) -> dict[str, Any] | None:
        """``GET /v1/agents/{id}``, or None if unknown; does not block the loop."""
        return await self.call(lambda conn: queries.get_agent(conn, agent_id))

    async def list_llm_calls(self, query: queries.LlmCallQuery) -> dict[str, Any]:
        """``GET /v1/llm-calls``; does not block the loop."""
        return await self.call(
            lambda conn: queries.list_llm_calls(
                conn, query, self._cursors, task_number=self._summaries.number
            )
        )

    async def cost_summary(
        self, *, agent_id: str | None, project_id: str | None, range_: str
    ) -> dict[str, Any]:
        """``GET /v1/cost``; does not block the loop."""
        return await self.call(
            lambda conn: queries.cost_summary(
                conn, agent_id=agent_id, project_id=project_id, range_=range_
            )
        )

    async def agent_pipeline(self, agent_id: str) -> dict[str, Any]:
        """``GET /v1/agents/{id}/pipeline``; does not block the loop."""
        return await self.call(lambda conn: queries.agent_pipeline(conn, agent_id))

    async def fleet_pipeline(self) -> dict[str, Any]:
        """``GET /v1/pipeline``; does not block the loop."""
        return await self.call(queries.fleet_pipeline)

    async def list_projects(self) -> dict[str, Any]:
        """``GET /v1/projects``; does not block the loop."""
        return await self.call(queries.list_projects)

    async def get_project(self, project_id: str) -> dict[str, Any] | None:
        """``GET /v1/projects/{id}``, or None if unknown; does not block the loop."""
        return await self.call(lambda conn: queries.get_project(conn, project_id))

    async def events_after(self, seq: int, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, event)`` pairs stored after ``seq``, oldest first; does not block the loop."""
        return await self.call(lambda conn: queries.events_after(conn, seq, limit))

    async def last_seq(self) -> int:
        """The insertion number of the newest event (0 if none); does not block the loop."""
        return await self.call(queries.last_seq)

    # ------------------------------------------------------------------ shutdown

    def _request_stop(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._jobs.put(None)

    def close(self) -> None:
        """Finish queued jobs, close the connection and stop the worker; idempotent.

        Blocks the calling thread until the worker has stopped (do not call it on an event
        loop; use :meth:`aclose` there).
        """
        self._request_stop()
        self._stopped.result()
        self._thread.join()

    async def aclose(self) -> None:
        """Like :meth:`close`, awaited without blocking the event loop; idempotent."""
        self._request_stop()
        await asyncio.wrap_future(self._stopped)


class _Checkpointer:
    """Runs WAL checkpoints for a file database on a thread of its own.

    A commit only appends to the WAL; this thread copies the WAL back into the database file
    (``PASSIVE`` mode, which never blocks the writer) after every few commits, so the
    writer's own automatic checkpoint finds little left to do. Its connection never reads or
    writes rows.
    """

    #: Write jobs committed between two checkpoints.
    EVERY = 16

    def __init__(self, path: str) -> None:
        self._path = path
        self._pending = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="hiveloop-async-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self, jobs: int) -> None:
        """Called by the writer after a commit; wakes the thread every :attr:`EVERY` jobs."""
        self._pending += jobs
        if self._pending >= self.EVERY:
            self._pending = 0
            self._wake.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    break
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # e.g. busy: the next round retries
                    pass
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the thread and wait for it (the writer's close does the final checkpoint)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()


def _number_events(conn: sqlite3.Connection, numbers: dict[str, int]) -> None:
    """Set every event's ``task_no`` from ``numbers`` (inside the caller's transaction),
    then drop the index on task ids that the task number index replaced."""
    conn.execute("CREATE TEMP TABLE task_numbers (task_id TEXT PRIMARY KEY, task_no INTEGER)")
    try:
        conn.executemany("INSERT INTO task_numbers VALUES (?, ?)", numbers.items())
        conn.execute(
            "UPDATE events SET task_no = (SELECT task_no FROM task_numbers "
            "WHERE task_numbers.task_id = events.task_id) WHERE task_id IS NOT NULL"
        )
    finally:
        conn.execute("DROP TABLE task_numbers")
    conn.execute("DROP INDEX IF EXISTS events_task")


def _count_events(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _later(a: float | None, b: float | None) -> bool:
    """True when epoch ``a`` is at or after ``b`` (unknown times never win over known ones)."""
    if a is None:
        return b is None
    return b is None or a >= b


def _earlier(a: float | None, b: float | None) -> bool:
    """True when epoch ``a`` is strictly before ``b`` (unknown times never win)."""
    return a is not None and (b is None or a < b)


def _upsert_agent(conn: sqlite3.Connection, update: AgentUpdate) -> None:
    row = conn.execute(
        "SELECT first_seen, first_seen_epoch, last_seen, last_seen_epoch, last_heartbeat, "
        "last_heartbeat_epoch, last_event_at, last_event_epoch, last_event_type, last_task_id, "
        "last_project_id, stuck_threshold FROM agents WHERE agent_id = ?",
        (update.agent_id,),
    ).fetchone()
    if row is None:  # a new agent: nothing seen yet, HiveBoard's default stuck threshold
        row = (None,) * 11 + (300,)
    (
        first_seen,
        first_epoch,
        last_seen,
        last_epoch,
        heartbeat,
        heartbeat_epoch,
        event_at,
        event_epoch,
        event_type,
        task_id,
        project_id,
        threshold,
    ) = row
    if first_seen is None or (
        _later(first_epoch, update.first_seen[1]) and (first_epoch != update.first_seen[1])
    ):
        first_seen, first_epoch = update.first_seen
    if last_seen is None or _later(update.last_seen[1], last_epoch):
        last_seen, last_epoch = update.last_seen
    if update.last_heartbeat is not None and (
        heartbeat is None or _later(update.last_heartbeat[1], heartbeat_epoch)
    ):
        heartbeat, heartbeat_epoch = update.last_heartbeat
    if update.last_event is not None and (
        event_at is None or _later(update.last_event[1], event_epoch)
    ):
        event_at, event_epoch, event_type = update.last_event[:3]
        task_id = update.last_event[3] or task_id
        project_id = update.last_event[4] or project_id
    if update.stuck_threshold is not None:
        threshold = update.stuck_threshold
    conn.execute(
        "INSERT OR REPLACE INTO agents (agent_id, agent_type, agent_version, framework, "
        "runtime, sdk_version, environment, grp, first_seen, first_seen_epoch, last_seen, "
        "last_seen_epoch, last_heartbeat, last_heartbeat_epoch, last_event_at, "
        "last_event_epoch, last_event_type, last_task_id, last_project_id, stuck_threshold) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            update.agent_id,
            update.agent_type,
            update.agent_version,
            update.framework,
            update.runtime,
            update.sdk_version,
            update.environment,
            update.group,
            first_seen,
            first_epoch,
            last_seen,
            last_epoch,
            heartbeat,
            heartbeat_epoch,
            event_at,
            event_epoch,
            event_type,
            task_id,
            project_id,
            threshold,
        ),
    )
