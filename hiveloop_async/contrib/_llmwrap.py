"""Timing and stream plumbing shared by the OpenAI and Anthropic integrations.

:class:`Call` is one LLM call in flight: it captures the target at the start, accumulates what
the response says, and records exactly one ``llm_call`` when :meth:`Call.end` is first called.
:func:`wrap_sync` / :func:`wrap_async` turn a client method into a recording one;
:class:`SyncStream` / :class:`AsyncStream` wrap a provider stream so the call is recorded
when the stream ends, is closed early (``break``, ``close()``, leaving its ``with``) or fails.
The user's exceptions always pass through unchanged; our bookkeeping never raises.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from .._agent import Agent
from .._api import current_agent, current_task
from .._task import Task
from ._llm import log_once, preview, price_for, record_llm_call

__all__ = ["AsyncStream", "Call", "Feed", "SyncStream", "emit", "wrap_async", "wrap_sync"]


class Call:
    """One LLM call in flight. Cheap to create; :meth:`end` records it once, never raises."""

    __slots__ = (
        "_t0",
        "capture",
        "ended",
        "hide",
        "limit",
        "meta",
        "model",
        "name",
        "prices",
        "prompt_preview",
        "target",
        "text",
        "text_len",
        "tokens_in",
        "tokens_out",
        "ttft_ms",
    )

    def __init__(
        self,
        name: str,
        model: str | None,
        *,
        capture: bool,
        limit: int,
        prices: Mapping[str, tuple[float, float]],
        prompt: object = None,
        t0: float | None = None,
        target: Task | Agent | None = None,
    ) -> None:
        """``t0``: when the call started (``time.perf_counter()``; default now).
        ``target``: where it is recorded (default: the current task, else agent, now)."""
        self.target = target or current_task() or current_agent()
        self.name = name
        self.model = model
        self.capture = capture
        self.limit = limit
        self.prices = prices
        self.prompt_preview = preview(prompt, limit) if capture else None
        #: Response text pieces for the preview, and their length so far (appended to
        #: directly by the stream readers, which stop past ``limit``).
        self.text: list[str] = []
        self.text_len = 0
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.meta: dict[str, Any] = {}
        self.ttft_ms: int | None = None
        self.ended = False
        #: Hide usage-only chunks from the caller (we asked for them, they did not).
        self.hide = False
        self._t0 = time.perf_counter() if t0 is None else t0

    def add_text(self, text: object) -> None:
        """Keep response text for the preview (only while capturing, up to ``limit`` chars)."""
        if self.capture and isinstance(text, str) and text and self.text_len < self.limit:
            self.text.append(text)
            self.text_len += len(text)

    def restart(self) -> None:
        """Start the clock now (a request made later than the call was prepared)."""
        self._t0 = time.perf_counter()

    def first_token(self) -> None:
        """Note the time to first token (the first call counts)."""
        if self.ttft_ms is None:
            self.ttft_ms = round((time.perf_counter() - self._t0) * 1000)

    def end(self, error: BaseException | None = None, *, early: bool = False) -> None:
        """Record the call (first call only). ``early``: a stream closed before its end."""
        if self.ended:
            return
        self.ended = True
        target = self.target
        if target is None:
            return
        try:
            duration = round((time.perf_counter() - self._t0) * 1000)
            meta = self.meta
            if self.ttft_ms is not None:
                meta["ttft_ms"] = self.ttft_ms
            if early:
                meta["closed_early"] = True
            if error is None:
                emit(
                    target,
                    self.name,
                    self.model,
                    self.tokens_in,
                    self.tokens_out,
                    duration,
                    self.prompt_preview,
                    self.text,
                    self.limit,
                    meta,
                    self.prices,
                )
                return
            record_llm_call(
                target,
                self.name,
                self.model,
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                duration_ms=duration,
                prompt_preview=self.prompt_preview,
                response_preview=preview("".join(self.text), self.limit) if self.text else None,
                metadata=meta,
                prices=self.prices,
                error=error,
            )
        except Exception as exc:
            log_once("Call.end", exc)


def emit(
    target: Any,
    name: str,
    model: str | None,
    tokens_in: int | None,
    tokens_out: int | None,
    duration_ms: int,
    prompt_preview: str | None,
    texts: list[str],
    limit: int,
    meta: dict[str, Any],
    prices: Mapping[str, tuple[float, float]],
) -> None:
    """:func:`~._llm.record_llm_call` of a call that did not fail, written out in one
    function (it runs right after the provider's response, when little of our code is
    still in the CPU's caches: every call level avoided counts). ``texts``: the response
    text pieces (strings). Raises what ``target.llm_call`` raises (nothing, normally)."""
    if texts:
        text = texts[0] if len(texts) == 1 else "".join(texts)
        response = (
            None
            if not text or limit <= 0
            else (text if len(text) <= limit else text[: limit - 1] + "…")
        )
    else:
        response = None
    cost = None
    if model and (tokens_in is not None or tokens_out is not None):
        price = prices.get(model) or price_for(model, prices)  # exact name: no call
        if price is not None:
            cost = round(
                (tokens_in or 0) / 1000 * price[0] + (tokens_out or 0) / 1000 * price[1], 8
            )
    target.llm_call(
        name,
        model or "unknown",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=cost,
        duration_ms=duration_ms,
        prompt_preview=prompt_preview,
        response_preview=response,
        metadata=meta or None,
    )


#: ``feed(call, item) -> hide``: read one stream item into the call; True hides it.
Feed = Callable[[Call, Any], bool]


class SyncStream:
    """Wraps a provider's sync stream: iterate it, ``close()`` it or use it in ``with``.

    Any other attribute (``response``, ...) is the wrapped stream's.
    """

    def __init__(self, stream: Any, call: Call, feed: Feed) -> None:
        self._hl_stream = stream
        self._hl_call = call
        self._hl_feed = feed
        self._hl_gen: Iterator[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        call, feed = self._hl_call, self._hl_feed
        try:
            for item in self._hl_stream:
                try:  # inlined (no call per chunk); a feed bug never stops the stream
                    if feed(call, item):
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

    def __next__(self) -> Any:
        if self._hl_gen is None:
            self._hl_gen = self.__iter__()
        return next(self._hl_gen)

    def close(self) -> None:
        """Close the wrapped stream and record the call now (if it was not yet)."""
        try:
            self._hl_stream.close()
        finally:
            self._hl_call.end(early=True)

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hl_stream, name)


class AsyncStream:
    """Wraps a provider's async stream: ``async for`` it, ``await close()``, ``async with``."""

    def __init__(self, stream: Any, call: Call, feed: Feed) -> None:
        self._hl_stream = stream
        self._hl_call = call
        self._hl_feed = feed
        self._hl_gen: AsyncIterator[Any] | None = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        call, feed = self._hl_call, self._hl_feed
        try:
            async for item in self._hl_stream:
                try:  # inlined (no call per chunk); a feed bug never stops the stream
                    if feed(call, item):
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

    async def __anext__(self) -> Any:
        if self._hl_gen is None:
            self._hl_gen = self.__aiter__()
        return await self._hl_gen.__anext__()

    async def close(self) -> None:
        """Close the wrapped stream and record the call now (if it was not yet)."""
        try:
            await self._hl_stream.close()
        finally:
            self._hl_call.end(early=True)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hl_stream, name)


#: ``start(kwargs) -> (call, kwargs to send) | None``: None means "do not record".
Start = Callable[[dict[str, Any]], "tuple[Call, dict[str, Any]] | None"]
#: ``finish(call, result) -> what the caller gets`` (the result, or a stream wrapper).
Finish = Callable[[Call, Any], Any]


def wrap_sync(original: Callable[..., Any], start: Start, finish: Finish) -> Callable[..., Any]:
    """A recording version of the sync client method ``original`` (same signature)."""

    def method(*args: Any, **kwargs: Any) -> Any:
        try:  # start and finish guarded inline: two calls fewer per LLM call
            prep = start(kwargs)
        except Exception as exc:
            log_once("start", exc)
            prep = None
        if prep is None:
            return original(*args, **kwargs)
        call, sent = prep
        try:
            result = original(*args, **sent)
        except BaseException as exc:
            call.end(exc)
            raise
        try:
            return finish(call, result)
        except Exception as exc:
            log_once("finish", exc)
            call.end()
            return result

    method.__wrapped__ = original  # type: ignore[attr-defined]
    method.__doc__ = original.__doc__
    return method


def wrap_async(
    original: Callable[..., Awaitable[Any]], start: Start, finish: Finish
) -> Callable[..., Awaitable[Any]]:
    """A recording version of the async client method ``original`` (same signature)."""

    async def method(*args: Any, **kwargs: Any) -> Any:
        try:  # start and finish guarded inline: two calls fewer per LLM call
            prep = start(kwargs)
        except Exception as exc:
            log_once("start", exc)
            prep = None
        if prep is None:
            return await original(*args, **kwargs)
        call, sent = prep
        try:
            result = await original(*args, **sent)
        except BaseException as exc:
            call.end(exc)
            raise
        try:
            return finish(call, result)
        except Exception as exc:
            log_once("finish", exc)
            call.end()
            return result

    method.__wrapped__ = original  # type: ignore[attr-defined]
    method.__doc__ = original.__doc__
    return method


def instrument_copies(
    client: Any, reinstrument: Callable[[Any], object], where: str
) -> list[tuple[object, str]]:
    """Make ``client.copy()`` and ``client.with_options()`` return copies instrumented by
    ``reinstrument(copy)`` (a failure there is logged once; the copy is returned anyway).

    Returns the ``(object, attribute)`` pairs set, for ``uninstrument``. Never raises.
    """
    original_copy = client.copy

    def copy(*args: Any, **kwargs: Any) -> Any:
        new = original_copy(*args, **kwargs)
        try:
            reinstrument(new)
        except Exception as exc:
            log_once(where, exc)
        return new

    copy.__doc__ = original_copy.__doc__
    object.__setattr__(client, "copy", copy)
    object.__setattr__(client, "with_options", copy)
    return [(client, "copy"), (client, "with_options")]
