"""The rest of HiveBoard's read API (llm-calls, cost, pipeline, projects), the live stream,
the dashboard's files, who may read, and the task list at 100,000 tasks."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
import pytest

from hiveloop_async._server import LocalServer, start_server
from hiveloop_async._server.ingest import PreparedBatch
from hiveloop_async._server.store import Store

from .helpers import batch, event, get, ingest, load_fixture, request, stamp

pytestmark = pytest.mark.anyio

SHAPES = load_fixture("read_shapes.json")
_NOW = datetime.now(timezone.utc)


def now_ms(offset: int) -> str:
    """A timestamp close to now (``/v1/cost`` looks at the last 24 hours by default)."""
    return stamp(offset, _NOW.replace(microsecond=0))


def llm(
    name: str, model: str, cost: float, tokens_in: int, tokens_out: int, **kw: Any
) -> dict[str, Any]:
    data = {"name": name, "model": model, "tokens_in": tokens_in, "tokens_out": tokens_out}
    data.update(cost=cost, duration_ms=120, prompt_preview="hi", response_preview="ho")
    return {"kind": "llm_call", "summary": f"{name} → {model}", "data": data, **kw}


async def seed_llm(server: LocalServer, http: aiohttp.ClientSession) -> None:
    t1 = {"task_id": "t1", "project_id": "sales"}
    t2 = {"task_id": "t2", "project_id": "support"}
    first = batch(
        event("task_started", timestamp=now_ms(0), **t1),
        event("custom", timestamp=now_ms(1), payload=llm("plan", "gpt-4o", 0.5, 100, 10), **t1),
        event("custom", timestamp=now_ms(2), payload=llm("act", "haiku", 0.25, 50, 5), **t1),
        event("task_completed", timestamp=now_ms(3), duration_ms=3, **t1),
        agent_id="alpha",
    )
    second = batch(
        event("task_started", timestamp=now_ms(4), **t2),
        event("custom", timestamp=now_ms(5), payload=llm("plan", "gpt-4o", 1.0, 200, 20), **t2),
        agent_id="beta",
    )
    assert (await ingest(http, server, first)).status == 200
    assert (await ingest(http, server, second)).status == 200


async def test_llm_calls_have_hiveboards_shape_filters_and_pages(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    await seed_llm(server, http)
    page = (await get(http, server, "/v1/llm-calls")).body
    assert list(page) == SHAPES["llm_calls_page"]
    assert list(page["totals"]) == SHAPES["llm_calls_totals"]
    assert [list(r) for r in page["data"]] == [SHAPES["llm_call_record"]] * 3
    assert [r["name"] for r in page["data"]] == ["plan", "act", "plan"]  # newest first
    assert page["totals"] == {"cost": 1.75, "tokens_in": 350, "tokens_out": 35, "call_count": 3}
    newest = page["data"][0]
    assert (newest["agent_id"], newest["task_id"], newest["project_id"]) == (
        "beta",
        "t2",
        "support",
    )
    assert (newest["model"], newest["cost"], newest["prompt_preview"]) == ("gpt-4o", 1.0, "hi")

    async def names(query: str) -> list[str]:
        answer = await get(http, server, f"/v1/llm-calls{query}")
        assert answer.status == 200, answer.body
        return [f"{r['agent_id']}:{r['name']}" for r in answer.body["data"]]

    assert await names("?agent_id=alpha") == ["alpha:act", "alpha:plan"]
    assert await names("?model=gpt-4o") == ["beta:plan", "alpha:plan"]
    assert await names("?task_id=t1&model=haiku") == ["alpha:act"]
    assert await names("?project_id=support") == ["beta:plan"]  # the slug resolves
    first = (await get(http, server, "/v1/llm-calls?limit=2")).body
    assert first["pagination"]["has_more"] is True
    assert first["pagination"]["cursor"] == first["data"][-1]["event_id"]
    rest = await get(http, server, f"/v1/llm-calls?limit=2&cursor={first['pagination']['cursor']}")
    assert [r["name"] for r in rest.body["data"]] == ["plan"]
    assert rest.body["pagination"] == {"cursor": None, "has_more": False}
    calls = (await get(http, server, "/v1/cost/calls")).body
    assert list(calls) == ["data", "pagination"]
    assert (await get(http, server, "/v1/llm-calls?limit=500")).status == 400


async def test_cost_totals_by_agent_and_by_model(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    await seed_llm(server, http)
    cost = (await get(http, server, "/v1/cost")).body
    assert list(cost) == SHAPES["cost_summary"]
    assert (cost["total_cost"], cost["call_count"]) == (1.75, 3)
    assert (cost["total_tokens_in"], cost["total_tokens_out"]) == (350, 35)
    assert [list(e) for e in cost["by_agent"]] == [SHAPES["cost_by_agent"]] * 2
    assert [list(e) for e in cost["by_model"]] == [SHAPES["cost_by_model"]] * 2
    assert {e["agent_id"]: (e["cost"], e["call_count"]) for e in cost["by_agent"]} == {
        "alpha": (0.75, 2),
        "beta": (1.0, 1),
    }
    assert {e["model"]: (e["cost"], e["tokens_in"]) for e in cost["by_model"]} == {
        "gpt-4o": (1.5, 300),
        "haiku": (0.25, 50),
    }
    alpha = (await get(http, server, "/v1/cost?agent_id=alpha")).body
    assert (alpha["total_cost"], alpha["call_count"]) == (0.75, 2)
    assert (await get(http, server, "/v1/cost?project_id=support")).body["total_cost"] == 1.0
    # Old calls fall out of the window; range=all (ours) keeps them.
    old = batch(
        event("custom", timestamp="2020-01-01T00:00:00.000Z", payload=llm("x", "m", 2.0, 1, 1)),
        agent_id="alpha",
    )
    assert (await ingest(http, server, old)).status == 200
    assert (await get(http, server, "/v1/cost?range=1h")).body["total_cost"] == 1.75
    assert (await get(http, server, "/v1/cost?range=all")).body["total_cost"] == 3.75


async def test_agent_pipeline_and_fleet(server: LocalServer, http: aiohttp.ClientSession) -> None:
    def custom(ms: int, kind: str, data: dict[str, Any], **payload: Any) -> dict[str, Any]:
        return event("custom", timestamp=stamp(ms), payload={"kind": kind, "data": data, **payload})

    body = batch(
        custom(1, "queue_snapshot", {"depth": 2, "items": [{"id": "a"}, {"id": "b"}]}),
        custom(2, "queue_snapshot", {"depth": 1, "items": [{"id": "b"}]}),
        custom(3, "todo", {"todo_id": "td1", "action": "created", "priority": "high"}),
        custom(4, "todo", {"todo_id": "td2", "action": "created"}),
        custom(5, "todo", {"todo_id": "td2", "action": "completed"}),
        custom(6, "scheduled", {"items": [{"id": "s1", "name": "digest"}]}),
        custom(7, "issue", {"severity": "high", "issue_id": "i1"}, summary="CRM down"),
        custom(8, "issue", {"severity": "low", "issue_id": "i2"}, summary="slow"),
        custom(9, "issue", {"severity": "low", "issue_id": "i2", "action": "resolved"}),
        agent_id="alpha",
    )
    assert (await ingest(http, server, body)).status == 200
    assert (await ingest(http, server, batch(event("heartbeat"), agent_id="beta"))).status == 200
    pipeline = (await get(http, server, "/v1/agents/alpha/pipeline")).body
    assert list(pipeline) == SHAPES["pipeline"]
    assert pipeline["queue"] == {"depth": 1, "items": [{"id": "b"}], "snapshot_at": stamp(2)}
    assert [list(t) for t in pipeline["todos"]] == [SHAPES["pipeline_todo"]]
    assert [t["todo_id"] for t in pipeline["todos"]] == ["td1"]
    assert pipeline["scheduled"] == [{"id": "s1", "name": "digest"}]
    assert [list(i) for i in pipeline["issues"]] == [SHAPES["pipeline_issue"]]
    assert (pipeline["issues"][0]["issue_id"], pipeline["issues"][0]["summary"]) == (
        "i1",
        "CRM down",
    )
    empty = (await get(http, server, "/v1/agents/nobody/pipeline")).body
    assert empty == {
        "agent_id": "nobody",
        "queue": None,
        "todos": [],
        "scheduled": [],
        "issues": [],
    }
    fleet = (await get(http, server, "/v1/pipeline")).body
    assert list(fleet) == SHAPES["fleet_pipeline"]
    assert fleet["totals"] == {
        "queue_depth": 1,
        "active_issues": 1,
        "active_todos": 1,
        "scheduled_count": 1,
    }
    assert [list(a) for a in fleet["agents"]] == [SHAPES["fleet_pipeline_agent"]] * 2
    assert [a["agent_id"] for a in fleet["agents"]] == ["alpha", "beta"]


async def test_projects_resolve_by_slug(server: LocalServer, http: aiohttp.ClientSession) -> None:
    await seed_llm(server, http)
    projects = (await get(http, server, "/v1/projects")).body["data"]
    assert [list(p) for p in projects] == [
        SHAPES["project"] + SHAPES["project_list_item_extra"]
    ] * 2
    assert [(p["slug"], p["event_count"]) for p in projects] == [("sales", 4), ("support", 2)]
    one = await get(http, server, "/v1/projects/sales")
    assert (one.status, list(one.body)) == (200, SHAPES["project"])
    assert (one.body["project_id"], one.body["slug"]) == ("sales", "sales")
    missing = await get(http, server, "/v1/projects/nope")
    assert (missing.status, missing.body) == (
        404,
        {"error": "not_found", "message": "Project not found", "status": 404},
    )
    tasks = (await get(http, server, "/v1/tasks?project_id=sales")).body["data"]
    assert [t["task_id"] for t in tasks] == ["t1"]


async def test_task_search_on_the_task_id(server: LocalServer, http: aiohttp.ClientSession) -> None:
    events = [event("task_started", task_id=t) for t in ("lead-1", "lead-2", "ops_9", "a%b")]
    assert (await ingest(http, server, batch(*events))).status == 200

    async def found(q: str) -> list[str]:
        return [t["task_id"] for t in (await get(http, server, f"/v1/tasks?q={q}")).body["data"]]

    assert await found("lead") == ["lead-2", "lead-1"]
    assert await found("s_") == ["ops_9"]  # LIKE wildcards are taken literally
    assert await found("%25") == ["a%b"]


async def _read_sse(response: aiohttp.ClientResponse, wanted: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    buffer = b""
    while len(events) < wanted:
        chunk = await response.content.readany()
        assert chunk, "the stream closed"
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append(orjson.loads(line[6:]))
    return events


async def test_stream_sends_events_stored_after_it_opened(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    before = event("task_started", task_id="old")
    assert (await ingest(http, server, batch(before))).status == 200
    async with http.get(f"{server.url}/v1/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert (await response.content.readuntil(b"\n\n")).endswith(b": connected\n\n")
        fresh = [event("action_started", task_id="new", action_id="a"), event("heartbeat")]
        fresh.append(event("action_failed", task_id="new", action_id="a"))
        assert (await ingest(http, server, batch(*fresh))).status == 200
        got = await asyncio.wait_for(_read_sse(response, 2), timeout=5)
    # Only what was stored after the stream opened, heartbeats left out, in order.
    assert [e["event_id"] for e in got] == [fresh[0]["event_id"], fresh[2]["event_id"]]
    assert got[1]["event_type"] == "action_failed" and got[1]["tenant_id"] == "local"


async def test_stream_resumes_after_a_given_event(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    events = [event("custom", task_id="t") for _ in range(3)]
    assert (await ingest(http, server, batch(*events))).status == 200
    async with http.get(f"{server.url}/v1/stream?after=1") as response:
        got = await asyncio.wait_for(_read_sse(response, 2), timeout=5)
    assert [e["event_id"] for e in got] == [e["event_id"] for e in events[1:]]
    assert (await get(http, server, "/v1/stream?after=x")).status == 400


async def test_dashboard_files_are_served_with_a_strict_policy(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
    ):
        async with http.get(f"{server.url}{path}") as response:
            assert response.status == 200, path
            assert response.content_type == kind
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await get(http, server, "/static/../store.py", key=None)).status == 404
    assert (await get(http, server, "/static/nothing.js", key=None)).status == 404


async def test_loopback_reads_refuse_a_foreign_host_name(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    """A page on another site that rebinds its DNS name to 127.0.0.1 reads nothing."""
    rebound = await get(http, server, "/v1/tasks", key=None, headers={"Host": "evil.example"})
    assert rebound.status == 403
    for host in ("localhost:1", "127.0.0.1", "[::1]:8766"):
        assert (
            await get(http, server, "/v1/tasks", key=None, headers={"Host": host})
        ).status == 200
    keyed = await get(http, server, "/v1/tasks", headers={"Host": "evil.example"})
    assert keyed.status == 200  # a request with a key is checked as usual


async def test_non_loopback_bind_needs_a_key_for_every_read(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await start_server(host="0.0.0.0")
    # Bound to all interfaces; this test only ever connects through 127.0.0.1.
    async with await start_server(host="0.0.0.0", api_keys=["hb_secret"]) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        for path in ("/v1/tasks", "/v1/agents", "/v1/events", "/v1/cost", "/v1/stream"):
            refused = await request(http, "GET", f"{base}{path}", key=None)
            assert refused.status == 401, path
            assert refused.body["error"] == "authentication_failed"
            wrong = await request(http, "GET", f"{base}{path}", key="hb_other")
            assert wrong.status == 401, path
        ok = await request(http, "GET", f"{base}/v1/tasks", key="hb_secret")
        assert ok.status == 200
        page = await request(http, "GET", f"{base}/", key=None)
        assert page.status == 200  # the page itself holds no data; it asks for the key


async def test_task_list_stays_paged_at_100000_tasks(http: aiohttp.ClientSession) -> None:
    """The list reads one page of the summary table through its index, whatever the size."""
    async with await start_server() as srv:
        store: Store = srv.store
        rows = generate_task_rows(100_000)

        assert await store.insert(PreparedBatch(rows=rows)) == 100_000
        first = (await get(http, srv, "/v1/tasks?limit=50")).body
        assert len(first["data"]) == 50 and first["pagination"]["has_more"] is True
        assert first["data"][0]["task_id"] == "task-099999"  # newest first
        second = await get(http, srv, f"/v1/tasks?limit=50&cursor={first['pagination']['cursor']}")
        assert second.body["data"][0]["task_id"] == "task-099949"
        by_agent = (await get(http, srv, "/v1/tasks?limit=50&agent_id=agent-3")).body["data"]
        assert len(by_agent) == 50 and {t["agent_id"] for t in by_agent} == {"agent-3"}

        def plans(conn: sqlite3.Connection) -> list[str]:
            out = []
            for where in ("", "WHERE agent_id = 'agent-3'"):
                sql = f"EXPLAIN QUERY PLAN SELECT task_id FROM tasks {where} "
                sql += "ORDER BY first_ts DESC, first_seq DESC LIMIT 51"
                out.append(" | ".join(str(row[-1]) for row in conn.execute(sql)))
            return out

        for plan in await store.call(plans):
            assert "TEMP B-TREE" not in plan, plan  # no sort of the whole table
            assert "tasks_newest" in plan or "tasks_agent" in plan, plan


def generate_task_rows(n: int) -> list[tuple[Any, ...]]:
    """``n`` one-event tasks as stored event rows, one second apart, over 10 agents."""
    base = 1_700_000_000
    rows = []
    for i in range(n):
        ts = datetime.fromtimestamp(base + i, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        body = orjson.dumps({"task_type": "lead", "project_id": "p"})
        rows.append(
            (str(uuid.uuid4()), ts, "task_started", f"agent-{i % 10}", f"task-{i:06d}", None, body)
        )
    return rows
