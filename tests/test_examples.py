"""The runnable examples (``examples/``) and ``make demo`` run to completion against the local
server, and the server then holds what each example promises."""

from __future__ import annotations

import asyncio
import collections
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp.test_utils import TestServer

import hiveloop_async as hiveloop
from examples import (
    agent_loop,
    aiohttp_service,
    concurrent_runner,
    fastapi_service,
    manual_enter_exit,
    sync_script,
    two_services,
)
from hiveloop_async._server import ServerThread

from .test_end_to_end import (
    Json,
    closing,
    find,
    llm_calls,
    sequence,
    shape,
    sync_timeline,
    task_items,
    timeline_of,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A local server with an in-memory database, on its own thread."""
    with ServerThread(memory=True) as srv:
        yield srv


def all_nodes(nodes: list[Json]) -> Iterator[Json]:
    """Every node of an action tree, depth first."""
    for node in nodes:
        yield node
        yield from all_nodes(node["children"])


# -- agent_loop.py ----------------------------------------------------------------------------


def test_scripted_llm_is_deterministic_for_a_seed() -> None:
    """The fake LLM picks the same tools, tokens and text for the same seed and history."""

    async def picks(seed: int) -> list[Any]:
        llm = agent_loop.ScriptedLLM(seed)
        messages = [agent_loop.Message("user", "Qualify lead 1: Acme Corp (acme.example)")]
        out: list[Any] = []
        for _ in range(8):
            response = await llm.chat(messages, tools=["crm_search", "enrich_company", "research"])
            out.append(([c.name for c in response.tool_calls], response.usage))
            messages += [agent_loop.Message("tool", "ok", c.name) for c in response.tool_calls]
            if not response.tool_calls:
                break
        return out

    first, second = asyncio.run(picks(3)), asyncio.run(picks(3))
    assert first == second
    names = [name for calls, _ in first for name in calls]
    assert sorted(names) == ["crm_search", "enrich_company", "research"]
    assert first[-1][0] == []  # ends with a zero-tool turn


async def test_agent_loop_three_concurrent_tasks_arrive_as_promised(server: ServerThread) -> None:
    """agent_loop: three completed tasks, each with LLM calls, research → web_search +
    summarize, exactly one failed tool, truncated payloads and a final zero-tool turn."""
    task_ids = await agent_loop.amain(server.url, verbose=False)
    assert len(set(task_ids)) == 3

    for task_id in task_ids:
        timeline = await timeline_of(server.url, task_id)
        assert timeline["derived_status"] == "completed"
        assert timeline["agent_id"] == "lead-qualifier"
        assert timeline["llm_call_count"] >= 3
        assert timeline["total_tokens_in"] > 0 and timeline["total_tokens_out"] > 0
        assert timeline["total_cost"] > 0

        research = find(timeline["action_tree"], "research")
        assert research["parent_action_id"] is None
        assert shape([research]) == [("research", [("web_search", []), ("summarize", [])])]
        summarize = find(timeline["action_tree"], "summarize")
        assert [c["payload"]["data"]["name"] for c in llm_calls(timeline)].count("summarize") == 1
        inner = [c for c in llm_calls(timeline) if c["payload"]["data"]["name"] == "summarize"]
        assert inner[0]["action_id"] == summarize["action_id"]

        nodes = list(all_nodes(timeline["action_tree"]))
        failed = [n for n in nodes if n["status"] == "failure"]
        assert [n["name"] for n in failed] == ["enrich_company"]
        assert closing(failed[0])["payload"]["exception_type"] == "ConnectionError"
        assert "timeout" in closing(failed[0])["payload"]["exception_message"]
        assert {n["name"] for n in nodes} == {
            "crm_search",
            "enrich_company",
            "research",
            "web_search",
            "summarize",
            "score_lead",
            "send_email",
        }
        for node in nodes:
            assert node["duration_ms"] >= 15  # every tool sleeps 20 ms or more
            payload = closing(node)["payload"]
            if node["status"] == "success" and node["parent_action_id"] is None:
                assert len(payload["result_preview"]) <= 200
                assert all(len(v) <= 100 for v in payload["args"].values())

        for call in llm_calls(timeline):
            data = call["payload"]["data"]
            assert data["model"] and data["tokens_in"] > 0 and data["tokens_out"] > 0
            assert data["cost"] > 0 and data["duration_ms"] > 0
        steps = sequence(timeline)
        assert steps[0] == "■agent_turn" and steps[-1] == "■agent_turn"  # zero-tool turn last
        assert steps.count("■agent_turn") >= 4

    items = await task_items(server.url, set(task_ids))
    assert {i["derived_status"] for i in items.values()} == {"completed"}
    assert {(i["project_id"], i["task_type"]) for i in items.values()} == {
        ("sales-pipeline", "lead_qualification")
    }
    assert all(i["error_count"] == 1 for i in items.values())


def test_agent_loop_cli_takes_the_endpoint_from_the_environment(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m examples.agent_loop`` reads HIVELOOP_ENDPOINT and prints the task ids."""
    monkeypatch.setenv("HIVELOOP_ENDPOINT", server.url)
    monkeypatch.setenv("HIVELOOP_API_KEY", "hb_from_env")
    assert agent_loop.cli([]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("task-")]
    assert len(printed) == 3
    for task_id in printed:
        assert sync_timeline(server.url, task_id)["derived_status"] == "completed"


# -- sync_script.py ---------------------------------------------------------------------------


def test_sync_script_runs_the_manuals_synchronous_api(server: ServerThread) -> None:
    """sync_script: ``init``/``with agent.task``/``@agent.track``/``track_context``/``shutdown``
    give one completed task with the decorated function's children nested under it."""
    task_id = sync_script.main(server.url)
    client = hiveloop.get_client()
    assert client is not None and client.closed  # hiveloop.shutdown() ran

    timeline = sync_timeline(server.url, task_id)
    assert shape(timeline["action_tree"]) == [
        ("score_lead", [("crm_search", []), ("enrich_company", []), ("llm_inference", [])]),
        ("send_email", []),
    ]
    assert closing(find(timeline["action_tree"], "crm_search"))["payload"]["found"] is True
    assert closing(find(timeline["action_tree"], "llm_inference"))["payload"]["score"] > 50
    assert find(timeline["action_tree"], "score_lead")["duration_ms"] >= 89
    assert timeline["llm_call_count"] == 1
    assert (timeline["total_tokens_in"], timeline["total_tokens_out"]) == (512, 128)
    assert timeline["derived_status"] == "completed"


# -- concurrent_runner.py ---------------------------------------------------------------------


def test_concurrent_runner_delivers_hundreds_of_tasks(server: ServerThread) -> None:
    """concurrent_runner: 300 tasks, nothing dropped, every task and action stored."""
    stats = concurrent_runner.main(server.url, tasks=300, verbose=False)
    assert stats["dropped_total"] == 0
    assert stats["sent"] == stats["recorded"] == 1 + 300 * 8  # registration + 8 per task

    completed = server.events(event_type="task_completed", agent_id="import-worker")
    assert len({e["task_id"] for e in completed}) == 300
    started = server.events(event_type="action_started", agent_id="import-worker")
    assert collections.Counter(e["payload"]["action_name"] for e in started) == {
        "fetch": 300,
        "parse": 300,
        "store": 300,
    }
    timeline = sync_timeline(server.url, completed[0]["task_id"])
    assert shape(timeline["action_tree"]) == [("fetch", [("parse", [])]), ("store", [])]


# -- aiohttp_service.py -----------------------------------------------------------------------


async def test_aiohttp_service_handlers_run_tasks(server: ServerThread) -> None:
    """aiohttp_service: requests run tasks on the app's loop; shutting the app down
    delivers them (a good lead completes, an unknown one fails with its exception)."""
    app = aiohttp_service.create_app(server.url)
    async with TestServer(app, host="127.0.0.1") as web_server, aiohttp.ClientSession() as http:

        async def post(lead_id: str) -> tuple[int, Any]:
            async with http.post(web_server.make_url(f"/qualify/{lead_id}")) as response:
                return response.status, await response.json()

        answers = await asyncio.gather(post("4801"), post("4802"), post("9999"))
        async with http.get(web_server.make_url("/health")) as response:
            assert response.status == 200
    # Leaving TestServer ran the app's cleanup: ``await hb.aclose()`` delivered everything.
    assert [status for status, _ in answers] == [200, 200, 404]
    ids = [body["task_id"] for _, body in answers]

    for task_id in ids[:2]:
        timeline = await timeline_of(server.url, task_id)
        assert timeline["derived_status"] == "completed"
        assert shape(timeline["action_tree"]) == [("crm_search", []), ("score_lead", [])]
        assert timeline["llm_call_count"] == 1
    failed = await timeline_of(server.url, ids[2])
    assert failed["derived_status"] == "failed"
    (event,) = [e for e in failed["events"] if e["event_type"] == "task_failed"]
    assert event["payload"]["status_code"] == 404
    (search,) = [e for e in failed["events"] if e["event_type"] == "action_failed"]
    assert search["payload"]["exception_type"] == "UnknownLead"
    assert find(failed["action_tree"], "crm_search")["status"] == "failure"
    items = await task_items(server.url, set(ids))
    assert {i["agent_id"] for i in items.values()} == {"lead-service"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_aiohttp_service_runs_standalone_and_flushes_on_ctrl_c(server: ServerThread) -> None:
    """``python -m examples.aiohttp_service`` serves on 127.0.0.1; Ctrl-C (SIGINT) stops it
    and the app's cleanup delivers the task it ran."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.aiohttp_service",
        "--endpoint",
        server.url,
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(base + "/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "the service did not start"
                await asyncio.sleep(0.05)
            async with http.post(base + "/qualify/4803") as response:
                assert response.status == 200
                task_id = (await response.json())["task_id"]
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    timeline = await timeline_of(server.url, task_id)
    assert timeline["derived_status"] == "completed"


# -- fastapi_service.py -----------------------------------------------------------------------


async def test_fastapi_service_lifespan_runs_the_sdk(server: ServerThread) -> None:
    """fastapi_service under uvicorn (in a thread, on a free port): ``POST /qualify/{id}``
    runs a task with a nested tool and an LLM call; lifespan shutdown delivers them."""
    app = fastapi_service.create_app(server.url)
    config = uvicorn.Config(app, host="127.0.0.1", log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def post(lead_id: str) -> tuple[int, Any]:
                async with http.post(f"{base}/qualify/{lead_id}") as response:
                    return response.status, await response.json()

            answers = await asyncio.gather(post("4801"), post("4803"), post("0000"))
            async with http.get(f"{base}/health") as response:
                assert await response.json() == {"ok": True}
    finally:
        uv.should_exit = True
        await asyncio.to_thread(thread.join, 20)
        sock.close()
    assert not thread.is_alive()
    assert [status for status, _ in answers] == [200, 200, 404]
    ids = [body["task_id"] for _, body in answers[:2]] + [answers[2][1]["detail"]["task_id"]]

    for task_id in ids[:2]:
        timeline = await timeline_of(server.url, task_id)
        assert timeline["derived_status"] == "completed"
        assert shape(timeline["action_tree"]) == [
            ("crm_search", []),
            ("enrich_and_score", [("enrich_company", [])]),
        ]
        assert timeline["llm_call_count"] == 1
        assert closing(find(timeline["action_tree"], "enrich_and_score"))["payload"]["score"] > 0
    failed = await timeline_of(server.url, ids[2])
    assert failed["derived_status"] == "failed"
    (event,) = [e for e in failed["events"] if e["event_type"] == "task_failed"]
    assert event["payload"]["status_code"] == 404  # failed=: a 4xx fails the task here
    (search,) = [e for e in failed["events"] if e["event_type"] == "action_failed"]
    assert search["payload"]["exception_type"] == "KeyError"
    items = await task_items(server.url, set(ids))
    assert {i["task_type"] for i in items.values()} == {"POST /qualify/{lead_id}"}


# -- two_services.py --------------------------------------------------------------------------


async def test_two_services_timelines_link_both_ways(server: ServerThread) -> None:
    """two_services: the orchestrator's request action holds a delegation to the research
    task, and the research task names the orchestrator's task, run and action."""
    orchestrator_id, research_id = await two_services.amain(server.url)
    assert research_id
    caller = await timeline_of(server.url, orchestrator_id)
    callee = await timeline_of(server.url, research_id)
    assert caller["derived_status"] == callee["derived_status"] == "completed"
    delegate = find(caller["action_tree"], "delegate_research")
    (request,) = delegate["children"]
    assert request["name"].startswith("POST 127.0.0.1:") and request["name"].endswith("/research")
    (delegation,) = [
        e
        for e in caller["events"]
        if e["event_type"] == "custom" and e["payload"].get("kind") == "delegation"
    ]
    assert delegation["payload"]["data"]["sub_task_id"] == research_id
    assert delegation["action_id"] == request["action_id"]
    (started,) = [e for e in callee["events"] if e["event_type"] == "task_started"]
    assert started["payload"]["caller_task_id"] == orchestrator_id
    assert started["payload"]["caller_action_id"] == request["action_id"]
    assert started["correlation_id"] == started["payload"]["caller_task_run_id"]
    assert shape(callee["action_tree"]) == [("web_search", [])]
    assert callee["llm_call_count"] == 1


# -- manual_enter_exit.py ---------------------------------------------------------------------


def test_manual_enter_exit_reports_a_failed_tool_result_without_raising(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manual_enter_exit (§11.3): each tool runs exactly once; the ToolResult failure shows
    as a completed action whose payload says success false with the error."""
    calls: list[str] = []
    original = manual_enter_exit.ToolRegistry.execute

    def counting(
        self: manual_enter_exit.ToolRegistry, tool_name: str, parameters: dict[str, Any]
    ) -> manual_enter_exit.ToolResult:
        calls.append(tool_name)
        return original(self, tool_name, parameters)

    monkeypatch.setattr(manual_enter_exit.ToolRegistry, "execute", counting)
    task_id = manual_enter_exit.main(server.url)
    assert calls == ["crm_search", "fetch_webpage", "send_email"]

    timeline = sync_timeline(server.url, task_id)
    assert shape(timeline["action_tree"]) == [
        ("crm_search", []),
        ("fetch_webpage", []),
        ("send_email", []),
    ]
    assert {n["status"] for n in timeline["action_tree"]} == {"success"}
    fetch = closing(find(timeline["action_tree"], "fetch_webpage"))["payload"]
    assert fetch["success"] is False
    assert fetch["error"].startswith("404 Not Found")
    assert fetch["result_preview"] == ""
    assert fetch["args"] == {"url": "https://acme.example/about"}
    email = closing(find(timeline["action_tree"], "send_email"))["payload"]
    assert email["success"] is True and email["error"] is None
    assert email["args"]["body"] == "x" * 100  # truncated to 100 characters
    assert timeline["llm_call_count"] == 2
    assert sequence(timeline) == [
        "■phase1_reasoning",
        "●crm_search",
        "●fetch_webpage",
        "●send_email",
        "■phase2_tool_use",
    ]


def test_manual_enter_exit_loop_runs_tools_untracked_outside_a_task() -> None:
    """Without a current task the loop's tools still run, once each, untracked."""
    assert hiveloop.current_agent() is None
    results = manual_enter_exit.AgentLoop(manual_enter_exit.ToolRegistry()).run()
    assert [r.success for r in results] == [True, False, True]


# -- every example's command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        (sync_script, []),
        (manual_enter_exit, []),
        (concurrent_runner, ["--tasks", "20"]),
    ],
    ids=["sync_script", "manual_enter_exit", "concurrent_runner"],
)
def test_example_cli_takes_the_endpoint_option(
    server: ServerThread, module: Any, extra: list[str]
) -> None:
    """Each example's ``cli(["--endpoint", URL])`` runs it against that server."""
    before = server.event_count()
    assert module.cli(["--endpoint", server.url, *extra]) == 0
    assert server.event_count() > before


# -- demo.py (make demo) ------------------------------------------------------------------


def check_demo_output(text: str) -> None:
    """The demo printed the task list, three timelines drawn like the manual, and a hint."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert plain.count("TIMELINE  task-lead-") == 3
    assert plain.count("✔ completed") >= 6  # three in the task table, three in the headers
    assert plain.count("■ agent_turn LLM") >= 12
    assert plain.count("● research") == 3
    assert plain.count("├── ● web_search") == 3
    assert plain.count("└── ● summarize") == 3
    assert plain.count("✖ enrich_company") == 3
    assert "ConnectionError: Enrichment API timeout after 5000ms" in plain
    assert "hiveloop-async tail" in plain


def test_demo_prints_three_timelines_and_stops_its_server() -> None:
    """``python -m examples.demo`` (what ``make demo`` runs) exits 0, prints the three
    timelines without colors into a pipe, and leaves no server behind."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "NO_COLOR": ""},
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    check_demo_output(done.stdout)
    assert "\x1b[" not in done.stdout
    found = re.search(r"Server listening on http://127\.0\.0\.1:(\d+)", done.stdout)
    assert found is not None
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", int(found.group(1))))


def run_in_pty(argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; return status and output."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        status = proc.wait(timeout=timeout)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def test_demo_uses_colors_on_a_terminal() -> None:
    """On a terminal the demo colors LLM nodes purple, actions blue and failures red."""
    status, output = run_in_pty([sys.executable, "-m", "examples.demo"])
    assert status == 0, output
    check_demo_output(output)
    assert "\x1b[35m■ agent_turn LLM\x1b[0m" in output
    assert "\x1b[34m● research\x1b[0m" in output
    assert "\x1b[31m✖ enrich_company" in output


@pytest.mark.parametrize(
    "trigger",
    ["  task-lead-", "$ hiveloop-async timeline"],
    ids=["while-the-agent-runs", "while-printing-timelines"],
)
def test_demo_stops_the_server_on_ctrl_c(trigger: str) -> None:
    """Ctrl-C ends the demo with status 130 and stops the server, whether it comes while
    the agent runs or while a timeline is printed (where the CLI itself catches it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:
            found = re.search(r"Server listening on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            if line.startswith(trigger):
                break
        assert port is not None
        proc.send_signal(signal.SIGINT)
        out, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted; the server was stopped" in stderr
    assert "Done in" not in out
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
