"""An agentic loop instrumented with the user manual's "full turn pattern" (§4), in asyncio.

Each turn has two phases:

1. the LLM reasons and picks zero or more tools     -> ``task.llm_call(...)``   (■ LLM node)
2. each picked tool runs                            -> ``agent.track_context(tool_name)``
                                                       (● action node, ✖ when it raises)

The LLM here is a scripted fake (deterministic for a given seed, no network), so the example
runs anywhere. Three leads are qualified concurrently on one agent with ``asyncio.gather``;
the SDK keeps each task's actions apart because the current task lives in a ContextVar.

Run it against a local server::

    hiveloop-async serve                  # in another terminal
    python -m examples.agent_loop         # or: --endpoint http://127.0.0.1:8766
    hiveloop-async tasks                  # then: hiveloop-async timeline <TASK_ID>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiveloop_async as hiveloop

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"

#: The leads the three concurrent tasks qualify.
LEADS = (
    {"id": "4801", "company": "Acme Corp", "domain": "acme.example"},
    {"id": "4802", "company": "Globex", "domain": "globex.example"},
    {"id": "4803", "company": "Initech", "domain": "initech.example"},
)

# -- a fake LLM client: the shapes mimic a real SDK's response objects ------------------------


@dataclass(frozen=True)
class ToolCall:
    """One tool the LLM asked for."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts, as a real LLM API reports them."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LLMResponse:
    """What ``chat()`` returns: some text and zero or more tool calls."""

    model: str
    text: str
    tool_calls: list[ToolCall]
    usage: Usage


@dataclass
class Message:
    """One entry of the conversation."""

    role: str  # "user", "assistant" or "tool"
    content: str
    tool_name: str | None = None


#: What the scripted LLM wants done, stage by stage; tools of one stage may come in one turn.
_STAGES = (("crm_search", "enrich_company"), ("research",), ("score_lead",), ("send_email",))

#: $ per token of the (pretend) model: $3 per million in, $15 per million out.
_PRICE_IN, _PRICE_OUT = 3e-6, 15e-6


class ScriptedLLM:
    """A stand-in for an LLM client. It decides at runtime, from the conversation so far,
    which tools to call next; its choices, latencies and token counts depend only on
    ``seed``. When every stage is done it answers with text only (a zero-tool turn).
    """

    model = "claude-sonnet (scripted)"

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    async def chat(self, messages: Sequence[Message], tools: Sequence[str]) -> LLMResponse:
        """Answer the conversation, like ``client.messages.create(...)`` would."""
        await asyncio.sleep(self._rng.uniform(0.04, 0.09))  # "thinking"
        answered = {m.tool_name for m in messages if m.role == "tool"}
        calls: list[ToolCall] = []
        for stage in _STAGES:
            todo = [name for name in stage if name not in answered and name in tools]
            if todo:
                self._rng.shuffle(todo)
                # Sometimes all the stage's tools in one turn (parallel tool use), sometimes one.
                chosen = todo if self._rng.random() < 0.6 else todo[:1]
                calls = [ToolCall(name, self._arguments(name, messages)) for name in chosen]
                break
        text = (
            "Lead qualified: strong fit, intro email sent."
            if not calls
            else f"I'll call {', '.join(c.name for c in calls)}."
        )
        tokens_in = 180 + sum(len(m.content) for m in messages) // 4 + self._rng.randint(0, 15)
        tokens_out = 20 + 35 * len(calls) + self._rng.randint(0, 40)
        return LLMResponse(self.model, text, calls, Usage(tokens_in, tokens_out))

    @staticmethod
    def _arguments(tool: str, messages: Sequence[Message]) -> dict[str, Any]:
        # The first message says "Qualify lead <id>: <company> (<domain>)".
        found = re.match(r"Qualify lead \S+: (.+) \((.+)\)", messages[0].content)
        company, domain = found.groups() if found else ("unknown", "unknown.example")
        return {
            "crm_search": {"query": company, "fields": "name,email,phone"},
            "enrich_company": {"domain": domain},
            "research": {"topic": f"{company} recent news and funding"},
            "score_lead": {"company": company, "signals": ["crm_match", "news"]},
            "send_email": {"to": f"jane@{domain}", "subject": f"Hello from us, {company}"},
        }[tool]


# -- the tools: plain async functions; the loop decides when to track them -----------------


async def _work(seconds: float) -> None:
    """Pretend to do I/O (an HTTP call, a database query) for ``seconds``."""
    await asyncio.sleep(seconds)


async def crm_search(query: str, fields: str) -> dict[str, Any]:
    """Look the company up in the CRM."""
    await _work(0.04)
    slug = query.lower().replace(" ", "")
    return {"name": query, "email": f"jane@{slug}.example", "phone": "+1-555-0100", "deals": 2}


async def enrich_company(domain: str) -> dict[str, Any]:
    """Call a (pretend) enrichment API that is down today: this tool always raises."""
    await _work(0.03)
    raise ConnectionError(f"Enrichment API timeout after 5000ms ({domain})")


async def web_search(query: str) -> list[str]:
    """Search the web (fake results)."""
    await _work(0.05)
    return [f"{query}: article {i} ..." for i in range(1, 6)]


async def summarize(texts: list[str], llm: ScriptedLLM) -> str:
    """Summarize with a (fake) small LLM; the call becomes an LLM node inside `summarize`."""
    started = time.perf_counter()
    await _work(0.03)
    task = hiveloop.current_task()
    if task is not None:
        task.llm_call(
            "summarize",
            model="claude-haiku (scripted)",
            tokens_in=40 * len(texts),
            tokens_out=60,
            cost=round(40 * len(texts) * 0.8e-6 + 60 * 4e-6, 6),
            duration_ms=round((time.perf_counter() - started) * 1000),
        )
    return f"{len(texts)} sources: growing, recently funded, hiring sales engineers."


async def research(topic: str, llm: ScriptedLLM) -> str:
    """A tool that calls other tools: ``web_search`` then ``summarize`` (manual §8.4).

    They are tracked as nested blocks, so they appear as children of ``research``.
    ``hiveloop.track_context`` tracks under the agent of the current task (and does
    nothing outside a task), so tools need no agent handle passed to them.
    """
    async with hiveloop.track_context("web_search") as search:
        results = await web_search(topic)
        search.set_payload({"args": {"query": topic[:100]}, "result_preview": str(results)[:200]})
    async with hiveloop.track_context("summarize") as summary_ctx:
        summary = await summarize(results, llm)
        summary_ctx.set_payload({"result_preview": summary[:200]})
    return summary


async def score_lead(company: str, signals: list[str]) -> dict[str, Any]:
    """Score the lead from the gathered signals."""
    await _work(0.02)
    return {"company": company, "score": 82 + len(signals), "tier": "A"}


async def send_email(to: str, subject: str) -> dict[str, Any]:
    """Send the intro email (pretend)."""
    await _work(0.06)
    return {"to": to, "status": "queued", "message_id": f"msg-{zlib.crc32(to.encode()):08x}"}


@dataclass
class ToolRegistry:
    """Maps the names the LLM uses to the functions above."""

    llm: ScriptedLLM
    tools: dict[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tools = {
            "crm_search": crm_search,
            "enrich_company": enrich_company,
            "research": lambda topic: research(topic, self.llm),
            "score_lead": score_lead,
            "send_email": send_email,
        }

    async def execute(self, name: str, arguments: dict[str, Any]) -> Any:
        """Run one tool; raises what the tool raises."""
        return await self.tools[name](**arguments)


# -- the loop: the manual's full turn pattern ------------------------------------------------


async def run_turn(
    llm: ScriptedLLM, registry: ToolRegistry, messages: list[Message]
) -> LLMResponse:
    """One turn: the LLM reasons (phase 1), then the tools it picked run (phase 2)."""
    # -- Phase 1: LLM call, the agent reasons ------------------------------------------------
    llm_start = time.perf_counter()
    response = await llm.chat(messages, tools=list(registry.tools))
    llm_elapsed = (time.perf_counter() - llm_start) * 1000
    messages.append(Message("assistant", response.text))

    # current_task()/current_agent() replace the manual's hand-written ContextVars (§10).
    task = hiveloop.current_task()
    if task is not None:
        usage = response.usage
        task.llm_call(
            "agent_turn",
            model=response.model,
            tokens_in=usage.input_tokens,
            tokens_out=usage.output_tokens,
            cost=round(usage.input_tokens * _PRICE_IN + usage.output_tokens * _PRICE_OUT, 6),
            duration_ms=round(llm_elapsed),
        )

    # -- Phase 2: tool execution, zero or more per turn -------------------------------------
    agent = hiveloop.current_agent()
    for call in response.tool_calls:
        try:
            if agent is not None:
                async with agent.track_context(call.name) as ctx:
                    result = await registry.execute(call.name, call.arguments)
                    # Truncate: tool arguments and results can be megabytes (manual §7.3).
                    ctx.set_payload(
                        {
                            "args": {k: str(v)[:100] for k, v in call.arguments.items()},
                            "result_preview": str(result)[:200],
                        }
                    )
            else:
                result = await registry.execute(call.name, call.arguments)
        except Exception as exc:
            # The SDK already recorded `action_failed` (type + message) and re-raised; the
            # loop tells the LLM the tool failed and carries on. The tool ran exactly once.
            messages.append(Message("tool", f"error: {type(exc).__name__}: {exc}", call.name))
        else:
            messages.append(Message("tool", str(result)[:500], call.name))
    return response


async def qualify_lead(
    agent: hiveloop.Agent,
    lead: dict[str, str],
    *,
    seed: int,
    run_id: str,
    max_turns: int = 8,
    verbose: bool = False,
) -> str:
    """Run one task: turns until the LLM answers without tools. Returns the task id."""
    llm = ScriptedLLM(seed)
    registry = ToolRegistry(llm)
    task_id = f"task-lead-{lead['id']}-{run_id}"
    messages = [Message("user", f"Qualify lead {lead['id']}: {lead['company']} ({lead['domain']})")]
    turns = 0
    async with agent.task(task_id, project="sales-pipeline", type="lead_qualification") as task:
        while turns < max_turns:
            turns += 1
            response = await run_turn(llm, registry, messages)
            if not response.tool_calls:  # a zero-tool turn: the final answer
                break
        task.set_payload({"lead": lead["company"], "outcome": messages[-1].content[:200]})
    if verbose:
        tools = [m for m in messages if m.role == "tool"]
        failed = sum(m.content.startswith("error:") for m in tools)
        print(f"  {task_id}: {turns} turns, {len(tools)} tool calls ({failed} failed)", flush=True)
    return task_id


async def amain(
    endpoint: str,
    api_key: str = DEFAULT_API_KEY,
    *,
    seed: int = 5,
    run_id: str | None = None,
    verbose: bool = True,
) -> list[str]:
    """Qualify the three leads concurrently on one agent; return the three task ids.

    The SDK runs on this event loop (``async with HiveBoard``). ``aflush`` waits for
    delivery (at most 5 s); leaving the block closes the client, bounded by
    ``shutdown_timeout``.
    """
    run_id = run_id or uuid.uuid4().hex[:6]
    async with hiveloop.HiveBoard(
        api_key=api_key, endpoint=endpoint, flush_interval=0.5, shutdown_timeout=2.0
    ) as hb:
        agent = hb.agent("lead-qualifier", type="sales", version="1.0.0", framework="custom")
        task_ids = await asyncio.gather(
            *(
                qualify_lead(agent, lead, seed=seed + i, run_id=run_id, verbose=verbose)
                for i, lead in enumerate(LEADS)
            )
        )
        flushed = await hb.aflush(timeout=5.0)  # bounded: returns after 5 s at most
        if verbose:
            stats = hb.stats()
            if flushed:
                print(f"agent_loop: {len(task_ids)} tasks, {stats['sent']} events delivered")
            else:
                print(
                    f"agent_loop: events NOT delivered to {endpoint} ({stats['last_error']}); "
                    "is `hiveloop-async serve` running?"
                )
    return list(task_ids)


def main(
    endpoint: str, api_key: str = DEFAULT_API_KEY, *, seed: int = 5, verbose: bool = True
) -> list[str]:
    """Synchronous entry point: run :func:`amain` on a new event loop."""
    return asyncio.run(amain(endpoint, api_key, seed=seed, verbose=verbose))


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line, run the example, print the task ids."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    api_key = os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY
    for task_id in main(args.endpoint, api_key, seed=args.seed):
        print(task_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
