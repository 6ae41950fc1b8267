"""Sampling by task (``_sampling.py``): whole trees only, the right share, failures kept.

End to end against the fault server on 127.0.0.1 (a real HTTP ingest): what arrives is what
the sampler let through, and ``stats()`` counts the rest as ``sampled_out``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import hiveloop_async as hl
from hiveloop_async import TaskInfo

from .faultserver import FaultServer

TASKS = 1_000
FAIL_EVERY = 10  # task i fails when i % FAIL_EVERY == 0
#: Events of one root tree: the root's start/end, two nested actions (4), an LLM call, and
#: a nested task's start/end with one action inside it (4).
TREE = 2 + 4 + 1 + 4


async def _run_tree(agent: hl.Agent, i: int) -> None:
    try:
        async with agent.task(f"t-{i}", project="p", type="sampled") as task:
            async with agent.track_context("outer"):
                await anyio.lowlevel.checkpoint()
                async with agent.track_context("inner"):
                    task.llm_call("think", "m", tokens_in=1, tokens_out=1)
                    await anyio.lowlevel.checkpoint()
            async with agent.task(f"t-{i}-sub"), agent.track_context("sub-step"):
                await anyio.lowlevel.checkpoint()
            if i % FAIL_EVERY == 0:
                raise RuntimeError("tool failed")
    except RuntimeError:
        pass


async def _record_all(srv: FaultServer, **options: Any) -> tuple[dict[str, int], hl.Stats]:
    """Run TASKS concurrent trees; return the number of events that arrived per root."""
    async with hl.HiveBoard(
        api_key="hb_test_sampling", endpoint=srv.url, flush_interval=0.05, **options
    ) as hb:
        agent = hb.agent("sampler", heartbeat_interval=0)
        async with anyio.create_task_group() as tg:
            for i in range(TASKS):
                tg.start_soon(_run_tree, agent, i)
        assert await hb.aflush(30)
        stats = hb.stats()
    per_root: dict[str, int] = defaultdict(int)
    for ev in srv.events:
        task_id = ev.get("task_id")
        if task_id is None:
            continue
        per_root[task_id.removesuffix("-sub")] += 1
    return dict(per_root), stats


def _check_whole_trees(per_root: dict[str, int]) -> None:
    broken = {task: n for task, n in per_root.items() if n != TREE}
    assert broken == {}, "a sampled tree arrived in part"


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
async def test_sampling_keeps_whole_trees_in_the_right_share_and_every_failure(
    rate: float,
) -> None:
    with FaultServer() as srv:
        per_root, stats = await _record_all(srv, sample_rate=rate)
    _check_whole_trees(per_root)
    failed = {f"t-{i}" for i in range(0, TASKS, FAIL_EVERY)}
    assert failed <= per_root.keys(), "a failed task was sampled out"
    kept_ok = len(per_root.keys() - failed)
    ok_total = TASKS - len(failed)
    sd = math.sqrt(ok_total * rate * (1 - rate))
    assert abs(kept_ok - ok_total * rate) <= 5 * sd + 0.5, (kept_ok, rate)
    dropped = (TASKS - len(per_root)) * TREE
    assert stats["dropped"]["sampled_out"] == dropped
    assert stats["recorded"] == stats["sent"] + stats["dropped_total"]
    assert stats["queue_depth"] == stats["in_flight"] == 0


async def test_keep_failed_off_samples_failures_out_too() -> None:
    with FaultServer() as srv:
        per_root, stats = await _record_all(srv, sample_rate=0.0, keep_failed=False)
    assert per_root == {}
    assert stats["dropped"]["sampled_out"] == TASKS * TREE


async def test_a_custom_sampler_decides_once_per_root_task() -> None:
    seen: list[TaskInfo] = []

    def sampler(info: TaskInfo) -> bool:
        seen.append(info)
        return info.task_id.endswith("7")

    with FaultServer() as srv:
        per_root, _ = await _record_all(srv, sampler=sampler, keep_failed=False)
    _check_whole_trees(per_root)
    assert sorted(per_root) == sorted(f"t-{i}" for i in range(TASKS) if i % 10 == 7)
    assert len(seen) == TASKS  # roots only: nested tasks follow their root
    assert {info.task_type for info in seen} == {"sampled"}
    assert all(info.agent_id == "sampler" and info.project_id == "p" for info in seen)


async def test_a_raising_sampler_keeps_its_tasks(caplog: pytest.LogCaptureFixture) -> None:
    def sampler(info: TaskInfo) -> bool:
        raise ValueError("mine")

    with FaultServer() as srv:
        per_root, _ = await _record_all(srv, sampler=sampler)
    assert len(per_root) == TASKS
    assert caplog.text.count("the sampler raised ValueError") == 1


async def test_agent_level_action_trees_and_lifecycle_events() -> None:
    """Outside tasks an action tree is kept or dropped whole; registration, heartbeats and
    issues are never sampled out."""
    with FaultServer() as srv:
        async with hl.HiveBoard(
            api_key="hb_test_sampling", endpoint=srv.url, flush_interval=0.05, sample_rate=0.5
        ) as hb:
            agent = hb.agent("loose", heartbeat_interval=0)
            for i in range(400):
                with agent.track_context(f"top-{i}"), agent.track_context(f"child-{i}"):
                    pass
            agent.report_issue("disk almost full", "high")
            assert await hb.aflush(30)
    names: dict[str, int] = defaultdict(int)
    for ev in srv.events:
        name = (ev.get("payload") or {}).get("action_name")
        if name:
            names[name.split("-", 1)[1]] += 1
    assert all(n == 4 for n in names.values()), "an agent-level tree arrived in part"
    assert 120 <= len(names) <= 280
    kinds = [ev["event_type"] for ev in srv.events] + [
        (ev.get("payload") or {}).get("kind") for ev in srv.events
    ]
    assert "agent_registered" in kinds
    assert "issue" in kinds


def test_an_invalid_sample_rate_falls_back_to_keeping_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hb = hl.HiveBoard(api_key="hb_test_sampling", enabled=False, sample_rate=1.5)
    assert hb.settings.sample_rate == 1.0
    assert "invalid sample_rate" in caplog.text
    hb.shutdown(0)


async def test_a_released_tree_larger_than_a_batch_is_sent_once() -> None:
    """A failed sampled-out tree released at its end fills several batches at once: each
    event still arrives exactly once, and the records after it are not taken twice."""
    with FaultServer() as srv:
        async with hl.HiveBoard(
            api_key="hb_test_sampling",
            endpoint=srv.url,
            flush_interval=0.05,
            batch_size=2,
            sample_rate=0.0,
        ) as hb:
            agent = hb.agent("big", heartbeat_interval=0)
            async with agent.task("big-failed") as task:
                for i in range(20):
                    async with agent.track_context(f"step-{i}"):
                        pass
                task.fail(RuntimeError("late failure"))
            for i in range(30):
                agent.event("custom", {"kind": "probe", "i": i})
            assert await hb.aflush(10)
            stats = hb.stats()
    ids = [ev["event_id"] for ev in srv.events]
    assert len(ids) == len(set(ids))
    assert len([ev for ev in srv.events if ev.get("task_id") == "big-failed"]) == 2 + 40
    assert stats["recorded"] == stats["sent"] + stats["dropped_total"]
