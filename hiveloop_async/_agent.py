"""Agents: the handle that records actions, tasks and agent-level events.

An ``Agent`` belongs to one :class:`~hiveloop_async.HiveBoard` client and is created by
``hb.agent(...)``. Every method records into the client's queue and returns at once: no
I/O, no awaiting, never raising (except :class:`HiveLoopUsageError` for misuse).
"""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._ids import now_ns
from ._internal import internal_error
from ._payloads import llm_payload, queue_summary
from ._task import Task
from ._track import ActionScope, track_function
from ._version import SDK_VERSION

if TYPE_CHECKING:
    from ._client import HiveBoard

_F = TypeVar("_F", bound=Callable[..., Any])

#: ``heartbeat_payload`` and ``queue_provider`` may be sync or async callables.
HeartbeatCallback = Callable[[], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]

_RUNTIME = f"python-{platform.python_version()}"


class Agent:
    """One agent's handle. Create it with ``hb.agent(agent_id, ...)``.

    Public attributes: ``agent_id``, ``agent_type``, ``version``, ``framework``,
    ``heartbeat_interval``, ``stuck_threshold``, ``heartbeat_payload``, ``queue_provider``.
    """

    __slots__ = (
        "__weakref__",
        "_client",
        "_heartbeat_stopped",
        "_route",
        "agent_id",
        "agent_type",
        "envelope",
        "framework",
        "heartbeat_interval",
        "heartbeat_payload",
        "queue_provider",
        "stuck_threshold",
        "version",
    )

    def __init__(
        self,
        client: HiveBoard,
        agent_id: str,
        type: str = "general",
        version: str | None = None,
        framework: str = "custom",
        heartbeat_interval: float = 30.0,
        stuck_threshold: int = 300,
        heartbeat_payload: HeartbeatCallback | None = None,
        queue_provider: HeartbeatCallback | None = None,
    ) -> None:
        self._client = client
        self._route = client._route
        self.agent_id = agent_id
        self.agent_type = type
        self.version = version
        self.framework = framework
        self.heartbeat_interval = heartbeat_interval
        self.stuck_threshold = stuck_threshold
        self.heartbeat_payload = heartbeat_payload
        self.queue_provider = queue_provider
        self._heartbeat_stopped = False
        self.envelope: dict[str, Any] = {}
        self._update_envelope()

    def _update_envelope(self) -> None:
        c = self._client
        self.envelope = {
            "agent_id": self.agent_id,
            "agent_type": self.agent_type,
            "agent_version": self.version,
            "framework": self.framework,
            "runtime": _RUNTIME,
            "sdk_version": SDK_VERSION,
            "environment": c.environment,
            "group": c.group,
        }

    def _emit(
        self,
        event_type: str,
        payload: dict[str, Any] | None,
        severity: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        try:
            self._route.put(
                (self, now_ns(), event_type, None, None, payload, severity, parent_event_id)
            )
        except Exception:
            internal_error("agent event")

    # -- tasks -----------------------------------------------------------------------------------

    def task(
        self,
        task_id: str,
        project: str | None = None,
        type: str | None = None,
        task_run_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Task:
        """Return an unstarted :class:`Task`, for ``with`` or ``async with``. Never raises."""
        return Task(self, task_id, project, type, task_run_id, correlation_id)

    def start_task(
        self,
        task_id: str,
        project: str | None = None,
        type: str | None = None,
        task_run_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Task:
        """Start a task now (``task_started``) and make it current in this context.

        End it with ``task.complete()`` or ``task.fail()``. Never blocks or raises.
        """
        task = Task(self, task_id, project, type, task_run_id, correlation_id)
        try:
            task._start()
        except Exception:
            internal_error("start_task")
        return task

    # -- actions -----------------------------------------------------------------------------

    def track(self, action_name: str) -> Callable[[_F], _F]:
        """Decorator: each call of the function is one tracked action named ``action_name``.

        Works on sync functions, coroutine functions, generators and async generators; for
        the last three the action covers the whole await or iteration. ``functools.wraps``
        metadata is kept. The wrapper never raises anything but the function's own
        exceptions.
        """

        def decorate(fn: _F) -> _F:
            return track_function(self, action_name, fn)

        return decorate

    def track_context(self, action_name: str) -> ActionScope:
        """Return a scope that tracks one block as ``with`` or ``async with``.

        See :class:`ActionScope`. Creating it records nothing; entering does.
        """
        return ActionScope(self, action_name)

    # -- agent-level events -------------------------------------------------------------------

    def event(
        self,
        event_type: str,
        payload: dict[str, Any] | None = None,
        severity: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        """Record an agent-level event (no task fields). Never blocks or raises."""
        self._emit(event_type, payload, severity, parent_event_id)

    def llm_call(
        self,
        name: str,
        model: str,
        *,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cost: float | None = None,
        duration_ms: int | None = None,
        prompt_preview: str | None = None,
        response_preview: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record an agent-level LLM call (no task fields, as in HiveLoop's spec §12.4).

        Use ``task.llm_call`` to attach the call to a task and action. Never raises.
        """
        self._emit(
            "custom",
            llm_payload(
                name,
                model,
                tokens_in,
                tokens_out,
                cost,
                duration_ms,
                prompt_preview,
                response_preview,
                metadata,
            ),
        )

    def queue_snapshot(
        self,
        depth: int,
        *,
        oldest_age_seconds: float | None = None,
        items: list[Any] | None = None,
        processing: Any = None,
    ) -> None:
        """Record the agent's work queue (``custom`` / ``queue_snapshot``). Never raises."""
        data: dict[str, Any] = {"depth": depth}
        if oldest_age_seconds is not None:
            data["oldest_age_seconds"] = oldest_age_seconds
        if items is not None:
            data["items"] = items
        if processing is not None:
            data["processing"] = processing
        self._emit(
            "custom",
            {
                "kind": "queue_snapshot",
                "summary": queue_summary(depth, oldest_age_seconds),
                "data": data,
                "tags": ["queue"],
            },
        )

    def todo(
        self,
        todo_id: str,
        action: str,
        summary: str,
        *,
        priority: str | None = None,
        source: str | None = None,
        context: Any = None,
        due_by: str | None = None,
    ) -> None:
        """Record a to-do item change (``custom`` / ``todo``). Never raises."""
        data: dict[str, Any] = {"todo_id": todo_id, "action": action}
        for key, value in (
            ("priority", priority),
            ("source", source),
            ("context", context),
            ("due_by", due_by),
        ):
            if value is not None:
                data[key] = value
        self._emit(
            "custom",
            {"kind": "todo", "summary": summary, "data": data, "tags": ["todo", action]},
        )

    def scheduled(self, items: list[dict[str, Any]]) -> None:
        """Record the agent's scheduled work (``custom`` / ``scheduled``). Never raises."""
        try:
            summary = f"{len(items)} scheduled items"
            runs = [str(i["next_run"]) for i in items if isinstance(i, dict) and i.get("next_run")]
            if runs:
                first = min(runs)
                summary += f", next at {first.split('T', 1)[1] if 'T' in first else first}"
        except Exception:
            internal_error("scheduled")
            summary = "scheduled items"
        self._emit(
            "custom",
            {
                "kind": "scheduled",
                "summary": summary,
                "data": {"items": items},
                "tags": ["scheduled"],
            },
        )

    def report_issue(
        self,
        summary: str,
        severity: str,
        *,
        issue_id: str | None = None,
        category: str | None = None,
        context: Any = None,
        occurrence_count: int | None = None,
    ) -> None:
        """Report an agent issue (``custom`` / ``issue``, action ``reported``). Never raises."""
        data: dict[str, Any] = {"severity": severity, "action": "reported"}
        for key, value in (
            ("issue_id", issue_id),
            ("category", category),
            ("context", context),
            ("occurrence_count", occurrence_count),
        ):
            if value is not None:
                data[key] = value
        tags = ["issue", category] if category else ["issue"]
        self._emit("custom", {"kind": "issue", "summary": summary, "data": data, "tags": tags})

    def resolve_issue(self, summary: str, *, issue_id: str | None = None) -> None:
        """Mark an issue resolved (``custom`` / ``issue``, action ``resolved``). Never raises."""
        data: dict[str, Any] = {"severity": "low", "action": "resolved"}
        if issue_id is not None:
            data["issue_id"] = issue_id
        self._emit(
            "custom",
            {"kind": "issue", "summary": summary, "data": data, "tags": ["issue", "resolved"]},
        )

    # -- heartbeats --------------------------------------------------------------------------

    def stop_heartbeat(self) -> None:
        """Stop this agent's heartbeats (HiveBoard then shows it offline). Never raises."""
        self._heartbeat_stopped = True

    def resume_heartbeat(self) -> None:
        """Undo :meth:`stop_heartbeat` (when ``heartbeat_interval`` is positive); heartbeats
        start again with the next sender. Never raises."""
        if self.heartbeat_interval > 0:
            self._heartbeat_stopped = False

    @property
    def heartbeat_stopped(self) -> bool:
        """True after :meth:`stop_heartbeat` or the client's shutdown."""
        return self._heartbeat_stopped

    def __repr__(self) -> str:
        return f"<Agent {self.agent_id!r} type={self.agent_type!r}>"
