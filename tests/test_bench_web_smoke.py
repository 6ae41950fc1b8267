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
    full = split["full_stack"]
    assert full["events_at_sink"] == full["requests"] > 0  # ours' requests, each delivered
    assert full["ours_us"] > 0 and full["bare_us"] > 0
    assert "FastAPI through ASGI" in web.breakdown_text(result["breakdown_rounds"])
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


def _ab(families: dict[str, tuple[str, ...]], rounds: int = 2, block: int = 40) -> dict[str, Any]:
    return web.measure_ab(families, rounds=rounds, block=block, warmup=0.2, concurrency=4)


def test_ab_serves_each_configuration_its_blocks_in_one_process() -> None:
    # Two rounds of mirrored blocks (a b c c b a): every configuration gets two blocks of 40
    # requests per round, counted by the server between marks, and only ours sends events:
    # 2 per request of ours, none from the bare app or from ours with the sender off.
    names = ("bare", "ours", "ours-nosend")
    result = _ab({"fastapi": names, "aiohttp": names})
    assert result["method"]["method"] == "ab" and result["method"]["block"] == 40
    assert len(result["rounds"]) == 2
    for rnd in result["rounds"]:
        by = {r["config"]: r for r in rnd}
        assert set(by) == {f"{f}-{n}" for f in ("fastapi", "aiohttp") for n in names}
        for r in rnd:
            assert r["requests"] == r["load_requests"] == 80, r
            assert r["load_errors"] == 0 and r["flushed"] and r["cpu_s"] > 0
        for family in ("fastapi", "aiohttp"):
            delivery = by[f"{family}-ours"]["delivery"]
            assert delivery["events_per_request"] == 2.0, delivery  # nothing from the others
            assert delivery["delivered_share"] == 1.0
    summary = result["summary"]["configs"]
    for config in ("fastapi-ours", "fastapi-ours-nosend", "aiohttp-ours", "aiohttp-ours-nosend"):
        assert len(summary[config]["added_us_rounds"]) == 2
    assert "fastapi-ours" in web.table(result["summary"], result["rounds"])


@pytest.mark.skipif(
    not web.otel_available("fastapi-otel"),
    reason="OpenTelemetry instrumentations not installed (pip install -e '.[bench]')",
)
def test_ab_traces_only_the_opentelemetry_app() -> None:
    # FastAPI 0.165+ traces every app by itself once a global tracer provider is set, and
    # aiohttp's instrumentor patches every Application made after it: in one process, the
    # bare app and ours must stay untraced, so every span is one of the otel app's.
    result = _ab({"fastapi": ("bare", "ours", "otel"), "aiohttp": ("bare", "ours", "otel")}, 1)
    assert result["not_run"] == {}
    by = {r["config"]: r for r in result["rounds"][0]}
    for family in ("fastapi", "aiohttp"):
        delivery = by[f"{family}-otel"]["delivery"]
        assert delivery["delivered_share"] == 1.0, delivery
        assert all(name.startswith("GET /otel/") for name in delivery["span_names"]), delivery
        assert by[f"{family}-ours"]["delivery"]["events_per_request"] == 2.0


def test_ab_rounds_and_families() -> None:
    blocks = [
        {
            "round": 0,
            "name": n,
            "requests": 10,
            "errors": 0,
            "served": 10,
            "cpu_s": c,
            "wall_s": 0.1,
            "flushed": True,
        }
        for n, c in (("bare", 0.001), ("ours", 0.002), ("ours", 0.004), ("bare", 0.003))
    ]
    [rnd] = web.ab_rounds("fastapi", blocks)
    by = {r["config"]: r for r in rnd}
    assert by["fastapi-bare"]["us_per_request"] == 200.0  # (1 + 3) ms over 20 requests
    assert by["fastapi-ours"]["us_per_request"] == 300.0
    assert by["fastapi-ours"]["requests_per_s"] == 100
    assert (
        web.summarize([rnd], ("fastapi-bare", "fastapi-ours"))["configs"]["fastapi-ours"][
            "added_us"
        ]
        == 100.0
    )
    assert web.ab_families(["aiohttp-ours", "fastapi-otel", "httpx-client-ours"]) == {
        "aiohttp": ("bare", "ours"),
        "fastapi": ("bare", "otel"),
    }
    assert web.ab_families(None)["fastapi"] == ("bare", "ours", "otel")
