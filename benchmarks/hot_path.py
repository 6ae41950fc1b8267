"""Per-block caller cost of hiveloop_async against the CPython floor (``make bench-hot``).

``python -m benchmarks.hot_path [--blocks N] [--json PATH]``

Four shapes (``with``, ``async with``, sync decorator, async decorator; see
:mod:`benchmarks.sdk_ours`), each on a real client whose sender is live against the local
sink (:mod:`benchmarks.sink`), in two variants:

``live``
    the sink answers, default ``max_queue_size``; after every burst of 1,000 blocks the
    benchmark waits for delivery (``flush``), so the queue never overflows: normal operation.
``undrained``
    the sink refuses connections and ``max_queue_size`` holds everything: the queue grows
    by two records per block (what a user sees while the server is down), which is where
    the cyclic GC shows.
``full``
    the sink refuses connections and the queue has its default size: after 10,000 records
    every record takes the overflow path (drop the oldest, count it).

Every block is timed on its own (``perf_counter_ns`` around it, the timing loop's own cost
subtracted); the table gives the median and p99 with the GC on (what users see), the median
with the GC off (how much of the cost is the GC), and the plain loop total per block. The
floor is measured in the same process, the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import _harness as h
from . import sdk_ours
from .sink import Sink

GOALS = {"with": 2.0, "async with": 2.5, "sync decorator": 2.5, "async decorator": 2.5}
DEFAULT_BLOCKS = 200_000
VARIANTS = ("live", "undrained", "full")
TITLES = {
    "live": "sink up, default queue, delivered after every 1,000-block burst",
    "undrained": "sink refusing connections, queue holds all (grows 2 records/block)",
    "full": "sink refusing connections, default queue full: every record drops the oldest",
}


def run(blocks: int = DEFAULT_BLOCKS, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Measure every shape in each variant; return the figures (see the module docstring)."""
    out: dict[str, Any] = {"blocks": blocks, "machine": h.machine(), "loadavg": os.getloadavg()}
    with Sink("ok") as ok, Sink("refuse") as refuse:
        for variant in variants:
            drained = variant == "live"
            res = sdk_ours.caller_cost(
                ok.url if drained else refuse.url,
                blocks,
                drained=drained,
                full_queue=variant == "full",
            )
            _add_ratios(res)
            out[variant] = res
    return out


def _add_ratios(res: dict[str, Any]) -> None:
    floor = res["floor"]
    f_med = floor["gc_on"]["median_us"] or 1e-9
    f_loop = floor["loop_us_gc_on"] or 1e-9
    for shape, fig in res["shapes"].items():
        fig["ratio"] = round(fig["gc_on"]["median_us"] / f_med, 2)
        fig["ratio_loop"] = round(fig["loop_us_gc_on"] / f_loop, 2)
        fig["goal"] = GOALS.get(shape)
        on, off = fig["gc_on"]["median_us"], fig["gc_off"]["median_us"]
        fig["gc_share_loop"] = round(
            max(0.0, fig["loop_us_gc_on"] - fig["loop_us_gc_off"]) / (fig["loop_us_gc_on"] or 1), 3
        )
        fig["gc_share_median"] = round(max(0.0, on - off) / (on or 1), 3)


def table(result: dict[str, Any]) -> str:
    """The figures as a text table (µs per block)."""
    lines = []
    head = (
        f"{'shape':<16} {'sender':<7} {'median':>7} {'p99':>7} {'× floor':>8} {'goal':>6} "
        f"{'gc-off med':>10} {'loop':>7} {'loop gc-off':>11} {'loop × floor':>12}"
    )
    for variant in VARIANTS:
        res = result.get(variant)
        if res is None:
            continue
        floor = res["floor"]
        title = TITLES[variant]
        lines.append(f"[{variant}] {title}; {res['blocks']:,} blocks per shape; µs per block")
        lines.append(head)
        lines.append(
            f"{'floor':<16} {'-':<7} {floor['gc_on']['median_us']:>7.3f} "
            f"{floor['gc_on']['p99_us']:>7.3f} {1.0:>7.2f}× {'':>6} "
            f"{floor['gc_off']['median_us']:>10.3f} {floor['loop_us_gc_on']:>7.3f} "
            f"{floor['loop_us_gc_off']:>11.3f} {1.0:>11.2f}×"
        )
        for shape, fig in res["shapes"].items():
            goal = f"≤{fig['goal']:g}×" if fig.get("goal") else ""
            lines.append(
                f"{shape:<16} {fig['sender']:<7} {fig['gc_on']['median_us']:>7.3f} "
                f"{fig['gc_on']['p99_us']:>7.3f} {fig['ratio']:>7.2f}× {goal:>6} "
                f"{fig['gc_off']['median_us']:>10.3f} {fig['loop_us_gc_on']:>7.3f} "
                f"{fig['loop_us_gc_off']:>11.3f} {fig['ratio_loop']:>11.2f}×"
            )
        lines.append(f"timer overhead subtracted: {floor['timer_overhead_ns']:.0f} ns")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="hiveloop_async per-block cost vs the floor")
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.blocks)
    sys.stdout.write(table(result) + "\n")
    m = result["machine"]
    sys.stdout.write(
        f"SDK at {m['commit']}; machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}; "
        f"load average at start {result['loadavg'][0]:.2f}\n"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
