"""OpenAI client calls that record themselves as ``llm_call`` events.

::

    from openai import AsyncOpenAI
    from hiveloop_async.contrib.openai import instrument

    client = instrument(AsyncOpenAI())

Covered, on ``openai.OpenAI`` and ``openai.AsyncOpenAI``: ``chat.completions.create`` (plain
and ``stream=True``), ``chat.completions.parse``, ``responses.create`` (plain and streamed) and
``embeddings.create``. Each call records one ``llm_call`` under the current task (the
current agent when there is no task; nothing when there is neither).

Streams are recorded when they end, are closed early or fail. Unless the caller set
``stream_options`` or ``include_usage=False``, chat streams are sent with
``stream_options={"include_usage": True}`` so the tokens are known, and the extra usage-only
final chunk is hidden from the caller. A streamed result is a thin wrapper of the SDK's
``Stream``/``AsyncStream`` (iteration, ``close()``, ``with``; other attributes delegate).
While ``Stream.__iter__`` / ``AsyncStream.__aiter__`` are openai's own (a loop re-yielding
the stream's ``_iterator``), the wrapper iterates that ``_iterator`` itself: one generator
fewer per chunk. A replaced one (another instrumentation) is iterated as it is.

``client.copy()`` / ``client.with_options(...)`` return instrumented copies (same settings).
``with_raw_response`` / ``with_streaming_response`` keep working; they record the call's
duration and requested model only (their body is not parsed by us).

Nothing from ``openai`` is imported until :func:`instrument` is called.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import AsyncGeneratorType, GeneratorType
from typing import Any, TypeVar

from .._api import current_agent, current_task
from ._llm import (
    DEFAULT_PREVIEW_CHARS,
    DEFAULT_PRICES,
    content_text,
    last_message_text,
    log_once,
    record_llm_call,
)
from ._llmwrap import (
    AsyncStream,
    Call,
    SyncStream,
    emit,
    instrument_copies,
    wrap_async,
    wrap_sync,
)

__all__ = ["instrument", "uninstrument"]

_C = TypeVar("_C")
_STATE = "_hiveloop_instrumented"
_RAW_HEADER = "X-Stainless-Raw-Response"

#: (resource path, method, default name, kind)
_METHODS = (
    ("chat.completions", "create", "chat", "chat"),
    ("chat.completions", "parse", "chat", "chat"),
    ("responses", "create", "responses", "responses"),
    ("embeddings", "create", "embeddings", "embeddings"),
)


class _Options:
    __slots__ = ("capture", "include_usage", "limit", "name", "prices")

    def __init__(
        self,
        name: str | None,
        capture: bool,
        limit: int,
        prices: Mapping[str, tuple[float, float]],
        include_usage: bool,
    ) -> None:
        self.name = name
        self.capture = capture
        self.limit = limit
        self.prices = prices
        self.include_usage = include_usage


def instrument(
    client: _C,
    *,
    name: str | None = None,
    capture_content: bool = True,
    preview_chars: int = DEFAULT_PREVIEW_CHARS,
    prices: Mapping[str, tuple[float, float]] | None = None,
    include_usage: bool = True,
) -> _C:
    """Make ``client`` (``openai.OpenAI`` or ``AsyncOpenAI``) record its calls; returns it.

    ``name``: the ``llm_call`` name (default: the operation, ``"chat"``, ``"responses"``,
    ``"embeddings"``). ``capture_content=False`` records no prompt or response text.
    ``prices`` (``{model prefix: (usd_in_per_1k, usd_out_per_1k)}``) is merged over
    :data:`~hiveloop_async.contrib._llm.DEFAULT_PRICES`. ``include_usage=False`` never adds
    ``stream_options``. Idempotent (a second call changes nothing). Does not block; raises
    ``TypeError`` if ``client`` is not an OpenAI client.
    """
    import openai

    global _PLAIN_ITER, _PLAIN_AITER
    if _PLAIN_AITER is None:
        _PLAIN_ITER = _plain_loop(openai.Stream, "__iter__")
        _PLAIN_AITER = _plain_loop(openai.AsyncStream, "__aiter__")
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError("instrument() takes an openai.OpenAI or openai.AsyncOpenAI instance")
    if getattr(client, _STATE, None) is not None:
        return client
    table = {**DEFAULT_PRICES, **prices} if prices else DEFAULT_PRICES
    opts = _Options(name, capture_content, preview_chars, table, include_usage)
    is_async = isinstance(client, openai.AsyncOpenAI)
    patched: list[tuple[object, str]] = []
    for path, method, default_name, kind in _METHODS:
        resource: Any = client
        for part in path.split("."):
            resource = getattr(resource, part)
        original = getattr(resource, method, None)
        if original is None:
            continue
        call_name = opts.name or default_name
        start = _starter(kind, call_name, opts)
        finish = _finisher(kind, is_async)
        wrapped = (
            wrap_async(original, start, finish) if is_async else wrap_sync(original, start, finish)
        )
        if kind == "chat":  # plain and streamed chat calls take a shorter path
            wrapped = (
                _chat_async(original, wrapped, call_name, opts)
                if is_async
                else _chat_sync(original, wrapped, call_name, opts)
            )
        setattr(resource, method, wrapped)
        patched.append((resource, method))

    patched += instrument_copies(
        client,
        lambda new: instrument(
            new,
            name=name,
            capture_content=capture_content,
            preview_chars=preview_chars,
            prices=prices,
            include_usage=include_usage,
        ),
        "openai copy",
    )
    object.__setattr__(client, _STATE, patched)
    return client


def uninstrument(client: object) -> None:
    """Undo :func:`instrument` on ``client`` (no-op if it is not instrumented). Never raises.

    A ``with_raw_response`` resource built while instrumented keeps recording.
    """
    patched = getattr(client, _STATE, None)
    if patched is None:
        return
    for obj, attr in patched:
        try:
            delattr(obj, attr)
        except AttributeError:
            pass
    delattr(client, _STATE)


#: ``openai.Stream.__iter__`` / ``openai.AsyncStream.__aiter__`` when they only re-yield
#: the stream's ``_iterator`` (False when they do more; None until the first
#: :func:`instrument`).
_PLAIN_ITER: Any = None
_PLAIN_AITER: Any = None


def _plain_loop(cls: type, name: str) -> Any:
    """``cls.<name>`` if its body is ``[async] for item in self._iterator: yield item``
    (the only name it uses is ``_iterator``), else False."""
    fn = cls.__dict__.get(name)
    code = getattr(fn, "__code__", None)
    return fn if code is not None and code.co_names == ("_iterator",) else False


def _source_iter(stream: Any) -> Any:
    """What to ``for`` over to read ``stream``: the generator that openai's own
    ``Stream.__iter__`` re-yields item by item, when that method is still openai's plain
    one (not replaced, e.g. by another instrumentation) -- one generator fewer per chunk --
    else ``iter(stream)``."""
    if _PLAIN_ITER and type(stream).__iter__ is _PLAIN_ITER:
        inner = stream.__dict__.get("_iterator")
        if type(inner) is GeneratorType:
            return inner
    return iter(stream)


def _source_aiter(stream: Any) -> Any:
    """The async twin of :func:`_source_iter` (an async generator fewer per chunk, about
    0.3 µs each)."""
    if _PLAIN_AITER and type(stream).__aiter__ is _PLAIN_AITER:
        inner = stream.__dict__.get("_iterator")
        if type(inner) is AsyncGeneratorType:
            return inner
    return aiter(stream)


# -- chat calls: the short path ----------------------------------------------------------------
#
# A chat call runs our code twice: before the request and right after the response, when
# ``httpx`` and ``openai`` have just had the CPU's caches to themselves. Measured inside the
# benchmark loop, our code then runs 3 to 4 times slower than in a loop of its own, so what
# counts is how much code and how many call levels run: the plain chat call is handled in
# two functions (:func:`_chat_sync` and :func:`_record_chat`), with no :class:`Call`; a
# stream starts its :class:`Call` here. Everything else (``extra_headers``, including
# ``with_raw_response``; ``stream`` other than ``True``) takes the general path, ``general``.

_USAGE: dict[str, Any] = {"include_usage": True}


def _chat_sync(
    original: Callable[..., Any], general: Callable[..., Any], name: str, opts: _Options
) -> Callable[..., Any]:
    """``chat.completions.create``/``parse`` of a sync client, recording."""

    def create(*args: Any, **kwargs: Any) -> Any:
        if "extra_headers" in kwargs:
            return general(*args, **kwargs)
        try:
            stream = kwargs.get("stream")
            if stream is not None and stream is not True:
                return general(*args, **kwargs)
            target = current_task() or current_agent()
            if target is None:  # nowhere to record: the bare call
                return original(*args, **kwargs)
            prompt = _prompt(kwargs.get("messages")) if opts.capture else None
            if stream is True:
                call, sent = _start_stream(target, name, opts, kwargs, prompt)
        except Exception as exc:
            log_once("start", exc)
            return original(*args, **kwargs)
        if stream is True:
            try:
                result = original(*args, **sent)
            except BaseException as exc:
                call.end(exc)
                raise
            return _ChatSyncStream(result, call, _feed_chat)
        t0 = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            _chat_failed(target, name, opts, kwargs, prompt, t0, exc)
            raise
        try:
            _record_chat(target, name, opts, kwargs.get("model"), prompt, result, t0)
        except Exception as exc:
            log_once("finish", exc)
        return result

    create.__wrapped__ = original  # type: ignore[attr-defined]
    create.__doc__ = original.__doc__
    return create


def _chat_async(
    original: Callable[..., Awaitable[Any]],
    general: Callable[..., Awaitable[Any]],
    name: str,
    opts: _Options,
) -> Callable[..., Awaitable[Any]]:
    """The async twin of :func:`_chat_sync`."""

    async def create(*args: Any, **kwargs: Any) -> Any:
        if "extra_headers" in kwargs:
            return await general(*args, **kwargs)
        try:
            stream = kwargs.get("stream")
            if stream is not None and stream is not True:
                return await general(*args, **kwargs)
            target = current_task() or current_agent()
            if target is None:
                return await original(*args, **kwargs)
            prompt = _prompt(kwargs.get("messages")) if opts.capture else None
            if stream is True:
                call, sent = _start_stream(target, name, opts, kwargs, prompt)
        except Exception as exc:
            log_once("start", exc)
            return await original(*args, **kwargs)
        if stream is True:
            try:
                result = await original(*args, **sent)
            except BaseException as exc:
                call.end(exc)
                raise
            return _ChatAsyncStream(result, call, _feed_chat)
        t0 = time.perf_counter()
        try:
            result = await original(*args, **kwargs)
        except BaseException as exc:
            _chat_failed(target, name, opts, kwargs, prompt, t0, exc)
            raise
        try:
            _record_chat(target, name, opts, kwargs.get("model"), prompt, result, t0)
        except Exception as exc:
            log_once("finish", exc)
        return result

    create.__wrapped__ = original  # type: ignore[attr-defined]
    create.__doc__ = original.__doc__
    return create


def _prompt(messages: object) -> str | None:
    """The text of the last message (:func:`~._llm.last_message_text`; the usual
    ``{"content": str}`` without a call)."""
    if type(messages) is list and messages:
        last = messages[-1]
        if type(last) is dict:
            content = last.get("content")
            if type(content) is str:
                return content
    return last_message_text(messages)


def _start_stream(
    target: Any, name: str, opts: _Options, kwargs: dict[str, Any], prompt: str | None
) -> tuple[Call, dict[str, Any]]:
    """The :class:`Call` of a chat stream, and the arguments to send (``stream_options``
    added unless the caller gave theirs, or ``include_usage=False``)."""
    model = kwargs.get("model")
    call = Call(
        name,
        model if isinstance(model, str) else None,
        capture=opts.capture,
        limit=opts.limit,
        prices=opts.prices,
        prompt=prompt,
        target=target,
    )
    meta = call.meta
    meta["provider"] = "openai"
    meta["stream"] = True
    if opts.include_usage and not _has(kwargs, "stream_options"):
        call.hide = True
        return call, {**kwargs, "stream_options": _USAGE}
    return call, kwargs


def _chat_failed(
    target: Any,
    name: str,
    opts: _Options,
    kwargs: dict[str, Any],
    prompt: str | None,
    t0: float,
    exc: BaseException,
) -> None:
    """Record a plain chat call that raised ``exc``. Never raises."""
    model = kwargs.get("model")
    limit = opts.limit
    record_llm_call(
        target,
        name,
        model if isinstance(model, str) else None,
        duration_ms=round((time.perf_counter() - t0) * 1000),
        prompt_preview=_cut(prompt, limit),
        metadata={"provider": "openai"},
        prices=opts.prices,
        error=exc,
    )


def _cut(text: str | None, limit: int) -> str | None:
    """:func:`~._llm.preview` of a str or None."""
    if not text or limit <= 0:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _record_chat(
    target: Any,
    name: str,
    opts: _Options,
    requested: object,
    prompt: str | None,
    resp: Any,
    t0: float,
) -> None:
    """Record the plain chat call that returned ``resp``: :func:`_read_chat` and
    :meth:`Call.end` in one function, reading openai's models through their ``__dict__``
    (one read per model instead of pydantic's attribute hook per field). A response of
    another shape goes through :func:`_read_chat` and a :class:`Call`."""
    duration = round((time.perf_counter() - t0) * 1000)
    meta: dict[str, Any] = {"provider": "openai"}
    try:
        fields = resp.__dict__
        model = fields["model"] or (requested if isinstance(requested, str) else None)
        usage = fields["usage"]
        choices = fields["choices"]
        tokens_in = tokens_out = None
        if usage is not None:
            u = usage.__dict__
            tokens_in = u["prompt_tokens"]
            tokens_out = u["completion_tokens"]
            details = u["prompt_tokens_details"]
            if details is not None:
                cached = getattr(details, "cached_tokens", None)
                if cached:
                    meta["cached_tokens"] = cached
            details = u["completion_tokens_details"]
            if details is not None:
                reasoning = getattr(details, "reasoning_tokens", None)
                if reasoning:
                    meta["reasoning_tokens"] = reasoning
        texts: list[str] = []
        if choices:
            choice = choices[0].__dict__
            meta["finish_reason"] = choice["finish_reason"]
            message = choice["message"].__dict__
            content = message["content"]
            if opts.capture and content and isinstance(content, str):
                texts.append(content)
            tool_calls = message.get("tool_calls")
            if tool_calls:
                meta["tool_calls"] = [
                    {"id": tc.id, "name": getattr(getattr(tc, "function", None), "name", None)}
                    for tc in tool_calls
                ]
    except Exception:  # not shaped like openai's ChatCompletion: the attribute path
        call = Call(
            name,
            requested if isinstance(requested, str) else None,
            capture=opts.capture,
            limit=opts.limit,
            prices=opts.prices,
            prompt=prompt,
            t0=t0,
            target=target,
        )
        call.meta["provider"] = "openai"
        _read_chat(call, resp)
        call.end()
        return
    limit = opts.limit
    emit(
        target,
        name,
        model,
        tokens_in,
        tokens_out,
        duration,
        _cut(prompt, limit) if prompt else None,
        texts,
        limit,
        meta,
        opts.prices,
    )


# -- per-operation start/finish ---------------------------------------------------------------


def _is_raw(kwargs: dict[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    return headers is not None and isinstance(headers, Mapping) and _RAW_HEADER in headers


def _starter(kind: str, name: str, opts: _Options) -> Any:
    def start(kwargs: dict[str, Any]) -> tuple[Call, dict[str, Any]]:
        model = kwargs.get("model")
        if kind == "chat":
            prompt = last_message_text(kwargs.get("messages"))
        elif kind == "responses":
            prompt = _responses_input_text(kwargs.get("input"))
        else:
            inp = kwargs.get("input")
            prompt = (
                inp if isinstance(inp, str) else (inp[0] if isinstance(inp, list) and inp else None)
            )
        call = Call(
            name,
            model if isinstance(model, str) else None,
            capture=opts.capture,
            limit=opts.limit,
            prices=opts.prices,
            prompt=prompt,
        )
        call.meta["provider"] = "openai"
        if _is_raw(kwargs):
            call.meta["raw_response"] = True
            return call, kwargs
        if kind == "chat" and kwargs.get("stream") is True:
            call.meta["stream"] = True
            if opts.include_usage and not _has(kwargs, "stream_options"):
                kwargs = {**kwargs, "stream_options": {"include_usage": True}}
                call.hide = True
        elif kind == "responses" and kwargs.get("stream") is True:
            call.meta["stream"] = True
        return call, kwargs

    return start


def _has(kwargs: dict[str, Any], key: str) -> bool:
    value = kwargs.get(key)
    return value is not None and type(value).__name__ not in ("Omit", "NotGiven")


def _finisher(kind: str, is_async: bool) -> Any:
    def finish(call: Call, result: Any) -> Any:
        if call.meta.get("raw_response"):
            call.end()
            return result
        if call.meta.get("stream"):
            if kind == "chat":
                return (
                    _ChatAsyncStream(result, call, _feed_chat)
                    if is_async
                    else _ChatSyncStream(result, call, _feed_chat)
                )
            return (
                AsyncStream(result, call, _feed_responses)
                if is_async
                else SyncStream(result, call, _feed_responses)
            )
        if kind == "chat":
            _read_chat(call, result)
        elif kind == "responses":
            _read_response(call, result)
        else:
            _read_embeddings(call, result)
        call.end()
        return result

    return finish


def _responses_input_text(inp: object) -> str | None:
    if isinstance(inp, str):
        return inp
    if isinstance(inp, list) and inp:
        last = inp[-1]
        if isinstance(last, Mapping):
            return content_text(last.get("content"))
    return None


def _usage_chat(call: Call, usage: Any) -> None:
    if usage is None:
        return
    try:  # one __dict__ read instead of hooked attribute reads (see _ChatSyncStream)
        fields = usage.__dict__
        call.tokens_in = fields["prompt_tokens"]
        call.tokens_out = fields["completion_tokens"]
        prompt_details = fields["prompt_tokens_details"]
        completion_details = fields["completion_tokens_details"]
    except Exception:  # not shaped like openai's CompletionUsage: by attribute
        call.tokens_in = getattr(usage, "prompt_tokens", None)
        call.tokens_out = getattr(usage, "completion_tokens", None)
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
    if prompt_details is not None:
        cached = getattr(prompt_details, "cached_tokens", None)
        if cached:
            call.meta["cached_tokens"] = cached
    if completion_details is not None:
        reasoning = getattr(completion_details, "reasoning_tokens", None)
        if reasoning:
            call.meta["reasoning_tokens"] = reasoning


def _read_chat(call: Call, resp: Any) -> None:
    try:
        fields = resp.__dict__
        model, usage, choices = fields["model"], fields["usage"], fields["choices"]
    except Exception:  # not shaped like openai's ChatCompletion: by attribute
        model = getattr(resp, "model", None)
        usage = getattr(resp, "usage", None)
        choices = getattr(resp, "choices", None)
    if model:
        call.model = model
    _usage_chat(call, usage)
    if not choices:
        return
    choice = choices[0]
    call.meta["finish_reason"] = choice.finish_reason
    message = choice.message
    call.add_text(message.content)
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        call.meta["tool_calls"] = [
            {"id": tc.id, "name": getattr(getattr(tc, "function", None), "name", None)}
            for tc in tool_calls
        ]


def _feed_chat(call: Call, chunk: Any) -> bool:
    # Once per chunk (50 times for a 50-chunk stream): attribute reads only, no call unless
    # the chunk carries something.
    choices = chunk.choices
    if not choices:
        usage = chunk.usage
        if usage is None:
            return False
        _usage_chat(call, usage)
        model = chunk.model
        if model:
            call.model = model
        return call.hide
    if call.ttft_ms is None:
        model = chunk.model
        if model:
            call.model = model
    choice = choices[0]
    delta = choice.delta
    if delta is not None:
        content = delta.content
        if content:
            if call.ttft_ms is None:
                call.first_token()
            call.add_text(content)
        tool_calls = delta.tool_calls
        if tool_calls:
            call.first_token()
            known = call.meta.setdefault("tool_calls", [])
            for tc in tool_calls:
                if tc.id:
                    fn = getattr(tc, "function", None)
                    known.append({"id": tc.id, "name": getattr(fn, "name", None)})
    finish = choice.finish_reason
    if finish:
        call.meta["finish_reason"] = finish
        model = chunk.model
        if model:
            call.model = model
    usage = chunk.usage
    if usage is not None:
        _usage_chat(call, usage)
    return False


class _ChatSyncStream(SyncStream):
    """A chat completion stream, read chunk by chunk with as little work as we can: until
    the first token by :func:`_feed_chat`, then inline (no call per chunk but when a chunk
    carries a tool call, a finish reason or usage). An ``openai`` model is a pydantic model
    whose attributes go through its ``__getattr__`` hook (about 40 ns each on CPython
    3.11); one read of its ``__dict__`` gives every field for one such hook."""

    def __iter__(self) -> Iterator[Any]:
        call, feed = self._hl_call, self._hl_feed
        hide, texts, limit = call.hide, call.text, call.limit
        try:
            it = _source_iter(self._hl_stream)
            for item in it:
                try:
                    if feed(call, item):
                        continue
                except Exception as exc:
                    log_once("stream feed", exc)
                yield item
                if call.ttft_ms is not None:
                    break
            size = call.text_len
            want_text = call.capture and size <= limit
            for item in it:
                try:
                    fields = item.__dict__
                    choices = fields["choices"]
                    if choices:  # a content chunk: the common case first, fewest reads
                        first = choices[0].__dict__
                        delta = first["delta"]
                        if delta is not None:
                            d = delta.__dict__
                            content = d["content"]
                            if want_text and content and type(content) is str:
                                texts.append(content)
                                size += len(content)
                                want_text = size <= limit
                            if d["tool_calls"]:
                                _add_tool_calls(call, d["tool_calls"])
                        if first["finish_reason"]:
                            _finish_chunk(call, item, first["finish_reason"])
                        if fields["usage"] is not None:
                            _usage_chunk(call, item, fields["usage"], choices)
                    elif fields["usage"] is not None:
                        _usage_chunk(call, item, fields["usage"], choices)
                        if hide:
                            continue  # the usage-only chunk we asked for
                except Exception:  # not shaped like openai's models: the attribute path
                    try:
                        if _feed_chat(call, item):
                            continue
                    except Exception as exc:
                        log_once("stream feed", exc)
                yield item
        except GeneratorExit:
            call.end(early=True)
            raise
        except BaseException as exc:
            call.end(exc)
            raise
        call.end()


class _ChatAsyncStream(AsyncStream):
    """The async twin of :class:`_ChatSyncStream` (the same loop body)."""

    async def __aiter__(self) -> AsyncIterator[Any]:
        call, feed = self._hl_call, self._hl_feed
        hide, texts, limit = call.hide, call.text, call.limit
        try:
            it = _source_aiter(self._hl_stream)
            async for item in it:
                try:
                    if feed(call, item):
                        continue
                except Exception as exc:
                    log_once("stream feed", exc)
                yield item
                if call.ttft_ms is not None:
                    break
            size = call.text_len
            want_text = call.capture and size <= limit
            async for item in it:
                try:
                    fields = item.__dict__
                    choices = fields["choices"]
                    if choices:  # a content chunk: the common case first, fewest reads
                        first = choices[0].__dict__
                        delta = first["delta"]
                        if delta is not None:
                            d = delta.__dict__
                            content = d["content"]
                            if want_text and content and type(content) is str:
                                texts.append(content)
                                size += len(content)
                                want_text = size <= limit
                            if d["tool_calls"]:
                                _add_tool_calls(call, d["tool_calls"])
                        if first["finish_reason"]:
                            _finish_chunk(call, item, first["finish_reason"])
                        if fields["usage"] is not None:
                            _usage_chunk(call, item, fields["usage"], choices)
                    elif fields["usage"] is not None:
                        _usage_chunk(call, item, fields["usage"], choices)
                        if hide:
                            continue  # the usage-only chunk we asked for
                except Exception:  # not shaped like openai's models: the attribute path
                    try:
                        if _feed_chat(call, item):
                            continue
                    except Exception as exc:
                        log_once("stream feed", exc)
                yield item
        except GeneratorExit:
            call.end(early=True)
            raise
        except BaseException as exc:
            call.end(exc)
            raise
        call.end()


def _add_tool_calls(call: Call, tool_calls: Any) -> None:
    known = call.meta.setdefault("tool_calls", [])
    for tc in tool_calls:
        if tc.id:
            fn = getattr(tc, "function", None)
            known.append({"id": tc.id, "name": getattr(fn, "name", None)})


def _finish_chunk(call: Call, chunk: Any, finish: str) -> None:
    call.meta["finish_reason"] = finish
    model = chunk.model
    if model:
        call.model = model


def _usage_chunk(call: Call, chunk: Any, usage: Any, choices: Any) -> None:
    _usage_chat(call, usage)
    if not choices:
        model = chunk.model
        if model:
            call.model = model


def _read_response(call: Call, resp: Any) -> None:
    call.model = getattr(resp, "model", None) or call.model
    usage = getattr(resp, "usage", None)
    if usage is not None:
        call.tokens_in = getattr(usage, "input_tokens", None)
        call.tokens_out = getattr(usage, "output_tokens", None)
        cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)
        if cached:
            call.meta["cached_tokens"] = cached
        details = getattr(usage, "output_tokens_details", None)
        reasoning = getattr(details, "reasoning_tokens", None)
        if reasoning:
            call.meta["reasoning_tokens"] = reasoning
    status = getattr(resp, "status", None)
    if status:
        call.meta["finish_reason"] = status
    tools = []
    for item in getattr(resp, "output", None) or ():
        if getattr(item, "type", None) == "function_call":
            tools.append({"id": item.call_id, "name": item.name})
    if tools:
        call.meta["tool_calls"] = tools
    if not call.text and call.capture:
        try:
            call.add_text(resp.output_text)
        except Exception:
            pass


def _feed_responses(call: Call, event: Any) -> bool:
    kind = getattr(event, "type", "")
    if kind == "response.output_text.delta":
        call.first_token()
        call.add_text(event.delta)
    elif kind in ("response.completed", "response.incomplete", "response.failed"):
        _read_response(call, event.response)
    elif kind == "response.created":
        call.model = getattr(event.response, "model", None) or call.model
    elif (
        kind == "response.output_item.added" and getattr(event.item, "type", "") == "function_call"
    ):
        call.first_token()
    return False


def _read_embeddings(call: Call, resp: Any) -> None:
    call.model = getattr(resp, "model", None) or call.model
    usage = getattr(resp, "usage", None)
    if usage is not None:
        call.tokens_in = getattr(usage, "prompt_tokens", None)
    call.meta["count"] = len(getattr(resp, "data", None) or ())
