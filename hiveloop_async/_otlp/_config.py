"""OTLP exporter settings: keyword arguments, else environment variables, checked once.

Environment variables (each overridden by the matching keyword argument):

* ``HIVELOOP_OTLP_ENDPOINT``: the collector's base URL, e.g. ``http://127.0.0.1:4318``;
  traces go to ``{endpoint}/v1/traces`` (the rule of ``OTEL_EXPORTER_OTLP_ENDPOINT``). A URL
  whose path already ends with ``/v1/traces`` is used as it is;
* ``HIVELOOP_OTLP_HEADERS``: extra request headers as ``k1=v1,k2=v2``, keys and values
  percent-decoded, as ``OTEL_EXPORTER_OTLP_HEADERS`` (W3C Baggage's list syntax);
* ``HIVELOOP_OTLP_PROTOCOL``: ``http/protobuf`` (the default; our own encoder, no extra
  dependency) or ``http/json``;
* ``HIVELOOP_OTLP_SERVICE_NAME``: ``service.name`` of every span (default: the agent id);
* ``HIVELOOP_OTLP_CAPTURE_CONTENT``: ``1``/``true`` puts LLM prompt and response previews
  on the spans (default off).

Pure apart from reading the mapping it is given. Raises :class:`HiveLoopConfigError` for an
invalid value; no message contains a header value (they are often credentials).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .._exceptions import HiveLoopConfigError

PROTOCOLS: Final = ("http/protobuf", "http/json")
TRACES_PATH: Final = "/v1/traces"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})
#: Header names a user may not override: the exporter sets them for each request.
_RESERVED: Final = frozenset({"content-type", "content-length", "content-encoding", "host"})


def traces_url(endpoint: str) -> str:
    """The URL trace exports go to for a base ``endpoint``, as the OTLP exporter spec says
    for ``OTEL_EXPORTER_OTLP_ENDPOINT``: ``/v1/traces`` appended to its path (after one
    trailing slash is dropped); kept as it is when its path already ends with ``/v1/traces``.

    Raises :class:`HiveLoopConfigError` unless it is an ``http``/``https`` URL with a host.
    """
    text = endpoint.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HiveLoopConfigError(
            "otlp_endpoint must be an http:// or https:// URL with a host, "
            "such as http://127.0.0.1:4318"
        )
    if parts.query or parts.fragment:
        raise HiveLoopConfigError("otlp_endpoint must not have a query or fragment")
    path = parts.path
    if not path.endswith(TRACES_PATH):
        path = path[:-1] if path.endswith("/") else path
        path += TRACES_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def parse_headers(value: str | None) -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` (``OTEL_EXPORTER_OTLP_HEADERS`` syntax): entries split on
    commas, each on its first ``=``, keys and values stripped and percent-decoded; empty
    entries are skipped. Raises :class:`HiveLoopConfigError` (naming the entry's position,
    never its value) for an entry without ``=`` or with an empty or invalid key.
    """
    headers: dict[str, str] = {}
    if not value:
        return headers
    for index, entry in enumerate(value.split(","), 1):
        if not entry.strip():
            continue
        key, sep, raw = entry.partition("=")
        name = urllib.parse.unquote(key.strip())
        if not sep or not name or not _is_token(name):
            raise HiveLoopConfigError(
                f"otlp_headers: entry {index} is not 'key=value' with a valid header name"
            )
        headers[name] = urllib.parse.unquote(raw.strip())
    return headers


def _is_token(name: str) -> bool:
    """An HTTP header name (RFC 9110 token)."""
    return all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name)


def parse_protocol(value: str | None, *, protobuf_available: bool) -> str:
    """``http/protobuf`` or ``http/json``; None picks protobuf when it can be encoded.

    Raises :class:`HiveLoopConfigError` for any other value (``grpc`` included) and for
    ``http/protobuf`` when ``protobuf_available`` is False (it is always True since the
    encoder is our own; the argument stays for callers and tests).
    """
    if value is None or not value.strip():
        return "http/protobuf" if protobuf_available else "http/json"
    protocol = value.strip().lower()
    if protocol not in PROTOCOLS:
        raise HiveLoopConfigError(
            f"otlp_protocol must be 'http/protobuf' or 'http/json', not {value.strip()[:40]!r}"
        )
    if protocol == "http/protobuf" and not protobuf_available:
        raise HiveLoopConfigError(
            "otlp_protocol='http/protobuf' is not available here: use otlp_protocol='http/json'"
        )
    return protocol


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise HiveLoopConfigError(f"{name} must be 1/0 or true/false")


@dataclass(frozen=True)
class OTLPSettings:
    """Where and how spans are exported. Its repr shows header names, never values."""

    url: str
    protocol: str
    headers: Mapping[str, str] = field(default_factory=dict)
    service_name: str | None = None
    capture_content: bool = False

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.headers))
        return (
            f"OTLPSettings(url={self.url!r}, protocol={self.protocol!r}, "
            f"headers=[{names}], service_name={self.service_name!r}, "
            f"capture_content={self.capture_content})"
        )


def resolve_otlp(
    *,
    endpoint: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    protocol: str | None = None,
    service_name: str | None = None,
    capture_content: bool | None = None,
    env: Mapping[str, str],
    protobuf_available: bool,
) -> OTLPSettings | None:
    """The OTLP settings from keyword arguments, else ``env``; None when no endpoint is set
    either way (OTLP export off). Raises :class:`HiveLoopConfigError` for a bad value."""
    raw = endpoint if endpoint is not None else env.get("HIVELOOP_OTLP_ENDPOINT")
    if raw is None or not raw.strip():
        return None
    url = traces_url(raw)
    if headers is None:
        parsed = parse_headers(env.get("HIVELOOP_OTLP_HEADERS"))
    elif isinstance(headers, str):
        parsed = parse_headers(headers)
    else:
        parsed = {str(k): str(v) for k, v in headers.items()}
    for name in parsed:
        if name.lower() in _RESERVED:
            raise HiveLoopConfigError(f"otlp_headers may not set {name!r}")
    proto = parse_protocol(
        protocol if protocol is not None else env.get("HIVELOOP_OTLP_PROTOCOL"),
        protobuf_available=protobuf_available,
    )
    service = service_name if service_name is not None else env.get("HIVELOOP_OTLP_SERVICE_NAME")
    if capture_content is None:
        capture = _parse_bool(
            "HIVELOOP_OTLP_CAPTURE_CONTENT", env.get("HIVELOOP_OTLP_CAPTURE_CONTENT", "")
        )
    else:
        capture = bool(capture_content)
    return OTLPSettings(
        url=url,
        protocol=proto,
        headers=parsed,
        service_name=service or None,
        capture_content=capture,
    )
