"""An aiohttp web service whose requests are agent tasks, through the aiohttp integration.

One call does the SDK's work: ``setup(app, hb, agent=...)`` adds a middleware that makes
each request a task of the agent (typed by its route, ``"POST /qualify/{lead_id}"``) and a
``cleanup_ctx`` that runs the sender on the app's own event loop and delivers what is queued
when the app shuts down. Handlers just use ``track_context``; nothing they do waits for
HiveBoard. A lead we cannot qualify fails the task (``failed=``: any 4xx or 5xx).

Endpoints::

    POST /qualify/{lead_id}    qualify a lead (a task with tracked tool calls); an unknown
                               lead fails the task and answers 404
    GET  /health               liveness (not tracked)

Run it (it listens on 127.0.0.1 only)::

    hiveloop-async serve                                  # in another terminal
    python -m examples.aiohttp_service --port 8080
    curl -X POST http://127.0.0.1:8080/qualify/4801
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from aiohttp import web

import hiveloop_async as hiveloop
from hiveloop_async.contrib import aiohttp as hl_aiohttp

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"


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
    """``POST /qualify/{lead_id}``: the middleware made this request a task."""
    task = hiveloop.current_task()
    assert task is not None
    lead_id = request.match_info["lead_id"]
    try:
        async with hiveloop.track_context("crm_search") as ctx:
            record = await crm_search(lead_id)
            ctx.set_payload({"args": {"lead_id": lead_id}, "result_preview": str(record)})
    except UnknownLead as exc:  # the action failed with the exception; the 404 fails the task
        return web.json_response({"task_id": task.task_id, "error": str(exc)}, status=404)
    async with hiveloop.track_context("score_lead") as ctx:
        score = await score_lead(record)
        ctx.set_payload({"score": score})
    task.llm_call("summarize_lead", model="claude-haiku", tokens_in=150, tokens_out=40, cost=0.0003)
    return web.json_response({"task_id": task.task_id, "lead_id": lead_id, "score": score})


async def health(request: web.Request) -> web.Response:
    """``GET /health``."""
    return web.json_response({"ok": True})


def create_app(endpoint: str, api_key: str = DEFAULT_API_KEY) -> web.Application:
    """The application, with the SDK's lifetime tied to the app's."""
    hb = hiveloop.HiveBoard(
        api_key=api_key, endpoint=endpoint, flush_interval=1.0, shutdown_timeout=5.0
    )
    app = web.Application()
    app.router.add_post("/qualify/{lead_id}", qualify)
    app.router.add_get("/health", health)
    hl_aiohttp.setup(
        app,
        hb,
        agent=hb.agent("lead-service", type="sales", framework="aiohttp"),
        project="sales-api",
        exclude=["/health"],
        failed=lambda status: status >= 400,
    )
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
