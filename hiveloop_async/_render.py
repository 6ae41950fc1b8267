"""Terminal views of the local server's answers, drawn like HiveBoard's dashboard.

Pure functions: they take the JSON the read endpoints return (``/v1/tasks``,
``/v1/tasks/{id}/timeline``, ``/v1/events``) and return text. They never do I/O, never look
at the environment or the clock (the caller passes ``now``), and never raise for missing or
oddly typed fields. ANSI colors are added only when ``color=True``.

Node kinds in a timeline (user manual part 8, §5):

* ``■ name LLM`` (purple): a ``custom`` event whose ``payload.kind`` is ``llm_call``;
* ``● name`` (blue): a tracked action, nested under its parent action with ``├──``/``└──``;
* ``✖ name`` (red): a failed action or task, followed by ``exception_type: message``;
* ``◇ event_type`` (yellow): an escalation, retry or approval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "format_cost",
    "format_duration",
    "format_relative",
    "render_event_line",
    "render_task_table",
    "render_timeline",
]

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_BLUE = "\x1b[34m"
_PURPLE = "\x1b[35m"

_NOTABLE = ("escalated", "retry_started", "approval_requested", "approval_received")
_STATUS_BADGES: dict[str, tuple[str, str]] = {
    "completed": ("✔ completed", _GREEN),
    "failed": ("✖ failed", _RED),
    "escalated": ("▲ escalated", _YELLOW),
    "waiting": ("⏸ waiting", _YELLOW),
    "processing": ("◌ processing", _BLUE),
}


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and code and text else text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def format_duration(ms: Any) -> str:
    """Format milliseconds like the dashboard: ``0.8s``, ``12.4s``, ``350ms``, ``3m 07s``.

    Under a second, a whole number of tenths reads as seconds (``800`` → ``0.8s``, as in the
    manual's pictures) and anything else as milliseconds (``350`` → ``350ms``); from one
    second on, seconds with one decimal; from a minute on, minutes and seconds. Anything that
    is not a number gives ``—``.
    """
    value = _number(ms)
    if value is None:
        return "—"
    value = max(value, 0.0)
    if value < 1000:
        whole = round(value)
        if whole and whole % 100 == 0:
            return f"{whole / 1000:.1f}s"
        return f"{whole}ms"
    if value < 60_000:
        return f"{value / 1000:.1f}s"
    seconds = round(value / 1000)
    if seconds < 3600:
        minutes, seconds = divmod(seconds, 60)
        return f"{minutes}m {seconds:02d}s"
    hours, seconds = divmod(seconds, 3600)
    return f"{hours}h {seconds // 60:02d}m"


def format_cost(cost: Any) -> str:
    """Format a USD cost: ``$0.0042``, ``$1.5``; ``—`` when absent."""
    value = _number(cost)
    if value is None:
        return "—"
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return f"${text}"


def _parse(ts: Any) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_relative(ts: Any, now: datetime) -> str:
    """``just now``, ``42s ago``, ``5m ago``, ``3h ago``, ``2d ago`` (``ts`` vs ``now``).

    An unparseable timestamp is returned as given.
    """
    parsed = _parse(ts)
    if parsed is None:
        return str(ts) if ts is not None else "—"
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    age = (now - parsed).total_seconds()
    if age < 10:
        return "just now"
    if age < 60:
        return f"{int(age)}s ago"
    if age < 3600:
        return f"{int(age // 60)}m ago"
    if age < 86400:
        return f"{int(age // 3600)}h ago"
    return f"{int(age // 86400)}d ago"


def _clock(ts: Any) -> str:
    parsed = _parse(ts)
    if parsed is None:
        return str(ts) if ts else ""
    return parsed.strftime("%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}"


def _started(ts: Any) -> str:
    parsed = _parse(ts)
    if parsed is None:
        return str(ts) if ts else "—"
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value.replace("\r", "\\r").replace("\n", "\\n")
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _payload(event: Mapping[str, Any] | None) -> dict[str, Any]:
    payload = event.get("payload") if event else None
    return payload if isinstance(payload, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _exception(payload: Mapping[str, Any]) -> str:
    kind = _text(payload.get("exception_type"))
    message = _text(payload.get("exception_message"))
    if kind and message:
        return f"{kind}: {_value(message)}"
    if kind:
        return kind
    return _value(message) if message else ""


# --------------------------------------------------------------------------- timeline


@dataclass
class _Node:
    order: int
    title: str
    code: str
    whole_line: bool
    pairs: list[tuple[str, Any]]
    time: str
    children: list[_Node] = field(default_factory=list)


def _llm_node(event: Mapping[str, Any], order: int) -> _Node:
    payload = _payload(event)
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    name = _text(data.get("name")) or _text(payload.get("summary")) or "llm"
    parts = [f"■ {name} LLM"]
    model = _text(data.get("model"))
    if model:
        parts.append(model)
    tokens_in = _number(data.get("tokens_in"))
    tokens_out = _number(data.get("tokens_out"))
    if tokens_in is not None and tokens_out is not None:
        parts.append(f"{data['tokens_in']} in / {data['tokens_out']} out")
    elif tokens_in is not None:
        parts.append(f"{data['tokens_in']} in")
    elif tokens_out is not None:
        parts.append(f"{data['tokens_out']} out")
    if _number(data.get("cost")) is not None:
        parts.append(format_cost(data.get("cost")))
    if _number(data.get("duration_ms")) is not None:
        parts.append(format_duration(data.get("duration_ms")))
    pairs: list[tuple[str, Any]] = [("event", event.get("event_type"))]
    for key, value in data.items():
        if key == "duration_ms":
            pairs.append(("duration", format_duration(value)))
        else:
            pairs.append((key, value))
    pairs.extend((key, value) for key, value in payload.items() if key not in ("kind", "data"))
    return _Node(order, "  ".join(parts), _PURPLE, False, pairs, _clock(event.get("timestamp")))


def _action_node(node: Mapping[str, Any], order: int) -> _Node:
    events = [e for e in node.get("events") or [] if isinstance(e, dict)]
    closing = None
    for event in events:
        if event.get("event_type") in ("action_completed", "action_failed"):
            closing = event
    started = events[0] if events else {}
    name = _text(node.get("name")) or "(unnamed action)"
    duration = node.get("duration_ms")
    failed = closing is not None and closing.get("event_type") == "action_failed"
    source = closing if closing is not None else started
    payload = _payload(source)
    if closing is None:
        title = f"● {name}  running"
        status = "running"
    elif failed:
        title = f"✖ {name}  {format_duration(duration)}"
        problem = _exception(payload)
        if problem:
            title += f"  {problem}"
        status = _text(closing.get("status")) or "failure"
    else:
        title = f"● {name}  {format_duration(duration)}"
        status = _text(closing.get("status")) or "success"
    pairs: list[tuple[str, Any]] = [
        ("event", source.get("event_type") or "action_started"),
        ("action_name", name),
        ("duration", format_duration(duration)),
        ("status", status),
    ]
    pairs.extend((key, value) for key, value in payload.items() if key != "action_name")
    code = _RED if failed else _BLUE
    return _Node(order, title, code, failed, pairs, _clock(started.get("timestamp")))


def _task_failed_node(event: Mapping[str, Any], order: int) -> _Node:
    payload = _payload(event)
    problem = _exception(payload) or _value(payload.get("summary") or "")
    title = "✖ task failed" + (f"  {problem}" if problem else "")
    pairs: list[tuple[str, Any]] = [
        ("event", "task_failed"),
        ("duration", format_duration(event.get("duration_ms"))),
        ("status", event.get("status") or "failure"),
    ]
    pairs.extend(payload.items())
    return _Node(order, title, _RED, True, pairs, _clock(event.get("timestamp")))


def _notable_node(event: Mapping[str, Any], order: int) -> _Node:
    payload = _payload(event)
    summary = _value(payload.get("summary")) if payload.get("summary") is not None else ""
    title = f"◇ {event.get('event_type')}" + (f"  {summary}" if summary else "")
    pairs: list[tuple[str, Any]] = [("event", event.get("event_type"))]
    pairs.extend(payload.items())
    return _Node(order, title, _YELLOW, False, pairs, _clock(event.get("timestamp")))


def _delegation_node(event: Mapping[str, Any], order: int) -> _Node:
    payload = _payload(event)
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    agent = _text(data.get("subagent_id") or data.get("subagent_name")) or "?"
    title = f"⇢ delegated to {agent}  task {_text(data.get('sub_task_id')) or '?'}"
    pairs: list[tuple[str, Any]] = [("event", "custom"), ("kind", "delegation")]
    pairs.extend(data.items())
    return _Node(order, title, _BLUE, False, pairs, _clock(event.get("timestamp")))


def _caller_line(timeline: Mapping[str, Any]) -> str | None:
    """``⇠ called by AGENT  task TASK`` when the task was started by a trusted caller."""
    for event in timeline.get("events") or []:
        if isinstance(event, dict) and event.get("event_type") == "task_started":
            payload = _payload(event)
            task = _text(payload.get("caller_task_id"))
            if task:
                return f"  ⇠ called by {_text(payload.get('caller_agent_id')) or '?'}  task {task}"
    return None


def _timeline_nodes(timeline: Mapping[str, Any]) -> list[_Node]:
    events = [e for e in timeline.get("events") or [] if isinstance(e, dict)]
    position = {e.get("event_id"): i for i, e in reversed(list(enumerate(events)))}
    unknown = len(events)
    actions: dict[Any, _Node] = {}
    roots: list[_Node] = []

    def visit(raw: Any, parent: _Node | None) -> None:
        if not isinstance(raw, dict):
            return
        orders = [
            position.get(e.get("event_id"), unknown)
            for e in raw.get("events") or []
            if isinstance(e, dict)
        ]
        node = _action_node(raw, min(orders, default=unknown))
        actions[raw.get("action_id")] = node
        (parent.children if parent is not None else roots).append(node)
        for child in raw.get("children") or []:
            visit(child, node)

    for raw in timeline.get("action_tree") or []:
        visit(raw, None)

    for index, event in enumerate(events):
        event_type = event.get("event_type")
        kind = _payload(event).get("kind") if event_type == "custom" else None
        if kind == "llm_call":
            node = _llm_node(event, index)
        elif kind == "delegation":
            node = _delegation_node(event, index)
        elif event_type in _NOTABLE:
            node = _notable_node(event, index)
        elif event_type == "task_failed":
            node = _task_failed_node(event, index)
            roots.append(node)
            continue
        else:
            continue
        parent = actions.get(event.get("action_id")) if event.get("action_id") else None
        (parent.children if parent is not None else roots).append(node)

    def sort(nodes: list[_Node]) -> None:
        nodes.sort(key=lambda n: n.order)
        for n in nodes:
            sort(n.children)

    sort(roots)
    return roots


def _header(timeline: Mapping[str, Any], llm_count: int, color: bool) -> str:
    status = _text(timeline.get("derived_status")) or "processing"
    badge, code = _STATUS_BADGES.get(status, (status, ""))
    count = timeline.get("llm_call_count")
    if not isinstance(count, int) or isinstance(count, bool):
        count = llm_count
    parts = [
        _paint("TIMELINE", _BOLD, color),
        _text(timeline.get("task_id")),
        f"⏱ {format_duration(timeline.get('duration_ms'))}",
        f"🤖 {_text(timeline.get('agent_id')) or '—'}",
        _paint(badge, code, color),
        f"◆ {count} LLM",
    ]
    return "  ".join(parts)


def _count_llm(nodes: Sequence[_Node]) -> int:
    return sum((n.code == _PURPLE) + _count_llm(n.children) for n in nodes)


def render_timeline(
    timeline: Mapping[str, Any], *, detail: bool = False, color: bool = False
) -> str:
    """Draw a ``GET /v1/tasks/{id}/timeline`` answer as the dashboard's timeline.

    :param timeline: the endpoint's JSON answer.
    :param detail: also print each node's detail panel (event, name, duration, status and
        every payload field, JSON for objects) under it, and its start time (UTC).
    :param color: add ANSI colors.
    :return: the text, ending without a newline.
    """
    nodes = _timeline_nodes(timeline)
    lines = [_header(timeline, _count_llm(nodes), color)]
    caller = _caller_line(timeline)
    if caller is not None:
        lines.append(_paint(caller, _DIM, color))
    lines.append("")
    if not nodes:
        lines.append("  (no actions or LLM calls recorded)")

    def draw(node: _Node, lead: str, last: bool, top: bool) -> None:
        if top:
            first, cont = lead, lead
        else:
            first = lead + ("└── " if last else "├── ")
            cont = lead + ("    " if last else "│   ")
        title = node.title + (f"  {node.time}" if detail and node.time else "")
        if node.whole_line:
            title = _paint(title, node.code, color)
        else:
            glyph_and_name, sep, rest = title.partition("  ")
            title = _paint(glyph_and_name, node.code, color) + sep + rest
        lines.append(first + title)
        if detail:
            gutter = cont + ("│ " if node.children else "  ")
            width = max(len(key) for key, _ in node.pairs) + 3
            for key, value in node.pairs:
                lines.append(gutter + _paint(key.ljust(width), _DIM, color) + _value(value))
        for i, child in enumerate(node.children):
            draw(child, cont, i == len(node.children) - 1, False)

    for node in nodes:
        draw(node, "  ", True, True)
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- task table

_COLUMNS = ("TASK", "STATUS", "AGENT", "STARTED", "DURATION", "LLM", "ACTIONS", "ERRORS", "COST")


def render_task_table(tasks: Sequence[Mapping[str, Any]], *, color: bool = False) -> str:
    """Draw ``GET /v1/tasks`` items as an aligned table (or ``No tasks found.``).

    :param tasks: the ``data`` list of the endpoint's answer.
    :param color: add ANSI colors to the status column and the header.
    """
    if not tasks:
        return "No tasks found."
    rows: list[tuple[list[str], str]] = []
    for task in tasks:
        status = _text(task.get("derived_status"))
        badge, code = _STATUS_BADGES.get(status, (status or "—", ""))
        cells = [
            _text(task.get("task_id")),
            badge,
            _text(task.get("agent_id")) or "—",
            _started(task.get("started_at")),
            format_duration(task.get("duration_ms")),
            _value(task.get("llm_call_count", 0)),
            _value(task.get("action_count", 0)),
            _value(task.get("error_count", 0)),
            format_cost(task.get("total_cost")),
        ]
        rows.append((cells, code))
    widths = [
        max(len(_COLUMNS[i]), *(len(cells[i]) for cells, _ in rows)) for i in range(len(_COLUMNS))
    ]
    lines = [
        "  ".join(_paint(h.ljust(w), _BOLD, color) for h, w in zip(_COLUMNS, widths, strict=True))
    ]
    for cells, code in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        padded[1] = _paint(padded[1], code, color)
        lines.append("  ".join(padded))
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- activity stream


def _event_detail(event: Mapping[str, Any]) -> str:
    payload = _payload(event)
    event_type = event.get("event_type")
    summary = _text(payload.get("summary"))
    if isinstance(event_type, str) and event_type.startswith("action_"):
        data = payload.get("data")
        name = _text(payload.get("action_name")) or (
            _text(data.get("action_name")) if isinstance(data, dict) else ""
        )
        name = name or summary
        problem = _exception(payload) if event_type == "action_failed" else ""
        return f"{name}: {problem}" if name and problem else name or problem
    if event_type == "task_failed":
        return _exception(payload) or summary
    if event_type == "custom":
        kind = _text(payload.get("kind"))
        return f"{kind}: {summary}" if kind and summary else kind or summary
    return summary


def render_event_line(event: Mapping[str, Any], *, now: datetime, color: bool = False) -> str:
    """One activity-stream line, as in the dashboard (user manual part 8, §5.5)::

        ● action_started     lead-qualifier > task-lead-4801      just now    (crm_search)

    :param event: a stored event as ``GET /v1/events`` returns it.
    :param now: the reference time for the relative age.
    :param color: add ANSI colors (blue actions, green tasks, purple LLM calls, red failures).
    """
    event_type = _text(event.get("event_type"))
    payload = _payload(event)
    if event_type == "custom" and payload.get("kind") == "llm_call":
        glyph, code = "■", _PURPLE
    elif event_type in ("task_failed", "action_failed") or event.get("severity") == "error":
        glyph, code = "✖", _RED
    elif event_type.startswith("action_"):
        glyph, code = "●", _BLUE
    elif event_type.startswith("task_"):
        glyph, code = "●", _GREEN
    elif event.get("severity") == "warn":
        glyph, code = "●", _YELLOW
    elif event_type == "heartbeat":
        glyph, code = "●", _DIM
    else:
        glyph, code = "●", ""
    source = _text(event.get("agent_id")) or "—"
    if event.get("task_id"):
        source += f" > {_text(event.get('task_id'))}"
    when = format_relative(event.get("timestamp"), now)

    def pad(text: str, width: int) -> str:
        return text + " " * max(2, width - len(text))

    kind = event_type + " " * max(1, 19 - len(event_type))
    head = _paint(f"{glyph} {kind}", code, color)
    line = head + pad(source, 37) + pad(when, 12)
    detail = _event_detail(event)
    if detail:
        line += f"({detail})"
    return line.rstrip()
