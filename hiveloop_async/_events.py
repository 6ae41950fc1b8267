"""Event records as they sit in the queue, and the cheap ids and clocks they carry.

The hot path (entering and leaving a tracked block) must not format anything. The queue holds
records of four kinds, told apart by type:

* an ``ActionScope`` or a ``Task``, appended once when it opens and once when it closes (the
  same object: no allocation per event; the sender tells the two apart with the object's
  ``_sent`` flag, set when it encodes the opening event);
* a tuple ``(agent, t_ns, event_type, task, action_id, payload, severity, parent_event_id)``
  for every other event;
* a flush waiter, which marks a point in the queue.

Ids are integers and times integer monotonic nanoseconds; the sender turns records into wire
dicts (:mod:`._serialize`).
"""

from __future__ import annotations

import random
import time
from typing import Final

EVENT_TYPES: Final = frozenset(
    {
        "agent_registered",
        "heartbeat",
        "task_started",
        "task_completed",
        "task_failed",
        "action_started",
        "action_completed",
        "action_failed",
        "retry_started",
        "escalated",
        "approval_requested",
        "approval_received",
        "custom",
    }
)

SEVERITY_DEFAULTS: Final[dict[str, str]] = {
    "heartbeat": "debug",
    "agent_registered": "info",
    "task_started": "info",
    "task_completed": "info",
    "task_failed": "error",
    "action_started": "info",
    "action_completed": "info",
    "action_failed": "error",
    "retry_started": "warn",
    "escalated": "warn",
    "approval_requested": "info",
    "approval_received": "info",
    "custom": "info",
}

SEVERITIES: Final = frozenset({"debug", "info", "warn", "error"})

# Cheap random 128-bit ids; formatted as uuid4 strings only when they leave the process.
# ``random`` reseeds itself in a forked child, so ids stay unique across fork.
new_id = random.getrandbits
ID_BITS: Final = 128

# One clock on the hot path: monotonic nanoseconds. Wall time is derived in the sender.
now_ns = time.monotonic_ns


def wall_offset_ns() -> int:
    """Return wall-clock minus monotonic time, in nanoseconds."""
    return time.time_ns() - time.monotonic_ns()


_VERSION_MASK: Final = ~((0xF << 76) | (0x3 << 62))
_VERSION_BITS: Final = (0x4 << 76) | (0x2 << 62)


def format_id(n: int) -> str:
    """Format a 128-bit integer as a uuid4 string (version and variant bits set)."""
    h = "%032x" % ((n & _VERSION_MASK) | _VERSION_BITS)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id_str() -> str:
    """Return a fresh uuid4-form string id."""
    return format_id(new_id(ID_BITS))


class TimestampFormatter:
    """Formats wall-clock nanoseconds as HiveBoard's ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    Caches the formatted second, so consecutive events cost one f-string each. Not
    thread-safe by design: each sender owns one.
    """

    __slots__ = ("_prefix", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, wall_ns: int) -> str:
        sec, rem = divmod(wall_ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{rem // 1_000_000:03d}Z"
