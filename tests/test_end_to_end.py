"""The SDK against the real local server, end to end.

Each test records one of the user manual's scenarios (part 8: §3 minimal, §4 full turn,
§8.1-8.4 nesting, §12.5 retries, a failing tool, ``set_payload``) with the SDK in one of
its two modes (``init()`` with the thread sender, or ``async with HiveBoard`` on the test's
loop), delivers it, and then checks what HiveBoard's read API answers:
``GET /v1/tasks/{id}/timeline`` (action tree, statuses, payloads, durations, LLM totals) and
``GET /v1/tasks`` (derived status and aggregates). Reads poll until the data is there,
bounded by a timeout; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

import aiohttp
import pytest

import hiveloop_async as hiveloop
from hiveloop_async import _cli
from hiveloop_async._server import ServerThread, start_server

KEY = "hb_e2e_0123456789abcdef0123456789ab"
Json = dict[str, Any]


# -- helpers: the server, the read API, and the shapes we compare -----------------------------


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A local HiveBoard-compatible server with an in-memory database, on its own thread."""
    with ServerThread(memory=True) as srv:
        yield srv


def work(seconds: float) -> None:
    """A tracked block's simulated work: the duration the test then finds on the timeline."""
    time.sleep(seconds)  # allowed-sleep: the work being measured, not a wait for a condition


def unique(prefix: str) -> str:
    """A task id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def get_json(url: str, path: str, params: Mapping[str, str] | None = None) -> Any:
    """GET one read endpoint with the API key; None when it answers 404."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.get(url + path, params=dict(params or {})) as response,
    ):
        if response.status == 404:
            return None
        assert response.status == 200, f"GET {path}: HTTP {response.status}"
        return await response.json()


async def wait_for_json(
    url: str,
    path: str,
    ready: Callable[[Any], bool],
    *,
    params: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Any:
    """Poll ``GET path`` until ``ready(answer)``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        body = await get_json(url, path, params)
        if body is not None and ready(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"GET {path} was never ready; last answer: {body!r}"[:3000])
        await asyncio.sleep(0.02)


def finished(timeline: Any) -> bool:
    """True once the task's terminal event is stored."""
    return bool(timeline.get("completed_at"))


async def timeline_of(url: str, task_id: str, ready: Callable[[Any], bool] = finished) -> Json:
    """The task's timeline, once ``ready``."""
    body: Json = await wait_for_json(url, f"/v1/tasks/{task_id}/timeline", ready)
    return body


def sync_timeline(url: str, task_id: str, ready: Callable[[Any], bool] = finished) -> Json:
    """:func:`timeline_of` for synchronous tests."""
    return asyncio.run(timeline_of(url, task_id, ready))


async def task_items(url: str, task_ids: set[str], **params: str) -> dict[str, Json]:
    """``GET /v1/tasks`` items of ``task_ids``, once every one of them is listed."""

    def listed(body: Any) -> bool:
        return task_ids <= {item["task_id"] for item in body["data"]}

    body = await wait_for_json(url, "/v1/tasks", listed, params={"limit": "200", **params})
    return {item["task_id"]: item for item in body["data"] if item["task_id"] in task_ids}


def shape(nodes: list[Json]) -> list[tuple[str, Any]]:
    """An action tree as nested ``(name, [children])`` pairs."""
    return [(node["name"], shape(node["children"])) for node in nodes]


def find(nodes: list[Json], name: str) -> Json:
    """The first node called ``name`` anywhere in the tree."""
    for node in nodes:
        if node["name"] == name:
            return node
        try:
            return find(node["children"], name)
        except LookupError:
            pass
    raise LookupError(name)


def closing(node: Json) -> Json:
    """A tree node's ``action_completed`` or ``action_failed`` event."""
    ends: list[Json] = [
        e for e in node["events"] if e["event_type"] in ("action_completed", "action_failed")
    ]
    assert len(ends) == 1, node["events"]
    return ends[0]


def llm_calls(timeline: Json) -> list[Json]:
    """The timeline's ``custom``/``llm_call`` events, in order."""
    return [
        e
        for e in timeline["events"]
        if e["event_type"] == "custom" and (e.get("payload") or {}).get("kind") == "llm_call"
    ]


def sequence(timeline: Json) -> list[str]:
    """LLM calls (``■name``) and action starts (``●name``) in timeline order."""
    out = []
    for event in timeline["events"]:
        payload = event.get("payload") or {}
        if event["event_type"] == "action_started":
            out.append(f"●{payload['action_name']}")
        elif payload.get("kind") == "llm_call":
            out.append(f"■{payload['data']['name']}")
    return out


# -- §3 the minimal pattern ------------------------------------------------------------------


@dataclass
class FakeToolCall:
    """A tool call as an LLM SDK returns it."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


def execute_tool(name: str, args: Mapping[str, Any]) -> str:
    """A tool that takes 10 ms."""
    work(0.01)
    return f"{name} ok"


def test_minimal_pattern_each_tool_call_is_a_timed_action(server: ServerThread) -> None:
    """§3: every tool call in the loop becomes a root action with its name and a duration."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    hiveloop_agent = hb.agent("minimal-agent")
    tool_calls = [FakeToolCall("crm_search"), FakeToolCall("score_lead"), FakeToolCall("notify")]
    task_id = unique("minimal")
    with hiveloop_agent.task(task_id):
        for tool_call in tool_calls:
            with hiveloop_agent.track_context(tool_call.name):
                execute_tool(tool_call.name, tool_call.args)
    assert hiveloop.flush(timeout=5.0)

    timeline = sync_timeline(server.url, task_id)
    assert shape(timeline["action_tree"]) == [
        ("crm_search", []),
        ("score_lead", []),
        ("notify", []),
    ]
    for node in timeline["action_tree"]:
        assert node["status"] == "success"
        assert node["duration_ms"] >= 9
        assert node["parent_action_id"] is None
    assert timeline["derived_status"] == "completed"
    assert timeline["duration_ms"] >= 27


# -- §4 the full turn pattern, in both modes --------------------------------------------------


@dataclass
class FakeResponse:
    """An LLM response: model, usage and the tools it picked."""

    model: str
    input_tokens: int
    output_tokens: int
    tool_calls: list[FakeToolCall]


#: Three turns: two tools, one tool, then a zero-tool answer (manual §12.6).
SCRIPT = [
    FakeResponse("claude-sonnet", 100, 20, [FakeToolCall("crm_search", {"q": "Acme"})]),
    FakeResponse("claude-sonnet", 150, 30, [FakeToolCall("score_lead"), FakeToolCall("notify")]),
    FakeResponse("claude-sonnet", 200, 10, []),
]
TOOL_SECONDS = {"crm_search": 0.02, "score_lead": 0.01, "notify": 0.015}


def run_turn_sync(response: FakeResponse) -> None:
    """§4's ``run_turn`` with the SDK's ``current_task()``/``current_agent()`` (§10)."""
    llm_start = time.perf_counter()
    work(0.005)  # llm.chat(...)
    llm_elapsed = (time.perf_counter() - llm_start) * 1000
    task = hiveloop.current_task()
    if task:
        task.llm_call(
            "agent_turn",
            model=response.model,
            tokens_in=response.input_tokens,
            tokens_out=response.output_tokens,
            duration_ms=round(llm_elapsed),
        )
    agent = hiveloop.current_agent()
    for tool_call in response.tool_calls:
        assert agent is not None
        with agent.track_context(tool_call.name) as ctx:
            work(TOOL_SECONDS[tool_call.name])
            ctx.set_payload({"result_preview": f"{tool_call.name} result"[:200]})


async def run_turn_async(response: FakeResponse) -> None:
    """The same turn on the event loop, with ``async with``."""
    llm_start = time.perf_counter()
    await asyncio.sleep(0.005)
    llm_elapsed = (time.perf_counter() - llm_start) * 1000
    task = hiveloop.current_task()
    if task:
        task.llm_call(
            "agent_turn",
            model=response.model,
            tokens_in=response.input_tokens,
            tokens_out=response.output_tokens,
            duration_ms=round(llm_elapsed),
        )
    agent = hiveloop.current_agent()
    for tool_call in response.tool_calls:
        assert agent is not None
        async with agent.track_context(tool_call.name) as ctx:
            await asyncio.sleep(TOOL_SECONDS[tool_call.name])
            ctx.set_payload({"result_preview": f"{tool_call.name} result"[:200]})


async def check_full_turn(url: str, task_id: str, agent_id: str) -> None:
    """What §4/§5 promise for :data:`SCRIPT`, on the timeline and in the task list."""
    timeline = await timeline_of(url, task_id)
    assert sequence(timeline) == [
        "■agent_turn",
        "●crm_search",
        "■agent_turn",
        "●score_lead",
        "●notify",
        "■agent_turn",  # the zero-tool turn: an LLM node with nothing after it
    ]
    assert shape(timeline["action_tree"]) == [
        ("crm_search", []),
        ("score_lead", []),
        ("notify", []),
    ]
    for node in timeline["action_tree"]:
        assert node["status"] == "success"
        assert node["duration_ms"] >= TOOL_SECONDS[node["name"]] * 1000 - 1
        assert closing(node)["payload"]["result_preview"] == f"{node['name']} result"
    calls = llm_calls(timeline)
    assert [c["payload"]["data"]["tokens_in"] for c in calls] == [100, 150, 200]
    assert all(c["payload"]["data"]["model"] == "claude-sonnet" for c in calls)
    assert all(c["payload"]["data"]["duration_ms"] >= 4 for c in calls)
    assert all(c["action_id"] is None for c in calls)  # recorded outside any action
    assert timeline["llm_call_count"] == 3
    assert (timeline["total_tokens_in"], timeline["total_tokens_out"]) == (450, 60)
    assert timeline["derived_status"] == "completed"

    item = (await task_items(url, {task_id}))[task_id]
    assert item["derived_status"] == "completed"
    assert item["agent_id"] == agent_id
    assert (item["project_id"], item["task_type"]) == ("e2e", "turns")
    assert (item["llm_call_count"], item["action_count"], item["error_count"]) == (3, 3, 0)
    assert (item["total_tokens_in"], item["total_tokens_out"]) == (450, 60)
    assert item["duration_ms"] >= 45


def test_full_turn_pattern_thread_mode(server: ServerThread) -> None:
    """§4 in synchronous code (``init()``, thread sender): LLM and tool nodes alternate."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("turns-sync")
    task_id = unique("turns-sync")
    with agent.task(task_id, project="e2e", type="turns"):
        for response in SCRIPT:
            run_turn_sync(response)
    result = hiveloop.shutdown(timeout=5.0)
    assert result is not None and result.delivered > 0 and not result.timed_out
    asyncio.run(check_full_turn(server.url, task_id, "turns-sync"))


async def test_full_turn_pattern_loop_mode(server: ServerThread) -> None:
    """§4 on the event loop (``async with HiveBoard``): the same timeline as thread mode."""
    task_id = unique("turns-async")
    async with hiveloop.HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("turns-async")
        async with agent.task(task_id, project="e2e", type="turns"):
            for response in SCRIPT:
                await run_turn_async(response)
        assert hb.stats()["mode"] == "loop"
        assert await hb.aflush(timeout=5.0)
    await check_full_turn(server.url, task_id, "turns-async")


# -- §8 nesting -------------------------------------------------------------------------------


def test_tool_calls_inside_a_tracked_function_are_its_children(server: ServerThread) -> None:
    """§8.1: blocks opened inside an ``@agent.track`` function nest under it, with payloads."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("nesting-81")

    @agent.track("process_lead")
    def process_lead(email: str) -> None:
        with agent.track_context("crm_search") as ctx:
            work(0.02)
            data: dict[str, str] | None = {"email": email}
            ctx.set_payload({"found": data is not None})
        with agent.track_context("enrich_company"):
            work(0.01)

    task_id = unique("nesting-81")
    with agent.task(task_id):
        process_lead("jane@acme.example")
    assert hiveloop.flush(timeout=5.0)

    timeline = sync_timeline(server.url, task_id)
    assert shape(timeline["action_tree"]) == [
        ("process_lead", [("crm_search", []), ("enrich_company", [])])
    ]
    parent = timeline["action_tree"][0]
    crm, enrich = parent["children"]
    assert crm["parent_action_id"] == enrich["parent_action_id"] == parent["action_id"]
    assert closing(crm)["payload"]["found"] is True
    assert crm["duration_ms"] >= 19 and enrich["duration_ms"] >= 9
    assert parent["duration_ms"] >= crm["duration_ms"] + enrich["duration_ms"]
    started = parent["events"][0]
    assert started["event_type"] == "action_started"
    assert started["payload"]["function"].endswith("process_lead")


async def test_nested_context_managers_in_async_code(server: ServerThread) -> None:
    """§8.2 with ``async with``: the inner block is the outer block's child."""
    task_id = unique("nesting-82")
    async with hiveloop.HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("nesting-82")
        async with agent.task(task_id), agent.track_context("outer_step"):
            await asyncio.sleep(0.005)
            async with agent.track_context("inner_step"):
                await asyncio.sleep(0.02)
        assert await hb.aflush(timeout=5.0)

    timeline = await timeline_of(server.url, task_id)
    assert shape(timeline["action_tree"]) == [("outer_step", [("inner_step", [])])]
    outer = timeline["action_tree"][0]
    inner = outer["children"][0]
    assert inner["duration_ms"] >= 19
    assert outer["duration_ms"] >= inner["duration_ms"] + 4


def test_decorator_and_context_manager_chain_under_the_task(server: ServerThread) -> None:
    """§8.3: task → step1 → llm_inference, linked by parent_action_id, payload kept."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("nesting-83")
    task_id = unique("task-123")

    with agent.task(task_id) as task:

        @agent.track("step1")
        def score() -> int:
            with agent.track_context("llm_inference") as ctx:
                work(0.01)
                result = 87
                ctx.set_payload({"score": result})
            return result

        assert score() == 87
    assert hiveloop.flush(timeout=5.0)

    timeline = sync_timeline(server.url, task_id)
    assert shape(timeline["action_tree"]) == [("step1", [("llm_inference", [])])]
    step1 = timeline["action_tree"][0]
    inference = step1["children"][0]
    assert inference["parent_action_id"] == step1["action_id"]
    assert closing(inference)["payload"]["score"] == 87
    for node in (step1, inference):
        for event in node["events"]:
            assert event["task_id"] == task_id
            assert event["task_run_id"] == task.task_run_id


async def test_research_tool_nests_summarize_with_its_llm_call(server: ServerThread) -> None:
    """§8.4: research → summarize, and an LLM call made inside summarize attaches to it."""
    task_id = unique("nesting-84")
    async with hiveloop.HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("nesting-84")
        async with agent.task(task_id) as task, agent.track_context("research"):
            await asyncio.sleep(0.01)  # web_search(query): not tracked in §8.4
            async with agent.track_context("summarize") as inner:
                await asyncio.sleep(0.01)
                task.llm_call("summarize", model="claude-haiku", tokens_in=80, tokens_out=20)
                inner.set_payload({"sources": 5})
        assert await hb.aflush(timeout=5.0)

    timeline = await timeline_of(server.url, task_id)
    assert shape(timeline["action_tree"]) == [("research", [("summarize", [])])]
    summarize = find(timeline["action_tree"], "summarize")
    (call,) = llm_calls(timeline)
    assert call["action_id"] == summarize["action_id"]
    assert closing(summarize)["payload"]["sources"] == 5
    assert timeline["llm_call_count"] == 1


# -- §12.5 retries, failing tools -------------------------------------------------------------


class RetryableError(Exception):
    """A tool error worth retrying."""


def test_retry_loop_from_the_manual_records_each_attempt(server: ServerThread) -> None:
    """§12.5's code verbatim: one action per attempt, each with its attempt payload.

    The manual's ``try`` sits inside the ``with`` block, so the first attempt's error is
    caught before ``track_context`` sees it: both attempts complete (the manual's picture
    of a failed first attempt needs the error to leave the block; see the next test).
    """
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    hiveloop_agent = hb.agent("retry-agent")
    attempts: list[int] = []
    backoffs: list[float] = []

    def execute(tool_name: str, args: Mapping[str, Any]) -> str:
        attempts.append(1)
        work(0.01)
        if len(attempts) == 1:
            raise RetryableError("CRM API timeout after 5000ms")
        return "ok"

    tool_name, args, max_retries = "crm_search", {"query": "Acme"}, 3
    task_id = unique("retry-manual")
    with hiveloop_agent.task(task_id):
        for attempt in range(max_retries):
            with hiveloop_agent.track_context(f"{tool_name}_attempt_{attempt + 1}") as ctx:
                try:
                    execute(tool_name, args)
                    ctx.set_payload({"attempt": attempt + 1, "success": True})
                    break
                except RetryableError as e:
                    ctx.set_payload({"attempt": attempt + 1, "error": str(e)[:100]})
                    if attempt == max_retries - 1:
                        raise
                    backoffs.append(2**attempt)  # time.sleep(2 ** attempt), skipped here
    assert hiveloop.flush(timeout=5.0)
    assert backoffs == [1]

    timeline = sync_timeline(server.url, task_id)
    assert shape(timeline["action_tree"]) == [
        ("crm_search_attempt_1", []),
        ("crm_search_attempt_2", []),
    ]
    first, second = timeline["action_tree"]
    assert first["status"] == second["status"] == "success"
    assert closing(first)["payload"] == {
        "action_name": "crm_search_attempt_1",
        "attempt": 1,
        "error": "CRM API timeout after 5000ms",
    }
    assert closing(second)["payload"]["success"] is True
    assert first["duration_ms"] >= 9 and second["duration_ms"] >= 9


async def test_retry_attempt_that_raises_is_a_failed_node_with_its_payload(
    server: ServerThread,
) -> None:
    """An attempt whose error leaves the block is ``action_failed`` and keeps its payload."""
    task_id = unique("retry-raise")
    async with hiveloop.HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("retry-agent-async")
        async with agent.task(task_id):
            for attempt in range(1, 4):
                try:
                    async with agent.track_context(f"crm_search_attempt_{attempt}") as ctx:
                        ctx.set_payload({"attempt": attempt})
                        await asyncio.sleep(0.01)
                        if attempt == 1:
                            raise RetryableError("CRM API timeout after 5000ms")
                        ctx.set_payload({"attempt": attempt, "success": True})
                    break
                except RetryableError:
                    continue
        assert await hb.aflush(timeout=5.0)

    timeline = await timeline_of(server.url, task_id)
    first, second = timeline["action_tree"]
    assert (first["name"], first["status"]) == ("crm_search_attempt_1", "failure")
    assert (second["name"], second["status"]) == ("crm_search_attempt_2", "success")
    failed = closing(first)
    assert failed["event_type"] == "action_failed"
    assert failed["severity"] == "error"
    assert failed["payload"]["exception_type"] == "RetryableError"
    assert failed["payload"]["exception_message"] == "CRM API timeout after 5000ms"
    assert failed["payload"]["attempt"] == 1
    assert failed["duration_ms"] >= 9
    item = (await task_items(server.url, {task_id}))[task_id]
    assert (item["derived_status"], item["error_count"], item["action_count"]) == (
        "completed",
        1,
        2,
    )


async def test_failing_tool_is_red_and_an_escaping_error_fails_the_task(
    server: ServerThread,
) -> None:
    """§5.4: a raising tool is ``action_failed`` (re-raised); if nothing catches it the
    task fails too, and ``GET /v1/tasks?status=failed`` lists only that task."""
    handled, escaped = unique("tool-fails-handled"), unique("tool-fails-escaped")
    async with hiveloop.HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("failing-agent")

        async def crm_search() -> None:
            async with agent.track_context("crm_search"):
                await asyncio.sleep(0.01)
                raise ConnectionError("CRM API timeout after 5000ms")

        async with agent.task(handled):
            with pytest.raises(ConnectionError):
                await crm_search()  # recorded as action_failed, then re-raised
            async with agent.track_context("fallback_search"):
                await asyncio.sleep(0)
        with pytest.raises(ValueError, match="bad lead"):
            async with agent.task(escaped), agent.track_context("score_lead"):
                raise ValueError("bad lead")
        assert await hb.aflush(timeout=5.0)

    timeline = await timeline_of(server.url, handled)
    crm = find(timeline["action_tree"], "crm_search")
    assert crm["status"] == "failure"
    assert crm["duration_ms"] >= 9
    assert closing(crm)["payload"]["exception_type"] == "ConnectionError"
    assert closing(crm)["payload"]["exception_message"] == "CRM API timeout after 5000ms"
    assert find(timeline["action_tree"], "fallback_search")["status"] == "success"
    assert timeline["derived_status"] == "completed"

    timeline = await timeline_of(server.url, escaped)
    assert timeline["derived_status"] == "failed"
    assert find(timeline["action_tree"], "score_lead")["status"] == "failure"
    (task_failed,) = [e for e in timeline["events"] if e["event_type"] == "task_failed"]
    assert task_failed["payload"]["exception_type"] == "ValueError"
    assert task_failed["payload"]["exception_message"] == "bad lead"
    assert task_failed["status"] == "failure"

    items = await task_items(server.url, {escaped}, status="failed")
    assert set(items) == {escaped}
    assert items[escaped]["error_count"] == 2  # action_failed + task_failed


# -- set_payload and the wire's edge cases ----------------------------------------------------


def test_set_payload_arrives_on_the_closing_event(server: ServerThread) -> None:
    """§7: ``set_payload`` fields (args, result_preview, success, error) reach the detail
    panel; values JSON cannot carry are converted instead of losing the batch."""
    hb = hiveloop.HiveBoard(api_key=KEY, endpoint=server.url)
    agent = hb.agent("payload-agent")
    task_id = unique("payload")
    result = {"name": "Acme Corp", "email": "jane@acme.example", "notes": "n" * 1000}
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with agent.task(task_id) as task:
        with agent.track_context("crm_search") as ctx:
            args = {"query": "Acme Corp", "fields": "name,email,phone"}
            ctx.set_payload(
                {
                    "args": {k: str(v)[:100] for k, v in args.items()},
                    "result_preview": str(result)[:200],
                    "success": True,
                    "error": None,
                }
            )
        with agent.track_context("odd_values") as ctx:
            ctx.set_payload({"when": when, "ratio": float("nan"), "tags": {"a"}, "obj": object()})
        task.set_payload({"lead": "Acme Corp"})
    assert hb.shutdown(timeout=5.0)

    timeline = sync_timeline(server.url, task_id)
    payload = closing(find(timeline["action_tree"], "crm_search"))["payload"]
    assert payload == {
        "action_name": "crm_search",
        "args": {"query": "Acme Corp", "fields": "name,email,phone"},
        "result_preview": str(result)[:200],
        "success": True,
        "error": None,
    }
    odd = closing(find(timeline["action_tree"], "odd_values"))["payload"]
    assert odd["when"].startswith("2026-01-02T03:04:05")
    assert odd["ratio"] is None
    assert odd["tags"] == ["a"]
    assert odd["obj"].startswith("<object object")
    (completed,) = [e for e in timeline["events"] if e["event_type"] == "task_completed"]
    assert completed["payload"]["lead"] == "Acme Corp"


def test_oversized_payload_and_int_task_id_are_still_accepted(server: ServerThread) -> None:
    """A megabyte payload (manual §7.3's warning) is cut to HiveBoard's 32 KB limit and
    marked, and ``agent.task(4821)`` arrives as task ``"4821"`` instead of a 400."""
    hb = hiveloop.HiveBoard(api_key=KEY, endpoint=server.url)
    agent = hb.agent(unique("wire-agent"))
    int_id = int(uuid.uuid4().int % 10**9)
    with agent.task(cast(Any, int_id)), agent.track_context("crm_dump") as ctx:
        ctx.set_payload({"result": "x" * 1_000_000})
    assert hb.shutdown(timeout=5.0)
    assert server.requests.get(400, 0) == 0

    timeline = sync_timeline(server.url, str(int_id))
    payload = closing(find(timeline["action_tree"], "crm_dump"))["payload"]
    assert payload["_truncated"] is True
    assert len(json.dumps(payload)) <= 32_768
    assert timeline["task_id"] == str(int_id)


# -- task states, plans and the spec's call forms ------------------------------------------


async def test_task_list_derives_each_status_from_the_events(server: ServerThread) -> None:
    """``GET /v1/tasks`` derives completed, failed, escalated, waiting and processing from
    what the SDK sent, including the spec's keyword-only ``escalate``/``request_approval``."""
    ids = {s: unique(f"status-{s}") for s in ("completed", "failed", "escalated", "waiting")}
    ids["processing"] = unique("status-processing")
    async with hiveloop.HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("status-agent")
        async with agent.task(ids["completed"]) as task:
            task.retry(attempt=2, reason="rate limited", backoff_seconds=1.5)  # spec form
        agent.start_task(ids["failed"]).fail(RuntimeError("boom"))
        agent.start_task(ids["escalated"]).escalate(reason="needs a human", assigned_to="ops")
        agent.start_task(ids["waiting"]).request_approval(approver="manager", reason="discount")
        processing = agent.start_task(ids["processing"])
        async with agent.track_context("still_running"):
            pass
        processing.event("scored", {"summary": "lead scored", "data": {"score": 91}})
        assert await hb.aflush(timeout=5.0)

    items = await task_items(server.url, set(ids.values()))
    assert {status: items[task_id]["derived_status"] for status, task_id in ids.items()} == {
        "completed": "completed",
        "failed": "failed",
        "escalated": "escalated",
        "waiting": "waiting",
        "processing": "processing",
    }
    assert items[ids["escalated"]]["has_escalation"] is True
    assert items[ids["waiting"]]["has_human_intervention"] is True
    assert items[ids["failed"]]["error_count"] == 1

    timeline = await timeline_of(server.url, ids["processing"], ready=lambda t: True)
    (custom,) = [e for e in timeline["events"] if e["event_type"] == "custom"]
    assert custom["payload"]["original_type"] == "scored"  # unknown types travel as custom
    assert custom["payload"]["data"] == {"score": 91}
    assert timeline["action_tree"][0]["status"] == "success"
    escalated = await timeline_of(server.url, ids["escalated"], ready=lambda t: True)
    (event,) = [e for e in escalated["events"] if e["event_type"] == "escalated"]
    assert event["payload"]["data"] == {"assigned_to": "ops", "reason": "needs a human"}
    assert event["severity"] == "warn"


def test_plan_progress_shows_on_the_timeline(server: ServerThread) -> None:
    """``task.plan`` and ``task.plan_step`` give the timeline its plan overlay and progress,
    and a step sent before the plan does not break the endpoint."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("planner")
    task_id = unique("plan")
    with agent.task(task_id) as task:
        task.plan_step(0, "started", "too early: no plan yet")  # total_steps is null here
        task.plan("Qualify Acme", ["search CRM", "score", "email"])
        for index in range(2):
            task.plan_step(index, "started", f"step {index}")
            with agent.track_context(f"step_{index}"):
                pass
            task.plan_step(index, "completed", f"step {index}")
    assert hiveloop.flush(timeout=5.0)

    plan = sync_timeline(server.url, task_id)["plan"]
    assert plan["goal"] == "Qualify Acme"
    assert plan["progress"] == {"completed": 2, "total": 3}
    assert [step.get("action") for step in plan["steps"]] == ["completed", "completed", None]


def test_tail_lists_events_of_one_millisecond_in_the_order_they_happened(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hiveloop-async tail`` prints oldest first, also among events sharing a timestamp
    (a nested block entered and left within one millisecond)."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("tail-agent")
    task_id = unique("tail")
    with agent.task(task_id), agent.track_context("outer"), agent.track_context("inner"):
        pass
    assert hiveloop.flush(timeout=5.0)
    sync_timeline(server.url, task_id)

    assert _cli.main(["tail", "--once", "--task", task_id, "--url", server.url, "--no-color"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(line.split()[1], line.rsplit("(", 1)[1].rstrip(")")) for line in lines] == [
        ("task_started", f"Task {task_id} started"),
        ("action_started", "outer"),
        ("action_started", "inner"),
        ("action_completed", "inner"),
        ("action_completed", "outer"),
        ("task_completed", f"Task {task_id} completed"),
    ]


# -- concurrency: tasks never mix -------------------------------------------------------------


async def test_concurrent_tasks_on_one_agent_keep_their_own_actions() -> None:
    """Tasks gathered on one loop (HiveLoop 0.2.0 mixed them up): each timeline holds
    exactly its own actions and LLM call, all tagged with its task id."""
    async with await start_server() as srv:
        task_ids = [unique(f"gather-{i}") for i in range(5)]

        async def one(agent: hiveloop.Agent, task_id: str, delay: float) -> None:
            async with agent.task(task_id) as task:
                async with agent.track_context("fetch"):
                    await asyncio.sleep(delay)
                task.llm_call("decide", model="m", tokens_in=1, tokens_out=1)
                async with agent.track_context("act"):
                    await asyncio.sleep(0.03 - delay)

        async with hiveloop.HiveBoard(api_key=KEY, endpoint=srv.url) as hb:
            agent = hb.agent("gatherer")
            await asyncio.gather(
                *(one(agent, tid, 0.005 * (i + 1)) for i, tid in enumerate(task_ids))
            )
            assert await hb.aflush(timeout=5.0)

        for task_id in task_ids:
            timeline = await timeline_of(srv.url, task_id)
            assert shape(timeline["action_tree"]) == [("fetch", []), ("act", [])]
            assert sequence(timeline) == ["●fetch", "■decide", "●act"]
            assert {e["task_id"] for e in timeline["events"]} == {task_id}
        items = await task_items(srv.url, set(task_ids))
        assert all(item["action_count"] == 2 for item in items.values())


def test_tasks_in_worker_threads_keep_their_own_actions(server: ServerThread) -> None:
    """Thread mode: tasks run concurrently in a thread pool stay separate as well."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("threaded")
    task_ids = [unique(f"thread-{i}") for i in range(4)]

    def one(task_id: str) -> None:
        with agent.task(task_id), agent.track_context("work") as ctx:
            work(0.02)
            ctx.set_payload({"task": task_id})

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, task_ids))
    assert hiveloop.flush(timeout=5.0)

    for task_id in task_ids:
        timeline = sync_timeline(server.url, task_id)
        (node,) = timeline["action_tree"]
        assert closing(node)["payload"]["task"] == task_id
        assert {e["task_id"] for e in timeline["events"]} == {task_id}
        assert node["duration_ms"] >= 19
