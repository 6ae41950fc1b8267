"""hiveloop_async.contrib.anthropic: the real anthropic client against the fake server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from hiveloop_async import Agent, HiveBoard
from hiveloop_async.contrib.anthropic import instrument, uninstrument
from hiveloop_async.testing import EventCapture
from tests.providers.fixtures import llm_calls
from tests.providers.server import ANSWER, FakeProvider

MSGS: Any = [{"role": "user", "content": "SECRET-PROMPT say hi"}]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    server = FakeProvider().start()
    yield server
    server.stop()


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("claude-agent")


@pytest.fixture
def client(provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(
        api_key="sk-ant-secret-123", base_url=provider.anthropic_url, max_retries=0
    )
    yield instrument(c)
    c.close()


@pytest.fixture
async def aclient(provider: FakeProvider) -> Any:
    c = anthropic.AsyncAnthropic(
        api_key="sk-ant-secret-123", base_url=provider.anthropic_url, max_retries=0
    )
    yield instrument(c)
    await c.close()


def _check(d: dict[str, Any], tools: bool = False) -> None:
    assert d["name"] == "messages"
    assert d["model"] == ("claude-sonnet-4-tools" if tools else "claude-sonnet-4") + "-20250514"
    assert (d["tokens_in"], d["tokens_out"]) == (21, 7)
    assert d["metadata"]["cache_creation_input_tokens"] == 5
    assert d["metadata"]["cache_read_input_tokens"] == 9
    assert d["metadata"]["stop_reason"] == ("tool_use" if tools else "end_turn")
    assert d["cost"] == pytest.approx(21 / 1000 * 0.003 + 7 / 1000 * 0.015)
    if tools:
        assert d["metadata"]["tool_calls"] == [{"id": "toolu_1", "name": "crm_search"}]


def test_create_plain_and_stream_sync(
    agent: Agent, cap: EventCapture, client: anthropic.Anthropic
) -> None:
    with agent.task("t") as task:
        m = client.messages.create(model="claude-sonnet-4-tools", max_tokens=10, messages=MSGS)
        assert m.content[0].text == ANSWER  # type: ignore[union-attr]
        events = list(
            client.messages.create(
                model="claude-sonnet-4", max_tokens=10, messages=MSGS, stream=True
            )
        )
        assert events[-1].type == "message_stop"
    a, b = llm_calls(cap)
    assert a["task_id"] == b["task_id"] == task.task_id
    _check(a["payload"]["data"], tools=True)
    _check(b["payload"]["data"])
    assert "ttft_ms" in b["payload"]["data"]["metadata"]
    assert b["payload"]["data"]["response_preview"] == "w0 w1 w2 w3 w4 "


async def test_create_plain_and_stream_async(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t"):
        await aclient.messages.create(model="claude-sonnet-4", max_tokens=10, messages=MSGS)
        s = await aclient.messages.create(
            model="claude-sonnet-4-tools", max_tokens=10, messages=MSGS, stream=True
        )
        async for _ in s:
            pass
    a, b = llm_calls(cap)
    _check(a["payload"]["data"])
    _check(b["payload"]["data"], tools=True)


def test_stream_helper_sync(agent: Agent, cap: EventCapture, client: anthropic.Anthropic) -> None:
    with (
        agent.task("t"),
        client.messages.stream(
            model="claude-sonnet-4-tools", max_tokens=10, messages=MSGS
        ) as stream,
    ):
        text = "".join(stream.text_stream)
    assert text == "w0 w1 w2 w3 w4 "
    d = llm_calls(cap)[0]["payload"]["data"]
    _check(d, tools=True)
    assert "closed_early" not in d["metadata"]


async def test_stream_helper_async(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t"):
        async with aclient.messages.stream(
            model="claude-sonnet-4", max_tokens=10, messages=MSGS
        ) as stream:
            msg = await stream.get_final_message()
    assert msg.usage.output_tokens == 7
    (ev,) = llm_calls(cap)
    _check(ev["payload"]["data"])


def test_errors_break_and_uninstrument(
    agent: Agent, cap: EventCapture, client: anthropic.Anthropic
) -> None:
    with agent.task("t"):
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="fail-429", max_tokens=10, messages=MSGS)
        s = client.messages.create(
            model="claude-sonnet-4", max_tokens=10, messages=MSGS, stream=True
        )
        for _ in s:
            break
        s.close()
        with pytest.raises(anthropic.APIError):
            for _ in client.messages.create(
                model="claude-sonnet-4-cut", max_tokens=10, messages=MSGS, stream=True
            ):
                pass
        assert instrument(client) is client
        uninstrument(client)
        client.messages.create(model="claude-sonnet-4", max_tokens=10, messages=MSGS)
    failed, early, cut = (e["payload"]["data"]["metadata"] for e in llm_calls(cap))
    assert failed["status"] == "failed" and failed["error"]["status_code"] == 429
    assert early["closed_early"] is True
    assert cut["status"] == "failed"
    assert "sk-ant" not in str(cap.events)


async def test_200_concurrent_and_no_content(
    provider: FakeProvider, agent: Agent, cap: EventCapture
) -> None:
    c = instrument(
        anthropic.AsyncAnthropic(api_key="k", base_url=provider.anthropic_url),
        capture_content=False,
    )

    async def run(i: int) -> str:
        with agent.task(f"t{i}") as task:
            if i % 2:
                await c.messages.create(model="claude-sonnet-4", max_tokens=5, messages=MSGS)
            else:
                async with c.messages.stream(
                    model="claude-sonnet-4", max_tokens=5, messages=MSGS
                ) as s:
                    await s.until_done()
            return task.task_id

    ids = await asyncio.gather(*(run(i) for i in range(200)))
    await c.close()
    calls = llm_calls(cap)
    assert sorted(e["task_id"] for e in calls) == sorted(ids)
    text = str(cap.events)
    assert "SECRET-PROMPT" not in text and ANSWER not in text and "w0" not in text


def test_leaving_the_stream_helper_early_is_recorded_once(
    agent: Agent, cap: EventCapture, client: anthropic.Anthropic
) -> None:
    with (
        agent.task("t"),
        client.messages.stream(
            model="claude-sonnet-4", max_tokens=10, messages=MSGS, metadata={"user_id": "50"}
        ) as stream,
    ):
        for _ in stream.text_stream:
            break
    (ev,) = llm_calls(cap)
    d = ev["payload"]["data"]
    assert d["metadata"]["closed_early"] is True
    assert "status" not in d["metadata"]  # leaving early is not a failure


async def test_async_stream_cut_midway_and_early_break(
    agent: Agent, cap: EventCapture, aclient: Any
) -> None:
    with agent.task("t"):
        stream = await aclient.messages.create(
            model="claude-sonnet-4-cut", max_tokens=10, messages=MSGS, stream=True
        )
        with pytest.raises(anthropic.APIError):
            async for _ in stream:
                pass
        async with aclient.messages.stream(
            model="claude-sonnet-4", max_tokens=10, messages=MSGS
        ) as helper:
            async for _ in helper:
                break
    cut, early = (e["payload"]["data"]["metadata"] for e in llm_calls(cap))
    assert cut["status"] == "failed" and cut["stream"] is True
    assert early["closed_early"] is True


async def test_cancelling_the_awaiting_task_records_a_failed_call_and_propagates(
    agent: Agent, cap: EventCapture, aclient: Any
) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        with agent.task("t-cancel"):
            stream = await aclient.messages.create(
                model="claude-sonnet-4-slow",
                max_tokens=10,
                messages=MSGS,
                stream=True,
                metadata={"user_id": "500"},  # the fake server's chunk count
            )
            async for _ in stream:
                first.set()

    t = asyncio.ensure_future(consume())
    await asyncio.wait_for(first.wait(), 10)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    (ev,) = llm_calls(cap)
    d = ev["payload"]["data"]
    assert d["metadata"]["status"] == "failed"
    assert d["metadata"]["error"]["type"] == "CancelledError"
    assert ev["task_id"] == "t-cancel"
