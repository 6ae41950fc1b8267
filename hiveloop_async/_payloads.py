"""Payload builders shared by Agent and Task, and the public ``tool_payload`` helper.

Pure functions: no I/O, never raise on ordinary input.
"""

from __future__ import annotations

from typing import Any


def llm_summary(
    name: str, model: str, tokens_in: int | None, tokens_out: int | None, cost: float | None
) -> str:
    """HiveLoop's LLM summary: ``"name → model (10 in / 5 out, $0.001)"``."""
    parts = []
    if tokens_in is not None and tokens_out is not None:
        parts.append(f"{tokens_in} in / {tokens_out} out")
    if cost is not None:
        parts.append(f"${cost}")
    summary = f"{name} → {model}"
    if parts:
        summary += f" ({', '.join(parts)})"
    return summary


def llm_payload(
    name: str,
    model: str,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    cost: float | None = None,
    duration_ms: int | None = None,
    prompt_preview: str | None = None,
    response_preview: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``custom`` / ``llm_call`` payload of hiveloop 0.2.0."""
    data: dict[str, Any] = {"name": name, "model": model}
    if tokens_in is not None:
        data["tokens_in"] = tokens_in
    if tokens_out is not None:
        data["tokens_out"] = tokens_out
    if cost is not None:
        data["cost"] = cost
    if duration_ms is not None:
        data["duration_ms"] = duration_ms
    if prompt_preview is not None:
        data["prompt_preview"] = prompt_preview
    if response_preview is not None:
        data["response_preview"] = response_preview
    if metadata is not None:
        data["metadata"] = metadata
    return {
        "kind": "llm_call",
        "summary": llm_summary(name, model, tokens_in, tokens_out, cost),
        "data": data,
        "tags": ["llm"],
    }


def queue_summary(depth: Any, oldest_age_seconds: Any) -> str:
    summary = f"Queue: {depth} items"
    if oldest_age_seconds is not None:
        summary += f", oldest {oldest_age_seconds}s"
    return summary


def tool_payload(
    *,
    args: dict[str, Any] | None = None,
    result: Any = None,
    success: bool = True,
    error: str | None = None,
    duration_ms: int | None = None,
    tool_category: str | None = None,
    http_status: int | None = None,
    result_size_bytes: int | None = None,
    args_max_len: int = 500,
    result_max_len: int = 1000,
) -> dict[str, Any]:
    """Build a payload for ``ctx.set_payload()`` describing one tool call.

    Returns ``{"success": success}`` plus ``args`` (each value whose ``str()`` is longer than
    ``args_max_len`` cut to that length), ``result`` (``str(result)`` cut to
    ``result_max_len``), and each other argument that is not None. Values that are not JSON
    types are made JSON-safe by the sender, never dropped with their batch. Pure; never
    raises for ordinary input.
    """
    payload: dict[str, Any] = {"success": success}
    if args is not None:
        cut: dict[str, Any] = {}
        for key, value in args.items():
            text = str(value)
            cut[key] = text[:args_max_len] if len(text) > args_max_len else value
        payload["args"] = cut
    if result is not None:
        payload["result"] = str(result)[:result_max_len]
    if error is not None:
        payload["error"] = error
    if duration_ms is not None:
        payload["duration_ms"] = duration_ms
    if tool_category is not None:
        payload["tool_category"] = tool_category
    if http_status is not None:
        payload["http_status"] = http_status
    if result_size_bytes is not None:
        payload["result_size_bytes"] = result_size_bytes
    return payload
