"""Lifecycle of the client: heartbeats, both ways to run, fork, exit (settings: test_config)."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hiveloop_async as hl
from hiveloop_async import _internal

from .faultserver import FaultServer

KEY = "hb_test_lifecycle_abcdef0123456789"
ROOT = Path(__file__).resolve().parent.parent


def heartbeats(srv: FaultServer, agent_id: str | None = None) -> list[dict[str, Any]]:
    with srv._lock:
        return [
            e
            for e in srv.events
            if e["event_type"] == "heartbeat"
            and (agent_id is None or srv.agent_of[e["event_id"]] == agent_id)
        ]


def test_heartbeats_at_the_interval_and_stop_on_shutdown_thread_mode() -> None:
    """Thread mode: heartbeats arrive about every interval with the callback's payload,
    and none after shutdown."""
    with FaultServer() as srv:
        hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=0.05)
        hb.agent("beat", heartbeat_interval=0.2, heartbeat_payload=lambda: {"summary": "ok"})
        assert srv.wait_for(lambda: len(heartbeats(srv)) >= 3, timeout=10)
        hb.shutdown(2)
        count = len(heartbeats(srv))
        beats = heartbeats(srv)
        assert all(b["payload"] == {"summary": "ok"} for b in beats)
        assert all(b["severity"] == "debug" for b in beats)
        stamps = [b["timestamp"] for b in beats]
        assert stamps == sorted(stamps)
        hb2 = hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=0.05)
        hb2.agent("other", heartbeat_interval=0)
        assert hb2.flush(5)
        assert len(heartbeats(srv)) == count


async def test_heartbeats_on_the_app_loop_with_async_callbacks() -> None:
    """Loop mode: async heartbeat_payload and queue_provider callbacks are awaited; a failing
    callback is skipped (heartbeat still sent); heartbeats stop when the block ends."""
    calls = {"n": 0}

    async def payload() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("callback broke")
        await asyncio.sleep(0)
        return {"summary": f"beat {calls['n']}"}

    async def queue() -> dict[str, Any]:
        return {"depth": 3, "oldest_age_seconds": 7}

    with FaultServer() as srv:
        async with hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=0.05) as hb:
            hb.agent(
                "loop-beat", heartbeat_interval=0.1, heartbeat_payload=payload, queue_provider=queue
            )
            ok = await asyncio.to_thread(srv.wait_for, lambda: len(heartbeats(srv)) >= 3, 10)
            assert ok
        count = len(heartbeats(srv))
        beats = heartbeats(srv)
        assert beats[0]["payload"] == {"summary": "beat 1"}
        assert "payload" not in beats[1]
        snaps = [e for e in srv.events if e.get("payload", {}).get("kind") == "queue_snapshot"]
        assert snaps[0]["payload"]["summary"] == "Queue: 3 items, oldest 7s"
        assert snaps[0]["payload"]["data"] == {"depth": 3, "oldest_age_seconds": 7}
        assert hb.closed
        assert len(heartbeats(srv)) == count


def test_an_agent_can_stop_its_own_heartbeat() -> None:
    """stop_heartbeat() ends one agent's heartbeats while the others go on."""
    with FaultServer() as srv:
        hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=0.05)
        quiet = hb.agent("quiet", heartbeat_interval=0.1)
        hb.agent("loud", heartbeat_interval=0.1)
        assert srv.wait_for(lambda: len(heartbeats(srv, "quiet")) >= 2, 10)
        quiet.stop_heartbeat()
        hb.flush(2)
        quiet_count = len(heartbeats(srv, "quiet"))
        loud_count = len(heartbeats(srv, "loud"))
        assert srv.wait_for(lambda: len(heartbeats(srv, "loud")) >= loud_count + 4, 10)
        hb.shutdown(2)
        assert len(heartbeats(srv, "quiet")) <= quiet_count + 1  # one may have been in flight


async def test_start_takes_over_from_a_thread_sender() -> None:
    """An agent created before ``await hb.start()`` (thread sender) hands its queue over to
    the app loop: nothing is lost or sent twice."""
    with FaultServer() as srv:
        hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=0.05)
        agent = hb.agent("early", heartbeat_interval=0)
        for i in range(100):
            agent.event("custom", {"kind": "probe", "i": i})
        assert hb.stats()["mode"] == "thread"
        await hb.start()
        assert hb.stats()["mode"] == "loop"
        for i in range(100, 200):
            agent.event("custom", {"kind": "probe", "i": i})
        assert await hb.aflush(5)
        await hb.aclose()
        got = sorted(e["payload"]["i"] for e in srv.events if e["payload"].get("kind") == "probe")
        assert got == list(range(200))


def test_init_after_shutdown_starts_a_fresh_client() -> None:
    """hiveloop 0.2.0 returned the dead client; here init() after shutdown() works."""
    with FaultServer() as srv:
        first = hl.init(api_key=KEY, endpoint=srv.url)
        hl.shutdown(1)
        second = hl.init(api_key=KEY, endpoint=srv.url, flush_interval=0.05)
        assert second is not first
        second.agent("again", heartbeat_interval=0).event("custom", {"kind": "probe"})
        assert hl.flush(5)
        assert any(e["payload"].get("kind") == "probe" for e in srv.events)


def _child(url: str) -> None:
    client = hl.get_client()
    assert client is not None
    agent = client.agent("parent-agent", heartbeat_interval=0)
    agent.event("custom", {"kind": "probe", "who": "child"})
    # No flush: the multiprocessing exit hook must deliver it.


def test_forked_child_sends_its_own_events_and_never_the_parents() -> None:
    """fork: the child starts its own sender on first use and never resends the parent's
    buffer; the parent's events arrive once."""
    with FaultServer() as srv:
        hb = hl.init(api_key=KEY, endpoint=srv.url, flush_interval=60)
        agent = hb.agent("parent-agent", heartbeat_interval=0)
        for i in range(10):
            agent.event("custom", {"kind": "probe", "who": "parent", "i": i})
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=_child, args=(srv.url,))
        proc.start()
        proc.join(20)
        assert proc.exitcode == 0
        assert hb.flush(5)
        probes = [e["payload"] for e in srv.events if e["payload"].get("kind") == "probe"]
        parents = [p for p in probes if p["who"] == "parent"]
        children = [p for p in probes if p["who"] == "child"]
        assert sorted(p["i"] for p in parents) == list(range(10))
        assert len(children) == 1
        ids = srv.event_ids()
        assert len(ids) == len(set(ids))


def test_atexit_drains_a_script_that_never_calls_shutdown(tmp_path: Path) -> None:
    """A plain script that records and exits delivers its events through the atexit hook,
    bounded by shutdown_timeout."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import hiveloop_async as hiveloop
            hb = hiveloop.init(api_key="hb_test_exit", endpoint=sys.argv[1], flush_interval=60)
            agent = hb.agent("exit-agent", heartbeat_interval=0)
            with agent.task("t-exit") as task:
                with agent.track_context("step"):
                    pass
            """
        )
    )
    with FaultServer() as srv:
        subprocess.run([sys.executable, str(script), srv.url], check=True, timeout=30)
        types = [e["event_type"] for e in srv.events]
        assert types == [
            "agent_registered",
            "task_started",
            "action_started",
            "action_completed",
            "task_completed",
        ]


@pytest.mark.slow
def test_atexit_is_bounded_when_the_server_hangs(tmp_path: Path) -> None:
    """The exit drain against a hung server ends within shutdown_timeout (+ interpreter)."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, hiveloop_async as h\n"
        "hb = h.init(api_key='hb_x', endpoint=sys.argv[1], shutdown_timeout=1.0)\n"
        "hb.agent('a', heartbeat_interval=0).event('custom', {'kind': 'x'})\n"
    )
    with FaultServer(lambda n, ev: "hang") as srv:
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(script), srv.url], check=True, timeout=30)
        assert time.monotonic() - t0 < 5.0


def test_the_sdks_own_log_records_never_become_events() -> None:
    """A HiveBoardLogHandler on the root logger ignores hiveloop_async's own warnings, so a
    full queue cannot fill itself with "queue full" issues."""
    from hiveloop_async.contrib.log_handler import HiveBoardLogHandler
    from hiveloop_async.testing import capture_events

    hb = hl.HiveBoard(api_key=KEY, enabled=False)
    agent = hb.agent("logs", heartbeat_interval=0)
    handler = HiveBoardLogHandler(agent)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with capture_events(hb) as cap:
            logging.getLogger("hiveloop_async").warning("hiveloop_async: 5 events dropped")
            logging.getLogger("app.worker").error("the CRM is down")
    finally:
        root.removeHandler(handler)
    issues = [e for e in cap.events if e.get("payload", {}).get("kind") == "issue"]
    assert [i["payload"]["summary"] for i in issues] == ["the CRM is down"]
    assert issues[0]["severity"] == "error"


def test_debug_logs_sender_activity(caplog: pytest.LogCaptureFixture) -> None:
    """debug=True makes flush activity visible (0.2.0's debug showed nothing)."""
    with FaultServer() as srv:
        hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, debug=True)
        with caplog.at_level(logging.DEBUG, logger="hiveloop_async"):
            hb.agent("dbg", heartbeat_interval=0)
            hb.flush(5)
        assert any("delivered" in r.getMessage() for r in caplog.records)
        logging.getLogger("hiveloop_async").setLevel(logging.NOTSET)
        for h in list(logging.getLogger("hiveloop_async").handlers):
            logging.getLogger("hiveloop_async").removeHandler(h)


_ = os


#: Pasted into exit scripts after ``import hiveloop_async``, so it runs before the SDK's exit
#: hook: from then on no thread can start, as on CPython 3.12 (whatever runs the test).
NO_THREADS_AT_EXIT = """
import atexit as _atexit, threading as _threading

def _refuse(self):
    raise RuntimeError("can't create new thread at interpreter shutdown")

_atexit.register(lambda: setattr(_threading.Thread, "start", _refuse))
"""

#: An exit script that starts the sender on its loop and lets the loop end without aclose().
ORPHAN_SCRIPT = """
import asyncio, sys

import hiveloop_async as hiveloop
{at_exit}
CLIENTS = []

async def main() -> None:
    hb = hiveloop.HiveBoard(api_key="hb_test_orphan", endpoint=sys.argv[1],
                            flush_interval=60, shutdown_timeout=3)
    await hb.start()
    agent = hb.agent("orphan", heartbeat_interval=0)
    async with agent.task("t-orphan"):
        async with agent.track_context("step"):
            await asyncio.sleep(0)
    CLIENTS.append(hb)

asyncio.run(main())
"""

#: An exit script whose events are first recorded in an exit hook that runs before the SDK's.
LATE_SCRIPT = """
import atexit, sys

import hiveloop_async as hiveloop

CLIENTS = []

def late() -> None:
    explicit = hiveloop.HiveBoard(api_key="hb_test_late", endpoint=sys.argv[1])
    explicit.agent("explicit", heartbeat_interval=0).event("custom", {{"kind": "x"}})
    print(explicit.stats()["mode"], explicit.shutdown(5))
    implicit = hiveloop.HiveBoard(api_key="hb_test_late", endpoint=sys.argv[1])
    implicit.agent("implicit", heartbeat_interval=0).event("custom", {{"kind": "y"}})
    CLIENTS.append(implicit)  # drained by the SDK's exit hook

atexit.register(late)
{at_exit}
"""

ORPHAN_EVENTS = sorted(
    ["agent_registered", "task_started", "action_started", "action_completed", "task_completed"]
)


def run_exit_script(tmp_path: Path, text: str, url: str) -> tuple[str, str]:
    """Run ``text`` as a script with ``url``; return its stdout and stderr."""
    script = tmp_path / "script.py"
    script.write_text(text)
    proc = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def test_a_loop_that_ends_without_aclose_is_drained_at_exit(tmp_path: Path) -> None:
    """``await hb.start()`` without ``aclose()``: when the script's loop ends, the exit hook
    drains what is left in its own thread, with no new thread (CPython 3.12 refuses them)."""
    with FaultServer() as srv:
        _, err = run_exit_script(tmp_path, ORPHAN_SCRIPT.format(at_exit=""), srv.url)
        assert sorted(e["event_type"] for e in srv.events) == ORPHAN_EVENTS
        assert "hiveloop_async" not in err


def test_the_orphaned_loop_is_drained_without_a_thread_on_every_python(tmp_path: Path) -> None:
    """The same with thread creation refused at exit whatever the Python version."""
    with FaultServer() as srv:
        text = ORPHAN_SCRIPT.format(at_exit=NO_THREADS_AT_EXIT)
        _, err = run_exit_script(tmp_path, text, srv.url)
        assert sorted(e["event_type"] for e in srv.events) == ORPHAN_EVENTS
        assert "hiveloop_async" not in err


def test_a_sender_thread_that_cannot_start_at_exit_is_drained_in_the_exit_hook(
    tmp_path: Path,
) -> None:
    """Events first recorded in an exit hook, when no thread can start: an explicit
    shutdown() delivers them, and so does the SDK's own exit hook."""
    text = LATE_SCRIPT.format(at_exit=NO_THREADS_AT_EXIT)
    with FaultServer() as srv:
        out, err = run_exit_script(tmp_path, text, srv.url)
        assert out.strip() == (
            "thread FlushResult(delivered=2, dropped=0, pending=0, timed_out=False)"
        )
        assert sorted(srv.agent_of.values()) == ["explicit"] * 2 + ["implicit"] * 2
        assert "hiveloop_async" not in err


#: A plain synchronous script: the sender thread starts with the first event, and the SDK's
#: exit hook drains the rest. It prints the client's stats, and how long the exit hook took.
SCRIPT_WITH_STATS = """
import atexit, json, sys, time

T = []
atexit.register(lambda: print(json.dumps({{**hb.stats(), "exit_s": time.monotonic() - T[0]}})))

import hiveloop_async as hiveloop

atexit.register(lambda: T.append(time.monotonic()))
{at_exit}
hb = hiveloop.HiveBoard(api_key="hb_test_exit", endpoint=sys.argv[1], flush_interval=60,
                        shutdown_timeout=3)
agent = hb.agent("exit-agent", heartbeat_interval=0)
with agent.task("t-exit"):
    with agent.track_context("step"):
        pass
"""


@pytest.mark.parametrize("at_exit", ["", NO_THREADS_AT_EXIT], ids=["threads", "no-threads"])
def test_a_script_delivers_to_a_host_name_at_exit(tmp_path: Path, at_exit: str) -> None:
    """``http://localhost``: the sender thread resolves the host name in the exit drain,
    although the thread pool aiohttp resolves in refuses work by then (in a thread of its
    own, or in the sender's thread when no thread can start), and delivers at once."""
    with FaultServer() as srv:
        url = srv.url.replace("127.0.0.1", "localhost")
        out, err = run_exit_script(tmp_path, SCRIPT_WITH_STATS.format(at_exit=at_exit), url)
        got = json.loads(out)
        assert sorted(e["event_type"] for e in srv.events) == ORPHAN_EVENTS
        assert got["sent"] == got["recorded"] == 5
        assert got["dropped_total"] == got["retries"] == 0
        assert got["mode"] == "thread"
        assert "hiveloop_async" not in err
        assert got["exit_s"] < 1.0  # no retrying until the 3 s shutdown_timeout


@pytest.mark.parametrize("at_exit", ["", NO_THREADS_AT_EXIT], ids=["threads", "no-threads"])
def test_the_exit_drain_in_the_calling_thread_delivers_to_a_host_name(
    tmp_path: Path, at_exit: str
) -> None:
    """``http://localhost`` from an orphaned loop: the exit hook drains in its own thread on
    a fresh loop, whose thread pool refuses work, and still resolves the host name and
    delivers at once (without a thread of its own, the lookup blocks in the exit hook)."""
    # Before the SDK's exit hook: the time it starts; after it: what it did, and how long.
    stamp = "_atexit.register(lambda: T.append(time.monotonic()))\n"
    report = (
        "import atexit as _atexit, json, time\nT = []\n"
        "_atexit.register(lambda: print(json.dumps("
        "{**CLIENTS[0].stats(), 'exit_s': time.monotonic() - T[0]})))\n"
    )
    with FaultServer() as srv:
        url = srv.url.replace("127.0.0.1", "localhost")
        text = report + ORPHAN_SCRIPT.format(at_exit=stamp + at_exit)
        out, err = run_exit_script(tmp_path, text, url)
        got = json.loads(out)
        assert sorted(e["event_type"] for e in srv.events) == ORPHAN_EVENTS
        assert got["sent"] == got["recorded"] == 5
        assert got["dropped_total"] == got["retries"] == 0
        assert got["queue_depth"] == got["in_flight"] == 0
        assert "hiveloop_async" not in err
        assert got["exit_s"] < 1.0  # no retrying until the 3 s shutdown_timeout


#: Prepended to an exit script: a host name the system resolver does not know (no lookup
#: leaves the machine).
UNKNOWN_HOST = """
import socket as _socket

def _unknown(host, *args, **kwargs):
    raise _socket.gaierror(_socket.EAI_NONAME, "Name or service not known")

_socket.getaddrinfo = _unknown
"""


@pytest.mark.parametrize("script", ["thread", "orphan"])
def test_a_host_name_that_cannot_be_resolved_at_exit_is_counted_and_warned_once(
    tmp_path: Path, script: str
) -> None:
    """The exit drain retries a host name that does not resolve until shutdown_timeout,
    then counts what is left (shutdown) and says why in one warning. Both with the sender
    thread and in the calling thread (an orphaned loop)."""
    if script == "thread":
        text = SCRIPT_WITH_STATS.format(at_exit="")
    else:
        text = (
            "import atexit as _atexit, json, time\nT = []\n"
            "_atexit.register(lambda: print(json.dumps("
            "{**CLIENTS[0].stats(), 'exit_s': time.monotonic() - T[0]})))\n"
        ) + ORPHAN_SCRIPT.format(at_exit="_atexit.register(lambda: T.append(time.monotonic()))")
    text = UNKNOWN_HOST + text.replace("shutdown_timeout=3", "shutdown_timeout=0.5")
    out, err = run_exit_script(tmp_path, text, "https://unknown-host.localhost:9")
    got = json.loads(out)
    assert got["sent"] == 0
    assert got["dropped"]["shutdown"] == got["dropped_total"] == got["recorded"] == 5
    assert got["queue_depth"] == got["in_flight"] == 0
    assert got["last_error"].startswith("cannot resolve the endpoint's host name")
    warnings = [line for line in err.splitlines() if "hiveloop_async" in line]
    assert len(warnings) == 1, err
    assert "5 events dropped" in warnings[0]
    assert "(shutdown=5); last error: cannot resolve the endpoint's host name" in warnings[0]
    assert got["exit_s"] < 0.5 + 0.5


#: Prepended to an exit script: a system resolver that never answers.
HUNG_RESOLVER = """
import socket as _socket, threading as _threading

def _hang(host, *args, **kwargs):
    _threading.Event().wait()

_socket.getaddrinfo = _hang
"""


@pytest.mark.parametrize("at_exit", ["", NO_THREADS_AT_EXIT], ids=["threads", "no-threads"])
def test_a_lookup_that_hangs_at_exit_is_bounded_by_shutdown_timeout(
    tmp_path: Path, at_exit: str
) -> None:
    """A host name lookup that never returns holds the exit no longer than shutdown_timeout.
    In a thread of its own the sender gives up on it and counts the events; where no thread
    can start (CPython 3.12 at exit) it blocks the sender's thread, which the exit hook
    stops waiting for at the deadline (those events are then left uncounted)."""
    text = SCRIPT_WITH_STATS.format(at_exit=at_exit).replace(
        "shutdown_timeout=3", "shutdown_timeout=0.5"
    )
    out, err = run_exit_script(tmp_path, HUNG_RESOLVER + text, "https://hung.localhost:9")
    got = json.loads(out)
    assert got["sent"] == 0
    assert got["exit_s"] < 0.5 + 0.5
    if not at_exit and sys.version_info[:2] != (3, 12):  # the lookup had a thread of its own
        assert got["dropped"]["shutdown"] == got["dropped_total"] == 5
        assert got["in_flight"] == 0
        assert "5 events dropped" in err


@pytest.mark.parametrize(
    ("error", "warned"),
    [("can't create new thread at interpreter shutdown", 0), ("can't start new thread", 1)],
)
def test_shutdown_drains_in_the_calling_thread_when_no_thread_can_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: str, warned: int
) -> None:
    """In process: a thread-mode client whose thread could not start delivers everything
    on shutdown(), from the calling thread. Only a failure outside shutdown is worth a
    warning (the events then wait for shutdown)."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError(error)

    with FaultServer() as srv:
        monkeypatch.setattr(threading.Thread, "start", refuse)
        monkeypatch.setattr(_internal, "_warned", set())
        hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=60)
        with caplog.at_level(logging.WARNING, logger="hiveloop_async"):
            agent = hb.agent("no-thread", heartbeat_interval=0)
            for i in range(50):
                agent.event("custom", {"kind": "probe", "i": i})
        assert hb.stats()["mode"] == "thread"
        assert len(caplog.records) == warned
        result = hb.shutdown(5)
        assert result == hl.FlushResult(delivered=51, dropped=0, pending=0, timed_out=False)
        got = sorted(e["payload"]["i"] for e in srv.events if e["event_type"] == "custom")
        assert got == list(range(50))


def test_the_drain_in_the_calling_thread_is_bounded_when_the_server_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """shutdown(0.5) without a sender thread returns within its timeout (+0.2 s) against a
    server that never answers, and counts the loss."""
    with FaultServer(lambda n, ev: "hang") as srv:
        monkeypatch.setattr(threading.Thread, "start", _refuse_thread)
        hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, request_timeout=30)
        agent = hb.agent("no-thread", heartbeat_interval=0)
        for i in range(30):
            agent.event("custom", {"kind": "probe", "i": i})
        t0 = time.monotonic()
        result = hb.shutdown(0.5)
        assert time.monotonic() - t0 < 0.7
        assert srv.requests >= 1
        assert result.timed_out is True
        assert hb.stats()["dropped"]["shutdown"] == 31


async def test_start_takes_over_from_a_sender_thread_that_never_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``await hb.start()`` after the sender thread failed to start takes the queue at once."""
    with FaultServer() as srv:
        with monkeypatch.context() as m:
            m.setattr(threading.Thread, "start", _refuse_thread)
            hb = hl.HiveBoard(api_key=KEY, endpoint=srv.url, flush_interval=60)
            agent = hb.agent("late-loop", heartbeat_interval=0)
            agent.event("custom", {"kind": "probe"})
        t0 = time.monotonic()
        await hb.start()
        assert time.monotonic() - t0 < 1.0
        assert await hb.aflush(5)
        await hb.aclose()
        assert sorted(e["event_type"] for e in srv.events) == ["agent_registered", "custom"]


def _refuse_thread(self: threading.Thread) -> None:
    raise RuntimeError("can't create new thread at interpreter shutdown")


async def test_a_disabled_client_on_the_app_loop_starts_nothing() -> None:
    """``async with HiveBoard(enabled=False)`` runs the block, starts no sender, counts."""
    async with hl.HiveBoard(enabled=False) as hb:
        agent = hb.agent("off", heartbeat_interval=0.01)
        async with agent.task("t"):
            await asyncio.sleep(0)
        assert hb.stats()["mode"] is None
    stats = hb.stats()
    assert stats["dropped"]["disabled"] == stats["recorded"] == 3
    assert stats["dropped_total"] == 3
