"""A FastAPI service whose handlers run agent tasks, with the SDK started in the lifespan.

FastAPI is an optional extra::

    pip install 'hiveloop-async[fastapi]'       # fastapi + uvicorn

The SDK runs on the server's event loop: the lifespan starts it (``await hb.start()``)
and stops it on shutdown (``await hb.aclose()``, which delivers what is queued within its
timeout). ``async with agent.task(...)`` inside an ``async def`` handler is safe under
concurrency: the current task lives in a ContextVar, so requests never mix.

Endpoints::

    POST /qualify/{lead_id}    qualify a lead: a task with a tool call, an LLM call and a
                               nested action; an unknown lead fails the task (404)
    GET  /health               liveness

Run it (127.0.0.1 only)::

    hiveloop-async serve                                  # in another terminal
    python -m examples.fastapi_service --port 8000
    curl -X POST http://127.0.0.1:8000/qualify/4801
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

try:
    from fastapi import FastAPI, HTTPException
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("this example needs FastAPI: pip install 'hiveloop-async[fastapi]'") from exc

import hiveloop_async as hiveloop

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
    agents: dict[str, hiveloop.Agent] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hb = hiveloop.HiveBoard(
            api_key=api_key, endpoint=endpoint, flush_interval=1.0, shutdown_timeout=5.0
        )
        await hb.start()
        agents["qualifier"] = hb.agent("lead-qualifier-api", type="sales", framework="fastapi")
        try:
            yield
        finally:
            await hb.aclose()  # bounded by shutdown_timeout

    app = FastAPI(title="lead qualifier", lifespan=lifespan)

    @app.post("/qualify/{lead_id}")
    async def qualify(lead_id: str) -> dict[str, Any]:
        agent = agents["qualifier"]
        task_id = f"api-qualify-{lead_id}-{uuid.uuid4().hex[:8]}"
        try:
            async with agent.task(task_id, project="sales-api", type="lead_qualification") as task:
                async with agent.track_context("crm_search") as ctx:
                    record = await crm_search(lead_id)
                    ctx.set_payload({"args": {"lead_id": lead_id}, "result_preview": str(record)})
                async with agent.track_context("enrich_and_score") as ctx:
                    async with agent.track_context("enrich_company"):  # nested: a child
                        company = await enrich(str(record["company"]))
                    score = min(100, 50 + int(record["employees"]) // 20)
                    ctx.set_payload({"score": score, "funding": company["funding"]})
                task.llm_call(
                    "write_summary",
                    model="claude-haiku",
                    tokens_in=220,
                    tokens_out=60,
                    cost=0.0004,
                    duration_ms=35,
                )
                task.set_payload({"score": score})
        except KeyError:
            # The task is already recorded as failed (task_failed, KeyError); answer 404.
            raise HTTPException(
                status_code=404, detail={"task_id": task_id, "error": "unknown lead"}
            ) from None
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
