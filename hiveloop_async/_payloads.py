"""Payload builders: the payload of every event the recording API sends, and ``tool_payload``.

Pure functions: each takes the caller's arguments and returns a new payload dict (the
``payload`` field of one wire event) with no I/O, no state and no logging. They never raise
on ordinary input; on pathological input (an object whose ``str()``, ``len()`` or comparison
raises) the exception propagates and the recording method decides what it means.
"""

from __future__ import annotations

from typing import Any


def summary_payload(summary: str, **data: Any) -> dict[str, Any]:
    """``{"summary": ...}`` plus ``"data"`` with the non-None keywords, if any."""
    payload: dict[str, Any] = {"summary": summary}
    kept = {k: v for k, v in data.items() if v is not None}
    if kept:
        payload["data"] = kept
    return payload


# -- agents and LLM calls -------------------------------------------------------------------


def agent_registered_payload(
    agent_id: str, agent_type: str, version: str | None, framework: str, stuck_threshold: int
) -> dict[str, Any]:
    """The ``agent_registered`` payload, sent the first time an agent id is seen."""
    return {
        "summary": f"Agent {agent_id} registered",
        "data": {
            "type": agent_type,
            "version": version,
            "framework": framework,
            "stuck_threshold": stuck_threshold,
        },
    }


def llm_summary(
    name: str, model: str, tokens_in: int | None, tokens_out: int | None, cost: float | None
) -> str:
    """HiveLoop's LLM summary: ``"name → model (10 in / 5 out, $0.001)"``.

    The token part needs both counts; either alone is left out of the summary.
    """
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
    """The ``custom`` / ``llm_call`` payload of hiveloop 0.2.0 (None fields left out).

    Written out field by field: it runs on every recorded LLM call.
    """
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


# -- agent-level custom events --------------------------------------------------------------


def queue_summary(depth: Any, oldest_age_seconds: Any) -> str:
    """``"Queue: 3 items"``, plus ``", oldest 7s"`` when the oldest item's age is known."""
    summary = f"Queue: {depth} items"
    if oldest_age_seconds is not None:
        summary += f", oldest {oldest_age_seconds}s"
    return summary


def queue_snapshot_data(
    depth: int,
    oldest_age_seconds: float | None = None,
    items: list[Any] | None = None,
    processing: Any = None,
) -> dict[str, Any]:
    """The ``data`` of a queue snapshot from ``agent.queue_snapshot()``'s arguments."""
    data: dict[str, Any] = {"depth": depth}
    if oldest_age_seconds is not None:
        data["oldest_age_seconds"] = oldest_age_seconds
    if items is not None:
        data["items"] = items
    if processing is not None:
        data["processing"] = processing
    return data


def queue_snapshot_payload(data: dict[str, Any]) -> dict[str, Any]:
    """The ``custom`` / ``queue_snapshot`` payload carrying ``data`` as it is.

    ``data`` is what :func:`queue_snapshot_data` built or what a ``queue_provider`` returned;
    the summary reads its ``depth`` (0 when absent) and ``oldest_age_seconds``.
    """
    summary = queue_summary(data.get("depth", 0), data.get("oldest_age_seconds"))
    return {"kind": "queue_snapshot", "summary": summary, "data": data, "tags": ["queue"]}


def todo_payload(
    todo_id: str,
    action: str,
    summary: str,
    priority: str | None = None,
    source: str | None = None,
    context: Any = None,
    due_by: str | None = None,
) -> dict[str, Any]:
    """The ``custom`` / ``todo`` payload, tagged with the ``action``."""
    data: dict[str, Any] = {"todo_id": todo_id, "action": action}
    for key, value in (
        ("priority", priority),
        ("source", source),
        ("context", context),
        ("due_by", due_by),
    ):
        if value is not None:
            data[key] = value
    return {"kind": "todo", "summary": summary, "data": data, "tags": ["todo", action]}


#: The summary of a ``scheduled`` event whose items could not be read.
SCHEDULED_FALLBACK_SUMMARY = "scheduled items"


def scheduled_summary(items: list[dict[str, Any]]) -> str:
    """``"3 scheduled items, next at 09:00:00Z"``: the count and the earliest ``next_run``.

    The time of day is what follows ``T`` in the ISO timestamp (the whole value without one).
    Raises whatever malformed ``items`` raise (see :data:`SCHEDULED_FALLBACK_SUMMARY`).
    """
    summary = f"{len(items)} scheduled items"
    runs = [str(i["next_run"]) for i in items if isinstance(i, dict) and i.get("next_run")]
    if runs:
        first = min(runs)
        summary += f", next at {first.split('T', 1)[1] if 'T' in first else first}"
    return summary


def scheduled_payload(items: list[dict[str, Any]], summary: str) -> dict[str, Any]:
    """The ``custom`` / ``scheduled`` payload (``summary`` from :func:`scheduled_summary`)."""
    return {
        "kind": "scheduled",
        "summary": summary,
        "data": {"items": items},
        "tags": ["scheduled"],
    }


def issue_reported_payload(
    summary: str,
    severity: str,
    issue_id: str | None = None,
    category: str | None = None,
    context: Any = None,
    occurrence_count: int | None = None,
) -> dict[str, Any]:
    """The ``custom`` / ``issue`` payload with action ``reported``, tagged with the category."""
    data: dict[str, Any] = {"severity": severity, "action": "reported"}
    for key, value in (
        ("issue_id", issue_id),
        ("category", category),
        ("context", context),
        ("occurrence_count", occurrence_count),
    ):
        if value is not None:
            data[key] = value
    return {
        "kind": "issue",
        "summary": summary,
        "data": data,
        "tags": ["issue", category] if category else ["issue"],
    }


def issue_resolved_payload(summary: str, issue_id: str | None = None) -> dict[str, Any]:
    """The ``custom`` / ``issue`` payload with action ``resolved`` (severity ``low``)."""
    data: dict[str, Any] = {"severity": "low", "action": "resolved"}
    if issue_id is not None:
        data["issue_id"] = issue_id
    return {"kind": "issue", "summary": summary, "data": data, "tags": ["issue", "resolved"]}


# -- task-level events ----------------------------------------------------------------------


def plan_payload(goal: str, steps: list[str], revision: int = 0) -> dict[str, Any]:
    """The ``custom`` / ``plan_created`` payload: the goal and the numbered steps."""
    data = {
        "goal": goal,
        "steps": [{"index": i, "description": s} for i, s in enumerate(steps)],
        "revision": revision,
    }
    return {"kind": "plan_created", "summary": goal, "data": data, "tags": ["plan", "created"]}


def plan_step_payload(
    step_index: int,
    action: str,
    summary: str,
    total_steps: int | None,
    plan_revision: int,
    turns: int | None = None,
    tokens: int | None = None,
) -> dict[str, Any]:
    """The ``custom`` / ``plan_step`` payload: ``"Step 0 completed: ..."``.

    ``total_steps`` and ``plan_revision`` are sent even when None or 0 (the task fills them
    from its last plan); ``turns`` and ``tokens`` only when given.
    """
    data: dict[str, Any] = {"step_index": step_index, "total_steps": total_steps, "action": action}
    if turns is not None:
        data["turns"] = turns
    if tokens is not None:
        data["tokens"] = tokens
    data["plan_revision"] = plan_revision
    return {
        "kind": "plan_step",
        "summary": f"Step {step_index} {action}: {summary}",
        "data": data,
        "tags": ["plan", f"step_{action}"],
    }


def escalated_payload(
    summary: str | None, assigned_to: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The ``escalated`` payload; with no ``summary``, the reason or who it went to."""
    if summary is None:
        summary = reason or (f"Escalated to {assigned_to}" if assigned_to else "Escalated")
    return summary_payload(summary, assigned_to=assigned_to, reason=reason)


def approval_requested_payload(
    summary: str | None, approver: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The ``approval_requested`` payload; with no ``summary``, the reason or the approver."""
    if summary is None:
        summary = reason or (
            f"Approval requested from {approver}" if approver else "Approval requested"
        )
    return summary_payload(summary, approver=approver, reason=reason)


def approval_received_payload(
    summary: str | None, approved_by: str | None = None, decision: str = "approved"
) -> dict[str, Any]:
    """The ``approval_received`` payload; ``data.decision`` is always sent."""
    if summary is None:
        summary = f"Approval {decision}" + (f" by {approved_by}" if approved_by else "")
    data: dict[str, Any] = {"decision": decision}
    if approved_by is not None:
        data["approved_by"] = approved_by
    return {"summary": summary, "data": data}


def retry_started_payload(
    summary: str | None,
    attempt: int | None = None,
    reason: str | None = None,
    backoff_seconds: float | None = None,
) -> dict[str, Any]:
    """The ``retry_started`` payload; with no ``summary``, the reason or the attempt number."""
    if summary is None:
        summary = reason or (f"Retry attempt {attempt}" if attempt is not None else "Retry")
    return summary_payload(summary, attempt=attempt, backoff_seconds=backoff_seconds, reason=reason)


# -- public helper --------------------------------------------------------------------------


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
