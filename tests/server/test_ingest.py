"""``POST /v1/ingest``: HiveBoard's contract (§2.1–§2.5), one test per rule."""

from __future__ import annotations

import gzip
import json
from typing import Any

import aiohttp
import pytest

from hiveloop_async._server import LocalServer, start_server

from .helpers import KEY, Answer, batch, envelope, event, get, ingest, request, stamp

pytestmark = pytest.mark.anyio

_INT = "Input should be a valid integer"
_INT_SIZE = "Unable to parse input string as an integer, exceeded maximum size"
_BAD_HEADER = {
    "error": "authentication_failed",
    "message": "Missing or invalid Authorization header. Use: Bearer {api_key_or_jwt}",
    "status": 401,
}


def _validation(*fields: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "error": "validation_error",
        "message": "Request validation failed",
        "status": 400,
        "details": {
            "fields": [{"field": f, "message": m, "type": t} for f, m, t in fields],
        },
    }


async def _raw_post(
    http: aiohttp.ClientSession, srv: LocalServer, data: bytes, headers: dict[str, str]
) -> Answer:
    return await request(http, "POST", f"{srv.url}/v1/ingest", data=data, headers=headers)


# --------------------------------------------------------------------------- authentication


async def test_missing_authorization_header_is_401(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await ingest(http, server, batch(event()), key=None)
    assert (answer.status, answer.body) == (401, _BAD_HEADER)
    assert await server.event_count() == 0


@pytest.mark.parametrize(
    "header", ["bearer hb_x", "Token hb_x", "Bearerhb_x", "hb_x", "Basic aGI6eA==", "BEARER hb_x"]
)
async def test_malformed_authorization_header_is_401(
    server: LocalServer, http: aiohttp.ClientSession, header: str
) -> None:
    answer = await ingest(http, server, batch(event()), key=None, headers={"Authorization": header})
    assert (answer.status, answer.body) == (401, _BAD_HEADER)


async def test_token_that_is_not_an_hb_key_is_treated_as_a_bad_jwt(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await ingest(http, server, batch(event()), key="eyJhbGciOiJIUzI1NiJ9.e30.x")
    assert answer.status == 401
    assert answer.body == {
        "error": "authentication_failed",
        "message": "Invalid or expired token",
        "status": 401,
    }


async def test_unknown_key_is_401_when_keys_are_configured(http: aiohttp.ClientSession) -> None:
    async with await start_server(api_keys=["hb_live_good"]) as srv:
        refused = await ingest(http, srv, batch(event()), key="hb_live_other")
        accepted = await ingest(http, srv, batch(event()), key="hb_live_good")
        assert await srv.event_count() == 1
    assert refused.status == 401
    assert refused.body == {
        "error": "authentication_failed",
        "message": "Invalid API key",
        "status": 401,
    }
    assert accepted.status == 200


async def test_any_hb_key_is_accepted_without_configured_keys(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    for key in ("hb_live_abc", "hb_test_xyz", "hb_"):
        assert (await ingest(http, server, batch(event()), key=key)).status == 200
    assert await server.event_count() == 3


async def test_read_key_cannot_ingest_but_can_read(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    refused = await ingest(http, server, batch(event()), key="hb_read_abc")
    assert refused.status == 403
    assert refused.body == {
        "error": "insufficient_permissions",
        "message": "Read-only API key cannot perform write operations",
        "status": 403,
    }
    assert await server.event_count() == 0
    assert (await get(http, server, "/v1/events", key="hb_read_abc")).status == 200


async def test_health_needs_no_credentials(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await get(http, server, "/health", key=None)
    assert (answer.status, answer.body) == (200, {"status": "ok"})
    # Bound to loopback, reads need no key (the dashboard); ingest still does.
    assert (await get(http, server, "/v1/tasks", key=None)).status == 200
    assert (await get(http, server, "/v1/tasks", key="not_hb")).status == 401
    assert (await ingest(http, server, batch(event()), key=None)).status == 401


# --------------------------------------------------------------------------- body decoding


async def test_text_plain_body_is_400(server: LocalServer, http: aiohttp.ClientSession) -> None:
    data = json.dumps(batch(event())).encode()
    answer = await _raw_post(
        http, server, data, {"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"}
    )
    assert answer.status == 400
    assert answer.body == _validation(
        (
            "body",
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        )
    )
    assert await server.event_count() == 0


async def test_missing_content_type_is_400(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    data = json.dumps(batch(event())).encode()
    answer = await _raw_post(http, server, data, {"Authorization": f"Bearer {KEY}"})
    assert answer.status == 400
    assert answer.body["details"]["fields"][0]["type"] == "model_attributes_type"


async def test_json_content_type_with_parameters_and_suffix_is_accepted(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.hb+json"):
        data = json.dumps(batch(event())).encode()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": content_type}
        assert (await _raw_post(http, server, data, headers)).status == 200
    assert await server.event_count() == 2


async def test_undecodable_json_is_400_json_invalid(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    answer = await _raw_post(http, server, b'{"envelope": ', headers)
    assert answer.status == 400
    assert answer.body == _validation(("body.13", "JSON decode error", "json_invalid"))


async def test_empty_body_is_400_missing(server: LocalServer, http: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    answer = await _raw_post(http, server, b"", headers)
    assert answer.status == 400
    assert answer.body == _validation(("body", "Field required", "missing"))


async def test_gzip_body_is_accepted(server: LocalServer, http: aiohttp.ClientSession) -> None:
    first = event(task_id="t-gz")
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    answer = await _raw_post(
        http, server, gzip.compress(json.dumps(batch(first)).encode()), headers
    )
    assert (answer.status, answer.body["accepted"]) == (200, 1)
    assert [e["event_id"] for e in await server.events()] == [first["event_id"]]


async def test_body_that_is_not_gzip_despite_its_encoding_is_400(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    answer = await _raw_post(http, server, b"definitely not gzip", headers)
    assert answer.status == 400
    assert answer.body["error"] == "validation_error"
    assert await server.event_count() == 0


# --------------------------------------------------------------------------- schema (400)


async def test_int_task_id_rejects_the_whole_request(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await ingest(http, server, batch(event(), event(task_id=4821)))
    assert answer.status == 400
    assert answer.body == _validation(
        ("body.events.1.task_id", "Input should be a valid string", "string_type")
    )
    assert await server.event_count() == 0


async def test_fractional_duration_is_rejected(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await ingest(http, server, batch(event("action_completed", duration_ms=5.5)))
    assert answer.status == 400
    assert answer.body == _validation(
        (
            "body.events.0.duration_ms",
            "Input should be a valid integer, got a number with a fractional part",
            "int_from_float",
        )
    )


async def test_lax_integer_durations_are_coerced_like_pydantic(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    values = [5.0, True, "12", " 7 ", "3.00", 10**20]
    events = [event("action_completed", duration_ms=v) for v in values]
    answer = await ingest(http, server, batch(*events))
    assert (answer.status, answer.body["accepted"]) == (200, len(values))
    stored = {e["event_id"]: e["duration_ms"] for e in await server.events()}
    durations = [stored[e["event_id"]] for e in events]
    assert durations == [5, 1, 12, 7, 3, 10**20]
    assert all(type(d) is int for d in durations)


@pytest.mark.parametrize(
    ("value", "message", "kind"),
    [
        (
            "abc",
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ),
        ([1], "Input should be a valid integer", "int_type"),
        (
            1e20,
            "Unable to parse input string as an integer, exceeded maximum size",
            "int_parsing_size",
        ),
    ],
)
async def test_invalid_durations_are_rejected(
    server: LocalServer, http: aiohttp.ClientSession, value: Any, message: str, kind: str
) -> None:
    answer = await ingest(http, server, batch(event(duration_ms=value)))
    assert answer.status == 400
    assert answer.body == _validation(("body.events.0.duration_ms", message, kind))


async def test_list_payload_is_rejected(server: LocalServer, http: aiohttp.ClientSession) -> None:
    answer = await ingest(http, server, batch(event(payload=["not", "an", "object"])))
    assert answer.status == 400
    assert answer.body == _validation(
        ("body.events.0.payload", "Input should be a valid dictionary", "dict_type")
    )


async def test_missing_timestamp_key_is_rejected(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    broken = event()
    del broken["timestamp"]
    answer = await ingest(http, server, batch(event(), broken))
    assert answer.status == 400
    assert answer.body == _validation(("body.events.1.timestamp", "Field required", "missing"))
    assert await server.event_count() == 0


async def test_every_violation_is_listed_in_field_order(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "envelope": {"agent_id": 7, "environment": None},
        "events": [{"event_id": 1, "task_id": 2, "payload": "x", "duration_ms": 1.5}, "x"],
    }
    answer = await ingest(http, server, body)
    assert answer.status == 400
    string = "Input should be a valid string"
    assert answer.body == _validation(
        ("body.envelope.agent_id", string, "string_type"),
        ("body.envelope.environment", string, "string_type"),
        ("body.events.0.event_id", string, "string_type"),
        ("body.events.0.timestamp", "Field required", "missing"),
        ("body.events.0.event_type", "Field required", "missing"),
        ("body.events.0.task_id", string, "string_type"),
        (
            "body.events.0.duration_ms",
            "Input should be a valid integer, got a number with a fractional part",
            "int_from_float",
        ),
        ("body.events.0.payload", "Input should be a valid dictionary", "dict_type"),
        (
            "body.events.1",
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        ),
    )


async def test_body_shape_violations(server: LocalServer, http: aiohttp.ClientSession) -> None:
    model = "Input should be a valid dictionary or object to extract fields from"
    cases: list[tuple[Any, dict[str, Any]]] = [
        ([1, 2], _validation(("body", model, "model_attributes_type"))),
        ({"events": []}, _validation(("body.envelope", "Field required", "missing"))),
        (
            {"envelope": {"agent_id": "a"}, "events": {}},
            _validation(("body.events", "Input should be a valid list", "list_type")),
        ),
        (
            {"envelope": {}, "events": []},
            _validation(("body.envelope.agent_id", "Field required", "missing")),
        ),
    ]
    for body, expected in cases:
        answer = await ingest(http, server, body)
        assert (answer.status, answer.body) == (400, expected)


async def test_more_than_500_events_is_400(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    too_many = await ingest(http, server, batch(*[event() for _ in range(501)]))
    assert too_many.status == 400
    assert too_many.body == {
        "error": "Batch exceeds max 500 events",
        "message": "Batch exceeds max 500 events",
        "status": 400,
    }
    assert await server.event_count() == 0
    exactly = await ingest(http, server, batch(*[event() for _ in range(500)]))
    assert (exactly.status, exactly.body["accepted"]) == (200, 500)


# --------------------------------------------------------------------------- per-event (207)


def _payload_of_size(size: int) -> dict[str, Any]:
    """A payload whose ``len(json.dumps(...))`` is exactly ``size``."""
    payload = {"blob": ""}
    payload["blob"] = "x" * (size - len(json.dumps(payload)))
    assert len(json.dumps(payload)) == size
    return payload


async def test_per_event_errors_of_every_kind_give_207(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    good = event()
    long_agent = event(agent_id="a" * 257)
    long_task = event(task_id="t" * 257)
    accents = event(payload={"text": "é" * 6000})  # 12 kB of UTF-8, 36 kB with ensure_ascii
    at_limit = event(payload=_payload_of_size(32_768))
    over_limit = event(payload=_payload_of_size(32_769))
    no_id = event(event_id="")
    no_time = event(timestamp="")
    bad_type = event("scored")
    answer = await ingest(
        http,
        server,
        batch(good, no_id, no_time, bad_type, long_agent, long_task, accents, at_limit, over_limit),
    )
    assert answer.status == 207
    assert answer.body == {
        "accepted": 2,
        "rejected": 7,
        "errors": [
            {"event_id": None, "error": "missing_field", "message": "event_id is required"},
            {
                "event_id": no_time["event_id"],
                "error": "missing_field",
                "message": "timestamp is required",
            },
            {
                "event_id": bad_type["event_id"],
                "error": "invalid_event_type",
                "message": "Unknown event_type: scored",
            },
            {
                "event_id": long_agent["event_id"],
                "error": "field_too_long",
                "message": "agent_id exceeds 256 chars",
            },
            {
                "event_id": long_task["event_id"],
                "error": "field_too_long",
                "message": "task_id exceeds 256 chars",
            },
            {
                "event_id": accents["event_id"],
                "error": "payload_too_large",
                "message": "payload exceeds 32768 bytes",
            },
            {
                "event_id": over_limit["event_id"],
                "error": "payload_too_large",
                "message": "payload exceeds 32768 bytes",
            },
        ],
        "warnings": [],
    }
    stored = [e["event_id"] for e in await server.events()]
    assert sorted(stored) == sorted([good["event_id"], at_limit["event_id"]])


async def test_envelope_agent_id_too_long_rejects_its_events(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    own = event(agent_id="short-agent")
    inherited = event()
    answer = await ingest(http, server, batch(own, inherited, agent_id="e" * 300))
    assert answer.status == 207
    assert answer.body["accepted"] == 1
    assert answer.body["errors"] == [
        {
            "event_id": inherited["event_id"],
            "error": "field_too_long",
            "message": "agent_id exceeds 256 chars",
        }
    ]


async def test_207_even_when_nothing_is_accepted(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await ingest(http, server, batch(event("bogus"), event("also_bogus")))
    assert answer.status == 207
    assert (answer.body["accepted"], answer.body["rejected"]) == (0, 2)
    assert await server.event_count() == 0


async def test_checks_run_in_hiveboards_order(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    # an empty timestamp is reported before the unknown type and the long task id
    both = event("bogus", timestamp="", task_id="t" * 300)
    answer = await ingest(http, server, batch(both))
    assert answer.body["errors"][0]["error"] == "missing_field"


# --------------------------------------------------------------------------- warnings


async def test_well_known_kinds_missing_data_keys_get_advisory_warnings(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    llm = event(payload={"kind": "llm_call", "data": {"name": "reason"}})
    step = event(payload={"kind": "plan_step", "data": {"step_index": 0, "total_steps": None}})
    queue = event(payload={"kind": "queue_snapshot"})  # no data at all: every key is missing
    unknown_kind = event(payload={"kind": "my_kind", "data": {}})
    answer = await ingest(http, server, batch(llm, step, queue, unknown_kind))
    assert answer.status == 200
    assert answer.body == {
        "accepted": 4,
        "rejected": 0,
        "errors": [],
        "warnings": [
            {"event_id": llm["event_id"], "warning": "payload.kind=llm_call recommends data.model"},
            {
                "event_id": step["event_id"],
                "warning": "payload.kind=plan_step recommends data.action",
            },
            {
                "event_id": queue["event_id"],
                "warning": "payload.kind=queue_snapshot recommends data.depth",
            },
        ],
    }


async def test_environment_and_group_are_truncated_with_warnings(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    first = event()
    answer = await ingest(http, server, batch(first, environment="e" * 70, group="g" * 130))
    assert answer.status == 200
    assert answer.body["warnings"] == [
        {"event_id": first["event_id"], "warning": "environment truncated from 70 to 64 chars"},
        {"event_id": first["event_id"], "warning": "group truncated from 130 to 128 chars"},
    ]
    (stored,) = await server.events()
    assert (stored["environment"], stored["group"]) == ("e" * 64, "g" * 128)


async def test_severity_defaults_and_unknown_severity(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    failed = event("task_failed", task_id="t1")
    queue = event(payload={"kind": "queue_snapshot", "data": {"depth": 1}})
    llm = event(payload={"kind": "llm_call", "data": {"name": "n", "model": "m"}}, severity="warn")
    odd = event("escalated", task_id="t1", severity="fatal")
    answer = await ingest(http, server, batch(failed, queue, llm, odd))
    assert answer.body["warnings"] == [
        {"event_id": odd["event_id"], "warning": "Unknown severity 'fatal', defaulting to auto"}
    ]
    severity = {e["event_id"]: e["severity"] for e in await server.events()}
    assert severity[failed["event_id"]] == "error"
    assert severity[queue["event_id"]] == "debug"  # the kind overrides the default
    assert severity[llm["event_id"]] == "warn"  # an explicit valid severity is kept
    assert severity[odd["event_id"]] == "warn"


# --------------------------------------------------------------------------- storage


async def test_stored_event_has_hiveboards_server_derived_fields(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    sent = event(
        "task_started",
        task_id="t1",
        project_id="My Project!",
        task_type="lead",
        payload={"summary": "Task t1 started"},
        tenant_id="someone-else",
        received_at="1999-01-01",
        unknown_key=1,
        status=None,
    )
    other = event(agent_id="other-agent", agent_type="helper")
    answer = await ingest(http, server, batch(sent, other, environment="staging", group="g1"))
    assert answer.status == 200
    first, second = await server.events()
    assert list(first) == [
        "event_id",
        "tenant_id",
        "agent_id",
        "agent_type",
        "project_id",
        "timestamp",
        "received_at",
        "environment",
        "group",
        "task_id",
        "task_type",
        "task_run_id",
        "correlation_id",
        "action_id",
        "parent_action_id",
        "event_type",
        "severity",
        "status",
        "duration_ms",
        "parent_event_id",
        "payload",
    ]
    assert first["tenant_id"] == "local"
    assert first["received_at"] != "1999-01-01" and first["received_at"].endswith("+00:00")
    assert (first["agent_id"], first["agent_type"]) == ("agent-1", "sales")
    assert (first["environment"], first["group"]) == ("staging", "g1")
    assert first["project_id"] == "My Project!"  # the slug is kept (single tenant)
    assert (first["severity"], first["status"], first["task_run_id"]) == ("info", None, None)
    assert "unknown_key" not in first
    assert (second["agent_id"], second["agent_type"]) == ("other-agent", "helper")


async def test_duplicates_are_counted_as_accepted_and_stored_once(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    original = event(payload={"summary": "first"})
    copy = {**original, "payload": {"summary": "second"}}
    first = await ingest(http, server, batch(original, copy))
    again = await ingest(http, server, batch(original))
    assert (first.status, first.body["accepted"]) == (200, 2)
    assert (again.status, again.body["accepted"]) == (200, 1)
    stored = await server.events()
    assert [(e["event_id"], e["payload"]) for e in stored] == [
        (original["event_id"], {"summary": "first"})
    ]


async def test_events_of_a_request_are_stored_in_timestamp_order(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    late = event(timestamp=stamp(5_000))
    early = event(timestamp=stamp(1_000))
    await ingest(http, server, batch(late, early))
    assert [e["event_id"] for e in await server.events()] == [early["event_id"], late["event_id"]]


async def test_rate_limit_answers_429_like_hiveboard(http: aiohttp.ClientSession) -> None:
    async with await start_server(rate_limit=1) as srv:
        first = await ingest(http, srv, batch(event()))
        assert first.status == 200
        assert first.headers["X-RateLimit-Limit"] == "1"
        assert first.headers["X-RateLimit-Remaining"] == "0"
        limited = None
        for _ in range(20):  # a second request within the same second is refused
            answer = await ingest(http, srv, batch(event()))
            if answer.status == 429:
                limited = answer
                break
        assert limited is not None
        assert limited.body == {
            "error": "rate_limit_exceeded",
            "message": "Rate limit of 1 requests/second exceeded",
            "status": 429,
            "details": {"retry_after_seconds": 1},
        }
        assert limited.headers["X-RateLimit-Limit"] == "1"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert int(limited.headers["X-RateLimit-Reset"]) > 0
        assert "Retry-After" not in limited.headers
        assert srv.requests[429] >= 1
        # reads are not limited, and another key has its own window
        assert (await get(http, srv, "/v1/events")).status == 200
        assert (await ingest(http, srv, batch(event()), key="hb_other")).status == 200


async def test_trailing_slash_is_redirected_with_307(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    answer = await request(
        http,
        "POST",
        f"{server.url}/v1/ingest/",
        json_body=batch(event()),
        allow_redirects=False,
    )
    assert answer.status == 307
    assert answer.headers["Location"] == f"{server.url}/v1/ingest"
    assert await server.event_count() == 0
    read = await get(http, server, "/v1/tasks/?limit=5", allow_redirects=False)
    assert (read.status, read.headers["Location"]) == (307, f"{server.url}/v1/tasks?limit=5")
    unauthenticated = await request(
        http, "POST", f"{server.url}/v1/ingest/", key=None, json_body={}, allow_redirects=False
    )
    assert unauthenticated.status == 401  # authentication comes first, as in HiveBoard


async def test_unknown_path_and_method(server: LocalServer, http: aiohttp.ClientSession) -> None:
    missing = await get(http, server, "/v1/nothing-here")
    assert (missing.status, missing.body) == (404, {"detail": "Not Found"})
    wrong = await request(http, "PUT", f"{server.url}/v1/ingest", json_body={})
    assert (wrong.status, wrong.body) == (405, {"detail": "Method Not Allowed"})


async def test_request_counter_counts_ingest_answers_by_status(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    await ingest(http, server, batch(event()))
    await ingest(http, server, batch(event("bogus")))
    await ingest(http, server, batch(event()), key=None)
    await ingest(http, server, {"envelope": {}})
    await get(http, server, "/v1/events")
    assert server.requests == {200: 1, 207: 1, 401: 1, 400: 1}
    await server.clear()
    assert server.requests == {}
    assert await server.event_count() == 0


async def test_envelope_defaults(server: LocalServer, http: aiohttp.ClientSession) -> None:
    body = {"envelope": {"agent_id": "bare"}, "events": [event()]}
    assert (await ingest(http, server, body)).status == 200
    (stored,) = await server.events()
    assert (stored["agent_id"], stored["agent_type"]) == ("bare", None)
    assert (stored["environment"], stored["group"]) == ("production", "default")


async def test_envelope_shape_is_the_sdks(server: LocalServer, http: aiohttp.ClientSession) -> None:
    body = {"envelope": envelope("wire-agent", environment="staging"), "events": [event()]}
    assert (await ingest(http, server, body)).status == 200
    agents = (await get(http, server, "/v1/agents")).body["data"]
    assert [(a["agent_id"], a["agent_version"], a["framework"]) for a in agents] == [
        ("wire-agent", "1.0", "custom")
    ]


async def test_integers_wider_than_64_bits_stay_exact(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    wide = 123456789012345678901234567890
    sent = event(payload={"wide": wide, "nested": [wide, {"x": -wide}], "text": "9" * 25})
    assert (await ingest(http, server, batch(sent))).status == 200
    (stored,) = await server.events()
    assert stored["payload"] == sent["payload"]
    assert type(stored["payload"]["wide"]) is int
    events = (await get(http, server, "/v1/events")).body["data"]
    assert events[0]["payload"]["nested"][1]["x"] == -wide


async def test_gzip_bomb_is_refused_with_413_and_nothing_stored(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    from hiveloop_async._server.app import MAX_DECODED_BODY_BYTES

    # Valid JSON that inflates past the cap: a batch whose one payload is a long run of
    # spaces (about 40 KB compressed, 33 MB inflated).
    body = json.dumps(batch(event(task_id="t-bomb"))).encode()
    bomb = body[:-1] + b" " * (MAX_DECODED_BODY_BYTES + 1) + body[-1:]
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    compressed = gzip.compress(bomb, compresslevel=9)
    assert len(compressed) < MAX_DECODED_BODY_BYTES // 100
    answer = await _raw_post(http, server, compressed, headers)
    assert answer.status == 413
    assert answer.body["error"] == "payload_too_large"
    assert await server.event_count() == 0
    # The same JSON just under the cap is accepted: the cap is on size, not on gzip.
    fits = body[:-1] + b" " * (MAX_DECODED_BODY_BYTES - len(body) - 1) + body[-1:]
    answer = await _raw_post(http, server, gzip.compress(fits), headers)
    assert (answer.status, answer.body["accepted"]) == (200, 1)


async def test_uncompressed_body_keeps_the_larger_raw_limit(
    server: LocalServer, http: aiohttp.ClientSession
) -> None:
    from hiveloop_async._server.app import MAX_DECODED_BODY_BYTES

    body = json.dumps(batch(event(task_id="t-plain"))).encode()
    big = body[:-1] + b" " * (MAX_DECODED_BODY_BYTES + 1) + body[-1:]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    answer = await _raw_post(http, server, big, headers)
    assert (answer.status, answer.body["accepted"]) == (200, 1)
