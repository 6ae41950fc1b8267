"""End to end against Arize Phoenix: the demo agent's timelines, read back through its API.

Runs only with ``HIVELOOP_TEST_PHOENIX=1`` (``make test-otlp``): the first run pip-installs
``arize-phoenix`` into ``.phoenix-venv`` (about a minute), and Phoenix takes seconds to
start. The demo agent (``examples/agent_loop.py``: three concurrent lead-qualification
tasks, LLM calls, tool calls, one tool that always fails) runs on a real ``HiveBoard``
client whose only destination is Phoenix's OTLP/HTTP endpoint. What the SDK recorded is
captured on the way (``capture_events(send=True)``), so every span Phoenix shows is checked
against the events that made it: tree, names, kinds, token counts, errors.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto")

import hiveloop_async as hl
from examples import agent_loop
from hiveloop_async import _tracecontext as tc
from hiveloop_async.testing import capture_events

from .phoenix import PhoenixServer, ensure_venv

pytestmark = [
    pytest.mark.phoenix,
    pytest.mark.skipif(
        os.environ.get("HIVELOOP_TEST_PHOENIX") != "1",
        reason="Phoenix end to end: set HIVELOOP_TEST_PHOENIX=1 (make test-otlp)",
    ),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def phoenix() -> Iterator[PhoenixServer]:
    installed = ensure_venv()
    with PhoenixServer() as server:
        print(f"\nphoenix: install {installed:.1f} s (0: cached), startup {server.startup_s:.1f} s")
        yield server


async def _until_spans(phoenix: PhoenixServer, n: int, timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    spans: list[Any] = []
    while time.monotonic() < deadline:
        spans = await asyncio.to_thread(phoenix.spans)
        if len(spans) >= n:
            return spans
        await asyncio.sleep(0.2)
    return spans


async def test_demo_agent_timelines_in_phoenix(phoenix: PhoenixServer) -> None:
    async with (
        capture_events(send=True) as cap,
        hl.HiveBoard(
            otlp_endpoint=phoenix.url, otlp_protocol="http/protobuf", flush_interval=0.2
        ) as hb,
    ):
        agent = hb.agent("lead-qualifier", type="sales", version="1.0.0", heartbeat_interval=0)
        task_ids = await asyncio.gather(
            *(
                agent_loop.qualify_lead(agent, lead, seed=5 + i, run_id="phx")
                for i, lead in enumerate(agent_loop.LEADS)
            )
        )
        assert await hb.aflush(timeout=30)
        otlp = hb.stats()["otlp"]
        assert otlp is not None and otlp["dropped_total"] == 0
        exported = otlp["sent"]
    events = cap.events
    spans = await _until_spans(phoenix, exported)
    assert len(spans) == exported
    by_id = {s["context"]["span_id"]: s for s in spans}

    # One trace per task, rooted at "invoke_agent lead-qualifier", named from our ids.
    runs = {e["task_id"]: e["task_run_id"] for e in events if e["event_type"] == "task_started"}
    assert set(runs) == set(task_ids)
    for task_id, run_id in runs.items():
        root = by_id[tc.span_id_for(run_id)]
        assert root["name"] == "invoke_agent lead-qualifier"
        assert root["parent_id"] is None
        assert root["context"]["trace_id"] == tc.trace_id_for_run(run_id)
        assert root["span_kind"] == "AGENT"
        assert root["attributes"]["hiveloop.task.id"] == task_id

    # Every action is a span under its parent action or its task, in its task's trace;
    # the demo's tool calls (payload with "args") are execute_tool spans.
    actions = [e for e in events if e["event_type"] in ("action_completed", "action_failed")]
    assert actions
    for ev in actions:
        span = by_id[tc.span_id_for(ev["action_id"])]
        parent = ev.get("parent_action_id") or ev["task_run_id"]
        assert span["parent_id"] == tc.span_id_for(parent)
        assert span["context"]["trace_id"] == tc.trace_id_for_run(ev["task_run_id"])
        name = ev["payload"]["action_name"]
        if "args" in ev["payload"]:
            assert span["name"] == f"execute_tool {name}"
            assert span["span_kind"] == "TOOL"
        else:
            assert span["name"] == name
        if ev["event_type"] == "action_failed":
            assert span["status_code"] == "ERROR"
            assert span["status_message"].startswith(ev["payload"]["exception_type"])
            (exc,) = [x for x in span["events"] if x["name"] == "exception"]
            assert exc["attributes"]["exception.type"] == ev["payload"]["exception_type"]
        else:
            assert span["status_code"] == "UNSET"
    failed = [e for e in actions if e["event_type"] == "action_failed"]
    assert {e["payload"]["action_name"] for e in failed} == {"enrich_company"}

    # Every LLM call is a "chat {model}" span with its token counts, under its action or
    # task. (Matched by content: a captured event's event_id is drawn anew by the capture's
    # own encoding, while the span id comes from the one the sender drew.)
    llm = [e for e in events if e["event_type"] == "custom" and e["payload"]["kind"] == "llm_call"]
    assert llm
    expected = sorted(
        (
            tc.span_id_for(ev.get("action_id") or ev["task_run_id"]),
            f"chat {ev['payload']['data']['model']}",
            ev["payload"]["data"]["tokens_in"],
            ev["payload"]["data"]["tokens_out"],
        )
        for ev in llm
    )
    chat = [s for s in spans if s["span_kind"] == "LLM"]
    got = sorted(
        (
            s["parent_id"],
            s["name"],
            s["attributes"]["gen_ai.usage.input_tokens"],
            s["attributes"]["gen_ai.usage.output_tokens"],
        )
        for s in chat
    )
    assert got == expected
    for s in chat:
        assert s["attributes"]["gen_ai.request.model"] == s["name"].removeprefix("chat ")
    tokens_in = sum(e[2] for e in expected)
    tokens_out = sum(e[3] for e in expected)

    # Phoenix's own aggregate (GraphQL) agrees on the token totals and the trace count.
    data = await asyncio.to_thread(
        phoenix.graphql,
        "{ projects { edges { node { name traceCount tokenCountPrompt tokenCountCompletion } } } }",
    )
    (project,) = [e["node"] for e in data["projects"]["edges"] if e["node"]["name"] == "default"]
    assert project["tokenCountPrompt"] == tokens_in
    assert project["tokenCountCompletion"] == tokens_out
    assert project["traceCount"] >= len(runs)
