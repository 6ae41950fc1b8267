"""The ``hiveloop-async`` client commands, run in-process against a real server thread."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hiveloop_async._cli import main
from hiveloop_async._server import ServerThread

from .helpers import KEY, load_fixture, read_line
from .test_render import FAILED_TIMELINE, MANUAL_TIMELINE

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _post(url: str, body: Any, key: str = KEY) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/v1/ingest",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def _replay(url: str, fixture: str) -> list[dict[str, Any]]:
    """Send the events of a stored timeline fixture again (its extra keys are ignored)."""
    events: list[dict[str, Any]] = load_fixture(fixture)["events"]
    status, answer = _post(url, {"envelope": {"agent_id": "lead-qualifier"}, "events": events})
    assert (status, answer["accepted"]) == (200, len(events))
    return events


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_timeline_command_draws_the_manuals_timeline(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    _replay(server_thread.url, "timeline_manual_task.json")
    code, out, err = _run(capsys, "timeline", "task-lead-4801", "--url", server_thread.url)
    assert (code, err) == (0, "")
    assert out == MANUAL_TIMELINE


def test_timeline_command_with_failures_and_detail(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    _replay(server_thread.url, "timeline_failed_task.json")
    code, out, _ = _run(capsys, "timeline", "task-lead-4801", "--url", server_thread.url)
    assert (code, out) == (0, FAILED_TIMELINE)
    code, out, _ = _run(
        capsys, "timeline", "task-lead-4801", "--url", server_thread.url, "--detail"
    )
    assert code == 0
    assert "  └── ✖ send_email  0.3s  ConnectionError: SMTP timeout  06:01:00.070\n" in out
    assert "        exception_message   SMTP timeout\n" in out


def test_tasks_command(server_thread: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    _replay(server_thread.url, "timeline_manual_task.json")
    _replay(server_thread.url, "timeline_failed_task.json")  # same task id: merged, as HiveBoard
    other = {
        "event_id": "x1",
        "timestamp": "2026-11-24T21:00:00.000Z",
        "event_type": "task_started",
    }
    _post(
        server_thread.url,
        {"envelope": {"agent_id": "helper"}, "events": [{**other, "task_id": "t2"}]},
    )
    code, out, err = _run(capsys, "tasks", "--url", server_thread.url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "TASK",
        "STATUS",
        "AGENT",
        "STARTED",
        "DURATION",
        "LLM",
        "ACTIONS",
        "ERRORS",
        "COST",
    ]
    assert lines[1].split() == (
        ["t2", "◌", "processing", "helper", "2026-11-24", "21:00:00", "—", "0", "0", "0", "—"]
    )
    assert lines[2].split()[:3] == ["task-lead-4801", "✔", "completed"]
    code, out, _ = _run(capsys, "tasks", "--url", server_thread.url, "--agent", "helper")
    assert [line.split()[0] for line in out.splitlines()] == ["TASK", "t2"]
    code, out, _ = _run(capsys, "tasks", "--url", server_thread.url, "--limit", "1")
    assert len(out.splitlines()) == 2


def test_tasks_command_on_an_empty_server(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(capsys, "tasks", "--url", server_thread.url) == (0, "No tasks found.\n", "")


def test_tail_once_prints_the_activity_stream(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _replay(server_thread.url, "timeline_failed_task.json")
    code, out, err = _run(capsys, "tail", "--url", server_thread.url, "--once")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == len(events)  # no heartbeats in this task
    assert re.fullmatch(
        r"● task_started       lead-qualifier > task-lead-4801      \d+d ago +"
        r"\(Task task-lead-4801 started\)",
        lines[0],
    )
    assert lines[-1].startswith("✖ task_failed        lead-qualifier > task-lead-4801")
    assert lines[-1].endswith("(ValueError: bad lead)")

    code, out, _ = _run(capsys, "tail", "--url", server_thread.url, "--once", "--actions")
    assert [line.split()[1] for line in out.splitlines()] == [
        "action_started",
        "action_started",
        "action_completed",
        "action_started",
        "action_failed",
        "action_completed",
        "action_started",
    ]
    code, out, _ = _run(capsys, "tail", "--url", server_thread.url, "--once", "--errors")
    assert [line.split()[1] for line in out.splitlines()] == ["action_failed", "task_failed"]
    code, out, _ = _run(
        capsys, "tail", "--url", server_thread.url, "--once", "--errors", "--actions"
    )
    assert [line.split()[1] for line in out.splitlines()] == ["action_failed"]
    code, out, _ = _run(capsys, "tail", "--url", server_thread.url, "--once", "-n", "2")
    assert [line.split()[1] for line in out.splitlines()] == ["action_started", "task_failed"]
    code, out, _ = _run(
        capsys, "tail", "--url", server_thread.url, "--once", "--agent", "someone-else"
    )
    assert (code, out) == (0, "")
    code, out, _ = _run(capsys, "tail", "--url", server_thread.url, "--once", "--task", "zzz")
    assert (code, out) == (0, "")


def test_tail_pages_through_more_than_one_answer(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [
        {
            "event_id": f"e{i:04d}",
            "timestamp": f"2026-11-24T06:{i // 60:02d}:{i % 60:02d}.000Z",
            "event_type": "custom",
            "payload": {"summary": f"n{i}"},
        }
        for i in range(450)
    ]
    assert _post(server_thread.url, {"envelope": {"agent_id": "a"}, "events": events})[0] == 200
    code, out, _ = _run(capsys, "tail", "--url", server_thread.url, "--once")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 450  # --once prints everything
    assert lines[0].endswith("(n0)") and lines[-1].endswith("(n449)")
    code, out, _ = _run(capsys, "tail", "--url", server_thread.url, "--once", "-n", "300")
    lines = out.splitlines()
    assert len(lines) == 300 and lines[0].endswith("(n150)") and lines[-1].endswith("(n449)")


def test_colors(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _replay(server_thread.url, "timeline_failed_task.json")
    argv = ["timeline", "task-lead-4801", "--url", server_thread.url]
    _, plain, _ = _run(capsys, *argv)
    assert _ANSI.search(plain) is None  # captured stdout is not a terminal
    _, forced, _ = _run(capsys, *argv, "--color")
    assert "\x1b[35m■ phase1 LLM\x1b[0m" in forced
    assert _ANSI.sub("", forced) == plain
    monkeypatch.setenv("NO_COLOR", "1")
    _, forced_anyway, _ = _run(capsys, *argv, "--color")
    assert forced_anyway == forced
    _, tail_plain, _ = _run(capsys, "tail", "--url", server_thread.url, "--once", "--no-color")
    assert _ANSI.search(tail_plain) is None


def test_url_and_key_come_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ServerThread(memory=True, api_keys=["hb_from_env"]) as srv:
        monkeypatch.setenv("HIVELOOP_ENDPOINT", srv.url)
        monkeypatch.setenv("HIVELOOP_API_KEY", "hb_from_env")
        assert _run(capsys, "tasks") == (0, "No tasks found.\n", "")
        code, out, err = _run(capsys, "tasks", "--api-key", "hb_secret_wrong_key")
    assert (code, out) == (1, "")
    assert "refused the API key" in err and "--api-key" in err
    assert "hb_secret_wrong_key" not in err


def test_client_errors_are_one_line_with_status_1(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "timeline", "nope", "--url", server_thread.url)
    assert (code, out) == (1, "")
    assert err == f"hiveloop-async: task 'nope' not found at {server_thread.url}\n"
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = _run(capsys, "tasks", "--url", f"http://127.0.0.1:{port}")
    assert (code, out) == (1, "")
    assert err.startswith(f"hiveloop-async: cannot reach http://127.0.0.1:{port}")
    assert "Traceback" not in err


def test_usage_errors_give_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["tasks", "--limit", "500"]) == 2
    assert main(["serve", "--port", "70000"]) == 2
    assert main(["nonsense"]) == 2
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out


def test_tail_follows_new_and_late_events_until_interrupted(server_thread: ServerThread) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    url = server_thread.url
    process = subprocess.Popen(
        [sys.executable, "-m", "hiveloop_async", "tail", "--url", url, "--interval", "0.05"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def send(event_id: str, timestamp: str, summary: str) -> None:
            body = {
                "envelope": {"agent_id": "live"},
                "events": [
                    {
                        "event_id": event_id,
                        "timestamp": timestamp,
                        "event_type": "custom",
                        "payload": {"summary": summary},
                    }
                ],
            }
            assert _post(url, body)[0] == 200

        send("live-1", "2026-11-24T06:00:10.000Z", "first")
        assert read_line(process).rstrip().endswith("(first)")
        send("live-2", "2026-11-24T06:00:20.000Z", "second")
        assert read_line(process).rstrip().endswith("(second)")
        # an event that arrives late (older than the newest seen) is still shown, once
        send("live-3", "2026-11-24T06:00:15.000Z", "late")
        assert read_line(process).rstrip().endswith("(late)")
        send("live-4", "2026-11-24T06:00:30.000Z", "third")
        assert read_line(process).rstrip().endswith("(third)")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert process.stdout is not None and process.stdout.read() == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_task_ids_with_reserved_characters(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = "team/x y?#ü"
    started = {
        "event_id": "odd-1",
        "timestamp": "2026-11-24T06:00:00.000Z",
        "event_type": "task_started",
        "task_id": task_id,
    }
    assert _post(server_thread.url, {"envelope": {"agent_id": "a"}, "events": [started]})[0] == 200
    code, out, _ = _run(capsys, "timeline", task_id, "--url", server_thread.url)
    assert code == 0
    assert out.splitlines()[0] == f"TIMELINE  {task_id}  ⏱ —  🤖 a  ◌ processing  ◆ 0 LLM"
    code, out, _ = _run(capsys, "tail", "--once", "--task", task_id, "--url", server_thread.url)
    assert (code, len(out.splitlines())) == (0, 1)


def test_tail_keeps_events_of_one_timestamp_in_stored_order(
    server_thread: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    same = "2026-11-24T06:00:00.000Z"
    events = [
        {"event_id": f"tie-{name}", "timestamp": same, "event_type": "custom",
         "payload": {"summary": name}}
        for name in ("first", "second", "third")
    ]  # fmt: skip
    assert _post(server_thread.url, {"envelope": {"agent_id": "a"}, "events": events})[0] == 200
    code, out, _ = _run(capsys, "tail", "--once", "--url", server_thread.url)
    assert code == 0
    assert [line.rsplit("(", 1)[1] for line in out.splitlines()] == [
        "first)",
        "second)",
        "third)",
    ]
