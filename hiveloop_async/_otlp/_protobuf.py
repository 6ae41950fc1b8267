"""The protobuf wire format of the few OTLP trace messages we send, written by hand.

:func:`export_request` gives the bytes of one ``ExportTraceServiceRequest``
(``opentelemetry/proto/collector/trace/v1/trace_service.proto``) exactly as the official
``opentelemetry-proto`` classes serialize the same message: fields in field-number order,
proto3 defaults left out (a ``oneof`` member of ``AnyValue`` is always written, as its
presence is the value's type). Messages written: ``ResourceSpans``, ``Resource``,
``ScopeSpans``, ``InstrumentationScope``, ``Span``, ``Span.Event``, ``Span.Link``,
``Status``, ``KeyValue``, ``AnyValue`` and ``ArrayValue``. The tests decode these bytes with
the official classes and compare them with the official encoding of the same spans.

Wire format: varints (unsigned LEB128; a negative ``int64`` as its 64-bit two's complement,
ten bytes), length-delimited fields (``bytes``, ``string``, sub-messages: tag, varint
length, content) and little-endian ``fixed64`` times. Pure functions, no dependency beyond
the standard library; they raise ``ValueError`` (an int outside int64, a negative time),
``struct.error`` or ``UnicodeEncodeError`` for values the official classes refuse too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from ._spans import Attributes, AttrValue, Link, Span, SpanEvent

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_U64: Final = 1 << 64

_pack_fixed64 = struct.Struct("<Q").pack
_pack_double = struct.Struct("<d").pack


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Varints of 0 .. 16383 (every length and count we usually write), precomputed.
_VARINTS: Final = [_varint_slow(i) for i in range(1 << 14)]
_NVARINTS: Final = len(_VARINTS)


def varint(n: int) -> bytes:
    """The varint of ``n`` (an ``int64``/``uint64``; negative as two's complement)."""
    if 0 <= n < _NVARINTS:
        return _VARINTS[n]
    if n < 0:
        if n < _INT64_MIN:
            raise ValueError(f"Value out of range: {n}")
        n += _U64
    elif n > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"Value out of range: {n}")
    return _varint_slow(n)


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: ``tag``, the varint length of ``data``, ``data``."""
    n = len(data)
    return tag + (_VARINTS[n] if n < _NVARINTS else _varint_slow(n)) + data


# -- AnyValue / KeyValue -----------------------------------------------------------------------

#: ``KeyValue.key`` fields (tag, length, UTF-8), by key; bounded.
_key_cache: dict[str, bytes] = {}
#: Whole ``KeyValue`` messages (without their own tag) of short string values; bounded.
_kv_cache: dict[tuple[str, str], bytes] = {}
_MAX_CACHED: Final = 4096
_MAX_CACHED_VALUE: Final = 64


def _any_value(value: AttrValue) -> bytes:
    """An ``AnyValue`` message, as ``opentelemetry-proto``'s ``_pb_value`` sets it."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode())  # type: ignore[union-attr]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + varint(value)  # type: ignore[arg-type]
    if kind is float:
        return b"\x21" + _pack_double(value)
    if isinstance(value, list):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(v)) for v in value]))
    return _field(b"\x0a", str(value).encode())


def _key(key: str) -> bytes:
    enc = _key_cache.get(key)
    if enc is None:
        enc = _field(b"\x0a", key.encode()) if key else b""
        if len(_key_cache) >= _MAX_CACHED:
            _key_cache.clear()
        _key_cache[key] = enc
    return enc


def _key_value(key: str, value: AttrValue) -> bytes:
    """A ``KeyValue`` message (content only)."""
    if type(value) is str:
        pair = (key, value)
        enc = _kv_cache.get(pair)
        if enc is not None:
            return enc
        enc = _key(key) + _field(b"\x12", _field(b"\x0a", value.encode()))
        if len(value) <= _MAX_CACHED_VALUE:
            if len(_kv_cache) >= _MAX_CACHED:
                _kv_cache.clear()
            _kv_cache[pair] = enc
        return enc
    return _key(key) + _field(b"\x12", _any_value(value))


#: One byte's varint, by value (0 .. 127).
_BYTE: Final = [bytes((i,)) for i in range(128)]

#: ``Span.attributes`` field heads by key: for a string value of ``n`` UTF-8 bytes,
#: ``heads[n]`` is everything before those bytes (tag, length, ``KeyValue.key``, the value's
#: tag and lengths), for every ``n`` that keeps each length one byte; ``heads[-1]`` is the head
#: of an int value from 0 to 127 (its varint byte follows). Unique values (task ids, event
#: ids) then cost no cache entry of their own; the keys are few. Bounded.
_span_heads: dict[str, list[bytes]] = {}
_MAX_HEAD_KEYS: Final = 1024


def _heads(key: str) -> list[bytes]:
    """The ``_span_heads`` entry of ``key``, made and remembered."""
    kenc = _key(key)
    klen = len(kenc)
    room = max(-1, 123 - klen)  # the largest n with klen + n + 4 <= 127
    heads = [
        b"\x4a" + _BYTE[klen + n + 4] + kenc + b"\x12" + _BYTE[n + 2] + b"\x0a" + _BYTE[n]
        for n in range(room + 1)
    ]
    heads.append(b"\x4a" + _BYTE[klen + 4] + kenc + b"\x12\x02\x18" if room >= 0 else b"")
    if len(_span_heads) >= _MAX_HEAD_KEYS:
        _span_heads.clear()
    _span_heads[key] = heads
    return heads


def _attributes(tag: bytes, attrs: Attributes) -> list[bytes]:
    """Each attribute as a ``KeyValue`` field with ``tag``."""
    return [_field(tag, _key_value(k, v)) for k, v in attrs.items()]


# -- Span --------------------------------------------------------------------------------------


def _event(ev: SpanEvent) -> bytes:
    parts = []
    if ev.time_ns:
        parts.append(b"\x09" + _pack_fixed64(ev.time_ns))
    if ev.name:
        parts.append(_field(b"\x12", ev.name.encode()))
    if ev.attributes:
        parts.extend(_attributes(b"\x1a", ev.attributes))
    if ev.dropped_attributes:
        parts.append(b"\x20" + varint(ev.dropped_attributes))
    return b"".join(parts)


def _link(ln: Link) -> bytes:
    parts = [
        _field(b"\x0a", bytes.fromhex(ln.trace_id)),
        _field(b"\x12", bytes.fromhex(ln.span_id)),
    ]
    if ln.attributes:
        parts.extend(_attributes(b"\x22", ln.attributes))
    return b"".join(parts)


def span(s: Span) -> bytes:
    """One ``Span`` message (content only, without its own tag and length)."""
    fromhex = bytes.fromhex
    parts = [b"\x0a\x10" + fromhex(s.trace_id), b"\x12\x08" + fromhex(s.span_id)]
    if s.parent_span_id:
        parts.append(b"\x22\x08" + fromhex(s.parent_span_id))
    if s.name:
        parts.append(_field(b"\x2a", s.name.encode()))
    if s.kind:
        parts.append(b"\x30" + varint(s.kind))
    if s.start_ns:
        parts.append(b"\x39" + _pack_fixed64(s.start_ns))
    if s.end_ns:
        parts.append(b"\x41" + _pack_fixed64(s.end_ns))
    if s.attributes:
        all_heads = _span_heads
        append = parts.append
        for k, v in s.attributes.items():
            kind = type(v)
            if kind is str:
                heads = all_heads.get(k) or _heads(k)
                data = v.encode()  # type: ignore[union-attr]
                n = len(data)
                if n < len(heads) - 1:
                    append(heads[n])
                    append(data)
                    continue
            elif kind is int and 0 <= v < 128:  # type: ignore[operator]
                heads = all_heads.get(k) or _heads(k)
                if len(heads) > 1:
                    append(heads[-1])
                    append(_BYTE[v])  # type: ignore[index]
                    continue
            append(_field(b"\x4a", _key_value(k, v)))
    if s.dropped_attributes:
        parts.append(b"\x50" + varint(s.dropped_attributes))
    for ev in s.events:
        parts.append(_field(b"\x5a", _event(ev)))
    if s.dropped_events:
        parts.append(b"\x60" + varint(s.dropped_events))
    for ln in s.links:
        parts.append(_field(b"\x6a", _link(ln)))
    if s.status_code or s.status_message:
        status = []
        if s.status_message:
            status.append(_field(b"\x12", s.status_message.encode()))
        if s.status_code:
            status.append(b"\x18" + varint(s.status_code))
        parts.append(_field(b"\x7a", b"".join(status)))
    return b"".join(parts)


# -- the request -------------------------------------------------------------------------------


def export_request(
    groups: Sequence[tuple[Attributes, Sequence[Span]]],
    *,
    scope_name: str,
    scope_version: str,
    schema_url: str,
) -> bytes:
    """An ``ExportTraceServiceRequest``: one ``ResourceSpans`` per ``(resource attributes,
    spans)`` group, each with one ``ScopeSpans`` (``scope_name``/``scope_version``) and
    ``schema_url`` on both. Raises as the module docstring says."""
    scope = _field(
        b"\x0a",
        (_field(b"\x0a", scope_name.encode()) if scope_name else b"")
        + (_field(b"\x12", scope_version.encode()) if scope_version else b""),
    )
    schema = _field(b"\x1a", schema_url.encode()) if schema_url else b""
    out = []
    for attrs, spans in groups:
        scope_spans = [scope]
        scope_spans.extend([_field(b"\x12", span(s)) for s in spans])
        scope_spans.append(schema)
        resource_spans = [_field(b"\x0a", b"".join(_attributes(b"\x0a", attrs)))] if attrs else []
        resource_spans.append(_field(b"\x12", b"".join(scope_spans)))
        resource_spans.append(schema)
        out.append(_field(b"\x0a", b"".join(resource_spans)))
    return b"".join(out)
