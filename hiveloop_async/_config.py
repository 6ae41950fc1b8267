"""Configuration: keyword arguments, then environment variables, then the user's config file.

Resolution never raises for a bad value: it falls back to the default and logs one warning.
Only a missing or malformed API key raises :class:`HiveLoopConfigError` (and its message
contains none of the key's characters).

Environment variables: ``HIVELOOP_API_KEY``, ``HIVELOOP_ENDPOINT``,
``HIVELOOP_ENVIRONMENT``, ``HIVELOOP_GROUP``, ``HIVELOOP_DEBUG``, ``HIVELOOP_DISABLED``
(record as usual, send nothing), ``HIVELOOP_FLUSH_INTERVAL``, ``HIVELOOP_BATCH_SIZE``,
``HIVELOOP_MAX_QUEUE_SIZE``, ``HIVELOOP_SHUTDOWN_TIMEOUT``, and the OTLP destination's
``HIVELOOP_OTLP_*`` (see :mod:`._otlp._config`). With an OTLP endpoint and no API key, only
OTLP is sent to.

Config file: ``~/.loophive/loophive.cfg``, section ``[loophive]``, key ``endpoint`` (as
hiveloop 0.2.0). ``./loophive.cfg`` in the working directory is read only when
``read_local_config=True`` or ``HIVELOOP_READ_LOCAL_CONFIG=1``: a file there could redirect
the key to another host.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from ._exceptions import HiveLoopConfigError
from ._internal import logger, warn_once
from ._otlp._config import OTLPSettings, resolve_otlp
from ._otlp._encode import protobuf_available

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_FLUSH_INTERVAL = 5.0
DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 500
DEFAULT_MAX_QUEUE_SIZE = 250_000
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_RETRY_DEADLINE = 60.0
DEFAULT_MAX_CONCURRENT_REQUESTS = 4
DEFAULT_AUTH_RETRY_INTERVAL = 60.0
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved client settings. The ``repr`` never shows the API key."""

    api_key: str = dataclasses.field(repr=False)
    endpoint: str
    environment: str
    group: str
    flush_interval: float
    batch_size: int
    max_queue_size: int
    debug: bool
    enabled: bool
    shutdown_timeout: float
    request_timeout: float
    retry_deadline: float
    max_concurrent_requests: int
    #: The OTLP destination, or None (off).
    otlp: OTLPSettings | None = None
    #: Whether events go to HiveBoard's ingest (False: OTLP only).
    ingest: bool = True
    #: After a 401/403, seconds between probes with one event (a rotated key resumes).
    auth_retry_interval: float = DEFAULT_AUTH_RETRY_INTERVAL
    #: Share of root tasks kept (see ``_sampling``); 1.0 keeps everything.
    sample_rate: float = 1.0
    #: Keep the whole tree of a sampled-out task that fails.
    keep_failed: bool = True
    #: A custom decision per root task: ``sampler(TaskInfo) -> bool``.
    sampler: Callable[[Any], bool] | None = None
    #: Request body compression: None or ``"gzip"``.
    compression: Literal["gzip"] | None = None
    #: Where undeliverable batches are kept for replay (None: no spool).
    spool_dir: str | None = None
    #: The spool's size cap in bytes (oldest batches removed first).
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES

    @property
    def ingest_url(self) -> str:
        return f"{self.endpoint}/v1/ingest"


def _env_bool(value: str) -> bool | None:
    low = value.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    return None


def _pick(
    name: str,
    given: Any,
    env: Mapping[str, str],
    env_key: str,
    default: _T,
    convert: Callable[[Any], _T],
    valid: Callable[[_T], bool] = lambda _v: True,
) -> _T:
    """Keyword, else environment, else default; a bad value warns once and falls back."""
    for source, raw in (("argument", given), (env_key, env.get(env_key))):
        if raw is None:
            continue
        try:
            value = convert(raw)
            if valid(value):
                return value
        except (TypeError, ValueError):
            pass
        warn_once(
            f"config:{name}:{source}",
            "hiveloop_async: invalid %s from %s; using %r",
            name,
            source,
            default,
        )
        return default
    return default


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        value = _env_bool(raw)
        if value is not None:
            return value
    raise ValueError(raw)


def _endpoint_from_files(read_local: bool) -> str | None:
    paths = [Path.home() / ".loophive" / "loophive.cfg"]
    if read_local:
        paths.insert(0, Path.cwd() / "loophive.cfg")
    for path in paths:
        try:
            if not path.is_file():
                continue
            parser = configparser.ConfigParser()
            parser.read(path, encoding="utf-8")
            value = parser.get("loophive", "endpoint", fallback="").strip()
            if value:
                return value
        except (OSError, configparser.Error):
            warn_once(f"config:file:{path}", "hiveloop_async: could not read %s", path)
    return None


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _clean_endpoint(raw: str) -> str | None:
    value = raw.strip().rstrip("/")
    if value.endswith("/v1/ingest"):
        value = value[: -len("/v1/ingest")]
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    return value


def resolve_settings(
    *,
    api_key: str | None,
    endpoint: str | None,
    environment: str | None,
    group: str | None,
    flush_interval: float | None,
    batch_size: int | None,
    max_queue_size: int | None,
    debug: bool | None,
    enabled: bool | None,
    shutdown_timeout: float | None,
    request_timeout: float | None = None,
    retry_deadline: float | None = None,
    max_concurrent_requests: int | None = None,
    read_local_config: bool = False,
    env: Mapping[str, str] | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | str | None = None,
    otlp_protocol: str | None = None,
    otlp_service_name: str | None = None,
    otlp_capture_content: bool | None = None,
    auth_retry_interval: float | None = None,
    sample_rate: float | None = None,
    keep_failed: bool = True,
    sampler: Callable[[Any], bool] | None = None,
    compression: str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    spool_max_bytes: int | None = None,
) -> Settings:
    """Resolve every setting. Raises :class:`HiveLoopConfigError` only for the API key and
    for invalid OTLP settings (see :func:`._otlp.resolve_otlp`)."""
    env = os.environ if env is None else env
    enabled_value = _pick("enabled", enabled, {}, "", True, _to_bool)
    disabled_env = env.get("HIVELOOP_DISABLED")
    if disabled_env is not None and _env_bool(disabled_env):
        enabled_value = False
    otlp = _resolve_otlp(
        otlp_endpoint, otlp_headers, otlp_protocol, otlp_service_name, otlp_capture_content, env
    )

    key = api_key if api_key is not None else env.get("HIVELOOP_API_KEY")
    ingest = True
    if key is None and otlp is not None:
        ingest = False  # OTLP alone
        key = "hb_disabled"
    elif key is None or not isinstance(key, str) or not key.startswith("hb_"):
        if enabled_value or key is not None:
            what = "no API key given" if key is None else "the API key does not start with 'hb_'"
            raise HiveLoopConfigError(
                f"hiveloop_async: {what}; pass api_key='hb_...' or set HIVELOOP_API_KEY"
            )
        key = "hb_disabled"

    read_local = read_local_config or bool(_env_bool(env.get("HIVELOOP_READ_LOCAL_CONFIG", "")))
    raw_endpoint = endpoint or env.get("HIVELOOP_ENDPOINT") or _endpoint_from_files(read_local)
    ep = DEFAULT_ENDPOINT
    if raw_endpoint:
        cleaned = _clean_endpoint(raw_endpoint)
        if cleaned is None:
            warn_once(
                "config:endpoint",
                "hiveloop_async: invalid endpoint (must be an http(s) URL); using %s",
                DEFAULT_ENDPOINT,
            )
        else:
            ep = cleaned

    settings = Settings(
        api_key=key,
        endpoint=ep,
        environment=_pick(
            "environment", environment, env, "HIVELOOP_ENVIRONMENT", "production", str
        ),
        group=_pick("group", group, env, "HIVELOOP_GROUP", "default", str),
        flush_interval=_pick(
            "flush_interval",
            flush_interval,
            env,
            "HIVELOOP_FLUSH_INTERVAL",
            DEFAULT_FLUSH_INTERVAL,
            float,
            lambda v: 0 < v < 3600,
        ),
        batch_size=_capped_batch_size(
            _pick(
                "batch_size",
                batch_size,
                env,
                "HIVELOOP_BATCH_SIZE",
                DEFAULT_BATCH_SIZE,
                int,
                lambda v: v > 0,
            )
        ),
        max_queue_size=_pick(
            "max_queue_size",
            max_queue_size,
            env,
            "HIVELOOP_MAX_QUEUE_SIZE",
            DEFAULT_MAX_QUEUE_SIZE,
            int,
            lambda v: v > 0,
        ),
        debug=_pick("debug", debug, env, "HIVELOOP_DEBUG", False, _to_bool),
        enabled=enabled_value,
        shutdown_timeout=_pick(
            "shutdown_timeout",
            shutdown_timeout,
            env,
            "HIVELOOP_SHUTDOWN_TIMEOUT",
            DEFAULT_SHUTDOWN_TIMEOUT,
            float,
            lambda v: v >= 0,
        ),
        request_timeout=_pick(
            "request_timeout", request_timeout, {}, "", DEFAULT_REQUEST_TIMEOUT, float, _positive
        ),
        retry_deadline=_pick(
            "retry_deadline", retry_deadline, {}, "", DEFAULT_RETRY_DEADLINE, float, _positive
        ),
        max_concurrent_requests=_pick(
            "max_concurrent_requests",
            max_concurrent_requests,
            {},
            "",
            DEFAULT_MAX_CONCURRENT_REQUESTS,
            int,
            lambda v: 1 <= v <= 64,
        ),
        otlp=otlp,
        ingest=ingest,
        auth_retry_interval=_pick(
            "auth_retry_interval",
            auth_retry_interval,
            {},
            "",
            DEFAULT_AUTH_RETRY_INTERVAL,
            float,
            _positive,
        ),
        sample_rate=_pick(
            "sample_rate",
            sample_rate,
            env,
            "HIVELOOP_SAMPLE_RATE",
            1.0,
            float,
            lambda v: 0.0 <= v <= 1.0,
        ),
        keep_failed=bool(keep_failed),
        sampler=sampler if callable(sampler) else None,
        compression=_compression(compression),
        spool_dir=_spool_dir(spool_dir, env),
        spool_max_bytes=_pick(
            "spool_max_bytes",
            spool_max_bytes,
            env,
            "HIVELOOP_SPOOL_MAX_BYTES",
            DEFAULT_SPOOL_MAX_BYTES,
            int,
            lambda v: v >= 1024 * 1024,
        ),
    )
    if sampler is not None and not callable(sampler):
        warn_once("config:sampler", "hiveloop_async: sampler must be callable; ignoring it")
    if settings.enabled and settings.ingest:
        host = urlsplit(settings.endpoint).hostname
        if settings.endpoint.startswith("http://") and not is_loopback(host):
            warn_once(
                f"config:plain-http:{host}",
                "hiveloop_async: the API key will be sent over plain http to %s; use https",
                host,
            )
    if settings.debug:
        _enable_debug_logging()
    return settings


def _resolve_otlp(
    endpoint: str | None,
    headers: Mapping[str, str] | str | None,
    protocol: str | None,
    service_name: str | None,
    capture_content: bool | None,
    env: Mapping[str, str],
) -> OTLPSettings | None:
    """The OTLP destination's settings; None when no endpoint is configured."""
    if endpoint is None and not env.get("HIVELOOP_OTLP_ENDPOINT"):
        return None
    return resolve_otlp(
        endpoint=endpoint,
        headers=headers,
        protocol=protocol,
        service_name=service_name,
        capture_content=capture_content,
        env=env,
        protobuf_available=protobuf_available(),
    )


def _positive(v: float) -> bool:
    return v > 0


def _capped_batch_size(value: int) -> int:
    if value > MAX_BATCH_SIZE:
        warn_once(
            "config:batch_size:cap",
            "hiveloop_async: batch_size %d is over HiveBoard's limit; using %d",
            value,
            MAX_BATCH_SIZE,
        )
        return MAX_BATCH_SIZE
    return value


def _enable_debug_logging() -> None:
    logger.setLevel(logging.DEBUG)
    if not any(getattr(h, "_hiveloop_debug", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler._hiveloop_debug = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def _compression(value: str | None) -> Literal["gzip"] | None:
    """``"gzip"`` or None; anything else is a configuration error."""
    if value is None:
        return None
    if value == "gzip":
        return "gzip"
    raise HiveLoopConfigError('compression must be None or "gzip"')


def _spool_dir(value: str | os.PathLike[str] | None, env: Mapping[str, str]) -> str | None:
    """The spool directory from the argument, else ``HIVELOOP_SPOOL_DIR``; None: off."""
    if value is None:
        value = env.get("HIVELOOP_SPOOL_DIR") or None
    return None if value is None else os.fspath(value)
