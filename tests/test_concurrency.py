"""Concurrency: every asyncio task and thread sees its own task and action chain."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import random
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import hiveloop_async
from hiveloop_async import Agent, HiveBoard
from hiveloop_async.testing import EventCapture, capture_events

N_ASYNC_TASKS = 1000
N_THREADS = 24
TASKS_PER_THREAD = 15


@dataclasses.dataclass
class Node:
    """One planned action: its unique name, whether it is a decorator call, its children."""

    name: str
    decorator: bool
    children: list[Node]


@dataclasses.dataclass
class Observed:
    """What a coroutine or thread saw when it opened one action."""

    parent_id: str | None
    own_id: str | None
    task_id: str | None
    agent_id: str | None


def _plan(rng: random.Random, prefix: str, depth: int = 0) -> list[Node]:
    """A random forest of actions with unique names."""
    count = rng.randint(1, 2) if depth == 0 else rng.randint(0, 2 if depth < 3 else 0)
    return [
        Node(f"{prefix}.{i}", rng.random() < 0.4, _plan(rng, f"{prefix}.{i}", depth + 1))
        for i in range(count)
    ]


def _walk(nodes: list[Node], parent: str | None = None) -> Iterator[tuple[str, str | None]]:
    for node in nodes:
        yield node.name, parent
        yield from _walk(node.children, node.name)


def _observe(observed: dict[str, Observed], name: str, parent_id: str | None) -> None:
    task = hiveloop_async.current_task()
    agent = hiveloop_async.current_agent()
    observed[name] = Observed(
        parent_id=parent_id,
        own_id=hiveloop_async.current_action_id(),
        task_id=task.task_id if task is not None else None,
        agent_id=agent.agent_id if agent is not None else None,
    )


async def _run_async(agent: Agent, node: Node, observed: dict[str, Observed]) -> None:
    parent_id = hiveloop_async.current_action_id()

    async def body() -> None:
        await anyio.lowlevel.checkpoint()
        _observe(observed, node.name, parent_id)
        for child in node.children:
            await asyncio.sleep(0)
            await _run_async(agent, child, observed)
            await anyio.lowlevel.checkpoint()

    if node.decorator:
        await agent.track(node.name)(body)()
    else:
        async with agent.track_context(node.name):
            await body()


def _run_sync(agent: Agent, node: Node, observed: dict[str, Observed]) -> None:
    parent_id = hiveloop_async.current_action_id()

    def body() -> None:
        _observe(observed, node.name, parent_id)
        for child in node.children:
            _run_sync(agent, child, observed)

    if node.decorator:
        agent.track(node.name)(body)()
    else:
        with agent.track_context(node.name):
            body()


def _check_trees(
    cap: EventCapture,
    plans: dict[str, tuple[str, list[Node]]],
    observed: dict[str, Observed],
    run_ids: dict[str, str],
) -> None:
    """Rebuild every action tree from the events and compare with what each task did."""
    expected_parent: dict[str, str | None] = {}
    expected_task: dict[str, str] = {}
    expected_agent: dict[str, str] = {}
    for task_id, (agent_id, forest) in plans.items():
        for name, parent in _walk(forest):
            expected_parent[name] = parent
            expected_task[name] = task_id
            expected_agent[name] = agent_id
    action_events: dict[str, list[dict[str, Any]]] = {}
    name_of: dict[str, str] = {}
    agent_of_event: dict[str, str] = {}
    for agent_id in {a for a, _ in plans.values()}:
        for ev in cap.events_of(agent_id):
            agent_of_event[ev["event_id"]] = agent_id
    for ev in cap.events:
        if ev["event_type"].startswith("action_"):
            action_events.setdefault(ev["action_id"], []).append(ev)
            if ev["event_type"] == "action_started":
                name_of[ev["action_id"]] = ev["payload"]["action_name"]
    assert len(name_of) == len(expected_parent)
    assert set(name_of.values()) == set(expected_parent)
    rebuilt_parent: dict[str, str | None] = {}
    for action_id, events in action_events.items():
        assert [e["event_type"] for e in events] == ["action_started", "action_completed"]
        started, completed = events
        name = name_of[action_id]
        parent_id = started.get("parent_action_id")
        assert completed.get("parent_action_id") == parent_id
        rebuilt_parent[name] = name_of[parent_id] if parent_id is not None else None
        task_id = expected_task[name]
        for ev in events:
            assert ev["task_id"] == task_id
            assert ev["task_run_id"] == run_ids[task_id]
            assert agent_of_event[ev["event_id"]] == expected_agent[name]
        seen = observed[name]
        assert seen.own_id == action_id
        assert seen.parent_id == parent_id
        assert seen.task_id == task_id
        assert seen.agent_id == expected_agent[name]
    assert rebuilt_parent == expected_parent
    task_events = cap.of_type("task_started", "task_completed")
    assert sorted(e["task_id"] for e in task_events) == sorted(list(plans) * 2)


@pytest.fixture
def agents(hb: HiveBoard) -> list[Agent]:
    return [hb.agent(f"worker-{i}") for i in range(4)]


@pytest.fixture
def cap(agents: list[Agent]) -> Iterator[EventCapture]:
    with capture_events() as captured:
        yield captured


@pytest.mark.anyio
@pytest.mark.parametrize("runner", ["gather", "task_group"])
async def test_thousand_asyncio_tasks_keep_their_own_trees(
    runner: str, agents: list[Agent], cap: EventCapture
) -> None:
    """1,000 concurrent tasks with random nesting and awaits never mix their events."""
    rng = random.Random(f"asyncio-{runner}")
    plans: dict[str, tuple[str, list[Node]]] = {}
    for i in range(N_ASYNC_TASKS):
        agent = agents[i % len(agents)]
        plans[f"task-{i}"] = (agent.agent_id, _plan(rng, f"a{i}"))
    observed: dict[str, Observed] = {}
    run_ids: dict[str, str] = {}
    by_id = {a.agent_id: a for a in agents}

    async def one(task_id: str) -> None:
        agent_id, forest = plans[task_id]
        agent = by_id[agent_id]
        await asyncio.sleep(0)
        async with agent.task(task_id, project="concurrency") as task:
            run_ids[task_id] = task.task_run_id
            for node in forest:
                await _run_async(agent, node, observed)
                await asyncio.sleep(0)
            assert hiveloop_async.current_task() is task
        assert hiveloop_async.current_task() is None

    if runner == "gather":
        await asyncio.gather(*(one(task_id) for task_id in plans))
    else:
        async with anyio.create_task_group() as tg:
            for task_id in plans:
                tg.start_soon(one, task_id)
    _check_trees(cap, plans, observed, run_ids)


def test_threads_keep_their_own_trees(agents: list[Agent], cap: EventCapture) -> None:
    """Threads running tasks with random nesting at the same time never mix their events."""
    rng = random.Random("threads")
    per_thread: list[list[str]] = [[] for _ in range(N_THREADS)]
    plans: dict[str, tuple[str, list[Node]]] = {}
    for t in range(N_THREADS):
        for j in range(TASKS_PER_THREAD):
            task_id = f"thread-{t}-task-{j}"
            agent = agents[(t + j) % len(agents)]
            plans[task_id] = (agent.agent_id, _plan(rng, f"t{t}.{j}"))
            per_thread[t].append(task_id)
    observed: dict[str, Observed] = {}
    run_ids: dict[str, str] = {}
    by_id = {a.agent_id: a for a in agents}
    barrier = threading.Barrier(N_THREADS)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for task_id in per_thread[t]:
                agent_id, forest = plans[task_id]
                agent = by_id[agent_id]
                with agent.task(task_id, project="concurrency") as task:
                    run_ids[task_id] = task.task_run_id
                    for node in forest:
                        _run_sync(agent, node, observed)
                assert hiveloop_async.current_task() is None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(N_THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so their steps interleave
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    _check_trees(cap, plans, observed, run_ids)


@pytest.mark.anyio
async def test_child_tasks_and_threads_nest_under_spawning_action(
    agents: list[Agent], cap: EventCapture
) -> None:
    """Work spawned inside an action (tasks, to_thread, bound executors) becomes its child."""
    agent = agents[0]
    observed: dict[str, Observed] = {}

    def sync_child(name: str) -> None:
        parent_id = hiveloop_async.current_action_id()
        with agent.track_context(name):
            _observe(observed, name, parent_id)

    async def async_child(name: str) -> None:
        await anyio.lowlevel.checkpoint()
        sync_child(name)

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with agent.task("spawning-task") as task, agent.track_context("spawner"):
            await asyncio.create_task(async_child("via_create_task"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(async_child, "via_start_soon")
            await asyncio.to_thread(sync_child, "via_to_thread")
            await anyio.to_thread.run_sync(sync_child, "via_run_sync")
            await loop.run_in_executor(
                pool, hiveloop_async.bind_context(sync_child), "via_bind_context"
            )
            pool.submit(hiveloop_async.bind_context(sync_child), "via_bound_submit").result()
            await loop.run_in_executor(pool, sync_child, "unbound_executor")
    started = {e["payload"]["action_name"]: e for e in cap.of_type("action_started")}
    spawner_id = started["spawner"]["action_id"]
    children = [
        "via_create_task",
        "via_start_soon",
        "via_to_thread",
        "via_run_sync",
        "via_bind_context",
        "via_bound_submit",
    ]
    for name in children:
        assert started[name]["parent_action_id"] == spawner_id, name
        assert started[name]["task_id"] == "spawning-task", name
        assert started[name]["task_run_id"] == task.task_run_id, name
        assert observed[name].parent_id == spawner_id, name
        assert observed[name].task_id == "spawning-task", name
        assert observed[name].agent_id == agent.agent_id, name
    # An executor that does not copy the context sees nothing: this is what bind_context fixes.
    assert "parent_action_id" not in started["unbound_executor"]
    assert "task_id" not in started["unbound_executor"]
    assert observed["unbound_executor"].task_id is None


@pytest.mark.anyio
async def test_bind_context_copies_per_call(agents: list[Agent], cap: EventCapture) -> None:
    """A bound callable may run twice at once: each call gets its own copy of the context."""
    agent = agents[0]
    both_inside = threading.Barrier(2)
    seen: list[str | None] = []

    def tool(name: str) -> None:
        with agent.track_context(name):
            both_inside.wait(timeout=10)
            seen.append(hiveloop_async.current_action_id())

    with ThreadPoolExecutor(max_workers=2) as pool, agent.track_context("spawner"):
        bound = hiveloop_async.bind_context(tool)
        futures = [pool.submit(bound, "first"), pool.submit(bound, "second")]
        for future in futures:
            future.result()
    started = {e["payload"]["action_name"]: e for e in cap.of_type("action_started")}
    assert started["first"]["parent_action_id"] == started["spawner"]["action_id"]
    assert started["second"]["parent_action_id"] == started["spawner"]["action_id"]
    assert sorted(x for x in seen if x is not None) == sorted(
        [started["first"]["action_id"], started["second"]["action_id"]]
    )


@pytest.mark.anyio
async def test_nested_tasks_restore_the_outer_task(agents: list[Agent], cap: EventCapture) -> None:
    """When an inner task ends, the outer task is current again (contract §3 A2)."""
    agent = agents[0]
    async with agent.task("outer") as outer:
        async with agent.task("inner") as inner:
            assert hiveloop_async.current_task() is inner
            async with agent.track_context("in_inner"):
                pass
        assert hiveloop_async.current_task() is outer
        async with agent.track_context("after_inner"):
            pass
        with agent.task("inner_sync"):
            pass
        started_inner = agent.start_task("inner_started")
        started_inner.complete()
        assert hiveloop_async.current_task() is outer
        with agent.track_context("after_all"):
            pass
    assert hiveloop_async.current_task() is None
    task_of = {e["payload"]["action_name"]: e.get("task_id") for e in cap.of_type("action_started")}
    assert task_of == {"in_inner": "inner", "after_inner": "outer", "after_all": "outer"}


@pytest.mark.anyio
async def test_interleaved_tasks_on_one_loop_do_not_cross(
    agents: list[Agent], cap: EventCapture
) -> None:
    """Two tasks whose steps strictly alternate keep their own task fields (contract §3 A1)."""
    agent = agents[0]
    turn = {"a": anyio.Event(), "b": anyio.Event()}

    async def run(me: str, other: str) -> None:
        async with agent.task(f"task-{me}"):
            for step in range(3):
                if me == "b" or step > 0:
                    await turn[me].wait()
                    turn[me] = anyio.Event()
                async with agent.track_context(f"{me}-{step}"):
                    turn[other].set()
                    await anyio.lowlevel.checkpoint()
        turn[other].set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", "b")
        tg.start_soon(run, "b", "a")
    for ev in cap.of_type("action_started", "action_completed"):
        assert ev["task_id"] == f"task-{ev['payload']['action_name'][0]}"


def test_start_task_complete_across_threads_does_not_leak(
    agents: list[Agent], cap: EventCapture
) -> None:
    """A task started on one thread and completed on another is not current anywhere after."""
    agent = agents[0]
    after: dict[str, Any] = {}
    other_thread_saw: list[Any] = []

    def thread_x() -> None:
        task = agent.start_task("cross-thread")
        assert hiveloop_async.current_task() is task
        watcher = threading.Thread(
            target=lambda: other_thread_saw.append(hiveloop_async.current_task())
        )
        watcher.start()
        watcher.join()
        completer = threading.Thread(target=task.complete)
        completer.start()
        completer.join()
        after["current_task"] = hiveloop_async.current_task()
        after["current_agent"] = hiveloop_async.current_agent()
        with agent.track_context("later_on_x"):
            pass

    thread = threading.Thread(target=thread_x)
    thread.start()
    thread.join()
    assert other_thread_saw == [None]
    kinds = [e["event_type"] for e in cap.of_type("task_started", "task_completed")]
    assert kinds == ["task_started", "task_completed"]
    assert after["current_task"] is None
    later = cap.of_type("action_started")[-1]
    assert later["payload"]["action_name"] == "later_on_x"
    assert "task_id" not in later


def test_start_task_is_invisible_to_other_threads_and_contexts(
    agents: list[Agent], cap: EventCapture
) -> None:
    """start_task makes the task current in the calling context only."""
    agent = agents[0]
    ctx = contextvars.copy_context()
    task = ctx.run(agent.start_task, "ctx-only")
    assert ctx.run(hiveloop_async.current_task) is task
    assert hiveloop_async.current_task() is None
    with agent.track_context("outside"):
        pass
    ctx.run(task.complete)
    assert ctx.run(hiveloop_async.current_task) is None
    outside = cap.of_type("action_started")[0]
    assert "task_id" not in outside


def test_task_completed_inside_an_action_does_not_stay_current(
    agents: list[Agent], cap: EventCapture
) -> None:
    """complete() called inside an action of the task leaves no finished task current after."""
    agent = agents[0]
    with agent.task("finish-inside") as task:
        with agent.track_context("finish_tool"):
            task.complete(status="done")
        assert hiveloop_async.current_task() is None
    assert hiveloop_async.current_task() is None
    with agent.track_context("later"):
        pass
    later = cap.of_type("action_started")[-1]
    assert later["payload"]["action_name"] == "later"
    assert "task_id" not in later
