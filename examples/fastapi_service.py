"""A FastAPI service whose requests are agent tasks, through the ASGI integration.

FastAPI is an optional extra::

    pip install 'hiveloop-async[fastapi]'       # fastapi + uvicorn

Two lines do the SDK's work: ``lifespan=lifespan(hb)`` runs the sender on the server's
event loop (started at startup, drained at shutdown), and ``HiveLoopMiddleware`` makes each
request a task of the agent, typed by its route (``"POST /qualify/{lead_id}"``), with the
method, route, status code and response size in its payload. Handlers just use
``track_context``: the current task lives in a ContextVar, so concurrent requests never mix.
Here a request answered with a 4xx counts as a failed task (``failed=``): a lead we cannot
qualify is a failure of the agent, not only of the HTTP call.

Endpoints::

    POST /qualify/{lead_id}    qualify a lead: a tool call, a nested action and an LLM
                               call; an unknown lead fails the task (404)
    GET  /health               liveness (not tracked)

Run it (127.0.0.1 only)::

    hiveloop-async serve                                  # in another terminal
    python -m examples.fastapi_service --port 8000
    curl -X POST http://127.0.0.1:8000/qualify/4801
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

try:
    from fastapi import FastAPI, HTTPException
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("this example needs FastAPI: pip install 'hiveloop-async[fastapi]'") from exc

import hiveloop_async as hiveloop
from hiveloop_async.contrib.asgi import HiveLoopMiddleware, lifespan

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"

#: A pretend CRM.
_CRM = {
    "4801": {"company": "Acme Corp", "employees": 420},
    "4802": {"company": "Globex", "employees": 1200},
    "4803": {"company": "Initech", "employees": 85},
}


async def crm_search(lead_id: str) -> dict[str, Any]:
    """Look the lead up (pretend I/O: 20 ms); raises KeyError for an unknown lead."""
    await asyncio.sleep(0.02)
    return _CRM[lead_id]


async def enrich(company: str) -> dict[str, Any]:
    """Enrich the company (pretend I/O: 15 ms)."""
    await asyncio.sleep(0.015)
    return {"company": company, "funding": "Series B"}


def create_app(endpoint: str, api_key: str = DEFAULT_API_KEY) -> FastAPI:
    """The application; the HiveBoard client lives exactly as long as the app runs."""
    hb = hiveloop.HiveBoard(
        api_key=api_key, endpoint=endpoint, flush_interval=1.0, shutdown_timeout=5.0
    )
    agent = hb.agent("lead-qualifier-api", type="sales", framework="fastapi")
    app = FastAPI(title="lead qualifier", lifespan=lifespan(hb))
    app.add_middleware(
        HiveLoopMiddleware,
        agent=agent,
        project="sales-api",
        exclude=["/health"],
        failed=lambda status: status >= 400,
    )

    @app.post("/qualify/{lead_id}")
    async def qualify(lead_id: str) -> dict[str, Any]:
        task = hiveloop.current_task()  # the request's task, opened by the middleware
        assert task is not None
        task_id = task.task_id
        try:
            async with hiveloop.track_context("crm_search") as ctx:
                record = await crm_search(lead_id)  # KeyError: the action fails with it
                ctx.set_payload({"args": {"lead_id": lead_id}, "result_preview": str(record)})
        except KeyError:
            raise HTTPException(404, {"task_id": task_id, "error": "unknown lead"}) from None
        async with hiveloop.track_context("enrich_and_score") as ctx:
            async with hiveloop.track_context("enrich_company"):  # nested: a child
                company = await enrich(str(record["company"]))
            score = min(100, 50 + int(record["employees"]) // 20)
            ctx.set_payload({"score": score, "funding": company["funding"]})
        task.llm_call(
            "write_summary", model="claude-haiku", tokens_in=220, tokens_out=60, cost=0.0004
        )
        return {"task_id": task_id, "lead_id": lead_id, "score": score}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and serve with uvicorn on 127.0.0.1 until Ctrl-C."""
    import uvicorn

    parser = argparse.ArgumentParser(description="a FastAPI service that runs agent tasks")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    app = create_app(args.endpoint, os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY)
    uvicorn.run(app, host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
