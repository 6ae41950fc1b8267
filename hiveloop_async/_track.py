"""Tracked actions: one scope class behind ``with``, ``async with`` and ``@agent.track``.

``ActionScope`` records ``action_started`` when entered and ``action_completed`` or
``action_failed`` when left. Entering and leaving do no I/O, no formatting and never await,
so the same two methods serve the sync and the async protocol. The decorator wraps sync
functions, coroutine functions, generators and async generators; for the generator kinds the
action spans the whole iteration and is current only while the generator body runs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._context import current_scope
from ._events import format_id, next_id, now_ns
from ._exceptions import HiveLoopUsageError
from ._internal import internal_error, logger

if TYPE_CHECKING:
    from ._agent import Agent
    from ._task import Task

_F = TypeVar("_F", bound=Callable[..., Any])

_NEW, _OPEN, _CLOSED = 0, 1, 2

_get = current_scope.get
_set = current_scope.set
_reset = current_scope.reset


class ActionScope:
    """One tracked action. Returned by ``agent.track_context(name)``.

    Use it once, as ``with``, ``async with``, or with manual ``__enter__()`` /
    ``__exit__(None, None, None)``. Entering records ``action_started`` and makes the action
    current, so blocks opened inside become its children; leaving records
    ``action_completed`` (status ``success``) or, for any exception including
    ``CancelledError`` and ``KeyboardInterrupt``, ``action_failed`` with ``exception_type``
    and ``exception_message``. The exception is never swallowed. Neither call blocks, awaits
    or raises, except :class:`HiveLoopUsageError` when a scope is entered twice.
    """

    _token: contextvars.Token[Any] | None
    parent: ActionScope | None
    task: Task | None
    exc_type: type[BaseException] | None

    __slots__ = (
        "_sent",
        "_state",
        "_token",
        "action_id",
        "agent",
        "exc_msg",
        "exc_type",
        "function",
        "name",
        "parent",
        "payload",
        "t0",
        "t1",
        "task",
    )

    def __init__(self, agent: Agent, name: str, function: str | None = None) -> None:
        # Only what exists before entry; __enter__ and __exit__ set the rest.
        self.agent = agent
        self.name = name
        self.function = function
        self.payload: Any = None
        self._state = _NEW
        self._sent = False  # set by the sender once it encoded action_started

    # One implementation for every form: ``with`` and ``async with`` call these two, the
    # decorator uses ``with``, and the generator wrappers call them around the iteration.

    def __enter__(self) -> ActionScope:
        if self._state:
            raise HiveLoopUsageError(
                f"track_context({self.name!r}) was already entered; use a new one per block"
            )
        self._state = _OPEN
        try:
            cur = _get()
            if cur is not None and cur._state == _CLOSED:
                cur = live_scope(cur)  # closed elsewhere (another thread, out of order)
            if cur is None:
                self.parent = self.task = None
            elif type(cur) is ActionScope:
                self.parent = cur
                self.task = cur.task
            else:
                self.parent = None
                self.task = cur
            self.action_id = next_id()
            self._token = _set(self)
            self.t0 = now_ns()
            r = self.agent._route
            q = r.q
            if len(q) < r.wake_at:
                q.append(self)
            else:
                r.client._put_slow(self)
        except Exception:
            internal_error("action enter")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        t1 = now_ns()
        if self._state != _OPEN:
            return
        self._state = _CLOSED
        try:
            self.t1 = t1
            self.exc_type = exc_type
            if exc_type is not None:
                self.exc_msg = exception_message(exc)
            token = self._token
            if token is not None:
                self._token = None  # a kept Token holds 80 bytes and a GC-tracked object
                try:
                    _reset(token)
                except ValueError:
                    _restore_foreign(self, token)
                else:
                    prev = self.parent if self.parent is not None else self.task
                    if prev is not None and prev._state == _CLOSED:
                        _set(live_scope(prev))  # the enclosing scope ended first
            r = self.agent._route
            q = r.q
            if len(q) < r.wake_at:
                q.append(self)
            else:
                r.client._put_slow(self)
        except Exception:
            internal_error("action exit")

    async def __aenter__(self) -> ActionScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- data ------------------------------------------------------------------------------

    def set_payload(self, payload: Mapping[str, Any]) -> None:
        """Replace the data merged into the closing event. Never blocks or raises.

        The dict is read when the event is sent: do not change it after the block closes.
        Calls after the block has closed are ignored.
        """
        if self._state != _CLOSED:
            self.payload = payload

    @property
    def action_id_str(self) -> str | None:
        """The action id as sent on the wire (a uuid4 string), or None before entry."""
        return format_id(self.action_id) if self._state != _NEW else None

    def __repr__(self) -> str:
        state = ("new", "open", "closed")[self._state]
        return f"<ActionScope {self.name!r} {state}>"


def exception_message(exc: BaseException | None) -> str:
    """``str(exc)``, or a placeholder when the exception's ``__str__`` itself fails."""
    if exc is None:
        return ""
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def live_scope(scope: Any) -> Any:
    """The innermost scope still open, from ``scope`` outwards (None when all have closed)."""
    while scope is not None and scope._state == _CLOSED:
        if type(scope) is ActionScope:
            scope = scope.parent if scope.parent is not None else scope.task
        else:
            scope = scope._prev
    return scope


def _restore_foreign(scope: Task | ActionScope, token: Any) -> None:
    """Leave a scope from a context other than the one that entered it, without raising.

    Happens when a manually entered scope is closed from another task or thread. The
    entering context keeps its own value; here we only undo our mark if it is visible.
    """
    logger.debug("hiveloop_async: %r left from another context than it was entered in", scope)
    if _get() is scope:
        old = token.old_value
        _set(live_scope(None if old is token.MISSING else old))


# -- the decorator ------------------------------------------------------------------------


def track_function(agent: Agent, action_name: str, fn: _F) -> _F:
    """Wrap ``fn`` so each call (or each whole iteration) is one tracked action.

    Generator and async-generator functions stay generator functions (``inspect`` still
    recognizes them), and their action is current only inside the generator body, in a
    context of its own that lives across ``yield``: blocks the body opens stay open across
    its yields, and nothing leaks into the consumer's context.
    """
    function = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = ActionScope(agent, action_name, function)
            agen = fn(*args, **kwargs)
            ctx = _start_in_own_context(scope)
            send_value: Any = None
            throw: BaseException | None = None
            try:
                while True:
                    if throw is not None:
                        exc, throw = throw, None
                        value = await _InContext(ctx, agen.athrow(exc))
                    else:
                        value = await _InContext(ctx, agen.asend(send_value))
                    try:
                        send_value = yield value
                    except GeneratorExit:
                        await _InContext(ctx, agen.aclose())
                        raise
                    except BaseException as e:  # thrown in by the consumer: pass it on
                        throw = e
            except StopAsyncIteration:
                ctx.run(scope.__exit__, None, None, None)
            except BaseException as e:
                ctx.run(scope.__exit__, type(e), e, e.__traceback__)
                raise

    elif inspect.iscoroutinefunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            # What ``with`` does, spelled out: the explicit calls skip ``with``'s two
            # special-method lookups (about a tenth of the wrapper's cost).
            scope = ActionScope(agent, action_name, function)
            scope.__enter__()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as e:
                scope.__exit__(type(e), e, e.__traceback__)
                raise
            scope.__exit__(None, None, None)
            return result

    elif inspect.isgeneratorfunction(fn):

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = ActionScope(agent, action_name, function)
            return (yield from _traced_gen(scope, fn(*args, **kwargs)))

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = ActionScope(agent, action_name, function)
            scope.__enter__()
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                scope.__exit__(type(e), e, e.__traceback__)
                raise
            scope.__exit__(None, None, None)
            return result

    return cast(_F, functools.wraps(fn)(wrapper))


def _start_in_own_context(scope: ActionScope) -> contextvars.Context:
    """Enter ``scope`` in a copy of the current context, kept for the whole iteration."""
    ctx = contextvars.copy_context()
    ctx.run(scope.__enter__)
    return ctx


def _traced_gen(scope: ActionScope, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Drive ``gen`` step by step inside its own context, with ``scope`` current there."""
    ctx = _start_in_own_context(scope)
    send_value: Any = None
    throw: BaseException | None = None
    try:
        while True:
            if throw is not None:
                exc, throw = throw, None
                value = ctx.run(gen.throw, exc)
            else:
                value = ctx.run(gen.send, send_value)
            try:
                send_value = yield value
            except GeneratorExit:
                ctx.run(gen.close)
                raise
            except BaseException as e:  # thrown in by the consumer: pass it to the body
                throw = e
    except StopIteration as stop:
        ctx.run(scope.__exit__, None, None, None)
        return stop.value
    except BaseException as e:
        ctx.run(scope.__exit__, type(e), e, e.__traceback__)
        raise


class _InContext:
    """Await a coroutine with every one of its steps run inside ``ctx``.

    What ``asyncio.Task`` does for a task's own context, for one awaitable: each ``send`` or
    ``throw`` into the coroutine runs in ``ctx``, so context changes made by the coroutine
    stay in ``ctx`` across its suspensions.
    """

    __slots__ = ("_coro", "_ctx")

    def __init__(self, ctx: contextvars.Context, coro: Any) -> None:
        self._ctx = ctx
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        ctx, coro = self._ctx, self._coro
        send_value: Any = None
        throw: BaseException | None = None
        while True:
            try:
                if throw is not None:
                    exc, throw = throw, None
                    yielded = ctx.run(coro.throw, exc)
                else:
                    yielded = ctx.run(coro.send, send_value)
            except StopIteration as stop:
                return stop.value
            try:
                send_value = yield yielded
            except BaseException as e:  # cancellation and friends go to the coroutine
                throw = e
