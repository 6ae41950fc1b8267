"""Two agent services, one timeline each, linked: an orchestrator delegates to a researcher.

* **orchestrator** (FastAPI under uvicorn): ``POST /brief/{company}`` plans, then calls the
  research service with httpx through :class:`hiveloop_async.contrib.httpx.AsyncTransport`
  (``track_requests=True``: the call is an action of the orchestrator's task), then writes
  the brief (an LLM call).
* **research** (aiohttp.web): ``POST /v1/research`` searches and summarizes. It trusts
  callers on 127.0.0.1 (``trust_incoming=["127.0.0.1/32"]``), so its task carries the
  orchestrator's agent, task, run and action (``caller_*`` in ``task_started``), the same
  ``correlation_id`` and the same W3C trace id; it answers with a ``hiveloop-task`` header,
  and the orchestrator's request action records a ``delegation`` event naming its task.

Both run in this process on 127.0.0.1 and deliver to the same HiveBoard (``make demo`` prints
both timelines)::

    hiveloop-async serve                  # in another terminal
    python -m examples.two_services       # prints the two task ids
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import Any

import aiohttp
import httpx
import uvicorn
from aiohttp import web
from fastapi import FastAPI

import hiveloop_async as hiveloop
from hiveloop_async.contrib import aiohttp as hl_aiohttp
from hiveloop_async.contrib import httpx as hl_httpx
from hiveloop_async.contrib.asgi import HiveLoopMiddleware, lifespan
from hiveloop_async.contrib.propagation import parse_linkage

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"


def research_app(endpoint: str, api_key: str) -> web.Application:
    """The research service: trusts callers on 127.0.0.1."""
    hb = hiveloop.HiveBoard(api_key=api_key, endpoint=endpoint, shutdown_timeout=5.0)

    async def research(request: web.Request) -> web.Response:
        company = (await request.json())["company"]
        task = hiveloop.current_task()
        assert task is not None
        async with hiveloop.track_context("web_search") as ctx:
            await asyncio.sleep(0.03)  # pretend search
            ctx.set_payload({"args": {"query": company}, "result_preview": "3 articles"})
        task.llm_call(
            "summarize_sources", model="claude-haiku", tokens_in=900, tokens_out=120, cost=0.0011
        )
        return web.json_response({"company": company, "summary": f"{company} is growing"})

    app = web.Application()
    app.router.add_post("/v1/research", research)
    hl_aiohttp.setup(
        app,
        hb,
        agent=hb.agent("research-svc", type="research", framework="aiohttp"),
        trust_incoming=["127.0.0.1/32"],
    )
    return app


def orchestrator_app(endpoint: str, api_key: str, research_url: str) -> FastAPI:
    """The orchestrator: each ``POST /brief/{company}`` delegates research over HTTP."""
    hb = hiveloop.HiveBoard(api_key=api_key, endpoint=endpoint, shutdown_timeout=5.0)
    agent = hb.agent("orchestrator", type="planner", framework="fastapi")
    app = FastAPI(lifespan=lifespan(hb))
    app.add_middleware(HiveLoopMiddleware, agent=agent)
    transport = hl_httpx.AsyncTransport(track_requests=True)

    @app.post("/brief/{company}")
    async def brief(company: str) -> dict[str, Any]:
        task = hiveloop.current_task()
        assert task is not None
        async with hiveloop.track_context("plan") as ctx:
            ctx.set_payload({"steps": ["research", "write"]})
        async with (
            hiveloop.track_context("delegate_research"),
            httpx.AsyncClient(transport=transport, timeout=10) as http,
        ):
            response = await http.post(f"{research_url}/v1/research", json={"company": company})
            research = response.json()
            callee = response.headers.get("hiveloop-task", "")
        task.llm_call(
            "write_brief", model="claude-sonnet", tokens_in=1400, tokens_out=300, cost=0.0087
        )
        return {"task_id": task.task_id, "research": research, "research_task": callee}

    return app


async def amain(endpoint: str, api_key: str = DEFAULT_API_KEY) -> list[str]:
    """Start both services on free ports, brief one company, stop both (delivering what
    they recorded); return [orchestrator task id, research task id]."""
    runner = web.AppRunner(research_app(endpoint, api_key), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    research_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        orchestrator_app(endpoint, api_key, research_url), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError("the orchestrator did not start")
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with aiohttp.ClientSession() as http, http.post(f"{url}/brief/acme") as response:
            answer = await response.json()
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await runner.cleanup()
    link = parse_linkage(answer["research_task"])
    return [answer["task_id"], link.task_id if link is not None else ""]


def main(endpoint: str, api_key: str = DEFAULT_API_KEY) -> list[str]:
    """Synchronous entry point: run :func:`amain` on a new event loop."""
    return asyncio.run(amain(endpoint, api_key))


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line, run both services once, print the two task ids."""
    parser = argparse.ArgumentParser(description="two linked agent services")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    args = parser.parse_args(argv)
    for task_id in main(args.endpoint, os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY):
        print(task_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
