"""hiveloop_async.contrib.langchain: real langchain-core (and LangGraph) runs, delivered to the
real local server, read back through its timeline API.

The models are langchain-core's own fake chat model (``GenericFakeChatModel``, which emits the
tool calls and ``usage_metadata`` we script) and small ``BaseChatModel`` / ``BaseLLM``
subclasses; the tools are ``@tool`` functions. Nothing is mocked on the HiveLoop side.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult, Generation, LLMResult
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, ToolException, tool

import hiveloop_async as hiveloop
from hiveloop_async import HiveBoard
from hiveloop_async._server import ServerThread
from hiveloop_async.contrib.langchain import (
    AsyncHiveLoopCallbackHandler,
    HiveLoopCallbackHandler,
)
from hiveloop_async.testing import capture_events
from tests.test_end_to_end import KEY, closing, find, shape, sync_timeline, timeline_of

Json = dict[str, Any]
Handler = type[HiveLoopCallbackHandler] | type[AsyncHiveLoopCallbackHandler]
HANDLERS = [HiveLoopCallbackHandler, AsyncHiveLoopCallbackHandler]
SECRET = "SECRET-7f3a"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(memory=True) as srv:
        yield srv


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the models, tools and agent loop ---------------------------------------------------------


class ToolCallingFake(GenericFakeChatModel):
    """langchain-core's fake chat model, with a model name and ``bind_tools`` (for LangGraph)."""

    model_name: str = "fake-model-1"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def script(tag: str = "acme") -> Iterator[AIMessage]:
    """Two turns: the model asks for crm_search and score_lead, then answers."""
    return iter(
        [
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "crm_search", "args": {"query": f"q-{tag}"}, "id": f"c1-{tag}"},
                    {"name": "score_lead", "args": {"lead": f"lead-{tag}"}, "id": f"c2-{tag}"},
                ],
                usage_metadata={
                    "input_tokens": 12,
                    "output_tokens": 5,
                    "total_tokens": 17,
                    "input_token_details": {"cache_read": 4},
                },
                response_metadata={"model_name": "gpt-4o-mini-2024-07-18"},
            ),
            AIMessage(
                content=f"done {tag}",
                usage_metadata={"input_tokens": 20, "output_tokens": 3, "total_tokens": 23},
            ),
        ]
    )


#: The model crm_search asks (an LLM run inside a tool run).
def inner_model() -> ToolCallingFake:
    return ToolCallingFake(
        messages=iter(
            [
                AIMessage(
                    content="summary",
                    usage_metadata={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
                )
            ]
        ),
        model_name="inner-model",
    )


@tool
def crm_search(query: str) -> str:
    """Search the CRM (and summarize with a nested model call)."""
    summary = inner_model().invoke([HumanMessage(f"summarize {query}")])
    return f"found {query}: {summary.content}"


@tool
async def acrm_search(query: str) -> str:
    """The async crm_search: yields to the loop, then asks the nested model."""
    await asyncio.sleep(0)
    summary = await inner_model().ainvoke([HumanMessage(f"summarize {query}")])
    return f"found {query}: {summary.content}"


@tool
def score_lead(lead: str) -> int:
    """Score a lead (a sync tool: under ainvoke LangChain runs it in a worker thread)."""
    return len(lead)


acrm_search.name = "crm_search"


def run_agent(model: BaseChatModel, tools: dict[str, BaseTool], question: str) -> Any:
    """The agent loop as a runnable: model, then each tool it asks for, until it answers."""

    def agent(q: str) -> Any:
        history: list[BaseMessage] = [HumanMessage(q)]
        while True:
            ai = model.invoke(history)
            history.append(ai)
            if not isinstance(ai, AIMessage) or not ai.tool_calls:
                return ai.content
            for call in ai.tool_calls:
                history.append(tools[call["name"]].invoke(call))

    return RunnableLambda(agent).with_config(run_name="agent")


def arun_agent(model: BaseChatModel, tools: dict[str, BaseTool]) -> Any:
    async def agent(q: str) -> Any:
        history: list[BaseMessage] = [HumanMessage(q)]
        while True:
            ai = await model.ainvoke(history)
            history.append(ai)
            if not isinstance(ai, AIMessage) or not ai.tool_calls:
                return ai.content
            for call in ai.tool_calls:
                history.append(await tools[call["name"]].ainvoke(call))

    return RunnableLambda(agent).with_config(run_name="agent")


SYNC_TOOLS: dict[str, BaseTool] = {"crm_search": crm_search, "score_lead": score_lead}
ASYNC_TOOLS: dict[str, BaseTool] = {"crm_search": acrm_search, "score_lead": score_lead}


# -- reading the timeline ---------------------------------------------------------------------


def all_nodes(nodes: list[Json]) -> list[Json]:
    return [n for node in nodes for n in [node, *all_nodes(node["children"])]]


def llm_events(timeline: Json) -> list[Json]:
    return [
        e
        for e in timeline["events"]
        if e["event_type"] == "custom" and (e.get("payload") or {}).get("kind") == "llm_call"
    ]


def llm_data(timeline: Json) -> list[Json]:
    return [e["payload"]["data"] for e in llm_events(timeline)]


def check_agent_tree(timeline: Json, tag: str = "acme") -> None:
    """The agent run's tree: two tool actions at the task's root, the nested model call inside
    crm_search, the two agent turns outside any action."""
    assert shape(timeline["action_tree"]) == [("crm_search", []), ("score_lead", [])]
    crm = find(timeline["action_tree"], "crm_search")
    score = find(timeline["action_tree"], "score_lead")
    assert crm["status"] == score["status"] == "success"
    crm_payload = closing(crm)["payload"]
    assert crm_payload["tool_call_id"] == f"c1-{tag}"
    assert f"q-{tag}" in crm_payload["input_preview"]
    assert crm_payload["output_preview"] == f"found q-{tag}: summary"
    assert closing(score)["payload"]["output_preview"] == str(len(f"lead-{tag}"))

    calls = llm_events(timeline)
    assert [c["payload"]["data"]["model"] for c in calls] == [
        "gpt-4o-mini-2024-07-18",  # from the response's metadata
        "inner-model",  # the requested model (LangSmith params), nested in crm_search
        "fake-model-1",
    ]
    first, inner, last = (c["payload"]["data"] for c in calls)
    assert [c["action_id"] for c in calls] == [None, crm["action_id"], None]
    assert (first["tokens_in"], first["tokens_out"]) == (12, 5)
    assert first["cost"] == pytest.approx(12 / 1000 * 0.00015 + 5 / 1000 * 0.0006)
    assert first["metadata"]["cached_tokens"] == 4
    assert first["metadata"]["tool_calls"] == [
        {"id": f"c1-{tag}", "name": "crm_search"},
        {"id": f"c2-{tag}", "name": "score_lead"},
    ]
    assert first["prompt_preview"] == f"find {tag}"
    assert first["name"] == "chat"
    assert isinstance(first["duration_ms"], int)
    assert (inner["tokens_in"], inner["tokens_out"]) == (3, 1)
    assert inner["response_preview"] == "summary"
    assert (last["tokens_in"], last["tokens_out"]) == (20, 3)
    assert last["response_preview"] == f"done {tag}"
    assert "cost" not in last  # an unknown model has no price
    assert timeline["derived_status"] == "completed"


# -- the agent run, sync and async ------------------------------------------------------------


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_agent_run_sync_invoke_gives_the_nested_tree(
    server: ServerThread, handler_class: Handler
) -> None:
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = handler_class()
    task_id = unique("lc-sync")
    with hb.agent("lc-sync").task(task_id):
        answer = run_agent(ToolCallingFake(messages=script()), SYNC_TOOLS, "find acme").invoke(
            "find acme", config={"callbacks": [handler]}
        )
    assert answer == "done acme"
    result = hiveloop.shutdown(timeout=5.0)
    assert result is not None and not result.timed_out
    check_agent_tree(sync_timeline(server.url, task_id))
    assert handler.open_runs == 0


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_agent_run_async_ainvoke_gives_the_nested_tree(
    server: ServerThread, handler_class: Handler
) -> None:
    handler = handler_class()
    task_id = unique("lc-async")
    async with HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        async with hb.agent("lc-async").task(task_id):
            answer = await arun_agent(ToolCallingFake(messages=script()), ASYNC_TOOLS).ainvoke(
                "find acme", config={"callbacks": [handler]}
            )
        assert await hb.aflush(timeout=5.0)
    assert answer == "done acme"
    check_agent_tree(await timeline_of(server.url, task_id))
    assert handler.open_runs == 0


async def test_sync_tool_in_a_worker_thread_nests_its_llm_call(server: ServerThread) -> None:
    """Under ainvoke a sync tool runs in LangChain's executor: its nested model call (started
    and ended in that thread) still lands inside the tool's action."""
    handler = HiveLoopCallbackHandler()
    task_id = unique("lc-thread")
    async with HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        async with hb.agent("lc-thread").task(task_id):
            await crm_search.ainvoke({"query": "q-x"}, config={"callbacks": [handler]})
        assert await hb.aflush(timeout=5.0)
    timeline = await timeline_of(server.url, task_id)
    crm = find(timeline["action_tree"], "crm_search")
    assert [e["action_id"] for e in llm_events(timeline)] == [crm["action_id"]]


@tool
def lookup(key: str) -> str:
    """A tool whose own code records with the SDK."""
    agent = hiveloop.current_agent()
    assert agent is not None
    with agent.track_context("db_query"):
        task = hiveloop.current_task()
        assert task is not None
        task.llm_call("sdk-call", "gpt-4o", tokens_in=1, tokens_out=1)
    return key


@tool
async def alookup(key: str) -> str:
    """The async lookup."""
    agent = hiveloop.current_agent()
    assert agent is not None
    async with agent.track_context("db_query"):
        await asyncio.sleep(0)
        task = hiveloop.current_task()
        assert task is not None
        task.llm_call("sdk-call", "gpt-4o", tokens_in=1, tokens_out=1)
    return key


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke-sync-tool", "ainvoke-async-tool"])
async def test_what_the_tools_own_code_records_nests_inside_the_tool(
    server: ServerThread, handler_class: Handler, mode: str
) -> None:
    """Blocks and LLM calls recorded with the SDK inside a tool's body are its children, and
    nothing stays current after the run."""
    handler = handler_class()
    task_id = unique("lc-body")
    config: RunnableConfig = {"callbacks": [handler]}
    async with HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        async with hb.agent("lc-body").task(task_id):
            if mode == "invoke":
                lookup.invoke({"key": "k"}, config=config)
            elif mode == "ainvoke-sync-tool":
                await lookup.ainvoke({"key": "k"}, config=config)
            else:
                await alookup.ainvoke({"key": "k"}, config=config)
            assert hiveloop.current_action_id() is None
        assert await hb.aflush(timeout=5.0)
    timeline = await timeline_of(server.url, task_id)
    name = "alookup" if mode == "ainvoke-async-tool" else "lookup"
    if handler_class is AsyncHiveLoopCallbackHandler and mode != "ainvoke-async-tool":
        # LangChain runs an async handler from sync code (a sync tool) on an event loop of
        # its own, whose context the tool does not see: the block stays in the task.
        assert shape(timeline["action_tree"]) == [(name, []), ("db_query", [])]
    else:
        assert shape(timeline["action_tree"]) == [(name, [("db_query", [])])]
    db = find(timeline["action_tree"], "db_query")
    assert [e["action_id"] for e in llm_events(timeline)] == [db["action_id"]]


# -- failures ---------------------------------------------------------------------------------


class LeadError(Exception):
    pass


RAISED: list[BaseException] = []


@tool
def flaky(lead: str) -> str:
    """A tool that fails."""
    exc = LeadError(f"no such lead {lead}")
    RAISED.append(exc)
    raise exc


@tool
def handled(lead: str) -> str:
    """A tool whose failure LangChain turns into an error ToolMessage."""
    raise ToolException(f"lead {lead} is locked")


handled.handle_tool_error = True


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_tool_failure_is_action_failed_and_the_exception_propagates_unchanged(
    server: ServerThread, handler_class: Handler
) -> None:
    handler = handler_class()
    task_id = unique("lc-toolfail")
    RAISED.clear()
    async with HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        async with hb.agent("lc-toolfail").task(task_id):
            with pytest.raises(LeadError) as info:
                await flaky.ainvoke({"lead": "L1"}, config={"callbacks": [handler]})
            call = {"name": "handled", "args": {"lead": "L2"}, "id": "c9", "type": "tool_call"}
            out = await handled.ainvoke(call, config={"callbacks": [handler]})
        assert await hb.aflush(timeout=5.0)
    assert info.value is RAISED[0]  # the same object, untouched
    assert (out.content, out.status) == ("lead L2 is locked", "error")
    timeline = await timeline_of(server.url, task_id)
    node = find(timeline["action_tree"], "flaky")
    assert node["status"] == "failure"
    assert closing(node)["event_type"] == "action_failed"
    assert closing(node)["payload"]["exception_type"] == "LeadError"
    assert closing(node)["payload"]["exception_message"] == "no such lead L1"
    node = find(timeline["action_tree"], "handled")
    assert node["status"] == "failure"
    assert closing(node)["payload"]["exception_type"] == "ToolError"
    assert closing(node)["payload"]["exception_message"] == "lead L2 is locked"
    assert handler.open_runs == 0


class ModelDown(RuntimeError):
    pass


class FailingChatModel(BaseChatModel):
    """A chat model whose provider call fails."""

    model_name: str = "gpt-4o"

    @property
    def _llm_type(self) -> str:
        return "failing-chat-model"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        exc = ModelDown("provider down, key sk-abcdefghijklmnop")
        RAISED.append(exc)
        raise exc


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_llm_error_is_a_failed_llm_call_and_reraised(
    server: ServerThread, handler_class: Handler
) -> None:
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = handler_class()
    model = FailingChatModel()
    task_id = unique("lc-llmfail")
    RAISED.clear()
    with hb.agent("lc-llmfail").task(task_id), pytest.raises(ModelDown) as info:
        model.invoke("hello", config={"callbacks": [handler]})
    assert info.value is RAISED[0]
    hiveloop.shutdown(timeout=5.0)
    timeline = sync_timeline(server.url, task_id)
    (data,) = llm_data(timeline)
    assert data["model"] == "gpt-4o"
    assert data["metadata"]["status"] == "failed"
    assert data["metadata"]["error"]["type"] == "ModelDown"
    assert "provider down" in data["metadata"]["error"]["message"]
    assert "sk-abcdefghijklmnop" not in str(timeline)
    assert handler.open_runs == 0


# -- chains, LangGraph ------------------------------------------------------------------------


async def test_track_chains_records_chain_actions_with_the_runs_inside(
    server: ServerThread,
) -> None:
    handler = HiveLoopCallbackHandler(track_chains=True)
    task_id = unique("lc-chains")
    async with HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        async with hb.agent("lc-chains").task(task_id):
            await arun_agent(ToolCallingFake(messages=script()), ASYNC_TOOLS).ainvoke(
                "find acme", config={"callbacks": [handler]}
            )
        assert await hb.aflush(timeout=5.0)
    timeline = await timeline_of(server.url, task_id)
    assert shape(timeline["action_tree"]) == [("agent", [("crm_search", []), ("score_lead", [])])]
    agent_node = find(timeline["action_tree"], "agent")
    crm = find(timeline["action_tree"], "crm_search")
    assert [e["action_id"] for e in llm_events(timeline)] == [
        agent_node["action_id"],
        crm["action_id"],
        agent_node["action_id"],
    ]
    assert handler.open_runs == 0


def build_graph(model: BaseChatModel) -> Any:
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode([crm_search, score_lead]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    graph.add_edge("agent", END)
    return graph.compile()


@pytest.mark.parametrize("track_chains", [False, True])
def test_langgraph_react_graph(server: ServerThread, track_chains: bool) -> None:
    """A LangGraph agent (model node + ToolNode, which runs the two tools in parallel threads)."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = HiveLoopCallbackHandler(track_chains=track_chains)
    task_id = unique("lc-graph")
    graph = build_graph(ToolCallingFake(messages=script()))
    with hb.agent("lc-graph").task(task_id):
        out = graph.invoke(
            {"messages": [HumanMessage("find acme")]}, config={"callbacks": [handler]}
        )
    assert out["messages"][-1].content == "done acme"
    hiveloop.shutdown(timeout=5.0)
    timeline = sync_timeline(server.url, task_id)
    crm = find(timeline["action_tree"], "crm_search")
    calls = llm_events(timeline)
    assert [c["payload"]["data"]["model"] for c in calls] == [
        "gpt-4o-mini-2024-07-18",
        "inner-model",
        "fake-model-1",
    ]
    assert calls[1]["action_id"] == crm["action_id"]
    if not track_chains:
        assert sorted(shape(timeline["action_tree"])) == [("crm_search", []), ("score_lead", [])]
        assert calls[0]["action_id"] is None
    else:
        (root,) = timeline["action_tree"]
        assert root["name"] == "LangGraph"
        nodes = [n["name"] for n in root["children"]]
        assert nodes == ["agent", "tools", "agent"]
        tools_node = root["children"][1]
        assert sorted(shape(tools_node["children"])) == [("crm_search", []), ("score_lead", [])]
        assert calls[0]["action_id"] == root["children"][0]["action_id"]
        assert calls[2]["action_id"] == root["children"][2]["action_id"]
    assert handler.open_runs == 0


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_60_concurrent_runs_in_separate_tasks_never_mix(
    server: ServerThread, handler_class: Handler
) -> None:
    handler = handler_class(track_chains=True)  # one handler shared by every run

    async def one(i: int, agent: hiveloop.Agent) -> str:
        task_id = unique(f"lc-conc-{i}")
        async with agent.task(task_id):
            await arun_agent(ToolCallingFake(messages=script(f"t{i}")), ASYNC_TOOLS).ainvoke(
                f"find t{i}", config={"callbacks": [handler]}
            )
        return task_id

    async with HiveBoard(api_key=KEY, endpoint=server.url) as hb:
        agent = hb.agent("lc-conc")
        ids = await asyncio.gather(*(one(i, agent) for i in range(60)))
        assert await hb.aflush(timeout=10.0)
    for i, task_id in enumerate(ids):
        timeline = await timeline_of(server.url, task_id)
        assert shape(timeline["action_tree"]) == [
            ("agent", [("crm_search", []), ("score_lead", [])])
        ]
        crm = find(timeline["action_tree"], "crm_search")
        assert f"q-t{i}" in closing(crm)["payload"]["input_preview"]
        assert closing(crm)["payload"]["tool_call_id"] == f"c1-t{i}"
        data = llm_data(timeline)
        assert [d["prompt_preview"] for d in data] == [
            f"find t{i}",
            f"summarize q-t{i}",
            str(len(f"lead-t{i}")),
        ]
        assert data[2]["response_preview"] == f"done t{i}"
    assert handler.open_runs == 0


# -- privacy, no task, the bound, safety ------------------------------------------------------


@tool
def secret_tool(arg: str) -> str:
    """Echo a secret."""
    return f"{SECRET}-out {arg}"


def test_capture_content_false_sends_no_text(server: ServerThread) -> None:
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = HiveLoopCallbackHandler(capture_content=False)
    task_id = unique("lc-private")
    model = ToolCallingFake(
        messages=iter(
            [
                AIMessage(
                    content=f"{SECRET}-answer",
                    usage_metadata={"input_tokens": 9, "output_tokens": 2, "total_tokens": 11},
                )
            ]
        )
    )
    with hb.agent("lc-private").task(task_id):
        model.invoke(f"{SECRET}-prompt", config={"callbacks": [handler]})
        secret_tool.invoke({"arg": f"{SECRET}-in"}, config={"callbacks": [handler]})
    hiveloop.shutdown(timeout=5.0)
    timeline = sync_timeline(server.url, task_id)
    (data,) = llm_data(timeline)
    assert (data["tokens_in"], data["tokens_out"]) == (9, 2)
    assert "prompt_preview" not in data and "response_preview" not in data
    assert shape(timeline["action_tree"]) == [("secret_tool", [])]
    stored = server.events(task_id=task_id)
    assert len(stored) == 5  # started, llm_call, action started/completed, completed
    assert SECRET not in str(stored)


def test_no_task_records_nothing_or_on_the_given_agent(server: ServerThread) -> None:
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    agent = hb.agent("lc-notask")
    with capture_events() as cap:
        run_agent(ToolCallingFake(messages=script()), SYNC_TOOLS, "q").invoke(
            "find acme", config={"callbacks": [HiveLoopCallbackHandler()]}
        )
        assert cap.events == []  # no task, no action, no agent: nothing
        handler = HiveLoopCallbackHandler(agent)
        run_agent(ToolCallingFake(messages=script()), SYNC_TOOLS, "q").invoke(
            "find acme", config={"callbacks": [handler]}
        )
    kinds = [
        (e["event_type"], (e.get("payload") or {}).get("action_name"))
        for e in cap.events
        if e["event_type"] != "agent_registered"
    ]
    assert kinds == [
        ("custom", None),
        ("action_started", "crm_search"),
        ("custom", None),  # the nested call: agent level (no task, so no action_id)
        ("action_completed", "crm_search"),
        ("action_started", "score_lead"),
        ("action_completed", "score_lead"),
        ("custom", None),
    ]
    assert all(not e.get("task_id") for e in cap.events)
    assert handler.open_runs == 0


def test_runs_that_never_end_are_bounded(server: ServerThread) -> None:
    """Runs whose end LangChain never reports (errors thrown away) do not pile up: beyond
    ``max_runs`` the oldest is dropped and its action closed as failed."""
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = HiveLoopCallbackHandler(max_runs=5)
    task_id = unique("lc-bound")
    with hb.agent("lc-bound").task(task_id):
        for i in range(20):
            handler.on_tool_start({"name": f"lost-{i}"}, "x", run_id=uuid.uuid4())
            handler.on_chat_model_start({}, [[HumanMessage("x")]], run_id=uuid.uuid4())
        assert handler.open_runs == 5
    hiveloop.shutdown(timeout=5.0)
    timeline = sync_timeline(server.url, task_id)
    nodes = all_nodes(timeline["action_tree"])
    failed = [n for n in nodes if n["status"] == "failure"]
    assert len(nodes) == 20
    assert len(failed) == 18  # 20 started, 2 still open among the 5 kept
    assert closing(failed[0])["payload"]["exception_type"] == "RunNotEnded"
    assert llm_data(timeline) == []


def test_broken_callback_input_never_raises(server: ServerThread) -> None:
    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = HiveLoopCallbackHandler()
    run_id = uuid.uuid4()
    with hb.agent("lc-broken").task(unique("lc-broken")):
        handler.on_chat_model_start({}, [[HumanMessage("x")]], run_id=run_id)
        bad: Any = object()
        handler.on_llm_end(bad, run_id=run_id)  # not an LLMResult: logged once, no raise
        handler.on_tool_start(bad, bad, run_id=uuid.uuid4(), parent_run_id=bad)
        handler.on_chain_end({}, run_id=uuid.uuid4())  # never started
        handler.on_llm_error(ValueError("x"), run_id=uuid.uuid4())
    assert handler.raise_error is False
    assert isinstance(handler, BaseCallbackHandler)


def test_llm_run_with_token_usage_in_llm_output_and_streaming(server: ServerThread) -> None:
    class CompletionLLM(BaseLLM):
        @property
        def _llm_type(self) -> str:
            return "completion-llm"

        def _generate(
            self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> LLMResult:
            return LLMResult(
                generations=[[Generation(text="an answer")] for _ in prompts],
                llm_output={
                    "token_usage": {"prompt_tokens": 7, "completion_tokens": 2},
                    "model_name": "gpt-4o-mini",
                },
            )

    hb = hiveloop.init(api_key=KEY, endpoint=server.url)
    handler = HiveLoopCallbackHandler(name="planner", prices={"gpt-4o-mini": (1.0, 2.0)})
    task_id = unique("lc-llm")
    config: RunnableConfig = {"callbacks": [handler]}
    with hb.agent("lc-llm").task(task_id):
        CompletionLLM().invoke("complete me", config=config)
        chunks = list(ToolCallingFake(messages=iter(["w0 w1 w2"])).stream("hi", config=config))
    assert "".join(str(c.content) for c in chunks) == "w0 w1 w2"
    hiveloop.shutdown(timeout=5.0)
    plain, streamed = llm_data(sync_timeline(server.url, task_id))
    assert plain["name"] == "planner"
    assert plain["model"] == "gpt-4o-mini"
    assert (plain["tokens_in"], plain["tokens_out"]) == (7, 2)
    assert plain["cost"] == pytest.approx(7 / 1000 * 1.0 + 2 / 1000 * 2.0)
    assert plain["prompt_preview"] == "complete me"
    assert plain["response_preview"] == "an answer"
    assert streamed["metadata"]["stream"] is True
    assert isinstance(streamed["metadata"]["ttft_ms"], int)
    assert streamed["response_preview"] == "w0 w1 w2"


def test_importing_hiveloop_async_does_not_import_langchain() -> None:
    code = (
        "import sys, hiveloop_async, hiveloop_async.contrib; "
        "assert 'langchain_core' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_async_handler_has_a_coroutine_for_every_callback_of_the_sync_one() -> None:
    import inspect

    from langchain_core.callbacks import AsyncCallbackHandler

    sync = {n for n in vars(HiveLoopCallbackHandler) if n.startswith("on_")}
    assert len(sync) == 14
    for name in sync:
        ours = vars(AsyncHiveLoopCallbackHandler).get(name)  # not the base class's no-op
        assert ours is not None and ours is not getattr(AsyncCallbackHandler, name), name
        assert inspect.iscoroutinefunction(ours), name
