"""The ``before_send`` hook: the application's last look at each event before it is sent.

``before_send=callable(event_dict) -> event_dict | None`` runs in the sender, once per event,
on the wire dict (the JSON object the server receives). It may return the same dict (changed
or not), a new dict, or None to drop the event. It may be a plain function or, since the
sender always runs on an asyncio loop (the application's or its own thread's), an ``async``
function (or any callable returning an awaitable).

A hook that raises (``Exception``; ``CancelledError``, ``KeyboardInterrupt`` and
``SystemExit`` pass through unchanged) or returns something other than a dict or None is
reported once per hook, by exception type only (never its message or a traceback: both may
quote the event, and so a secret), and the event is sent unchanged
(``on_error="send"``, the default) or dropped (``on_error="drop"``).

:class:`BeforeSend` keeps the counts the client reports: ``dropped`` (events the hook
dropped, or dropped because it failed with ``on_error="drop"``: the client counts both under
its ``before_send`` drop reason), ``errors`` and ``changed`` (a different dict returned).
It is meant to be driven by one sender task at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias

from ._exceptions import HiveLoopConfigError
from ._internal import logger

__all__ = ["BeforeSend", "BeforeSendCallback", "make_before_send"]

Event: TypeAlias = dict[str, Any]
BeforeSendCallback: TypeAlias = Callable[[Event], "Event | Awaitable[Event | None] | None"]
OnError: TypeAlias = Literal["send", "drop"]

_FAILED: Any = object()


class BeforeSend:
    """Runs a ``before_send`` callback over events; see the module docstring.

    :param callback: the user's callable.
    :param on_error: ``"send"`` (default) sends an event unchanged when the hook fails;
        ``"drop"`` drops it.
    :raises HiveLoopConfigError: if ``callback`` is not callable or ``on_error`` is invalid.
    """

    def __init__(self, callback: BeforeSendCallback, *, on_error: OnError = "send") -> None:
        if not callable(callback):
            raise HiveLoopConfigError("before_send must be a callable (or None)")
        if on_error not in ("send", "drop"):
            raise HiveLoopConfigError('before_send_errors must be "send" or "drop"')
        self.callback = callback
        self.on_error: OnError = on_error
        #: Whether the callback is known to be async (then only :meth:`arun` can run it).
        self.is_async = _is_async_callable(callback)
        self.dropped = 0
        self.errors = 0
        self.changed = 0
        self._reported = False

    # -- one event -----------------------------------------------------------------------

    def run(self, event: Event) -> Event | None:
        """Run the hook on ``event`` synchronously: the dict to send, or None to drop it.

        Blocks for as long as the callback does. An async callback cannot run here: its
        awaitable is closed and counted as a failure (use :meth:`arun`). Never raises
        ``Exception``.
        """
        try:
            result: Any = self.callback(event)
        except Exception as exc:
            return self._failed(event, type(exc).__name__)
        if inspect.isawaitable(result):
            _close(result)
            return self._failed(event, "an awaitable outside a loop")
        return self._result(event, result)

    async def arun(self, event: Event) -> Event | None:
        """Run the hook on ``event``, awaiting it if it is async. See :meth:`run`."""
        try:
            result: Any = self.callback(event)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            return self._failed(event, type(exc).__name__)
        return self._result(event, result)

    # -- a batch -------------------------------------------------------------------------

    async def apply(self, events: list[Event]) -> list[Event]:
        """Run the hook over ``events``; return those to send, in order.

        A sync callback runs without creating a coroutine per event. The number dropped is
        ``len(events) - len(result)`` (also added to :attr:`dropped`). Never raises
        ``Exception``; cancellation passes through.
        """
        out: list[Event] = []
        if self.is_async:
            for event in events:
                kept = await self.arun(event)
                if kept is not None:
                    out.append(kept)
            return out
        for event in events:
            try:
                result: Any = self.callback(event)
                if inspect.isawaitable(result):  # an async callable we could not tell apart
                    self.is_async = True
                    result = await result
            except Exception as exc:
                kept = self._failed(event, type(exc).__name__)
            else:
                kept = self._result(event, result)
            if kept is not None:
                out.append(kept)
        return out

    def stats(self) -> dict[str, int]:
        """``{"dropped", "errors", "changed"}``."""
        return {"dropped": self.dropped, "errors": self.errors, "changed": self.changed}

    # -- internals -----------------------------------------------------------------------

    def _result(self, event: Event, result: Any) -> Event | None:
        if result is None:
            self.dropped += 1
            return None
        if type(result) is not dict and not isinstance(result, dict):
            return self._failed(event, f"a {type(result).__name__} instead of a dict or None")
        if result is not event:
            self.changed += 1
        return result

    def _failed(self, event: Event, what: str) -> Event | None:
        self.errors += 1
        if not self._reported:
            self._reported = True
            name = getattr(self.callback, "__qualname__", None) or type(self.callback).__name__
            logger.warning(
                "hiveloop_async: before_send %s failed (%s); events are %s when it fails "
                "(logged once)",
                name,
                what,
                "sent unchanged" if self.on_error == "send" else "dropped",
            )
        if self.on_error == "drop":
            self.dropped += 1
            return None
        return event


def _is_async_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass


def make_before_send(
    callback: BeforeSendCallback | None, on_error: OnError = "send"
) -> BeforeSend | None:
    """The hook a client uses: None without a callback. Does not block.

    :raises HiveLoopConfigError: for a callback that is not callable or a bad ``on_error``.
    """
    if callback is None:
        if on_error not in ("send", "drop"):
            raise HiveLoopConfigError('before_send_errors must be "send" or "drop"')
        return None
    return BeforeSend(callback, on_error=on_error)
