"""hiveloop_async.contrib._llm: prices, previews, error info, where a call is recorded."""

from __future__ import annotations

import pytest

from hiveloop_async import Agent, HiveBoard
from hiveloop_async.contrib import _llm
from hiveloop_async.testing import EventCapture


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("llm-unit")


def test_longest_prefix_price() -> None:
    p = _llm.DEFAULT_PRICES
    assert _llm.price_for("gpt-4o-2024-08-06", p) == p["gpt-4o"]
    assert _llm.price_for("gpt-4o-mini-2024-07-18", p) == p["gpt-4o-mini"]
    assert _llm.price_for("my-own-model", p) is None
    assert _llm.cost_of("my-own-model", 10, 10, p) is None
    assert _llm.cost_of("gpt-4o", 1000, 1000, {"gpt-4o": (1.0, 2.0)}) == 3.0


def test_preview_and_error_info() -> None:
    assert _llm.preview("abcdef", 4) == "abc…"
    assert _llm.preview("", 4) is None and _llm.preview(None, 4) is None
    info = _llm.error_info(ValueError("bad key sk-abcdefghijkl and Bearer xyz"))
    assert info["type"] == "ValueError"
    assert "sk-abc" not in info["message"] and "xyz" not in info["message"]
    assert _llm.last_message_text([{"content": [{"type": "text", "text": "hi"}]}]) == "hi"


def test_record_targets(agent: Agent, cap: EventCapture) -> None:
    assert _llm.capture_target() is None
    _llm.record_llm_call(None, "x", "m")
    assert cap.events == []
    with agent.task("t") as task:
        target = _llm.capture_target()
        assert target is task
        _llm.record_llm_call(target, "chat", "gpt-4o", tokens_in=1, error=TimeoutError("t"))
    (ev,) = [e for e in cap.events if e["payload"].get("kind") == "llm_call"]
    assert ev["task_id"] == task.task_id
    assert ev["payload"]["data"]["metadata"] == {
        "status": "failed",
        "error": {"type": "TimeoutError", "message": "t"},
    }


def test_prefix_price_remembered_but_follows_the_table() -> None:
    """The longest-prefix scan is remembered per table and model; a key added later, a
    changed price and a different table with the same model are still honoured."""
    table = {"gpt-4o": (1.0, 1.0)}
    assert _llm.price_for("gpt-4o-2024-08-06", table) == (1.0, 1.0)
    table["gpt-4o"] = (3.0, 3.0)
    assert _llm.price_for("gpt-4o-2024-08-06", table) == (3.0, 3.0)
    table["gpt-4o-2024"] = (2.0, 2.0)
    assert _llm.price_for("gpt-4o-2024-08-06", table) == (2.0, 2.0)
    other = {"gpt": (5.0, 5.0)}
    assert _llm.price_for("gpt-4o-2024-08-06", other) == (5.0, 5.0)
    assert _llm.price_for("gpt-4o-2024-08-06", {}) is None
    assert _llm.cost_of("gpt-4o-2024-08-06", 1000, 0, table) == 2.0
