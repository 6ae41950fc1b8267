"""Sampling by task, in the sender: whole trees are kept or dropped, never half of one.

The decision is made once per *root* task (a task not started inside another task): by
``sampler(TaskInfo)`` when given, else at random with probability ``sample_rate``. Every
event of the root, of its actions and LLM calls and of the tasks nested in it follows that
decision. With ``keep_failed`` (the default) the events of a sampled-out tree are held,
bounded, until its root ends: if it failed they are all sent, else all dropped.

Events outside any task follow the same rate: an action tree by its root action's id (so
start and end, parent and children agree), an agent-level LLM call on its own. Agent
lifecycle and health events (registration, heartbeats, queue snapshots, to-dos, scheduled
work, issues) are never sampled out: HiveBoard derives agent status from them.

Runs in the sender, never on the recording path; costs nothing when ``sample_rate`` is 1
and no ``sampler`` is given (the engine then has no :class:`TaskSampler`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

from ._internal import warn_once
from ._task import Task
from ._track import ActionScope

__all__ = ["TaskInfo", "TaskSampler"]

#: Held events of one sampled-out tree, at most; past it the tree is dropped whole.
MAX_HELD_PER_TASK = 2_000
#: Held events over all trees, at most; past it the oldest held tree is dropped whole.
MAX_HELD_TOTAL = 50_000

#: Decisions of roots still open, at most (a task that is never ended must not leak).
MAX_OPEN_ROOTS = 100_000

_IN, _OUT, _HOLD = 1, 0, 2
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


class TaskInfo(NamedTuple):
    """What a custom ``sampler`` is told about a root task when it starts."""

    agent_id: str
    task_id: str
    task_type: str | None
    project_id: str | None
    task_run_id: str
    correlation_id: str | None


def _root(task: Task) -> Task:
    while True:
        outer = task.outer_task
        if outer is None:
            return task
        task = outer


class TaskSampler:
    """The sender's sampling state; see the module docstring. Not thread-safe by design.

    :meth:`route` is called for every encoded event with its record; it returns the events
    to send now (possibly held ones of a failed tree) and how many it dropped.
    """

    def __init__(
        self,
        rate: float,
        sampler: Callable[[TaskInfo], bool] | None = None,
        *,
        keep_failed: bool = True,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.rate = rate
        self.sampler = sampler
        self.keep_failed = keep_failed
        self._rand = rand
        self._threshold = int(rate * (1 << 64))
        #: Root task -> its decision (weak would be nicer; cleared when the root ends).
        self._decided: dict[Task, int] = {}
        self._held: dict[Task, list[tuple[Any, bytes]]] = {}
        self._held_total = 0
        #: Roots that ended: their late events follow the final decision (bounded).
        self._ended: dict[Task, int] = {}

    # -- decisions ---------------------------------------------------------------------------

    def _decide(self, root: Task) -> int:
        decision = self._decided.get(root)
        if decision is None:
            decision = self._ended.get(root)
        if decision is not None:
            return decision
        keep = True
        if self.sampler is not None:
            try:
                keep = bool(
                    self.sampler(
                        TaskInfo(
                            root.agent.agent_id,
                            root.task_id,
                            root.task_type,
                            root.project_id,
                            root.task_run_id,
                            root.correlation_id,
                        )
                    )
                )
            except Exception as exc:
                warn_once(
                    "sampler-raised",
                    "hiveloop_async: the sampler raised %s; its tasks are kept",
                    type(exc).__name__,
                )
                keep = True
        else:
            keep = self._rand() < self.rate
        decision = _IN if keep else (_HOLD if self.keep_failed else _OUT)
        if len(self._decided) >= MAX_OPEN_ROOTS:  # roots that never end: forget the oldest
            oldest = next(iter(self._decided))
            del self._decided[oldest]
        self._decided[root] = decision
        return decision

    def _by_id(self, n: int) -> bool:
        """A stable, uniform choice from an integer id (start and end of one action agree)."""
        return ((n * _GOLDEN) & _MASK64) < self._threshold

    # -- routing -----------------------------------------------------------------------------

    def route(
        self, rec: Any, closing: bool, agent: Any, data: bytes
    ) -> tuple[list[tuple[Any, bytes]], int]:
        """Decide one encoded event. Returns ``(to_send, dropped)``.

        ``rec`` is the queued record, ``closing`` whether ``data`` is its closing event (for
        a task or action record). ``to_send`` may hold earlier held events too, in order.
        """
        kind = type(rec)
        if kind is Task:
            task: Task | None = rec
        elif kind is ActionScope:
            task = rec.task
        elif kind is tuple:
            task = rec[3]
        else:
            return [(agent, data)], 0
        if task is None:
            return self._agent_level(rec, kind, agent, data)
        root = _root(task)
        decision = self._decide(root)
        ends_root = kind is Task and rec is root and closing
        if decision == _IN:
            if ends_root:
                self._end(root, _IN)
            return [(agent, data)], 0
        if decision == _OUT:
            if ends_root:
                self._end(root, _OUT)
            return [], 1
        # _HOLD: keep until the root ends.
        held = self._held.setdefault(root, [])
        held.append((agent, data))
        self._held_total += 1
        dropped = 0
        if len(held) > MAX_HELD_PER_TASK:
            dropped += self._give_up(root)
        while self._held_total > MAX_HELD_TOTAL and self._held:
            dropped += self._give_up(next(iter(self._held)))
        if ends_root:
            events = self._held.pop(root, [])
            self._held_total -= len(events)
            if root.failed:
                self._end(root, _IN)
                return events, dropped
            self._end(root, _OUT)
            return [], dropped + len(events)
        return [], dropped

    def _give_up(self, root: Task) -> int:
        """Drop a held tree whole (too big to hold): its later events are dropped too."""
        events = self._held.pop(root, [])
        self._held_total -= len(events)
        self._decided[root] = _OUT
        return len(events)

    def _end(self, root: Task, final: int) -> None:
        self._decided.pop(root, None)
        self._ended[root] = final
        while len(self._ended) > 10_000:
            del self._ended[next(iter(self._ended))]

    def _agent_level(
        self, rec: Any, kind: type, agent: Any, data: bytes
    ) -> tuple[list[tuple[Any, bytes]], int]:
        if kind is ActionScope:
            top = rec
            while top.parent is not None:
                top = top.parent
            keep = self._by_id(top.action_id)
        else:
            payload = rec[5]
            is_llm = rec[2] == "custom" and isinstance(payload, dict)
            if not is_llm or payload.get("kind") != "llm_call":
                return [(agent, data)], 0  # lifecycle and health events are never sampled
            keep = self._rand() < self.rate
        return ([(agent, data)], 0) if keep else ([], 1)

    def release_held(self) -> int:
        """Forget every held event (the sender stops); returns how many were held."""
        n = self._held_total
        self._held.clear()
        self._held_total = 0
        return n
