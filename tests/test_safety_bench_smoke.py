"""``make bench-safety`` runs end to end on tiny sizes (no timing is asserted)."""

from __future__ import annotations

from benchmarks import safety


def test_the_safety_benchmark_runs_and_measures_every_part() -> None:
    result = safety.run(tasks=3, batches=3, sender_tasks=3, rounds=1)
    # per task: started + completed, 3 actions (started + completed), 3 LLM calls
    assert result["events"]["count"] == 3 * 11
    assert len(result["scrub (µs per event)"]) == 6
    assert all(v > 0 for v in result["scrub (µs per event)"].values())
    assert len(result["before_send (µs per event)"]) == 3
    spool = result["spool"]
    assert spool["spool write, batches/s"] > 0
    # the replay went through a real client to the sink: every spooled event, counted
    assert spool["replayed (stats)"] == 3 * 33
    assert spool["replay to the sink at start, events/s"] > 0
    sender = result["sender CPU, thread mode, µs per event (medians)"]
    assert set(sender) == set(safety.sender_configs("/unused"))
    assert all(v > 0 for v in sender.values())
