"""The ASGI middleware under uvicorn with FastAPI and Starlette: a task per request.

Every test serves a real app on 127.0.0.1 with uvicorn, drives it with a real HTTP client,
and reads what the service's HiveBoard client delivered to the local server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException, WebSocket
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import hiveloop_async as hiveloop
from hiveloop_async._server import ServerThread
from hiveloop_async.contrib.asgi import HiveLoopMiddleware, lifespan, route_template
from hiveloop_async.testing import capture_events

from .services import Uvicorn, action_tree, closed_tasks, closing, events_by_task, started

KEY = "hb_test_services"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(memory=True) as srv:
        yield srv


def client_for(server: ServerThread) -> hiveloop.HiveBoard:
    return hiveloop.HiveBoard(
        api_key=KEY, endpoint=server.url, flush_interval=0.05, shutdown_timeout=10.0
    )


def sender_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "hiveloop_async.sender"]


def agent_app(agent: hiveloop.Agent, **options: Any) -> FastAPI:
    """The app the tests drive; ``options`` go to the middleware."""
    app = FastAPI()
    app.add_middleware(HiveLoopMiddleware, agent=agent, **options)
    finished_streams: list[str] = []
    app.state.finished_streams = finished_streams

    @app.post("/work/{n}")
    async def work(n: int) -> dict[str, Any]:
        task = hiveloop.current_task()
        assert task is not None and hiveloop.current_agent() is agent
        async with hiveloop.track_context("plan"):
            await asyncio.sleep(0.001 * (n % 7))
            async with hiveloop.track_context("tool") as tool:
                tool.set_payload({"n": n})
                await asyncio.sleep(0.001 * (n % 5))
        return {"task_id": task.task_id, "run": task.task_run_id}

    @tracked_step
    async def step(n: int) -> int:
        await asyncio.sleep(0)
        return n

    @app.get("/deco/{n}")
    async def deco(n: int) -> dict[str, int]:
        return {"n": await step(n)}

    @app.get("/sync/{n}")
    def sync_handler(n: int) -> dict[str, Any]:  # run in Starlette's thread pool
        task = hiveloop.current_task()
        assert task is not None
        with hiveloop.track_context("sync-step"):
            pass
        return {"task_id": task.task_id}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/metrics/cpu")
    async def metrics() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "no such lead")

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(503, "try later")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("handler exploded")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(5):
                async with hiveloop.track_context("chunk"):
                    await asyncio.sleep(0.05)
                yield f"chunk {i}\n".encode()

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for i in range(4):
                await asyncio.sleep(0.05)
                yield f"data: {i}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/endless")
    async def endless() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                for _ in range(2000):
                    await asyncio.sleep(0.01)
                    yield b"x" * 100
            finally:
                finished_streams.append("endless")

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/hang")
    async def hang() -> None:
        await asyncio.Event().wait()

    @app.post("/bg")
    async def bg(tasks: BackgroundTasks) -> dict[str, bool]:
        async def spawned() -> None:
            async with hiveloop.track_context("spawned"):
                await asyncio.sleep(0.01)

        child = asyncio.create_task(spawned())

        async def job() -> None:
            async with hiveloop.track_context("bg-job"):
                await asyncio.sleep(0.05)
            await child

        tasks.add_task(job)
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        text = await socket.receive_text()
        async with hiveloop.track_context("echo"):
            await socket.send_text(text.upper())
        await socket.close()

    return app


def tracked_step(fn: Any) -> Any:
    return hiveloop.track("deco-step")(fn)


async def test_200_concurrent_requests_give_200_separate_correct_trees(
    server: ServerThread,
) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-concurrent", framework="fastapi")
    app = agent_app(agent, hb=hb, exclude=["/health", "/metrics/*"])
    with Uvicorn(app) as uv:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(n: int) -> dict[str, Any]:
                headers = {"X-Request-ID": f"rid-{n}"} if n % 2 else {}
                async with http.post(f"{uv.url}/work/{n}", headers=headers) as response:
                    assert response.status == 200
                    body: dict[str, Any] = await response.json()
                    return body

            answers = await asyncio.gather(*(one(n) for n in range(200)))
            for path in ("/health", "/metrics/cpu"):
                async with http.get(uv.url + path) as response:
                    assert response.status == 200
        assert sender_threads() == [], "the sender must run on uvicorn's loop"
    # uvicorn stopped: the lifespan closed the client, which delivered everything already.
    grouped = events_by_task(server, "svc-concurrent")
    assert len(grouped) == 200
    for n, answer in enumerate(answers):
        task_id = answer["task_id"]
        if n % 2:
            assert task_id == f"rid-{n}"
        else:
            assert task_id.startswith("req-")
        events = grouped[task_id]
        assert {e["task_run_id"] for e in events} == {answer["run"]}
        assert {e["task_type"] for e in events} == {"POST /work/{n}"}
        assert sorted(action_tree(events)) == [("plan", None), ("tool", "plan")]
        done = [e for e in events if e["event_type"] == "action_completed"]
        (tool_done,) = [e for e in done if e["payload"].get("n") == n]
        assert tool_done["payload"]["action_name"] == "tool"
        end = closing(events)
        assert end["event_type"] == "task_completed"
        assert end["payload"]["status_code"] == 200
        assert end["payload"]["method"] == "POST"
        assert end["payload"]["route"] == "/work/{n}"
        assert end["payload"]["response_bytes"] > 0
        assert started(events)["payload"]["route"] == "/work/{n}"
    routes = {e["payload"].get("route") for e in server.events(agent_id="svc-concurrent")}
    assert "/health" not in routes and "/metrics/cpu" not in routes


async def test_errors_map_to_the_task_status(server: ServerThread) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-errors")
    app = agent_app(agent, hb=hb)
    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http:
            statuses = {}
            for path in ("/missing", "/unavailable", "/boom", "/deco/3", "/sync/1"):
                async with http.get(uv.url + path, headers={"X-Request-ID": path[1:]}) as r:
                    statuses[path] = r.status
    assert statuses == {
        "/missing": 404,
        "/unavailable": 503,
        "/boom": 500,
        "/deco/3": 200,
        "/sync/1": 200,
    }
    ends = closed_tasks(server, "svc-errors")
    assert ends["missing"]["event_type"] == "task_completed"
    assert ends["missing"]["payload"]["status_code"] == 404
    assert ends["unavailable"]["event_type"] == "task_failed"
    assert ends["unavailable"]["payload"]["status_code"] == 503
    boom = ends["boom"]
    assert boom["event_type"] == "task_failed"
    assert boom["payload"]["exception_type"] == "RuntimeError"
    assert boom["payload"]["exception_message"] == "handler exploded"
    assert boom["payload"]["status_code"] == 500
    deco = events_by_task(server, "svc-errors")["deco/3"]
    assert action_tree(deco) == [("deco-step", None)]
    sync = events_by_task(server, "svc-errors")["sync/1"]
    assert action_tree(sync) == [("sync-step", None)]
    assert closing(sync)["task_type"] == "GET /sync/{n}"


async def test_failed_predicate_and_callables_override_defaults(server: ServerThread) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-options")
    app = agent_app(
        agent,
        hb=hb,
        failed=lambda status: status >= 400,
        task_id=lambda scope: "custom-" + scope["path"].strip("/"),
        task_type=lambda scope: "typed",
        project="proj-x",
    )
    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http, http.get(uv.url + "/missing") as r:
            assert r.status == 404
    ends = closed_tasks(server, "svc-options")
    assert ends["custom-missing"]["event_type"] == "task_failed"
    assert ends["custom-missing"]["task_type"] == "typed"
    assert ends["custom-missing"]["project_id"] == "proj-x"


def test_the_app_exception_reaches_the_server_unchanged() -> None:
    """Wrapped directly around a bare ASGI app: the very exception object propagates."""
    raised = ValueError("mine")

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    app = HiveLoopMiddleware(bare, agent=hb.agent("bare"))
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    async def call() -> BaseException:
        with capture_events() as cap:
            try:
                await app(scope, receive, send)
            except BaseException as exc:
                caught = exc
            else:
                raise AssertionError("not raised")
        (end,) = cap.of_type("task_failed")
        assert end["task_type"] == "GET /x"  # no router: the raw path
        assert end["payload"]["exception_type"] == "ValueError"
        return caught

    assert asyncio.run(call()) is raised


async def test_streaming_and_sse_keep_the_task_open_until_the_body_ends(
    server: ServerThread,
) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-stream")
    app = agent_app(agent, hb=hb)
    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http:
            async with http.get(uv.url + "/stream", headers={"X-Request-ID": "s1"}) as r:
                body = await r.read()
            async with http.get(uv.url + "/sse", headers={"X-Request-ID": "sse1"}) as r:
                sse = await r.text()
    assert body.count(b"chunk") == 5
    assert sse.count("data:") == 4
    grouped = events_by_task(server, "svc-stream")
    stream = grouped["s1"]
    end = closing(stream)
    assert end["event_type"] == "task_completed"
    assert end["payload"]["response_bytes"] == len(body)
    assert end["duration_ms"] >= 250  # five 50 ms chunks
    assert [n for n, _ in action_tree(stream)] == ["chunk"] * 5
    # every chunk action closed before the task did
    done = [e for e in stream if e["event_type"] == "action_completed"]
    assert max(e["timestamp"] for e in done) <= end["timestamp"]
    sse_end = closing(grouped["sse1"])
    assert sse_end["duration_ms"] >= 200
    assert sse_end["payload"]["response_bytes"] == len(sse.encode())


async def test_client_disconnect_mid_stream_fails_the_task_as_cancelled(
    server: ServerThread,
) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-disconnect")
    app = agent_app(agent, hb=hb)
    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http:
            response = await http.get(uv.url + "/endless", headers={"X-Request-ID": "gone"})
            await response.content.readexactly(300)
            response.close()  # drop the connection mid-body
        await asyncio.to_thread(
            lambda: _wait(lambda: "gone" in closed_tasks(server, "svc-disconnect"))
        )
        assert app.state.finished_streams == ["endless"]
    end = closed_tasks(server, "svc-disconnect")["gone"]
    assert end["event_type"] == "task_failed"
    assert end["payload"]["cancelled"] is True
    assert 300 <= end["payload"]["response_bytes"] < 200_000


async def test_server_shutdown_cancels_a_request_and_the_client_drains(
    server: ServerThread,
) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-shutdown")
    app = agent_app(agent, hb=hb)
    uv = Uvicorn(app, graceful=1).start()
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.get(uv.url + "/hang", headers={"X-Request-ID": "h"}))
        await asyncio.to_thread(
            lambda: _wait(lambda: any(e["task_id"] == "h" for e in _started(server)))
        )
        await asyncio.to_thread(uv.stop)
        try:  # uvicorn answers 500 for the cancelled request, or drops the connection
            response = await pending
        except aiohttp.ClientError:
            pass
        else:
            assert response.status == 500
    end = closed_tasks(server, "svc-shutdown")["h"]  # delivered by the lifespan shutdown
    assert end["event_type"] == "task_failed"
    assert end["payload"]["cancelled"] is True
    assert end["payload"]["exception_type"] == "CancelledError"


async def test_background_tasks_and_spawned_tasks_nest_under_the_request(
    server: ServerThread,
) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-bg")
    app = agent_app(agent, hb=hb)
    with Uvicorn(app) as uv:
        async with (
            aiohttp.ClientSession() as http,
            http.post(uv.url + "/bg", headers={"X-Request-ID": "bg"}) as r,
        ):
            assert r.status == 200
        await asyncio.to_thread(lambda: _wait(lambda: "bg" in closed_tasks(server, "svc-bg")))
    events = events_by_task(server, "svc-bg")["bg"]
    assert sorted(action_tree(events)) == [("bg-job", None), ("spawned", None)]
    end = closing(events)
    assert end["event_type"] == "task_completed"
    bg_done = [e for e in events if e["event_type"] == "action_completed"]
    assert max(e["timestamp"] for e in bg_done) <= end["timestamp"]


async def test_websockets_are_tasks_when_asked(server: ServerThread) -> None:
    hb = client_for(server)
    agent = hb.agent("svc-ws")
    app = agent_app(agent, hb=hb, websockets=True)
    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http, http.ws_connect(uv.url + "/ws") as ws:
            await ws.send_str("hello")
            assert (await ws.receive_str()) == "HELLO"
        await asyncio.to_thread(lambda: _wait(lambda: bool(closed_tasks(server, "svc-ws"))))
    ((task_id, end),) = closed_tasks(server, "svc-ws").items()
    assert end["task_type"] == "WS /ws"
    assert end["event_type"] == "task_completed"
    assert end["payload"]["response_bytes"] == 5
    assert action_tree(events_by_task(server, "svc-ws")[task_id]) == [("echo", None)]


async def test_lifespan_helper_runs_the_client_on_the_server_loop(server: ServerThread) -> None:
    """``FastAPI(lifespan=lifespan(hb, inner))``: the sender on uvicorn's loop, the app's
    own lifespan inside it, and what the last request recorded delivered at shutdown."""
    hb = client_for(server)
    agent = hb.agent("svc-lifespan")
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Any) -> AsyncIterator[None]:
        seen.append("startup")
        yield
        seen.append("shutdown")

    app = FastAPI(lifespan=lifespan(hb, own))
    app.add_middleware(HiveLoopMiddleware, agent=agent)

    @app.get("/last")
    async def last() -> dict[str, bool]:
        async with hiveloop.track_context("final-step"):
            pass
        return {"ok": True}

    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http, http.get(uv.url + "/last") as r:
            assert r.status == 200
        assert sender_threads() == []
        assert hb.stats()["state"] == "running"
    assert seen == ["startup", "shutdown"]
    assert hb.closed
    ((task_id, end),) = closed_tasks(server, "svc-lifespan").items()
    assert end["event_type"] == "task_completed"
    assert action_tree(events_by_task(server, "svc-lifespan")[task_id]) == [("final-step", None)]


async def test_agent_callable_picks_or_skips(server: ServerThread) -> None:
    hb = client_for(server)
    public = hb.agent("svc-public")
    admin = hb.agent("svc-admin")

    def pick(scope: Any) -> hiveloop.Agent | None:
        path: str = scope["path"]
        if path.startswith("/admin"):
            return admin
        return None if path == "/skip" else public

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"task": getattr(hiveloop.current_task(), "task_id", None)})

    inner = Starlette(routes=[Route("/items/{item_id:int}", hello)])
    app = Starlette(
        routes=[
            Route("/skip", hello),
            Route("/hello/{name}", hello),
            Mount("/admin", app=inner),
        ]
    )
    app.add_middleware(HiveLoopMiddleware, agent=pick, hb=hb)
    with Uvicorn(app) as uv:
        async with aiohttp.ClientSession() as http:
            answers = {}
            for path in ("/skip", "/hello/bob", "/admin/items/7"):
                async with http.get(uv.url + path) as r:
                    answers[path] = (await r.json())["task"]
    assert answers["/skip"] is None
    public_ends = closed_tasks(server, "svc-public")
    admin_ends = closed_tasks(server, "svc-admin")
    assert public_ends[answers["/hello/bob"]]["task_type"] == "GET /hello/{name}"
    assert admin_ends[answers["/admin/items/7"]]["task_type"] == "GET /admin/items/{item_id:int}"


def test_invalid_request_ids_are_replaced() -> None:
    hb = hiveloop.HiveBoard(api_key=KEY, endpoint="http://127.0.0.1:9", enabled=False)
    app = HiveLoopMiddleware(_ok_app, agent=hb.agent("ids"))

    async def run(header: bytes) -> str:
        headers = [(b"x-request-id", header)]
        scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
        with capture_events() as cap:
            await app(scope, _receive, _discard)
        (ev,) = cap.of_type("task_completed")
        return str(ev["task_id"])

    assert asyncio.run(run(b"good-id_1.2")) == "good-id_1.2"
    for bad in (b"", b"has space", b"x" * 200, b"\xff\xfe", b"<script>"):
        assert asyncio.run(run(bad)).startswith("req-"), bad


def test_route_template_without_a_router_is_none() -> None:
    assert route_template({"type": "http", "path": "/x"}, _ok_app) is None


def test_route_templates_of_static_paths_are_remembered_per_app_and_stay_right() -> None:
    """Static paths are looked up once per app; each app keeps its own routing, a route
    added later counts, and parameterised paths are matched every time."""

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({})

    def scope(path: str, method: str = "GET") -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "root_path": ""}

    one = Starlette(routes=[Route("/x", endpoint), Route("/items/{item_id}", endpoint)])
    two = Starlette(routes=[Route("/{name}", endpoint)])
    for _ in range(3):
        assert route_template(scope("/x"), one) == "/x"
        assert route_template(scope("/x"), two) == "/{name}"
        assert route_template(scope("/items/1"), one) == "/items/{item_id}"
        assert route_template(scope("/items/2"), one) == "/items/{item_id}"
        assert route_template(scope("/nothing/here"), one) is None
    one.router.routes.insert(0, Route("/{anything}", endpoint))
    assert route_template(scope("/x"), one) == "/{anything}"
    three = Starlette(routes=[Route("/x", endpoint, methods=["POST"])])
    assert route_template(scope("/x", "POST"), three) == "/x"
    assert route_template(scope("/x", "GET"), three) == "/x"  # 405: the path's template


def test_route_templates_agree_with_the_routers_own_matching() -> None:
    """The regex-and-method shortcut for plain routes gives the template of the route the
    router itself picks: first match wins, 405 gives the path's template, a mount is
    descended into, a route class with its own ``matches()`` is asked, a root path is
    honoured, FastAPI's ``APIRoute`` with converters; and the table follows new routes."""

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({})

    class OnlyOdd(Route):
        def matches(self, scope: Any) -> Any:
            match, child = super().matches(scope)
            if match.name != "NONE" and int(scope["path"].rsplit("/", 1)[1]) % 2 == 0:
                return type(match).NONE, {}
            return match, child

    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @api.post("/qualify/{lead_id}")
    async def qualify(lead_id: str) -> dict[str, str]:
        return {"id": lead_id}

    app = Starlette(
        routes=[
            Route("/n/{k:int}", endpoint, methods=["POST"]),
            OnlyOdd("/odd/{k}", endpoint),
            Route("/odd/{k}", endpoint, name="fallback"),
            Mount("/v1", routes=[Route("/runs/{run_id}", endpoint)]),
            Route("/n/{k}", endpoint, methods=["GET"], name="get-n"),
            Route("/s/{rest:path}", endpoint),
        ]
    )

    def scope(path: str, method: str = "GET", root: str = "") -> dict[str, Any]:
        return {"type": "http", "method": method, "path": root + path, "root_path": root}

    cases = [
        (app, scope("/n/3", "POST"), "/n/{k:int}"),
        (app, scope("/n/3", "GET"), "/n/{k}"),  # the second /n route serves GET
        (app, scope("/n/x", "GET"), "/n/{k}"),  # the int converter's regex rejects it
        (app, scope("/n/3", "PUT"), "/n/{k:int}"),  # 405: the first route's template
        (app, scope("/n/x", "POST"), "/n/{k}"),  # 405 from the only route matching "x"
        (app, scope("/nothing"), None),
        (app, scope("/odd/3"), "/odd/{k}"),
        (app, scope("/odd/4"), "/odd/{k}"),  # OnlyOdd refused it, the fallback took it
        (app, scope("/v1/runs/r-1"), "/v1/runs/{run_id}"),
        (app, scope("/s/a/b/c"), "/s/{rest:path}"),
        (app, scope("/n/3", "POST", root="/base"), "/n/{k:int}"),
        (api, scope("/items/3"), "/items/{item_id}"),
        (api, scope("/items/x"), "/items/{item_id}"),  # FastAPI answers 422 there
        (api, scope("/qualify/l-1", "POST"), "/qualify/{lead_id}"),
        (api, scope("/qualify/l-1", "GET"), "/qualify/{lead_id}"),
        (api, scope("/docs"), "/docs"),
    ]
    for _ in range(2):  # the second time through, from the prepared tables
        for owner, sc, want in cases:
            assert route_template(sc, owner) == want, (sc, want)
            assert route_template({**sc, "app": owner}) == want, (sc, want)
    # OnlyOdd's own matches() was consulted, not only its regex
    assert route_template(scope("/odd/4"), app) == "/odd/{k}"
    app.router.routes.insert(0, Route("/odd/{anything}", endpoint))
    assert route_template(scope("/odd/4"), app) == "/odd/{anything}"
    assert route_template({"type": "http", "path": "/x", "method": "GET"}) is None


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request"}


async def _discard(message: Any) -> None:
    pass


def _started(server: ServerThread) -> list[dict[str, Any]]:
    return server.events(event_type="task_started")


def _wait(ready: Any, timeout: float = 15.0) -> None:
    from .services import wait_until

    wait_until(ready, timeout)
