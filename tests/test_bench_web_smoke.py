"""``make bench-web`` end to end on tiny windows: it runs, and what it counts is right.

No timing is asserted: the served count must equal what the load generator got answered,
and the sink must have received every event (ours) or span (OpenTelemetry, when the
``bench`` extra is installed) for the requests of the measured window.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import web


def _by_config(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [round_] = result["rounds"]
    return {r["config"]: r for r in round_}


def _tiny(configs: tuple[str, ...]) -> dict[str, Any]:
    return web.measure(
        configs, rounds=1, seconds=0.4, warmup=0.2, concurrency=4, split_requests=300
    )


def test_servers_count_every_request_and_deliver_every_event() -> None:
    configs = ("fastapi-bare", "fastapi-ours", "aiohttp-bare", "aiohttp-ours")
    result = _tiny(configs)
    runs = _by_config(result)
    for config in configs:
        r = runs[config]
        assert "error" not in r, r
        assert r["requests"] > 0 and r["load_errors"] == 0
        assert r["requests"] == r["load_requests"], r  # served == answered, in the window
        assert r["flushed"] and r["cpu_s"] > 0
    for config in ("fastapi-ours", "aiohttp-ours"):
        sink, n = runs[config]["sink"], runs[config]["requests"]
        assert sink["type:task_started"] == sink["type:task_completed"] == n
        assert runs[config]["delivery"]["delivered_share"] == 1.0
    for config in ("fastapi-bare", "aiohttp-bare"):
        assert runs[config]["sink"] == {}  # a bare app sends nothing
    summary = result["summary"]["configs"]
    assert "added_us" in summary["fastapi-ours"] and "added_us" in summary["aiohttp-ours"]
    split = result["breakdown_rounds"][0]
    assert split["requests"] == 300 and split["events_at_sink"] == 4 * 300
    assert "middleware bookkeeping" in web.breakdown_text(result["breakdown_rounds"])
    assert "fastapi-ours" in web.table(result["summary"], result["rounds"])


def test_client_hooks_count_every_call_and_record_tracked_ones() -> None:
    configs = (
        "aiohttp-client-bare",
        "aiohttp-client-ours",
        "aiohttp-client-ours-track",
        "httpx-client-bare",
        "httpx-client-ours-track",
    )
    runs = _by_config(_tiny(configs))
    for config in configs:
        r = runs[config]
        assert "error" not in r, r
        assert r["requests"] > 0 and r["errors"] == 0 and r["flushed"]
    # one action per request when tracking (started and completed), none otherwise
    for config in ("aiohttp-client-ours-track", "httpx-client-ours-track"):
        sink, n = runs[config]["sink"], runs[config]["requests"]
        assert sink["type:action_started"] == sink["type:action_completed"] == n
    assert "type:action_started" not in runs["aiohttp-client-ours"]["sink"]


@pytest.mark.skipif(
    not web.otel_available("fastapi-otel"),
    reason="OpenTelemetry instrumentations not installed (pip install -e '.[bench]')",
)
def test_opentelemetry_configurations_deliver_every_span() -> None:
    configs = ("fastapi-otel", "aiohttp-otel", "aiohttp-client-otel", "httpx-client-otel")
    result = _tiny(configs)
    assert result["not_run"] == {}
    runs = _by_config(result)
    for config in configs:
        r = runs[config]
        assert "error" not in r, r
        assert r["requests"] > 0 and r["flushed"]
        assert r["delivery"]["delivered_share"] == 1.0, r["delivery"]


def test_sink_window_and_bare_pairing() -> None:
    """The pure helpers the table rests on."""
    assert web._window({"a": 1, "first_t": 1.0}, {"a": 4, "b": 2, "last_t": 2.0}) == {
        "a": 3,
        "b": 2,
    }
    assert web._bare_of("httpx-client-ours-track") == "httpx-client-bare"
    assert web._bare_of("fastapi-otel") == "fastapi-bare"
    names = {"GET /ping": 3, "GET /ping http send": 6, "caller-0": 1}
    assert web._primary(names) == 3


def test_a_paced_load_serves_the_rate_asked_for() -> None:
    # 200 requests/s over 1 s from 4 connections: each connection every 20 ms. A load sent
    # back to back would serve thousands in that window; a pacing that never waited, or
    # that stopped early, would miss the count by far more than the tolerance.
    result = web.measure(
        ("aiohttp-bare", "aiohttp-ours"),
        rounds=1,
        seconds=1.0,
        warmup=0.2,
        concurrency=4,
        split_requests=100,
        rate=200.0,
    )
    assert result["method"]["rate"] == 200.0
    for config, r in _by_config(result).items():
        assert "error" not in r, r
        assert r["requests"] == r["load_requests"], r
        assert 180 <= r["requests"] <= 204, (config, r["requests"])
        assert r["rate"] == 200.0 and r["late"] <= 20  # started over 10 ms late: rare
    sink = _by_config(result)["aiohttp-ours"]["sink"]
    assert sink["type:task_completed"] == _by_config(result)["aiohttp-ours"]["requests"]
