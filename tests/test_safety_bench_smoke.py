"""``make bench-safety`` runs end to end on tiny sizes (no timing is asserted)."""

from __future__ import annotations

from benchmarks import safety


def test_the_safety_benchmark_runs_and_measures_every_part() -> None:
    result = safety.run(tasks=3, batches=3)
    # per task: started + completed, 3 actions (started + completed), 3 LLM calls
    assert result["events"]["count"] == 3 * 11
    assert len(result["scrub (µs per event)"]) == 6
    assert all(v > 0 for v in result["scrub (µs per event)"].values())
    assert len(result["before_send (µs per event)"]) == 3
    assert result["spool"]["spool write, batches/s"] > 0
