"""``make bench-otlp``: the OTLP export next to the OpenTelemetry SDK, same trees, same sink.

One run, each configuration in a fresh subprocess against one local sink
(:mod:`benchmarks.sink`, which decodes every OTLP request and counts its spans):

* ``ours-otlp``: ``HiveBoard(otlp_endpoint=sink)`` alone (no API key), protobuf;
* ``ours-both``: HiveBoard ingest and OTLP together, to the same sink;
* ``ours-ingest``: HiveBoard ingest alone (the baseline: what OTLP adds to the sender);
* ``otel``: the OpenTelemetry SDK, ``TracerProvider`` + ``BatchSpanProcessor`` (queue large
  enough to hold the burst, otherwise defaults; ``force_flush()`` after the burst, as ours
  ``flush()``) + ``OTLPSpanExporter`` (HTTP, protobuf), in the peers' venv
  (``benchmarks/.peers-venv``, installed by :mod:`benchmarks.run`);
* ``base-otlp`` / ``base-ingest`` (only with ``BENCH_OTLP_BASELINE=<git ref>``): the same
  two workers on the package as it was at that commit (``git archive`` of
  ``hiveloop_async`` into a temporary directory, put first on the worker's ``sys.path``):
  the before/after of a change, in the same run.

``BENCH_OTLP_ROUNDS`` rounds (default 3), every configuration once per round in turn
(interleaved, as the machine is shared); each figure is the median over the rounds.

The tree, per task: a task with two actions, one nested in the other and carrying a tool
payload, and one LLM call: 4 spans, 7 HiveLoop events. ``TASKS`` tasks are recorded as fast
as possible on the main thread; then the run waits until the sink has counted every span.

Figures: recording CPU per task (the loop that records, main thread), sender CPU per event
and per span (process CPU minus the recording loop's, divided by what was delivered), and
end-to-end throughput (spans delivered per second of wall time, from the first record to
the sink's last counted request). Standard library only at import time (the OTel worker
runs in the peers' venv).

``python -m benchmarks.otlp --stages``: where ours-otlp's sender CPU goes, per span: the
same burst with the sender's stages wrapped (HiveBoard wire JSON, scrubbing, span assembly
with the pipeline's lock, OTLP encoding), each timed with ``time.thread_time`` on the
sender thread, against the sender thread's own CPU clock; the wrappers' own cost is
measured and shown. With ``BENCH_OTLP_BASELINE`` the baseline's package runs too,
alternated process by process (``BENCH_OTLP_ROUNDS`` rounds, medians).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASKS = 5_000
SPANS_PER_TASK = 4
EVENTS_PER_TASK = 7


def _counts(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/count", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _wait_sink(url: str, key: str, n: int, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    counts = _counts(url)
    while int(counts.get(key, 0)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
        counts = _counts(url)
    return counts


# -- workers (each in its own process) -----------------------------------------------------------


def _worker_ours(url: str, mode: str, tasks: int) -> dict[str, Any]:
    code = os.environ.get("BENCH_OTLP_CODE")
    if code:  # the baseline's package, before this checkout's
        sys.path.insert(0, code)
    import hiveloop_async as hl

    kwargs: dict[str, Any] = {"flush_interval": 0.2, "max_queue_size": tasks * EVENTS_PER_TASK * 2}
    if mode in ("ingest", "both"):
        kwargs.update(api_key="hb_bench", endpoint=url)
    if mode in ("otlp", "both"):
        kwargs.update(otlp_endpoint=url, otlp_protocol="http/protobuf")
    hb = hl.HiveBoard(**kwargs)
    agent = hb.agent("bench", heartbeat_interval=0)
    hb.flush(timeout=5)  # the sender thread is up and agent_registered is out
    cpu0, wall0 = time.process_time(), time.monotonic()
    thread_cpu0 = time.thread_time()
    _record(hl, agent, tasks)
    record_cpu = time.thread_time() - thread_cpu0
    result = hb.flush(timeout=300)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    stats = hb.stats()
    hb.shutdown(timeout=5)
    counts = _counts(url)
    otlp = stats["otlp"]
    return {
        "recorded": stats["recorded"],
        "sent_events": stats["sent"],
        "dropped_events": stats["dropped_total"],
        "spans_sent": 0 if otlp is None else otlp["sent"],
        "spans_dropped": 0 if otlp is None else otlp["dropped_total"],
        "otlp_requests": 0 if otlp is None else otlp["requests"],
        "flush_ok": bool(result),
        "record_cpu_s": record_cpu,
        "process_cpu_s": cpu,
        "wall_s": wall,
        "wall0": wall0,
        "sink": counts,
        "package": str(Path(hl.__file__).parent),
    }


def _worker_otel(url: str, tasks: int) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    bsp = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=url + "/v1/traces"), max_queue_size=tasks * SPANS_PER_TASK * 2
    )
    provider.add_span_processor(bsp)
    tracer = provider.get_tracer("bench")
    span = tracer.start_as_current_span
    n_spans = tasks * SPANS_PER_TASK
    cpu0, wall0 = time.process_time(), time.monotonic()
    thread_cpu0 = time.thread_time()
    for i in range(tasks):
        with span(
            "invoke_agent bench",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench",
                        "hiveloop.task.id": f"t{i}", "hiveloop.project.id": "bench"},
        ):  # fmt: skip
            with span("plan") as plan:
                with span("execute_tool search") as search:
                    search.set_attributes(
                        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                         "hiveloop.payload.args.q": "acme", "hiveloop.payload.result": "3 rows",
                         "hiveloop.payload.tool_category": "db"}
                    )  # fmt: skip
                plan.set_attribute("hiveloop.payload.step", i)
            with span("chat gpt-4o", kind=SpanKind.CLIENT) as chat:
                chat.set_attributes(
                    {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                     "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 40}
                )  # fmt: skip
                chat.set_status(Status(StatusCode.UNSET))
    record_cpu = time.thread_time() - thread_cpu0
    provider.force_flush(300_000)  # as hb.flush(): do not wait for the schedule delay
    counts = _wait_sink(url, "otlp_spans", n_spans)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    provider.shutdown()
    return {
        "spans_sent": int(counts.get("otlp_spans", 0)),
        "record_cpu_s": record_cpu,
        "process_cpu_s": cpu,
        "wall_s": wall,
        "wall0": wall0,
        "sink": counts,
    }


def _record(hl: Any, agent: Any, tasks: int) -> None:
    """The workload of every ours-* configuration: ``tasks`` tasks of 4 spans / 7 events
    (a task, a ``plan`` action holding a ``search`` tool action, an LLM call)."""
    tool = hl.tool_payload(args={"q": "acme"}, result="3 rows", tool_category="db")
    for i in range(tasks):
        with agent.task(f"t{i}", project="bench") as task:
            with agent.track_context("plan") as plan:
                with agent.track_context("search") as search:
                    search.set_payload(tool)
                plan.set_payload({"step": i})
            task.llm_call("think", "gpt-4o", tokens_in=120, tokens_out=40, duration_ms=5)


def _worker_stages(url: str, tasks: int) -> dict[str, Any]:
    """ours-otlp with the sender's stages timed (see the module docstring)."""
    code = os.environ.get("BENCH_OTLP_CODE")
    if code:
        sys.path.insert(0, code)
    import threading

    import hiveloop_async as hl
    from hiveloop_async import _otlp_sender, _scrub, _serialize
    from hiveloop_async._otlp import _pipeline

    spent: dict[str, float] = {}
    calls = [0]
    clock = time.thread_time

    def wrap(owner: Any, name: str, label: str, within: str | None = None) -> None:
        """Time ``owner.name`` under ``label``; a call made inside a ``within`` stage (the
        scrubber's verdicts, asked by the wire encoder) is taken out of that stage."""
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            t0 = clock()
            try:
                return original(*args, **kwargs)
            finally:
                dt = clock() - t0
                spent[label] = spent.get(label, 0.0) + dt
                if within is not None:
                    spent[within] = spent.get(within, 0.0) - dt

        setattr(owner, name, timed)

    wrap(_serialize.RecordEncoder, "encode", "wire_json")
    wrap(_scrub.Scrubber, "scrub_decoding", "scrub")
    for verdict in ("clean_payload", "clean_text"):
        if hasattr(_scrub.Scrubber, verdict):  # since core3: verdicts asked while encoding
            wrap(_scrub.Scrubber, verdict, "scrub", within="wire_json")
    wrap(_pipeline.SpanPipeline, "feed_event", "assembly")
    wrap(_otlp_sender, "encode", "otlp_encoding")

    def nothing() -> None:
        pass

    n_calls = 30_000
    t0 = clock()
    for _ in range(n_calls):
        t1 = clock()
        try:
            nothing()
        finally:
            spent["_calibration"] = clock() - t1
    per_wrap = (clock() - t0) / n_calls
    spent.clear()
    hb = hl.HiveBoard(
        otlp_endpoint=url,
        otlp_protocol="http/protobuf",
        flush_interval=0.2,
        max_queue_size=tasks * EVENTS_PER_TASK * 2,
    )
    agent = hb.agent("bench", heartbeat_interval=0)
    hb.flush(timeout=5)
    sender = next(t for t in threading.enumerate() if t.name.endswith(".sender"))
    assert sender.ident is not None
    cpu_clock = time.pthread_getcpuclockid(sender.ident)
    spent.clear()
    calls[0] = 0
    cpu0 = time.clock_gettime(cpu_clock)
    _record(hl, agent, tasks)
    hb.flush(timeout=300)
    sender_cpu = time.clock_gettime(cpu_clock) - cpu0
    spans = hb.stats()["otlp"]
    hb.shutdown(timeout=5)
    n = max(1, 0 if spans is None else spans["sent"])
    wrapped_calls = calls[0]
    out = {k: round(v / n * 1e6, 2) for k, v in spent.items() if not k.startswith("_")}
    out["wrappers"] = round(per_wrap * wrapped_calls / n * 1e6, 2)
    out["sender_thread"] = round(sender_cpu / n * 1e6, 2)
    out["rest"] = round(
        out["sender_thread"] - sum(v for k, v in out.items() if k != "sender_thread"), 2
    )
    return out


def _interleaved(
    kinds: list[str],
    rounds: int,
    base_ref: str | None,
    run_one: Callable[[str, str, str | None], dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Every kind once per round, in order, against one sink reset before each run:
    ``run_one(kind, sink_url, baseline_code)`` (the code of ``base_ref`` for ``base-*``
    kinds, else None). Returns each kind's figures by round; logs every run on stderr."""
    from benchmarks.sink import Sink

    per_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp, Sink("ok") as sink:
        base_code = _baseline(base_ref, tmp) if base_ref else None
        for rnd in range(rounds):
            for kind in kinds:
                sink.reset()
                code = base_code if kind.startswith("base-") else None
                fig = run_one(kind, sink.url, code)
                per_kind[kind].append(fig)
                sys.stderr.write(f"round {rnd + 1}/{rounds} {kind} " + json.dumps(fig) + "\n")
    return per_kind


def _stages_main() -> None:
    sys.path.insert(0, str(ROOT))

    tasks = int(os.environ.get("BENCH_OTLP_TASKS", TASKS))
    rounds = max(1, int(os.environ.get("BENCH_OTLP_ROUNDS", "3")))
    base_ref = os.environ.get("BENCH_OTLP_BASELINE") or None
    kinds = (["base-stages"] if base_ref else []) + ["ours-stages"]
    per_kind = _interleaved(
        kinds,
        rounds,
        base_ref,
        lambda kind, url, code: _run(sys.executable, kind, url, tasks, code),
    )
    cols = ("wire_json", "scrub", "assembly", "otlp_encoding", "wrappers", "rest", "sender_thread")
    title = f"sender CPU µs/span by stage, {tasks:,} tasks, {rounds} round(s), medians"
    lines = [title + (f"; base = {base_ref}" if base_ref else ""), ""]
    lines.append(f"{'config':<12}" + "".join(f"{c:>15}" for c in cols))
    for kind in kinds:
        figs = per_kind[kind]
        cells = [statistics.median(f.get(c, 0.0) for f in figs) for c in cols]
        lines.append(f"{kind:<12}" + "".join(f"{c:>15.2f}" for c in cells))
    print("\n".join(lines))


def _worker(argv: list[str]) -> None:
    kind, url, tasks = argv[0], argv[1], int(argv[2])
    if kind.endswith("-stages"):
        sys.stdout.write("RESULT " + json.dumps(_worker_stages(url, tasks)) + "\n")
        return
    if kind == "otel":
        out = _worker_otel(url, tasks)
    else:
        out = _worker_ours(url, kind.split("-", 1)[1], tasks)
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")


# -- the driver -------------------------------------------------------------------------------


def _run(python: str, kind: str, url: str, tasks: int, code: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    for key in [k for k in env if k.startswith(("HIVELOOP_", "OTEL_", "BENCH_OTLP_CODE"))]:
        del env[key]
    if code is not None:
        env["BENCH_OTLP_CODE"] = code
    proc = subprocess.run(
        [python, "-m", "benchmarks.otlp", "--worker", kind, url, str(tasks)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"{kind} failed:\n{proc.stderr[-2000:]}")


def _figures(kind: str, r: dict[str, Any], tasks: int) -> dict[str, Any]:
    sink = r["sink"]
    last = float(sink.get("last_t", r["wall0"]))
    e2e = max(1e-9, last - r["wall0"])
    sender_cpu = max(0.0, r["process_cpu_s"] - r["record_cpu_s"])
    spans = int(r["spans_sent"])
    events = tasks * EVENTS_PER_TASK
    out = {
        "config": kind,
        "record_us_per_task": round(r["record_cpu_s"] / tasks * 1e6, 1),
        "sender_cpu_s": round(sender_cpu, 3),
        "spans_delivered": spans,
        "end_to_end_s": round(e2e, 3),
    }
    if kind != "otel":
        out["package"] = r["package"]
        out["events_delivered"] = int(r["sent_events"])
        out["sender_us_per_event"] = round(sender_cpu / events * 1e6, 2)
        out["events_per_s"] = round(events / e2e)
    if spans:
        out["sender_us_per_span"] = round(sender_cpu / spans * 1e6, 2)
        out["spans_per_s"] = round(spans / e2e)
    return out


def _baseline(ref: str, into: str) -> str:
    """Extract ``hiveloop_async`` as it was at git ``ref`` into ``into``; return ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "hiveloop_async"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    tar_path = Path(into) / "base.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # an older 3.10/3.11 patch release: our own repository's archive
            tar.extractall(into)
    return into


def _median(figs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every numeric figure's median over the rounds (the first round's for the rest)."""
    out = dict(figs[0])
    for key, value in figs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            med = statistics.median(f[key] for f in figs)
            out[key] = round(med, 3) if isinstance(value, float) else round(med)
    out["rounds"] = len(figs)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--stages":
        _stages_main()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--table":  # otlp.txt again from otlp.json
        out = ROOT / "benchmarks" / "results"
        text = table(json.loads((out / "otlp.json").read_text()))
        (out / "otlp.txt").write_text(text)
        print(text, end="")
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import ensure_peers, peers_python

    tasks = int(os.environ.get("BENCH_OTLP_TASKS", TASKS))
    rounds = max(1, int(os.environ.get("BENCH_OTLP_ROUNDS", "3")))
    base_ref = os.environ.get("BENCH_OTLP_BASELINE") or None
    peers = ensure_peers()
    kinds = ["ours-ingest", "ours-otlp", "ours-both", "otel"]
    if base_ref:
        kinds[0:0] = ["base-ingest", "base-otlp"]

    def one(kind: str, url: str, code: str | None) -> dict[str, Any]:
        python = str(peers_python()) if kind == "otel" else sys.executable
        return _figures(kind, _run(python, kind, url, tasks, code), tasks)

    per_kind = _interleaved(kinds, rounds, base_ref, one)
    results = [_median(per_kind[k]) for k in kinds]
    otel = next(f for f in results if f["config"] == "otel")
    ours = next(f for f in results if f["config"] == "ours-otlp")
    summary: dict[str, Any] = {
        "tasks": tasks,
        "rounds": rounds,
        "baseline": base_ref,
        "spans_per_task": SPANS_PER_TASK,
        "events_per_task": EVENTS_PER_TASK,
        "otel_sdk": next((p for p in peers["packages"] if p.startswith("opentelemetry-sdk")), "?"),
        "results": results,
        "throughput_ratio_spans_per_s": round(ours["spans_per_s"] / otel["spans_per_s"], 2),
        "sender_cpu_ratio_per_span": round(
            otel["sender_us_per_span"] / ours["sender_us_per_span"], 2
        ),
        "recording_ratio_per_task": round(
            otel["record_us_per_task"] / ours["record_us_per_task"], 2
        ),
    }
    if base_ref:
        base = next(f for f in results if f["config"] == "base-otlp")
        summary["vs_baseline_spans_per_s"] = round(ours["spans_per_s"] / base["spans_per_s"], 2)
        summary["vs_baseline_sender_cpu_per_span"] = round(
            base["sender_us_per_span"] / ours["sender_us_per_span"], 2
        )
        summary["baseline_throughput_ratio_to_otel"] = round(
            base["spans_per_s"] / otel["spans_per_s"], 2
        )
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "otlp.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "otlp.txt").write_text(table(summary))
    print(table(summary))


def table(summary: dict[str, Any]) -> str:
    """The summary as the side-by-side text of ``benchmarks/results/otlp.txt``."""
    head = (
        f"make bench-otlp: {summary['tasks']:,} tasks x {summary['spans_per_task']} spans "
        f"({summary['events_per_task']} events), {summary.get('rounds', 1)} interleaved "
        f"round(s), medians; {summary['otel_sdk']}"
    )
    if summary.get("baseline"):
        head += f"; base-* = the package at {summary['baseline']}"
    cols = ("record µs/task", "sender µs/span", "sender µs/event", "spans/s", "end to end s")
    lines = [head, "", f"{'config':<12}" + "".join(f"{c:>17}" for c in cols)]
    for r in summary["results"]:
        cells = [
            r.get("record_us_per_task"),
            r.get("sender_us_per_span"),
            r.get("sender_us_per_event"),
            r.get("spans_per_s"),
            r.get("end_to_end_s"),
        ]
        lines.append(
            f"{r['config']:<12}" + "".join(f"{'-' if c is None else c:>17}" for c in cells)
        )
    lines.append("")
    for key in (
        "throughput_ratio_spans_per_s",
        "sender_cpu_ratio_per_span",
        "recording_ratio_per_task",
        "vs_baseline_spans_per_s",
        "vs_baseline_sender_cpu_per_span",
        "baseline_throughput_ratio_to_otel",
    ):
        if key in summary:
            lines.append(f"{key}: {summary[key]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
