"""hiveloop 0.2.0 (the synchronous HiveBoard SDK), as its manual sets it up.

``hiveloop.init(api_key="hb_bench", endpoint=SINK)``; a block is
``with agent.track_context("step") as ctx: ctx.set_payload({...})`` inside
``with agent.task(...)``. Runs in the peers' virtual environment (standard library plus
hiveloop only).
"""

from __future__ import annotations

import array
import contextlib
import importlib
import time
from collections.abc import Callable
from typing import Any

from . import _harness as h


class HiveLoop:
    name = "hiveloop 0.2.0"
    per_block = 2
    sink_keys = ("type:action_started", "type:action_completed")

    def __init__(self) -> None:
        self.mod: Any = importlib.import_module("hiveloop")
        self.hb: Any = None
        self.agent: Any = None

    def start(self, endpoint: str, capacity: int | None) -> None:
        if self.hb is not None:
            self.mod.reset()
        extra = {} if capacity is None else {"max_queue_size": capacity}
        self.hb = self.mod.init(api_key="hb_bench", endpoint=endpoint, **extra)
        self.agent = self.hb.agent("bench")

    def defaults(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "version": version("hiveloop"),
            "max_queue_size": 10_000,
            "batch_size": 100,
            "flush_interval_s": 5.0,
            "sender": "one daemon thread, requests, one batch at a time",
        }

    def task(self) -> contextlib.AbstractContextManager[Any]:
        cm: contextlib.AbstractContextManager[Any] = self.agent.task("bench-task")
        return cm

    def timed(self) -> h.TimedLoop:
        tc = self.agent.track_context
        pc = time.perf_counter_ns

        def timed(n: int, out: array.array[int], off: int) -> None:
            for i in range(n):
                t0 = pc()
                with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})
                t1 = pc()
                out[off + i] = t1 - t0

        return timed

    def loop(self) -> Callable[[int], None]:
        tc = self.agent.track_context

        def loop(n: int) -> None:
            for i in range(n):
                with tc("step") as ctx:
                    ctx.set_payload({"tool": "search", "rows": i, "cached": False})

        return loop

    def between(self) -> None:
        self.hb.flush()  # only signals its thread (does not wait)

    def pending(self) -> int:
        try:
            return len(self.hb._transport._queue)
        except AttributeError:
            return -1

    def shutdown(self, timeout: float) -> None:
        self.hb.shutdown(timeout=timeout)


def adapter() -> HiveLoop:
    return HiveLoop()
