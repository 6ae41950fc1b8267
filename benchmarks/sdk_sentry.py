"""The Sentry SDK (performance monitoring) as its documentation sets it up.

``sentry_sdk.init(dsn=SINK, traces_sample_rate=1.0)``; a block is
``with sentry_sdk.start_span(op="step", name="step") as span`` with three ``set_data`` calls,
inside a transaction. Spans travel with their transaction, which is sent when it finishes,
and a transaction keeps at most 1,000 spans (``_experiments["max_spans"]``, resized where
a figure needs the whole burst). For the paced caller-cost figure each burst of 1,000 blocks
is its own transaction. Runs in the peers' virtual environment.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from . import _harness as h


class Sentry:
    name = "Sentry SDK"
    per_block = 1
    sink_keys = ("sentry_spans",)

    def __init__(self) -> None:
        self.sdk: Any = importlib.import_module("sentry_sdk")
        self.tx: Any = None

    def start(self, endpoint: str, capacity: int | None) -> None:
        url = urlsplit(endpoint)
        extra = {} if capacity is None else {"_experiments": {"max_spans": capacity}}
        self.sdk.init(
            dsn=f"http://bench@{url.hostname}:{url.port}/1",
            traces_sample_rate=1.0,
            default_integrations=False,
            **extra,
        )

    def defaults(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "version": version("sentry-sdk"),
            "max_spans_per_transaction": 1000,
            "transport_queue_size": 100,
            "shutdown_timeout_s": 2,
            "sender": "one daemon thread, urllib3, gzip, one envelope per transaction",
        }

    @contextlib.contextmanager
    def task(self) -> Iterator[None]:
        self.tx = self.sdk.start_transaction(op="task", name="bench-task")
        self.tx.__enter__()
        try:
            yield
        finally:
            self.tx.__exit__(None, None, None)
            self.tx = None

    def timed(self) -> h.TimedLoop:
        start_span = self.sdk.start_span
        pc = time.perf_counter_ns

        def timed(n: int, out: array.array[int], off: int) -> None:
            for i in range(n):
                t0 = pc()
                with start_span(op="step", name="step") as span:
                    span.set_data("tool", "search")
                    span.set_data("rows", i)
                    span.set_data("cached", False)
                t1 = pc()
                out[off + i] = t1 - t0

        return timed

    def loop(self) -> Callable[[int], None]:
        start_span = self.sdk.start_span

        def loop(n: int) -> None:
            for i in range(n):
                with start_span(op="step", name="step") as span:
                    span.set_data("tool", "search")
                    span.set_data("rows", i)
                    span.set_data("cached", False)

        return loop

    def between(self) -> None:
        """Finish the transaction (that is what sends its spans) and open the next one."""
        if self.tx is not None:
            self.tx.__exit__(None, None, None)
            self.tx = self.sdk.start_transaction(op="task", name="bench-task")
            self.tx.__enter__()
        self.sdk.flush(timeout=30)

    def pending(self) -> int:
        return -1

    def shutdown(self, timeout: float) -> None:
        client = self.sdk.get_client()
        client.close(timeout=timeout)


def adapter() -> Sentry:
    return Sentry()
