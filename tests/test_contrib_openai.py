"""hiveloop_async.contrib.openai: the real openai client against the fake provider server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from hiveloop_async import Agent, HiveBoard
from hiveloop_async.contrib.openai import instrument, uninstrument
from hiveloop_async.testing import EventCapture
from tests.providers.fixtures import llm_calls, wait_for
from tests.providers.server import ANSWER, FakeProvider

MSGS: Any = [{"role": "user", "content": "SECRET-PROMPT say hi"}]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    server = FakeProvider().start()
    yield server
    server.stop()


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("llm-agent")


@pytest.fixture
def client(provider: FakeProvider) -> Iterator[Any]:
    c = openai.OpenAI(api_key="sk-test-secret-key-123", base_url=provider.openai_url, max_retries=0)
    yield instrument(c)
    c.close()


@pytest.fixture
async def aclient(provider: FakeProvider) -> Any:
    c = openai.AsyncOpenAI(
        api_key="sk-test-secret-key-123", base_url=provider.openai_url, max_retries=0
    )
    yield instrument(c)
    await c.close()


def one(cap: EventCapture) -> dict[str, Any]:
    calls = llm_calls(cap)
    assert len(calls) == 1, calls
    return calls[0]


def test_chat_plain_sync(agent: Agent, cap: EventCapture, client: Any) -> None:
    with agent.task("t-chat") as task:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert r.choices[0].message.content == ANSWER
    ev = one(cap)
    assert ev["task_id"] == task.task_id
    d = ev["payload"]["data"]
    assert d["name"] == "chat"
    assert d["model"] == "gpt-4o-mini-2024-07-18"
    assert (d["tokens_in"], d["tokens_out"]) == (12, 5)
    assert d["cost"] == pytest.approx(12 / 1000 * 0.00015 + 5 / 1000 * 0.0006)
    assert isinstance(d["duration_ms"], int)
    assert d["metadata"]["cached_tokens"] == 4
    assert d["metadata"]["reasoning_tokens"] == 2
    assert d["metadata"]["finish_reason"] == "stop"
    assert "SECRET-PROMPT" in d["prompt_preview"]
    assert d["response_preview"] == ANSWER


async def test_chat_plain_async(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t-achat") as task:
        await aclient.chat.completions.create(model="gpt-4o-tools", messages=MSGS)
    ev = one(cap)
    assert ev["task_id"] == task.task_id
    d = ev["payload"]["data"]
    assert d["metadata"]["tool_calls"] == [
        {"id": "call_1", "name": "crm_search"},
        {"id": "call_2", "name": "score_lead"},
    ]
    assert d["metadata"]["finish_reason"] == "tool_calls"


def test_chat_stream_sync_hides_usage_chunk(agent: Agent, cap: EventCapture, client: Any) -> None:
    with agent.task("t-s"):
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MSGS,
            stream=True,
        )
        chunks = list(stream)
    assert all(c.choices for c in chunks)  # the usage-only chunk is hidden
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w0 w1 w2 w3 w4 "
    d = one(cap)["payload"]["data"]
    assert (d["tokens_in"], d["tokens_out"]) == (12, 5)
    assert d["metadata"]["stream"] is True
    assert isinstance(d["metadata"]["ttft_ms"], int)
    assert d["response_preview"] == "w0 w1 w2 w3 w4 "


def test_chat_stream_caller_asked_for_usage_sees_it(
    agent: Agent, cap: EventCapture, client: Any
) -> None:
    with agent.task("t-s"):
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MSGS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert one(cap)["payload"]["data"]["tokens_in"] == 12


async def test_chat_stream_async_tools(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t-as") as task:
        stream = await aclient.chat.completions.create(
            model="gpt-4o-tools", messages=MSGS, stream=True
        )
        async with stream:
            n = [c async for c in stream]
    assert n
    ev = one(cap)
    assert ev["task_id"] == task.task_id
    d = ev["payload"]["data"]
    assert [t["name"] for t in d["metadata"]["tool_calls"]] == ["crm_search", "score_lead"]
    assert d["tokens_out"] == 5


def test_stream_early_break_and_close(agent: Agent, cap: EventCapture, client: Any) -> None:
    with agent.task("t-b"):
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MSGS,
            stream=True,
        )
        for _ in stream:
            break
        assert len(llm_calls(cap)) == 1
        stream.close()
        with client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MSGS,
            stream=True,
        ) as s2:
            next(s2)
    calls = llm_calls(cap)
    assert len(calls) == 2
    assert all(c["payload"]["data"]["metadata"]["closed_early"] for c in calls)


async def test_async_stream_early_break(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t-ab"):
        stream = await aclient.chat.completions.create(
            model="gpt-4o-mini-slow", messages=MSGS, stream=True
        )
        async for _ in stream:
            break
        for _ in range(200):
            if llm_calls(cap):
                break
            await asyncio.sleep(0.005)
        await stream.close()
    assert one(cap)["payload"]["data"]["metadata"]["closed_early"] is True


def test_error_429_recorded_and_reraised(agent: Agent, cap: EventCapture, client: Any) -> None:
    with agent.task("t-e"), pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="fail-429", messages=MSGS)
    d = one(cap)["payload"]["data"]
    assert d["metadata"]["status"] == "failed"
    assert d["metadata"]["error"]["type"] == "RateLimitError"
    assert d["metadata"]["error"]["status_code"] == 429
    assert info.value.status_code == 429
    assert "sk-test" not in str(cap.events)


async def test_error_500_async(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t-e"), pytest.raises(openai.InternalServerError):
        await aclient.embeddings.create(model="fail-500", input="x")
    assert one(cap)["payload"]["data"]["metadata"]["error"]["status_code"] == 500


def test_stream_cut_midway_is_failed(agent: Agent, cap: EventCapture, client: Any) -> None:
    with agent.task("t-cut"):
        stream = client.chat.completions.create(
            model="gpt-4o-cut",
            messages=MSGS,
            stream=True,
        )
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
    d = one(cap)["payload"]["data"]
    assert d["metadata"]["status"] == "failed"


async def test_cancel_awaiting_task(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        with agent.task("t-cancel"):
            stream = await aclient.chat.completions.create(
                model="gpt-4o-slow", messages=MSGS, stream=True, extra_body={"chunks": 500}
            )
            async for _ in stream:
                first.set()

    t = asyncio.ensure_future(consume())
    await asyncio.wait_for(first.wait(), 10)  # cancelled mid-stream, not before it started
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    d = one(cap)["payload"]["data"]
    assert d["metadata"]["error"]["type"] == "CancelledError"


def test_responses_and_embeddings_sync(agent: Agent, cap: EventCapture, client: Any) -> None:
    with agent.task("t-r"):
        r = client.responses.create(model="gpt-4o-tools", input="SECRET-PROMPT")
        assert r.output[0].type == "function_call"
        s = client.responses.create(model="gpt-4o", input="hi", stream=True)
        list(s)
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    a, b, c = (e["payload"]["data"] for e in llm_calls(cap))
    assert a["name"] == "responses" and (a["tokens_in"], a["tokens_out"]) == (11, 6)
    assert a["metadata"]["tool_calls"] == [{"id": "call_1", "name": "crm_search"}]
    assert b["metadata"]["stream"] is True and b["tokens_out"] == 6
    assert b["response_preview"] == "w0 w1 w2 w3 w4 "
    assert c["name"] == "embeddings" and c["tokens_in"] == 8 and c["metadata"]["count"] == 2


async def test_responses_parse_async(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    with agent.task("t-r"):
        await aclient.responses.create(model="gpt-4o", input="hi")
        s = await aclient.responses.create(model="gpt-4o", input="hi", stream=True)
        async for _ in s:
            pass
        await aclient.chat.completions.parse(model="gpt-4o", messages=MSGS)
        await aclient.embeddings.create(model="text-embedding-3-small", input="a")
    assert [e["payload"]["data"]["name"] for e in llm_calls(cap)] == [
        "responses",
        "responses",
        "chat",
        "embeddings",
    ]


async def test_200_concurrent_tasks(agent: Agent, cap: EventCapture, aclient: Any) -> None:
    async def one_task(i: int) -> str:
        with agent.task(f"t-{i}") as task:
            if i % 2:
                await aclient.chat.completions.create(model="gpt-4o", messages=MSGS)
            else:
                s = await aclient.chat.completions.create(
                    model="gpt-4o", messages=MSGS, stream=True
                )
                async for _ in s:
                    pass
            return task.task_id

    ids = await asyncio.gather(*(one_task(i) for i in range(200)))
    calls = llm_calls(cap)
    assert sorted(c["task_id"] for c in calls) == sorted(ids)


def test_capture_content_false(provider: FakeProvider, agent: Agent, cap: EventCapture) -> None:
    c: Any = instrument(
        openai.OpenAI(api_key="sk-x", base_url=provider.openai_url), capture_content=False
    )
    with agent.task("t-p"):
        c.chat.completions.create(model="gpt-4o", messages=MSGS)
        list(c.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True))
    c.close()
    assert len(llm_calls(cap)) == 2
    text = str(cap.events)
    assert "SECRET-PROMPT" not in text and ANSWER not in text and "w0" not in text


def test_twice_once_uninstrumented_none_and_copies(
    provider: FakeProvider, agent: Agent, cap: EventCapture
) -> None:
    c: Any = openai.OpenAI(api_key="sk-x", base_url=provider.openai_url)
    assert instrument(instrument(c)) is c
    with agent.task("t-i"):
        c.chat.completions.create(model="gpt-4o", messages=MSGS)
        assert len(llm_calls(cap)) == 1
        c.with_options(timeout=5).chat.completions.create(model="gpt-4o", messages=MSGS)
        assert len(llm_calls(cap)) == 2  # copies are instrumented
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
        assert raw.parse().choices[0].message.content == ANSWER
        assert len(llm_calls(cap)) == 3
        with c.chat.completions.with_streaming_response.create(
            model="gpt-4o",
            messages=MSGS,
        ) as resp:
            resp.read()
        uninstrument(c)
        c.chat.completions.create(model="gpt-4o", messages=MSGS)
        c.copy().chat.completions.create(model="gpt-4o", messages=MSGS)
    assert len(llm_calls(cap)) == 4
    c.close()


def test_no_task_records_on_agent_and_nothing_without(
    agent: Agent, cap: EventCapture, client: Any
) -> None:
    client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert llm_calls(cap) == []
    with agent.track_context("outside-task"):
        client.chat.completions.create(model="gpt-4o", messages=MSGS)
    wait_for(lambda: len(llm_calls(cap)) == 1)
    assert "task_id" not in llm_calls(cap)[0] or llm_calls(cap)[0]["task_id"] is None


def test_outside_any_agent_a_stream_is_openais_own_and_asks_no_usage(
    cap: EventCapture, client: Any
) -> None:
    # No task and no agent: nothing can be recorded, so the call goes to the bare client.
    # The caller gets openai's own Stream (not our wrapper) and, since the integration adds
    # stream_options only to read tokens it will record, the server sends no usage chunk.
    stream = client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True)
    assert type(stream) is openai.Stream
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    plain = client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert plain.choices[0].message.content == ANSWER
    assert llm_calls(cap) == []


def test_importing_hiveloop_async_imports_no_provider() -> None:
    code = (
        "import sys, hiveloop_async, hiveloop_async.contrib.openai, "
        "hiveloop_async.contrib.anthropic; "
        "assert 'openai' not in sys.modules and 'anthropic' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


WORDS_40 = "".join(f"w{i} " for i in range(40))


@pytest.mark.parametrize("include_usage", [True, False])
def test_long_stream_read_after_first_token_sync(
    provider: FakeProvider, agent: Agent, cap: EventCapture, include_usage: bool
) -> None:
    """Chunks after the first token (read by the inline loop, not the per-chunk feed) still
    make the preview (cut at preview_chars), the finish reason, the served model and the
    tokens; the caller gets every content chunk and the finish chunk, never our usage chunk."""
    c: Any = instrument(
        openai.OpenAI(api_key="sk-x", base_url=provider.openai_url, max_retries=0),
        preview_chars=20,
        include_usage=include_usage,
    )
    with agent.task("t-long"):
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o-mini", messages=MSGS, stream=True, extra_body={"chunks": 40}
            )
        )
    c.close()
    assert len(chunks) == 41 and all(ch.choices for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == WORDS_40
    d = one(cap)["payload"]["data"]
    assert d["response_preview"] == WORDS_40[:19] + "…"
    assert d["model"] == "gpt-4o-mini-2024-07-18"
    assert d["metadata"]["finish_reason"] == "stop"
    assert isinstance(d["metadata"]["ttft_ms"], int)
    expected = (12, 5) if include_usage else (None, None)
    assert (d.get("tokens_in"), d.get("tokens_out")) == expected


async def test_long_stream_read_after_first_token_async(
    agent: Agent, cap: EventCapture, aclient: Any
) -> None:
    """The async twin: whole text up to the default limit, finish reason, tokens, usage
    chunk hidden."""
    with agent.task("t-along"):
        stream = await aclient.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, extra_body={"chunks": 40}
        )
        chunks = [ch async for ch in stream]
    assert len(chunks) == 41 and all(ch.choices for ch in chunks)
    d = one(cap)["payload"]["data"]
    assert d["response_preview"] == WORDS_40
    assert d["metadata"]["finish_reason"] == "stop"
    assert (d["tokens_in"], d["tokens_out"]) == (12, 5)
    assert d["model"] == "gpt-4o-mini-2024-07-18"


def test_chat_stream_sync_tools_after_first_token(
    agent: Agent, cap: EventCapture, client: Any
) -> None:
    """The second tool call arrives after the first token (the first tool call): both are
    recorded, with the finish reason."""
    with agent.task("t-st"):
        chunks = list(
            client.chat.completions.create(model="gpt-4o-tools", messages=MSGS, stream=True)
        )
    assert [ch.choices[0].delta.tool_calls[0].id for ch in chunks[:2]] == ["call_1", "call_2"]
    d = one(cap)["payload"]["data"]
    assert d["metadata"]["tool_calls"] == [
        {"id": "call_1", "name": "crm_search"},
        {"id": "call_2", "name": "score_lead"},
    ]
    assert d["metadata"]["finish_reason"] == "tool_calls"
    assert d["tokens_out"] == 5


def test_stream_closed_after_first_token_keeps_text_so_far(
    agent: Agent, cap: EventCapture, client: Any
) -> None:
    """``close()`` while the loop is suspended after a few chunks: the preview has the text
    read so far and the call is marked closed early."""
    with agent.task("t-cl"):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, extra_body={"chunks": 40}
        )
        it = iter(stream)
        got = [next(it) for _ in range(3)]
        stream.close()
    assert len(got) == 3
    d = one(cap)["payload"]["data"]
    assert d["response_preview"] == "w0 w1 w2 "
    assert d["metadata"]["closed_early"] is True


async def test_async_stream_goes_through_a_replaced_aiter(
    agent: Agent, cap: EventCapture, aclient: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """We read openai's inner async generator directly only while ``AsyncStream.__aiter__``
    is openai's own: another instrumentation that replaced it (as Langfuse's drop-in does)
    still sees every chunk, and the call is still recorded whole."""
    original = openai.AsyncStream.__aiter__
    seen: list[Any] = []

    async def counting(self: Any) -> Any:
        async for item in original(self):
            seen.append(item)
            yield item

    monkeypatch.setattr(openai.AsyncStream, "__aiter__", counting)
    with agent.task("t-patched"):
        stream = await aclient.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, extra_body={"chunks": 10}
        )
        chunks = [ch async for ch in stream]
    assert len(chunks) == 11 and len(seen) == 12  # the usage chunk: seen there, hidden here
    d = one(cap)["payload"]["data"]
    assert d["response_preview"] == "".join(f"w{i} " for i in range(10))
    assert (d["tokens_in"], d["tokens_out"]) == (12, 5)


def test_sync_stream_goes_through_a_replaced_iter(
    agent: Agent, cap: EventCapture, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync twin: a replaced ``Stream.__iter__`` sees every chunk."""
    original = openai.Stream.__iter__
    seen: list[Any] = []

    def counting(self: Any) -> Any:
        for item in original(self):
            seen.append(item)
            yield item

    monkeypatch.setattr(openai.Stream, "__iter__", counting)
    with agent.task("t-patched-sync"):
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MSGS, stream=True, extra_body={"chunks": 10}
            )
        )
    assert len(chunks) == 11 and len(seen) == 12
    d = one(cap)["payload"]["data"]
    assert d["response_preview"] == "".join(f"w{i} " for i in range(10))
    assert d["metadata"]["finish_reason"] == "stop"
