"""The one ContextVar behind "current": the innermost open task or action scope.

Entering a task or a tracked action sets it and leaving restores it by token, so concurrent
asyncio tasks and threads each see their own chain. Child tasks (``asyncio.create_task``,
anyio ``start_soon``) and threads started with ``asyncio.to_thread`` or
``anyio.to_thread.run_sync`` copy the context, so their work nests under the action that
spawned them. For executors that do not copy the context, wrap the callable with
:func:`hiveloop_async.bind_context`.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

#: The innermost open scope: a ``Task`` or an ``ActionScope``, or None.
current_scope: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "hiveloop_async.current_scope", default=None
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def bind_context(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Return ``fn`` bound to a copy of the caller's context.

    Use it to hand work to executors or threads that do not copy ``contextvars`` themselves
    (``ThreadPoolExecutor.submit``, ``loop.run_in_executor``), so the work nests under the
    current task and action. Does not block; never raises.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        # A copy per call: one Context object cannot be entered twice at the same time.
        return ctx.copy().run(fn, *args, **kwargs)

    return run
