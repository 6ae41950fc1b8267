"""LangChain (and LangGraph) runs recorded as HiveLoop actions and ``llm_call`` events.

::

    from hiveloop_async.contrib.langchain import HiveLoopCallbackHandler

    handler = HiveLoopCallbackHandler()
    with agent.task("t-1"):
        graph.invoke(inputs, config={"callbacks": [handler]})    # or await graph.ainvoke(...)

What is recorded, under the HiveLoop task (or action) current where the run was invoked:

* each chat model or LLM run: one ``llm_call`` (model, tokens in/out, cost, ``duration_ms``,
  prompt/response previews, ``ttft_ms`` when streamed, the tool calls the model asked for); a
  failed run is an ``llm_call`` with ``metadata.status = "failed"`` and ``metadata.error``;
* each tool run: an action named after the tool (``action_started``, then
  ``action_completed`` or ``action_failed``) with ``input_preview`` / ``output_preview`` and
  ``tool_call_id`` in its payload; a tool whose error LangChain turned into a
  ``ToolMessage(status="error")`` is an ``action_failed`` with exception type ``ToolError``;
* with ``track_chains=True``, each chain, runnable or LangGraph node (not those LangChain
  tags ``langsmith:hidden``): an action named after the run.

Runs nest by LangChain's ``run_id`` / ``parent_run_id``: an LLM or tool run started inside a
tool (or a tracked chain) is recorded inside that action. Each run keeps the
:class:`contextvars.Context` it started in; actions are entered and left inside it, so runs
that start and end in different threads or asyncio tasks still nest correctly. A tool's (or
tracked chain's) action is also made current in the context the callback runs in, which
LangChain copies to run the tool's body, so what the tool's own code records with the SDK
(``agent.track_context``, ``task.llm_call``, an instrumented OpenAI client) nests inside it.
That holds for :class:`HiveLoopCallbackHandler` everywhere, and for the async handler when
LangChain awaits it (``ainvoke`` of async code), not when it drives it from sync code.

With no HiveLoop task or action current where a run starts, the run is recorded on the
handler's ``agent=`` (agent-level actions and ``llm_call`` events, with no task), or not at
all without one. A run whose end LangChain never reports stays open (and current in the
context it started in) until more than ``max_runs`` runs are open: the oldest is then
dropped and its action closed as failed (``RunNotEnded``).

:class:`HiveLoopCallbackHandler` is a sync handler that runs inline (``run_inline = True``):
it serves ``invoke`` and ``ainvoke`` alike, on the caller's thread or loop, without a thread
hop. :class:`AsyncHiveLoopCallbackHandler` is the same as an ``AsyncCallbackHandler`` for code
that wants one. Neither blocks, does I/O or raises into LangChain (``raise_error = False``;
an internal error is logged once); the user's exceptions pass through unchanged.

Importing ``hiveloop_async`` does not import ``langchain_core``; importing this module does.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any
from uuid import UUID

from .._agent import Agent
from .._api import current_agent
from .._context import current_scope
from .._task import Task
from .._track import ActionScope
from ._llm import (
    DEFAULT_PREVIEW_CHARS,
    DEFAULT_PRICES,
    capture_target,
    content_text,
    log_once,
    preview,
    record_llm_call,
)

try:
    from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hiveloop_async.contrib.langchain needs langchain-core: "
        "pip install 'hiveloop-async[langchain]'"
    ) from exc

__all__ = [
    "DEFAULT_MAX_RUNS",
    "AsyncHiveLoopCallbackHandler",
    "HiveLoopCallbackHandler",
    "RunNotEnded",
    "ToolError",
]

#: Default bound of the runs kept open at once (started, not yet ended) per handler.
DEFAULT_MAX_RUNS = 10_000

_HIDDEN = "langsmith:hidden"
_MODEL_KEYS = ("model", "model_name", "model_id", "deployment_name", "azure_deployment")
_PASS, _ACTION, _LLM = 0, 1, 2


class ToolError(Exception):
    """The error of a tool whose failure LangChain returned as ``ToolMessage(status="error")``.

    Never raised: it is what the tool's ``action_failed`` names as its exception type.
    """


class RunNotEnded(Exception):
    """The error of an action whose LangChain run never ended and was dropped.

    Never raised: when more than ``max_runs`` runs are open at once, the oldest is dropped and,
    if it was an action, closed as ``action_failed`` with this exception type.
    """


class _Run:
    """One open LangChain run: its context, and the action or LLM call it records."""

    __slots__ = (
        "ctx",
        "kind",
        "live",
        "meta",
        "model",
        "name",
        "prompt",
        "scope",
        "t0",
        "target",
        "ttft",
    )

    def __init__(self, kind: int, ctx: contextvars.Context) -> None:
        self.kind = kind
        self.ctx = ctx
        self.scope: ActionScope | None = None
        self.live: contextvars.Token[Any] | None = None
        self.target: Task | Agent | None = None
        self.name = ""
        self.model: str | None = None
        self.prompt: str | None = None
        self.meta: dict[str, Any] = {}
        self.t0 = 0
        self.ttft: int | None = None


class _Recorder:
    """What both handlers do; their callbacks delegate here. Every method never raises."""

    def __init__(
        self,
        agent: Agent | None,
        name: str | None,
        capture_content: bool,
        preview_chars: int,
        prices: Mapping[str, tuple[float, float]] | None,
        track_chains: bool,
        max_runs: int,
    ) -> None:
        self.agent = agent
        self.name = name
        self.capture = capture_content
        self.limit = preview_chars
        self.prices: Mapping[str, tuple[float, float]] = (
            {**DEFAULT_PRICES, **prices} if prices else DEFAULT_PRICES
        )
        self.track_chains = track_chains
        self.max_runs = max(1, max_runs)
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()

    # -- the run map ---------------------------------------------------------------------

    def open_runs(self) -> int:
        """How many runs are open (started, not ended). Never blocks for long."""
        return len(self._runs)

    def _base(self, parent_run_id: UUID | None) -> contextvars.Context:
        """The context a new run starts from: its parent's, else a copy of the current one."""
        if parent_run_id is not None:
            parent = self._runs.get(parent_run_id)
            if parent is not None:
                return parent.ctx
        return contextvars.copy_context()

    def _put(self, run_id: UUID, run: _Run) -> None:
        dropped: list[_Run] = []
        with self._lock:
            self._runs[run_id] = run
            while len(self._runs) > self.max_runs:
                oldest = next(iter(self._runs))
                dropped.append(self._runs.pop(oldest))
        for old in dropped:
            if old.scope is not None:
                self._exit(old, RunNotEnded("the LangChain run never ended"))

    def _pop(self, run_id: UUID) -> _Run | None:
        with self._lock:
            return self._runs.pop(run_id, None)

    # -- actions (tools, chains) -----------------------------------------------------------

    def start_action(
        self, run_id: UUID, parent_run_id: UUID | None, name: str, payload: dict[str, Any] | None
    ) -> None:
        base = self._base(parent_run_id)
        ctx = base.copy()
        agent = ctx.run(current_agent) or self.agent
        if agent is None:
            self._put(run_id, _Run(_PASS, base))
            return
        run = _Run(_ACTION, ctx)
        scope = agent.track_context(name)
        ctx.run(scope.__enter__)
        if payload:
            scope.set_payload(payload)
        run.scope = scope
        # Also current in the calling context, which LangChain copies to run the tool's (or
        # chain's) body: blocks and LLM calls the user's code records there nest inside.
        run.live = current_scope.set(scope)
        self._put(run_id, run)

    def start_pass(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        """A run that records nothing itself but keeps its parent's context for its children."""
        self._put(run_id, _Run(_PASS, self._base(parent_run_id)))

    def end_run(
        self,
        run_id: UUID,
        error: BaseException | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        run = self._pop(run_id)
        if run is None or run.scope is None:
            return
        if payload:
            current = run.scope.payload
            run.scope.set_payload({**current, **payload} if current else payload)
        live = run.live
        if live is not None:
            run.live = None
            try:
                current_scope.reset(live)
            except ValueError:
                pass  # ended in another context: there the closed scope is simply skipped
        self._exit(run, error)

    @staticmethod
    def _exit(run: _Run, error: BaseException | None) -> None:
        scope = run.scope
        if scope is None:
            return
        if error is None:
            run.ctx.run(scope.__exit__, None, None, None)
        else:
            run.ctx.run(scope.__exit__, type(error), error, error.__traceback__)

    def tool_start(
        self,
        serialized: Mapping[str, Any] | None,
        input_str: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        payload: dict[str, Any] = {}
        call_id = kwargs.get("tool_call_id")
        if isinstance(call_id, str):
            payload["tool_call_id"] = call_id
        if self.capture:
            text = preview(input_str, self.limit)
            if text is not None:
                payload["input_preview"] = text
        self.start_action(run_id, parent_run_id, str(name), payload)

    def tool_end(self, output: Any, run_id: UUID) -> None:
        text: str | None = None
        content = getattr(output, "content", output)
        if self.capture or getattr(output, "status", None) == "error":
            text = content_text(content)
            if text is None and content is not None:
                text = str(content)
        error: BaseException | None = None
        if getattr(output, "status", None) == "error":
            error = ToolError(preview(text, 300) or "")
        payload = None
        if self.capture:
            out = preview(text, self.limit)
            if out is not None:
                payload = {"output_preview": out}
        self.end_run(run_id, error, payload)

    def chain_start(
        self,
        serialized: Mapping[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        if not self.track_chains or (tags and _HIDDEN in tags):
            self.start_pass(run_id, parent_run_id)
            return
        ser = serialized or {}
        name = kwargs.get("name") or ser.get("name")
        if not name:
            ids = ser.get("id")
            name = ids[-1] if isinstance(ids, list) and ids else "chain"
        self.start_action(run_id, parent_run_id, str(name), None)

    # -- LLM runs ----------------------------------------------------------------------------

    def llm_start(
        self,
        serialized: Mapping[str, Any] | None,
        prompt: str | None,
        chat: bool,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        ctx = self._base(parent_run_id).copy()
        run = _Run(_LLM, ctx)
        run.target = ctx.run(capture_target) or self.agent
        run.name = self.name or kwargs.get("name") or ("chat" if chat else "llm")
        run.model = _model_at_start(serialized, metadata, kwargs.get("invocation_params"))
        if self.capture:
            run.prompt = preview(prompt, self.limit)
        provider = (metadata or {}).get("ls_provider")
        if isinstance(provider, str):
            run.meta["provider"] = provider
        run.t0 = time.perf_counter_ns()
        self._put(run_id, run)

    def llm_token(self, run_id: UUID) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.ttft is None:
            run.ttft = (time.perf_counter_ns() - run.t0) // 1_000_000
            run.meta["stream"] = True

    def llm_end(
        self, run_id: UUID, response: LLMResult | None, error: BaseException | None
    ) -> None:
        run = self._pop(run_id)
        if run is None or run.kind != _LLM:
            return
        duration = (time.perf_counter_ns() - run.t0) // 1_000_000
        meta = run.meta
        if run.ttft is not None:
            meta["ttft_ms"] = run.ttft
        tokens_in = tokens_out = None
        text = None
        model = run.model
        if response is not None:
            model, tokens_in, tokens_out, text = _read_result(response, meta, model)
        run.ctx.run(
            record_llm_call,
            run.target,
            run.name,
            model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            duration_ms=duration,
            prompt_preview=run.prompt,
            response_preview=preview(text, self.limit) if self.capture else None,
            metadata=meta,
            prices=self.prices,
            error=error,
        )


def _first_str(source: object, keys: Sequence[str]) -> str | None:
    if isinstance(source, Mapping):
        for key in keys:
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _model_at_start(
    serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None, params: object
) -> str | None:
    """The requested model: invocation params, then LangSmith metadata, then the constructor
    arguments of the serialized model, then the model's ``_type``."""
    return (
        _first_str(params, _MODEL_KEYS)
        or _first_str(metadata, ("ls_model_name",))
        or _first_str((serialized or {}).get("kwargs"), _MODEL_KEYS)
        or _first_str(params, ("_type",))
    )


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_result(
    response: LLMResult, meta: dict[str, Any], model: str | None
) -> tuple[str | None, int | None, int | None, str | None]:
    """(model, tokens_in, tokens_out, response text) of a run's result; fills ``meta``."""
    tokens_in: int | None = None
    tokens_out: int | None = None
    text: str | None = None
    seen_usage = False
    tool_calls: list[dict[str, Any]] = []
    for generations in response.generations:
        for gen in generations:
            if text is None and gen.text:
                text = gen.text
            info = gen.generation_info or {}
            reason = info.get("finish_reason")
            message = getattr(gen, "message", None)
            if message is None:
                if isinstance(reason, str):
                    meta.setdefault("finish_reason", reason)
                continue
            if text is None:
                text = content_text(getattr(message, "content", None))
            rmeta = getattr(message, "response_metadata", None) or {}
            model = _first_str(rmeta, ("model_name", "model", "model_id")) or model
            reason = reason or rmeta.get("finish_reason") or rmeta.get("stop_reason")
            if isinstance(reason, str):
                meta.setdefault("finish_reason", reason)
            for call in getattr(message, "tool_calls", None) or ():
                tool_calls.append({"id": call.get("id"), "name": call.get("name")})
            usage = getattr(message, "usage_metadata", None)
            if usage:
                seen_usage = True
                tokens_in = (tokens_in or 0) + (_as_int(usage.get("input_tokens")) or 0)
                tokens_out = (tokens_out or 0) + (_as_int(usage.get("output_tokens")) or 0)
                cached = _as_int((usage.get("input_token_details") or {}).get("cache_read"))
                if cached:
                    meta["cached_tokens"] = meta.get("cached_tokens", 0) + cached
                reasoning = _as_int((usage.get("output_token_details") or {}).get("reasoning"))
                if reasoning:
                    meta["reasoning_tokens"] = meta.get("reasoning_tokens", 0) + reasoning
    if tool_calls:
        meta["tool_calls"] = tool_calls
    llm_output = response.llm_output or {}
    model = _first_str(llm_output, ("model_name", "model")) or model
    if not seen_usage:
        usage = llm_output.get("token_usage") or llm_output.get("usage")
        if isinstance(usage, Mapping):
            tokens_in = _as_int(usage.get("prompt_tokens")) or _as_int(usage.get("input_tokens"))
            tokens_out = _as_int(usage.get("completion_tokens")) or _as_int(
                usage.get("output_tokens")
            )
    return model, tokens_in, tokens_out, text


def _last_message_text(messages: list[list[BaseMessage]]) -> str | None:
    if messages and messages[0]:
        return content_text(messages[0][-1].content)
    return None


class _Options:
    """The constructor and state both handlers share."""

    _hl: _Recorder

    def __init__(
        self,
        agent: Agent | None = None,
        *,
        name: str | None = None,
        capture_content: bool = True,
        preview_chars: int = DEFAULT_PREVIEW_CHARS,
        prices: Mapping[str, tuple[float, float]] | None = None,
        track_chains: bool = False,
        max_runs: int = DEFAULT_MAX_RUNS,
    ) -> None:
        """Set the options; records nothing, never blocks or raises.

        ``agent``: where to record runs invoked outside any HiveLoop task or action (agent-level
        actions and ``llm_call`` events); without it such runs record nothing. ``name``: the
        ``llm_call`` name (default the run's ``run_name``, else ``"chat"`` or ``"llm"``).
        ``capture_content=False`` records no prompt, response, tool input or tool output text.
        ``preview_chars``: length of the previews. ``prices``: ``{model prefix: (usd_in_per_1k,
        usd_out_per_1k)}`` merged over the default table. ``track_chains=True`` records chains,
        runnables and LangGraph nodes as actions. ``max_runs``: bound of runs kept open at once
        (the oldest beyond it is dropped; an action then closes as failed with ``RunNotEnded``).
        """
        self._hl = _Recorder(
            agent, name, capture_content, preview_chars, prices, track_chains, max_runs
        )

    @property
    def open_runs(self) -> int:
        """How many LangChain runs this handler holds open (started, not yet ended)."""
        return self._hl.open_runs()


class HiveLoopCallbackHandler(_Options, BaseCallbackHandler):
    """A LangChain callback handler recording runs as HiveLoop actions and ``llm_call`` events.

    Pass it in ``config={"callbacks": [handler]}`` (or to a model's or tool's ``callbacks=``).
    One instance can serve many concurrent runs, threads and asyncio tasks. It runs inline
    (``run_inline = True``) for ``invoke`` and ``ainvoke``; no callback blocks, does I/O or
    raises. Constructing it records nothing.
    """

    raise_error = False
    run_inline = True

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            prompt = _last_message_text(messages) if self._hl.capture else None
            self._hl.llm_start(serialized, prompt, True, run_id, parent_run_id, metadata, kwargs)
        except Exception as exc:
            log_once("langchain on_chat_model_start", exc)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            prompt = prompts[0] if prompts and self._hl.capture else None
            self._hl.llm_start(serialized, prompt, False, run_id, parent_run_id, metadata, kwargs)
        except Exception as exc:
            log_once("langchain on_llm_start", exc)

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.llm_token(run_id)
        except Exception as exc:
            log_once("langchain on_llm_new_token", exc)

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.llm_end(run_id, response, None)
        except Exception as exc:
            log_once("langchain on_llm_end", exc)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.llm_end(run_id, None, error)
        except Exception as exc:
            log_once("langchain on_llm_error", exc)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.tool_start(serialized, input_str, run_id, parent_run_id, kwargs)
        except Exception as exc:
            log_once("langchain on_tool_start", exc)

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> Any:
        try:
            self._hl.tool_end(output, run_id)
        except Exception as exc:
            log_once("langchain on_tool_end", exc)

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.end_run(run_id, error)
        except Exception as exc:
            log_once("langchain on_tool_error", exc)

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.chain_start(serialized, run_id, parent_run_id, tags, kwargs)
        except Exception as exc:
            log_once("langchain on_chain_start", exc)

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.end_run(run_id)
        except Exception as exc:
            log_once("langchain on_chain_end", exc)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.end_run(run_id, error)
        except Exception as exc:
            log_once("langchain on_chain_error", exc)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.start_pass(run_id, parent_run_id)
        except Exception as exc:
            log_once("langchain on_retriever_start", exc)

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.end_run(run_id)
        except Exception as exc:
            log_once("langchain on_retriever_end", exc)

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            self._hl.end_run(run_id, error)
        except Exception as exc:
            log_once("langchain on_retriever_error", exc)


class AsyncHiveLoopCallbackHandler(_Options, AsyncCallbackHandler):
    """:class:`HiveLoopCallbackHandler` as an ``AsyncCallbackHandler`` (coroutine callbacks).

    Records exactly the same. The coroutines never await anything, never block and never
    raise. Prefer :class:`HiveLoopCallbackHandler` for sync ``invoke``: LangChain runs an async
    handler's callbacks there through a fresh event loop per callback.
    """

    raise_error = False
    run_inline = True


def _coroutine_callback(name: str) -> Callable[..., Coroutine[Any, Any, None]]:
    """The async handler's ``name``: the sync handler's callback, run as a coroutine."""
    sync = getattr(HiveLoopCallbackHandler, name)

    async def callback(self: AsyncHiveLoopCallbackHandler, *args: Any, **kwargs: Any) -> None:
        sync(self, *args, **kwargs)

    callback.__name__ = name
    callback.__qualname__ = f"AsyncHiveLoopCallbackHandler.{name}"
    callback.__doc__ = sync.__doc__
    return callback


#: Every callback the handlers implement (the same recording, sync or as a coroutine).
_CALLBACKS = (
    "on_chat_model_start",
    "on_llm_start",
    "on_llm_new_token",
    "on_llm_end",
    "on_llm_error",
    "on_tool_start",
    "on_tool_end",
    "on_tool_error",
    "on_chain_start",
    "on_chain_end",
    "on_chain_error",
    "on_retriever_start",
    "on_retriever_end",
    "on_retriever_error",
)
for _name in _CALLBACKS:
    setattr(AsyncHiveLoopCallbackHandler, _name, _coroutine_callback(_name))
del _name
