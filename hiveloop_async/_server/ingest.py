"""Decoding, validation and preparation of ``POST /v1/ingest`` bodies.

Everything here is pure CPU work (no I/O, no database) and reproduces HiveBoard's
``app.py: ingest`` pipeline (contract §2.2–§2.5):

1. :func:`decode_body` turns the raw request body into a Python object, with the same 400
   answers FastAPI gives for a missing or non-JSON content type and for undecodable JSON.
2. :func:`validate_request` checks the body the way pydantic's *lax* mode checks
   ``IngestRequest`` (strings must be strings, ``duration_ms`` must be an integer or an
   integral float or a numeric string, ``payload`` must be an object). Every violation is
   collected; any violation rejects the whole request.
3. :func:`prepare_batch` applies the per-event checks of §2.3 in HiveBoard's order, derives
   the server-side fields and produces the rows to store plus the response body.

The validators are hand-written fast paths (no pydantic): a batch of 500 realistic events
is validated and prepared in a few milliseconds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

import orjson

from .._wire import (
    EVENT_TYPES,
    MAX_BATCH_EVENTS,
    MAX_ENVIRONMENT_LEN,
    MAX_GROUP_LEN,
    MAX_ID_LEN,
    MAX_PAYLOAD_BYTES,
    SEVERITIES,
    SEVERITY_DEFAULTS,
)

__all__ = [
    "COLUMN_FIELDS",
    "EVENT_COLUMNS",
    "EVENT_TYPES",
    "MAX_BATCH_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "SEVERITY_DEFAULTS",
    "STORED_FIELDS",
    "TENANT_ID",
    "AgentUpdate",
    "BodyRejected",
    "PreparedBatch",
    "decode_body",
    "expand_event",
    "parse_timestamp",
    "prepare_batch",
    "prepare_request",
    "validate_request",
]

#: The single tenant of the local server (HiveBoard derives it from the API key).
TENANT_ID = "local"

# HiveBoard's vocabulary is the SDK's: one definition for both sides.
VALID_SEVERITIES = SEVERITIES
SEVERITY_BY_PAYLOAD_KIND: dict[str, str] = {"llm_call": "info", "queue_snapshot": "debug"}
PAYLOAD_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "llm_call": ("name", "model"),
    "queue_snapshot": ("depth",),
    "todo": ("todo_id", "action"),
    "plan_created": ("steps",),
    "plan_step": ("step_index", "total_steps", "action"),
    "issue": ("severity",),
    "scheduled": ("items",),
}

MAX_AGENT_ID_CHARS = MAX_ID_LEN
MAX_TASK_ID_CHARS = MAX_ID_LEN
MAX_ENVIRONMENT_CHARS = MAX_ENVIRONMENT_LEN
MAX_GROUP_CHARS = MAX_GROUP_LEN

# Worst case ratio between ``len(json.dumps(x))`` (ensure_ascii, ", "/": " separators) and
# ``len(orjson.dumps(x))``: a DEL character is 1 byte in orjson and 6 characters ("\u007f")
# in json.dumps. Anything at most MAX_PAYLOAD_BYTES / 6 bytes long needs no exact check.
_FAST_PAYLOAD_LIMIT = MAX_PAYLOAD_BYTES // 6

_MSG_STRING = "Input should be a valid string"
_MSG_MISSING = "Field required"
_MSG_MODEL = "Input should be a valid dictionary or object to extract fields from"
_MSG_LIST = "Input should be a valid list"
_MSG_DICT = "Input should be a valid dictionary"
_MSG_INT = "Input should be a valid integer"
_MSG_INT_FRACTION = "Input should be a valid integer, got a number with a fractional part"
_MSG_INT_PARSING = "Input should be a valid integer, unable to parse string as an integer"
_MSG_INT_SIZE = "Unable to parse input string as an integer, exceeded maximum size"
_MSG_FINITE = "Input should be a finite number"

# orjson decodes integers wider than 64 bits as floats; such integers need 20+ digits, so
# only texts with a run of 20 digits go through the (exact, slower) stdlib decoder. The
# check is a C-speed translate + substring search (a regex is ten times slower).
_DIGIT_MARKS = bytes(1 if 0x30 <= i <= 0x39 else 0 for i in range(256))
_TWENTY_DIGITS = b"\x01" * 20


def _may_hold_wide_int(text: bytes) -> bool:
    return _TWENTY_DIGITS in text.translate(_DIGIT_MARKS)


_INT_STRING = re.compile(r"\s*[+-]?[0-9](?:_?[0-9])*(?:\.0+)?\s*", re.ASCII)

# (name, kind) in IngestEvent's declaration order; pydantic reports errors in this order.
_REQUIRED = 0
_OPTIONAL_STR = 1
_OPTIONAL_INT = 2
_OPTIONAL_DICT = 3
_EVENT_FIELDS: tuple[tuple[str, int], ...] = (
    ("event_id", _REQUIRED),
    ("timestamp", _REQUIRED),
    ("event_type", _REQUIRED),
    ("project_id", _OPTIONAL_STR),
    ("agent_id", _OPTIONAL_STR),
    ("agent_type", _OPTIONAL_STR),
    ("task_id", _OPTIONAL_STR),
    ("task_type", _OPTIONAL_STR),
    ("task_run_id", _OPTIONAL_STR),
    ("correlation_id", _OPTIONAL_STR),
    ("action_id", _OPTIONAL_STR),
    ("parent_action_id", _OPTIONAL_STR),
    ("severity", _OPTIONAL_STR),
    ("status", _OPTIONAL_STR),
    ("duration_ms", _OPTIONAL_INT),
    ("parent_event_id", _OPTIONAL_STR),
    ("payload", _OPTIONAL_DICT),
)
_EVENT_KIND: dict[str, int] = dict(_EVENT_FIELDS)
_EXPECTED_TYPE: dict[str, type] = {
    name: int if kind == _OPTIONAL_INT else dict if kind == _OPTIONAL_DICT else str
    for name, kind in _EVENT_FIELDS
}
_REQUIRED_NAMES = frozenset(name for name, kind in _EVENT_FIELDS if kind == _REQUIRED)
_ENVELOPE_OPTIONAL = ("agent_type", "agent_version", "framework", "runtime", "sdk_version")
_MISSING: Any = object()


class BodyRejected(Exception):
    """The whole request is rejected with HTTP 400 and ``body`` as the JSON answer."""

    def __init__(self, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(body.get("message", "rejected"))
        self.body = body
        self.status = status


def _validation_error(fields: list[dict[str, str]]) -> BodyRejected:
    return BodyRejected(
        {
            "error": "validation_error",
            "message": "Request validation failed",
            "status": 400,
            "details": {"fields": fields},
        }
    )


def _field(loc: str, message: str, type_: str) -> dict[str, str]:
    return {"field": loc, "message": message, "type": type_}


def _is_json_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = mime.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid constant {name}")


def decode_body(raw: bytes, content_type: str | None) -> Any:
    """Decode an ingest body as FastAPI would before validating it.

    Does not block (pure CPU). An empty body is a missing body; a non-JSON (or absent) content
    type yields the raw bytes, which then fail validation as "not an object"; undecodable JSON
    is reported as ``json_invalid`` at ``body.<position>``. NaN and Infinity are refused.
    Integers of any size stay exact integers (as with the stdlib decoder HiveBoard uses).

    :param raw: the request body, already un-gzipped.
    :param content_type: the ``Content-Type`` header, or None.
    :return: the decoded JSON value (any type).
    :raises BodyRejected: for an empty body, a non-JSON content type, or invalid JSON.
    """
    if not raw:
        raise _validation_error([_field("body", _MSG_MISSING, "missing")])
    if not _is_json_content_type(content_type):
        raise _validation_error([_field("body", _MSG_MODEL, "model_attributes_type")])
    try:
        if not _may_hold_wide_int(raw):
            return orjson.loads(raw)
        # orjson turns integers wider than 64 bits into floats; the stdlib keeps them exact.
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:  # orjson's error is a subclass
        position = exc.pos
    except (ValueError, UnicodeDecodeError):
        position = 0
    raise _validation_error([_field(f"body.{position}", "JSON decode error", "json_invalid")])


def _coerce_int(value: Any) -> tuple[int | None, tuple[str, str] | None]:
    """Lax pydantic ``int`` validation: ``(value, None)`` or ``(None, (message, type))``."""
    if type(value) is int:
        return value, None
    if type(value) is bool:
        return int(value), None
    if type(value) is float:
        if not math.isfinite(value):
            return None, (_MSG_FINITE, "finite_number")
        if not value.is_integer():
            return None, (_MSG_INT_FRACTION, "int_from_float")
        if not -(2**63) <= value < 2**63:
            return None, (_MSG_INT_SIZE, "int_parsing_size")
        return int(value), None
    if type(value) is str:
        if _INT_STRING.fullmatch(value) is None:
            return None, (_MSG_INT_PARSING, "int_parsing")
        return int(value.strip().split(".", 1)[0]), None
    return None, (_MSG_INT, "int_type")


#: (keys in order, value types) of events that passed the fast path; bounded, never evicted
#: (a set is safe to grow from several threads under the GIL).
_VALID_SIGNATURES: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()
_MAX_SIGNATURES = 4096


def _validate_event(raw: Any, index: int, errors: list[dict[str, str]]) -> dict[str, Any] | None:
    """Validate one event; append violations to ``errors``; return the normalised event."""
    if type(raw) is not dict:
        errors.append(_field(f"body.events.{index}", _MSG_MODEL, "model_attributes_type"))
        return None
    # Fastest path: the same keys in the same order with the same value types as an event
    # already found valid (an SDK sends a handful of shapes). Validity depends on nothing else.
    signature = (tuple(raw), tuple(map(type, raw.values())))
    if signature in _VALID_SIGNATURES:
        return raw
    # Fast path: every present known field has the expected type and the required ones exist.
    ok = True
    expected = _EXPECTED_TYPE
    for name, value in raw.items():
        wanted = expected.get(name)
        if wanted is not None and type(value) is not wanted:
            if value is None and name not in _REQUIRED_NAMES:
                continue
            ok = False
            break
    if ok and "event_id" in raw and "timestamp" in raw and "event_type" in raw:
        if len(_VALID_SIGNATURES) < _MAX_SIGNATURES:
            _VALID_SIGNATURES.add(signature)
        return raw
    # Slow path: collect every violation in declaration order, as pydantic does.
    before = len(errors)
    event = dict(raw)
    for name, kind in _EVENT_FIELDS:
        loc = f"body.events.{index}.{name}"
        if name not in raw:
            if kind == _REQUIRED:
                errors.append(_field(loc, _MSG_MISSING, "missing"))
            continue
        value = raw[name]
        if kind == _REQUIRED:
            if type(value) is not str:
                errors.append(_field(loc, _MSG_STRING, "string_type"))
        elif value is None:
            continue
        elif kind == _OPTIONAL_STR:
            if type(value) is not str:
                errors.append(_field(loc, _MSG_STRING, "string_type"))
        elif kind == _OPTIONAL_INT:
            coerced, problem = _coerce_int(value)
            if problem is not None:
                errors.append(_field(loc, problem[0], problem[1]))
            else:
                event[name] = coerced
        elif type(value) is not dict:
            errors.append(_field(loc, _MSG_DICT, "dict_type"))
    return event if len(errors) == before else None


def validate_request(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate a decoded body against HiveBoard's ``IngestRequest`` model (lax mode).

    Does not block (pure CPU). Unknown keys are ignored, as pydantic ignores them.

    :param body: the value returned by :func:`decode_body`.
    :return: ``(envelope, events)`` with defaults applied and ``duration_ms`` coerced to int.
    :raises BodyRejected: with every violation listed in ``details.fields``.
    """
    if type(body) is not dict:
        raise _validation_error([_field("body", _MSG_MODEL, "model_attributes_type")])
    errors: list[dict[str, str]] = []
    envelope: dict[str, Any] = {}
    raw_env = body.get("envelope", _MISSING)
    if raw_env is _MISSING:
        errors.append(_field("body.envelope", _MSG_MISSING, "missing"))
    elif type(raw_env) is not dict:
        errors.append(_field("body.envelope", _MSG_MODEL, "model_attributes_type"))
    else:
        agent_id = raw_env.get("agent_id", _MISSING)
        if agent_id is _MISSING:
            errors.append(_field("body.envelope.agent_id", _MSG_MISSING, "missing"))
        elif type(agent_id) is not str:
            errors.append(_field("body.envelope.agent_id", _MSG_STRING, "string_type"))
        envelope["agent_id"] = agent_id
        for name in _ENVELOPE_OPTIONAL:
            value = raw_env.get(name)
            if value is not None and type(value) is not str:
                errors.append(_field(f"body.envelope.{name}", _MSG_STRING, "string_type"))
            envelope[name] = value
        for name, default in (("environment", "production"), ("group", "default")):
            value = raw_env.get(name, default)
            if type(value) is not str:
                errors.append(_field(f"body.envelope.{name}", _MSG_STRING, "string_type"))
            envelope[name] = value
    raw_events = body.get("events", _MISSING)
    events: list[dict[str, Any]] = []
    if raw_events is _MISSING:
        errors.append(_field("body.events", _MSG_MISSING, "missing"))
    elif type(raw_events) is not list:
        errors.append(_field("body.events", _MSG_LIST, "list_type"))
    else:
        for index, raw in enumerate(raw_events):
            event = _validate_event(raw, index, errors)
            if event is not None:
                events.append(event)
    if errors:
        raise _validation_error(errors)
    return envelope, events


def parse_timestamp(value: Any) -> datetime | None:
    """Parse a timestamp the way HiveBoard does; naive times are UTC; None if unparseable.

    Does not block and never raises.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


@dataclass
class AgentUpdate:
    """What one ingest request tells the server about one agent (applied on the DB thread)."""

    agent_id: str
    agent_type: str
    agent_version: str | None
    framework: str | None
    runtime: str | None
    sdk_version: str | None
    environment: str
    group: str
    #: (timestamp string, epoch seconds or None) of the earliest and latest events
    first_seen: tuple[str, float | None]
    last_seen: tuple[str, float | None]
    last_heartbeat: tuple[str, float | None] | None = None
    #: latest non-heartbeat event: (timestamp, epoch, event_type, task_id, project_id)
    last_event: tuple[str, float | None, str, str | None, str | None] | None = None
    stuck_threshold: int | None = None


@dataclass
class PreparedBatch:
    """The outcome of :func:`prepare_batch`: rows to insert and the HTTP answer."""

    #: ``(event_id, timestamp, event_type, agent_id, task_id, payload_kind, body)``
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: each row's body before encoding (the same dicts, aligned with ``rows``), so the store
    #: reads task fields without decoding the JSON again; may be left empty
    stored: list[dict[str, Any]] = field(default_factory=list)
    agents: list[AgentUpdate] = field(default_factory=list)
    accepted: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        """200 without per-event errors, else 207 (even when nothing was accepted)."""
        return 207 if self.errors else 200

    def response(self) -> dict[str, Any]:
        """The JSON body HiveBoard answers with."""
        return {
            "accepted": self.accepted,
            "rejected": len(self.errors),
            "errors": self.errors,
            "warnings": self.warnings,
        }


def prepare_request(
    raw: bytes, content_type: str | None, received_at: str | None = None
) -> PreparedBatch:
    """Decode, validate and prepare one ingest request body (the whole pipeline).

    Does not block (pure CPU).

    :raises BodyRejected: for any reason HiveBoard answers 400 (bad body, schema violation,
        more than 500 events).
    """
    envelope, events = validate_request(decode_body(raw, content_type))
    if len(events) > MAX_BATCH_EVENTS:
        message = f"Batch exceeds max {MAX_BATCH_EVENTS} events"
        raise BodyRejected({"error": message, "message": message, "status": 400})
    return prepare_batch(envelope, events, received_at=received_at)


def _payload_size(payload: dict[str, Any]) -> int:
    """``len(json.dumps(payload))`` exactly as HiveBoard measures it (ensure_ascii)."""
    return len(json.dumps(payload))


def _epoch(ts: str) -> float | None:
    parsed = parse_timestamp(ts)
    return parsed.timestamp() if parsed is not None else None


#: Keys of a stored event, in HiveBoard's ``Event`` model order (what the read API returns).
STORED_FIELDS: tuple[str, ...] = (
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
)
# Event keys copied verbatim into the stored event when not null.
_PASSTHROUGH = (
    "project_id",
    "task_id",
    "task_type",
    "task_run_id",
    "correlation_id",
    "action_id",
    "parent_action_id",
    "status",
    "duration_ms",
    "parent_event_id",
)


#: What the agent update needs of an accepted event: agent id, type, task id, stored body.
_Meta = tuple[str, str, "str | None", dict[str, Any]]


#: Fields that have their own column and are left out of the row's JSON body.
COLUMN_FIELDS = ("event_id", "timestamp", "event_type", "agent_id", "task_id")
#: The SQL column list :func:`expand_event` takes its row from.
EVENT_COLUMNS = ", ".join((*COLUMN_FIELDS, "body"))


def expand_event(row: Sequence[Any]) -> dict[str, Any]:
    """Rebuild the full stored event (every key, nulls included) from a row.

    :param row: ``(event_id, timestamp, event_type, agent_id, task_id, body)``; the JSON
        body holds the other fields, without nulls and without the constant ``tenant_id``.
    """
    body = row[5]
    compact = json.loads(body) if _may_hold_wide_int(body) else orjson.loads(body)
    event = {key: compact.get(key) for key in STORED_FIELDS}
    event["event_id"], event["timestamp"], event["event_type"] = row[0], row[1], row[2]
    event["agent_id"], event["task_id"] = row[3], row[4]
    event["tenant_id"] = TENANT_ID
    return event


def prepare_batch(
    envelope: dict[str, Any],
    events: list[dict[str, Any]],
    *,
    received_at: str | None = None,
) -> PreparedBatch:
    """Apply HiveBoard's per-event checks (§2.3) and build the rows to store.

    Does not block (pure CPU) and never raises for any validated input.

    :param envelope: the envelope returned by :func:`validate_request`.
    :param events: the events returned by :func:`validate_request`.
    :param received_at: the server receive time (UTC ISO); now if omitted.
    :return: rows (in timestamp order, as HiveBoard inserts them), agent updates, and the
        answer's ``accepted``/``errors``/``warnings``.
    """
    if received_at is None:
        received_at = datetime.now(timezone.utc).isoformat()
    out = PreparedBatch()
    errors = out.errors
    warnings = out.warnings
    env_agent_id: str = envelope["agent_id"]
    env_agent_type: str | None = envelope.get("agent_type")
    environment: str = envelope.get("environment") or "production"
    group: str = envelope.get("group") or "default"
    env_too_long = len(environment) > MAX_ENVIRONMENT_CHARS
    group_too_long = len(group) > MAX_GROUP_CHARS
    stored_env = environment[:MAX_ENVIRONMENT_CHARS]
    stored_group = group[:MAX_GROUP_CHARS]
    accepted: list[tuple[str, _Meta, tuple[Any, ...]]] = []
    dumps = orjson.dumps
    event_types = EVENT_TYPES
    severities = VALID_SEVERITIES
    passthrough = _PASSTHROUGH
    known = _EVENT_KIND.keys()
    heartbeats = registered = mixed_agents = False

    for raw in events:
        event_id = raw["event_id"]
        if not event_id:
            errors.append(
                {"event_id": None, "error": "missing_field", "message": "event_id is required"}
            )
            continue
        timestamp = raw["timestamp"]
        if not timestamp:
            errors.append(
                {
                    "event_id": event_id,
                    "error": "missing_field",
                    "message": "timestamp is required",
                }
            )
            continue
        event_type = raw["event_type"]
        if event_type not in event_types:
            errors.append(
                {
                    "event_id": event_id,
                    "error": "invalid_event_type",
                    "message": f"Unknown event_type: {event_type}",
                }
            )
            continue
        agent_id = raw.get("agent_id") or env_agent_id
        if agent_id != env_agent_id:
            mixed_agents = True
        if event_type == "heartbeat":
            heartbeats = True
        elif event_type == "agent_registered":
            registered = True
        if len(agent_id) > MAX_AGENT_ID_CHARS:
            errors.append(
                {
                    "event_id": event_id,
                    "error": "field_too_long",
                    "message": f"agent_id exceeds {MAX_AGENT_ID_CHARS} chars",
                }
            )
            continue
        task_id = raw.get("task_id")
        if task_id and len(task_id) > MAX_TASK_ID_CHARS:
            errors.append(
                {
                    "event_id": event_id,
                    "error": "field_too_long",
                    "message": f"task_id exceeds {MAX_TASK_ID_CHARS} chars",
                }
            )
            continue
        payload = raw.get("payload")
        kind: str | None = None
        data: Any = None
        if payload:
            raw_kind = payload.get("kind")
            if type(raw_kind) is str and raw_kind:
                kind = raw_kind
                data = payload.get("data", {})
        severity = raw.get("severity")
        bad_severity = bool(severity) and severity not in severities
        if bad_severity or not severity:
            severity = SEVERITY_DEFAULTS.get(event_type, "info")
            if kind is not None and kind in SEVERITY_BY_PAYLOAD_KIND:
                severity = SEVERITY_BY_PAYLOAD_KIND[kind]

        agent_type = raw.get("agent_type") or env_agent_type
        if raw.keys() <= known and None not in raw.values():
            # Fast path: only known keys, no nulls (what the SDKs send): copy them all and
            # overwrite the derived ones.
            # The column fields are left out of the body: a smaller body is a faster insert.
            stored: dict[str, Any] = {
                **raw,
                "received_at": received_at,
                "environment": stored_env,
                "group": stored_group,
                "severity": severity,
            }
            del stored["event_id"], stored["timestamp"], stored["event_type"]
            stored.pop("agent_id", None)
            stored.pop("task_id", None)
        else:
            stored = {
                "received_at": received_at,
                "environment": stored_env,
                "group": stored_group,
                "severity": severity,
            }
            for key in passthrough:
                value = raw.get(key)
                if value is not None:
                    stored[key] = value
            stored.pop("task_id", None)  # the only column field among them
            if payload is not None:
                stored["payload"] = payload
        if agent_type is not None:
            stored["agent_type"] = agent_type
        else:
            stored.pop("agent_type", None)
        try:
            body = dumps(stored)
        except TypeError:  # integers wider than 64 bits (decoded by the stdlib fallback)
            body = json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode()
        # The payload is shorter than its event's compact encoding; only when that encoding
        # could reach the limit once re-encoded with ensure_ascii and ", " separators is the
        # exact (slower) measurement needed.
        if (
            payload
            and len(body) > _FAST_PAYLOAD_LIMIT
            and _payload_size(payload) > MAX_PAYLOAD_BYTES
        ):
            errors.append(
                {
                    "event_id": event_id,
                    "error": "payload_too_large",
                    "message": f"payload exceeds {MAX_PAYLOAD_BYTES} bytes",
                }
            )
            continue
        if kind is not None and type(data) is dict:
            required = PAYLOAD_REQUIRED_FIELDS.get(kind)
            if required is not None:
                for key in required:
                    if key not in data:
                        warnings.append(
                            {
                                "event_id": event_id,
                                "warning": f"payload.kind={kind} recommends data.{key}",
                            }
                        )
        if env_too_long:
            warnings.append(
                {
                    "event_id": event_id,
                    "warning": f"environment truncated from {len(environment)} "
                    f"to {MAX_ENVIRONMENT_CHARS} chars",
                }
            )
        if group_too_long:
            warnings.append(
                {
                    "event_id": event_id,
                    "warning": f"group truncated from {len(group)} to {MAX_GROUP_CHARS} chars",
                }
            )
        if bad_severity:
            warnings.append(
                {
                    "event_id": event_id,
                    "warning": f"Unknown severity '{raw.get('severity')}', defaulting to auto",
                }
            )
        accepted.append(
            (
                timestamp,
                (agent_id, event_type, task_id, stored),
                (event_id, timestamp, event_type, agent_id, task_id, kind, body),
            )
        )

    # HiveBoard sorts the accepted events by timestamp string before inserting them.
    accepted.sort(key=_BY_TIMESTAMP)
    out.rows = [item[2] for item in accepted]
    out.stored = [item[1][3] for item in accepted]
    out.accepted = len(accepted)
    if accepted:
        out.agents = _agent_updates(
            envelope,
            accepted,
            received_at,
            mixed_agents=mixed_agents,
            heartbeats=heartbeats,
            registered=registered,
        )
    return out


_BY_TIMESTAMP = itemgetter(0)


def _agent_updates(
    envelope: dict[str, Any],
    accepted: list[tuple[str, _Meta, tuple[Any, ...]]],
    received_at: str,
    *,
    mixed_agents: bool = True,
    heartbeats: bool = True,
    registered: bool = True,
) -> list[AgentUpdate]:
    """One update per agent seen in the accepted events (given in timestamp order).

    Like HiveBoard, "earliest"/"latest" follow the timestamp strings' order; only the chosen
    timestamps are parsed. The flags say whether any accepted event names an agent other
    than the envelope's, is a heartbeat, is an ``agent_registered``: without one, the scan
    for the latest of each stops as soon as the others are found.
    """
    env_agent_id = envelope["agent_id"]
    by_agent: dict[str, list[tuple[str, _Meta, tuple[Any, ...]]]]
    if mixed_agents:
        by_agent = {}
        for item in accepted:
            agent_events = by_agent.get(item[1][0])
            if agent_events is None:
                by_agent[item[1][0]] = [item]
            else:
                agent_events.append(item)
    else:
        by_agent = {env_agent_id: accepted}
    updates: list[AgentUpdate] = []
    for agent_id, events in by_agent.items():
        first_ts = events[0][0]
        last_ts = events[-1][0]
        first_seen = (first_ts, _epoch(first_ts))
        last_seen = (last_ts, _epoch(last_ts))
        if first_seen[1] is None or last_seen[1] is None:
            parsed = [(item[0], _epoch(item[0])) for item in events]
            known = [item for item in parsed if item[1] is not None]
            if known:
                first_seen = min(known, key=_epoch_key)
                last_seen = max(known, key=_epoch_key)
            else:  # no parseable client timestamp: fall back to the receive time
                first_seen = last_seen = (received_at, _epoch(received_at))
        last_heartbeat = None
        latest = None
        task_id: str | None = None
        project_id: str | None = None
        threshold: int | None = None
        for timestamp, (_, event_type, event_task, stored), _row in reversed(events):
            if event_type == "heartbeat":
                if last_heartbeat is None:
                    last_heartbeat = (timestamp, _epoch(timestamp))
                continue
            if latest is None:
                latest = (timestamp, event_type)
            if task_id is None:
                task_id = event_task or None
            if project_id is None:
                project_id = stored.get("project_id") or None
            if threshold is None and event_type == "agent_registered":
                threshold = _stuck_threshold(stored.get("payload"))
            if (
                task_id is not None
                and project_id is not None
                and not registered
                and (last_heartbeat is not None or not heartbeats)
            ):
                break  # latest is set too: nothing older can change the update
        last_event = None
        if latest is not None:
            last_event = (latest[0], _epoch(latest[0]), latest[1], task_id, project_id)
        last_stored = events[-1][1][3]
        if agent_id == env_agent_id:
            agent_type = envelope.get("agent_type") or "general"
        else:
            agent_type = last_stored.get("agent_type") or "general"
        updates.append(
            AgentUpdate(
                agent_id=agent_id,
                agent_type=agent_type,
                agent_version=envelope.get("agent_version"),
                framework=envelope.get("framework"),
                runtime=envelope.get("runtime"),
                sdk_version=envelope.get("sdk_version"),
                environment=last_stored["environment"],
                group=last_stored["group"],
                first_seen=first_seen,
                last_seen=last_seen,
                last_heartbeat=last_heartbeat,
                last_event=last_event,
                stuck_threshold=threshold,
            )
        )
    return updates


def _epoch_key(item: tuple[str, float | None]) -> float:
    return item[1] if item[1] is not None else 0.0


def _stuck_threshold(payload: Any) -> int | None:
    data = payload.get("data") if isinstance(payload, dict) else None
    value = data.get("stuck_threshold") if isinstance(data, dict) else None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    ):
        return int(value)
    return None
