"""Task context across services: the header format, trust, and linked timelines end to end.

Services are real (uvicorn + FastAPI, aiohttp.web) on 127.0.0.1, callers use real clients
(aiohttp with ``trace_config()``, httpx with the transports), and every service delivers to
one local HiveBoard-compatible server, which is where the links are checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI, Request

import hiveloop_async as hiveloop
from hiveloop_async import _tracecontext as tc
from hiveloop_async._server import ServerThread
from hiveloop_async.contrib import aiohttp as hl_aiohttp
from hiveloop_async.contrib import httpx as hl_httpx
from hiveloop_async.contrib import propagation as prop
from hiveloop_async.contrib.asgi import HiveLoopMiddleware, lifespan
from hiveloop_async.testing import capture_events

from .services import Uvicorn, aiohttp_server, await_until, closed_tasks, events_by_task, started

KEY = "hb_test_services"
Json = dict[str, Any]


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(memory=True) as srv:
        yield srv


def client_for(server: ServerThread) -> hiveloop.HiveBoard:
    return hiveloop.HiveBoard(
        api_key=KEY, endpoint=server.url, flush_interval=0.05, shutdown_timeout=10.0
    )


# -- the header format and trust, without a network ------------------------------------------


def test_linkage_round_trips_any_id() -> None:
    link = prop.Linkage("agent; one", "task=1,é", "run/1", "act 2", "corr%")
    assert prop.parse_linkage(prop.format_linkage(link)) == link
    assert prop.parse_linkage(prop.format_linkage(prop.Linkage("a", "t", "r"))) == (
        prop.Linkage("a", "t", "r")
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "v=2;agent=a;task=t;run=r",
        "v=1;agent=a;task=t",
        "v=1;agent=;task=t;run=r",
        "v=1;agent=a%0A;task=t;run=r",
        "v=1;agent=%ff;task=t;run=r",
        "v=1;agent=" + "a" * 300 + ";task=t;run=r",
        "v=1;agent=a;task=t;run=r;" + "x=y;" * 300,
    ],
)
def test_malformed_linkage_is_ignored_and_counted(value: str) -> None:
    before = prop.malformed_count()
    assert prop.parse_linkage(value) is None
    assert prop.malformed_count() == before + 1
    assert prop.parse_linkage(None) is None
    assert prop.malformed_count() == before + 1


def test_malformed_traceparent_is_ignored_and_counted() -> None:
    before = prop.malformed_count()
    for bad in ("00-" + "0" * 32 + "-" + "1" * 16 + "-01", "zz", "ff-" + "a" * 32 + "-b" * 8):
        assert prop.parse_traceparent(bad) is None
    assert prop.malformed_count() == before + 3
    good = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    assert prop.parse_traceparent(good) == tc.TraceParent("a" * 32, "b" * 16, True)


def test_trust_is_off_unless_configured() -> None:
    assert not prop.Trust().enabled and not prop.Trust().trusts(None, "127.0.0.1")
    assert prop.Trust(True).trusts(None, None)
    nets = prop.Trust(["10.0.0.0/8", "::1"])
    assert nets.trusts(None, "10.1.2.3") and nets.trusts(None, "::1")
    assert not nets.trusts(None, "11.0.0.1") and not nets.trusts(None, "not-an-ip")
    assert not nets.trusts(None, None)

    def explode(request: Any) -> bool:
        raise RuntimeError("predicate bug")

    assert not prop.Trust(explode).trusts(object(), "10.0.0.1")
    assert prop.Trust(lambda request: request == "ok").trusts("ok", None)
    with pytest.raises(ValueError, match="does not appear"):
        prop.Trust(["10.0.0.0/33"])


def test_outgoing_headers_name_the_task_and_the_current_action() -> None:
    hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    agent = hb.agent("caller")
    assert prop.outgoing_headers() == {}
    with agent.task("t1", correlation_id="c-1") as task:
        headers = prop.outgoing_headers()
        parent = prop.parse_traceparent(headers["traceparent"])
        assert parent == tc.TraceParent(
            tc.trace_id_for_run(task.task_run_id), tc.span_id_for(task.task_run_id), True
        )
        with agent.track_context("delegate") as action:
            headers = prop.outgoing_headers()
            link = prop.parse_linkage(headers["hiveloop-context"])
            assert link == prop.Linkage(
                "caller", "t1", task.task_run_id, action.action_id_str, "c-1"
            )
            traceparent = prop.parse_traceparent(headers["traceparent"])
            assert traceparent is not None
            assert traceparent.parent_id == tc.span_id_for(str(action.action_id_str))
    inherited = "1" * 32
    with agent.task("t2", payload={"trace_id": inherited}):
        assert prop.outgoing_headers()["traceparent"].split("-")[1] == inherited


def test_outgoing_headers_are_rebuilt_for_each_task_and_action_and_never_shared() -> None:
    """The headers are cached by what they are made of: a new task, action or correlation
    id gives new headers, and a caller changing the returned dict changes nothing else."""
    hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    agent = hb.agent("caller")
    seen: set[str] = set()
    for _ in range(2):
        with agent.task("t1", correlation_id="c-1"):
            first = prop.outgoing_headers()
            first["traceparent"] = "changed"
            again = prop.outgoing_headers()
            assert again["traceparent"] != "changed" and again is not first
            seen.add(again["traceparent"])
            with agent.track_context("a"):
                inner = prop.outgoing_headers()
                seen.add(inner["traceparent"])
                assert "action=" in inner["hiveloop-context"]
            assert prop.outgoing_headers() == again
    assert len(seen) == 4  # two task runs, each with and without the action
    with agent.task("t1", payload={"trace_id": {"not": "hashable"}}):
        assert prop.outgoing_headers()  # an odd payload value does not stop propagation


# -- services ----------------------------------------------------------------------------------


def research_fastapi(
    hb: hiveloop.HiveBoard, agent_id: str, *, trust: Any = False, next_url: str | None = None
) -> FastAPI:
    """A research service; with ``next_url`` it delegates onward with aiohttp."""
    agent = hb.agent(agent_id, framework="fastapi")
    app = FastAPI(lifespan=lifespan(hb))
    app.add_middleware(HiveLoopMiddleware, agent=agent, trust_incoming=trust)

    @app.post("/v1/run")
    async def run(request: Request) -> Json:
        task = hiveloop.current_task()
        assert task is not None
        answer: Json = {"task_id": task.task_id, "run": task.task_run_id}
        async with hiveloop.track_context("research"):
            if next_url is not None:
                config = hl_aiohttp.trace_config(track_requests=True)
                async with (
                    aiohttp.ClientSession(trace_configs=[config]) as http,
                    http.post(next_url) as response,
                ):
                    answer["next"] = await response.json()
        return answer

    return app


def research_aiohttp(
    hb: hiveloop.HiveBoard, agent_id: str, *, trust: Any = False
) -> web.Application:
    agent = hb.agent(agent_id, framework="aiohttp")
    app = web.Application()

    async def run(request: web.Request) -> web.Response:
        task = hiveloop.current_task()
        assert task is not None
        async with hiveloop.track_context("research"):
            await asyncio.sleep(0.001)
        return web.json_response({"task_id": task.task_id, "run": task.task_run_id})

    app.router.add_post("/v1/run", run)
    hl_aiohttp.setup(app, hb, agent=agent, trust_incoming=trust)
    return app


def check_link(
    server: ServerThread,
    caller_agent: str,
    caller_task: str,
    callee_agent: str,
    answer: Json,
    *,
    root_run: str,
) -> Json:
    """The callee's task names the caller's task, run and action; the caller's action holds a
    delegation event naming the callee's task; both share the root's trace. Returns the
    caller's request action."""
    caller = events_by_task(server, caller_agent)[caller_task]
    callee = events_by_task(server, callee_agent)[answer["task_id"]]
    start = started(callee)["payload"]
    (request_action,) = [
        e
        for e in caller
        if e["event_type"] == "action_started" and e["payload"]["action_name"].startswith("POST ")
    ]
    assert request_action["payload"]["action_name"].endswith("/v1/run")
    assert start["caller_agent_id"] == caller_agent
    assert start["caller_task_id"] == caller_task
    assert start["caller_task_run_id"] == caller[0]["task_run_id"]
    assert start["caller_action_id"] == request_action["action_id"]
    assert start["trace_id"] == tc.trace_id_for_run(root_run)
    assert start["parent_span_id"] == tc.span_id_for(request_action["action_id"])
    assert {e["correlation_id"] for e in callee} == {root_run}
    (delegation,) = [
        e
        for e in caller
        if e["event_type"] == "custom" and e["payload"].get("kind") == "delegation"
    ]
    assert delegation["action_id"] == request_action["action_id"]
    data = delegation["payload"]["data"]
    assert data["subagent_id"] == callee_agent
    assert data["sub_task_id"] == answer["task_id"]
    assert data["sub_task_run_id"] == answer["run"]
    return request_action


async def test_fastapi_services_linked_through_httpx(server: ServerThread) -> None:
    callee_hb = client_for(server)
    with Uvicorn(research_fastapi(callee_hb, "research-fa", trust=["127.0.0.0/8"])) as research:
        async with client_for(server) as hb:
            agent = hb.agent("orchestrator-httpx")
            transport = hl_httpx.AsyncTransport(track_requests=True)
            async with httpx.AsyncClient(transport=transport) as http:
                async with agent.task("orchestrate-1") as task:
                    response = await http.post(research.url + "/v1/run")
                    assert response.status_code == 200
                    assert prop.RESPONSE_HEADER in response.headers
                    answer = response.json()
                root = task.task_run_id
    check_link(server, "orchestrator-httpx", "orchestrate-1", "research-fa", answer, root_run=root)


async def test_aiohttp_services_linked_through_the_trace_config(server: ServerThread) -> None:
    research = research_aiohttp(client_for(server), "research-aio", trust=True)
    config = hl_aiohttp.trace_config(track_requests=True)
    async with (
        aiohttp_server(research) as url,
        client_for(server) as hb,
        aiohttp.ClientSession(trace_configs=[config]) as http,
    ):
        agent = hb.agent("orchestrator-aio")
        async with agent.task("orchestrate-2") as task, http.post(url + "/v1/run") as response:
            answer = await response.json()
        root = task.task_run_id
    await asyncio.to_thread(
        check_link,
        server,
        "orchestrator-aio",
        "orchestrate-2",
        "research-aio",
        answer,
        root_run=root,
    )


async def test_cross_clients_aiohttp_to_fastapi_and_sync_httpx_to_aiohttp(
    server: ServerThread,
) -> None:
    with Uvicorn(research_fastapi(client_for(server), "research-x1", trust=True)) as fa:
        async with client_for(server) as hb:
            agent = hb.agent("caller-x1")
            config = hl_aiohttp.trace_config(track_requests=True)
            async with (
                aiohttp.ClientSession(trace_configs=[config]) as http,
                agent.task("x1") as task,
                http.post(fa.url + "/v1/run") as response,
            ):
                answer = await response.json()
            root = task.task_run_id
    check_link(server, "caller-x1", "x1", "research-x1", answer, root_run=root)

    research = research_aiohttp(client_for(server), "research-x2", trust=True)
    async with aiohttp_server(research) as url:

        def sync_caller() -> tuple[Json, str]:
            hb = client_for(server)
            agent = hb.agent("caller-x2")
            with (
                httpx.Client(transport=hl_httpx.Transport(track_requests=True)) as http,
                agent.task("x2") as task,
            ):
                answer = http.post(url + "/v1/run").json()
            hb.shutdown()
            return answer, task.task_run_id

        answer2, root2 = await asyncio.to_thread(sync_caller)
    await asyncio.to_thread(
        check_link, server, "caller-x2", "x2", "research-x2", answer2, root_run=root2
    )


async def test_an_untrusted_callers_headers_are_ignored(server: ServerThread) -> None:
    with Uvicorn(research_fastapi(client_for(server), "research-closed")) as research:
        async with client_for(server) as hb:
            agent = hb.agent("stranger")
            async with (
                httpx.AsyncClient(transport=hl_httpx.AsyncTransport(track_requests=True)) as http,
                agent.task("attach-me"),
            ):
                response = await http.post(research.url + "/v1/run")
                assert prop.RESPONSE_HEADER not in response.headers
                answer = response.json()
    callee = events_by_task(server, "research-closed")[answer["task_id"]]
    start = started(callee)["payload"]
    assert not {k for k in start if k.startswith("caller_") or k in ("trace_id", "parent_span_id")}
    assert {e["correlation_id"] for e in callee} == {None}
    caller = events_by_task(server, "stranger")["attach-me"]
    assert not [e for e in caller if e["event_type"] == "custom"]


async def test_malformed_headers_are_ignored_by_a_trusting_service(server: ServerThread) -> None:
    before = prop.malformed_count()
    research = research_aiohttp(client_for(server), "research-bad", trust=True)
    async with aiohttp_server(research) as url, aiohttp.ClientSession() as http:
        for headers in (
            {"traceparent": "00-xyz", "hiveloop-context": "v=1;agent=a"},
            {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
            {"hiveloop-context": "v=1;agent=%ZZ%ff;task=t;run=r"},
        ):
            async with http.post(url + "/v1/run", headers=headers) as response:
                assert response.status == 200
                assert prop.RESPONSE_HEADER not in response.headers
    assert prop.malformed_count() == before + 4
    ends = await asyncio.to_thread(closed_tasks, server, "research-bad")
    assert len(ends) == 3
    for events in (await asyncio.to_thread(events_by_task, server, "research-bad")).values():
        start = started(events)["payload"]
        assert not {k for k in start if k.startswith("caller_") or k == "trace_id"}
        assert events[-1]["event_type"] == "task_completed"


async def test_a_trusted_chain_of_three_services_links_all_three(server: ServerThread) -> None:
    async with aiohttp_server(research_aiohttp(client_for(server), "svc-c", trust=True)) as c_url:
        middle = research_fastapi(
            client_for(server), "svc-b", trust=["127.0.0.1"], next_url=c_url + "/v1/run"
        )
        with Uvicorn(middle) as b:
            async with client_for(server) as hb:
                agent = hb.agent("svc-a")
                transport = hl_httpx.AsyncTransport(track_requests=True)
                async with (
                    httpx.AsyncClient(transport=transport) as http,
                    agent.task("chain") as task,
                ):
                    answer = (await http.post(b.url + "/v1/run")).json()
                root = task.task_run_id

    def check() -> None:
        check_link(server, "svc-a", "chain", "svc-b", answer, root_run=root)
        check_link(server, "svc-b", answer["task_id"], "svc-c", answer["next"], root_run=root)
        # all three tasks in one trace and one correlation id: C is reachable from A
        c_events = events_by_task(server, "svc-c")[answer["next"]["task_id"]]
        assert started(c_events)["payload"]["trace_id"] == tc.trace_id_for_run(root)
        assert {e["correlation_id"] for e in c_events} == {root}

    await asyncio.to_thread(check)


async def test_exported_spans_of_two_services_form_one_trace() -> None:
    """The OTLP spans of a caller and a trusted callee: one trace, the callee's task span a
    child of the caller's request action (the ids the headers carried)."""
    from .test_otlp import assemble, by_name, decoded, wire

    caller_hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    callee_hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    research = research_aiohttp(callee_hb, "otlp-callee", trust=True)
    config = hl_aiohttp.trace_config(track_requests=True)
    with capture_events() as cap:
        async with (
            aiohttp_server(research) as url,
            aiohttp.ClientSession(trace_configs=[config]) as http,
        ):
            caller_agent = caller_hb.agent("otlp-caller")
            async with caller_agent.task("root") as task, http.post(url + "/v1/run") as response:
                assert response.status == 200
            await await_until(lambda: len(cap.of_type("task_completed")) == 2)
    spans = by_name(decoded(assemble(wire(cap))))
    caller = spans["invoke_agent otlp-caller"]
    callee = spans["invoke_agent otlp-callee"]
    (request,) = [s for name, s in spans.items() if name.startswith("POST ")]
    trace = tc.trace_id_for_run(task.task_run_id)
    assert caller["trace_id"] == request["trace_id"] == callee["trace_id"] == trace
    assert request["parent"] == caller["span_id"]
    assert callee["parent"] == request["span_id"]
    assert spans["research"]["trace_id"] == trace
    assert spans["research"]["parent"] == callee["span_id"]
