"""The server's lifecycle and Python API: ``serve``, ServerThread, persistence, the event loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hiveloop_async._server import LocalServer, ServerThread, Store, start_server

from .helpers import KEY, batch, event, get, ingest, read_line

_ROOT = Path(__file__).resolve().parents[2]
_BANNER = re.compile(r"hiveloop-async server listening on (http://127\.0\.0\.1:\d+) \(db: (.+)\)\n")


def _http(method: str, url: str, body: Any = None, key: str | None = KEY) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def serve() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``python -m hiveloop_async serve ...`` processes; kill any left at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _spawn(
    started: list[subprocess.Popen[bytes]], *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "hiveloop_async", "serve", "--port", "0", *args],
        cwd=_ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started.append(process)
    line = read_line(process)
    match = _BANNER.fullmatch(line)
    assert match is not None, line
    return process, match.group(1), match.group(2)


def test_serve_with_default_database_keys_and_sigterm(
    serve: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    process, url, db = _spawn(serve, "--api-key", "hb_only", env={"XDG_DATA_HOME": str(tmp_path)})
    assert db == str(tmp_path / "hiveloop-async" / "events.db")
    assert Path(db).exists()
    assert _http("GET", f"{url}/health", key=None) == (200, {"status": "ok"})
    body = batch(event(task_id="t1"))
    assert _http("POST", f"{url}/v1/ingest", body, key="hb_other")[0] == 401
    status, answer = _http("POST", f"{url}/v1/ingest", body, key="hb_only")
    assert (status, answer["accepted"]) == (200, 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None and b"Traceback" not in process.stderr.read()


def test_serve_in_memory_with_rate_limit_stops_on_sigint(
    serve: list[subprocess.Popen[bytes]],
) -> None:
    process, url, db = _spawn(serve, "--memory", "--rate-limit", "1")
    assert db == ":memory:"
    statuses = [_http("POST", f"{url}/v1/ingest", batch(event()))[0]]
    while len(statuses) < 20 and 429 not in statuses:  # a request within the same second
        statuses.append(_http("POST", f"{url}/v1/ingest", batch(event()))[0])
    assert statuses[0] == 200 and 429 in statuses
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0


def test_serve_refuses_a_non_loopback_host_without_a_key(
    serve: list[subprocess.Popen[bytes]],
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "hiveloop_async", "serve", "--host", "0.0.0.0", "--memory"],
        cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert b"host must be a loopback address" in completed.stderr


# --------------------------------------------------------------------------- Python API


def test_server_thread_helpers(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    srv = ServerThread(db=db)
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.url
    with srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.host == "127.0.0.1"
        first, second = event("task_started", task_id="a"), event("custom", task_id="b")
        assert _http("POST", f"{srv.url}/v1/ingest", batch(first, second))[0] == 200
        assert srv.wait_for_events(2, timeout=10)
        assert not srv.wait_for_events(3, timeout=0.01)
        assert srv.event_count() == 2
        assert [e["event_id"] for e in srv.events()] == [first["event_id"], second["event_id"]]
        assert [e["event_id"] for e in srv.events(task_id="b")] == [second["event_id"]]
        assert srv.events(event_type="task_started")[0]["event_id"] == first["event_id"]
        assert srv.requests == {200: 1}
        assert srv.store.path == str(db)
        with pytest.raises(RuntimeError, match="already"):
            srv.start()
        srv.clear()
        assert (srv.event_count(), srv.requests) == (0, {})
    srv.stop()  # idempotent
    srv.stop()
    assert db.exists()


def test_server_thread_reports_start_failures() -> None:
    with ServerThread(memory=True) as running:
        busy = ServerThread(port=running.port)
        with pytest.raises(RuntimeError, match="failed to start") as info:
            busy.start()
        assert isinstance(info.value.__cause__, OSError)
        busy.stop()
    with pytest.raises(ValueError, match="loopback"):
        ServerThread(host="10.0.0.1")
    with pytest.raises(ValueError, match="either"):
        ServerThread(db="x.db", memory=True)


@pytest.mark.anyio
async def test_start_server_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await start_server(host="192.168.1.2")
    with pytest.raises(ValueError, match="rate_limit"):
        await start_server(rate_limit=0)


@pytest.mark.anyio
async def test_events_persist_and_stay_deduplicated_across_restarts(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = tmp_path / "nested" / "events.db"
    kept = event("task_started", task_id="t1")
    async with await start_server(db=db) as srv:
        assert (await ingest(http, srv, batch(kept))).status == 200
    async with await start_server(db=db) as srv:
        assert await srv.event_count() == 1
        again = await ingest(http, srv, batch(kept, event("task_completed", task_id="t1")))
        assert again.body["accepted"] == 2
        assert await srv.event_count() == 2
        tasks = (await get(http, srv, "/v1/tasks")).body["data"]
        assert [(t["task_id"], t["derived_status"]) for t in tasks] == [("t1", "completed")]
        agents = (await get(http, srv, "/v1/agents")).body["data"]
        assert [a["agent_id"] for a in agents] == ["agent-1"]


@pytest.mark.anyio
async def test_sqlite_runs_on_the_store_thread_only(server: LocalServer) -> None:
    worker = await server.store.call(lambda conn: threading.get_ident())
    assert worker != threading.get_ident()
    assert threading.current_thread().name != "hiveloop-async-db"
    names = await server.store.call(lambda conn: threading.current_thread().name)
    assert names == "hiveloop-async-db"


@pytest.mark.anyio
async def test_the_loop_answers_while_an_ingest_waits_for_the_database(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    """A large ingest held up in the store does not hold up the event loop."""
    entered = threading.Event()
    release = threading.Event()

    def occupy(conn: object) -> None:
        entered.set()
        release.wait(60)

    blocker = server.store.submit(occupy)
    try:
        for _ in range(10_000):  # bounded wait until the worker is inside ``occupy``
            if entered.is_set():
                break
            await asyncio.sleep(0.001)
        assert entered.is_set()
        big = batch(*[event(payload={"blob": "x" * 20_000, "i": i}) for i in range(500)])
        pending = asyncio.ensure_future(ingest(http, server, big))
        for _ in range(10_000):  # until the ingest job is queued behind ``occupy``
            if server.store.queued_jobs >= 1:
                break
            await asyncio.sleep(0.001)
        assert server.store.queued_jobs >= 1
        health = await get(http, server, "/health", key=None)
        assert (health.status, health.body) == (200, {"status": "ok"})
        assert not pending.done()  # answered while the 10 MB ingest was still waiting
    finally:
        release.set()
    answer = await pending
    assert (answer.status, answer.body["accepted"]) == (200, 500)
    await asyncio.wrap_future(blocker)
    assert await server.event_count() == 500


def test_store_can_be_used_from_plain_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "plain.db")
    try:
        assert store.event_count_sync() == 0
        assert store.call_sync(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0]) == (
            "wal"
        )
        with pytest.raises(ZeroDivisionError):
            store.call_sync(lambda conn: 1 / 0)
        assert store.events_sync() == []
    finally:
        store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.submit(lambda conn: None)


def test_store_reports_an_unusable_database(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = Store(blocker / "events.db")
    try:
        # the open fails on the worker thread: the job (or, once the worker has stopped,
        # the submission itself) reports it
        with pytest.raises((RuntimeError, OSError)):
            store.call_sync(lambda conn: None)
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_failing_write_does_not_undo_the_others_in_its_transaction(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    entered = threading.Event()
    release = threading.Event()

    def occupy(conn: object) -> None:
        entered.set()
        release.wait(60)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM events")
        raise ValueError("boom")

    blocker = server.store.submit(occupy)
    try:
        for _ in range(10_000):
            if entered.is_set():
                break
            await asyncio.sleep(0.001)
        first = asyncio.ensure_future(ingest(http, server, batch(event(), event())))
        for _ in range(10_000):
            if server.store.queued_jobs >= 1:
                break
            await asyncio.sleep(0.001)
        failing = server.store.submit(broken, write=True)
        second = asyncio.ensure_future(ingest(http, server, batch(event())))
        for _ in range(10_000):
            if server.store.queued_jobs >= 3:
                break
            await asyncio.sleep(0.001)
        assert server.store.queued_jobs == 3  # three writes queued: one transaction
    finally:
        release.set()
    await asyncio.wrap_future(blocker)
    assert (await first).status == 200
    assert (await second).status == 200
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wrap_future(failing)
    assert await server.event_count() == 3  # the DELETE was rolled back to its savepoint


@pytest.mark.anyio
async def test_local_server_sync_helpers_work_from_another_thread(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    sent = event(task_id="from-thread")
    assert (await ingest(http, server, batch(sent))).status == 200
    assert await server.wait_for_events(1)

    def from_thread() -> tuple[bool, int, list[str]]:
        seen = server.wait_for_events_sync(1, timeout=10)
        count = server.event_count_sync()
        ids = [e["event_id"] for e in server.events_sync(task_id="from-thread")]
        server.clear_sync()
        return seen, count, ids

    assert await asyncio.to_thread(from_thread) == (True, 1, [sent["event_id"]])
    assert (await server.event_count(), server.requests) == (0, {})
