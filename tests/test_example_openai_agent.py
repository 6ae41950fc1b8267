"""examples/openai_agent.py against the fake provider: LLM nodes and tool actions per task."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples import openai_agent
from hiveloop_async.testing import capture_events
from tests.providers.server import FakeProvider


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    server = FakeProvider().start()
    yield server
    server.stop()


async def test_openai_agent_example(provider: FakeProvider) -> None:
    with capture_events() as cap:
        ids = await openai_agent.amain(
            "http://127.0.0.1:9", provider.openai_url, "gpt-4o-mini-tools", "sk-x"
        )
    assert len(ids) == 2
    for task_id in ids:
        mine = [e for e in cap.events if e.get("task_id") == task_id]
        kinds = [
            (e["payload"].get("kind") or e["event_type"], e["payload"].get("action_name"))
            for e in mine
            if e["event_type"] in ("custom", "action_completed")
        ]
        assert kinds == [
            ("llm_call", None),
            ("action_completed", "crm_search"),
            ("action_completed", "score_lead"),
            ("llm_call", None),
        ], kinds
        llm = [e["payload"]["data"] for e in mine if e["payload"].get("kind") == "llm_call"]
        assert llm[0]["metadata"]["tool_calls"][0]["name"] == "crm_search"
        assert all(d["tokens_in"] == 12 and d["model"].startswith("gpt-4o-mini") for d in llm)
