"""A fake OpenAI and Anthropic API on 127.0.0.1, in aiohttp.web, on a background thread.

It speaks the providers' JSON and SSE wire formats. The requested ``model`` picks the
behaviour: ``*-tools`` answers with tool calls, ``fail-429`` / ``fail-500`` answer with the
providers' error bodies, ``*-cut`` stops a stream mid-way (connection dropped), ``*-slow``
waits 20 ms between chunks. ``chunks`` in the request body (an int) sets the chunk count.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
RESP_USAGE = {
    "input_tokens": 11,
    "output_tokens": 6,
    "total_tokens": 17,
    "input_tokens_details": {"cached_tokens": 3},
    "output_tokens_details": {"reasoning_tokens": 1},
}
ANT_USAGE = {
    "input_tokens": 21,
    "output_tokens": 7,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 9,
}
ANSWER = "Hello from the fake model"


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data) + "\n\n").encode()


def _error(model: str, anthropic: bool) -> web.Response | None:
    if not model.startswith("fail-"):
        return None
    status = int(model[5:8])
    if anthropic:
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    else:
        body = {"error": {"message": "slow down", "type": "requests", "code": "rate_limit"}}
    return web.json_response(body, status=status)


def _tool_calls() -> list[dict[str, Any]]:
    return [
        {"id": "call_1", "type": "function", "function": {"name": "crm_search", "arguments": "{}"}},
        {"id": "call_2", "type": "function", "function": {"name": "score_lead", "arguments": "{}"}},
    ]


async def _stream(request: web.Request, pieces: list[bytes], model: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    cut = model.endswith("-cut")
    for i, piece in enumerate(pieces):
        if cut and i == len(pieces) // 2:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(piece)
        if model.endswith("-slow"):
            await asyncio.sleep(0.02)
    await resp.write_eof()
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body["model"]
    err = _error(model, False)
    if err is not None:
        return err
    served = model + "-2024-07-18"
    # tool calls until the conversation carries tool results (an agent loop then ends)
    tools = "tools" in model and (body.get("messages") or [{}])[-1].get("role") != "tool"
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if tools else ANSWER}
        if tools:
            message["tool_calls"] = _tool_calls()
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": served,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if tools else "stop",
                        "logprobs": None,
                    }
                ],
                "usage": CHAT_USAGE,
            }
        )
    n = int(body.get("chunks", 5))
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": served}
    pieces = []
    if tools:
        for i, tc in enumerate(_tool_calls()):
            delta: dict[str, Any] = {"tool_calls": [{"index": i, **tc}]}
            pieces.append(_sse({**base, "choices": [{"index": 0, "delta": delta}]}))
    else:
        for i in range(n):
            delta = {"content": f"w{i} "}
            pieces.append(_sse({**base, "choices": [{"index": 0, "delta": delta}]}))
    finish = "tool_calls" if tools else "stop"
    pieces.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        pieces.append(_sse({**base, "choices": [], "usage": CHAT_USAGE}))
    pieces.append(b"data: [DONE]\n\n")
    return await _stream(request, pieces, model)


def _response_obj(model: str, tools: bool, status: str = "completed") -> dict[str, Any]:
    if tools:
        output: list[dict[str, Any]] = [
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "crm_search",
                "arguments": "{}",
                "status": "completed",
            }
        ]
    else:
        output = [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
            }
        ]
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": model + "-2024-07-18",
        "status": status,
        "output": output if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": RESP_USAGE if status == "completed" else None,
    }


async def responses(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body["model"]
    err = _error(model, False)
    if err is not None:
        return err
    tools = "tools" in model
    if not body.get("stream"):
        return web.json_response(_response_obj(model, tools))
    n = int(body.get("chunks", 5))
    pieces = [
        _sse(
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": _response_obj(model, tools, "in_progress"),
            },
            "response.created",
        )
    ]
    for i in range(n):
        pieces.append(
            _sse(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": i + 1,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": f"w{i} ",
                    "logprobs": [],
                },
                "response.output_text.delta",
            )
        )
    pieces.append(
        _sse(
            {
                "type": "response.completed",
                "sequence_number": n + 1,
                "response": _response_obj(model, tools),
            },
            "response.completed",
        )
    )
    return await _stream(request, pieces, model)


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    err = _error(body["model"], False)
    if err is not None:
        return err
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return web.json_response(
        {
            "object": "list",
            "model": body["model"],
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2]}
                for i in range(len(inputs))
            ],
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )


def _message(model: str, tools: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": ANSWER}]
    if tools:
        content.append(
            {"type": "tool_use", "id": "toolu_1", "name": "crm_search", "input": {"q": "acme"}}
        )
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model + "-20250514",
        "content": content,
        "stop_reason": "tool_use" if tools else "end_turn",
        "stop_sequence": None,
        "usage": ANT_USAGE,
    }


async def messages(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body["model"]
    err = _error(model, True)
    if err is not None:
        return err
    tools = "tools" in model
    if not body.get("stream"):
        return web.json_response(_message(model, tools))
    n = int((body.get("metadata") or {}).get("user_id", "5"))
    start = {
        **_message(model, tools),
        "content": [],
        "stop_reason": None,
        "usage": {**ANT_USAGE, "output_tokens": 1},
    }
    pieces = [_sse({"type": "message_start", "message": start}, "message_start")]
    pieces.append(
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
    )
    for i in range(n):
        pieces.append(
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": f"w{i} "},
                },
                "content_block_delta",
            )
        )
    pieces.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    if tools:
        pieces.append(
            _sse(
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "crm_search",
                        "input": {},
                    },
                },
                "content_block_start",
            )
        )
        pieces.append(
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "{}"},
                },
                "content_block_delta",
            )
        )
        pieces.append(_sse({"type": "content_block_stop", "index": 1}, "content_block_stop"))
    pieces.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tools else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 7},
            },
            "message_delta",
        )
    )
    pieces.append(_sse({"type": "message_stop"}, "message_stop"))
    return await _stream(request, pieces, model)


class FakeProvider:
    """The fake server, started on a free port of 127.0.0.1 in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeProvider:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake provider did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.run_forever()
        assert self._runner is not None
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/responses", responses)
        app.router.add_post("/v1/embeddings", embeddings)
        app.router.add_post("/v1/messages", messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
