"""OTLP alone: spans assembled from the queued records, without HiveBoard's JSON in between.

With OTLP as the only destination the sender gives the span assembler each record's wire
event as a dict made from the record (``RecordEvents``), instead of writing the event's JSON,
scrubbing it and decoding it back; a record it cannot vouch for (odd values, cut summaries,
large payloads, anything the scrubber would touch) takes the JSON route. The promise checked
here, on random trees of every event kind (nested tasks and actions, LLM calls, failures,
cancellations, plans, escalations, custom events, payloads with odd values and secrets):

* each dict it gives equals the decoded JSON of the same record (same id sequence), payload
  keys in the same order, and scrubbing that JSON would replace nothing;
* the spans are the same: byte-identical OTLP/protobuf and OTLP/JSON requests, the same
  pipeline counts and the same scrubber counters as the JSON route's, with and without
  scrubbing;
* both routes occur, and the common events take the record route;
* end to end, an OTLP-only client still scrubs what it exports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import itertools
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

import hiveloop_async._otlp_sender as otlp_sender
import hiveloop_async._serialize as serialize
from hiveloop_async import Agent, HiveBoard, tool_payload
from hiveloop_async._otlp import OTLPSettings, encode_json, encode_protobuf
from hiveloop_async._otlp._pipeline import SpanPipeline
from hiveloop_async._otlp_sender import RecordEvents
from hiveloop_async._scrub import Scrubber
from hiveloop_async._serialize import RecordEncoder
from hiveloop_async.testing import capture_events

from .otlpcollector import OTLPCollector

OPENAI = "sk-" + "proj-" + "A1b2C3d4E5f6G7h8J9k0" * 2
BEARER = "Bearer " + "4f2a9c1e8b7d6a5f4e3d2c1b"
OFFSET_NS = 1_765_000_000_000_000_000  # wall minus monotonic time, the same for both routes


class Str(str):
    pass


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _odd(rng: random.Random) -> list[Any]:
    long = "the quick brown fox jumps over the lazy dog " * rng.randint(1, 4)
    return [
        "short",
        long,
        "café → ünïcode ✓ 😀 text",
        'quote " backslash \\ control \x01 newline \n tab \t',
        0,
        -7,
        2**63 - 1,
        -(2**63),
        2**63 + 5,  # beyond int64, within orjson's uint64
        2**64,  # beyond orjson
        2**70,
        3.25,
        -0.0,
        1e300,
        float("nan"),
        float("inf"),
        True,
        False,
        None,
        [],
        {},
        [1, 2, 3],
        [1, "two", 3.0],
        ["a", "b"],
        [True, False],
        [1.5, 2.5],
        [[1], {"k": "v"}],
        ("tuple", 1),
        {"nested": {"deeper": {"deepest": {"bottom": {"d": long}}}, "n": 1}},
        Str("a str subclass"),
        OrderedDict(a=1, b="two"),
        Colour.RED,
        Point(1, 2),
        dt.datetime(2026, 1, 2, 3, 4, 5),
        Decimal("1.5"),
        b"bytes",
        {"set"},
        {1: "int key"},
        "lone \ud800 surrogate",
        OPENAI,
        f"header {BEARER} here",
        "x" * 9000,  # measured by the encoder
        "y" * 40_000,  # shrunk by the encoder
    ]


KEYS = ["query", "rows", "password", "api_key", "args", "result", "tool_name", "kind"]
KEYS += ["summary", "tool_category", "action_name", "function", "cancelled", "data"]
KEYS += ["ünï", "lone \udc00 key"]


def _payload(rng: random.Random, depth: int = 0) -> dict[Any, Any]:
    values = _odd(rng)
    out: dict[Any, Any] = {}
    for _ in range(rng.randint(0, 5)):
        key = rng.choice([*KEYS, f"field_{rng.randint(0, 40)}"])
        value = rng.choice(values) if depth >= 2 or rng.random() > 0.2 else _payload(rng, depth + 1)
        out[key] = value
    return out


def _plain_payload(rng: random.Random) -> dict[str, Any]:
    """A common payload: what integrations and users typically put on an event."""
    return rng.choice(
        [
            {"step": rng.randint(0, 9)},
            {"query": "weather in Paris", "limit": 5, "tags": ["a", "b"]},
            dict(tool_payload(args={"q": "acme"}, result="3 rows", tool_category="db")),
            {"rows": [{"id": 1, "name": "n"}], "ratio": 0.5, "ok": True, "none": None},
        ]
    )


def _any_payload(rng: random.Random) -> Any:
    return _payload(rng) if rng.random() < 0.5 else _plain_payload(rng)


EVENT_TYPES = ["custom", "escalated", "retry_started", "not_a_type", "approval_requested"]
SEVERITIES = [None, "info", "warn", "error", "debug", "loud"]


def _events(agent: Agent, rec: Any, rng: random.Random) -> None:
    """A few events of every kind on ``rec`` (a task or the agent)."""
    for _ in range(rng.randint(0, 3)):
        what = rng.randrange(10)
        if what == 0:
            rec.event(
                rng.choice(EVENT_TYPES),
                rng.choice([None, _any_payload(rng), ["a", "list"], "text"]),
                severity=rng.choice(SEVERITIES),
                parent_event_id=rng.choice([None, "evt-1", 42, "lone \ud800 id"]),
            )
        elif what in (1, 2, 3):
            rec.llm_call(
                rng.choice(["chat", "plan", "summarize"]),
                rng.choice(["gpt-4o", "claude-3-5-sonnet", "", "local-model"]),
                tokens_in=rng.choice([None, 120, 2**70]),
                tokens_out=rng.choice([None, 40]),
                cost=rng.choice([None, 0.0012, float("nan")]),
                duration_ms=rng.choice([None, 5, 1500]),
                prompt_preview=rng.choice([None, "hello"]),
                response_preview=rng.choice([None, "world", OPENAI]),
                metadata=rng.choice([None, {"provider": "openai"}, _payload(rng)]),
            )
        elif what == 4 and hasattr(rec, "plan"):
            rec.plan("reach the goal", ["look", "act", "report"])
            rec.plan_step(rng.randrange(3), rng.choice(["started", "completed", "failed"]), "s")
        elif what == 5 and hasattr(rec, "escalate"):
            rec.escalate(rng.choice([None, "need a human", OPENAI]), assigned_to="ops")
        elif what == 6 and hasattr(rec, "request_approval"):
            rec.request_approval("ok?", approver="lead")
            rec.approval_received("yes", approved_by="lead")
        elif what == 7 and hasattr(rec, "retry"):
            rec.retry("again", attempt=2, backoff_seconds=0.5)
        elif what == 8:
            agent.todo("todo-1", rng.choice(["created", "completed", "failed"]), "write it")
            agent.report_issue("disk almost full", rng.choice(["low", "high", "critical"]))
        else:
            agent.queue_snapshot(depth=rng.randint(0, 5))


def _actions(agent: Agent, task: Any, rng: random.Random, depth: int) -> None:
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(["search", "plan", "ünï step", Str("sub"), "lone \ud800 name"])
        try:
            with agent.track_context(name) as ctx:
                _events(agent, task, rng)
                if depth < 2 and rng.random() < 0.5:
                    _actions(agent, task, rng, depth + 1)
                if rng.random() < 0.6:
                    ctx.set_payload(rng.choice([_any_payload(rng), _plain_payload(rng)]))
                fail = rng.random()
                if fail < 0.1:
                    raise ValueError(rng.choice(["plain failure", f"bad {OPENAI}"]))
                if fail < 0.15:
                    raise asyncio.CancelledError()
        except (ValueError, asyncio.CancelledError):
            pass


def _record_tree(agent: Agent, rng: random.Random, depth: int = 0) -> None:
    """One task (maybe holding nested tasks) with actions and events of every kind."""

    @agent.track("tracked function")
    def tracked(n: int) -> int:
        if n % 4 == 0:
            raise RuntimeError("tracked failure")
        return n

    task_id = rng.choice(["t-1", "task-0123456789abcdef", Str("t-sub"), "é" * 300, OPENAI])
    kwargs: dict[str, Any] = {
        "project": rng.choice([None, "proj", "p " + BEARER]),
        "type": rng.choice([None, "POST /items/{id}"]),
        "correlation_id": rng.choice([None, "corr-1"]),
        "payload": rng.choice([None, _plain_payload(rng), _payload(rng)]),
    }
    try:
        with agent.task(task_id, **kwargs) as task:
            _events(agent, task, rng)
            _actions(agent, task, rng, 0)
            try:
                tracked(rng.randrange(8))
            except RuntimeError:
                pass
            if depth < 1 and rng.random() < 0.3:
                _record_tree(agent, rng, depth + 1)  # a nested task
            if rng.random() < 0.3:
                task.set_payload(rng.choice([_plain_payload(rng), _payload(rng)]))
            end = rng.random()
            if end < 0.1:
                task.fail(payload={"why": rng.choice(["reason", BEARER])})
            elif end < 0.2:
                raise KeyError("task failure")
            elif end < 0.25:
                task.complete(status=rng.choice(["done", "partial"]))
    except KeyError:
        pass


def _records(seed: int, trees: int = 60) -> list[tuple[bool, Any]]:
    client = HiveBoard(api_key="hb_test_x", enabled=False)
    try:
        agent = client.agent("record-agent", type="worker", version="1.2")
        rng = random.Random(seed)
        with capture_events() as cap:
            for _ in range(trees):
                _record_tree(agent, rng)
            _events(agent, agent, rng)  # agent-level events: spans of their own
        records = list(cap._records)
    finally:
        client.shutdown(timeout=0)
    seen: set[int] = set()
    for _, rec in records:  # durations of whole milliseconds and fractions (a fast run has 0)
        if type(rec) is not tuple and id(rec) not in seen:
            seen.add(id(rec))
            rec.t1 = rec.t0 + rng.randint(0, 10**10)
    return records


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Both routes draw event ids from one sequence that the test restarts; both read the
    same wall-clock offset. Returns ``restart(at)``."""
    state = {"next": itertools.count().__next__}

    def new_id() -> str:
        return f"00000000-0000-4000-8000-{state['next']():012x}"

    def restart(at: int) -> None:
        state["next"] = itertools.count(at).__next__

    for module in (serialize, otlp_sender):
        monkeypatch.setattr(module, "new_id_str", new_id)
        monkeypatch.setattr(module, "wall_offset_ns", lambda: OFFSET_NS)
    return restart


def _reset(records: list[tuple[bool, Any]]) -> Iterator[tuple[bool, Any]]:
    for ended, rec in records:
        if type(rec) is not tuple:
            rec.opened = ended
        yield ended, rec


def _deep_ordered(value: Any) -> Any:
    """``value`` with every dict as a list of items: equality then checks key order too."""
    if isinstance(value, dict):
        return [(k, _deep_ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_deep_ordered(v) for v in value]
    return value


@pytest.mark.parametrize(("seed", "scrub"), [(1, True), (2, True), (3, False), (4, False)])
def test_each_record_event_is_its_decoded_wire_json(
    ids: Callable[[int], None], seed: int, scrub: bool
) -> None:
    records = _records(seed)
    scrubber = Scrubber() if scrub else None
    ref = Scrubber()
    encoder = RecordEncoder(scrubber)
    events = RecordEvents(encoder, scrubber)
    fed = total = 0
    kinds: set[str] = set()
    for k, (ended, rec) in enumerate(_reset(records)):
        ids(k)
        out = events.event(rec)
        if type(rec) is not tuple:
            assert rec.opened is (out is not None or ended)  # a record let go is untouched
            rec.opened = ended
        ids(k)
        wire = encoder.encode(rec)
        if wire is None:
            assert out is None
            continue
        total += 1
        if out is None:
            continue
        fed += 1
        assert out[0] is wire[0]
        decoded = orjson.loads(wire[1])
        assert out[1] == decoded
        assert _deep_ordered(out[1].get("payload")) == _deep_ordered(decoded.get("payload"))
        kinds.add(str(decoded["event_type"]))
        if scrub:  # the scrubber's verdict: nothing to replace in what would have been sent
            sent, n = ref.scrub_encoded(wire[1])
            assert n == 0 and sent is wire[1]
    assert total > 1000
    assert 0.3 * total < fed < 0.95 * total  # both routes, and the record route often
    assert {"task_started", "task_completed", "action_started", "action_completed"} <= kinds
    assert {"action_failed", "custom", "escalated"} <= kinds


def _drain_like(
    records: list[tuple[bool, Any]],
    scrubber: Scrubber | None,
    restart: Callable[[int], None],
    *,
    record_route: bool,
) -> tuple[SpanPipeline, int]:
    """The engine's OTLP-only drain of ``records``, by either route (the JSON route as
    ``Engine._drain`` takes it: encode with verdicts, then scrub, decoding once)."""
    pipeline = SpanPipeline(OTLPSettings("http://127.0.0.1:1/v1/traces", "http/protobuf"))
    encoder = RecordEncoder(scrubber)
    events = RecordEvents(encoder, scrubber) if record_route else None
    fed = 0
    for k, (_, rec) in enumerate(_reset(records)):
        restart(k)
        if events is not None:
            out = events.event(rec)
            if out is not None:
                fed += 1
                if scrubber is not None:
                    scrubber.count_clean()
                pipeline.feed_event(out[0].envelope, out[1])
                continue
        if scrubber is not None:
            checked = encoder.encode_checked(rec)
            assert checked is not None
            agent, data, clean = checked
            if clean:
                scrubber.count_clean()
                pipeline.feed_event(agent.envelope, orjson.loads(data))
            else:
                _, event, _ = scrubber.scrub_decoding(data)
                assert event is not None
                pipeline.feed_event(agent.envelope, event)
        else:
            wire = encoder.encode(rec)
            assert wire is not None
            pipeline.feed(wire[0].envelope, wire[1])
    pipeline.close_open(now_ns=OFFSET_NS + 10**18)
    return pipeline, fed


@pytest.mark.parametrize(("seed", "scrub"), [(11, True), (12, True), (13, False)])
def test_record_fed_spans_are_byte_identical_to_the_json_route(
    ids: Callable[[int], None], seed: int, scrub: bool
) -> None:
    records = _records(seed)
    old_scrubber = Scrubber() if scrub else None
    new_scrubber = Scrubber() if scrub else None
    old, none_fed = _drain_like(records, old_scrubber, ids, record_route=False)
    new, fed = _drain_like(records, new_scrubber, ids, record_route=True)
    assert none_fed == 0 and 0.3 * len(records) < fed < 0.95 * len(records)
    old_spans, new_spans = old.take(10**6), new.take(10**6)
    assert len(old_spans) > 500
    assert encode_protobuf(new_spans) == encode_protobuf(old_spans)
    assert encode_json(new_spans) == encode_json(old_spans)
    assert new.counts() == old.counts()
    if old_scrubber is not None and new_scrubber is not None:
        assert new_scrubber.stats() == old_scrubber.stats()
        assert old_scrubber.stats()["events_scrubbed"] > 0


def _shape(spans: list[dict[str, Any]]) -> list[Any]:
    """The spans without their ids (which come from fresh run and event ids): names, the
    tree (parent names), attributes, span events, statuses, resources."""
    names = {s["span_id"]: s["name"] for s in spans}
    skip = ("hiveloop.task.run_id", "hiveloop.event.id", "hiveloop.action.id")
    out = []
    for s in spans:
        attrs = {k: v for k, v in s["attrs"].items() if k not in skip}
        parent = names.get(s["parent"]) if s["parent"] else None
        out.append((s["name"], parent, sorted(attrs.items()), s["events"], s["status"]))
    return sorted(out, key=repr)


async def test_otlp_alone_end_to_end_gives_the_json_routes_spans_and_counters() -> None:
    """A real OTLP-only client (the record route) and one with a keep-all sampler (which
    keeps the JSON route) export the same spans, scrubbed alike, with the same counters."""
    results = []
    for sampled in (False, True):
        with OTLPCollector() as collector:
            kwargs: dict[str, Any] = {"otlp_endpoint": collector.url, "flush_interval": 0.05}
            if sampled:
                kwargs["sampler"] = lambda task: True
            async with HiveBoard(**kwargs) as hb:
                agent = hb.agent("e2e", type="worker", heartbeat_interval=0)
                for i in range(20):
                    rng = random.Random(i)
                    async with agent.task(f"t{i}", project="p") as task:
                        async with agent.track_context("plan") as plan:
                            async with agent.track_context("search") as search:
                                search.set_payload(_plain_payload(rng))
                            task.llm_call("think", "gpt-4o", tokens_in=12, tokens_out=4)
                            plan.set_payload({"note": f"use {OPENAI}", "step": i})
                        task.escalate("needs a human", assigned_to="ops")
                        try:
                            async with agent.track_context("fails"):
                                raise ValueError("boom")
                        except ValueError:
                            pass
                assert await hb.aflush(timeout=20)
                stats = hb.stats()
            otlp = stats["otlp"]
            assert (
                otlp is not None and otlp["sent"] == otlp["finished"] == 20 * 5 + 1
            )  # + agent_registered
            results.append((_shape(collector.spans), stats["scrubbed"], stats["dropped_total"]))
    assert results[0] == results[1]
    assert results[0][1] == 20  # one secret per task, replaced on both routes
    assert OPENAI not in repr(results[0][0])
