"""Pieces shared by the LLM client integrations (OpenAI, Anthropic, LangChain).

Small functions, each cheap enough for the hot path of an LLM call: no I/O, no JSON. They
never raise: a bug here is logged once and the call is simply not recorded.

* :func:`capture_target` -- where an LLM call made now belongs (the current task, else the
  current agent, else nowhere). Call it when the LLM call *starts*: a stream may be finished
  in another context.
* :func:`price_for` / :func:`cost_of` -- the price table, longest-prefix match.
* :func:`preview` -- truncation of prompt/response previews.
* :func:`error_info` -- ``{"type", "message"}`` of a failed call, with key-like strings redacted.
* :func:`record_llm_call` -- one ``llm_call`` event on the captured target.

A failed call is recorded as an ``llm_call`` whose ``metadata`` has ``"status": "failed"``
and ``"error": {"type", "message"}`` (see the README section "LLM clients" for why).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from .._agent import Agent
from .._api import current_agent, current_task
from .._task import Task

__all__ = [
    "DEFAULT_PREVIEW_CHARS",
    "DEFAULT_PRICES",
    "capture_target",
    "content_text",
    "cost_of",
    "error_info",
    "last_message_text",
    "log_once",
    "preview",
    "price_for",
    "record_llm_call",
]

logger = logging.getLogger("hiveloop_async.contrib.llm")

#: Default length of ``prompt_preview`` / ``response_preview``.
DEFAULT_PREVIEW_CHARS = 500

#: USD per 1,000 tokens (input, output). Keys are model-name prefixes: the longest prefix of
#: the model the response names wins, so ``gpt-4o-2024-08-06`` resolves to ``gpt-4o`` and
#: ``gpt-4o-mini-2024-07-18`` to ``gpt-4o-mini``. Override with ``prices=`` (merged on top).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-5": (0.00125, 0.01),
    "gpt-5-mini": (0.00025, 0.002),
    "gpt-5-nano": (0.00005, 0.0004),
    "o1": (0.015, 0.06),
    "o3": (0.002, 0.008),
    "o3-mini": (0.0011, 0.0044),
    "o4-mini": (0.0011, 0.0044),
    "text-embedding-3-small": (0.00002, 0.0),
    "text-embedding-3-large": (0.00013, 0.0),
    "claude-opus-4": (0.015, 0.075),
    "claude-sonnet-4": (0.003, 0.015),
    "claude-3-7-sonnet": (0.003, 0.015),
    "claude-3-5-sonnet": (0.003, 0.015),
    "claude-3-5-haiku": (0.0008, 0.004),
    "claude-haiku-4": (0.001, 0.005),
    "claude-3-haiku": (0.00025, 0.00125),
}

_logged = False
#: ``(id(table), model) -> (table, len(table), longest matching key or None)``.
_PREFIX_MEMO: dict[tuple[int, str], tuple[Mapping[str, tuple[float, float]], int, str | None]] = {}
_PREFIX_MEMO_MAX = 1024
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-*]{6,}|hb_[A-Za-z0-9_\-]{6,}|Bearer\s+\S+)")


def log_once(where: str, exc: BaseException) -> None:
    """Log an internal error of an integration, the first time only. Never raises."""
    global _logged
    if not _logged:
        _logged = True
        logger.warning(
            "LLM call recording failed in %s (%s); logged once", where, type(exc).__name__
        )


def capture_target() -> Task | Agent | None:
    """The task open in this context, else its agent, else None. Never raises; O(1)."""
    return current_task() or current_agent()


def price_for(
    model: str | None, prices: Mapping[str, tuple[float, float]]
) -> tuple[float, float] | None:
    """The (in_per_1k, out_per_1k) price of the longest key of ``prices`` prefixing ``model``."""
    if not model:
        return None
    hit = prices.get(model)
    if hit is not None:
        return hit
    # The scan over every key is remembered per (table, model): a response names the same
    # dated model call after call. The entry holds the table (so its id cannot be reused)
    # and its size (a key added or removed since makes us scan again).
    memo_key = (id(prices), model)
    entry = _PREFIX_MEMO.get(memo_key)
    if entry is not None and entry[0] is prices and entry[1] == len(prices):
        best = entry[2]
    else:
        best = None
        for key in prices:
            if model.startswith(key) and (best is None or len(key) > len(best)):
                best = key
        if len(_PREFIX_MEMO) >= _PREFIX_MEMO_MAX:
            _PREFIX_MEMO.clear()
        _PREFIX_MEMO[memo_key] = (prices, len(prices), best)
    return prices.get(best) if best is not None else None


def cost_of(
    model: str | None,
    tokens_in: int | None,
    tokens_out: int | None,
    prices: Mapping[str, tuple[float, float]],
) -> float | None:
    """USD cost of a call, or None when the model is not in ``prices`` or no token is known."""
    price = price_for(model, prices)
    if price is None or (tokens_in is None and tokens_out is None):
        return None
    return round((tokens_in or 0) / 1000 * price[0] + (tokens_out or 0) / 1000 * price[1], 8)


def preview(text: object, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters (with "…" when cut); None for empty or non-text."""
    if not isinstance(text, str) or not text or limit <= 0:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_info(exc: BaseException) -> dict[str, Any]:
    """``{"type": class name, "message": str(exc) cut to 300 chars, key-like strings redacted}``.

    ``status_code`` is added when the exception has one (the providers' ``APIStatusError``).
    """
    try:
        message = _KEYLIKE.sub("[redacted]", str(exc))[:300]
    except Exception:
        message = ""
    info: dict[str, Any] = {"type": type(exc).__name__, "message": message}
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        info["status_code"] = status
    return info


def record_llm_call(
    target: Task | Agent | None,
    name: str,
    model: str | None,
    *,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    duration_ms: int | None = None,
    prompt_preview: str | None = None,
    response_preview: str | None = None,
    metadata: dict[str, Any] | None = None,
    prices: Mapping[str, tuple[float, float]] = DEFAULT_PRICES,
    error: BaseException | None = None,
) -> None:
    """Record one ``llm_call`` on ``target`` (from :func:`capture_target`); nothing if None.

    The cost comes from ``prices``. With ``error``, ``metadata`` gets ``"status": "failed"``
    and ``"error": error_info(error)``. Never blocks, never raises.
    """
    if target is None:
        return
    try:
        if error is not None:
            metadata = dict(metadata) if metadata else {}
            metadata["status"] = "failed"
            metadata["error"] = error_info(error)
        target.llm_call(
            name,
            model or "unknown",
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost_of(model, tokens_in, tokens_out, prices),
            duration_ms=duration_ms,
            prompt_preview=prompt_preview,
            response_preview=response_preview,
            metadata=metadata or None,
        )
    except Exception as exc:
        log_once("record_llm_call", exc)


def content_text(content: object) -> str | None:
    """The text of a message ``content``: a string, or the ``text`` of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        parts = [
            p.get("text") if isinstance(p, Mapping) else getattr(p, "text", None) for p in content
        ]
        text = "".join(p for p in parts if isinstance(p, str))
        return text or None
    return None


def last_message_text(messages: object) -> str | None:
    """The text of the last message of an OpenAI/Anthropic ``messages`` list, or None."""
    if isinstance(messages, list | tuple) and messages:
        last = messages[-1]
        if type(last) is dict or isinstance(last, Mapping):  # dict first: no ABC check
            return content_text(last.get("content"))
        return content_text(last)
    return content_text(messages)
