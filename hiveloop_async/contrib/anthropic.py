"""Anthropic client calls that record themselves as ``llm_call`` events.

::

    from anthropic import AsyncAnthropic
    from hiveloop_async.contrib.anthropic import instrument

    client = instrument(AsyncAnthropic())

Covered, on ``anthropic.Anthropic`` and ``anthropic.AsyncAnthropic``: ``messages.create``
(plain and ``stream=True``) and the ``messages.stream(...)`` helper (``with`` /
``async with``). Each call records one ``llm_call`` (name ``"messages"`` by default) under the
current task, else the current agent: model, input/output tokens, ``cache_creation_input_tokens``
and ``cache_read_input_tokens``, ``stop_reason`` and the ``tool_use`` blocks (names and ids)
in metadata, ``duration_ms`` and, for streams, ``ttft_ms``. Failures are recorded with
``metadata.status = "failed"`` and ``metadata.error`` and re-raised unchanged.

``client.copy()`` / ``with_options(...)`` return instrumented copies. Nothing from
``anthropic`` is imported until :func:`instrument` is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

from ._llm import DEFAULT_PREVIEW_CHARS, DEFAULT_PRICES, last_message_text, log_once
from ._llmwrap import AsyncStream, Call, SyncStream, instrument_copies, wrap_async, wrap_sync

__all__ = ["instrument", "uninstrument"]

_C = TypeVar("_C")
_STATE = "_hiveloop_instrumented"
_RAW_HEADER = "X-Stainless-Raw-Response"


def instrument(
    client: _C,
    *,
    name: str | None = None,
    capture_content: bool = True,
    preview_chars: int = DEFAULT_PREVIEW_CHARS,
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> _C:
    """Make ``client`` (``anthropic.Anthropic`` or ``AsyncAnthropic``) record its calls.

    Returns the same client; idempotent. Options as in ``hiveloop_async.contrib.openai``.
    Does not block; raises ``TypeError`` if ``client`` is not an Anthropic client.
    """
    import anthropic

    if not isinstance(client, anthropic.Anthropic | anthropic.AsyncAnthropic):
        raise TypeError("instrument() takes an anthropic.Anthropic or AsyncAnthropic instance")
    if getattr(client, _STATE, None) is not None:
        return client
    table = {**DEFAULT_PRICES, **prices} if prices else DEFAULT_PRICES
    is_async = isinstance(client, anthropic.AsyncAnthropic)
    label = name or "messages"

    def start(kwargs: dict[str, Any]) -> tuple[Call, dict[str, Any]]:
        model = kwargs.get("model")
        call = Call(
            label,
            model if isinstance(model, str) else None,
            capture=capture_content,
            limit=preview_chars,
            prices=table,
            prompt=last_message_text(kwargs.get("messages")),
        )
        call.meta["provider"] = "anthropic"
        headers = kwargs.get("extra_headers")
        if isinstance(headers, Mapping) and _RAW_HEADER in headers:
            call.meta["raw_response"] = True
        elif kwargs.get("stream") is True:
            call.meta["stream"] = True
        return call, kwargs

    def finish(call: Call, result: Any) -> Any:
        if call.meta.get("raw_response"):
            call.end()
            return result
        if call.meta.get("stream"):
            return AsyncStream(result, call, _feed) if is_async else SyncStream(result, call, _feed)
        _read_message(call, result)
        call.end()
        return result

    messages: Any = client.messages
    original_create = messages.create
    wrap = wrap_async if is_async else wrap_sync
    messages.create = wrap(original_create, start, finish)
    original_stream = messages.stream

    def stream(*args: Any, **kwargs: Any) -> Any:
        manager = original_stream(*args, **kwargs)
        try:
            call, _ = start(kwargs)
            call.meta["stream"] = True
            return _AsyncManager(manager, call) if is_async else _SyncManager(manager, call)
        except Exception as exc:
            log_once("anthropic stream", exc)
            return manager

    stream.__doc__ = original_stream.__doc__
    messages.stream = stream
    copies = instrument_copies(
        client,
        lambda new: instrument(
            new,
            name=name,
            capture_content=capture_content,
            preview_chars=preview_chars,
            prices=prices,
        ),
        "anthropic copy",
    )
    patched = [(messages, "create"), (messages, "stream"), *copies]
    object.__setattr__(client, _STATE, patched)
    return client


def uninstrument(client: object) -> None:
    """Undo :func:`instrument` on ``client`` (no-op if it is not instrumented). Never raises."""
    patched = getattr(client, _STATE, None)
    if patched is None:
        return
    for obj, attr in patched:
        try:
            delattr(obj, attr)
        except AttributeError:
            pass
    delattr(client, _STATE)


def _usage(call: Call, usage: Any, *, start: bool) -> None:
    if usage is None:
        return
    tin = getattr(usage, "input_tokens", None)
    if tin is not None and (start or call.tokens_in is None):
        call.tokens_in = tin
    tout = getattr(usage, "output_tokens", None)
    if tout is not None:
        call.tokens_out = tout
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        value = getattr(usage, key, None)
        if value:
            call.meta[key] = value


def _read_message(call: Call, msg: Any) -> None:
    call.model = getattr(msg, "model", None) or call.model
    _usage(call, getattr(msg, "usage", None), start=True)
    reason = getattr(msg, "stop_reason", None)
    if reason:
        call.meta["stop_reason"] = reason
    tools = []
    for block in getattr(msg, "content", None) or ():
        kind = getattr(block, "type", None)
        if kind == "text":
            call.add_text(block.text)
        elif kind == "tool_use":
            tools.append({"id": block.id, "name": block.name})
    if tools:
        call.meta["tool_calls"] = tools


def _feed(call: Call, event: Any) -> bool:
    kind = getattr(event, "type", "")
    if kind == "content_block_delta":  # most events: no call but add_text while capturing
        if call.ttft_ms is None:
            call.first_token()
        delta = event.delta
        if (
            call.capture
            and call.text_len < call.limit
            and getattr(delta, "type", "") == "text_delta"
        ):
            call.add_text(delta.text)
    elif kind == "message_start":
        msg = event.message
        call.model = getattr(msg, "model", None) or call.model
        _usage(call, getattr(msg, "usage", None), start=True)
    elif kind == "content_block_start":
        block = event.content_block
        if getattr(block, "type", "") == "tool_use":
            call.first_token()
            call.meta.setdefault("tool_calls", []).append({"id": block.id, "name": block.name})
    elif kind == "message_delta":
        reason = getattr(event.delta, "stop_reason", None)
        if reason:
            call.meta["stop_reason"] = reason
        _usage(call, getattr(event, "usage", None), start=False)
    return False


def _observe(raw: Any, call: Call) -> None:
    """Make the helper's raw stream feed ``call`` as the MessageStream reads it."""
    inner = raw._iterator
    if hasattr(inner, "__anext__"):

        async def agen() -> Any:
            async for event in inner:
                _safe_feed(call, event)
                yield event

        raw._iterator = agen()
    else:

        def gen() -> Any:
            for event in inner:
                _safe_feed(call, event)
                yield event

        raw._iterator = gen()


def _safe_feed(call: Call, event: Any) -> None:
    try:
        _feed(call, event)
    except Exception as exc:
        log_once("anthropic feed", exc)


class _SyncManager:
    """Wraps ``MessageStreamManager``: records when its ``with`` block ends."""

    def __init__(self, manager: Any, call: Call) -> None:
        self._manager = manager
        self._call = call

    def __enter__(self) -> Any:
        call = self._call
        call.restart()
        try:
            stream = self._manager.__enter__()
        except BaseException as exc:
            call.end(exc)
            raise
        try:
            _observe(stream._raw_stream, call)
        except Exception as exc:
            log_once("anthropic stream observe", exc)
        return stream

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self._manager.__exit__(exc_type, exc, tb)
        finally:
            _close(self._call, exc)


class _AsyncManager:
    """Wraps ``AsyncMessageStreamManager``: records when its ``async with`` block ends."""

    def __init__(self, manager: Any, call: Call) -> None:
        self._manager = manager
        self._call = call

    async def __aenter__(self) -> Any:
        call = self._call
        call.restart()
        try:
            stream = await self._manager.__aenter__()
        except BaseException as exc:
            call.end(exc)
            raise
        try:
            _observe(stream._raw_stream, call)
        except Exception as exc:
            log_once("anthropic stream observe", exc)
        return stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self._manager.__aexit__(exc_type, exc, tb)
        finally:
            _close(self._call, exc)


def _close(call: Call, exc: BaseException | None) -> None:
    if exc is not None:
        call.end(exc)
    else:
        call.end(early="stop_reason" not in call.meta)
