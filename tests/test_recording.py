"""The shared recording API: ``event``/``llm_call`` defined once for Agent and Task, and
``hb.agent()`` taking exactly ``Agent``'s parameters (``_recording``, ``_forward``)."""

from __future__ import annotations

import inspect

import pytest

import hiveloop_async as hl
from hiveloop_async._recording import Recorder
from hiveloop_async.testing import capture_events

#: hiveloop 0.2.0's ``HiveBoard.agent`` (docs/hiveboard-contract.md), name and default.
AGENT_020 = [
    ("agent_id", inspect.Parameter.empty),
    ("type", "general"),
    ("version", None),
    ("framework", "custom"),
    ("heartbeat_interval", 30.0),
    ("stuck_threshold", 300),
    ("heartbeat_payload", None),
    ("queue_provider", None),
]


def test_event_and_llm_call_are_one_implementation() -> None:
    """Agent and Task inherit the very same functions, with one docstring each."""
    for name in ("event", "llm_call"):
        shared = getattr(Recorder, name)
        assert getattr(hl.Agent, name) is shared
        assert getattr(hl.Task, name) is shared
        assert shared.__doc__


def test_agent_takes_agents_parameters_as_in_hiveloop_020() -> None:
    """``inspect.signature(hb.agent)`` is hiveloop 0.2.0's, all positional-or-keyword."""
    hb = hl.HiveBoard(api_key="hb_test_x", enabled=False)
    sig = inspect.signature(hb.agent)
    assert [(p.name, p.default) for p in sig.parameters.values()] == AGENT_020
    assert {p.kind for p in sig.parameters.values()} == {inspect.Parameter.POSITIONAL_OR_KEYWORD}
    init = list(inspect.signature(hl.Agent.__init__).parameters.values())[2:]
    assert list(sig.parameters.values()) == init
    assert sig.return_annotation == "Agent"
    assert inspect.signature(hl.HiveBoard.agent).parameters["self"].name == "self"


def test_agent_positional_and_keyword_forms_register_once() -> None:
    """Positional as in 0.2.0; a known id updates type/version/framework, not the interval."""
    hb = hl.HiveBoard(api_key="hb_test_x", enabled=False)
    with capture_events(hb) as cap:
        a = hb.agent("pos", "sales", "1.0", "crewai", 0, 60)
        b = hb.agent("pos", type="support", version="2.0", heartbeat_interval=5)
    assert b is a
    assert (a.agent_type, a.version, a.framework) == ("support", "2.0", "custom")
    assert (a.heartbeat_interval, a.stuck_threshold) == (0, 60)
    assert a.envelope["agent_type"] == "support"
    registered = [e for e in cap.events if e["event_type"] == "agent_registered"]
    assert [e["payload"] for e in registered] == [
        {
            "summary": "Agent pos registered",
            "data": {
                "type": "sales",
                "version": "1.0",
                "framework": "crewai",
                "stuck_threshold": 60,
            },
        }
    ]


def test_agent_rejects_what_agent_does_not_take() -> None:
    """Misuse is a TypeError, as for any Python call, and registers nothing."""
    hb = hl.HiveBoard(api_key="hb_test_x", enabled=False)
    with pytest.raises(TypeError):
        hb.agent()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hb.agent("x", colour="red")  # type: ignore[call-arg]
    assert hb.agents == []
