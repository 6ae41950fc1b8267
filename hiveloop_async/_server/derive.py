"""Pure derivations over stored events: task status, timelines, plans, agent status.

These follow HiveBoard's ``app.py``/``storage_json.py`` (contract §2.7) with three deliberate
fixes: a ``plan_step`` whose ``data.total_steps`` is null does not crash the timeline, malformed
payload values (non-dict steps, unhashable indexes) are skipped instead of raising, and an
action's name falls back to its closing event when ``action_started`` is missing.
Nothing here does I/O; every function is safe to call from any thread.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from .ingest import parse_timestamp

__all__ = [
    "build_action_tree",
    "build_plan",
    "build_timeline",
    "derive_agent_status",
    "derive_task_status",
    "llm_totals",
]

_TERMINAL = ("task_completed", "task_failed")
_ACTION_TYPES = ("action_started", "action_completed", "action_failed")


def derive_task_status(event_types: set[str]) -> str:
    """HiveBoard's task status cascade.

    ``completed`` if any task_completed, else ``failed`` if any task_failed, else
    ``escalated`` if any escalated, else ``waiting`` if an approval was requested and none
    received, else ``processing``.
    """
    if "task_completed" in event_types:
        return "completed"
    if "task_failed" in event_types:
        return "failed"
    if "escalated" in event_types:
        return "escalated"
    if "approval_requested" in event_types and "approval_received" not in event_types:
        return "waiting"
    return "processing"


def _payload(event: dict[str, Any]) -> dict[str, Any] | None:
    payload = event.get("payload")
    return payload if isinstance(payload, dict) else None


def _number(value: Any) -> float | int:
    if type(value) is int or type(value) is float:
        return value
    return 0


def _as_int(value: float | int) -> float | int:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def llm_totals(events: list[dict[str, Any]]) -> tuple[float, int, float | int, float | int]:
    """Sum ``(total_cost, llm_call_count, tokens_in, tokens_out)`` over llm_call payloads."""
    cost = 0.0
    count = 0
    tokens_in: float | int = 0
    tokens_out: float | int = 0
    for event in events:
        payload = _payload(event)
        if payload is None or payload.get("kind") != "llm_call":
            continue
        data = payload.get("data", {})
        if not isinstance(data, dict):
            continue
        count += 1
        cost += _number(data.get("cost"))
        tokens_in += _number(data.get("tokens_in"))
        tokens_out += _number(data.get("tokens_out"))
    return cost, count, _as_int(tokens_in), _as_int(tokens_out)


def _action_name(payload: dict[str, Any] | None) -> Any:
    if payload is None:
        return None
    name = payload.get("action_name")
    if not name:
        data = payload.get("data", {})
        if isinstance(data, dict):
            name = data.get("action_name")
    if not name:
        name = payload.get("summary")
    return name


def build_action_tree(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest action events into ``{action_id, parent_action_id, name, status, duration_ms,
    events, children}`` nodes; roots are actions whose parent is null or unknown.

    :param events: stored events in timeline order.
    :return: the root nodes in order of first appearance (children likewise).
    """
    actions: dict[str, dict[str, Any]] = {}
    for event in events:
        event_type = event.get("event_type")
        action_id = event.get("action_id")
        if event_type not in _ACTION_TYPES or not action_id:
            continue
        node = actions.get(action_id)
        if node is None:
            node = actions[action_id] = {
                "action_id": action_id,
                "parent_action_id": event.get("parent_action_id"),
                "name": None,
                "status": None,
                "duration_ms": None,
                "events": [],
                "children": [],
            }
        elif node["parent_action_id"] is None and event.get("parent_action_id"):
            node["parent_action_id"] = event.get("parent_action_id")
        node["events"].append(event)
        payload = _payload(event)
        if event_type == "action_started":
            node["name"] = _action_name(payload)
        else:
            if node["name"] is None:
                node["name"] = _action_name(payload)
            default = "completed" if event_type == "action_completed" else "failed"
            node["status"] = event.get("status") or default
            node["duration_ms"] = event.get("duration_ms")
    roots: list[dict[str, Any]] = []
    for node in actions.values():
        parent = node["parent_action_id"]
        if parent and parent in actions and parent != node["action_id"]:
            actions[parent]["children"].append(node)
        else:
            roots.append(node)
    return roots


def build_plan(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The plan overlay: ``{goal, steps, progress: {completed, total}}`` or None.

    ``plan_created`` supplies the goal and steps; each ``plan_step`` records the latest
    ``action`` of its step (``started_at``/``completed_at`` are added to the step).
    ``total`` is the last integer ``data.total_steps`` seen, else the number of steps;
    ``completed`` counts distinct steps whose latest action is ``completed``.
    """
    steps: list[Any] = []
    goal: Any = None
    seen_plan = False
    total: int | None = None
    step_status: dict[Any, dict[str, Any]] = {}
    for event in events:
        payload = _payload(event)
        if payload is None:
            continue
        kind = payload.get("kind")
        data = payload.get("data", {})
        if not isinstance(data, dict):
            continue
        if kind == "plan_created":
            seen_plan = True
            raw_steps = data.get("steps", [])
            steps = copy.deepcopy(raw_steps) if isinstance(raw_steps, list) else []
            goal = payload.get("summary") or data.get("goal")
            total = len(steps)
        elif kind == "plan_step":
            seen_plan = True
            declared = data.get("total_steps")
            if type(declared) is int and declared >= 0:
                total = declared
            index = data.get("step_index")
            action = data.get("action")
            if isinstance(index, (int, str)) and not isinstance(index, bool) and action:
                entry = step_status.setdefault(index, {})
                entry["action"] = action
                if action == "completed":
                    entry["completed_at"] = event.get("timestamp")
                elif action == "started":
                    entry["started_at"] = event.get("timestamp")
    if not seen_plan:
        return None
    known = {
        step.get("index")
        for step in steps
        if isinstance(step, dict) and isinstance(step.get("index"), (int, str))
    }
    for step in steps:
        if not isinstance(step, dict):
            continue
        index = step.get("index")
        if isinstance(index, (int, str)) and index in step_status:
            step.update(step_status[index])
    for index in sorted(
        (i for i in step_status if i not in known), key=lambda i: (isinstance(i, str), str(i))
    ):
        steps.append({"index": index, "description": None, **step_status[index]})
    if total is None:
        total = len(steps)
    completed = sum(1 for entry in step_status.values() if entry.get("action") == "completed")
    return {"goal": goal, "steps": steps, "progress": {"completed": completed, "total": total}}


def _first_non_null(events: list[dict[str, Any]], key: str) -> Any:
    first = events[0].get(key)
    if first is not None:
        return first
    for event in events:
        value = event.get(key)
        if value is not None:
            return value
    return None


def build_timeline(
    task_id: str, events: list[dict[str, Any]], *, action_tree: bool = True
) -> dict[str, Any]:
    """Assemble the ``GET /v1/tasks/{task_id}/timeline`` answer.

    :param task_id: the task id.
    :param action_tree: False leaves ``action_tree`` empty (its nodes repeat every action
        event; the dashboard builds its own tree from ``events``).
    :param events: the task's stored events in timestamp order (ties in insertion order);
        must not be empty.
    :return: HiveBoard's timeline keys plus ``llm_call_count``, ``total_tokens_in`` and
        ``total_tokens_out``.
    """
    first = events[0]
    duration_ms = None
    completed_at = None
    for event in events:
        if event.get("event_type") in _TERMINAL:
            duration_ms = event.get("duration_ms")
            completed_at = event.get("timestamp")
    cost, llm_count, tokens_in, tokens_out = llm_totals(events)
    error_chains = [
        {
            "event_id": event.get("event_id"),
            "event_type": event.get("event_type"),
            "parent_event_id": event.get("parent_event_id"),
            "timestamp": event.get("timestamp"),
            "payload": event.get("payload"),
        }
        for event in events
        if event.get("event_type") in ("retry_started", "escalated")
        and event.get("parent_event_id")
    ]
    return {
        "task_id": task_id,
        "task_run_id": _first_non_null(events, "task_run_id"),
        "agent_id": first.get("agent_id"),
        "project_id": _first_non_null(events, "project_id"),
        "task_type": _first_non_null(events, "task_type"),
        "derived_status": derive_task_status({str(e.get("event_type")) for e in events}),
        "started_at": first.get("timestamp"),
        "completed_at": completed_at,
        "duration_ms": duration_ms,
        "total_cost": cost if cost > 0 else None,
        "llm_call_count": llm_count,
        "total_tokens_in": tokens_in,
        "total_tokens_out": tokens_out,
        "events": events,
        "action_tree": build_action_tree(events) if action_tree else [],
        "error_chains": error_chains,
        "plan": build_plan(events),
    }


def derive_agent_status(
    *,
    now: datetime,
    last_heartbeat_epoch: float | None,
    last_seen_epoch: float | None,
    last_event_type: str | None,
    stuck_threshold: int,
) -> str:
    """HiveBoard's agent status cascade: stuck > error > waiting_approval > processing > idle.

    The reference time is the last heartbeat, else the last event (client clocks); the agent
    is stuck when ``now`` is more than ``stuck_threshold`` seconds past it.
    """
    reference = last_heartbeat_epoch if last_heartbeat_epoch is not None else last_seen_epoch
    if reference is None or now.timestamp() - reference > stuck_threshold:
        return "stuck"
    if last_event_type in ("task_failed", "action_failed"):
        return "error"
    if last_event_type == "approval_requested":
        return "waiting_approval"
    if last_event_type in ("task_started", "action_started"):
        return "processing"
    return "idle"


def epoch_of(value: Any) -> float | None:
    """Epoch seconds of a timestamp string, or None when it cannot be parsed."""
    parsed = parse_timestamp(value)
    return parsed.timestamp() if parsed is not None else None
