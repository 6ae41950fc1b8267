"""Client-side faults a real server cannot produce, injected with ``aioresponses``.

Only aioresponses' ``exception=`` is used (its response building is broken with aiohttp 3.14:
``ClientResponse.__init__() missing 'stream_writer'``); every answer comes from the real
fault server (``passthrough_unmatched=True``: a request no injected fault matches goes to it).

What the transport documents (README "Retries", ``_transport.py``): network errors and
timeouts, connect and read, are retried with backoff under one deadline per batch
(``retry_deadline``); a batch still failing at the deadline is dropped as
``retries_exhausted``. A host name that does not resolve is named in ``last_error``. And at
every moment ``recorded == sent + dropped_total + queue_depth + in_flight``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses

import hiveloop_async as hl
from hiveloop_async import _internal

from .faultserver import FaultServer

KEY = "hb_test_faults_0123456789abcdef"


def _key() -> ConnectionKey:
    return ConnectionKey("hiveboard.invalid", 443, True, True, None, None, None)


def _dns() -> Exception:
    return aiohttp.ClientConnectorDNSError(
        _key(), socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    )


def _ssl() -> Exception:
    return aiohttp.ClientConnectorSSLError(
        _key(), ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    )


def _certificate() -> Exception:
    return aiohttp.ClientConnectorCertificateError(
        _key(),
        ssl.SSLCertVerificationError(
            1, "[SSL: CERTIFICATE_VERIFY_FAILED] Hostname mismatch, certificate is not valid"
        ),
    )


#: (name, exception factory, expected last_error prefix)
FAULTS: list[tuple[str, Callable[[], Exception], str]] = [
    ("dns", _dns, "cannot resolve the endpoint's host name"),
    ("ssl", _ssl, "ClientConnectorSSLError: TLS handshake failed"),
    (
        "certificate",
        _certificate,
        "ClientConnectorCertificateError: certificate verification failed",
    ),
    (
        "disconnected",
        lambda: aiohttp.ServerDisconnectedError(),
        "ServerDisconnectedError: network error",
    ),
    (
        "payload",
        lambda: aiohttp.ClientPayloadError("Response payload is not completed"),
        "ClientPayloadError: network error",
    ),
    (
        "connect_timeout",
        lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host"),
        "ConnectionTimeoutError: network error",
    ),
    (
        "read_timeout",
        lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        "SocketTimeoutError: network error",
    ),
    ("total_timeout", lambda: asyncio.TimeoutError(), "TimeoutError: network error"),
]
IDS = [name for name, _, _ in FAULTS]


def balanced(stats: Mapping[str, Any]) -> bool:
    return bool(
        stats["recorded"]
        == stats["sent"] + stats["dropped_total"] + stats["queue_depth"] + stats["in_flight"]
    )


def record(hb: hl.HiveBoard, n: int) -> None:
    agent = hb.agent("faults", heartbeat_interval=0)  # emits agent_registered: n + 1 events
    for i in range(n):
        agent.event("custom", {"kind": "probe", "i": i})


def probes(srv: FaultServer) -> list[int]:
    return sorted(
        e["payload"]["i"] for e in srv.events if (e.get("payload") or {}).get("kind") == "probe"
    )


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def _mock() -> aioresponses:
    return aioresponses(passthrough_unmatched=True)


@pytest.mark.parametrize(("name", "fault", "last_error"), FAULTS, ids=IDS)
async def test_a_transient_fault_is_retried_and_everything_arrives_once(
    server: FaultServer, name: str, fault: Callable[[], Exception], last_error: str
) -> None:
    """Loop mode: the first two POSTs fail with the fault, the third reaches the server."""
    with _mock() as mocked:
        url = f"{server.url}/v1/ingest"
        mocked.post(url, exception=fault(), repeat=2)
        async with hl.HiveBoard(api_key=KEY, endpoint=server.url, flush_interval=0.05) as hb:
            record(hb, 30)
            result = await hb.aflush(timeout=20)
            stats = hb.stats()
    assert not result.timed_out
    assert probes(server) == list(range(30))
    assert len(server.event_ids()) == len(set(server.event_ids())) == 31
    assert stats["sent"] == 31 and stats["dropped_total"] == 0
    assert stats["retries"] == 2
    assert stats["last_error"] is not None and stats["last_error"].startswith(last_error)
    assert balanced(stats)
    assert server.requests == stats["batches"] - 2  # the two faulted attempts never reached it


@pytest.mark.parametrize(("name", "fault", "last_error"), FAULTS, ids=IDS)
def test_a_persistent_fault_is_retried_until_the_deadline_then_counted(
    server: FaultServer, name: str, fault: Callable[[], Exception], last_error: str
) -> None:
    """Thread mode: the fault never ends; at ``retry_deadline`` the batch is dropped."""
    with _mock() as mocked:
        mocked.post(f"{server.url}/v1/ingest", exception=fault(), repeat=True)
        hb = hl.HiveBoard(api_key=KEY, endpoint=server.url, flush_interval=0.05, retry_deadline=1.0)
        record(hb, 20)
        result = hb.flush(timeout=20)
        stats = hb.stats()
        hb.shutdown(timeout=1)
    assert not result.timed_out
    assert stats["sent"] == 0
    assert stats["dropped"]["retries_exhausted"] == 21 == stats["dropped_total"]
    assert stats["retries"] >= 1
    assert (stats["last_error"] or "").startswith(last_error)
    assert balanced(stats)
    assert server.requests == 0


def test_the_balance_holds_while_faults_are_being_retried(server: FaultServer) -> None:
    """Sampled while batches sit in backoff: every event is in exactly one place."""
    with _mock() as mocked:
        mocked.post(
            f"{server.url}/v1/ingest", exception=aiohttp.ServerDisconnectedError(), repeat=6
        )
        hb = hl.HiveBoard(api_key=KEY, endpoint=server.url, flush_interval=0.02, batch_size=10)
        record(hb, 200)
        samples = []
        while not server.wait_for(lambda: len(probes(server)) == 200, timeout=0.01):
            samples.append(hb.stats())
            assert len(samples) < 5000, "never delivered"
        result = hb.flush(timeout=20)
        stats = hb.stats()
        hb.shutdown(timeout=1)
    assert not result.timed_out
    assert samples and all(balanced(s) for s in samples)
    assert any(s["in_flight"] for s in samples)
    assert stats["sent"] == 201 and balanced(stats)
    assert stats["retries"] >= 6


async def test_an_unknown_exception_from_the_http_stack_is_retried_and_warned_once(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    with _mock() as mocked, caplog.at_level(logging.WARNING, logger="hiveloop_async"):
        mocked.post(f"{server.url}/v1/ingest", exception=RuntimeError("stack bug"), repeat=3)
        async with hl.HiveBoard(api_key=KEY, endpoint=server.url, flush_interval=0.05) as hb:
            record(hb, 5)
            result = await hb.aflush(timeout=20)
            stats = hb.stats()
    assert not result.timed_out
    assert stats["sent"] == 6 and stats["retries"] == 3 and balanced(stats)
    warnings = [r for r in caplog.records if "unexpected RuntimeError" in r.getMessage()]
    assert len(warnings) <= 1  # once per process: an earlier test may have used it up
    assert stats["last_error"] == "RuntimeError: unexpected error while sending"


@pytest.mark.parametrize("fault", [_ssl, _certificate], ids=["ssl", "certificate"])
async def test_a_tls_error_is_retried_and_says_once_what_to_check(
    server: FaultServer,
    fault: Callable[[], Exception],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TLS failures are retried (a certificate may be renewed) with one warning per process
    naming the failure and what to check, never one per attempt."""
    monkeypatch.setattr(_internal, "_warned", set())
    with _mock() as mocked, caplog.at_level(logging.WARNING, logger="hiveloop_async"):
        mocked.post(f"{server.url}/v1/ingest", exception=fault(), repeat=3)
        async with hl.HiveBoard(api_key=KEY, endpoint=server.url, flush_interval=0.05) as hb:
            record(hb, 5)
            result = await hb.aflush(timeout=20)
            stats = hb.stats()
    assert not result.timed_out
    assert stats["sent"] == 6 and stats["retries"] == 3 and balanced(stats)
    warnings = [
        r.getMessage() for r in caplog.records if "talking to the endpoint" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "CA bundle" in warnings[0] and type(fault()).__name__ in warnings[0]
