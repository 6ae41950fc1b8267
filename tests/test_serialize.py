"""The serializer (``_serialize.py``): what the sender makes of any record, always acceptable.

Ids become strings, odd payload values are converted one by one, cycles are cut, oversized
payloads and summaries shrink to HiveBoard's limits, and the cached formatting (id heads,
timestamp milliseconds, action payload prefixes) matches the plain formatting exactly.
Moved here from ``test_wire_shapes.py``; assertions unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from hiveloop_async import Agent, Task
from hiveloop_async.testing import EventCapture
from tests.wire import (
    MAX_PAYLOAD,
    TASK_FIELDS,
    UUID4,
    norm,
)
from tests.wire import agent as agent
from tests.wire import cap as cap
from tests.wire import hb as hb
from tests.wire import task as task

# -- wire safety -------------------------------------------------------------------------------


def test_int_ids_become_strings(agent: Agent, cap: EventCapture) -> None:
    """Integer task ids and task fields are sent as strings (``agent.task(4821)``)."""
    numeric: Any = {"task_id": 4821, "project": 7, "type": 3, "correlation_id": 9}
    with agent.task(**numeric) as t, agent.track_context("act"):
        t.event("custom", {"summary": "s"}, parent_event_id=numeric["task_id"])
    for ev in cap.events:
        assert ev["task_id"] == "4821"
        assert ev["project_id"] == "7"
        assert ev["task_type"] == "3"
        assert ev["correlation_id"] == "9"
    assert cap.events[0]["payload"]["summary"] == "Task 4821 started"
    assert cap.of_type("custom")[0]["parent_event_id"] == "4821"


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_odd_payload_values_are_converted_one_by_one(agent: Agent, cap: EventCapture) -> None:
    """datetime, Decimal, bytes, set, NaN/inf, objects and big ints are converted; the rest kept."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    agent.event(
        "custom",
        {
            "summary": "odd",
            "when": when,
            "day": dt.date(2026, 1, 2),
            "price": Decimal("1.50"),
            "raw": b"abc",
            "tags": {"x"},
            "nan": float("nan"),
            "inf": float("inf"),
            "obj": Opaque(),
            "point": Point(1, 2),
            "big": 2**70,
            "keep": "me",
            "nested": {"ok": [1, 2.5, None, True]},
        },
    )
    (ev,) = cap.events
    json.dumps(ev, allow_nan=False)
    p = ev["payload"]
    assert p["summary"] == "odd"
    assert p["keep"] == "me"
    assert p["nested"] == {"ok": [1, 2.5, None, True]}
    assert p["when"].startswith("2026-01-02T03:04:05")
    assert p["day"] == "2026-01-02"
    assert p["price"] == 1.5
    assert p["raw"] == "abc"
    assert p["tags"] == ["x"]
    assert p["nan"] is None
    assert p["inf"] is None
    assert p["obj"] == "<Opaque thing>"
    assert p["point"] == {"x": 1, "y": 2}
    assert p["big"] in (2**70, str(2**70))


def test_cyclic_payload_is_cut_at_the_cycle(agent: Agent, cap: EventCapture) -> None:
    """A self-referencing payload is encoded with the cycle replaced and the rest kept."""
    data: dict[str, Any] = {"keep": 1, "list": [1, 2]}
    data["self"] = data
    data["list"].append(data["list"])
    with agent.track_context("cyclic") as ctx:
        ctx.set_payload(data)
    ev = cap.events[-1]
    text = json.dumps(ev, allow_nan=False)
    assert json.loads(text) == ev
    assert ev["event_type"] == "action_completed"
    assert ev["payload"]["keep"] == 1
    assert ev["payload"]["action_name"] == "cyclic"
    assert ev["payload"]["list"][:2] == [1, 2]
    assert isinstance(ev["payload"]["self"], (str, dict))


def test_non_dict_payload_is_wrapped(agent: Agent, cap: EventCapture) -> None:
    """A non-object payload is wrapped, since HiveBoard rejects the batch for it."""
    agent.event("custom", ["a", "b"])  # type: ignore[arg-type]
    (ev,) = cap.events
    assert isinstance(ev["payload"], dict)
    assert ev["payload"] == {"value": ["a", "b"]}


@pytest.mark.parametrize(
    "big",
    [
        {"blob": "x" * 40_000},
        {"text": "é" * 6000},
        {"rows": [{"id": i, "name": f"row-{i}"} for i in range(3000)]},
    ],
    ids=["ascii", "non-ascii", "many-keys"],
)
def test_oversized_payload_is_shrunk(big: dict[str, Any], agent: Agent, cap: EventCapture) -> None:
    """A payload over 32 KB as HiveBoard measures it is shrunk and marked ``_truncated``."""
    agent.event("custom", {"kind": "blob", "summary": "big one", "keep": 1, **big})
    with agent.track_context("big_action") as ctx:
        ctx.set_payload(big)
    for ev in cap.of_type("custom", "action_completed"):
        payload = ev["payload"]
        assert len(json.dumps(payload)) <= MAX_PAYLOAD
        assert payload["_truncated"] is True
    custom = cap.of_type("custom")[0]["payload"]
    assert custom["kind"] == "blob"
    assert custom["summary"] == "big one"
    assert cap.of_type("action_completed")[0]["payload"]["action_name"] == "big_action"


def test_payload_just_under_the_limit_is_untouched(agent: Agent, cap: EventCapture) -> None:
    """5,000 "é" (30,000 bytes as measured) is under the limit and sent whole."""
    agent.event("custom", {"text": "é" * 5000})
    (ev,) = cap.events
    assert ev["payload"] == {"text": "é" * 5000}


def test_unknown_event_type_becomes_custom(agent: Agent, task: Task, cap: EventCapture) -> None:
    """An event type HiveBoard does not know is sent as custom with payload.original_type."""
    agent.event("scored", {"summary": "lead scored", "score": 0.8})
    task.event("scored")
    first, second = (norm(e) for e in cap.events)
    assert first == {
        "event_type": "custom",
        "severity": "info",
        "payload": {"summary": "lead scored", "score": 0.8, "original_type": "scored"},
    }
    assert second == {
        "event_type": "custom",
        "severity": "info",
        **TASK_FIELDS,
        "payload": {"original_type": "scored"},
    }


def test_summaries_are_cut_to_512(agent: Agent, task: Task, cap: EventCapture) -> None:
    """Every payload.summary is cut to 512 characters; data keeps the full text."""
    agent.event("custom", {"summary": "s" * 600})
    agent.report_issue("i" * 600, "low")
    task.plan("g" * 600, ["a"])
    task.escalate("e" * 600)
    summaries = [e["payload"]["summary"] for e in cap.events]
    assert summaries == ["s" * 512, "i" * 512, "g" * 512, "e" * 512]
    assert cap.events[2]["payload"]["data"]["goal"] == "g" * 600


def test_long_task_id_is_cut_and_task_summaries_fit(agent: Agent, cap: EventCapture) -> None:
    """A task id over 256 characters is cut, and task events' summaries stay within 512."""
    with agent.task("x" * 600) as t:
        t.set_payload({"summary": "y" * 1000})
    started, completed = cap.events
    for ev in (started, completed):
        assert ev["task_id"] == "x" * 256
        assert len(ev["payload"]["summary"]) <= 512


def test_top_level_none_keys_are_absent(agent: Agent, cap: EventCapture) -> None:
    """No event has a top-level key whose value is None (nested nulls are kept)."""
    with agent.task("t") as t, agent.track_context("a"):
        t.event("custom", None, severity=None, parent_event_id=None)
        t.plan_step(0, "started", "s")
        t.escalate("s")
        agent.event("custom")
    assert cap.events
    for ev in cap.events:
        norm(ev)
        assert set(ev) >= {"event_id", "timestamp", "event_type", "severity"}
    assert cap.of_type("custom")[1]["payload"]["data"]["total_steps"] is None


def test_ids_and_timestamps_match_their_plain_formatting() -> None:
    """The cached id heads and timestamp milliseconds give the plain f-string's output."""
    from hiveloop_async import _ids as _events

    mask = (1 << 48) - 1
    ids = [0, 1, 4095, 4096, 4097, mask, mask + 1, mask + 4096 + 7, 2**70 + 3]
    ids += list(range(10**6, 10**6 + 3 * 4096, 13)) + list(range(10**6, 0, -9973))
    for n in ids:
        assert _events.format_id(n) == f"{_events._prefix}{n & mask:012x}", n
        assert UUID4.match(_events.format_id(n))
    assert _events.format_id("given") == "given"

    fmt = _events.TimestampFormatter()
    base = 1_764_000_000_123_456_789
    stamps = [base + d for d in range(0, 3_000_000_000, 7_777_777)]
    stamps += [base + d for d in (999_999, 1_000_000, -1, 0, 10**9, -(10**9), 5)]
    for ns in stamps:
        sec, rem = divmod(ns, 1_000_000_000)
        plain = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        assert fmt(ns) == f"{plain}.{rem // 1_000_000:03d}Z", ns


@pytest.mark.parametrize(
    "extra",
    [
        {"rows": 3, "tool": 'é\u2028"</'},
        {"action_name": "mine", "x": 1},
        {"x": 1, "function": "mine"},
        {"summary": "s" * 600},
        {"b": b"\xff", "when": dt.date(2020, 1, 2), 1: "int key"},
        {"big": "x" * 9000},
        {"big": "x" * 40_000},
        ["not", "a", "dict"],
        {},
    ],
)
def test_action_payload_keeps_its_merge_rules(extra: Any, agent: Agent, cap: EventCapture) -> None:
    """The closing payload is the action's keys updated with the user's (user keys win, in
    our keys' places), encoded as one dict would be, whichever way the encoder builds it."""
    from hiveloop_async._context import current_scope
    from hiveloop_async._serialize import encode_payload

    @agent.track("named")
    def fn() -> None:
        with agent.track_context("inner") as ctx:
            ctx.set_payload(extra)
        current_scope.get().set_payload(extra)

    fn()
    function = f"{fn.__module__}.{fn.__qualname__}"
    inner, outer = cap.of_type("action_completed")
    for ev, own in ((inner, {"action_name": "inner"}), (outer, {"action_name": "named"})):
        if ev is outer:
            own["function"] = function
        expected = dict(own)
        if isinstance(extra, dict):
            expected.update(extra)
        elif extra:
            expected["value"] = extra
        want = json.loads(encode_payload(expected))
        assert ev["payload"] == want
        assert list(ev["payload"]) == list(want)
