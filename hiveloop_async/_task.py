"""Tasks: one scope class for ``with``, ``async with``, ``start_task()`` and manual calls.

Entering a task records ``task_started`` and makes the task (and its agent) current for
everything below it, in this context only. Leaving records ``task_completed`` or
``task_failed`` and restores whatever was current before, so nested tasks restore the outer
one. Recording never blocks, awaits or raises.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._context import current_scope
from ._exceptions import HiveLoopUsageError
from ._ids import new_id_str, now_ns
from ._internal import internal_error
from ._payloads import (
    approval_received_payload,
    approval_requested_payload,
    escalated_payload,
    plan_payload,
    plan_step_payload,
    retry_started_payload,
)
from ._recording import Recorder, emit_task_event
from ._track import ActionScope, _restore_foreign, exception_message, live_scope

if TYPE_CHECKING:
    from ._agent import Agent

_NEW, _OPEN, _CLOSED = 0, 1, 2


class Task(Recorder):
    """One run of an agent task. Created by ``agent.task(...)`` or ``agent.start_task(...)``.

    Public attributes (as in hiveloop 0.2.0): ``task_id``, ``project_id``, ``task_type``,
    ``task_run_id``, ``correlation_id`` and ``agent``.

    Use it as ``with`` or ``async with`` (one implementation serves both), through manual
    ``__enter__()`` / ``__exit__()``, or through ``start_task()`` then ``complete()`` /
    ``fail()``. Only the first ``complete``, ``fail`` or exit records the closing event.
    No method blocks, awaits or raises (except :class:`HiveLoopUsageError` when entered
    twice). ``event`` and ``llm_call`` are shared with :class:`Agent` (see ``_recording``);
    here they record into this task and the action open in this context.
    """

    exc_type: builtins.type[BaseException] | None

    __slots__ = (
        "_fields",
        "_plan_revision",
        "_plan_total",
        "_prev",
        "_state",
        "_token",
        "agent",
        "correlation_id",
        "exc_msg",
        "exc_type",
        "failed",
        "opened",
        "payload",
        "project_id",
        "start_payload",
        "status",
        "t0",
        "t1",
        "task_id",
        "task_run_id",
        "task_type",
    )

    def __init__(
        self,
        agent: Agent,
        task_id: str,
        project: str | None = None,
        type: str | None = None,
        task_run_id: str | None = None,
        correlation_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.task_id = task_id
        self.project_id = project
        self.task_type = type
        self.task_run_id = task_run_id if task_run_id is not None else new_id_str()
        self.correlation_id = correlation_id
        self.status: str | None = None
        self.payload: Any = None
        #: Merged into ``task_started``'s payload (read when the event is sent).
        self.start_payload = payload
        self.failed = False
        self._prev: Any = None
        self.t0 = self.t1 = 0
        self.exc_type = None
        self.exc_msg = ""
        self._plan_total: int | None = None
        self._plan_revision = 0
        self._fields: str | None = None  # wire fields as JSON, cached by the serializer
        self._token: Any = None
        self._state = _NEW
        #: Set once the opening event was taken (encoded or discarded); see ``_queue``.
        self.opened = False

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self) -> None:
        if self._state != _NEW:
            raise HiveLoopUsageError(f"task {self.task_id!r} was already started")
        self._state = _OPEN
        self._prev = live_scope(current_scope.get())
        self.t0 = now_ns()
        self._token = current_scope.set(self)
        self.agent._route.put(self)

    def _end(
        self,
        status: str,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        payload: Any = None,
        *,
        failed: bool = False,
    ) -> None:
        """Record the closing event once, then restore the context the task was entered in."""
        try:
            if self._state == _OPEN:
                self._state = _CLOSED
                self.t1 = now_ns()
                self.status = status
                self.failed = failed
                self.exc_type = exc_type
                self.exc_msg = exception_message(exc)
                if payload:
                    self.payload = payload
                self.agent._route.put(self)
            token = self._token
            if token is not None:
                self._token = None
                try:
                    current_scope.reset(token)
                except ValueError:
                    _restore_foreign(self, token)
                else:
                    if self._prev is not None and self._prev._state == _CLOSED:
                        current_scope.set(live_scope(self._prev))
        except Exception:
            internal_error("task end")

    def __enter__(self) -> Task:
        try:
            self._start()
        except HiveLoopUsageError:
            raise
        except Exception:
            internal_error("task enter")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._end("success", None, None)
        else:
            self._end("failure", exc_type, exc, failed=True)

    async def __aenter__(self) -> Task:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @property
    def outer_task(self) -> Task | None:
        """The task this one was started inside (directly or under one of its actions)."""
        outer = self._prev
        if type(outer) is ActionScope:
            return outer.task
        return outer  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        """True once the task recorded its closing event."""
        return self._state == _CLOSED

    def complete(self, status: str = "success", payload: Mapping[str, Any] | None = None) -> None:
        """Record ``task_completed`` with ``status`` (sent verbatim). Never raises.

        ``payload``, when truthy, replaces what :meth:`set_payload` stored. Only the first
        ``complete``/``fail`` records an event; the task stops being current here.
        """
        self._end(status, None, None, payload)

    def fail(
        self, exception: BaseException | None = None, payload: Mapping[str, Any] | None = None
    ) -> None:
        """Record ``task_failed``; with ``exception``, its type and message. Never raises."""
        exc_type = type(exception) if exception is not None else None
        self._end("failure", exc_type, exception, payload, failed=True)

    def set_payload(self, payload: Mapping[str, Any]) -> None:
        """Replace the data merged into the closing event's payload. Never raises.

        The mapping is read when the event is sent: do not change it after the task ends.
        """
        if self._state != _CLOSED:
            self.payload = payload

    # -- events inside the task (event and llm_call come from Recorder) ---------------------

    _emit = emit_task_event

    def plan(self, goal: str, steps: list[str], *, revision: int = 0) -> None:
        """Record the task's plan (``plan_created``). Never raises."""
        try:
            self._plan_total = len(steps)
            self._plan_revision = revision
            payload = plan_payload(goal, steps, revision)
        except Exception:
            internal_error("plan")
            return
        self._emit("custom", payload)

    def plan_step(
        self,
        step_index: int,
        action: str,
        summary: str,
        *,
        total_steps: int | None = None,
        turns: int | None = None,
        tokens: int | None = None,
        plan_revision: int | None = None,
    ) -> None:
        """Record progress on one plan step (``plan_step``). Never raises.

        ``total_steps`` and ``plan_revision`` default to those of the task's last plan.
        """
        self._emit(
            "custom",
            plan_step_payload(
                step_index,
                action,
                summary,
                total_steps if total_steps is not None else self._plan_total,
                plan_revision if plan_revision is not None else self._plan_revision,
                turns,
                tokens,
            ),
        )

    def escalate(
        self,
        summary: str | None = None,
        *,
        assigned_to: str | None = None,
        reason: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        """Record ``escalated``. ``summary`` may be omitted when ``reason`` is given."""
        self._emit(
            "escalated",
            escalated_payload(summary, assigned_to, reason),
            parent_event_id=parent_event_id,
        )

    def request_approval(
        self,
        summary: str | None = None,
        *,
        approver: str | None = None,
        reason: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        """Record ``approval_requested``. ``summary`` may be omitted (spec form)."""
        self._emit(
            "approval_requested",
            approval_requested_payload(summary, approver, reason),
            parent_event_id=parent_event_id,
        )

    def approval_received(
        self,
        summary: str | None = None,
        *,
        approved_by: str | None = None,
        decision: str = "approved",
        parent_event_id: str | None = None,
    ) -> None:
        """Record ``approval_received``. ``summary`` may be omitted (spec form)."""
        self._emit(
            "approval_received",
            approval_received_payload(summary, approved_by, decision),
            parent_event_id=parent_event_id,
        )

    def retry(
        self,
        summary: str | None = None,
        *,
        attempt: int | None = None,
        reason: str | None = None,
        backoff_seconds: float | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        """Record ``retry_started``. ``summary`` may be omitted (spec form)."""
        self._emit(
            "retry_started",
            retry_started_payload(summary, attempt, reason, backoff_seconds),
            parent_event_id=parent_event_id,
        )

    @property
    def is_cancelled(self) -> bool:
        """True when the task ended with a cancellation."""
        return self.exc_type is not None and issubclass(self.exc_type, asyncio.CancelledError)

    def __repr__(self) -> str:
        state = ("new", "open", "closed")[self._state]
        return f"<Task {self.task_id!r} agent={self.agent.agent_id!r} {state}>"
