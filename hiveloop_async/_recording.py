"""What agents and tasks record the same way: ``_emit``, ``event`` and ``llm_call``, once.

:class:`Recorder` is the base of :class:`~hiveloop_async.Agent` and
:class:`~hiveloop_async.Task`. One event record is the tuple the serializer reads
(``agent, ts, event_type, task, action_id, payload, severity, parent_event_id``): an agent's
events have no task fields, a task's have the task and the action open in this context.
Payloads come from ``_payloads``; the record goes on the client's queue with ``_put``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import current_scope
from ._ids import now_ns
from ._internal import internal_error
from ._payloads import llm_payload
from ._track import ActionScope, live_scope

if TYPE_CHECKING:
    from ._agent import Agent
    from ._task import Task


def emit_agent_event(
    agent: Agent,
    event_type: str,
    payload: dict[str, Any] | None,
    severity: str | None = None,
    parent_event_id: str | None = None,
) -> None:
    """``Agent._emit``: queue an agent-level event (no task, no action). Never raises."""
    try:
        agent._route.put(
            (agent, now_ns(), event_type, None, None, payload, severity, parent_event_id)
        )
    except Exception:
        internal_error("agent event")


def emit_task_event(
    task: Task,
    event_type: str,
    payload: dict[str, Any] | None,
    severity: str | None = None,
    parent_event_id: str | None = None,
) -> None:
    """``Task._emit``: queue an event of ``task``, in the action open now. Never raises."""
    try:
        cur = live_scope(current_scope.get())
        action_id = cur.action_id if type(cur) is ActionScope else None
        task.agent._route.put(
            (task.agent, now_ns(), event_type, task, action_id, payload, severity, parent_event_id)
        )
    except Exception:
        internal_error("task event")


class Recorder:
    """Base of ``Agent`` and ``Task``: ``event`` and ``llm_call`` on top of ``_emit``.

    ``Agent._emit`` is :func:`emit_agent_event` and ``Task._emit`` is
    :func:`emit_task_event`, assigned in the class bodies (plain functions, so a call costs
    what a method defined there would). Has no state (``__slots__ = ()``), so the subclasses
    keep their own ``__slots__``.
    """

    __slots__ = ()

    def _emit(
        self,
        event_type: str,
        payload: dict[str, Any] | None,
        severity: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        """Queue one event record. Never blocks or raises."""
        raise NotImplementedError  # pragma: no cover - Agent and Task assign theirs

    def event(
        self,
        event_type: str,
        payload: dict[str, Any] | None = None,
        severity: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        """Record an event of ``event_type``: on an agent, an agent-level event (no task
        fields); on a task, an event in this task, attached to the current action if any.

        An ``event_type`` that HiveBoard does not know is sent as ``custom`` with
        ``payload.original_type`` (as the spec promises). Never blocks or raises.
        """
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
        """Record an LLM call (``custom`` / ``llm_call``, a purple node).

        On a task it is attached to the task and to the current action if any; on an agent
        it carries no task fields (as in HiveLoop's spec §12.4). Never blocks or raises.
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
