"""Queue records to wire dicts, and wire dicts to JSON bodies HiveBoard will accept.

Runs in the sender, never on the hot path. Pure functions and small stateful helpers with no
I/O. Everything here guarantees that nothing the SDK sends is rejected for its shape:

* ids become strings, ``duration_ms`` an int, oversized ids and summaries are cut to the
  server's limits;
* payload values that JSON cannot carry are converted one value at a time (datetime,
  Decimal, bytes, sets, dataclasses, arbitrary objects, NaN/inf, cycles), so one odd value
  never costs the rest of its event or batch;
* a payload over 32,768 bytes, measured as the server measures it (``json.dumps`` with
  ``ensure_ascii``), is shrunk and marked ``"_truncated": true``;
* an unknown event type is sent as ``custom`` with ``payload.original_type``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import enum
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from ._ids import TimestampFormatter, format_id, new_id_str, wall_offset_ns
from ._scrub import Scrubber
from ._task import Task
from ._track import ActionScope
from ._wire import (
    EVENT_TYPES,
    MAX_ENVIRONMENT_LEN,
    MAX_GROUP_LEN,
    MAX_ID_LEN,
    MAX_PAYLOAD_BYTES,
    MAX_SUMMARY_LEN,
    SEVERITIES,
    SEVERITY_DEFAULTS,
)

if TYPE_CHECKING:
    from ._agent import Agent


_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS
_TASK_KEYS = ("task_id", "project_id", "task_type", "task_run_id", "correlation_id")
#: ``encode_payload`` measures payloads whose compact JSON is longer than this exactly.
_SIZE_CHECKED_ABOVE = MAX_PAYLOAD_BYTES // 4
#: Cached action payload prefixes: at most this many, of at most this many bytes each.
_MAX_PREFIXES = 1024
_MAX_PREFIX_BYTES = 512
_ISSUE_SEVERITY = {"critical": "error", "high": "error", "medium": "warn", "low": "info"}


def _as_str(value: Any, limit: int = MAX_ID_LEN) -> str:
    text = value if type(value) is str else str(value)
    return text if len(text) <= limit else text[:limit]


def default_severity(event_type: str, payload: Mapping[str, Any] | None) -> str:
    """The severity HiveBoard's event schema gives an event that does not name one.

    By event type, then by payload kind where the schema says so: ``queue_snapshot`` is
    debug, a failed ``todo`` warn, a failed ``plan_step`` error, and an ``issue`` maps its
    own severity (critical/high → error, medium → warn, low → info).
    """
    severity = SEVERITY_DEFAULTS.get(event_type, "info")
    if event_type == "custom" and payload:
        kind = payload.get("kind")
        if kind is None:
            return severity
        if kind == "queue_snapshot":
            return "debug"
        if kind == "todo" or kind == "plan_step" or kind == "issue":
            data = payload.get("data")
            data = data if isinstance(data, Mapping) else {}
            if kind == "todo" and data.get("action") == "failed":
                severity = "warn"
            elif kind == "plan_step" and data.get("action") == "failed":
                severity = "error"
            elif kind == "issue" and data.get("action") != "resolved":
                severity = _ISSUE_SEVERITY.get(str(data.get("severity")), severity)
    return severity


#: Verdicts cached per task fields fragment / action prefix key: at most this many.
_MAX_VERDICTS = 4096


class RecordEncoder:
    """Turns queued records into wire event JSON. One per sender; not thread-safe.

    With a ``scrubber``, :meth:`encode_checked` also says whether the event is clean: the
    scrubber's verdict on the values the event is made of (its payload, exception message,
    action name, the task's text fields, as they are sent), so that a clean event needs no
    decoding to be scrubbed. A scrubber whose verdicts are not exact (extra patterns, text
    fields other than the task's) gives no verdict: every event is then "not known clean".
    """

    def __init__(self, scrubber: Scrubber | None = None) -> None:
        self._ts = TimestampFormatter()
        self._offset = wall_offset_ns()
        self._prefixes: dict[Any, str] = {}
        check: Scrubber | None = None
        if scrubber is not None:
            fields = scrubber.checks_text_fields
            if fields is not None and set(fields) <= set(_TASK_KEYS):
                check = scrubber
        self._check = check
        self._text_fields = () if check is None else tuple(check.checks_text_fields or ())
        #: The verdict of the event being encoded (see :meth:`encode_checked`).
        self._clean = False
        self._fields_clean: dict[str, bool] = {}
        #: Task ids holding no scrubber trigger (see ``Scrubber.trigger_free``): the task's
        #: summaries ("Task {id} started") need no scan of their own.
        self._ids_free: set[str] = set()
        self._prefix_clean: dict[Any, bool] = {}

    def recalibrate(self) -> None:
        """Re-read wall minus monotonic time (follows NTP adjustments between batches)."""
        self._offset = wall_offset_ns()

    def _task_fields(self, task: Task) -> str:
        """The task's wire fields as a JSON fragment (``"task_id":"t1",...,``), cached."""
        fields = task._fields
        if fields is None:
            check = self._check
            text_fields = self._text_fields
            verdict = True
            parts = []
            for key in _TASK_KEYS:
                value = getattr(task, key)
                if value is None:
                    continue
                text = _as_str(value)
                parts.append(f'"{key}":{_jstr(text)},')
                if check is not None and verdict and key in text_fields:
                    sent = _utf8_safe(text)  # as sent (see _jstr)
                    if key == "task_id" and check.trigger_free(sent):
                        self._remember_free(sent)  # clean, and so are its summaries
                    else:
                        verdict = check.clean_text(sent)
            fields = task._fields = "".join(parts)
            if check is not None:
                self._remember_fields(fields, verdict)
        return fields

    def _remember_free(self, task_id: str) -> None:
        free = self._ids_free
        if len(free) >= _MAX_VERDICTS:
            free.clear()
        free.add(task_id)

    def _remember_fields(self, fields: str, verdict: bool) -> None:
        if len(self._fields_clean) >= _MAX_VERDICTS:
            self._fields_clean.clear()
        self._fields_clean[fields] = verdict

    def encode(self, rec: Any) -> tuple[Agent, bytes] | None:
        """Return ``(agent, event JSON)`` for one queued record, or None for a non-event.

        A scope or task seen for the first time gives its opening event, the second time its
        closing one (the record's ``opened`` flag remembers which).
        """
        kind = type(rec)
        if kind is ActionScope:
            ended = rec.opened
            rec.opened = True
            return self._scope(rec, ended)
        if kind is Task:
            ended = rec.opened
            rec.opened = True
            return self._task(rec, ended)
        if kind is tuple:
            return self._event(rec)
        return None

    @property
    def gives_verdicts(self) -> bool:
        """True when :meth:`encode_checked` can find events clean (a scrubber with exact
        verdicts was given); False when it always says "not known clean"."""
        return self._check is not None

    def encode_checked(self, rec: Any) -> tuple[Agent, bytes, bool] | None:
        """:meth:`encode`, also giving the scrubber's verdict: True when scrubbing the
        returned JSON would replace nothing (then ``Scrubber.scrub_encoded`` would return
        it as it is); False when that is not known (scrub it). Always False without a
        scrubber that gives verdicts. Raises what :meth:`encode` raises.
        """
        self._clean = self._check is not None
        try:
            out = self.encode(rec)
            clean = self._clean
        finally:
            self._clean = False
        if out is None:
            return None
        return out[0], out[1], clean

    def _task_clean(self, task: Task, fields: str) -> bool:
        """Whether the task's text fields, as sent (``fields``), hold nothing to replace."""
        verdict = self._fields_clean.get(fields)
        if verdict is None:
            check = self._check
            assert check is not None
            sent = orjson.loads(f"{{{fields[:-1]}}}") if fields else {}
            verdict = all(
                check.clean_text(value)
                for name in self._text_fields
                if type(value := sent.get(name)) is str
            )
            self._remember_fields(fields, verdict)
        return verdict

    def _action_clean(self, s: ActionScope) -> bool:
        """The verdict on an action's own payload keys (name, function), cached per name."""
        check = self._check
        assert check is not None
        name, function = s.name, s.function
        if type(name) is not str or (function is not None and type(function) is not str):
            return check.clean_payload(_action_payload(s))
        key: Any = name if function is None else (name, function)
        verdict = self._prefix_clean.get(key)
        if verdict is None:
            verdict = check.clean_payload(_action_payload(s))
            if len(self._prefix_clean) >= _MAX_VERDICTS:
                self._prefix_clean.clear()
            self._prefix_clean[key] = verdict
        return verdict

    def _payload_json(self, payload: dict[str, Any]) -> bytes:
        """``encode_payload(payload)``, folding the verdict on it into ``_clean``."""
        data, exact = _encode_payload(payload)
        check = self._check
        if check is not None and self._clean:
            self._clean = exact and check.clean_payload(payload)
        return data

    def encode_phase(self, rec: Any, ended: bool) -> tuple[Agent, bytes] | None:
        """Like :meth:`encode`, with the phase of a scope or task given by the caller."""
        kind = type(rec)
        if kind is ActionScope:
            return self._scope(rec, ended)
        if kind is Task:
            return self._task(rec, ended)
        if kind is tuple:
            return self._event(rec)
        return None

    # The event JSON is written directly: every field but the payload is either one of our
    # own ASCII strings (ids, timestamps, event types, severities) or escaped with orjson
    # (task fields, status, parent_event_id); only the payload goes through orjson as data.

    def _scope(self, s: ActionScope, ended: bool) -> tuple[Agent, bytes]:
        task = s.task
        if task is None:
            fields = ""
        else:
            cached = task._fields
            fields = cached if cached is not None else self._task_fields(task)
            if self._clean:
                self._clean = self._task_clean(task, fields)
        aid = format_id(s.action_id)
        parent = s.parent
        if parent is not None:
            aid += f'","parent_action_id":"{format_id(parent.action_id)}'
        # The timestamp, from the formatter's cached millisecond when it is the same one.
        t = (s.t1 if ended else s.t0) + self._offset
        ts = self._ts
        stamp = ts.text if ts.lo <= t < ts.hi else ts(t)
        if not ended:
            pre = self._action_prefix(s.name, s.function)
            text = (
                f'{{"event_id":"{new_id_str()}","timestamp":"{stamp}'
                f'","event_type":"action_started","severity":"info",{fields}"action_id":"{aid}",'
                '"payload":'
            )
            if pre is not None:
                if self._clean:
                    self._clean = self._action_clean(s)
                return s.agent, f"{text}{pre}}}}}".encode()
            return s.agent, text.encode() + self._payload_json(_action_payload(s)) + b"}"
        extra = s.payload
        if s.exc_type is None:
            text = (
                f'{{"event_id":"{new_id_str()}","timestamp":"{stamp}'
                f'","event_type":"action_completed","severity":"info",{fields}"action_id":"{aid}'
                f'","status":"success","duration_ms":{(s.t1 - s.t0) // 1_000_000},"payload":'
            )
            pre = self._action_prefix(s.name, s.function)
            if pre is not None:
                if not extra:
                    if self._clean:
                        self._clean = self._action_clean(s)
                    return s.agent, f"{text}{pre}}}}}".encode()
                if (
                    type(extra) is dict
                    and "action_name" not in extra
                    and "function" not in extra
                    and "summary" not in extra
                ):
                    rest = _json_rest(extra)  # bytes: a large non-ASCII payload is not
                    if rest is not None:  # decoded and encoded again
                        if self._clean:  # the keys are disjoint: each part on its own
                            check = self._check
                            assert check is not None
                            self._clean = self._action_clean(s) and check.clean_payload(extra)
                        return s.agent, f"{text}{pre},".encode() + rest + b"}"
            payload = _action_payload(s)
        else:
            text = (
                f'{{"event_id":"{new_id_str()}","timestamp":"{stamp}'
                f'","event_type":"action_failed","severity":"error",{fields}"action_id":"{aid}'
                f'","status":"failure","duration_ms":{(s.t1 - s.t0) // 1_000_000},"payload":'
            )
            payload = _action_payload(s)
            _add_exception(payload, s.exc_type, s.exc_msg)
        if extra:
            _merge(payload, extra)
        return s.agent, text.encode() + self._payload_json(payload) + b"}"

    def _action_prefix(self, name: Any, function: Any) -> str | None:
        """The action's own payload as JSON without its closing brace (``{"action_name":"a"``
        or ``{"action_name":"a","function":"mod.fn"``), cached; None unless both are exact
        strings (the cache tells keys apart by equality, and 1 == 1.0 == True) and the JSON
        is at most ``_MAX_PREFIX_BYTES`` long.
        """
        if type(name) is not str:
            return None
        if function is None:
            key: Any = name
        elif type(function) is str:
            key = (name, function)
        else:
            return None
        pre = self._prefixes.get(key)
        if pre is None:
            payload = {"action_name": name}
            if function is not None:
                payload["function"] = function
            try:
                data = orjson.dumps(payload)
            except orjson.JSONEncodeError:  # lone surrogates: encode_payload() cleans them
                return None
            if len(data) > _MAX_PREFIX_BYTES:
                return None
            if len(self._prefixes) >= _MAX_PREFIXES:
                self._prefixes.clear()
            pre = self._prefixes[key] = data[:-1].decode()
        return pre

    def _task(self, t: Task, ended: bool) -> tuple[Agent, bytes]:
        fields = self._task_fields(t)
        if self._clean:
            self._clean = self._task_clean(t, fields)
        if ended:
            extra = t.payload
            if not t.failed:
                head = '","event_type":"task_completed","severity":"info",'
                payload: dict[str, Any] = {"summary": f"Task {t.task_id} completed"}
            else:
                head = '","event_type":"task_failed","severity":"error",'
                payload = {"summary": f"Task {t.task_id} failed"}
                if t.exc_type is not None:
                    _add_exception(payload, t.exc_type, t.exc_msg)
                    extra = _NOT_PLAIN  # the exception's message: the whole payload is walked
            if t.payload:
                _merge(payload, t.payload)
            text = (
                f'{{"event_id":"{new_id_str()}","timestamp":"{self._ts(t.t1 + self._offset)}'
                f'{head}{fields}"status":{_jstr(_as_str(t.status))},'
                f'"duration_ms":{(t.t1 - t.t0) // 1_000_000},'
            )
        else:
            extra = t.start_payload
            payload = {"summary": f"Task {t.task_id} started"}
            if extra:
                _merge(payload, extra)
            text = (
                f'{{"event_id":"{new_id_str()}","timestamp":"{self._ts(t.t0 + self._offset)}'
                f'","event_type":"task_started","severity":"info",{fields}'
            )
        if self._clean and t.task_id in self._ids_free:
            data = self._task_payload_json(payload, extra)
        else:
            data = self._payload_json(payload)
        return t.agent, b'%s"payload":%s}' % (text.encode(), data)

    def _task_payload_json(self, payload: dict[str, Any], extra: Any) -> bytes:
        """``encode_payload`` of a task event's payload, for a task whose id holds no
        scrubber trigger: its summary is clean without a scan (``Scrubber.trigger_free``),
        so the verdict is the one on what was merged into it (``extra``, the task's own
        payload, which may replace the summary). Anything but a plain ``dict`` (or None) is
        walked whole, merged."""
        data, exact = _encode_payload(payload)
        check = self._check
        assert check is not None
        if not exact:
            self._clean = False
        elif extra:
            self._clean = check.clean_payload(extra if type(extra) is dict else payload)
        return data

    def _event(self, rec: tuple[Any, ...]) -> tuple[Agent, bytes]:
        agent, t_ns, event_type, task, action_id, payload, severity, parent = rec
        if type(event_type) is not str or event_type not in EVENT_TYPES:
            original = event_type if type(event_type) is str else str(event_type)
            payload = dict(payload) if isinstance(payload, Mapping) else {}
            payload["original_type"] = original
            event_type = "custom"
        elif payload is not None and not isinstance(payload, dict):
            payload = dict(payload) if isinstance(payload, Mapping) else {"value": payload}
        if severity not in SEVERITIES:
            severity = default_severity(event_type, payload)
        t = t_ns + self._offset
        ts = self._ts
        stamp = ts.text if ts.lo <= t < ts.hi else ts(t)
        if task is None:
            fields = ""
        else:
            cached = task._fields
            fields = cached if cached is not None else self._task_fields(task)
            if self._clean:
                self._clean = self._task_clean(task, fields)
        aid = "" if action_id is None else f'"action_id":"{format_id(action_id)}",'
        pid = "" if parent is None else f'"parent_event_id":{_jstr(_as_str(parent))},'
        text = (
            f'{{"event_id":"{new_id_str()}","timestamp":"{stamp}","event_type":"{event_type}",'
            f'"severity":"{severity}",{fields}{aid}{pid}'
        )
        if payload is None:
            return agent, f"{text[:-1]}}}".encode()
        return agent, f'{text}"payload":'.encode() + self._payload_json(payload) + b"}"


def _jstr(value: str) -> str:
    """``value`` as a JSON string literal (lone surrogates become ``?``)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_utf8_safe(value)).decode()


def _utf8_safe(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates) replaced by ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _action_payload(s: ActionScope) -> dict[str, Any]:
    """The payload keys of an action's own (before exception keys and ``set_payload`` data)."""
    payload: dict[str, Any] = {"action_name": s.name}
    if s.function is not None:
        payload["function"] = s.function
    return payload


def _json_rest(extra: dict[str, Any]) -> bytes | None:
    """The JSON of ``extra`` (a non-empty dict) without its opening brace, to follow an
    action's payload prefix (``RecordEncoder._action_prefix``) and a comma: together, the
    bytes ``encode_payload`` gives the prefix's dict updated with ``extra`` when the two share
    no key and ``extra`` has no "summary". None when ``encode_payload`` would have more to do
    (fallbacks for odd values, the exact size measure).
    """
    try:
        data = orjson.dumps(extra, default=_default, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    if len(data) + _MAX_PREFIX_BYTES > _SIZE_CHECKED_ABOVE:
        return None
    return data[1:]


#: Stands for a merged payload that must be walked whole (see ``_task_payload_json``).
_NOT_PLAIN: Any = ("not plain",)


def _merge(payload: dict[str, Any], extra: Any) -> None:
    """Merge ``set_payload`` data into an event payload; a non-mapping lands under "value"."""
    if type(extra) is dict or isinstance(extra, Mapping):
        payload.update(extra)
    else:
        payload["value"] = extra


def _add_exception(payload: dict[str, Any], exc_type: type[BaseException], msg: str) -> None:
    payload["exception_type"] = exc_type.__name__
    payload["exception_message"] = msg
    if issubclass(exc_type, asyncio.CancelledError):
        payload["cancelled"] = True


# -- JSON ---------------------------------------------------------------------------------


def _default(obj: Any) -> Any:
    """orjson fallback for values it cannot encode natively."""
    if isinstance(obj, Decimal):
        return float(obj) if obj.is_finite() else None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        return list(obj)
    return _safe_repr(obj)


def _safe_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<unrepresentable {type(obj).__name__}>"
    return text if len(text) <= 1000 else text[:1000] + "…"


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as JSON; falls back to a value-by-value conversion. Never raises."""
    try:
        return orjson.dumps(obj, default=_default, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(json_safe(obj), option=_ORJSON_OPTS)


def json_safe(obj: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """Return a copy of ``obj`` made of JSON types only, converting value by value.

    Cycles become ``"<cycle>"``, integers beyond 64 bits strings, NaN/inf null, lone
    surrogates in strings ``?``, unknown objects their (cut) repr. Never raises.
    """
    try:
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, str):
            return _utf8_safe(obj)
        if isinstance(obj, int):
            return obj if -(2**63) <= obj < 2**64 else str(obj)
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else None
        if _depth > 100:
            return "<too deep>"
        if id(obj) in _seen:
            return "<cycle>"
        seen = _seen | {id(obj)}
        if isinstance(obj, Mapping):
            return {
                _utf8_safe(k if isinstance(k, str) else str(k)): json_safe(v, _depth + 1, seen)
                for k, v in obj.items()
            }
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [json_safe(v, _depth + 1, seen) for v in obj]
        if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
            return obj.isoformat()
        if isinstance(obj, enum.Enum):
            return json_safe(obj.value, _depth + 1, seen)
        if isinstance(obj, uuid.UUID):
            return str(obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {
                f.name: json_safe(getattr(obj, f.name, None), _depth + 1, seen)
                for f in dataclasses.fields(obj)
            }
        converted = _default(obj)
        if isinstance(converted, str):
            return converted
        return json_safe(converted, _depth + 1, seen)
    except Exception:
        return f"<unserializable {type(obj).__name__}>"


def server_payload_size(payload: Any) -> int:
    """The payload's size as HiveBoard measures it: ``len(json.dumps(payload))``."""
    return len(json.dumps(payload))


def _fits(payload: Any) -> bool:
    return server_payload_size(payload) <= MAX_PAYLOAD_BYTES


def shrink_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Cut a JSON-safe payload until HiveBoard accepts its size; mark it ``_truncated``.

    Long strings are cut first (keeping every key); if that is not enough the payload is
    replaced by its kind, summary, action name and a preview of the original text.
    """
    original = server_payload_size(payload)
    limit = 4096
    while limit >= 64:
        cut: dict[str, Any] = dict(_cut_strings(payload, limit))
        cut["_truncated"] = True
        cut["_original_size"] = original
        if _fits(cut):
            return cut
        limit //= 4
    small: dict[str, Any] = {"_truncated": True, "_original_size": original}
    for key in ("kind", "action_name", "summary", "exception_type", "exception_message"):
        if key in payload:
            small[key] = _cut_strings(payload[key], 512)
    text = json.dumps(payload)
    small["preview"] = text[:4000]
    return small


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, dict):
        return {str(k): _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, limit) for v in value]
    return value


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Encode an event payload as JSON that HiveBoard accepts. Never raises.

    The summary is cut to 512 characters; values JSON cannot carry are converted one by
    one; a payload over 32,768 bytes as the server measures it is shrunk (``_truncated``).
    """
    return _encode_payload(payload)[0]


def _encode_payload(payload: dict[str, Any]) -> tuple[bytes, bool]:
    """:func:`encode_payload`, and whether the JSON is orjson's own of ``payload`` as given
    (False: the summary was cut, a value converted one by one, or the size measured)."""
    exact = True
    summary = payload.get("summary")
    if summary is not None and (type(summary) is not str or len(summary) > MAX_SUMMARY_LEN):
        payload = dict(payload)
        payload["summary"] = _as_str(summary, MAX_SUMMARY_LEN)
        exact = False
    try:
        data = orjson.dumps(payload, default=_default, option=_ORJSON_OPTS)
        safe: Any = None
    except (TypeError, orjson.JSONEncodeError):
        safe = json_safe(payload)
        data = orjson.dumps(safe, option=_ORJSON_OPTS)
        exact = False
    # ensure_ascii JSON is at most 3x the UTF-8 compact size (6-char escapes for 2-byte
    # characters, 12 for 4-byte ones, one space per separator), so only large payloads
    # need the exact measure.
    if len(data) > _SIZE_CHECKED_ABOVE:
        exact = False
        if safe is None:
            safe = orjson.loads(data)
        if not _fits(safe):
            data = orjson.dumps(shrink_payload(safe), option=_ORJSON_OPTS)
    return data, exact


def encode_envelope(agent: Agent) -> bytes:
    """Encode an agent's envelope, cutting fields to HiveBoard's limits."""
    env = dict(agent.envelope)
    env["agent_id"] = _as_str(env["agent_id"])
    for key, limit in (("environment", MAX_ENVIRONMENT_LEN), ("group", MAX_GROUP_LEN)):
        if env.get(key) is not None:
            env[key] = _as_str(env[key], limit)
    for key in ("agent_type", "agent_version", "framework"):
        if env.get(key) is not None:
            env[key] = _as_str(env[key])
    return dumps(env)


def build_body(envelope: bytes, events: list[bytes]) -> bytes:
    """Join an encoded envelope and encoded events into one ingest request body."""
    return b'{"envelope":' + envelope + b',"events":[' + b",".join(events) + b"]}"
