"""The SDK's own logging and its guard against internal errors.

Every recording path catches ``Exception`` from the SDK's internals and hands it to
:func:`internal_error`, which logs once per call site and counts the rest. Nothing here raises.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

logger = logging.getLogger("hiveloop_async")

#: Names of loggers whose records the SDK must never turn into events (no feedback loop).
SDK_LOGGER_PREFIX = "hiveloop_async"

_lock = threading.Lock()
_seen: dict[str, int] = {}

#: Test hook: when set, every swallowed internal error is also passed to it.
error_hook: Callable[[BaseException, str], None] | None = None


def internal_error(where: str, exc: BaseException | None = None) -> None:
    """Record ``exc`` (by default the exception being handled) as an SDK-internal error.

    Never raises. The first occurrence per ``where`` is logged with its traceback at
    WARNING; later ones are only counted (see :func:`internal_error_counts`).
    """
    if exc is None:
        exc = sys.exc_info()[1]
    try:
        with _lock:
            n = _seen.get(where, 0) + 1
            _seen[where] = n
        if n == 1:
            logger.warning("hiveloop_async internal error in %s (logged once)", where, exc_info=exc)
        hook = error_hook
        if hook is not None and exc is not None:
            hook(exc, where)
    except Exception:  # pragma: no cover - logging itself failed; nothing left to do
        pass


def internal_error_counts() -> dict[str, int]:
    """Return how many internal errors were swallowed, by call site. Never raises."""
    with _lock:
        return dict(_seen)


_warned: set[str] = set()


def warn_once(key: str, msg: str, *args: object) -> None:
    """Log ``msg`` at WARNING the first time ``key`` is seen in this process. Never raises."""
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(msg, *args)


def _renew_lock_after_fork() -> None:
    """In a forked child: a fresh lock (the parent's may have been held at fork)."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock_after_fork)
