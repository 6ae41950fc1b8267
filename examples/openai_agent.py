"""The user manual's full turn pattern (§4) with an instrumented OpenAI client.

``instrument(client)`` records every LLM call (model, tokens, cost, duration, the tools the
model asked for) under the current task; the tools run in ``agent.track_context``. There is
no timing or token code in the loop.

Run it against any OpenAI-compatible endpoint and a local HiveBoard-compatible server::

    hiveloop-async serve                                   # in another terminal
    OPENAI_API_KEY=... python -m examples.openai_agent     # --base-url / OPENAI_BASE_URL
    hiveloop-async tasks
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from openai import AsyncOpenAI

import hiveloop_async as hiveloop
from hiveloop_async.contrib.openai import instrument

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for name, desc in (("crm_search", "Find the lead in the CRM"), ("score_lead", "Score it"))
]


def run_tool(name: str, arguments: str) -> dict[str, Any]:
    """The tool registry (a stand-in: real tools call real systems)."""
    if name == "crm_search":
        return {"found": True, "company": "Acme Corp"}
    if name == "score_lead":
        return {"score": 82}
    raise ValueError(f"unknown tool {name}")


async def qualify(agent: hiveloop.Agent, client: AsyncOpenAI, model: str, lead: str) -> str:
    """One task: LLM turns until the model stops asking for tools. Returns the task id."""
    messages: Any = [{"role": "user", "content": f"Qualify the lead {lead}."}]
    with agent.task(f"qualify-{lead}", project="sales") as task:
        for _turn in range(5):
            # Phase 1: the LLM reasons (recorded by instrument(): a purple LLM node)
            response = await client.chat.completions.create(
                model=model, messages=messages, tools=TOOLS
            )
            message = response.choices[0].message
            if not message.tool_calls:
                break
            messages.append(message.model_dump(exclude_none=True))
            # Phase 2: each tool the model picked runs as an action node
            for call in message.tool_calls:
                name = call.function.name  # type: ignore[union-attr]
                with agent.track_context(name) as ctx:
                    result = run_tool(name, call.function.arguments)  # type: ignore[union-attr]
                    ctx.set_payload({"result_preview": str(result)[:200]})
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )
        return task.task_id


async def amain(endpoint: str, base_url: str | None, model: str, api_key: str) -> list[str]:
    """Qualify two leads concurrently; returns the task ids."""
    client = instrument(AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0))
    async with hiveloop.HiveBoard(
        api_key=os.environ.get("HIVELOOP_API_KEY") or "hb_local_dev",
        endpoint=endpoint,
        flush_interval=0.5,
        shutdown_timeout=2.0,
    ) as hb:
        agent = hb.agent("openai-qualifier", type="sales")
        ids = await asyncio.gather(
            *(qualify(agent, client, model, lead) for lead in ("4801", "4802"))
        )
        await hb.aflush(timeout=5.0)
    await client.close()
    return list(ids)


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line, run the example, print the task ids."""
    parser = argparse.ArgumentParser(description="OpenAI agent loop, instrumented")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--model", default="gpt-4o-mini")
    args = parser.parse_args(argv)
    key = os.environ.get("OPENAI_API_KEY") or "sk-none"
    for task_id in asyncio.run(amain(args.endpoint, args.base_url, args.model, key)):
        print(task_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
