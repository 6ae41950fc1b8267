"""Where the sender runs when the application gives it no loop, and the process hooks.

* :class:`ThreadRunner` runs an :class:`~._transport.Engine` on a private event loop in a
  daemon thread, and performs the final drain in the calling thread when no thread can start
  (CPython 3.12 refuses new threads once ``atexit`` hooks run);
* :func:`register` keeps, for each live client, what to call at interpreter exit (drain,
  bounded by its ``shutdown_timeout``) and in a forked child (forget the parent's state).
  ``multiprocessing`` children leave through ``os._exit``, where ``atexit`` never runs, so
  the exit drain is registered with ``multiprocessing`` in each child it starts.

Nothing here raises into the host program.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable

from ._internal import internal_error, logger, warn_once
from ._transport import Engine


class ThreadRunner:
    """Runs an :class:`Engine` on a private event loop in a daemon thread.

    When no thread can start (CPython 3.12 forbids new threads once ``atexit`` hooks run) or
    at exit (``start()`` never called), :meth:`close` runs the final drain in the calling
    thread instead, on a fresh event loop, bounded by the same deadline.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._thread = threading.Thread(
            target=self._main, name="hiveloop_async.sender", daemon=True
        )
        self._started = False
        self._drain_lock = threading.Lock()

    def start(self) -> bool:
        """Start the thread; False when it cannot start (``close()`` then drains here)."""
        try:
            self._thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            if "shutdown" in str(exc):
                logger.debug("hiveloop_async: no sender thread at shutdown; draining at close")
            else:
                warn_once(
                    "thread-start",
                    "hiveloop_async: could not start the sender thread (%s); events stay "
                    "queued until shutdown() or aclose()",
                    exc,
                )
            return False
        self._started = True
        return True

    def _main(self) -> None:
        try:
            asyncio.run(self.engine.run())
        except Exception:
            internal_error("sender thread")

    def close(self, deadline: float) -> None:
        """Close the engine and join the thread, both bounded by ``deadline``."""
        if not self._started:
            self._drain_here(deadline)
            return
        self.engine.close_threadsafe(deadline)
        self._thread.join(max(0.0, deadline - time.monotonic()) + 0.1)

    def hand_over(self, timeout: float) -> None:
        """Stop consuming the queue so an engine on the application's loop can take it."""
        if not self._started:
            return  # nothing took records from the queue: the new engine takes it as it is
        self.engine.hand_over(time.monotonic() + timeout)
        self._thread.join(timeout + 0.1)

    def _drain_here(self, deadline: float) -> None:
        """The final drain on a fresh event loop in the calling thread, until ``deadline``.

        Not ``asyncio.run()``: its executor shutdown starts a thread. Runs in an empty
        context so the caller's scope does not leak into the engine. One caller at a time.
        """
        if not self._drain_lock.acquire(timeout=max(0.0, deadline - time.monotonic()) + 0.1):
            return
        try:
            if self.engine.finished:
                return  # drained by an earlier close()
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:  # this thread runs a loop, and no thread could start: nowhere to send from
                self._give_up(
                    "no sender thread could start and shutdown() was called from a running "
                    "event loop (use 'await hb.aclose()')"
                )
                return
            loop = asyncio.new_event_loop()
            try:
                contextvars.Context().run(loop.run_until_complete, self._final_drain(deadline))
            except Exception:
                internal_error("exit drain")
            finally:
                _close_loop(loop, deadline)
                if not self.engine.finished:
                    self.engine.finish()
        finally:
            self._drain_lock.release()

    async def _final_drain(self, deadline: float) -> None:
        engine = self.engine
        if not engine.queue.has_work:
            return
        await engine.start_on_loop()
        await engine.close(deadline)

    def _give_up(self, why: str) -> None:
        """Count everything left as dropped (``shutdown``), with one warning."""
        queue = self.engine.queue
        before = queue.counts()["dropped_total"]
        self.engine.finish()
        lost = queue.counts()["dropped_total"] - before
        if lost:
            logger.warning("hiveloop_async: %d events dropped (shutdown): %s", lost, why)


def _close_loop(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Close a loop of :meth:`ThreadRunner._drain_here`, within 0.15 s past ``deadline``."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:  # an engine cut off at its deadline: let it account for what is left
            grace = max(0.01, deadline + 0.1 - time.monotonic())
            loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
        loop.run_until_complete(
            asyncio.wait({loop.create_task(loop.shutdown_asyncgens())}, timeout=0.05)
        )
    except Exception:
        internal_error("exit drain")
    finally:
        loop.close()


# -- process hooks ---------------------------------------------------------------------------

_Hook = Callable[[], None]
#: Per live client: (at exit, in a forked child), as weak methods so clients can go away.
_hooks: list[tuple[weakref.WeakMethod[_Hook], weakref.WeakMethod[_Hook]]] = []
_hooks_lock = threading.Lock()


def register(at_exit: _Hook, after_fork: _Hook) -> None:
    """Call ``at_exit`` at interpreter exit and ``after_fork`` in a forked child.

    Both must be bound methods of the same object; they are held weakly. Never raises.
    """
    with _hooks_lock:
        _hooks[:] = [h for h in _hooks if h[0]() is not None]
        _hooks.append((weakref.WeakMethod(at_exit), weakref.WeakMethod(after_fork)))


def _live(which: int) -> list[_Hook]:
    with _hooks_lock:
        return [fn for h in list(_hooks) if (fn := h[which]()) is not None]


def run_exit_hooks() -> None:
    """Drain every live client (each bounded by its own shutdown_timeout). Never raises."""
    for hook in _live(0):
        try:
            hook()
        except Exception:
            internal_error("atexit")


def _after_fork_in_child() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()
    for hook in _live(1):
        try:
            hook()
        except Exception:
            internal_error("after fork")


class _ForkToken:
    """Kept alive for multiprocessing's after-fork registry (which holds weak references)."""


_fork_token = _ForkToken()
_mp_hooked = False


def _before_fork() -> None:
    """Ask multiprocessing to register our exit drain in each child it starts."""
    global _mp_hooked
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and not _mp_hooked:
        _mp_hooked = True
        mp_util.register_after_fork(_fork_token, _in_multiprocessing_child)


def _in_multiprocessing_child(_: object) -> None:
    mp_util = sys.modules["multiprocessing.util"]
    mp_util.Finalize(None, run_exit_hooks, exitpriority=100)


atexit.register(run_exit_hooks)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
