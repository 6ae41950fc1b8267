"""Measurement helpers shared by every benchmark process: ours and the peers'.

Standard library only (the peers' processes import it from their own virtual environment).

A *block* is one tracked action: enter, ``set_payload`` with a 3-key dict, exit, inside an
open task. The *floor* is what CPython itself needs for that work: a ContextVar set and
reset, two clock reads, two small dicts appended to a deque. Both are timed the same way:
``perf_counter_ns`` read right before and right after each block, the loop's own cost
(two timer reads and a store, measured with an empty body) subtracted from the median and
the p99.
"""

from __future__ import annotations

import array
import contextlib
import contextvars
import gc
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

#: The 3-key payload every SDK attaches to every block (built inline in each loop as
#: ``{"tool": "search", "rows": i, "cached": False}``).
PAYLOAD_DOC = '{"tool": "search", "rows": i, "cached": False}'

#: Blocks per burst when the sender is live: after each burst the benchmark waits until
#: the SDK has delivered what was recorded, so the caller cost is measured in normal
#: operation, not in overload (a tight loop of millions of blocks is overload for every SDK).
BURST = 1_000

Samples = array.array  # array('q') of nanoseconds, one per block
TimedLoop = Callable[[int, "array.array[int]", int], None]


def new_samples(n: int) -> array.array[int]:
    return array.array("q", bytes(8 * n))


# -- the floor -------------------------------------------------------------------------------

_floor_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("floor", default=None)
_floor_q: deque[dict[str, int]] = deque()


def floor_reset() -> None:
    """Empty the floor's queue (the counterpart of a sender that drains)."""
    _floor_q.clear()


def floor_timed(n: int, out: array.array[int], off: int) -> None:
    """The floor, ``n`` times, each one timed."""
    pc = time.perf_counter_ns
    now = time.monotonic_ns
    cv_set = _floor_var.set
    cv_reset = _floor_var.reset
    append = _floor_q.append
    for i in range(n):
        t0 = pc()
        tok = cv_set(i)
        a = now()
        append({"k": 0, "t": a})
        b = now()
        append({"k": 1, "t": b})
        cv_reset(tok)
        t1 = pc()
        out[off + i] = t1 - t0


def floor_loop(n: int) -> None:
    """The floor, ``n`` times, untimed (for loop totals)."""
    now = time.monotonic_ns
    cv_set = _floor_var.set
    cv_reset = _floor_var.reset
    append = _floor_q.append
    for i in range(n):
        tok = cv_set(i)
        a = now()
        append({"k": 0, "t": a})
        b = now()
        append({"k": 1, "t": b})
        cv_reset(tok)


def empty_timed(n: int, out: array.array[int], off: int) -> None:
    """The timing loop with nothing in it: its median is the overhead to subtract."""
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        t1 = pc()
        out[off + i] = t1 - t0


# -- running and summarising -----------------------------------------------------------------


def per_block(
    timed: TimedLoop,
    n: int,
    *,
    burst: int | None = BURST,
    between: Callable[[], object] | None = None,
) -> array.array[int]:
    """Run ``timed`` for ``n`` blocks in bursts, calling ``between()`` after each burst."""
    out = new_samples(n)
    step = burst if burst else n
    done = 0
    while done < n:
        k = min(step, n - done)
        timed(k, out, done)
        done += k
        if between is not None:
            between()
    return out


async def aper_block(
    timed: Callable[[int, array.array[int], int], Awaitable[None]],
    n: int,
    *,
    burst: int | None = BURST,
    between: Callable[[], Awaitable[object]] | None = None,
) -> array.array[int]:
    """:func:`per_block` for coroutine loops."""
    out = new_samples(n)
    step = burst if burst else n
    done = 0
    while done < n:
        k = min(step, n - done)
        await timed(k, out, done)
        done += k
        if between is not None:
            await between()
    return out


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0
    rank = max(0, min(len(sorted_values) - 1, int(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarize(samples: array.array[int], overhead_ns: float = 0.0) -> dict[str, float]:
    """Median, p99, p99.9 and mean in µs, the timer overhead subtracted."""
    values = sorted(samples)
    n = len(values)
    mean = sum(values) / n if n else 0.0
    return {
        "median_us": round(max(0.0, percentile(values, 50) - overhead_ns) / 1000, 3),
        "p99_us": round(max(0.0, percentile(values, 99) - overhead_ns) / 1000, 3),
        "p999_us": round(max(0.0, percentile(values, 99.9) - overhead_ns) / 1000, 3),
        "mean_us": round(max(0.0, mean - overhead_ns) / 1000, 3),
        "n": n,
    }


def timer_overhead(n: int = 200_000) -> float:
    """Median cost (ns) of the timing loop itself."""
    samples = per_block(empty_timed, n, burst=None)
    return float(percentile(sorted(samples), 50))


def floor_figures(n: int, *, drained: bool = True) -> dict[str, Any]:
    """The floor measured here, per block (median, p99) and as a loop total, gc on and off.

    ``drained``: empty the floor's deque after every burst (as a live sender does);
    otherwise it grows like an undrained queue.
    """
    overhead = timer_overhead(min(n, 200_000))
    floor_reset()
    floor_timed(1000, new_samples(1000), 0)  # warm up
    floor_reset()
    between = floor_reset if drained else None
    gc.collect()
    on = summarize(per_block(floor_timed, n, between=between), overhead)
    floor_reset()
    with gc_disabled():
        off = summarize(per_block(floor_timed, n, between=between), overhead)
    floor_reset()
    gc.collect()
    t_on = loop_total_bursts(floor_loop, n, between=between)
    floor_reset()
    with gc_disabled():
        t_off = loop_total_bursts(floor_loop, n, between=between)
    floor_reset()
    return {
        "timer_overhead_ns": overhead,
        "gc_on": on,
        "gc_off": off,
        "loop_us_gc_on": round(t_on * 1e6 / n, 3),
        "loop_us_gc_off": round(t_off * 1e6 / n, 3),
    }


def loop_total(loop: Callable[[int], object], n: int) -> float:
    """Wall seconds for ``loop(n)``."""
    t0 = time.perf_counter()
    loop(n)
    return time.perf_counter() - t0


def loop_total_bursts(
    loop: Callable[[int], object],
    n: int,
    *,
    burst: int | None = BURST,
    between: Callable[[], object] | None = None,
) -> float:
    """Wall seconds spent inside ``loop`` for ``n`` blocks run in bursts (``between`` untimed)."""
    step = n if not burst or between is None else burst
    total = 0.0
    done = 0
    while done < n:
        k = min(step, n - done)
        total += loop_total(loop, k)
        done += k
        if between is not None:
            between()
    return total


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    """Collect, then run the body with the cyclic GC off."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def cpu_seconds() -> float:
    """CPU time of the whole process, every thread included."""
    return time.process_time()


def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def wait_until(cond: Callable[[], bool], timeout: float, poll: float = 0.001) -> bool:
    """Poll ``cond`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def machine() -> dict[str, Any]:
    """What this process runs on."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = "?"
    try:
        import subprocess

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "hiveloop_async"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if dirty:
            commit += " (hiveloop_async/ modified)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "commit": commit,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
    }


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the last line of stdout."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def sink_counts(url: str) -> dict[str, Any]:
    """The ok sink's counters at ``url`` (empty when it has none, e.g. a refusing sink)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/count", timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except OSError:
        return {}


def delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge results of repeated rounds: the median of every number (``n``: the sum).

    Rounds interleave the floor and every shape, so a noisy moment on a shared machine
    spoils one round of each rather than one figure.
    """
    first = rounds[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in rounds]
        if isinstance(value, dict):
            out[key] = merge_rounds([v for v in values if isinstance(v, dict)])
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            out[key] = value
        elif key == "n":
            out[key] = sum(v for v in values if isinstance(v, (int, float)))
        else:
            nums = sorted(float(v) for v in values if isinstance(v, (int, float)))
            mid = len(nums) // 2
            med = nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2
            ints = all(isinstance(v, int) for v in values)
            out[key] = int(med) if ints and med.is_integer() else round(med, 3)
    return out
