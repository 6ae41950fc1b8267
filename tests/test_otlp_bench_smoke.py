"""``python -m benchmarks.otlp --stages`` runs end to end on a small burst (the figures
themselves are benchmarks' business, not a test's: only that every stage was measured)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stages_breakdown_runs_and_measures_every_stage() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIVELOOP_", "BENCH_"))}
    env.update(BENCH_OTLP_TASKS="200", BENCH_OTLP_ROUNDS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.otlp", "--stages"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("config"))
    row = next(line for line in lines if line.startswith("ours-stages"))
    names = header.split()[1:]
    values = dict(zip(names, (float(v) for v in row.split()[1:]), strict=True))
    assert names == [
        "wire_json", "scrub", "assembly", "otlp_encoding", "wrappers", "rest", "sender_thread",
    ]  # fmt: skip
    for stage in ("wire_json", "scrub", "assembly", "otlp_encoding", "sender_thread"):
        assert values[stage] > 0, (stage, proc.stdout)
    assert values["sender_thread"] >= values["assembly"] + values["otlp_encoding"]
