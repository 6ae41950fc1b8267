"""Ids and clocks: the cheap integers the hot path takes, and how the sender formats them.

The hot path takes the next integer from a process-wide counter and a monotonic nanosecond
clock reading; nothing is formatted there. The sender turns ids into uuid4-form strings and
times into HiveBoard's timestamps. No I/O.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Final

# The hot path takes the next integer from a process-wide counter (one C call); the
# sender formats it as a uuid4 string: a random per-process prefix (74 random bits, version 4,
# RFC 4122 variant) followed by the counter in the last 12 hex digits. Unique within the
# process for 2**48 ids, and across processes by the random prefix, which a forked child
# draws anew (the counter is copied by fork, the prefix is not kept).
next_id: Callable[[], int] = itertools.count(1).__next__
_ID_MASK: Final = (1 << 48) - 1


def _new_prefix() -> str:
    h = os.urandom(10).hex()
    variant = "89ab"[int(h[12], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[16:19]}-"


_prefix = _new_prefix()


def _reseed_after_fork() -> None:
    global _prefix
    _prefix = _new_prefix()
    _heads.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)

# One clock on the hot path: monotonic nanoseconds. Wall time is derived in the sender.
now_ns = time.monotonic_ns


def wall_offset_ns() -> int:
    """Return wall-clock minus monotonic time, in nanoseconds."""
    return time.time_ns() - time.monotonic_ns()


# Formatting an id is the sender's most frequent job (two or three per event), and ids come
# from one counter, so consecutive ones share all but their last three hex digits: the string
# up to those (the "head") is cached per block of 4096 ids, and the last three digits come
# from a table. Same strings as ``f"{_prefix}{n & _ID_MASK:012x}"``, at a third of the cost.
_HEX3: Final = tuple(f"{i:03x}" for i in range(4096))
_heads: dict[int, str] = {}
_MAX_HEADS: Final = 64


def _head(n: int) -> str:
    """Cache and return the id string of ``n`` (masked) without its last three hex digits."""
    if len(_heads) >= _MAX_HEADS:
        _heads.clear()
    head = _heads[n >> 12] = f"{_prefix}{(n >> 12) << 12:012x}"[:-3]
    return head


def format_id(n: int | str) -> str:
    """Format an id from :func:`next_id` as a uuid4-form string (strings pass through)."""
    if isinstance(n, str):
        return n
    n &= _ID_MASK
    head = _heads.get(n >> 12)
    if head is None:
        head = _head(n)
    return head + _HEX3[n & 4095]


def new_id_str() -> str:
    """Return a fresh uuid4-form string id."""
    n = next_id() & _ID_MASK
    head = _heads.get(n >> 12)
    if head is None:
        head = _head(n)
    return head + _HEX3[n & 4095]


class TimestampFormatter:
    """Formats wall-clock nanoseconds as HiveBoard's ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    Caches the formatted millisecond (events come in bursts: most share their millisecond
    with the one before) and the formatted second. ``text`` is the last string returned,
    for every time in ``[lo, hi)``: a caller may test that range itself and save the call.
    Not thread-safe by design: each sender owns one.
    """

    __slots__ = ("_prefix", "_sec", "hi", "lo", "text")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""
        self.lo = self.hi = 0
        self.text = ""

    def __call__(self, wall_ns: int) -> str:
        if self.lo <= wall_ns < self.hi:
            return self.text
        ms = wall_ns // 1_000_000
        sec, ms_part = divmod(ms, 1000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        self.lo = ms * 1_000_000
        self.hi = self.lo + 1_000_000
        text = self.text = f"{self._prefix}.{ms_part:03d}Z"
        return text
