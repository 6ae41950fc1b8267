"""The user manual's examples (part 8) run unchanged against ``import hiveloop_async as hiveloop``.

Each example is kept verbatim as text (copied from the manual) and executed in a namespace
holding small fakes for the application objects it uses (``llm``, ``tool_registry``,
``execute_tool`` ...). The tests check the event sequences the manual describes.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import time as real_time
import types
from typing import Any

import anyio.lowlevel
import pytest

import hiveloop_async as hiveloop
from hiveloop_async import Agent, HiveBoard
from hiveloop_async.testing import EventCapture

# -- the manual's code, verbatim ---------------------------------------------------------------

SEC3_MINIMAL = """\
for tool_call in response.tool_calls:
    with hiveloop_agent.track_context(tool_call.name) as ctx:
        result = execute_tool(tool_call.name, tool_call.args)
"""

SEC4_RUN_TURN = """\
import time
from myproject.observability import get_current_task, get_hiveloop_agent

def run_turn(messages, tool_definitions):
    # ── Phase 1: LLM call — the agent reasons ──────────────────────
    _llm_start = time.perf_counter()
    response = llm.chat(messages, tools=tool_definitions)
    _llm_elapsed = (time.perf_counter() - _llm_start) * 1000

    _task = get_current_task()
    if _task:
        _task.llm_call(
            "agent_turn",
            model=response.model,
            tokens_in=response.usage.input_tokens,
            tokens_out=response.usage.output_tokens,
            duration_ms=round(_llm_elapsed),
        )

    # ── Phase 2: Tool execution — zero or more per turn ────────────
    _agent = get_hiveloop_agent()
    for tool_call in response.tool_calls:
        if _agent:
            with _agent.track_context(tool_call.name) as ctx:
                result = tool_registry.execute(tool_call.name, tool_call.arguments)
                ctx.set_payload({"result_preview": str(result)[:200]})
        else:
            result = tool_registry.execute(tool_call.name, tool_call.arguments)

    return response
"""

SEC8_1_PROCESS_LEAD = """\
@agent.track("process_lead")
def process_lead(lead):
    # This tool call is a child of "process_lead"
    with agent.track_context("crm_search") as ctx:
        data = crm.search(lead.email)
        ctx.set_payload({"found": data is not None})

    # This too
    with agent.track_context("enrich_company") as ctx:
        enrichment = clearbit.lookup(lead.company)
"""

SEC8_2_NESTED = """\
with agent.track_context("outer_step") as outer:
    with agent.track_context("inner_step") as inner:
        do_work()
"""

SEC8_3_MIXED = """\
with agent.task("task-123") as task:
    @agent.track("step1")
    def score():
        with agent.track_context("llm_inference") as ctx:
            result = model.predict(lead)
            ctx.set_payload({"score": result})
        return result

    score()
"""

SEC8_4_RESEARCH = """\
with agent.track_context("research") as ctx:
    search_results = web_search(query)
    with agent.track_context("summarize") as inner:
        summary = llm_summarize(search_results)
"""

SEC10_2_OBSERVABILITY = '''\
# observability.py
import contextvars
from typing import Optional, Any

# Existing: task context
_current_task = contextvars.ContextVar('hiveloop_task', default=None)

# New: agent handle context
_current_hiveloop_agent = contextvars.ContextVar('hiveloop_agent', default=None)


def set_hiveloop_agent(agent: Any) -> None:
    """Set the HiveLoop agent handle for the current execution context."""
    _current_hiveloop_agent.set(agent)

def get_hiveloop_agent() -> Optional[Any]:
    """Get the current HiveLoop agent handle, or None if not initialized."""
    return _current_hiveloop_agent.get()

def clear_hiveloop_agent() -> None:
    """Clear the current HiveLoop agent handle."""
    _current_hiveloop_agent.set(None)
'''

SEC10_2_TASK_BOUNDARY = """\
with hiveloop_agent.task(task_id, project="my-project") as task:
    set_current_task(task)
    set_hiveloop_agent(hiveloop_agent)        # ← new
    try:
        result = run_agent_loop()
    finally:
        clear_current_task()
        clear_hiveloop_agent()                # ← new
"""

SEC11_3_FIRST_ATTEMPT = """\
# First attempt:
_hl_agent = get_hiveloop_agent()
if _hl_agent is not None:
    try:
        with _hl_agent.track_context(tool_name) as _ctx:
            tool_result = self.tool_registry.execute(tool_name, parameters)
            _ctx.set_payload({...})
    except Exception:
        tool_result = self.tool_registry.execute(tool_name, parameters)
else:
    tool_result = self.tool_registry.execute(tool_name, parameters)
"""

SEC11_3_FINAL = """\
# Final implementation:
_hl_agent = get_hiveloop_agent()
_hl_ctx = None
if _hl_agent is not None:
    try:
        _hl_ctx = _hl_agent.track_context(tool_name)
        _hl_ctx.__enter__()
    except Exception:
        _hl_ctx = None

tool_result = self.tool_registry.execute(tool_name, parameters)     # always runs exactly once

if _hl_ctx is not None:
    try:
        _hl_ctx.set_payload({
            "args": {k: str(v)[:100] for k, v in parameters.items()},
            "result_preview": (tool_result.output or "")[:200],
            "success": tool_result.success,
            "error": tool_result.error,
        })
        _hl_ctx.__exit__(None, None, None)
    except Exception:
        pass
"""

SEC12_1_DISPATCH = """\
for tool_call in response.tool_calls:
    with hiveloop_agent.track_context(tool_call.name) as ctx:
        result = tool_registry.execute(tool_call.name, tool_call.arguments)
        ctx.set_payload({
            "args": {k: str(v)[:100] for k, v in tool_call.arguments.items()},
            "result_preview": str(result)[:200],
        })
"""

SEC12_2_PIPELINE = """\
for step_name in pipeline.steps:
    with hiveloop_agent.track_context(step_name.lower().replace(" ", "_")) as ctx:
        run_step(step_name)
"""

SEC12_3_CONDITIONAL = """\
_agent = get_hiveloop_agent()
if expensive_operation and _agent:
    with _agent.track_context("heavy_computation") as ctx:
        result = compute(data)
        ctx.set_payload({"records": len(data)})
else:
    result = compute(data)
"""

SEC12_4_CLASS = """\
class ToolExecutor:
    def execute(self, tool_name, args):
        _agent = get_hiveloop_agent()
        if _agent:
            with _agent.track_context(tool_name) as ctx:
                result = self._run(tool_name, args)
                ctx.set_payload({"success": result.ok})
                return result
        return self._run(tool_name, args)

    def _run(self, tool_name, args):
        # actual execution logic, unchanged
        ...
"""

SEC12_5_RETRY = """\
for attempt in range(max_retries):
    with hiveloop_agent.track_context(f"{tool_name}_attempt_{attempt + 1}") as ctx:
        try:
            result = execute_tool(tool_name, args)
            ctx.set_payload({"attempt": attempt + 1, "success": True})
            break
        except RetryableError as e:
            ctx.set_payload({"attempt": attempt + 1, "error": str(e)[:100]})
            # exception re-raised by track_context, caught by retry loop
            if attempt == max_retries - 1:
                raise
            time.sleep(2 ** attempt)
"""

# The task-context half of ``observability.py``: the manual (§10.2) calls it "existing" and
# does not show it; this is the same pattern as its agent half.
OBSERVABILITY_TASK_HALF = """
def set_current_task(task):
    _current_task.set(task)

def get_current_task():
    return _current_task.get()

def clear_current_task():
    _current_task.set(None)
"""

# -- fakes for the application objects the examples use ---------------------------------------


@dataclasses.dataclass
class ToolCall:
    """One tool call chosen by the fake LLM (``args`` and ``arguments`` both appear)."""

    name: str
    args: dict[str, Any]

    @property
    def arguments(self) -> dict[str, Any]:
        return self.args


@dataclasses.dataclass
class Usage:
    input_tokens: int
    output_tokens: int


@dataclasses.dataclass
class Response:
    model: str
    usage: Usage
    tool_calls: list[ToolCall]


class FakeLLM:
    """Returns scripted responses in order."""

    def __init__(self, responses: list[Response]) -> None:
        self.responses = list(responses)
        self.calls = 0

    def chat(self, messages: list[Any], tools: Any = None) -> Response:
        self.calls += 1
        return self.responses.pop(0)


class FakeToolRegistry:
    """Records every execution; tools named in ``failing`` raise ConnectionError."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.failing = failing

    def execute(self, name: str, arguments: dict[str, Any]) -> str:
        self.calls.append(name)
        if name in self.failing:
            raise ConnectionError("CRM API timeout after 5000ms")
        return f"{name} result for {sorted(arguments)}"


@dataclasses.dataclass
class ToolResult:
    """loopCore's tool result (§11.3): errors are returned, not raised."""

    success: bool
    output: str | None = None
    error: str | None = None


class ToolResultRegistry:
    """A tool registry returning ``ToolResult`` objects."""

    def __init__(self, result: ToolResult) -> None:
        self.result = result
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def execute(self, name: str, parameters: dict[str, Any]) -> ToolResult:
        self.calls.append((name, parameters))
        return self.result


class Recorder:
    """A callable that records its arguments and returns a fixed value or raises."""

    def __init__(self, result: Any = None, errors: list[BaseException] | None = None) -> None:
        self.result = result
        self.errors = list(errors or [])
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def _response(*tools: str, model: str = "claude-sonnet") -> Response:
    return Response(model, Usage(1200, 300), [ToolCall(t, {"query": "Acme Corp"}) for t in tools])


def _run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    namespace.setdefault("__name__", "manual_example")
    exec(compile(code, "<manual>", "exec"), namespace)
    return namespace


def _as_method(code: str, params: str, result: str) -> str:
    """Put a snippet that uses ``self`` into a method body, returning ``result``."""
    return f"def step(self, {params}):\n{textwrap.indent(code, '    ')}    return {result}\n"


def _shape(cap: EventCapture) -> list[tuple[str, str | None, str | None]]:
    """(event_type, action name or payload kind, parent action name) for each event."""
    names = {e["action_id"]: e["payload"]["action_name"] for e in cap.of_type("action_started")}
    out = []
    for ev in cap.events:
        payload = ev.get("payload", {})
        label = payload.get("action_name", payload.get("kind"))
        parent = ev.get("parent_action_id")
        out.append((ev["event_type"], label, names[parent] if parent else None))
    return out


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def agent(hb: HiveBoard) -> Agent:
    return hb.agent("lead-qualifier", type="sales")


@pytest.fixture
def observability(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``myproject.observability`` as the manual writes it (§10.2)."""
    package = types.ModuleType("myproject")
    module = types.ModuleType("myproject.observability")
    exec(SEC10_2_OBSERVABILITY + OBSERVABILITY_TASK_HALF, module.__dict__)
    package.observability = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "myproject", package)
    monkeypatch.setitem(sys.modules, "myproject.observability", module)
    return module


def _plumbing(observability: types.ModuleType) -> dict[str, Any]:
    return {
        name: getattr(observability, name)
        for name in (
            "set_current_task",
            "get_current_task",
            "clear_current_task",
            "set_hiveloop_agent",
            "get_hiveloop_agent",
            "clear_hiveloop_agent",
        )
    }


# -- §3 -----------------------------------------------------------------------------------------


def test_sec3_minimal_pattern(agent: Agent, cap: EventCapture) -> None:
    """§3: each tool call becomes one action with the tool's name, inside the task."""
    execute_tool = Recorder(result="ok")
    with agent.task("task-lead-4801", project="sales") as task:
        _run(
            SEC3_MINIMAL,
            {
                "hiveloop": hiveloop,
                "hiveloop_agent": agent,
                "execute_tool": execute_tool,
                "response": _response("crm_search", "score_lead"),
            },
        )
        _run(
            SEC3_MINIMAL,
            {"hiveloop_agent": agent, "execute_tool": execute_tool, "response": _response()},
        )
    assert execute_tool.calls == [
        ("crm_search", {"query": "Acme Corp"}),
        ("score_lead", {"query": "Acme Corp"}),
    ]
    assert _shape(cap) == [
        ("task_started", None, None),
        ("action_started", "crm_search", None),
        ("action_completed", "crm_search", None),
        ("action_started", "score_lead", None),
        ("action_completed", "score_lead", None),
        ("task_completed", None, None),
    ]
    for ev in cap.of_type("action_started", "action_completed"):
        assert ev["task_id"] == "task-lead-4801"
        assert ev["task_run_id"] == task.task_run_id
    for ev in cap.of_type("action_completed"):
        assert ev["status"] == "success"
        assert ev["payload"] == {"action_name": ev["payload"]["action_name"]}


def test_sec3_failing_tool_is_recorded_and_reraised(agent: Agent, cap: EventCapture) -> None:
    """§3/§5.4: a raising tool gives a red action_failed node and the error reaches the loop."""
    execute_tool = Recorder(errors=[ConnectionError("CRM API timeout after 5000ms")])
    with pytest.raises(ConnectionError, match="CRM API timeout"):
        _run(
            SEC3_MINIMAL,
            {
                "hiveloop_agent": agent,
                "execute_tool": execute_tool,
                "response": _response("crm_search", "score_lead"),
            },
        )
    assert len(execute_tool.calls) == 1
    failed = cap.events[-1]
    assert len(cap.events) == 2
    assert failed["event_type"] == "action_failed"
    assert failed["status"] == "failure"
    assert failed["payload"] == {
        "action_name": "crm_search",
        "exception_type": "ConnectionError",
        "exception_message": "CRM API timeout after 5000ms",
    }


# -- §4 (with the §10.2 plumbing) ---------------------------------------------------------------


def test_sec4_full_turn_pattern(
    agent: Agent, cap: EventCapture, observability: types.ModuleType
) -> None:
    """§4: LLM nodes and tool nodes alternate in the task, with model, tokens and previews."""
    llm = FakeLLM(
        [
            _response("crm_search", "score_lead"),
            _response("send_email"),
            _response(),
        ]
    )
    tool_registry = FakeToolRegistry()
    turn_ns = _run(SEC4_RUN_TURN, {"llm": llm, "tool_registry": tool_registry})

    def run_agent_loop() -> str:
        for _ in range(3):
            turn_ns["run_turn"]([{"role": "user", "content": "qualify"}], [])
        return "done"

    ns = _run(
        SEC10_2_TASK_BOUNDARY,
        {
            "hiveloop_agent": agent,
            "task_id": "task-lead-4801",
            "run_agent_loop": run_agent_loop,
            **_plumbing(observability),
        },
    )
    assert ns["result"] == "done"
    assert tool_registry.calls == ["crm_search", "score_lead", "send_email"]
    assert observability.get_current_task() is None
    assert _shape(cap) == [
        ("task_started", None, None),
        ("custom", "llm_call", None),
        ("action_started", "crm_search", None),
        ("action_completed", "crm_search", None),
        ("action_started", "score_lead", None),
        ("action_completed", "score_lead", None),
        ("custom", "llm_call", None),
        ("action_started", "send_email", None),
        ("action_completed", "send_email", None),
        ("custom", "llm_call", None),
        ("task_completed", None, None),
    ]
    task = ns["task"]
    for ev in cap.events:
        assert ev["task_id"] == "task-lead-4801"
        assert ev["project_id"] == "my-project"
        assert ev["task_run_id"] == task.task_run_id
    for llm_ev in cap.of_type("custom"):
        assert "action_id" not in llm_ev
        data = llm_ev["payload"].pop("data")
        assert type(data.pop("duration_ms")) is int
        assert data == {
            "name": "agent_turn",
            "model": "claude-sonnet",
            "tokens_in": 1200,
            "tokens_out": 300,
        }
        assert llm_ev["payload"] == {
            "kind": "llm_call",
            "summary": "agent_turn → claude-sonnet (1200 in / 300 out)",
            "tags": ["llm"],
        }
        assert llm_ev["severity"] == "info"
    for done in cap.of_type("action_completed"):
        name = done["payload"]["action_name"]
        assert done["payload"] == {
            "action_name": name,
            "result_preview": f"{name} result for ['query']",
        }


def test_sec4_without_plumbing_runs_tools_untracked(
    agent: Agent, cap: EventCapture, observability: types.ModuleType
) -> None:
    """§4: with no current task or agent handle, tools still run and nothing is recorded."""
    tool_registry = FakeToolRegistry()
    llm = FakeLLM([_response("crm_search")])
    ns = _run(SEC4_RUN_TURN, {"llm": llm, "tool_registry": tool_registry})
    response = ns["run_turn"]([], [])
    assert response.model == "claude-sonnet"
    assert tool_registry.calls == ["crm_search"]
    assert cap.events == []


@pytest.mark.anyio
async def test_sec3_async_with(agent: Agent, cap: EventCapture) -> None:
    """§3 with ``async with``: the same two events per tool, in order."""
    calls: list[str] = []

    async def execute_tool(name: str, args: dict[str, Any]) -> str:
        await anyio.lowlevel.checkpoint()
        calls.append(name)
        return "ok"

    response = _response("crm_search", "score_lead")
    async with agent.task("task-async"):
        for tool_call in response.tool_calls:
            async with agent.track_context(tool_call.name) as ctx:
                await execute_tool(tool_call.name, tool_call.args)
                ctx.set_payload({"args": tool_call.args})
    assert calls == ["crm_search", "score_lead"]
    assert _shape(cap) == [
        ("task_started", None, None),
        ("action_started", "crm_search", None),
        ("action_completed", "crm_search", None),
        ("action_started", "score_lead", None),
        ("action_completed", "score_lead", None),
        ("task_completed", None, None),
    ]
    assert cap.events[2]["payload"] == {"action_name": "crm_search", "args": {"query": "Acme Corp"}}


@pytest.mark.anyio
async def test_sec4_async_full_turn(agent: Agent, cap: EventCapture) -> None:
    """§4 written with ``async with``: LLM node, then one action per tool, per turn."""
    llm = FakeLLM([_response("crm_search"), _response("send_email")])
    tool_registry = FakeToolRegistry()

    async def run_turn() -> Response:
        start = real_time.perf_counter()
        await anyio.lowlevel.checkpoint()
        response = llm.chat([], tools=[])
        elapsed = (real_time.perf_counter() - start) * 1000
        task = hiveloop.current_task()
        if task:
            task.llm_call(
                "agent_turn",
                model=response.model,
                tokens_in=response.usage.input_tokens,
                tokens_out=response.usage.output_tokens,
                duration_ms=round(elapsed),
            )
        current = hiveloop.current_agent()
        for tool_call in response.tool_calls:
            if current:
                async with current.track_context(tool_call.name) as ctx:
                    await anyio.lowlevel.checkpoint()
                    result = tool_registry.execute(tool_call.name, tool_call.arguments)
                    ctx.set_payload({"result_preview": str(result)[:200]})
        return response

    async with agent.task("task-async-turns", project="my-project"):
        await run_turn()
        await run_turn()
    assert _shape(cap) == [
        ("task_started", None, None),
        ("custom", "llm_call", None),
        ("action_started", "crm_search", None),
        ("action_completed", "crm_search", None),
        ("custom", "llm_call", None),
        ("action_started", "send_email", None),
        ("action_completed", "send_email", None),
        ("task_completed", None, None),
    ]
    assert all(e["task_id"] == "task-async-turns" for e in cap.events)
    assert cap.events[3]["payload"]["result_preview"] == "crm_search result for ['query']"


# -- §8 ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Lead:
    email: str
    company: str


def test_sec8_1_tool_calls_inside_tracked_function(agent: Agent, cap: EventCapture) -> None:
    """§8.1: context blocks inside a decorated function are its children."""
    crm = types.SimpleNamespace(search=Recorder(result={"name": "Jane"}))
    clearbit = types.SimpleNamespace(lookup=Recorder(result={"size": 50}))
    ns = _run(SEC8_1_PROCESS_LEAD, {"agent": agent, "crm": crm, "clearbit": clearbit})
    ns["process_lead"](Lead("jane@acme.com", "Acme"))
    assert crm.search.calls == [("jane@acme.com",)]
    assert clearbit.lookup.calls == [("Acme",)]
    assert _shape(cap) == [
        ("action_started", "process_lead", None),
        ("action_started", "crm_search", "process_lead"),
        ("action_completed", "crm_search", "process_lead"),
        ("action_started", "enrich_company", "process_lead"),
        ("action_completed", "enrich_company", "process_lead"),
        ("action_completed", "process_lead", None),
    ]
    assert cap.events[0]["payload"] == {
        "action_name": "process_lead",
        "function": "manual_example.process_lead",
    }
    assert cap.events[2]["payload"] == {"action_name": "crm_search", "found": True}
    assert cap.events[4]["payload"] == {"action_name": "enrich_company"}


def test_sec8_2_nested_context_managers(agent: Agent, cap: EventCapture) -> None:
    """§8.2: inner_step is a child of outer_step."""
    do_work = Recorder()
    _run(SEC8_2_NESTED, {"agent": agent, "do_work": do_work})
    assert do_work.calls == [()]
    assert _shape(cap) == [
        ("action_started", "outer_step", None),
        ("action_started", "inner_step", "outer_step"),
        ("action_completed", "inner_step", "outer_step"),
        ("action_completed", "outer_step", None),
    ]


def test_sec8_3_mixed_decorator_and_context_manager(agent: Agent, cap: EventCapture) -> None:
    """§8.3: the chain task → step1 → llm_inference, linked by parent_action_id."""
    model = types.SimpleNamespace(predict=Recorder(result=0.87))
    lead = Lead("jane@acme.com", "Acme")
    ns = _run(SEC8_3_MIXED, {"agent": agent, "model": model, "lead": lead})
    assert model.predict.calls == [(lead,)]
    assert _shape(cap) == [
        ("task_started", None, None),
        ("action_started", "step1", None),
        ("action_started", "llm_inference", "step1"),
        ("action_completed", "llm_inference", "step1"),
        ("action_completed", "step1", None),
        ("task_completed", None, None),
    ]
    assert all(e["task_id"] == "task-123" for e in cap.events)
    assert all(e["task_run_id"] == ns["task"].task_run_id for e in cap.events)
    assert cap.events[3]["payload"] == {"action_name": "llm_inference", "score": 0.87}
    assert cap.events[4]["payload"] == {"action_name": "step1", "function": "manual_example.score"}


def test_sec8_4_tool_hierarchy(agent: Agent, cap: EventCapture) -> None:
    """§8.4: summarize is a child of research."""
    web_search = Recorder(result=["r1", "r2"])
    llm_summarize = Recorder(result="summary")
    _run(
        SEC8_4_RESEARCH,
        {
            "agent": agent,
            "web_search": web_search,
            "llm_summarize": llm_summarize,
            "query": "acme",
        },
    )
    assert llm_summarize.calls == [(["r1", "r2"],)]
    assert _shape(cap) == [
        ("action_started", "research", None),
        ("action_started", "summarize", "research"),
        ("action_completed", "summarize", "research"),
        ("action_completed", "research", None),
    ]


# -- §11.3 ---------------------------------------------------------------------------------------


def _loop_step(code: str, registry: Any, observability: types.ModuleType) -> Any:
    ns = _run(_as_method(code, "tool_name, parameters", "tool_result"), _plumbing(observability))
    loop = types.SimpleNamespace(tool_registry=registry)
    return ns["step"](loop, "crm_search", {"query": "Acme Corp", "limit": 10})


def test_sec11_3_final_implementation(
    agent: Agent, cap: EventCapture, observability: types.ModuleType
) -> None:
    """§11.3 final: the tool runs once, and a returned error lands in the action's payload."""
    registry = ToolResultRegistry(ToolResult(success=False, output=None, error="404 Not Found"))
    with agent.task("task-loopcore"):
        observability.set_hiveloop_agent(agent)
        result = _loop_step(SEC11_3_FINAL, registry, observability)
        observability.clear_hiveloop_agent()
    assert result is registry.result
    assert len(registry.calls) == 1
    assert _shape(cap) == [
        ("task_started", None, None),
        ("action_started", "crm_search", None),
        ("action_completed", "crm_search", None),
        ("task_completed", None, None),
    ]
    completed = cap.events[2]
    assert completed["status"] == "success"
    assert completed["task_id"] == "task-loopcore"
    assert completed["payload"] == {
        "action_name": "crm_search",
        "args": {"query": "Acme Corp", "limit": "10"},
        "result_preview": "",
        "success": False,
        "error": "404 Not Found",
    }


def test_sec11_3_final_implementation_without_agent(
    cap: EventCapture, observability: types.ModuleType
) -> None:
    """§11.3 final: with no agent handle the tool runs once and nothing is recorded."""
    registry = ToolResultRegistry(ToolResult(success=True, output="found"))
    result = _loop_step(SEC11_3_FINAL, registry, observability)
    assert result.output == "found"
    assert len(registry.calls) == 1
    assert cap.events == []


def test_sec11_3_first_attempt(
    agent: Agent, cap: EventCapture, observability: types.ModuleType
) -> None:
    """§11.3 first attempt, run as printed (``set_payload({...})``): one run, one action."""
    registry = ToolResultRegistry(ToolResult(success=True, output="found"))
    observability.set_hiveloop_agent(agent)
    try:
        result = _loop_step(SEC11_3_FIRST_ATTEMPT, registry, observability)
    finally:
        observability.clear_hiveloop_agent()
    assert result.output == "found"
    assert len(registry.calls) == 1
    started, completed = cap.events
    assert started["event_type"] == "action_started"
    assert completed["event_type"] == "action_completed"
    assert completed["status"] == "success"
    assert completed["action_id"] == started["action_id"]
    assert completed["payload"]["action_name"] == "crm_search"


# -- §12 -----------------------------------------------------------------------------------------


def test_sec12_1_agentic_tool_dispatch(agent: Agent, cap: EventCapture) -> None:
    """§12.1: one action per tool call with truncated args and a result preview."""
    tool_registry = FakeToolRegistry()
    response = Response(
        "claude-sonnet",
        Usage(1, 1),
        [ToolCall("crm_search", {"query": "Acme Corp", "blob": "x" * 500})],
    )
    _run(
        SEC12_1_DISPATCH,
        {"hiveloop_agent": agent, "tool_registry": tool_registry, "response": response},
    )
    assert tool_registry.calls == ["crm_search"]
    assert len(cap.events) == 2
    completed = cap.events[1]
    assert completed["payload"] == {
        "action_name": "crm_search",
        "args": {"query": "Acme Corp", "blob": "x" * 100},
        "result_preview": "crm_search result for ['blob', 'query']",
    }


def test_sec12_2_dynamic_pipeline_steps(agent: Agent, cap: EventCapture) -> None:
    """§12.2: each runtime step name becomes a snake_case action, in order."""
    run_step = Recorder()
    pipeline = types.SimpleNamespace(steps=["Fetch Data", "Score Leads", "Send Report"])
    _run(SEC12_2_PIPELINE, {"hiveloop_agent": agent, "pipeline": pipeline, "run_step": run_step})
    assert run_step.calls == [("Fetch Data",), ("Score Leads",), ("Send Report",)]
    assert [(e["event_type"], e["payload"]["action_name"]) for e in cap.events] == [
        ("action_started", "fetch_data"),
        ("action_completed", "fetch_data"),
        ("action_started", "score_leads"),
        ("action_completed", "score_leads"),
        ("action_started", "send_report"),
        ("action_completed", "send_report"),
    ]


@pytest.mark.parametrize("expensive_operation", [True, False])
def test_sec12_3_conditional_tracking(
    expensive_operation: bool,
    agent: Agent,
    cap: EventCapture,
    observability: types.ModuleType,
) -> None:
    """§12.3: only the expensive branch with an agent handle is tracked."""
    compute = Recorder(result=42)
    data = [1, 2, 3]
    observability.set_hiveloop_agent(agent)
    ns = _run(
        SEC12_3_CONDITIONAL,
        {
            "expensive_operation": expensive_operation,
            "compute": compute,
            "data": data,
            **_plumbing(observability),
        },
    )
    assert ns["result"] == 42
    assert compute.calls == [(data,)]
    if expensive_operation:
        assert [e["event_type"] for e in cap.events] == ["action_started", "action_completed"]
        assert cap.events[1]["payload"] == {"action_name": "heavy_computation", "records": 3}
    else:
        assert cap.events == []


@pytest.mark.parametrize("with_agent", [True, False])
def test_sec12_4_class_methods(
    with_agent: bool, agent: Agent, cap: EventCapture, observability: types.ModuleType
) -> None:
    """§12.4: the method tracks itself when an agent handle is current, and runs either way."""
    ns = _run(SEC12_4_CLASS, _plumbing(observability))
    outcome = types.SimpleNamespace(ok=True)

    executor_class: Any = ns["ToolExecutor"]

    class RealExecutor(executor_class):  # type: ignore[misc]
        def _run(self, tool_name: str, args: dict[str, Any]) -> Any:
            return outcome

    if with_agent:
        observability.set_hiveloop_agent(agent)
    assert RealExecutor().execute("crm_search", {"q": 1}) is outcome
    if with_agent:
        assert [e["event_type"] for e in cap.events] == ["action_started", "action_completed"]
        assert cap.events[1]["payload"] == {"action_name": "crm_search", "success": True}
    else:
        assert cap.events == []


class RetryableError(Exception):
    """The retryable error of §12.5."""


def test_sec12_5_retry_succeeds_on_second_attempt(agent: Agent, cap: EventCapture) -> None:
    """§12.5: one action per attempt, named by attempt; the retry loop goes on after the error."""
    sleeps: list[float] = []
    execute_tool = Recorder(result="ok", errors=[RetryableError("503 from CRM")])
    ns = _run(
        SEC12_5_RETRY,
        {
            "hiveloop_agent": agent,
            "execute_tool": execute_tool,
            "RetryableError": RetryableError,
            "tool_name": "crm_search",
            "args": {"q": "acme"},
            "max_retries": 3,
            "time": types.SimpleNamespace(sleep=sleeps.append),
        },
    )
    assert ns["result"] == "ok"
    assert sleeps == [1]
    assert len(execute_tool.calls) == 2
    # The example catches the error inside the block, so attempt 1 closes without an
    # exception; its payload carries the error.
    assert [(e["event_type"], e["payload"]) for e in cap.events] == [
        ("action_started", {"action_name": "crm_search_attempt_1"}),
        (
            "action_completed",
            {"action_name": "crm_search_attempt_1", "attempt": 1, "error": "503 from CRM"},
        ),
        ("action_started", {"action_name": "crm_search_attempt_2"}),
        (
            "action_completed",
            {"action_name": "crm_search_attempt_2", "attempt": 2, "success": True},
        ),
    ]


def test_sec12_5_retry_exhausted_raises(agent: Agent, cap: EventCapture) -> None:
    """§12.5: the last failed attempt re-raises and is recorded as action_failed."""
    sleeps: list[float] = []
    errors: list[BaseException] = [RetryableError(f"503 #{i}") for i in range(3)]
    execute_tool = Recorder(errors=errors)
    with pytest.raises(RetryableError, match="503 #2"):
        _run(
            SEC12_5_RETRY,
            {
                "hiveloop_agent": agent,
                "execute_tool": execute_tool,
                "RetryableError": RetryableError,
                "tool_name": "crm_search",
                "args": {},
                "max_retries": 3,
                "time": types.SimpleNamespace(sleep=sleeps.append),
            },
        )
    assert sleeps == [1, 2]
    closing = cap.of_type("action_completed", "action_failed")
    assert [e["event_type"] for e in closing] == [
        "action_completed",
        "action_completed",
        "action_failed",
    ]
    assert closing[-1]["payload"] == {
        "action_name": "crm_search_attempt_3",
        "attempt": 3,
        "error": "503 #2",
        "exception_type": "RetryableError",
        "exception_message": "503 #2",
    }
