"""OTLP as a second destination of the real sender: faults on one side never cost the other.

Real parts only: the client and its engine, HiveBoard's side played by
:class:`tests.faultserver.FaultServer`, the OTLP side by :class:`tests.otlpcollector.
OTLPCollector` (aiohttp.web decoding with the official opentelemetry-proto classes), both
on 127.0.0.1; "down" is a port with nothing listening.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto")

import hiveloop_async as hl
from hiveloop_async import _tracecontext as tc
from hiveloop_async._exceptions import HiveLoopConfigError
from hiveloop_async._scrub import Scrubber

from .faultserver import FaultServer, free_port
from .otlpcollector import OTLPCollector


async def _work(agent: hl.Agent, n_tasks: int = 3) -> list[str]:
    """``n_tasks`` tasks, each: task -> action -> tool action + an LLM call; one fails."""
    runs = []
    for i in range(n_tasks):
        try:
            async with agent.task(f"job-{i}") as task:
                async with agent.track_context("plan") as plan:
                    async with agent.track_context("search") as search:
                        search.set_payload(hl.tool_payload(args={"q": i}, result="ok"))
                    task.llm_call("think", "gpt-4o", tokens_in=10 + i, tokens_out=5)
                    plan.set_payload({"step": i})
                if i == n_tasks - 1:
                    raise ValueError("last one fails")
        except ValueError:
            pass
        runs.append(task.task_run_id)
    return runs


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait on the test's loop (where the sender runs) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


SPANS_PER_TASK = 4  # invoke_agent, plan, execute_tool search, chat gpt-4o


def _otlp(hb: hl.HiveBoard) -> dict[str, Any]:
    stats = hb.stats()["otlp"]
    assert stats is not None
    assert stats["finished"] == (
        stats["sent"] + stats["dropped_total"] + stats["pending"] + stats["in_flight"]
    )
    return dict(stats)


def _hb_invariant(hb: hl.HiveBoard) -> dict[str, Any]:
    s = hb.stats()
    assert s["recorded"] == s["sent"] + s["dropped_total"] + s["queue_depth"] + s["in_flight"]
    return dict(s)


async def test_both_destinations_get_everything() -> None:
    with FaultServer() as board, OTLPCollector() as collector:
        async with hl.HiveBoard(
            api_key="hb_test_x",
            endpoint=board.url,
            otlp_endpoint=collector.url,
            otlp_headers="x-tenant=team%201",
            flush_interval=0.05,
        ) as hb:
            agent = hb.agent("both", heartbeat_interval=0)
            runs = await _work(agent)
            assert await hb.aflush(timeout=10)
            stats = _hb_invariant(hb)
            assert stats["sent"] == stats["recorded"] and stats["dropped_total"] == 0
            otlp = _otlp(hb)
            assert otlp["sent"] == otlp["finished"] == 3 * SPANS_PER_TASK + 1  # + registered
        assert len(board.events) == stats["recorded"]
        assert collector.headers[0]["x-tenant"] == "team 1"
        assert collector.content_types[0] == "application/x-protobuf"
        roots = [s for s in collector.spans if s["name"] == "invoke_agent both"]
        assert sorted(s["trace_id"] for s in roots) == sorted(tc.trace_id_for_run(r) for r in runs)
        assert [s["status"][0] for s in roots].count(2) == 1
        chat = [s for s in collector.spans if s["name"] == "chat gpt-4o"]
        assert sorted(s["attrs"]["gen_ai.usage.input_tokens"] for s in chat) == [10, 11, 12]


async def test_otlp_down_hiveboard_loses_nothing() -> None:
    with FaultServer() as board:
        async with hl.HiveBoard(
            api_key="hb_test_x",
            endpoint=board.url,
            otlp_endpoint=f"http://127.0.0.1:{free_port()}",
            flush_interval=0.05,
            retry_deadline=2.0,
        ) as hb:
            agent = hb.agent("otlp-down", heartbeat_interval=0)
            await _work(agent)
            await hb.aflush(timeout=10)
            stats = _hb_invariant(hb)
            assert stats["sent"] == stats["recorded"] > 0 and stats["dropped_total"] == 0
            otlp = _otlp(hb)
            assert otlp["sent"] == 0
            assert otlp["dropped"]["retries_exhausted"] == otlp["finished"] > 0
            assert otlp["retries"] >= 1
            assert "network error" in (otlp["last_error"] or "")
        assert len(board.events) == stats["recorded"]


async def test_hiveboard_down_otlp_loses_nothing() -> None:
    with OTLPCollector() as collector:
        async with hl.HiveBoard(
            api_key="hb_test_x",
            endpoint=f"http://127.0.0.1:{free_port()}",
            otlp_endpoint=collector.url,
            flush_interval=0.05,
            retry_deadline=2.0,
        ) as hb:
            agent = hb.agent("board-down", heartbeat_interval=0)
            await _work(agent)
            await hb.aflush(timeout=10)
            stats = _hb_invariant(hb)
            assert stats["sent"] == 0
            assert stats["dropped"]["retries_exhausted"] == stats["recorded"] > 0
            otlp = _otlp(hb)
            assert otlp["sent"] == otlp["finished"] == 3 * SPANS_PER_TASK + 1
        assert len(collector.spans) == otlp["sent"]


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(status: int) -> None:
    def behavior(n: int, spans: list[dict[str, Any]]) -> Any:
        if n == 0:
            when = "1" if status == 429 else email.utils.formatdate(time.time() + 2.5, usegmt=True)
            return ("status", status, {"Retry-After": when})
        return "ok"

    with OTLPCollector(behavior) as collector:
        async with hl.HiveBoard(otlp_endpoint=collector.url, flush_interval=0.05) as hb:
            agent = hb.agent("retry", heartbeat_interval=0)
            await _work(agent, 1)
            assert await hb.aflush(timeout=10)
            otlp = _otlp(hb)
            assert otlp["retries"] == 1 and otlp["sent"] == otlp["finished"]
        assert collector.statuses[:2] == [status, 200]
        waited = collector.times[1] - collector.times[0]
        # "1" second, or an HTTP-date 2.5 s ahead (one-second resolution: 1.5 s at least)
        assert waited >= (0.95 if status == 429 else 1.45)


async def test_partial_success_drops_only_the_rejected() -> None:
    def behavior(n: int, spans: list[dict[str, Any]]) -> Any:
        return ("partial", 2, "two spans too old") if n == 0 else "ok"

    with OTLPCollector(behavior) as collector:
        async with hl.HiveBoard(
            otlp_endpoint=collector.url, otlp_protocol="http/json", flush_interval=0.05
        ) as hb:
            agent = hb.agent("partial", heartbeat_interval=0)
            await _work(agent, 2)
            assert await hb.aflush(timeout=10)
            otlp = _otlp(hb)
            assert otlp["dropped"]["rejected"] == 2 and otlp["partial_rejected"] == 2
            assert otlp["sent"] == otlp["finished"] - 2
            assert otlp["retries"] == 0
            assert "2 spans rejected" in (otlp["last_error"] or "")
        assert collector.content_types[0] == "application/json"
        assert len(collector.spans) == otlp["sent"]


async def test_non_retryable_status_is_dropped_at_once() -> None:
    with OTLPCollector(lambda n, spans: ("status", 400, {})) as collector:
        async with hl.HiveBoard(otlp_endpoint=collector.url, flush_interval=0.05) as hb:
            agent = hb.agent("bad", heartbeat_interval=0)
            await _work(agent, 1)
            assert await hb.aflush(timeout=10)
            otlp = _otlp(hb)
            assert otlp["dropped"]["rejected"] == otlp["finished"] and otlp["retries"] == 0
            assert "nope" in (otlp["last_error"] or "")
        assert collector.requests >= 1


async def test_open_task_at_shutdown_is_exported_as_still_open() -> None:
    with OTLPCollector() as collector:
        hb = hl.HiveBoard(otlp_endpoint=collector.url, flush_interval=0.05)
        await hb.start()
        agent = hb.agent("open", heartbeat_interval=0)
        task = agent.start_task("forever")
        result = await hb.aclose(timeout=5)
        assert not result.timed_out
        otlp = _otlp(hb)
        assert otlp["sent"] == otlp["finished"] == 2 and otlp["open_spans"] == 0
        (root,) = [s for s in collector.spans if s["name"] == "invoke_agent open"]
        assert root["status"] == (2, "still open at shutdown")
        assert root["trace_id"] == tc.trace_id_for_run(task.task_run_id)


async def test_shutdown_is_bounded_when_the_collector_hangs() -> None:
    with FaultServer() as board, OTLPCollector(lambda n, spans: "hang") as collector:
        hb = hl.HiveBoard(
            api_key="hb_test_x",
            endpoint=board.url,
            otlp_endpoint=collector.url,
            flush_interval=0.05,
        )
        await hb.start()
        agent = hb.agent("hang", heartbeat_interval=0)
        await _work(agent, 1)
        assert await _until(lambda: collector.requests >= 1)
        t0 = time.monotonic()
        await hb.aclose(timeout=1.0)
        assert time.monotonic() - t0 < 2.0
        stats = _hb_invariant(hb)
        assert stats["sent"] == stats["recorded"]  # HiveBoard got everything meanwhile
        otlp = _otlp(hb)
        assert otlp["dropped"]["shutdown"] == otlp["finished"] > 0
        assert otlp["pending"] == otlp["in_flight"] == 0


def test_thread_mode_and_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPCollector() as collector:
        monkeypatch.delenv("HIVELOOP_API_KEY", raising=False)
        monkeypatch.setenv("HIVELOOP_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("HIVELOOP_OTLP_HEADERS", "api-key=s3cr3t")
        monkeypatch.setenv("HIVELOOP_OTLP_SERVICE_NAME", "checkout")
        hb = hl.HiveBoard(flush_interval=0.05)
        assert hb.settings.ingest is False
        assert "s3cr3t" not in repr(hb.settings)
        agent = hb.agent("env-agent", heartbeat_interval=0)
        with agent.task("sync"), agent.track_context("step"):
            pass
        assert hb.flush(timeout=10)
        stats = _hb_invariant(hb)
        assert stats["sent"] == stats["recorded"]  # handed to OTLP: nothing else to send to
        hb.shutdown(timeout=2)
        assert collector.headers[0]["api-key"] == "s3cr3t"
        assert {s["resource"]["service.name"] for s in collector.spans} == {"checkout"}
        assert {s["name"] for s in collector.spans} >= {"invoke_agent env-agent", "step"}


def test_bad_otlp_settings_raise() -> None:
    with pytest.raises(HiveLoopConfigError):
        hl.HiveBoard(otlp_endpoint="nope")
    with pytest.raises(HiveLoopConfigError):
        hl.HiveBoard(otlp_endpoint="http://127.0.0.1:1", otlp_protocol="grpc")
    with pytest.raises(HiveLoopConfigError):
        hl.HiveBoard(otlp_endpoint="http://127.0.0.1:1", otlp_headers="broken")


async def test_sampling_decides_for_both_destinations() -> None:
    with FaultServer() as board, OTLPCollector() as collector:
        async with hl.HiveBoard(
            api_key="hb_test_x",
            endpoint=board.url,
            otlp_endpoint=collector.url,
            sample_rate=0.0,  # every tree sampled out, but failed ones kept whole
            flush_interval=0.05,
        ) as hb:
            agent = hb.agent("sampled", heartbeat_interval=0)
            runs = await _work(agent, 3)  # the last task fails
            assert await hb.aflush(timeout=10)
            otlp = _otlp(hb)
        roots = [s for s in collector.spans if s["name"] == "invoke_agent sampled"]
        assert [s["trace_id"] for s in roots] == [tc.trace_id_for_run(runs[-1])]
        kept = {s["trace_id"] for s in collector.spans if s["name"] != "hiveloop.agent_registered"}
        assert kept == {tc.trace_id_for_run(runs[-1])}
        assert otlp["sent"] == SPANS_PER_TASK + 1
        assert {e.get("task_run_id") for e in board.events} == {None, runs[-1]}


async def test_a_burst_goes_out_in_full_batches_and_a_quiet_span_at_once() -> None:
    """Spans recorded faster than they are sent go in requests of ``batch_size`` spans (not
    one small request per drain slice); a lone span after the burst is not held back for a
    batch to fill: it goes out once the engine has drained it."""
    sizes: list[int] = []

    def behavior(n: int, spans: list[dict[str, Any]]) -> Any:
        sizes.append(len(spans))
        return "ok"

    with OTLPCollector(behavior) as collector:
        async with hl.HiveBoard(otlp_endpoint=collector.url, flush_interval=0.05) as hb:
            agent = hb.agent("burst", heartbeat_interval=0)
            assert await hb.aflush(timeout=10)  # agent_registered: its own span and request
            first = len(sizes)
            n = 1300
            for i in range(n):  # no await: the whole burst is queued before the drain
                with agent.task(f"t{i}"):
                    pass
            assert await hb.aflush(timeout=30)
            burst = sizes[first:]
            assert sum(burst) == n
            assert burst[:-1] == [512] * (len(burst) - 1) and 0 < burst[-1] <= 512
            before = len(sizes)
            t0 = time.monotonic()
            with agent.task("quiet"):
                pass
            assert await _until(lambda: len(sizes) > before, timeout=5)
            assert sizes[before:] == [1]
            # Sent after the next drain (flush_interval 0.05 s), not after a batch timeout.
            assert time.monotonic() - t0 < 2.0
            assert _otlp(hb)["sent"] == sum(sizes) == first + n + 1


#: Payloads holding secrets: as values, under sensitive key spellings (a Kelvin sign for the
#: K of TOKEN), and as a key; the clean value of the last pair must stay as it is.
_OPENAI = "sk-" + "proj-" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
_AWS = "AKIA" + "IOSFODNN7EXAMPLE"
_SECRET_PAYLOADS: list[dict[str, Any]] = [
    {"note": f"use {_OPENAI} here", "rows": 3},
    {"TO\u212aEN": "tok-value-1", "Api-Key": "k-value-2", "x_password": "hunter2hunter2"},
    {_AWS: "as a key", "plain": "nothing to see"},
]


def _expected_payloads() -> list[dict[str, Any]]:
    """Each payload as the scrubber gives it in a wire event (the reference)."""
    scrubber = Scrubber()
    out: list[dict[str, Any]] = []
    for payload in _SECRET_PAYLOADS:
        event: dict[str, Any] = {"event_type": "action_completed", "payload": dict(payload)}
        assert scrubber.scrub_event(event) > 0
        out.append(event["payload"])
    return out


@pytest.mark.parametrize("both", [False, True], ids=["otlp-alone", "both"])
@pytest.mark.parametrize("sampled", [False, True], ids=["unsampled", "sampler"])
async def test_otlp_spans_are_scrubbed_exactly_as_hiveboard_events(
    both: bool, sampled: bool
) -> None:
    """What reaches the OTLP wire is scrubbed as the wire events are (the sender decodes each
    event once and feeds the scrubbed dict to the span assembler; with a sampler it feeds
    the scrubbed bytes): every payload key and value on the spans is the reference's."""
    expected = _expected_payloads()
    with FaultServer() as board, OTLPCollector() as collector:
        kwargs: dict[str, Any] = {"otlp_endpoint": collector.url, "flush_interval": 0.05}
        if both:
            kwargs.update(api_key="hb_test_x", endpoint=board.url)
        if sampled:
            kwargs.update(sampler=lambda task: True)
        async with hl.HiveBoard(**kwargs) as hb:
            agent = hb.agent("scrubbed", heartbeat_interval=0)
            async with agent.task("t-scrub"):
                for i, payload in enumerate(_SECRET_PAYLOADS):
                    async with agent.track_context(f"step{i}") as step:
                        step.set_payload(payload)
            assert await hb.aflush(timeout=10)
            otlp = _otlp(hb)
            assert otlp["sent"] == otlp["finished"] and otlp["dropped_total"] == 0
        text = repr(collector.spans) + repr(board.events)
        for secret in (_OPENAI, _AWS, "tok-value-1", "k-value-2", "hunter2hunter2"):
            assert secret not in text
        prefix = "hiveloop.payload."
        for i, want in enumerate(expected):
            (span,) = [s for s in collector.spans if s["name"] == f"step{i}"]
            got = {k[len(prefix) :]: v for k, v in span["attrs"].items() if k.startswith(prefix)}
            assert got == want
            if both:
                (wire,) = [
                    e
                    for e in board.events
                    if e["event_type"] == "action_completed"
                    and e["payload"].get("action_name") == f"step{i}"
                ]
                assert {k: wire["payload"][k] for k in want} == want
