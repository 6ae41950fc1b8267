"""The OTLP mapping and encodings: real SDK events in, official opentelemetry-proto out.

Events are recorded with the real SDK (``capture_events``: the exact wire dicts the sender
builds), fed to the :class:`SpanAssembler`, encoded both ways, and decoded with the official
classes: ``ExportTraceServiceRequest.FromString`` for protobuf and
``google.protobuf.json_format.Parse`` for OTLP/JSON (after turning its hex ids into the
base64 that the generic protobuf JSON mapping expects; OTLP/JSON differs only there). Every
test then reads the decoded request, so an encoder that loses or garbles a field fails it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

pytest.importorskip("opentelemetry.proto")

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

import hiveloop_async as hl
from hiveloop_async import _tracecontext as tc
from hiveloop_async._exceptions import HiveLoopConfigError
from hiveloop_async._otlp import (
    STILL_OPEN,
    Limits,
    Span,
    SpanAssembler,
    classify_response,
    encode_json,
    encode_protobuf,
    encode_protobuf_official,
    parse_headers,
    parse_protocol,
    parse_retry_after,
    resolve_otlp,
    traces_url,
)
from hiveloop_async._otlp._spans import parse_timestamp
from hiveloop_async.testing import EventCapture, capture_events

Pairs = list[tuple[dict[str, Any], dict[str, Any]]]


@pytest.fixture
def hb() -> Iterator[hl.HiveBoard]:
    client = hl.HiveBoard(api_key="hb_test_x", enabled=False, environment="staging")
    yield client
    client.shutdown(timeout=0)


@pytest.fixture
def agent(hb: hl.HiveBoard) -> hl.Agent:
    return hb.agent("otlp-agent", type="sales", version="2.1")


def wire(cap: EventCapture) -> Pairs:
    """The captured events with their envelopes, as the sender would batch them."""
    return [(cap.envelope(ev), ev) for ev in cap.events]


def assemble(pairs: Pairs, asm: SpanAssembler | None = None, *, close: bool = True) -> list[Span]:
    asm = asm if asm is not None else SpanAssembler()
    spans: list[Span] = []
    for envelope, ev in pairs:
        spans.extend(asm.add(envelope, ev))
    if close:
        spans.extend(asm.close())
    return spans


# -- decoding with the official classes --------------------------------------------------------


def _hex_to_b64(obj: Any) -> Any:
    """OTLP/JSON ids are hex; the generic protobuf JSON mapping reads bytes as base64."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                assert value == value.lower() and len(value) in (16, 32)
                out[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                out[key] = _hex_to_b64(value)
        return out
    if isinstance(obj, list):
        return [_hex_to_b64(v) for v in obj]
    return obj


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    doc = orjson.loads(body)
    request: ExportTraceServiceRequest = json_format.Parse(
        orjson.dumps(_hex_to_b64(doc)), ExportTraceServiceRequest()
    )
    return request


def _any(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_any(v) for v in value.array_value.values]
    return getattr(value, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any(kv.value) for kv in kvs}


def decoded(spans: list[Span]) -> list[dict[str, Any]]:
    """Both encodings decoded; asserts they decode to the same request; returns its spans
    as plain dicts (ids hex), in request order."""
    body = encode_protobuf(spans)
    # The hand-rolled encoder writes exactly what the official classes write.
    assert body == encode_protobuf_official(spans)
    from_pb = ExportTraceServiceRequest.FromString(body)
    from_json = decode_json(encode_json(spans))
    assert from_pb == from_json
    out = []
    for rs in from_pb.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            assert ss.scope.name == "hiveloop_async"
            for s in ss.spans:
                out.append(
                    {
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex() or None,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attrs": _attrs(s.attributes),
                        "events": [
                            (e.name, _attrs(e.attributes), e.time_unix_nano) for e in s.events
                        ],
                        "links": [(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                        "status": (s.status.code, s.status.message),
                        "resource": resource,
                        "dropped_attributes": s.dropped_attributes_count,
                        "dropped_events": s.dropped_events_count,
                    }
                )
    return out


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in spans}


def run(coro_fn: Callable[[], Any]) -> None:
    asyncio.run(coro_fn())


# -- the mapping -----------------------------------------------------------------------------


async def test_nested_tree_names_parents_ids_and_resource(agent: hl.Agent) -> None:
    tool = hl.tool_payload(args={"query": "acme"}, result="5 hits", tool_category="web")

    async def record() -> str:
        async with agent.task("lead-1", project="sales", type="qualify") as task:  # noqa: SIM117
            async with agent.track_context("research") as research:
                async with agent.track_context("web_search") as search:
                    search.set_payload(tool)
                async with agent.track_context("summarize"):
                    task.llm_call(
                        "summarize", "claude-haiku", tokens_in=40, tokens_out=60, cost=0.0003,
                        duration_ms=250,
                    )  # fmt: skip
                research.set_payload({"sources": 5, "nested": {"depth": {"ok": True}}})
        return task.task_run_id

    async with capture_events() as cap:
        run_id = await record()
    spans = decoded(assemble(wire(cap)))
    named = by_name(spans)
    assert set(named) == {
        "invoke_agent otlp-agent",
        "research",
        "execute_tool web_search",
        "summarize",
        "chat claude-haiku",
    }
    trace = tc.trace_id_for_run(run_id)
    assert {s["trace_id"] for s in spans} == {trace}
    root = named["invoke_agent otlp-agent"]
    assert root["span_id"] == tc.span_id_for(run_id) and root["parent"] is None
    assert root["kind"] == 1  # INTERNAL
    assert root["attrs"]["gen_ai.operation.name"] == "invoke_agent"
    assert root["attrs"]["gen_ai.agent.name"] == "otlp-agent"
    assert root["attrs"]["gen_ai.agent.version"] == "2.1"
    assert root["attrs"]["hiveloop.task.id"] == "lead-1"
    assert root["attrs"]["hiveloop.task.run_id"] == run_id
    assert root["attrs"]["hiveloop.project.id"] == "sales"
    assert root["attrs"]["hiveloop.task.type"] == "qualify"
    assert root["attrs"]["hiveloop.task.status"] == "success"
    assert root["status"] == (0, "")
    research_span = named["research"]
    assert research_span["parent"] == root["span_id"]
    assert research_span["attrs"]["hiveloop.payload.sources"] == 5
    assert research_span["attrs"]["hiveloop.payload.nested.depth.ok"] is True
    assert "gen_ai.operation.name" not in research_span["attrs"]
    tool = named["execute_tool web_search"]
    assert tool["parent"] == research_span["span_id"]
    assert tool["attrs"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attrs"]["gen_ai.tool.name"] == "web_search"
    assert tool["attrs"]["hiveloop.payload.args.query"] == "acme"
    assert tool["attrs"]["hiveloop.payload.tool_category"] == "web"
    summarize = named["summarize"]
    chat = named["chat claude-haiku"]
    assert (
        chat["parent"] == summarize["span_id"] and summarize["parent"] == research_span["span_id"]
    )
    assert chat["kind"] == 3  # CLIENT
    assert chat["attrs"]["gen_ai.request.model"] == "claude-haiku"
    assert chat["attrs"]["gen_ai.response.model"] == "claude-haiku"
    assert chat["attrs"]["gen_ai.provider.name"] == "anthropic"
    assert chat["attrs"]["gen_ai.usage.input_tokens"] == 40
    assert chat["attrs"]["gen_ai.usage.output_tokens"] == 60
    assert chat["attrs"]["hiveloop.llm.cost"] == pytest.approx(0.0003)
    assert chat["end"] - chat["start"] == 250_000_000
    assert "gen_ai.input.messages" not in chat["attrs"]
    for s in spans:  # children inside their parents' time, ids as derived
        assert s["start"] <= s["end"]
    assert root["start"] <= research_span["start"] and research_span["end"] <= root["end"]
    res = root["resource"]
    assert res["service.name"] == "otlp-agent"
    assert res["telemetry.sdk.name"] == "hiveloop-async"
    assert res["telemetry.sdk.version"] == hl.__version__
    assert res["telemetry.sdk.language"] == "python"
    assert res["deployment.environment.name"] == "staging"
    assert res["hiveloop.agent.type"] == "sales"


async def test_failures_give_error_status_and_exception_events(agent: hl.Agent) -> None:
    async def failing() -> None:
        async with agent.task("lead-2"):
            try:
                async with agent.track_context("enrich"):
                    raise ConnectionError("enrichment API timeout")
            except ConnectionError:
                pass
            raise RuntimeError("gave up")

    async with capture_events() as cap:
        with pytest.raises(RuntimeError):
            await failing()
    named = by_name(decoded(assemble(wire(cap))))
    enrich = named["enrich"]
    assert enrich["status"] == (2, "ConnectionError: enrichment API timeout")
    assert enrich["attrs"]["error.type"] == "ConnectionError"
    assert enrich["attrs"]["hiveloop.action.status"] == "failure"
    (exc,) = enrich["events"]
    assert exc[0] == "exception"
    assert exc[1] == {
        "exception.type": "ConnectionError",
        "exception.message": "enrichment API timeout",
    }
    assert exc[2] == enrich["end"]
    assert "hiveloop.payload.exception_type" not in enrich["attrs"]
    root = named["invoke_agent otlp-agent"]
    assert root["status"] == (2, "RuntimeError: gave up")
    assert root["events"][-1][1]["exception.type"] == "RuntimeError"


async def test_cancelled_task_is_an_error_marked_cancelled(agent: hl.Agent) -> None:
    async def body() -> None:
        async with agent.task("cancel-me"):
            await asyncio.sleep(10)

    async with capture_events() as cap:
        job = asyncio.ensure_future(body())
        await asyncio.sleep(0.01)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
    (root,) = decoded(assemble(wire(cap)))
    assert root["status"][0] == 2 and root["status"][1].startswith("CancelledError")
    assert root["events"][0][1]["hiveloop.cancelled"] is True


async def test_every_other_event_kind_is_a_span_event_where_it_happened(
    agent: hl.Agent,
) -> None:
    async with capture_events() as cap, agent.task("lead-3") as task:
        task.plan("qualify", ["search", "score"])
        task.plan_step(0, "started", "searching")
        task.escalate("needs a human", assigned_to="ops", reason="vip")
        task.request_approval("send the offer?", approver="lead")
        task.approval_received("ok", approved_by="lead")
        task.retry("again", attempt=2, backoff_seconds=1.5)
        task.event("custom", {"kind": "delegation", "summary": "to research"})
        async with agent.track_context("score") as score:
            task.plan_step(1, "completed", "scored", tokens=12)
            task.event("custom", {"kind": "note", "data": {"x": [1, 2, 3]}})
            score.set_payload({"score": 0.9})
    named = by_name(decoded(assemble(wire(cap))))
    root_events = [(name, attrs) for name, attrs, _ in named["invoke_agent otlp-agent"]["events"]]
    names = [name for name, _ in root_events]
    assert names == [
        "hiveloop.plan_created",
        "hiveloop.plan_step",
        "hiveloop.escalated",
        "hiveloop.approval_requested",
        "hiveloop.approval_received",
        "hiveloop.retry_started",
        "hiveloop.delegation",
    ]
    attrs = dict(root_events)
    assert attrs["hiveloop.plan_created"]["hiveloop.payload.data.goal"] == "qualify"
    assert attrs["hiveloop.escalated"]["hiveloop.payload.data.assigned_to"] == "ops"
    assert attrs["hiveloop.escalated"]["hiveloop.severity"] == "warn"
    assert attrs["hiveloop.approval_requested"]["hiveloop.payload.data.approver"] == "lead"
    assert attrs["hiveloop.approval_received"]["hiveloop.payload.data.decision"] == "approved"
    assert attrs["hiveloop.retry_started"]["hiveloop.payload.data.backoff_seconds"] == 1.5
    assert attrs["hiveloop.plan_step"]["hiveloop.payload.summary"] == "Step 0 started: searching"
    score_events = {name: a for name, a, _ in named["score"]["events"]}
    assert set(score_events) == {"hiveloop.plan_step", "hiveloop.note"}
    assert score_events["hiveloop.note"]["hiveloop.payload.data.x"] == [1, 2, 3]
    assert score_events["hiveloop.plan_step"]["hiveloop.payload.data.tokens"] == 12


async def test_agent_level_events_are_spans_of_their_own_heartbeats_opt_in(
    hb: hl.HiveBoard,
) -> None:
    async with capture_events() as cap:
        agent = hb.agent("lonely")  # agent_registered
        agent.report_issue("disk almost full", "high", issue_id="disk", category="infra")
        agent.todo("t-1", "created", "call back")
        agent.scheduled([{"name": "nightly", "next_run": "2026-12-07T02:00:00Z"}])
        agent.queue_snapshot(3, oldest_age_seconds=12)
        agent.event("heartbeat", {"load": 0.5})
        agent.llm_call("route", "gpt-4o", tokens_in=3, tokens_out=4)
    pairs = wire(cap)
    spans = decoded(assemble(pairs))
    names = [s["name"] for s in spans]
    assert names == [
        "hiveloop.agent_registered",
        "hiveloop.issue",
        "hiveloop.todo",
        "hiveloop.scheduled",
        "chat gpt-4o",
    ]
    for s in spans:
        assert s["parent"] is None
        assert s["trace_id"] == tc.trace_id_for_run(s["attrs"]["hiveloop.event.id"])
    issue = by_name(spans)["hiveloop.issue"]
    assert issue["status"] == (2, "disk almost full")  # the issue's severity "high" -> error
    assert issue["attrs"]["hiveloop.payload.data.category"] == "infra"
    assert by_name(spans)["chat gpt-4o"]["attrs"]["gen_ai.provider.name"] == "openai"
    asm = SpanAssembler(export_agent_events=True)
    more = [s["name"] for s in decoded(assemble(pairs, asm))]
    assert "hiveloop.queue_snapshot" in more and "hiveloop.heartbeat" in more
    quiet = SpanAssembler()
    assemble(pairs, quiet)
    assert quiet.stats.skipped == 2


async def test_llm_previews_only_with_content_capture(agent: hl.Agent) -> None:
    async with capture_events() as cap, agent.task("lead-4") as task:
        task.llm_call(
            "reason",
            "claude-sonnet",
            tokens_in=1,
            tokens_out=2,
            prompt_preview="secret prompt",
            response_preview="secret answer",
            metadata={"response_model": "claude-sonnet-2026", "finish_reason": "stop"},
        )
    pairs = wire(cap)
    off = by_name(decoded(assemble(pairs)))["chat claude-sonnet"]["attrs"]
    assert not any("secret" in str(v) for v in off.values())
    assert off["gen_ai.response.model"] == "claude-sonnet-2026"
    assert off["hiveloop.llm.metadata.finish_reason"] == "stop"
    on = by_name(decoded(assemble(pairs, SpanAssembler(capture_content=True))))
    attrs = on["chat claude-sonnet"]["attrs"]
    assert orjson.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "secret prompt"}]}
    ]
    assert orjson.loads(attrs["gen_ai.output.messages"])[0]["parts"][0]["content"] == (
        "secret answer"
    )
    assert attrs["input.value"] == "secret prompt"


async def test_openinference_attributes_can_be_turned_off(agent: hl.Agent) -> None:
    async with capture_events() as cap, agent.task("t") as task:
        task.llm_call("r", "m", tokens_in=1, tokens_out=2)
    pairs = wire(cap)
    on = by_name(decoded(assemble(pairs)))["chat m"]["attrs"]
    assert on["llm.token_count.total"] == 3 and on["openinference.span.kind"] == "LLM"
    off = by_name(decoded(assemble(pairs, SpanAssembler(openinference=False))))["chat m"]
    assert not [k for k in off["attrs"] if k.startswith(("llm.", "openinference."))]


async def test_still_open_at_shutdown(agent: hl.Agent) -> None:
    async with capture_events() as cap:
        task = agent.start_task("never-ends")
        scope = agent.track_context("stuck")
        await scope.__aenter__()
    asm = SpanAssembler()
    assert assemble(wire(cap), asm, close=False) == []
    assert asm.open_spans == 2
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    closed = asm.close(int(now.timestamp()) * 1_000_000_000)
    spans = decoded(closed)
    assert [s["name"] for s in spans] == ["stuck", "invoke_agent otlp-agent"]
    for s in spans:
        assert s["status"] == (2, STILL_OPEN)
        assert s["end"] == int(now.timestamp()) * 1_000_000_000
    assert asm.open_spans == 0
    await scope.__aexit__(None, None, None)
    task.complete()


async def test_inherited_trace_context_and_late_caller_link(agent: hl.Agent) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with capture_events() as cap, agent.task("callee") as task:
        async with agent.track_context("work"):
            pass
        task.set_payload({"trace_id": caller_trace, "parent_span_id": caller_span})
    pairs = wire(cap)
    # Known only at the end (set_payload): the tree stays whole under its own trace, and the
    # task span links to the caller.
    named = by_name(decoded(assemble(pairs)))
    root = named["invoke_agent otlp-agent"]
    assert root["trace_id"] == tc.trace_id_for_run(task.task_run_id)
    assert root["links"] == [(caller_trace, caller_span)]
    assert named["work"]["trace_id"] == root["trace_id"]
    # Known at the start (the task_started payload): the task joins the caller's trace.
    started = dict(pairs[0][1])
    assert started["event_type"] == "task_started"
    started["payload"] = {**started["payload"], "trace_id": caller_trace,
                          "parent_span_id": caller_span}  # fmt: skip
    joined = by_name(decoded(assemble([(pairs[0][0], started), *pairs[1:]])))
    root = joined["invoke_agent otlp-agent"]
    assert root["trace_id"] == caller_trace and root["parent"] == caller_span
    assert root["links"] == []
    assert joined["work"]["trace_id"] == caller_trace
    assert joined["work"]["parent"] == tc.span_id_for(task.task_run_id)


async def test_200_concurrent_tasks_keep_their_trees_apart(agent: hl.Agent) -> None:
    async def one(i: int) -> str:
        async with agent.task(f"job-{i}") as task:
            async with agent.track_context("fetch") as fetch:
                await asyncio.sleep(0.001 * (i % 7))
                async with agent.track_context("parse"):
                    await asyncio.sleep(0)
                fetch.set_payload({"i": i})
            task.llm_call("answer", "gpt-4o-mini", tokens_in=i, tokens_out=2 * i)
            if i % 10 == 0:
                raise ValueError(f"job {i} failed")
        return task.task_run_id

    async with capture_events() as cap:
        results = await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, ValueError)]
    assert len(failed) == 20
    asm = SpanAssembler()
    spans = decoded(assemble(wire(cap), asm))
    assert len(spans) == 800 and asm.stats.spans == 800 and asm.open_spans == 0
    traces: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        traces.setdefault(s["trace_id"], []).append(s)
    assert len(traces) == 200
    errors = 0
    for tree in traces.values():
        named = by_name(tree)
        root = named["invoke_agent otlp-agent"]
        i = int(root["attrs"]["hiveloop.task.id"].split("-")[1])
        assert root["trace_id"] == tc.trace_id_for_run(root["attrs"]["hiveloop.task.run_id"])
        assert named["fetch"]["parent"] == root["span_id"]
        assert named["parse"]["parent"] == named["fetch"]["span_id"]
        assert named["chat gpt-4o-mini"]["parent"] == root["span_id"]
        assert named["fetch"]["attrs"]["hiveloop.payload.i"] == i
        assert named["chat gpt-4o-mini"]["attrs"]["gen_ai.usage.output_tokens"] == 2 * i
        errors += root["status"][0] == 2
    assert errors == 20


# -- bounds ------------------------------------------------------------------------------------


async def test_open_spans_are_bounded_and_an_evicted_span_still_ends(agent: hl.Agent) -> None:
    async with capture_events() as cap:
        tasks = [agent.start_task(f"t{i}") for i in range(3)]
        for t in tasks:
            t.complete()
    asm = SpanAssembler(max_open_spans=2)
    spans = decoded(assemble(wire(cap), asm))
    assert asm.stats.evicted == 1
    assert sorted(s["attrs"]["hiveloop.task.id"] for s in spans) == ["t0", "t1", "t2"]
    evicted = next(s for s in spans if s["attrs"]["hiveloop.task.id"] == "t0")
    (ended,) = [
        ev for ev in cap.events if ev["event_type"] == "task_completed" and ev["task_id"] == "t0"
    ]
    # Started from the closing event's duration_ms (0, or a few ms on a loaded machine).
    assert evicted["end"] - evicted["start"] == ended["duration_ms"] * 1_000_000


async def test_attribute_and_event_limits(agent: hl.Agent) -> None:
    async with capture_events() as cap, agent.task("big") as task:
        for i in range(5):
            task.event("custom", {"kind": "note", "summary": f"n{i}"})
        async with agent.track_context("wide") as wide:
            wide.set_payload(
                {
                    "long": "x" * 100,
                    "mixed": [1, "a", None],
                    "empty": [],
                    "none": None,
                    "huge": 2**70,
                    **{f"k{i}": i for i in range(20)},
                }
            )
    limits = Limits(max_attributes=12, max_value_length=10, max_events_per_span=3)
    asm = SpanAssembler(limits=limits, openinference=False)
    named = by_name(decoded(assemble(wire(cap), asm)))
    wide_span = named["wide"]
    assert len(wide_span["attrs"]) == 12 and wide_span["dropped_attributes"] > 0
    assert wide_span["attrs"]["hiveloop.payload.long"] == "x" * 9 + "…"
    assert wide_span["attrs"]["hiveloop.payload.mixed"] == '[1,"a",nu…'
    assert wide_span["attrs"]["hiveloop.payload.huge"] == str(2**70)[:9] + "…"
    assert "hiveloop.payload.none" not in wide_span["attrs"]
    root = named["invoke_agent otlp-agent"]
    assert len(root["events"]) == 3 and root["dropped_events"] == 2
    assert asm.stats.events_dropped == 2


def test_malformed_events_are_counted_not_raised() -> None:
    asm = SpanAssembler()
    env = {"agent_id": "a"}
    assert asm.add(env, {"no": "type"}) == []
    assert asm.add(env, {"event_type": 5}) == []
    assert asm.add(env, {"event_type": "action_completed", "timestamp": "garbage"})[0].name
    assert asm.stats.malformed == 2


def test_timestamps() -> None:
    assert parse_timestamp("2026-12-06T19:12:40.123Z", 0) == 1796584360123 * 1_000_000
    assert parse_timestamp("2026-12-06T19:12:40.123456+00:00", 0) == 1796584360123456000
    assert parse_timestamp("nope", 7) == 7
    assert parse_timestamp(None, 7) == 7


# -- responses -----------------------------------------------------------------------------------


def _partial(rejected: int, message: str) -> ExportTraceServiceResponse:
    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
    )


def test_success_and_partial_success_in_both_encodings() -> None:
    pb = {"Content-Type": "application/x-protobuf"}
    js = {"content-type": "application/json"}
    assert classify_response(200, pb, b"", now=0).verdict == "success"
    assert classify_response(200, pb, ExportTraceServiceResponse().SerializeToString(), now=0)
    out = classify_response(200, pb, _partial(3, "bad spans").SerializeToString(), now=0)
    assert (out.verdict, out.rejected, out.message) == ("partial", 3, "bad spans")
    body = json_format.MessageToJson(_partial(2, "too old")).encode()
    out = classify_response(200, js, body, now=0)
    assert (out.verdict, out.rejected, out.message) == ("partial", 2, "too old")
    warn = classify_response(
        200, js, json_format.MessageToJson(_partial(0, "slow")).encode(), now=0
    )
    assert (warn.verdict, warn.message) == ("success", "slow")
    assert classify_response(202, js, b"{}", now=0).verdict == "success"


def test_retryable_statuses_and_retry_after() -> None:
    now = 1_800_000_000.0
    for status in (429, 502, 503, 504):
        out = classify_response(status, {"Retry-After": "7"}, b"", now=now)
        assert (out.verdict, out.retry_after) == ("retry", 7.0)
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert classify_response(503, {"retry-after": date}, b"", now=now).retry_after == 30.0
    assert classify_response(429, {}, b"", now=now).retry_after is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(email.utils.formatdate(now - 5, usegmt=True), now) == 0.0


def test_other_statuses_are_not_retried() -> None:
    # google.rpc.Status { int32 code = 1; string message = 2; } written by hand.
    status_pb = b"\x08\x03\x12\x0bbad request"
    out = classify_response(400, {"Content-Type": "application/x-protobuf"}, status_pb, now=0)
    assert (out.verdict, out.message) == ("drop", "bad request")
    js = classify_response(
        413, {"Content-Type": "application/json"}, b'{"code":8,"message":"too big"}', now=0
    )
    assert (js.verdict, js.message) == ("drop", "too big")
    for status in (400, 401, 403, 404, 500, 501):
        assert classify_response(status, {}, b"", now=0).verdict == "drop"


# -- settings --------------------------------------------------------------------------------


def test_traces_url_rule() -> None:
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp") == "https://c/otlp/v1/traces"
    assert traces_url("http://c:6006/v1/traces") == "http://c:6006/v1/traces"
    for bad in ("127.0.0.1:4318", "ftp://c", "http://", "http://c?x=1"):
        with pytest.raises(HiveLoopConfigError):
            traces_url(bad)


def test_headers_parse_like_otel_exporter_otlp_headers() -> None:
    assert parse_headers("api-key=abc, x-team = a%20b ,,tok=a%3Db") == {
        "api-key": "abc",
        "x-team": "a b",
        "tok": "a=b",
    }
    assert parse_headers("") == {} and parse_headers(None) == {}
    with pytest.raises(HiveLoopConfigError) as err:
        parse_headers("good=1,secretvalue")
    assert "secretvalue" not in str(err.value) and "entry 2" in str(err.value)
    with pytest.raises(HiveLoopConfigError):
        parse_headers("bad key=1")


def test_protocol_and_resolution_from_env() -> None:
    assert parse_protocol(None, protobuf_available=True) == "http/protobuf"
    assert parse_protocol(None, protobuf_available=False) == "http/json"
    assert parse_protocol("HTTP/JSON", protobuf_available=True) == "http/json"
    for bad in ("grpc", "json"):
        with pytest.raises(HiveLoopConfigError):
            parse_protocol(bad, protobuf_available=True)
    with pytest.raises(HiveLoopConfigError):
        parse_protocol("http/protobuf", protobuf_available=False)
    assert resolve_otlp(env={}, protobuf_available=True) is None
    env = {
        "HIVELOOP_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "HIVELOOP_OTLP_HEADERS": "authorization=Bearer%20s3cr3t",
        "HIVELOOP_OTLP_PROTOCOL": "http/json",
        "HIVELOOP_OTLP_SERVICE_NAME": "svc",
        "HIVELOOP_OTLP_CAPTURE_CONTENT": "true",
    }
    settings = resolve_otlp(env=env, protobuf_available=True)
    assert settings is not None
    assert settings.url == "http://127.0.0.1:4318/v1/traces"
    assert settings.headers == {"authorization": "Bearer s3cr3t"}
    assert (settings.protocol, settings.service_name, settings.capture_content) == (
        "http/json",
        "svc",
        True,
    )
    assert "s3cr3t" not in repr(settings) and "authorization" in repr(settings)
    kw = resolve_otlp(endpoint="http://x:1", headers={"a": "b"}, env=env, protobuf_available=True)
    assert kw is not None and kw.url == "http://x:1/v1/traces" and kw.headers == {"a": "b"}
    with pytest.raises(HiveLoopConfigError):
        resolve_otlp(endpoint="http://x", headers="content-type=x", env={}, protobuf_available=True)


def test_service_name_configured(agent: hl.Agent) -> None:
    with capture_events() as cap, agent.task("t"):
        pass
    (span,) = decoded(assemble(wire(cap), SpanAssembler(service_name="checkout")))
    assert span["resource"]["service.name"] == "checkout"
    assert span["resource"]["hiveloop.agent.id"] == "otlp-agent"


def test_hand_rolled_protobuf_is_the_official_encoding_for_every_value_shape() -> None:
    """Byte for byte the ``opentelemetry-proto`` serialization, for values the mapping does
    not give from ordinary events: every AnyValue type and edge, long fields (multi-byte
    varint lengths), dropped counts, a status with only a message, links, two resources."""
    from hiveloop_async._otlp import Link, Resource, SpanEvent

    attrs: dict[str, Any] = {
        "s": "text",
        "empty": "",
        "": "empty key",
        "unicode": "héllo → 世界",
        "long": "x" * 20_000,
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -1,
        "min": -(2**63),
        "max": 2**63 - 1,
        "big": 300_000,
        "pi": 3.25,
        "negzero": -0.0,
        "fzero": 0.0,
        "strs": ["a", "", "b"],
        "ints": [1, -2, 2**40],
        "bools": [True, False],
        "floats": [1.5, -2.0],
    }
    res_a = Resource({"service.name": "a", "k": 1})
    res_b = Resource({"service.name": "b"})
    full = Span(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        parent_span_id="00f067aa0ba902b7",
        name="n" * 200,
        kind=3,
        start_ns=1,
        resource=res_a,
        attributes=attrs,
        end_ns=2**63 + 5,
        events=[
            SpanEvent("e", 7, {"a": 1}, dropped_attributes=2),
            SpanEvent("", 0, {}),
        ],
        links=[Link("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203332", {"l": "x"})],
        status_message="only a message",
        dropped_attributes=20_000,
        dropped_events=1,
    )
    bare = Span(
        trace_id="1" * 32, span_id="2" * 16, parent_span_id=None, name="", kind=0,
        start_ns=0, resource=res_b,
    )  # fmt: skip
    coded = Span(
        trace_id="3" * 32, span_id="4" * 16, parent_span_id=None, name="c", kind=1,
        start_ns=5, resource=res_a, end_ns=6, status_code=2,
    )  # fmt: skip
    for spans in ([full], [bare], [coded], [full, bare, coded, bare], []):
        body = encode_protobuf(spans)
        assert body == encode_protobuf_official(spans)
        assert ExportTraceServiceRequest.FromString(body).SerializeToString() == body
    for bad in (2**63, -(2**63) - 1):
        out_of_range = Span(
            trace_id="1" * 32, span_id="2" * 16, parent_span_id=None, name="x", kind=1,
            start_ns=1, resource=res_b, attributes={"n": bad},
        )  # fmt: skip
        with pytest.raises(ValueError, match="out of range"):
            encode_protobuf([out_of_range])
        with pytest.raises(ValueError, match="out of range"):
            encode_protobuf_official([out_of_range])


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hiveloop_async, hiveloop_async._otlp; "
        "print(any(m.startswith(('opentelemetry', 'google.protobuf')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_protobuf_needs_no_opentelemetry_package() -> None:
    """With ``opentelemetry`` unimportable, protobuf is still the default and encodes."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['opentelemetry'] = None; sys.modules['google'] = None\n"
        "import hiveloop_async as hl\n"
        "from hiveloop_async._otlp import Resource, Span, encode_protobuf\n"
        "hb = hl.HiveBoard(otlp_endpoint='http://127.0.0.1:9', enabled=False)\n"
        "print(hb.stats()['otlp']['protocol'])\n"
        "s = Span('1' * 32, '2' * 16, None, 'x', 1, 5, Resource({'service.name': 'a'}))\n"
        "print(len(encode_protobuf([s])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    protocol, size = out.stdout.split()
    assert protocol == "http/protobuf" and int(size) > 40


def test_what_makes_an_action_a_tool() -> None:
    from hiveloop_async._otlp import is_tool_action

    assert is_tool_action(hl.tool_payload(args={"q": 1}))
    assert is_tool_action({"args": {"q": 1}, "result_preview": "x"})  # the manual's pattern
    assert is_tool_action({"tool_name": "search"})
    assert is_tool_action({"gen_ai.operation.name": "execute_tool"})
    assert not is_tool_action({"result_preview": "x", "sources": 3})
    assert not is_tool_action({})


def test_hand_rolled_protobuf_at_every_short_length_and_small_int() -> None:
    """The encoder's precomputed attribute heads (one-byte lengths, ints 0..127) agree with
    the official classes on both sides of every boundary: string values of 0 to 130 UTF-8
    bytes (ASCII and multi-byte) under keys of 1 to 126 bytes, and ints around 127."""
    from hiveloop_async._otlp import Resource

    res = Resource({"service.name": "s"})
    spans = []
    for key_len in (1, 20, 60, 118, 119, 120, 121, 122, 126):
        key = "k" * key_len
        attrs: dict[str, Any] = {}
        for n in range(131):
            attrs[f"{key}.{n}"] = "v" * n
        attrs[f"{key}.é"] = "é" * 61  # 122 bytes in 61 characters
        for i in (0, 1, 126, 127, 128, 129, 300, 16_383, 16_384, -1):
            attrs[f"{key}.i{i}"] = i
        attrs[key] = True  # a bool is not an int here
        one = Span(
            trace_id="5" * 32, span_id="6" * 16, parent_span_id=None, name="x", kind=1,
            start_ns=1, resource=res, attributes=attrs, end_ns=2,
        )  # fmt: skip
        spans.append(one)
    body = encode_protobuf(spans)
    assert body == encode_protobuf_official(spans)
    (rs,) = ExportTraceServiceRequest.FromString(body).resource_spans
    decoded_attrs = [_attrs(s.attributes) for s in rs.scope_spans[0].spans]
    assert decoded_attrs == [s.attributes for s in spans]


def test_spans_of_two_agents_and_a_replaced_envelope_get_their_own_resource() -> None:
    """The resource is remembered for the last envelope object: another agent's events in
    between, an event naming its own agent, and an agent's new envelope (metadata changed)
    each get the resource their envelope says."""
    ts = "2026-12-07T10:00:00.000Z"

    def llm(n: int, agent: str | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "event_id": f"e{n}", "timestamp": ts, "event_type": "custom",
            "payload": {"kind": "llm_call", "data": {"model": "m"}},
        }  # fmt: skip
        if agent is not None:
            ev["agent_id"] = agent
        return ev

    env_a = {"agent_id": "a", "environment": "prod", "agent_version": "1"}
    env_b = {"agent_id": "b", "environment": "dev"}
    env_a2 = {"agent_id": "a", "environment": "prod", "agent_version": "2"}
    asm = SpanAssembler()
    order = [(env_a, llm(1)), (env_a, llm(2)), (env_b, llm(3)), (env_a, llm(4))]
    order += [(env_a, llm(5, agent="c")), (env_a2, llm(6)), (env_a2, llm(7))]
    spans = [span for envelope, ev in order for span in asm.add(envelope, ev)]
    seen = [
        (
            s.resource.attributes["service.name"],
            s.resource.attributes.get("deployment.environment.name"),
            s.resource.attributes.get("service.version"),
        )
        for s in spans
    ]
    assert seen == [
        ("a", "prod", "1"), ("a", "prod", "1"), ("b", "dev", None), ("a", "prod", "1"),
        ("c", "prod", "1"), ("a", "prod", "2"), ("a", "prod", "2"),
    ]  # fmt: skip
    assert spans[0].resource is spans[1].resource is spans[3].resource
    by_resource = {id(s.resource) for s in spans}
    assert len(by_resource) == 4
    assert [s["resource"]["service.name"] for s in decoded(spans)] == [
        "a", "a", "a", "b", "c", "a", "a",
    ]  # fmt: skip


def test_otlp_json_attributes_decode_like_protobuf_for_every_value_shape() -> None:
    """OTLP/JSON's attribute lists are written as JSON text directly: every AnyValue type,
    escapes, unicode, an empty key, int64 bounds and arrays, on a span, its event, its link
    and its resource, decode (``json_format``) to the request the protobuf bytes give."""
    from hiveloop_async._otlp import Link, Resource, SpanEvent

    attrs: dict[str, Any] = {
        "s": 'quote " backslash \\ newline \n tab \t nul \x00',
        "unicode": "héllo → 世界 \u2028",
        "": "empty key",
        'k"ey': "x",
        "empty": "",
        "t": True,
        "f": False,
        "zero": 0,
        "min": -(2**63),
        "max": 2**63 - 1,
        "pi": 3.25,
        "tiny": 5e-324,
        "strs": ["a", "", "é"],
        "ints": [1, -2, 2**40],
        "bools": [True, False],
        "floats": [1.5, -2.0],
    }
    res = Resource({"service.name": "a", "n": 7, **attrs})
    one = Span(
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
        parent_span_id=None, name="n", kind=1, start_ns=1, resource=res, attributes=attrs,
        end_ns=2, events=[SpanEvent("e", 7, dict(attrs))],
        links=[Link("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203332", dict(attrs))],
    )  # fmt: skip
    bare = Span(
        trace_id="1" * 32, span_id="2" * 16, parent_span_id=None, name="b", kind=1,
        start_ns=1, resource=Resource({"service.name": "b"}), end_ns=2,
    )  # fmt: skip
    for spans in ([one], [bare], [one, bare, one]):
        from_json = decode_json(encode_json(spans))
        assert from_json == ExportTraceServiceRequest.FromString(encode_protobuf(spans))
    decoded_span = decode_json(encode_json([one])).resource_spans[0].scope_spans[0].spans[0]
    assert _attrs(decoded_span.attributes) == attrs
    assert _attrs(decoded_span.events[0].attributes) == attrs
    assert _attrs(decoded_span.links[0].attributes) == attrs
