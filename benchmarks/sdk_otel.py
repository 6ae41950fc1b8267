"""The OpenTelemetry SDK as its documentation recommends for production.

``TracerProvider`` with a ``BatchSpanProcessor`` (default settings unless a figure needs a
queue that holds the whole burst, which the results say) and an ``OTLPSpanExporter`` (HTTP,
protobuf) to the sink's ``/v1/traces``. A block is
``with tracer.start_as_current_span("step") as span: span.set_attributes({...})`` inside an
open root span; one span on the wire per block. Runs in the peers' virtual environment.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import time
from collections.abc import Callable
from typing import Any

from . import _harness as h


class OTel:
    name = "OpenTelemetry SDK"
    per_block = 1
    sink_keys = ("otlp_name:step",)

    def __init__(self) -> None:
        self.provider: Any = None
        self.bsp: Any = None
        self.tracer: Any = None

    def start(self, endpoint: str, capacity: int | None) -> None:
        sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        resources = importlib.import_module("opentelemetry.sdk.resources")
        self.provider = sdk_trace.TracerProvider(
            resource=resources.Resource.create({"service.name": "bench"})
        )
        extra = {} if capacity is None else {"max_queue_size": capacity}
        self.bsp = export.BatchSpanProcessor(
            otlp.OTLPSpanExporter(endpoint=endpoint + "/v1/traces"), **extra
        )
        self.provider.add_span_processor(self.bsp)
        self.tracer = self.provider.get_tracer("bench")

    def defaults(self) -> dict[str, Any]:
        from importlib.metadata import version

        export = importlib.import_module("opentelemetry.sdk.trace.export")
        bsp = export.BatchSpanProcessor
        return {
            "version": version("opentelemetry-sdk"),
            "max_queue_size": bsp._default_max_queue_size(),
            "max_export_batch_size": bsp._default_max_export_batch_size(),
            "schedule_delay_ms": bsp._default_schedule_delay_millis(),
            "export_timeout_ms": bsp._default_export_timeout_millis(),
            "sender": "one daemon thread, requests, protobuf, one batch at a time",
        }

    def task(self) -> contextlib.AbstractContextManager[Any]:
        cm: contextlib.AbstractContextManager[Any] = self.tracer.start_as_current_span("bench-task")
        return cm

    def timed(self) -> h.TimedLoop:
        span_cm = self.tracer.start_as_current_span
        pc = time.perf_counter_ns

        def timed(n: int, out: array.array[int], off: int) -> None:
            for i in range(n):
                t0 = pc()
                with span_cm("step") as span:
                    span.set_attributes({"tool": "search", "rows": i, "cached": False})
                t1 = pc()
                out[off + i] = t1 - t0

        return timed

    def loop(self) -> Callable[[int], None]:
        span_cm = self.tracer.start_as_current_span

        def loop(n: int) -> None:
            for i in range(n):
                with span_cm("step") as span:
                    span.set_attributes({"tool": "search", "rows": i, "cached": False})

        return loop

    def between(self) -> None:
        self.provider.force_flush(30_000)

    def pending(self) -> int:
        try:
            return len(self.bsp._batch_processor._queue)
        except AttributeError:
            return -1

    def shutdown(self, timeout: float) -> None:
        # TracerProvider.shutdown() takes no timeout (the BatchSpanProcessor bounds its own
        # wait at 30 s, the exporter each request at 10 s).
        self.provider.shutdown()


def adapter() -> OTel:
    return OTel()
