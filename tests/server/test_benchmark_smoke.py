"""``benchmarks/server_ingest.py`` runs end to end on a tiny size (no timing is asserted)."""

from __future__ import annotations

import orjson

from benchmarks import server_ingest


def test_make_batches_builds_sdk_shaped_unique_events() -> None:
    bodies = server_ingest.make_batches(1_100, batch_size=500)
    decoded = [orjson.loads(body) for body in bodies]
    assert [len(body["events"]) for body in decoded] == [500, 500, 100]
    ids = [e["event_id"] for body in decoded for e in body["events"]]
    assert len(set(ids)) == 1_100
    kinds = {e["event_type"] for body in decoded for e in body["events"]}
    assert {"task_started", "action_started", "custom", "heartbeat"} <= kinds


def test_run_posts_everything_to_a_real_server_process() -> None:
    result = server_ingest.run(700, runs=1, concurrency=2, batch_size=300)
    (only,) = result["runs"]
    assert (only["accepted"], only["stored"], only["rejected"]) == (700, 700, 0)
    assert (only["requests"], only["statuses"]) == (3, {200: 3})
    assert result["events_per_sec_median"] == only["events_per_sec"] > 0
    text = server_ingest.table(result)
    assert "median:" in text and "700" in text
