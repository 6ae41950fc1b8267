"""``benchmarks.web``'s diagnostics on tiny windows: what they report is there and right.

No timing is asserted: the sender-off configuration delivers nothing, ``-b500`` delivers
every event in posts of up to 500, every server round reports its window's diagnostics,
and ``BENCH_WEB_SENDER_CPU=1`` accounts CPU to the sender's task steps only when it runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import web


def _runs(configs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    result = web.measure(
        configs, rounds=1, seconds=0.4, warmup=0.2, concurrency=4, split_requests=300
    )
    [round_] = result["rounds"]
    return {r["config"]: r for r in round_}


def test_diagnostic_configurations_and_window_diagnostics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCH_WEB_SENDER_CPU", "1")
    configs = ("fastapi-bare", "fastapi-ours-nosend", "fastapi-ours-b500", "aiohttp-ours-b500")
    runs = _runs(configs)
    for config in configs:
        r = runs[config]
        assert "error" not in r, r
        assert r["requests"] == r["load_requests"] > 0, r
        diag = r["diag"]
        assert diag["cpu_s:MainThread"] > 0 and diag["loop_iterations"] > 0, diag
        assert diag["gc_s"] >= 0 and diag["user_s"] + diag["sys_s"] > 0, diag
    # sender off: nothing reaches the sink, and no sender step ran
    assert not runs["fastapi-ours-nosend"]["sink"].get("hiveboard_events")
    assert runs["fastapi-ours-nosend"]["diag"]["sender_s"] == 0
    assert runs["fastapi-bare"]["diag"]["sender_s"] == 0
    for config in ("fastapi-ours-b500", "aiohttp-ours-b500"):
        r = runs[config]
        sink, n = r["sink"], r["requests"]
        assert sink["type:task_started"] == sink["type:task_completed"] == n, sink
        assert r["delivery"]["delivered_share"] == 1.0
        posts = sink["hiveboard_events_requests"]
        assert posts >= -(-2 * n // 500), sink  # at most 500 events a post
        assert r["diag"]["sender_s"] > 0, r["diag"]
    assert "fastapi-ours-b500" in web.DIAGNOSTICS
    assert not set(web.DIAGNOSTICS) & set(web.CONFIGS)  # never in a default run


def test_diagnostic_configurations_configure_the_client_as_named() -> None:
    """``-b500``: batch_size 500; ``-nosend``: disabled; the table's ``ours``: defaults."""
    sink = "http://127.0.0.1:9"
    b500 = web._hiveboard(sink, "fastapi-ours-b500")
    nosend = web._hiveboard(sink, "aiohttp-ours-nosend")
    ours = web._hiveboard(sink, "fastapi-ours")
    try:
        assert b500.settings.batch_size == 500 and b500.settings.enabled
        assert not nosend.settings.enabled
        assert ours.settings.enabled and ours.settings.batch_size == 100
    finally:
        for hb in (b500, nosend, ours):
            hb.shutdown(0)
