"""``hiveloop_async.contrib.aiohttp.setup``: a task per request on a real aiohttp.web server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import hiveloop_async as hiveloop
from hiveloop_async._server import ServerThread
from hiveloop_async.contrib import aiohttp as hl_aiohttp
from hiveloop_async.testing import capture_events

from .services import (
    action_tree,
    aiohttp_server,
    await_until,
    closed_tasks,
    closing,
    events_by_task,
    started,
)

KEY = "hb_test_services"
STREAM_ENDED = web.AppKey("stream_ended", asyncio.Event)
HB = web.AppKey("hb", hiveloop.HiveBoard)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(memory=True) as srv:
        yield srv


def make_app(server: ServerThread, agent_id: str, **options: Any) -> web.Application:
    hb = hiveloop.HiveBoard(
        api_key=KEY, endpoint=server.url, flush_interval=0.05, shutdown_timeout=10.0
    )
    agent = hb.agent(agent_id, framework="aiohttp")
    app = web.Application()
    app[STREAM_ENDED] = asyncio.Event()

    async def work(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        task = hiveloop.current_task()
        assert task is not None and hiveloop.current_agent() is agent
        async with hiveloop.track_context("plan"):
            await asyncio.sleep(0.001 * (n % 7))
            async with hiveloop.track_context("tool") as tool:
                tool.set_payload({"n": n})
                await asyncio.sleep(0.001 * (n % 5))
        return web.json_response({"task_id": task.task_id, "run": task.task_run_id})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such lead")

    async def unavailable(request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable()

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("handler exploded")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(5):
            async with hiveloop.track_context("chunk"):
                await asyncio.sleep(0.05)
            await response.write(f"chunk {i}\n".encode())
        await response.write_eof()
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(2000):
                await asyncio.sleep(0.01)
                await response.write(b"x" * 100)
        finally:
            request.app[STREAM_ENDED].set()
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        text = await socket.receive_str()
        async with hiveloop.track_context("echo"):
            await socket.send_str(text.upper())
        await socket.close()
        return socket

    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app.router.add_get("/hang", hang)
    app.router.add_post("/work/{n}", work)
    app.router.add_get("/health", health)
    app.router.add_get("/missing", missing)
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/boom", boom)
    app.router.add_get("/stream", stream)
    app.router.add_get("/endless", endless)
    app.router.add_get("/ws", ws)
    hl_aiohttp.setup(app, hb, agent=agent, **options)
    app[HB] = hb
    return app


async def test_200_concurrent_requests_and_the_cleanup_ctx(server: ServerThread) -> None:
    app = make_app(server, "aio-concurrent", exclude=["/health"])
    hb: hiveloop.HiveBoard = app[HB]
    async with aiohttp_server(app) as url:
        assert not [t for t in threading.enumerate() if t.name == "hiveloop_async.sender"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:

            async def one(n: int) -> dict[str, Any]:
                headers = {"X-Request-ID": f"rid-{n}"} if n % 2 else {}
                async with http.post(f"{url}/work/{n}", headers=headers) as response:
                    assert response.status == 200
                    body: dict[str, Any] = await response.json()
                    return body

            answers = await asyncio.gather(*(one(n) for n in range(200)))
            async with http.get(url + "/health") as response:
                assert response.status == 200
    assert hb.closed  # the cleanup_ctx closed it, after delivering
    grouped = await asyncio.to_thread(events_by_task, server, "aio-concurrent")
    assert len(grouped) == 200
    for n, answer in enumerate(answers):
        events = grouped[answer["task_id"]]
        assert answer["task_id"] == f"rid-{n}" if n % 2 else answer["task_id"].startswith("req-")
        assert {e["task_run_id"] for e in events} == {answer["run"]}
        assert {e["task_type"] for e in events} == {"POST /work/{n}"}
        assert sorted(action_tree(events)) == [("plan", None), ("tool", "plan")]
        assert [
            e["payload"]["n"]
            for e in events
            if e["event_type"] == "action_completed" and "n" in e["payload"]
        ] == [n]
        end = closing(events)
        assert end["event_type"] == "task_completed"
        assert end["payload"]["status_code"] == 200
        assert end["payload"]["response_bytes"] > 0
        assert started(events)["payload"]["method"] == "POST"


async def test_errors_streams_and_websockets(server: ServerThread) -> None:
    app = make_app(server, "aio-errors")
    async with aiohttp_server(app) as url, aiohttp.ClientSession() as http:
        statuses = {}
        for path in ("/missing", "/unavailable", "/boom", "/stream"):
            async with http.get(url + path, headers={"X-Request-ID": path[1:]}) as r:
                statuses[path] = r.status
                body = await r.read()
        assert statuses == {"/missing": 404, "/unavailable": 503, "/boom": 500, "/stream": 200}
        async with http.ws_connect(url + "/ws", headers={"X-Request-ID": "ws"}) as ws:
            await ws.send_str("hi")
            assert await ws.receive_str() == "HI"
        response = await http.get(url + "/endless", headers={"X-Request-ID": "gone"})
        await response.content.readexactly(300)
        response.close()
        await asyncio.wait_for(app[STREAM_ENDED].wait(), 15)
    ends = await asyncio.to_thread(closed_tasks, server, "aio-errors")
    assert ends["missing"]["event_type"] == "task_completed"
    assert ends["missing"]["payload"]["status_code"] == 404
    assert ends["unavailable"]["event_type"] == "task_failed"
    assert ends["unavailable"]["payload"]["status_code"] == 503
    assert ends["boom"]["event_type"] == "task_failed"
    assert ends["boom"]["payload"]["exception_type"] == "RuntimeError"
    assert ends["stream"]["event_type"] == "task_completed"
    assert ends["stream"]["duration_ms"] >= 250
    # a streamed aiohttp response counts what went on the wire (headers and chunk framing too)
    assert len(body) < ends["stream"]["payload"]["response_bytes"] < len(body) + 1024
    assert ends["ws"]["task_type"] == "WS /ws"
    assert ends["ws"]["event_type"] == "task_completed"
    assert ends["gone"]["event_type"] == "task_failed"
    assert ends["gone"]["payload"]["cancelled"] is True
    grouped = await asyncio.to_thread(events_by_task, server, "aio-errors")
    assert [name for name, _ in action_tree(grouped["stream"])] == ["chunk"] * 5
    assert action_tree(grouped["ws"]) == [("echo", None)]


async def test_handler_exception_is_the_same_object() -> None:
    raised = KeyError("mine")
    hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    middleware = hl_aiohttp.middleware(hb.agent("aio-same"))
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        raise raised

    app.router.add_get("/x", handler)
    caught: list[BaseException] = []

    @web.middleware
    async def outer(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except KeyError as exc:
            caught.append(exc)
            return web.Response(status=500)

    app.middlewares.extend([outer, middleware])
    async with aiohttp_server(app) as url, aiohttp.ClientSession() as http:
        with capture_events() as cap:
            async with http.get(url + "/x") as r:
                assert r.status == 500
            await await_until(lambda: bool(cap.of_type("task_failed")))
    assert caught == [raised] and caught[0] is raised
    (end,) = cap.of_type("task_failed")
    assert end["task_type"] == "GET /x"


async def test_server_shutdown_cancels_a_request_and_the_cleanup_drains(
    server: ServerThread,
) -> None:
    app = make_app(server, "aio-shutdown")
    async with aiohttp.ClientSession() as http:
        async with aiohttp_server(app, shutdown_timeout=0.3) as url:
            pending = asyncio.ensure_future(http.get(url + "/hang", headers={"X-Request-ID": "h"}))
            await await_until(
                lambda: any(e["task_id"] == "h" for e in server.events(event_type="task_started"))
            )
        with contextlib.suppress(aiohttp.ClientError):
            (await pending).close()
    end = (await asyncio.to_thread(closed_tasks, server, "aio-shutdown"))["h"]
    assert end["event_type"] == "task_failed"
    assert end["payload"]["cancelled"] is True
    assert end["payload"]["exception_type"] == "CancelledError"
