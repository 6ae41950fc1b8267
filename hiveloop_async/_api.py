"""Module-level API: the ``init()`` singleton, and the "current" helpers.

Mirrors hiveloop 0.2.0's ``init/shutdown/reset/flush``, with one fix: after ``shutdown()``
a new ``init()`` starts a fresh client instead of returning the dead one.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from ._agent import Agent
from ._client import FlushResult, HiveBoard
from ._context import current_scope
from ._internal import logger
from ._task import Task
from ._track import ActionScope, live_scope, track_function

_F = TypeVar("_F", bound=Callable[..., Any])

_instance: HiveBoard | None = None
_instance_lock = threading.Lock()


def init(
    api_key: str | None = None,
    environment: str | None = None,
    group: str | None = None,
    endpoint: str | None = None,
    flush_interval: float | None = None,
    batch_size: int | None = None,
    max_queue_size: int | None = None,
    debug: bool | None = None,
    **options: Any,
) -> HiveBoard:
    """Create the process-wide client, or return the existing one.

    A second call while the client is alive logs a warning and returns it unchanged (as
    hiveloop 0.2.0). After ``shutdown()`` it creates a fresh client. Keyword ``options`` are
    passed to :class:`HiveBoard` (``enabled``, ``shutdown_timeout``, ...). Does no I/O;
    raises :class:`HiveLoopConfigError` for a missing or malformed key.
    """
    global _instance
    with _instance_lock:
        if _instance is not None and not _instance.closed:
            logger.warning("hiveloop_async.init() called again; returning the existing client")
            return _instance
        _instance = HiveBoard(
            api_key,
            endpoint=endpoint,
            environment=environment,
            group=group,
            flush_interval=flush_interval,
            batch_size=batch_size,
            max_queue_size=max_queue_size,
            debug=debug,
            **options,
        )
        return _instance


def get_client() -> HiveBoard | None:
    """The client created by :func:`init`, or None."""
    return _instance


def shutdown(timeout: float | None = None) -> FlushResult | None:
    """Shut the ``init()`` client down (blocking, bounded by ``timeout``). Never raises."""
    client = _instance
    return client.shutdown(timeout) if client is not None else None


def reset() -> None:
    """Shut the ``init()`` client down and forget it. Never raises."""
    global _instance
    with _instance_lock:
        client, _instance = _instance, None
    if client is not None:
        client.shutdown()


def flush(timeout: float | None = None) -> FlushResult | None:
    """Block until the ``init()`` client delivered what was recorded before. Never raises."""
    client = _instance
    return client.flush(timeout) if client is not None else None


def current_task() -> Task | None:
    """The task open in this context (innermost), or None. Never raises."""
    cur = live_scope(current_scope.get())
    if cur is None:
        return None
    if type(cur) is ActionScope:
        return cur.task
    return cur  # type: ignore[no-any-return]


def current_agent() -> Agent | None:
    """The agent of the innermost task or action open in this context, or None."""
    cur = live_scope(current_scope.get())
    return cur.agent if cur is not None else None


def current_action_id() -> str | None:
    """The wire id (uuid4 string) of the innermost open action, or None."""
    cur = live_scope(current_scope.get())
    if type(cur) is ActionScope:
        return cur.action_id_str
    return None


class UntrackedScope:
    """What module-level ``track_context`` returns with no current agent: runs the block.

    Has the same protocol as :class:`ActionScope` (``with``, ``async with``,
    ``set_payload``, ``action_id_str``, ``closed``) and records nothing. Never raises.
    """

    __slots__ = ()

    def __enter__(self) -> UntrackedScope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> UntrackedScope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def set_payload(self, payload: Mapping[str, Any]) -> None:
        """Ignored: nothing is tracked."""

    @property
    def action_id_str(self) -> None:
        """Always None: there is no action."""
        return None

    @property
    def closed(self) -> bool:
        """Always False: the stand-in is reusable."""
        return False


_UNTRACKED = UntrackedScope()


def track_context(action_name: str) -> ActionScope | UntrackedScope:
    """Track a block under the current agent (``with`` or ``async with``).

    With no task or action open in this context it returns a stand-in that just runs the
    block and ignores ``set_payload``. Never raises.
    """
    agent = current_agent()
    if agent is None:
        return _UNTRACKED
    return ActionScope(agent, action_name)


def track(action_name: str) -> Callable[[_F], _F]:
    """Decorator: track each call under the agent current at call time (none: run plainly).

    Works on sync and async functions and generators like ``agent.track``.
    """

    def decorate(fn: _F) -> _F:
        cache: dict[int, Any] = {}

        def for_agent(agent: Agent) -> Any:
            wrapped = cache.get(id(agent))
            if wrapped is None or wrapped[0] is not agent:
                wrapped = cache[id(agent)] = (agent, track_function(agent, action_name, fn))
            return wrapped[1]

        if inspect.iscoroutinefunction(fn) and not inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                agent = current_agent()
                if agent is None:
                    return await fn(*args, **kwargs)
                return await for_agent(agent)(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            agent = current_agent()
            if agent is None:
                return fn(*args, **kwargs)
            return for_agent(agent)(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate
