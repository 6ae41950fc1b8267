"""The benchmarks run end to end on tiny sizes (our SDK only; no timing is asserted)."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

# ``benchmarks`` is a top-level folder of the repository (on pytest's pythonpath).
from benchmarks import _harness, hot_path, http_ceiling, llm, sdk_ours
from benchmarks.sink import ROOT, Sink, count_otlp_protobuf, count_sentry_envelope


@pytest.fixture(scope="module")
def sinks() -> Iterator[dict[str, Sink]]:
    with Sink("ok") as ok, Sink("refuse") as refuse, Sink("never") as never:
        yield {"ok": ok, "refuse": refuse, "never": never}


def test_hot_path_runs_every_shape_in_every_variant() -> None:
    result = hot_path.run(300)
    for variant in ("live", "undrained", "full"):
        res = result[variant]
        assert res["floor"]["gc_on"]["n"] == 300
        assert set(res["shapes"]) == {"with", "async with", "sync decorator", "async decorator"}
        for fig in res["shapes"].values():
            assert fig["gc_on"]["n"] == fig["gc_off"]["n"] == 300
            assert fig["ratio"] > 0
    # the live variant delivered what it recorded; the undrained one could not
    assert result["live"]["shapes"]["with"]["stats"]["dropped_total"] == 0
    assert result["undrained"]["shapes"]["with"]["stats"]["sent"] == 0
    assert result["full"]["max_queue_size"] == 10_000  # benchmarks.sdk_ours.FULL_QUEUE_SIZE
    assert "floor" in hot_path.table(result)


def test_hot_path_safety_measures_each_configuration_and_the_baseline_checkout() -> None:
    result = hot_path.safety_run(60, rounds=1, before="HEAD")
    configs = result["configs"]
    names = list(configs)
    assert names[1:] == ["features off", "defaults", "features on"]
    assert names[0].startswith("before (")
    assert configs["features off"]["options"] == ["scrub"]
    assert configs["defaults"]["options"] == []
    assert configs["features on"]["options"] == [
        "before_send",
        "compression",
        "sampler",
        "spool_dir",
    ]
    here = str(ROOT / "hiveloop_async")
    assert not configs[names[0]]["sdk_file"].startswith(here)  # the worktree's package
    assert configs["defaults"]["sdk_file"].startswith(here)
    for res in configs.values():
        assert set(res["shapes"]) == {"with", "async with", "sync decorator", "async decorator"}
        for fig in res["shapes"].values():
            assert fig["gc_on"]["n"] == 60
            assert fig["stats"]["dropped_total"] == 0  # everything recorded was delivered
    assert "features on" in hot_path.safety_table(result)


@pytest.mark.parametrize(
    ("queue", "mode"), [("big", "thread"), ("big", "loop"), ("default", "thread")]
)
def test_burst_counts_delivery_at_the_sink(sinks: dict[str, Sink], queue: str, mode: str) -> None:
    res = sdk_ours.burst(sinks["ok"].url, 500, queue=queue, mode=mode)
    assert res["delivered_block_events"] == 1000
    assert res["share"] == 1.0
    assert res["events_per_s"] > 0 and res["cpu_us_per_block"] > 0


def test_memory_with_the_sink_refusing(sinks: dict[str, Sink]) -> None:
    res = sdk_ours.memory(sinks["refuse"].url, 1000)
    assert res["tracemalloc"]["queue_depth"] >= 2000
    assert res["tracemalloc"]["per_event"] > 0


def test_loop_lag_runs_in_both_modes(sinks: dict[str, Sink]) -> None:
    res = sdk_ours.loop_lag(sinks["ok"].url, seconds=0.3, events_per_s=2000)
    for kind in ("baseline", "loop", "thread"):
        assert res[kind]["ticks"] > 0
    assert res["loop"]["dropped_total"] == 0


def test_shutdown_against_a_sink_that_never_answers(sinks: dict[str, Sink]) -> None:
    res = sdk_ours.shutdown_never(sinks["never"].url, blocks=50, timeout=0.3)
    for mode in ("thread", "loop"):
        assert res[mode]["timed_out"] is True
        assert res[mode]["seconds"] < 5
    assert res["sender_threads_left"] == []


def test_server_ingest_figure() -> None:
    """The ingest-rate row of the table comes from the local server's own benchmark."""
    res = sdk_ours.server_ingest(1000)
    assert res["summary"].endswith("events/s")
    assert [r["stored"] for r in res["runs"]] == [1000] * len(res["runs"])
    assert res["rejected"] == 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_sink_counts_otlp_protobuf_spans_by_name() -> None:
    def span(name: str) -> bytes:
        # trace_id (1), span_id (2), name (5), kind (6, varint), start time (7, fixed64)
        return (
            _field(1, b"t" * 16)
            + _field(2, b"s" * 8)
            + _field(5, name.encode())
            + _varint(6 << 3)
            + b"\x01"
            + _varint(7 << 3 | 1)
            + b"\x00" * 8
        )

    scope = _field(1, _field(1, b"bench")) + b"".join(
        _field(2, span(n)) for n in ("step", "step", "task")
    )
    resource = _field(1, b"") + _field(2, scope) + _field(2, _field(2, span("step")))
    body = _field(1, resource) + _field(1, _field(2, _field(2, span("step"))))
    assert count_otlp_protobuf(body) == {"step": 4, "task": 1}


def test_sink_counts_sentry_spans() -> None:
    tx = json.dumps({"type": "transaction", "spans": [{"op": "step"}] * 3}).encode()
    body = (
        b'{"event_id":"x"}\n'
        + json.dumps({"type": "transaction", "length": len(tx)}).encode()
        + b"\n"
        + tx
        + b"\n"
        + b'{"type":"client_report"}\n{}\n'
    )
    assert count_sentry_envelope(body) == (1, 3)


def test_percentile_and_summary() -> None:
    samples = _harness.new_samples(100)
    for i in range(100):
        samples[i] = (i + 1) * 1000
    s = _harness.summarize(samples, overhead_ns=0)
    assert s["median_us"] == 50.0
    assert s["p99_us"] == 99.0


def test_http_ceiling_delivers_every_event() -> None:
    # run() raises unless the sink counted every event of every round.
    rows = http_ceiling.run(requests=5, events_per_request=3)
    assert [r["concurrency"] for r in rows] == [1, 4, 8]
    assert all(r["events_per_s"] > 0 and r["client_cpu_us_per_request"] > 0 for r in rows)


def test_http_compression_rows_count_the_gzip_bodies_on_the_wire() -> None:
    # run_compression() raises unless the sink counted every event; gzip must shrink the wire.
    rows = http_ceiling.run_compression(events=400, rounds=1)
    none, gz = rows
    assert (none["compression"], gz["compression"]) == ("none", "gzip")
    assert none["wire_bytes_per_event"] == none["json_bytes_per_event"] > 0
    assert 0 < gz["wire_bytes_per_event"] < none["wire_bytes_per_event"] / 3
    # The same events; only the batches' envelopes depend on timing.
    assert abs(gz["json_bytes_per_event"] / none["json_bytes_per_event"] - 1) < 0.1


def test_http_floor_posts_every_body_both_ways() -> None:
    # run_floor() raises unless the sink counted every event of both ways' POSTs, and the
    # hand-written exchange raises on any answer but a 2xx.
    floor = http_ceiling.run_floor(rounds=2, block=3, events_per_request=2)
    assert floor["aiohttp"] > 0 and floor["minimal"] > 0
    assert floor["ratio"] > 0


# -- make bench-llm ---------------------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _otlp_body(names: list[str]) -> bytes:
    spans = b"".join(_field(2, _field(1, b"t" * 16) + _field(5, n.encode())) for n in names)
    return _field(1, _field(2, spans))


def test_sink_counts_what_langfuse_and_langsmith_send() -> None:
    """The routes the peers of ``make bench-llm`` export to, each counted from the body."""
    with Sink("ok") as sink:
        # Langfuse: OTLP protobuf, gzip as its exporter sends it by default
        status, _ = _post(
            sink.url + "/api/public/otel/v1/traces",
            gzip.compress(_otlp_body(["OpenAI-generation", "OpenAI-generation"])),
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        assert status == 200
        status, body = _post(
            sink.url + "/api/public/ingestion",
            json.dumps({"batch": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 207
        assert [s["id"] for s in json.loads(body)["successes"]] == ["a", "b", "c"]
        # LangSmith: server info first, then multipart and batch ingestion
        with urllib.request.urlopen(sink.url + "/info", timeout=10) as resp:
            info = json.loads(resp.read())
        assert info["batch_ingest_config"]["use_multipart_endpoint"] is True
        assert "zstd_compression_enabled" not in info["instance_flags"]
        parts = [
            ("post.r1", b'{"name":"ChatOpenAI"}'),
            ("post.r1.inputs", b'{"messages":[]}'),
            ("patch.r1", b'{"end_time":"x"}'),
            ("patch.r1.outputs", b"{}"),
            ("post.r2", b"{}"),
            ("attachment.r2.file", b"xx"),
            ("feedback.r2", b"{}"),
        ]
        multipart = (
            b"".join(
                b'--BND\r\nContent-Disposition: form-data; name="%s"\r\n'
                b"Content-Type: application/json\r\n\r\n%s\r\n" % (name.encode(), data)
                for name, data in parts
            )
            + b"--BND--\r\n"
        )
        status, _ = _post(
            sink.url + "/runs/multipart",
            multipart,
            {"Content-Type": "multipart/form-data; boundary=BND"},
        )
        assert status == 202
        batch = {"post": [{"id": "r3"}], "patch": [{"id": "r3"}, {"id": "r4"}]}
        status, _ = _post(
            sink.url + "/runs/batch",
            json.dumps(batch).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200
        status, _ = _post(sink.url + "/api/public/projects", b"", {})
        assert status == 404
        counts = sink.counts()
    assert counts["langfuse_spans"] == 2
    assert counts["langfuse_name:OpenAI-generation"] == 2
    assert counts["langfuse_events"] == 3
    assert counts["langsmith_posts"] == 3
    assert counts["langsmith_patches"] == 3
    assert counts["unrouted:POST /api/public/projects"] == 1
    assert counts.get("bad_requests", 0) == 0


def test_llm_bench_measures_bare_and_ours_and_counts_every_export() -> None:
    """``python -m benchmarks.llm --skip-peers`` on tiny sizes: every configuration ran in
    every round, and every instrumented call reached the sink as one ``llm_call``."""
    res = llm.run(calls=3, rounds=2, chunks=5, peers=False)
    assert set(res["summary"]) == set(llm.KEYS)
    for key in llm.KEYS:
        row = res["summary"][key]
        assert "error" not in row["bare"], row
        ours = row["ours"]
        assert ours["per_call_items"] == [3, 3]
        assert ours["verified"] is True
        assert ours["cpu_us"] > 0 and ours["wall_us"] > 0
        for r in res["raw"]["ours"]:
            assert r[key]["exported"]["hiveboard_llm_calls"] == 3
    assert res["unrouted"] == {} and res["bad_requests"] == 0
    text = llm.table(res)
    assert "hiveloop_async" in text and "NOT ALL EXPORTED" not in text


def test_llm_summary_subtracts_the_same_rounds_bare_client() -> None:
    def figs(cpu: float, wall: float, items: int = 10) -> dict[str, Any]:
        return {
            "cpu_us_per_call": cpu,
            "wall_median_us": wall,
            "flush_ms": 1.0,
            "per_call_items": items,
            "calls": 10,
            "verified": items == 10,
            "exported": {},
        }

    raw: dict[str, list[dict[str, Any]]] = {
        "bare": [{"sync/plain": figs(100, 200)}, {"sync/plain": figs(300, 400)}],
        "ours": [{"sync/plain": figs(110, 205)}, {"sync/plain": figs(330, 425)}],
        "langfuse": [{"sync/plain": figs(300, 300)}, {"sync/plain": figs(500, 800, 9)}],
        "langsmith": [{"error": "boom"}, {"sync/plain": figs(1, 1)}],
    }
    row = llm.summarize(raw, ("bare", "ours", "langfuse", "langsmith"))["sync/plain"]
    assert row["ours"]["added_cpu_us"] == 20  # median of +10 and +30
    assert row["ours"]["added_wall_us"] == 15
    assert row["langfuse"]["added_cpu_us"] == 200
    assert row["langfuse"]["verified"] is False
    assert row["langsmith"] == {"error": "boom"}
    assert row["ratio"] == {"langfuse_cpu": 0.1, "langfuse_wall": 0.06}


def test_flush_cost_measures_each_flush_size_and_each_wake_condition() -> None:
    from benchmarks import flush_cost

    flushes = flush_cost.flush_cost(rounds=2)
    assert set(flushes) == {"scrub on", "scrub off"}
    for by_size in flushes.values():
        assert sorted(by_size) == [2, 27, 100]
        assert all(v > 0 for v in by_size.values())
    wake = flush_cost.run(rounds=4, pause=0.001)
    assert set(wake) == set(flush_cost.CONDITIONS)
    assert all(v > 0 for v in wake.values())
