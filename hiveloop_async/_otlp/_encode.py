"""Finished spans to OTLP/HTTP request bodies: OTLP/JSON (orjson) and OTLP/protobuf.

Both give one ``ExportTraceServiceRequest`` for a list of spans, grouped by resource (in
order of first appearance) with one instrumentation scope. OTLP/JSON follows the OTLP
specification's JSON mapping: lowerCamelCase field names, trace and span ids as hex
strings (not base64), 64-bit integers as decimal strings, enums as their integer values,
fields with default values left out. Protobuf is written by :mod:`._protobuf` (a
hand-rolled wire encoder, no dependency); :func:`encode_protobuf_official` builds the same
request with the ``opentelemetry-proto`` classes, when installed, as the reference the tests
compare it with.

Pure functions; :func:`encode_protobuf` raises ``ValueError`` for values protobuf cannot
carry (the sender drops such a batch as ``serialization``), and
:func:`encode_protobuf_official` :class:`HiveLoopConfigError` when ``opentelemetry-proto``
is not installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .._exceptions import HiveLoopConfigError
from ._protobuf import export_request
from ._spans import (
    SCOPE_NAME,
    SCOPE_VERSION,
    SEMCONV_SCHEMA_URL,
    AttrValue,
    Resource,
    Span,
)

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"


def _by_resource(spans: Iterable[Span]) -> list[tuple[Resource, list[Span]]]:
    groups: dict[int, tuple[Resource, list[Span]]] = {}
    for span in spans:
        key = id(span.resource)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (span.resource, [])
        group[1].append(span)
    return list(groups.values())


# -- OTLP/JSON ---------------------------------------------------------------------------------


def _json_value(value: AttrValue) -> dict[str, Any]:
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        return {"intValue": str(value)}
    if kind is float:
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_json_value(v) for v in value]}}
    return {"stringValue": str(value)}


#: ``{"key":"<key>","value":{`` by key, for :func:`_json_attrs`; bounded.
_json_heads: dict[str, bytes] = {}
_MAX_JSON_HEADS = 4096
_dumps = orjson.dumps


def _json_head(key: str) -> bytes:
    head = b'{"key":' + _dumps(key) + b',"value":{'
    if len(_json_heads) >= _MAX_JSON_HEADS:
        _json_heads.clear()
    _json_heads[key] = head
    return head


def _json_attrs(attrs: dict[str, AttrValue]) -> orjson.Fragment:
    """The ``KeyValue`` list of ``attrs``, written as JSON text directly (one
    ``orjson.dumps`` per string or float value, the rest by hand): what
    ``[{"key": k, "value": _json_value(v)}, ...]`` serializes to, without two dicts per
    attribute for the garbage collector."""
    heads = _json_heads
    parts: list[bytes] = []
    append = parts.append
    for k, v in attrs.items():
        head = heads.get(k) or _json_head(k)
        kind = type(v)
        if kind is str:
            append(head + b'"stringValue":' + _dumps(v) + b"}}")
        elif kind is int:
            append(head + b'"intValue":"%d"}}' % v)  # type: ignore[str-format]
        elif kind is bool:
            append(head + (b'"boolValue":true}}' if v else b'"boolValue":false}}'))
        elif kind is float:
            append(head + b'"doubleValue":' + _dumps(v) + b"}}")
        else:
            append(head + _dumps(_json_value(v))[1:] + b"}")
    return orjson.Fragment(b"[" + b",".join(parts) + b"]") if parts else _EMPTY_LIST


_EMPTY_LIST = orjson.Fragment(b"[]")


def _json_span(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
    }
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    if span.attributes:
        out["attributes"] = _json_attrs(span.attributes)
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        events = []
        for ev in span.events:
            item: dict[str, Any] = {"timeUnixNano": str(ev.time_ns), "name": ev.name}
            if ev.attributes:
                item["attributes"] = _json_attrs(ev.attributes)
            if ev.dropped_attributes:
                item["droppedAttributesCount"] = ev.dropped_attributes
            events.append(item)
        out["events"] = events
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        out["links"] = [
            {"traceId": ln.trace_id, "spanId": ln.span_id, "attributes": _json_attrs(ln.attributes)}
            for ln in span.links
        ]
    status: dict[str, Any] = {}
    if span.status_code:
        status["code"] = span.status_code
    if span.status_message:
        status["message"] = span.status_message
    if status:
        out["status"] = status
    return out


def encode_json(spans: Sequence[Span]) -> bytes:
    """An OTLP/JSON ``ExportTraceServiceRequest`` carrying ``spans``. Raises nothing."""
    resource_spans = [
        {
            "resource": {"attributes": _json_attrs(resource.attributes)},
            "scopeSpans": [
                {
                    "scope": {"name": SCOPE_NAME, "version": SCOPE_VERSION},
                    "spans": [_json_span(s) for s in group],
                    "schemaUrl": SEMCONV_SCHEMA_URL,
                }
            ],
            "schemaUrl": SEMCONV_SCHEMA_URL,
        }
        for resource, group in _by_resource(spans)
    ]
    return orjson.dumps({"resourceSpans": resource_spans})


# -- OTLP/protobuf -----------------------------------------------------------------------------

_pb: Any = None


def protobuf_available() -> bool:
    """Whether OTLP/protobuf can be written: always, since the encoder is our own (kept for
    the settings' default protocol, which is protobuf when available). Raises nothing."""
    return True


def official_protobuf_available() -> bool:
    """Whether ``opentelemetry-proto`` can be imported (imports it). Raises nothing."""
    try:
        _proto()
    except HiveLoopConfigError:
        return False
    return True


def _proto() -> Any:
    """The ``opentelemetry-proto`` modules, imported once."""
    global _pb
    if _pb is None:
        try:
            from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
            from opentelemetry.proto.trace.v1 import trace_pb2
        except ImportError as exc:
            raise HiveLoopConfigError(
                "the reference protobuf encoding needs opentelemetry-proto: "
                "pip install opentelemetry-proto"
            ) from exc
        _pb = (trace_service_pb2, trace_pb2)
    return _pb


def _pb_value(target: Any, value: AttrValue) -> None:
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        target.int_value = value
    elif kind is float:
        target.double_value = value
    elif isinstance(value, list):
        values = target.array_value.values
        for item in value:
            _pb_value(values.add(), item)
    else:
        target.string_value = str(value)


def _pb_attrs(target: Any, attrs: dict[str, AttrValue]) -> None:
    add = target.add
    for key, value in attrs.items():
        kv = add()
        kv.key = key
        kind = type(value)
        if kind is str:
            kv.value.string_value = value
        elif kind is int:
            kv.value.int_value = value
        else:
            _pb_value(kv.value, value)


def encode_protobuf(spans: Sequence[Span]) -> bytes:
    """An OTLP/protobuf ``ExportTraceServiceRequest`` carrying ``spans`` (hand-rolled, see
    :mod:`._protobuf`). Raises ``ValueError`` for an int outside int64 or a negative time."""
    return export_request(
        [(resource.attributes, group) for resource, group in _by_resource(spans)],
        scope_name=SCOPE_NAME,
        scope_version=SCOPE_VERSION,
        schema_url=SEMCONV_SCHEMA_URL,
    )


def encode_protobuf_official(spans: Sequence[Span]) -> bytes:
    """:func:`encode_protobuf` with the ``opentelemetry-proto`` message classes: the reference
    the hand-rolled encoder is tested against (and the encoder before it).

    Raises :class:`HiveLoopConfigError` if ``opentelemetry-proto`` is not installed.
    """
    trace_service_pb2, _trace_pb2 = _proto()
    request = trace_service_pb2.ExportTraceServiceRequest()
    fromhex = bytes.fromhex
    for resource, group in _by_resource(spans):
        rs = request.resource_spans.add()
        rs.schema_url = SEMCONV_SCHEMA_URL
        _pb_attrs(rs.resource.attributes, resource.attributes)
        ss = rs.scope_spans.add()
        ss.schema_url = SEMCONV_SCHEMA_URL
        ss.scope.name = SCOPE_NAME
        ss.scope.version = SCOPE_VERSION
        out = ss.spans
        for span in group:
            pb = out.add()
            pb.trace_id = fromhex(span.trace_id)
            pb.span_id = fromhex(span.span_id)
            if span.parent_span_id:
                pb.parent_span_id = fromhex(span.parent_span_id)
            pb.name = span.name
            pb.kind = span.kind
            pb.start_time_unix_nano = span.start_ns
            pb.end_time_unix_nano = span.end_ns
            _pb_attrs(pb.attributes, span.attributes)
            pb.dropped_attributes_count = span.dropped_attributes
            for ev in span.events:
                pe = pb.events.add()
                pe.time_unix_nano = ev.time_ns
                pe.name = ev.name
                _pb_attrs(pe.attributes, ev.attributes)
                pe.dropped_attributes_count = ev.dropped_attributes
            pb.dropped_events_count = span.dropped_events
            for ln in span.links:
                pl = pb.links.add()
                pl.trace_id = fromhex(ln.trace_id)
                pl.span_id = fromhex(ln.span_id)
                _pb_attrs(pl.attributes, ln.attributes)
            if span.status_code:
                pb.status.code = span.status_code
            if span.status_message:
                pb.status.message = span.status_message
    data: bytes = request.SerializeToString()
    return data


def encode(spans: Sequence[Span], protocol: str) -> tuple[bytes, str]:
    """``(body, content type)`` of ``spans`` for ``protocol`` ("http/json" or
    "http/protobuf"). Raises ``ValueError`` as :func:`encode_protobuf`."""
    if protocol == "http/json":
        return encode_json(spans), CONTENT_TYPE_JSON
    return encode_protobuf(spans), CONTENT_TYPE_PROTOBUF
