"""Default secret scrubbing (``hiveloop_async._scrub``): what is removed, what is left alone.

The fake secrets are assembled at run time (so that no scanner mistakes this file for a
leak); each has the exact shape of the real thing.
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from typing import Any

import orjson
import pytest

from hiveloop_async import HiveBoard, HiveLoopConfigError
from hiveloop_async._scrub import Scrubber, make_scrubber, marker
from hiveloop_async._server import ServerThread
from hiveloop_async.testing import capture_events

_ALNUM = "A1b2C3d4E5f6G7h8J9k0"

SECRETS: dict[str, str] = {
    "openai_key": "sk-" + "proj-" + _ALNUM * 2,
    "anthropic_key": "sk-" + "ant-api03-" + _ALNUM * 3,
    "hiveboard_key": "hb_" + "live_" + "9f8e7d6c5b4a39281706",
    "aws_access_key": "AK" + "IA" + "IOSFODNN7EXAMPLE",
    "github_token": "gh" + "p_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "jwt": "ey" + "JhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
    "bearer_token": "Bearer " + "4f2a9c1e8b7d6a5f4e3d2c1b",
    "private_key": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\nQ2x9\n"
    "-----END RSA PRIVATE KEY-----",
}
GITHUB_PAT = "github_" + "pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
URL_WITH_PASSWORD = "postgresql://app:" + "s3cr3t-Pa55" + "@db.internal:5432/orders"


def fragments(secret: str) -> list[str]:
    """Pieces of ``secret`` that must not survive (every 8-character window of its body)."""
    body = secret.split(" ", 1)[-1] if secret.startswith("Bearer") else secret
    body = body.replace("-----BEGIN RSA PRIVATE KEY-----", "").replace(
        "-----END RSA PRIVATE KEY-----", ""
    )
    body = re.sub(r"\s", "", body)
    return [body[i : i + 8] for i in range(0, max(1, len(body) - 7), 4)]


def assert_gone(event: Any, secret: str) -> None:
    text = orjson.dumps(event).decode()
    for piece in fragments(secret):
        assert piece not in text, f"{piece!r} of the secret survived: {text}"


def tool_event(args: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "timestamp": "2026-12-06T19:00:00.000Z",
        "event_type": "action_completed",
        "task_id": "ticket-4521",
        "payload": {
            "action_name": "call_api",
            "summary": "call_api completed",
            "data": {"args": args},
        },
    }


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_secret_kind_in_a_tool_argument_is_replaced_by_its_marker(kind: str) -> None:
    scrubber = Scrubber()
    secret = SECRETS[kind]
    event = tool_event({"note": f"use {secret} for the call", "n": 3})
    assert scrubber.scrub_event(event) == 1
    note = event["payload"]["data"]["args"]["note"]
    assert note.startswith("use ") and note.endswith(" for the call")
    assert marker(kind) in note
    assert_gone(event, secret)
    assert scrubber.by_kind[kind] == 1
    assert event["payload"]["data"]["args"]["n"] == 3


@pytest.mark.parametrize(
    ("secret", "kind"), [(GITHUB_PAT, "github_token"), (URL_WITH_PASSWORD, "url_password")]
)
def test_fine_grained_github_tokens_and_url_passwords(secret: str, kind: str) -> None:
    event = tool_event({"value": secret})
    assert Scrubber().scrub_event(event) == 1
    value = event["payload"]["data"]["args"]["value"]
    assert marker(kind) in value
    if kind == "url_password":
        assert value == "postgresql://[REDACTED:url_password]@db.internal:5432/orders"
    assert_gone(event, secret if kind != "url_password" else "s3cr3t-Pa55")


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_secrets_in_nested_dicts_lists_and_key_names(kind: str) -> None:
    secret = SECRETS[kind]
    event = tool_event(
        {
            "config": {"deep": {"deeper": [1, {"value": secret}]}},
            "headers": [["X-Trace", "abc"], ["X-Other", secret]],
            "by_key": {secret: "the key is the secret", "plain": "stays"},
            "tuple": ("a", secret),
        }
    )
    scrubber = Scrubber()
    # A PEM block as a key name also reads as a "...private key" key: its value goes too.
    expected = 5 if kind == "private_key" else 4
    assert scrubber.scrub_event(event) == expected
    args = event["payload"]["data"]["args"]
    assert args["config"]["deep"]["deeper"] == [1, {"value": marker(kind)}]
    assert args["headers"] == [["X-Trace", "abc"], ["X-Other", marker(kind)]]
    assert list(args["by_key"]) == [marker(kind), "plain"]
    assert args["by_key"]["plain"] == "stays"
    assert args["tuple"] == ("a", marker(kind))
    assert_gone(event, secret)
    assert scrubber.stats()["redactions"] == expected
    assert scrubber.stats()["events_scrubbed"] == 1


def test_two_secret_keys_in_one_dict_stay_two_entries() -> None:
    a, b = SECRETS["openai_key"], SECRETS["openai_key"].replace("A1", "Z9")
    event = tool_event({"keys": {a: 1, b: 2}})
    assert Scrubber().scrub_event(event) == 2
    keys = event["payload"]["data"]["args"]["keys"]
    assert sorted(keys.values()) == [1, 2]
    assert all(k.startswith(marker("openai_key")) for k in keys)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "db_password",
        "PASSWD",
        "pwd",
        "client-secret",
        "Secret",
        "token",
        "access_token",
        "refresh-token",
        "api_key",
        "API-Key",
        "apikey",
        "X-Api-Key",
        "authorization",
        "Authorization",
        "proxy-authorization",
        "cookie",
        "Cookie",
        "set-cookie",
        "Set-Cookie",
        "private_key",
        "privateKey",
        "aws_secret_access_key",
        "credentials",
    ],
)
def test_whole_values_under_sensitive_keys_are_removed(key: str) -> None:
    event = tool_event({key: "plain-looking value 42", "other": "kept"})
    scrubber = Scrubber()
    assert scrubber.scrub_event(event) == 1
    args = event["payload"]["data"]["args"]
    assert args[key].startswith("[REDACTED:")
    assert "plain-looking" not in args[key]
    assert args["other"] == "kept"


def test_a_sensitive_key_removes_containers_and_numbers_but_not_none_or_bools() -> None:
    event = tool_event(
        {
            "cookies": {"session": "abc", "csrf": "def"},
            "secret": 1234,
            "token": None,
            "password": True,
        }
    )
    assert Scrubber().scrub_event(event) == 2
    args = event["payload"]["data"]["args"]
    assert args == {
        "cookies": marker("cookies"),
        "secret": marker("secret"),
        "token": None,
        "password": True,
    }


def test_counts_and_previews_are_not_secrets() -> None:
    llm = {
        "event_id": str(uuid.uuid4()),
        "timestamp": "2026-12-06T19:00:00.000Z",
        "event_type": "custom",
        "payload": {
            "kind": "llm_call",
            "summary": "summarise -> gpt-4o (1200 in / 300 out)",
            "data": {
                "name": "summarise",
                "model": "gpt-4o",
                "tokens_in": 1200,
                "tokens_out": 300,
                "max_tokens": 4096,
                "token_count": 1500,
                "prompt_tokens": 1200,
                "secret_santa_list": "not under a sensitive key: ends with list",
            },
            "tags": ["llm"],
        },
    }
    before = copy.deepcopy(llm)
    assert Scrubber().scrub_event(llm) == 0
    assert llm == before


ORDINARY = [
    "The customer asked where their order is; it was supposed to arrive yesterday.",
    str(uuid.uuid4()),
    uuid.uuid4().hex,
    hashlib.sha256(b"x").hexdigest(),
    hashlib.md5(b"x").hexdigest(),
    hashlib.sha1(b"x").hexdigest(),
    "task-1234567890abcdefghij-klmnop",
    "the bearer of bad news arrived at noon",
    "Bearer tokens are described in RFC 6750",
    "scikit-learn and sk-learn-pipeline are libraries",
    "https://example.com/path?query=1&page=2",
    "user@example.com wrote to support@example.com",
    "hb_agent_registered_handler_function",
    "AKIAlower is not an access key id",
    "eyJ is how base64 JSON starts",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    "ghp_short",
    "A" * 500,
    "SGVsbG8gd29ybGQsIHRoaXMgaXMgYmFzZTY0IGVuY29kZWQ=",
    "2026-12-06T19:00:00.123456+00:00",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_ids_and_hashes_are_untouched(text: str) -> None:
    event = tool_event({"value": text, text[:40]: "as a key"})
    event["correlation_id"] = text
    before = copy.deepcopy(event)
    scrubber = Scrubber()
    assert scrubber.scrub_event(event) == 0
    assert event == before
    assert scrubber.stats() == {"events": 1, "events_scrubbed": 0, "redactions": 0, "by_kind": {}}


def test_top_level_text_fields_are_scanned_and_ids_are_not_mutated_in_user_objects() -> None:
    secret = SECRETS["openai_key"]
    shared_args = {"query": f"key={secret}", "limit": 5}
    event = tool_event(shared_args)
    event["correlation_id"] = f"req {secret}"
    event["task_id"] = secret
    payload_before = event["payload"]
    assert Scrubber().scrub_event(event) == 3
    assert event["task_id"] == marker("openai_key")
    assert event["correlation_id"] == "req " + marker("openai_key")
    # Nested containers are copied, never changed: the application's objects keep their data.
    assert shared_args == {"query": f"key={secret}", "limit": 5}
    assert event["payload"] is not payload_before
    assert payload_before["data"]["args"] is shared_args
    # A clean event is not copied at all.
    clean = tool_event({"q": "nothing here"})
    payload = clean["payload"]
    assert Scrubber().scrub_event(clean) == 0
    assert clean["payload"] is payload


def test_scrub_encoded_returns_the_same_bytes_when_clean_and_valid_json_otherwise() -> None:
    scrubber = Scrubber()
    clean = orjson.dumps(tool_event({"q": "nothing here"}))
    out, n = scrubber.scrub_encoded(clean)
    assert out is clean and n == 0
    dirty = orjson.dumps(tool_event({"auth_header": SECRETS["bearer_token"]}))
    out, n = scrubber.scrub_encoded(dirty)
    assert n == 1
    assert orjson.loads(out)["payload"]["data"]["args"]["auth_header"] == marker("bearer_token")
    assert scrubber.scrub_encoded(b"not json") == (b"not json", 0)
    assert scrubber.scrub_encoded(b"[1, 2]") == (b"[1, 2]", 0)
    assert scrubber.stats()["events"] == 4


def test_extra_patterns_and_keys() -> None:
    scrubber = Scrubber(
        extra_patterns={"customer_ssn": r"\b\d{3}-\d{2}-\d{4}\b", "ticket": re.compile("TK-\\d+")},
        extra_keys=["X-Internal-Sig", "otp"],
    )
    event = tool_event(
        {
            "text": "ssn 123-45-6789, see TK-991",
            "x_internal_sig": "abc",
            "user_otp": "000111",
            "ordinary": "123-456-789",
        }
    )
    assert scrubber.scrub_event(event) == 4
    args = event["payload"]["data"]["args"]
    assert args["text"] == "ssn [REDACTED:customer_ssn], see [REDACTED:ticket]"
    assert args["x_internal_sig"] == "[REDACTED:xinternalsig]"
    assert args["user_otp"] == "[REDACTED:otp]"
    assert args["ordinary"] == "123-456-789"
    assert scrubber.by_kind["customer_ssn"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_patterns": {"Bad Name": "x"}},
        {"extra_patterns": {"ok": "(unclosed"}},
        {"extra_keys": [""]},
        {"extra_keys": ["-_"]},
    ],
)
def test_bad_configuration_raises_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(HiveLoopConfigError):
        Scrubber(**kwargs)


def test_make_scrubber_is_on_by_default_and_off_with_false() -> None:
    assert isinstance(make_scrubber(), Scrubber)
    assert make_scrubber(False) is None
    mine = Scrubber()
    assert make_scrubber(mine) is mine
    with pytest.raises(HiveLoopConfigError):
        make_scrubber("yes")  # type: ignore[arg-type]


def test_too_deep_payloads_are_replaced_not_sent_unscanned() -> None:
    deep: Any = SECRETS["openai_key"]
    for _ in range(100):
        deep = [deep]
    event = tool_event({"deep": deep})
    assert Scrubber().scrub_event(event) == 1
    assert_gone(event, SECRETS["openai_key"])
    assert "[REDACTED:too_deep]" in orjson.dumps(event).decode()


def test_scrubbed_sdk_events_reach_a_real_server_without_the_secrets() -> None:
    """Events recorded through the public API, scrubbed as the sender will, then ingested."""
    import aiohttp
    import anyio

    hb = HiveBoard(api_key="hb_test_x", enabled=False)
    agent = hb.agent("scrub-agent", heartbeat_interval=0)
    scrubber = Scrubber()
    with capture_events(hb) as captured:
        with agent.task("t-scrub") as task:
            with agent.track_context("call_api") as action:
                action.set_payload(
                    {
                        "args": {
                            "api_key": SECRETS["openai_key"],
                            "nested": {"list": ["x", SECRETS["github_token"]]},
                            SECRETS["aws_access_key"]: "as a key name",
                        }
                    }
                )
            task.llm_call(
                "answer",
                "gpt-4o",
                prompt_preview=f"Authorization: {SECRETS['bearer_token']}",
                tokens_in=10,
            )
        encoded = [orjson.dumps(ev) for ev in captured.events]
    hb.shutdown(timeout=0)
    scrubbed = [scrubber.scrub_encoded(data)[0] for data in encoded]
    assert scrubber.redactions == 4
    body = b'{"envelope":{"agent_id":"scrub-agent"},"events":[' + b",".join(scrubbed) + b"]}"

    with ServerThread(memory=True) as srv:

        async def post() -> int:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{srv.url}/v1/ingest",
                    data=body,
                    headers={
                        "Authorization": "Bearer hb_test_key",
                        "Content-Type": "application/json",
                    },
                ) as resp,
            ):
                return resp.status

        assert anyio.run(post) == 200
        assert srv.wait_for_events(len(scrubbed))
        stored = srv.events()
    assert len(stored) == len(scrubbed)
    for kind in ("openai_key", "github_token", "aws_access_key", "bearer_token"):
        assert_gone(stored, SECRETS[kind])
    text = orjson.dumps(stored).decode()
    assert "[REDACTED:apikey]" in text and "[REDACTED:aws_access_key]" in text


def test_scrub_encoded_gives_what_scrub_event_gives_and_keeps_clean_bytes() -> None:
    """The sender scrubs encoded events: exactly what scrubbing the dict gives, for every
    secret kind, sensitive key spelling and ordinary text; clean bytes come back as they are."""
    scrubber = Scrubber()
    values = [*SECRETS.values(), GITHUB_PAT, URL_WITH_PASSWORD, *ORDINARY]
    keys = ["q", "API-Key", "api.key", "Api Key", "x_password", "SET-COOKIE", "Pwd", "auth"]
    for value in values:
        for key in keys:
            for payload in ({key: value}, {"args": {key: [value]}}, {value: key}):
                event = {"event_type": "custom", "payload": payload}
                data = orjson.dumps(event)
                out, n = scrubber.scrub_encoded(data)
                expected = dict(event)
                assert n == scrubber.scrub_event(expected), (key, value)
                assert orjson.loads(out) == expected, (key, value)
                if n == 0:
                    assert out is data
                # The sender's decode-once variant (OTLP on): the same bytes, and the dict
                # it hands the span assembler is what those bytes decode to.
                out2, decoded, n2 = scrubber.scrub_decoding(data)
                assert (out2, n2) == (out, n) and decoded == expected, (key, value)
    clean = orjson.dumps({"event_type": "custom", "payload": {"rows": 3, "tool": "crm"}})
    out, n = scrubber.scrub_encoded(clean)
    assert out is clean and n == 0
    out, decoded, n = scrubber.scrub_decoding(clean)
    assert out is clean and n == 0 and decoded == orjson.loads(clean)
    assert scrubber.scrub_decoding(b"not json") == (b"not json", None, 0)
    assert scrubber.scrub_decoding(b"[1, 2]") == (b"[1, 2]", None, 0)


def test_token_counts_are_kept_and_token_keys_are_scrubbed() -> None:
    """An LLM call's ``tokens_in``/``tokens_out`` are counts, not secrets; any key ending in
    ``token`` next to them (even overlapping ``tokens_ou`` + ``token``) is scrubbed."""
    scrubber = Scrubber()
    llm = orjson.dumps(
        {
            "event_type": "custom",
            "payload": {"kind": "llm_call", "data": {"tokens_in": 120, "tokens_out": 40}},
            "token_count": 3,
        }
    )
    out, n = scrubber.scrub_encoded(llm)
    assert out is llm and n == 0
    for key in ("x_token", "tokens_ou_token", "tokens_in_token", "Access-Token", "token"):
        data = orjson.dumps({"payload": {"tokens_in": 1, key: "hunter2-value", "tokens_out": 2}})
        scrubbed, redactions = scrubber.scrub_encoded(data)
        assert redactions == 1 and b"hunter2" not in scrubbed, key
        assert orjson.loads(scrubbed)["payload"]["tokens_in"] == 1
