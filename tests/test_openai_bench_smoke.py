"""``make bench-llm``'s default (A/B) method on tiny sizes, bare and ours only."""

from __future__ import annotations

from benchmarks import llm
from benchmarks.sink import ROOT


def test_llm_ab_bench_alternates_blocks_and_counts_every_export() -> None:
    """Every mode and case ran its pairs of blocks, every wrapped call reached the sink as
    one ``llm_call``, and our sender thread's CPU is seen in the sync blocks."""
    res = llm.run_ab(calls=6, block=3, rounds=1, chunks=5, peers=False)
    assert set(res["summary"]) == set(llm.KEYS)
    for key in llm.KEYS:
        for config in ("ours", "ours_nousage"):
            f = res["summary"][key][config]
            assert f["pairs"] == 2, f
            assert f["verified"] is True and f["per_call_items"] == f["wrapped_calls"] == 12
            assert f["bare_us"] > 0
    pairs = res["raw"]["ours"][0]["sync/plain"]["pairs"]
    assert all(p["wrapped"]["by_thread"].get("hiveloop_async.sender", 0) > 0 for p in pairs)
    assert res["unrouted"] == {} and res["bad_requests"] == 0
    text = llm.table_ab(res)
    assert "hiveloop_async" in text and "NOT ALL EXPORTED" not in text


def test_llm_ab_bench_baseline_checkout_runs_next_to_ours() -> None:
    """``--baseline DIR`` runs ours from another checkout (here this one) as two more
    configurations in the same run, each exporting every call, with the change per case."""
    res = llm.run_ab(calls=4, block=2, rounds=1, chunks=3, peers=False, baseline=ROOT)
    assert res["configs"] == ["ours", "ours_nousage", "baseline", "baseline_nousage"]
    assert res["baseline"]["path"] == str(ROOT) and res["baseline"]["commit"]
    for key in llm.KEYS:
        row = res["summary"][key]
        if key.split("/")[1] not in llm.BASELINE_CASES:  # not asked of an older worker
            assert "baseline" not in row and "change" not in row
            continue
        for config in ("baseline", "baseline_nousage"):
            assert row[config]["verified"] is True and row[config]["per_call_items"] == 8
        assert set(row["change"]) == {"ours", "ours_nousage"}
    assert "ours - baseline" in llm.table_ab(res)
