"""OTLP export of HiveLoop timelines: mapping, encoding, response verdicts, settings.

Pure layers with no I/O, used by the sender's OTLP destination:

* :mod:`._spans`: :class:`SpanAssembler`, wire events to finished spans (the mapping);
* :mod:`._encode`: spans to OTLP/JSON or OTLP/protobuf request bodies;
* :mod:`._protobuf`: the protobuf wire format of those requests, written by hand;
* :mod:`._response`: what an OTLP/HTTP response means (success, partial, retry, drop);
* :mod:`._config`: ``otlp_*`` arguments and ``HIVELOOP_OTLP_*`` variables.

Nothing here imports ``opentelemetry``, except :func:`encode_protobuf_official` (the
reference encoding the tests compare ours with).
"""

from __future__ import annotations

from ._config import OTLPSettings, parse_headers, parse_protocol, resolve_otlp, traces_url
from ._encode import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    encode,
    encode_json,
    encode_protobuf,
    encode_protobuf_official,
    protobuf_available,
)
from ._response import OTLPOutcome, classify_response, parse_retry_after
from ._spans import (
    SEMCONV_VERSION,
    STILL_OPEN,
    AssemblerStats,
    Limits,
    Link,
    Resource,
    Span,
    SpanAssembler,
    SpanEvent,
    is_tool_action,
)

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "SEMCONV_VERSION",
    "STILL_OPEN",
    "AssemblerStats",
    "Limits",
    "Link",
    "OTLPOutcome",
    "OTLPSettings",
    "Resource",
    "Span",
    "SpanAssembler",
    "SpanEvent",
    "classify_response",
    "encode",
    "encode_json",
    "encode_protobuf",
    "encode_protobuf_official",
    "is_tool_action",
    "parse_headers",
    "parse_protocol",
    "parse_retry_after",
    "protobuf_available",
    "resolve_otlp",
    "traces_url",
]
