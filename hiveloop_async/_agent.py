"""Agents: the handle that records actions, tasks and agent-level events.

An ``Agent`` belongs to one :class:`~hiveloop_async.HiveBoard` client and is created by
``hb.agent(...)``. Every method records into the client's queue and returns at once: no
I/O, no awaiting, never raising (except :class:`HiveLoopUsageError` for misuse).
"""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._internal import internal_error
from ._payloads import (
    SCHEDULED_FALLBACK_SUMMARY,
    issue_reported_payload,
    issue_resolved_payload,
    queue_snapshot_data,
    queue_snapshot_payload,
    scheduled_payload,
    scheduled_summary,
    todo_payload,
)
from ._recording import Recorder, emit_agent_event
from ._task import Task
from ._track import ActionScope, track_function
from ._version import SDK_VERSION

if TYPE_CHECKING:
    from ._client import HiveBoard

_F = TypeVar("_F", bound=Callable[..., Any])

#: ``heartbeat_payload`` and ``queue_provider`` may be sync or async callables.
HeartbeatCallback = Callable[[], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]

_RUNTIME = f"python-{platform.python_version()}"


class Agent(Recorder):
    """One agent's handle. Create it with ``hb.agent(agent_id, ...)``.

    Public attributes: ``agent_id``, ``agent_type``, ``version``, ``framework``,
    ``heartbeat_interval``, ``stuck_threshold``, ``heartbeat_payload``, ``queue_provider``.
    ``event`` and ``llm_call`` are shared with :class:`Task` (see ``_recording``); here they
    record agent-level events, with no task fields.
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

    def _update_from(self, newer: Agent) -> None:
        """Take ``newer``'s type, version, framework and callbacks (not its interval or
        stuck threshold): what ``hb.agent()`` does for an id it already knows."""
        self.agent_type = newer.agent_type
        self.version = newer.version
        self.framework = newer.framework
        self.heartbeat_payload = newer.heartbeat_payload
        self.queue_provider = newer.queue_provider
        self._update_envelope()

    _emit = emit_agent_event

    # -- tasks -----------------------------------------------------------------------------------

    def task(
        self,
        task_id: str,
        project: str | None = None,
        type: str | None = None,
        task_run_id: str | None = None,
        correlation_id: str | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
    ) -> Task:
        """Return an unstarted :class:`Task`, for ``with`` or ``async with``. Never raises.

        ``payload`` (keyword only, an addition to hiveloop 0.2.0) is merged into the
        ``task_started`` event's payload; it is read when the event is sent.
        """
        return Task(self, task_id, project, type, task_run_id, correlation_id, payload)

    def start_task(
        self,
        task_id: str,
        project: str | None = None,
        type: str | None = None,
        task_run_id: str | None = None,
        correlation_id: str | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
    ) -> Task:
        """Start a task now (``task_started``) and make it current in this context.

        End it with ``task.complete()`` or ``task.fail()``. ``payload`` as in :meth:`task`.
        Never blocks or raises.
        """
        task = Task(self, task_id, project, type, task_run_id, correlation_id, payload)
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

    def queue_snapshot(
        self,
        depth: int,
        *,
        oldest_age_seconds: float | None = None,
        items: list[Any] | None = None,
        processing: Any = None,
    ) -> None:
        """Record the agent's work queue (``custom`` / ``queue_snapshot``). Never raises."""
        data = queue_snapshot_data(depth, oldest_age_seconds, items, processing)
        self._emit("custom", queue_snapshot_payload(data))

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
        self._emit(
            "custom", todo_payload(todo_id, action, summary, priority, source, context, due_by)
        )

    def scheduled(self, items: list[dict[str, Any]]) -> None:
        """Record the agent's scheduled work (``custom`` / ``scheduled``). Never raises."""
        try:
            summary = scheduled_summary(items)
        except Exception:
            internal_error("scheduled")
            summary = SCHEDULED_FALLBACK_SUMMARY
        self._emit("custom", scheduled_payload(items, summary))

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
        self._emit(
            "custom",
            issue_reported_payload(
                summary, severity, issue_id, category, context, occurrence_count
            ),
        )

    def resolve_issue(self, summary: str, *, issue_id: str | None = None) -> None:
        """Mark an issue resolved (``custom`` / ``issue``, action ``resolved``). Never raises."""
        self._emit("custom", issue_resolved_payload(summary, issue_id))

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
