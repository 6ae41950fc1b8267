"""Scrubbing, before_send, compression and the disk spool, wired into the real sender.

Against the fault server on 127.0.0.1: what reaches the wire is checked in the bodies the
server received, not in the SDK's own view.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import hiveloop_async as hl

from .faultserver import FaultServer

KEY = "hb_test_wiring"
OPENAI = "sk-" + "proj-" + "A1b2C3d4E5f6G7h8J9k0" * 2


def _client(url: str, **kw: Any) -> hl.HiveBoard:
    kw.setdefault("flush_interval", 0.05)
    return hl.HiveBoard(api_key=KEY, endpoint=url, **kw)


async def _record_secrets(hb: hl.HiveBoard) -> None:
    agent = hb.agent("wiring", heartbeat_interval=0)
    async with agent.task("t-secret") as task:
        async with agent.track_context("call_api") as ctx:
            ctx.set_payload(
                {
                    "args": {"query": f"use {OPENAI} please", "nested": {"password": "hunter22"}},
                    "headers": [f"Authorization: Bearer {OPENAI}"],
                    OPENAI: "as a key name",
                }
            )
        task.llm_call("think", "m", prompt_preview=f"the key is {OPENAI}")
    assert await hb.aflush(10)


async def test_default_scrubbing_keeps_secrets_off_the_wire() -> None:
    with FaultServer() as srv:
        async with _client(srv.url) as hb:
            await _record_secrets(hb)
            stats = hb.stats()
        wire = orjson.dumps(srv.events).decode()
    assert OPENAI not in wire
    assert "hunter22" not in wire
    assert OPENAI[:12] not in wire
    assert "[REDACTED:openai_key]" in wire
    assert "[REDACTED:password]" in wire
    assert stats["scrubbed"] >= 5


async def test_scrub_false_sends_payloads_as_recorded() -> None:
    with FaultServer() as srv:
        async with _client(srv.url, scrub=False) as hb:
            await _record_secrets(hb)
            assert hb.stats()["scrubbed"] == 0
        wire = orjson.dumps(srv.events).decode()
    assert OPENAI in wire


async def test_before_send_changes_and_drops_events_and_is_scrubbed_after() -> None:
    def hook(event: dict[str, Any]) -> dict[str, Any] | None:
        if event["event_type"] == "action_started":
            return None
        payload = event.setdefault("payload", {}) or {}
        payload["added_by_hook"] = f"token {OPENAI}"
        event["payload"] = payload
        return event

    with FaultServer() as srv:
        async with _client(srv.url, before_send=hook) as hb:
            await _record_secrets(hb)
            stats = hb.stats()
    types = [e["event_type"] for e in srv.events]
    assert "action_started" not in types
    assert stats["dropped"]["before_send"] == 1
    assert all("added_by_hook" in (e.get("payload") or {}) for e in srv.events)
    assert OPENAI not in orjson.dumps(srv.events).decode()  # what the hook added is scrubbed
    assert stats["recorded"] == stats["sent"] + stats["dropped_total"]


@pytest.mark.parametrize("on_error", ["send", "drop"])
async def test_a_raising_before_send_is_logged_once(
    on_error: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def hook(event: dict[str, Any]) -> dict[str, Any] | None:
        raise ValueError(f"leaks {OPENAI}")

    with FaultServer() as srv:
        async with _client(srv.url, before_send=hook, before_send_errors=on_error) as hb:
            await _record_secrets(hb)
            stats = hb.stats()
    assert OPENAI not in caplog.text
    assert len([r for r in caplog.records if "failed (ValueError)" in r.getMessage()]) == 1
    if on_error == "send":
        assert len(srv.events) == stats["recorded"]
    else:
        assert srv.events == []
        assert stats["dropped"]["before_send"] == stats["recorded"]


async def test_gzip_bodies_reach_the_server() -> None:
    with FaultServer() as srv:
        async with _client(srv.url, compression="gzip") as hb:
            await _record_secrets(hb)
            stats = hb.stats()
    assert srv.encodings and set(srv.encodings) == {"gzip"}
    assert len(srv.events) == stats["sent"] == stats["recorded"]


def test_an_unknown_compression_is_a_config_error() -> None:
    with pytest.raises(hl.HiveLoopConfigError, match="compression"):
        hl.HiveBoard(api_key=KEY, enabled=False, compression="br")  # type: ignore[arg-type]


class _Outage:
    def __init__(self) -> None:
        self.up = False

    def __call__(self, n: int, events: list[dict[str, Any]]) -> Any:
        return "ok" if self.up else ("status", 503, None, None)


async def test_an_outage_longer_than_the_retry_deadline_is_spooled_and_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retries run out while the server is down: the batches go to the spool; a client
    started later (the next process) replays them when the server answers, exactly once."""
    outage = _Outage()
    spool = tmp_path / "spool"
    with FaultServer(outage) as srv:
        async with _client(srv.url, retry_deadline=0.3, spool_dir=spool) as hb:
            agent = hb.agent("spooling", heartbeat_interval=0)
            for i in range(40):
                agent.event("custom", {"kind": "probe", "i": i})
            assert await hb.aflush(10)
            down = hb.stats()
        assert srv.events == []
        assert down["spooled"] == down["recorded"] == 41
        assert down["dropped_total"] == 0
        assert (spool.stat().st_mode & 0o777) == 0o700
        outage.up = True
        async with _client(srv.url, spool_dir=spool) as later:
            later.agent("spooling", heartbeat_interval=0)
            assert await later.aflush(10)
            for _ in range(200):
                if later.stats()["replayed"] >= 41:
                    break
                await _sleep()
            up = later.stats()
    ids = [e["event_id"] for e in srv.events]
    probes = sorted(e["payload"]["i"] for e in srv.events if e["payload"].get("kind") == "probe")
    assert probes == list(range(40))
    assert len(ids) == len(set(ids))
    assert up["replayed"] == 41
    assert "Bearer" not in caplog.text


async def _sleep() -> None:
    await anyio.sleep(0.02)  # polling a condition, bounded by the loop above


_SPOOLING_CHILD = """
import sys, time
import hiveloop_async as hl
url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hb = hl.HiveBoard(api_key="hb_test_wiring", endpoint=url, flush_interval=0.05,
                  retry_deadline=0.3, spool_dir=spool)
agent = hb.agent("restart", heartbeat_interval=0)
for i in range(n):
    agent.event("custom", {"kind": "probe", "i": i})
deadline = time.monotonic() + 30
while hb.stats()["spooled"] < n + 1 and time.monotonic() < deadline:
    time.sleep(0.02)  # allowed-sleep: polling the child's own counters
print("spooled", hb.stats()["spooled"], flush=True)
time.sleep(600)  # allowed-sleep: waiting to be killed by the test
"""


def test_a_process_killed_during_an_outage_loses_nothing_it_spooled(tmp_path: Path) -> None:
    """A process records during an outage longer than retry_deadline, spools, and is
    SIGKILLed while the server is still down; the next process replays every event once."""
    import subprocess
    import sys

    outage = _Outage()
    spool = tmp_path / "spool"
    with FaultServer(outage) as srv:
        child = subprocess.Popen(
            [sys.executable, "-c", _SPOOLING_CHILD, srv.url, str(spool), "60"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["spooled", "61"]
        finally:
            child.kill()  # SIGKILL: no shutdown hook, no atexit
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
        assert srv.events == []
        outage.up = True
        hb = _client(srv.url, spool_dir=spool)
        try:
            hb.agent("restart", heartbeat_interval=0)
            assert hb.flush(10)
            assert srv.wait_for(lambda: len(srv.events) >= 62, 15)
        finally:
            hb.shutdown(10)
        replayed = hb.stats()["replayed"]
    probes = sorted(e["payload"]["i"] for e in srv.events if e["payload"].get("kind") == "probe")
    assert probes == list(range(60))
    ids = [e["event_id"] for e in srv.events]
    assert len(ids) == len(set(ids))
    assert replayed == 61


async def test_a_shutdown_during_a_replay_waits_for_its_answer(tmp_path: Path) -> None:
    """The server has a replayed batch but answers late, after the shutdown began: the
    shutdown waits for the answer (within its timeout), so the batch is counted and removed
    from the spool, not replayed again by the next process."""
    spool = tmp_path / "spool"
    gate = threading.Event()
    up = False

    def behavior(n: int, events: list[dict[str, Any]]) -> Any:
        if not up:
            return ("status", 503, None, None)
        if any((e.get("payload") or {}).get("kind") == "probe" for e in events):
            return ("held", gate)  # the replay: stored now, answered later
        # The shutdown's last batch: the replay's answer comes 0.2 s after this one.
        threading.Timer(0.2, gate.set).start()
        return "ok"

    with FaultServer(behavior) as srv:
        async with _client(srv.url, retry_deadline=0.3, spool_dir=spool) as hb:
            agent = hb.agent("spooling", heartbeat_interval=0)
            for i in range(40):
                agent.event("custom", {"kind": "probe", "i": i})
            assert await hb.aflush(10)
            assert hb.stats()["spooled"] == 41
        up = True
        hb2 = _client(srv.url, spool_dir=spool, flush_interval=60)
        hb2.agent("restart", heartbeat_interval=0)  # queued until the shutdown drains it
        assert srv.wait_for(lambda: len(srv.events) >= 41, 15)  # the replay reached it
        result = hb2.shutdown(10)
        stats = hb2.stats()
        assert not result.timed_out
        assert stats["replayed"] == 41
        assert stats["sent"] == 1 and stats["dropped_total"] == 0
        hb3 = _client(srv.url, spool_dir=spool)
        hb3.agent("third", heartbeat_interval=0)
        assert hb3.flush(10)
        hb3.shutdown(10)
        assert hb3.stats()["replayed"] == 0  # nothing was left to send twice
    probes = [e["payload"]["i"] for e in srv.events if e["payload"].get("kind") == "probe"]
    assert sorted(probes) == list(range(40))


async def test_queue_overflow_during_an_outage_goes_to_the_spool(tmp_path: Path) -> None:
    """More events than the queue holds while the server is down and the workers are busy
    retrying: nothing is dropped; everything arrives once when the server is back."""
    outage = _Outage()
    spool = tmp_path / "spool"
    with FaultServer(outage) as srv:
        async with _client(
            srv.url, retry_deadline=30, max_queue_size=200, batch_size=50, spool_dir=spool
        ) as hb:
            agent = hb.agent("overflow", heartbeat_interval=0)
            for i in range(2000):
                agent.event("custom", {"kind": "probe", "i": i})
                if i % 100 == 0:
                    await _sleep()
            down = hb.stats()
            assert down["dropped_total"] == 0, down["dropped"]
            assert down["spooled"] > 0
            outage.up = True
            assert await hb.aflush(20)
            for _ in range(500):
                if len(srv.events) >= 2001:
                    break
                await _sleep()
    probes = sorted(e["payload"]["i"] for e in srv.events if e["payload"].get("kind") == "probe")
    assert probes == list(range(2000))
    assert len({e["event_id"] for e in srv.events}) == len(srv.events)


async def test_a_spool_costs_no_replay_scan_per_batch_while_the_server_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the server up, the replay looks at the spool once (at start), not after every
    delivered batch; after an outage it looks again when a batch gets through."""
    from hiveloop_async._spool import Spool

    claims: list[str | None] = []
    real_claim = Spool.claim_next

    def counting_claim(self: Spool, destination: str | None = None) -> Any:
        claims.append(destination)
        return real_claim(self, destination)

    monkeypatch.setattr(Spool, "claim_next", counting_claim)
    outage = _Outage()
    outage.up = True
    with FaultServer(outage) as srv:
        async with _client(srv.url, batch_size=5, retry_deadline=0.3, spool_dir=tmp_path) as hb:
            agent = hb.agent("no-scan", heartbeat_interval=0)
            for round_ in range(20):
                for i in range(5):
                    agent.event("custom", {"kind": "probe", "i": round_ * 5 + i})
                assert await hb.aflush(10)
            assert hb.stats()["batches"] >= 20
            assert len(claims) == 1  # the replay at start
            outage.up = False
            agent.event("custom", {"kind": "probe", "i": 100})
            assert await hb.aflush(10)
            assert hb.stats()["spooled"] == 1
            outage.up = True
            agent.event("custom", {"kind": "probe", "i": 101})
            assert await hb.aflush(10)
            for _ in range(200):
                if hb.stats()["replayed"] == 1:
                    break
                await _sleep()
            assert hb.stats()["replayed"] == 1
    probes = sorted(e["payload"]["i"] for e in srv.events if e["payload"].get("kind") == "probe")
    assert probes == list(range(102))
