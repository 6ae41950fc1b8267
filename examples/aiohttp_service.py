"""An aiohttp web service whose request handlers run agent tasks.

The SDK runs on the application's own event loop: it is started in a ``cleanup_ctx``
(``await hb.start()``) and stopped when the app shuts down (``await hb.aclose()``, which
delivers what is queued within its timeout). Handlers just record; nothing they do waits
for HiveBoard.

Endpoints::

    POST /qualify/{lead_id}    qualify a lead (a task with tracked tool calls); an unknown
                               lead fails the task and answers 404
    GET  /health               liveness

Run it (it listens on 127.0.0.1 only)::

    hiveloop-async serve                                  # in another terminal
    python -m examples.aiohttp_service --port 8080
    curl -X POST http://127.0.0.1:8080/qualify/4801
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import hiveloop_async as hiveloop

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"

AGENT_KEY = web.AppKey("hiveloop_agent", hiveloop.Agent)

#: A pretend CRM.
_CRM = {
    "4801": {"company": "Acme Corp", "employees": 420},
    "4802": {"company": "Globex", "employees": 1200},
    "4803": {"company": "Initech", "employees": 85},
}


class UnknownLead(LookupError):
    """The CRM has no such lead."""


async def crm_search(lead_id: str) -> dict[str, Any]:
    """Look the lead up (pretend I/O: 20 ms); raises :class:`UnknownLead`."""
    await asyncio.sleep(0.02)
    try:
        return _CRM[lead_id]
    except KeyError:
        raise UnknownLead(f"lead {lead_id} not found in CRM") from None


async def score_lead(record: dict[str, Any]) -> int:
    """Score the lead (pretend I/O: 10 ms)."""
    await asyncio.sleep(0.01)
    return min(100, 50 + int(record["employees"]) // 20)


async def qualify(request: web.Request) -> web.Response:
    """``POST /qualify/{lead_id}``: one agent task per request."""
    agent = request.app[AGENT_KEY]
    lead_id = request.match_info["lead_id"]
    task_id = f"qualify-{lead_id}-{uuid.uuid4().hex[:8]}"
    try:
        async with agent.task(task_id, project="sales-api", type="lead_qualification") as task:
            async with agent.track_context("crm_search") as ctx:
                record = await crm_search(lead_id)
                ctx.set_payload({"args": {"lead_id": lead_id}, "result_preview": str(record)})
            async with agent.track_context("score_lead") as ctx:
                score = await score_lead(record)
                ctx.set_payload({"score": score})
            task.llm_call(
                "summarize_lead", model="claude-haiku", tokens_in=150, tokens_out=40, cost=0.0003
            )
            task.set_payload({"score": score})
    except UnknownLead as exc:
        # The task was recorded as failed (task_failed with the exception); answer 404.
        return web.json_response({"task_id": task_id, "error": str(exc)}, status=404)
    return web.json_response({"task_id": task_id, "lead_id": lead_id, "score": score})


async def health(request: web.Request) -> web.Response:
    """``GET /health``."""
    return web.json_response({"ok": True})


def create_app(endpoint: str, api_key: str = DEFAULT_API_KEY) -> web.Application:
    """The application, with the SDK's lifetime tied to the app's (``cleanup_ctx``)."""

    async def hiveboard_ctx(app: web.Application) -> AsyncIterator[None]:
        hb = hiveloop.HiveBoard(
            api_key=api_key, endpoint=endpoint, flush_interval=1.0, shutdown_timeout=5.0
        )
        await hb.start()  # the sender runs on this app's event loop
        app[AGENT_KEY] = hb.agent("lead-service", type="sales", framework="aiohttp")
        yield
        await hb.aclose()  # delivers what is queued; returns within shutdown_timeout

    app = web.Application()
    app.cleanup_ctx.append(hiveboard_ctx)
    app.router.add_post("/qualify/{lead_id}", qualify)
    app.router.add_get("/health", health)
    return app


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and serve on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(description="an aiohttp service that runs agent tasks")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    app = create_app(args.endpoint, os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY)
    web.run_app(app, host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
