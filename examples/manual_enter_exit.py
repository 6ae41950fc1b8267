"""The loopCore pattern (user manual §11.3): manual ``__enter__()`` / ``__exit__()``.

Some tool frameworks never raise: they return ``ToolResult(success=False, error=...)``.
A ``with`` block cannot tell such a tool failed, and wrapping it in ``try/except`` risks
running the tool twice (manual §13.3). loopCore separates the three phases instead:

1. open the tracking context (if that fails, the tool still runs, untracked);
2. run the tool, exactly once;
3. attach a payload with ``args``, ``result_preview``, ``success`` and ``error``, and close
   the context (if that fails, the error is ignored).

A logically failed tool therefore shows up as a completed action whose payload says
``success: false`` and carries the error, which is what loopCore wanted.

The manual plumbs the agent handle through hand-written ContextVars (§10). With
hiveloop_async that plumbing is built in: ``hiveloop.current_agent()`` and
``hiveloop.current_task()`` return the agent and task of the innermost open task, in this
thread or asyncio task only.

Run it against a local server::

    hiveloop-async serve                        # in another terminal
    python -m examples.manual_enter_exit
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import hiveloop_async as hiveloop

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"


@dataclass(frozen=True)
class ToolResult:
    """What loopCore's tools return instead of raising."""

    success: bool
    output: str | None = None
    error: str | None = None


class ToolRegistry:
    """loopCore's tool registry: ``execute`` never raises, it reports failure."""

    def execute(self, tool_name: str, parameters: dict[str, Any]) -> ToolResult:
        """Run ``tool_name``; an unknown tool or a failure is a ``ToolResult``, not raised."""
        time.sleep(0.02)  # pretend I/O
        if tool_name == "crm_search":
            query = parameters.get("query", "")
            return ToolResult(True, output=f"{{'name': '{query}', 'email': 'jane@acme.example'}}")
        if tool_name == "fetch_webpage":
            return ToolResult(False, error=f"404 Not Found: {parameters.get('url')}")
        if tool_name == "send_email":
            return ToolResult(True, output=f"queued for {parameters.get('to')}")
        return ToolResult(False, error=f"unknown tool {tool_name!r}")


class AgentLoop:
    """The part of loopCore's ``loop.py`` that executes tools."""

    def __init__(self, tool_registry: ToolRegistry) -> None:
        self.tool_registry = tool_registry

    def execute_tool(self, tool_name: str, parameters: dict[str, Any]) -> ToolResult:
        """The single tool execution site, instrumented as in manual §11.3."""
        # Replaces the manual's get_hiveloop_agent(): the agent of the current task, or None.
        _hl_agent = hiveloop.current_agent()
        _hl_ctx = None
        if _hl_agent is not None:
            try:
                _hl_ctx = _hl_agent.track_context(tool_name)
                _hl_ctx.__enter__()
            except Exception:
                _hl_ctx = None

        tool_result = self.tool_registry.execute(tool_name, parameters)  # exactly once

        if _hl_ctx is not None:
            try:
                _hl_ctx.set_payload(
                    {
                        "args": {k: str(v)[:100] for k, v in parameters.items()},
                        "result_preview": (tool_result.output or "")[:200],
                        "success": tool_result.success,
                        "error": tool_result.error,
                    }
                )
                _hl_ctx.__exit__(None, None, None)
            except Exception:
                pass
        return tool_result

    def run(self) -> list[ToolResult]:
        """One scripted turn of tool calls (a real loop gets them from the LLM)."""
        # Replaces the manual's get_current_task(): the task open in this context.
        task = hiveloop.current_task()
        if task is not None:
            task.llm_call("phase1_reasoning", model="claude-sonnet", tokens_in=300, tokens_out=90)
        results = [
            self.execute_tool("crm_search", {"query": "Acme Corp"}),
            self.execute_tool("fetch_webpage", {"url": "https://acme.example/about"}),
            self.execute_tool("send_email", {"to": "jane@acme.example", "body": "x" * 500}),
        ]
        if task is not None:
            task.llm_call("phase2_tool_use", model="claude-sonnet", tokens_in=420, tokens_out=60)
        return results


def main(endpoint: str, api_key: str = DEFAULT_API_KEY, *, run_id: str | None = None) -> str:
    """Run one loopCore-style task; return its task id."""
    run_id = run_id or uuid.uuid4().hex[:6]
    hb = hiveloop.HiveBoard(api_key=api_key, endpoint=endpoint, shutdown_timeout=5.0)
    _hiveloop_agent = hb.agent("loopcore-agent", type="general", framework="loopcore")
    task_id = f"loopcore-{run_id}"

    # agent_manager.py (manual §11.2) enters the task by hand as well. No set_current_task()
    # / set_hiveloop_agent() calls are needed: entering the task makes both current.
    _hiveloop_ctx = _hiveloop_agent.task(task_id, project="loopcore")
    _hiveloop_ctx.__enter__()
    try:
        results = AgentLoop(ToolRegistry()).run()
    except BaseException:
        _hiveloop_ctx.__exit__(*sys.exc_info())  # records task_failed with the exception
        raise
    else:
        _hiveloop_ctx.__exit__(None, None, None)
    finally:
        hb.shutdown(timeout=5.0)  # deliver, bounded by the timeout

    for result in results:
        state = "ok" if result.success else f"failed ({result.error})"
        print(f"manual_enter_exit: tool result {state}")
    return task_id


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and run the example."""
    parser = argparse.ArgumentParser(description="loopCore's manual enter/exit pattern")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    args = parser.parse_args(argv)
    print(main(args.endpoint, os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
