"""Per-block caller cost of hiveloop_async against the CPython floor (``make bench-hot``).

``python -m benchmarks.hot_path [--blocks N] [--peer-blocks N] [--skip-peers] [--json PATH]``

``python -m benchmarks.hot_path --safety [--before REF] [--rounds N]``: the production-safety
features' cost on the recording path instead. Every shape, sink answering and drained, with
those features off (``scrub=False``), at the defaults (scrubbing on), and all on (scrubbing,
a ``before_send`` copying every event, a sampler deciding every root task, gzip, a spool
directory), and with ``--before REF`` the same defaults on the package as it was at git
``REF`` (checked out in a temporary worktree): each configuration in its own process, the
configurations alternated over the rounds (mirrored order), medians. Absolute µs compare
here since every process runs on the same machine in the same minutes; each process's own
floor is in the table too.

After our shapes, the same ``with`` block is measured for each peer (hiveloop 0.2.0,
OpenTelemetry, Sentry; installed into ``benchmarks/.peers-venv`` on first use) in the same
run, each against the floor measured in its own process: ratios to the floor compare across
processes, absolute figures only within one.

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
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import _harness as h
from . import sdk_ours
from .run import NAMES, PEERS, ensure_peers, figure
from .sink import ROOT, Sink

GOALS = {"with": 2.0, "async with": 2.5, "sync decorator": 2.5, "async decorator": 2.5}
DEFAULT_BLOCKS = 200_000
DEFAULT_PEER_BLOCKS = 20_000
VARIANTS = ("live", "undrained", "full")
TITLES = {
    "live": "sink up, default queue, delivered after every 1,000-block burst",
    "undrained": "sink refusing connections, queue holds all (grows 2 records/block)",
    "full": "sink refusing connections, default queue full: every record drops the oldest",
}


def run(
    blocks: int = DEFAULT_BLOCKS,
    variants: tuple[str, ...] = VARIANTS,
    peers: tuple[str, ...] = (),
    peer_blocks: int = DEFAULT_PEER_BLOCKS,
) -> dict[str, Any]:
    """Measure every shape in each variant, then each peer's ``with`` block (same run)."""
    out: dict[str, Any] = {"blocks": blocks, "machine": h.machine(), "loadavg": os.getloadavg()}
    with Sink("ok") as ok, Sink("refuse") as refuse:
        if peers:
            out["peers_setup"] = ensure_peers()
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
        out["peers"] = {}
        for peer in peers:
            res = figure(peer, "caller_cost", endpoint=ok.url, blocks=peer_blocks)
            if "error" not in res:
                _add_ratios(res)
            out["peers"][peer] = res
    return out


SAFETY_CONFIGS = ("features off", "defaults", "features on")
SAFETY_OPTIONS = {"features off": "off", "defaults": "defaults", "features on": "on"}


def safety_run(blocks: int, rounds: int = 3, before: str | None = None) -> dict[str, Any]:
    """Every shape with the safety features off, at the defaults and on (and at ``before``),
    each configuration in its own process per round, alternated; medians of the rounds."""
    out: dict[str, Any] = {"blocks": blocks, "machine": h.machine(), "loadavg": os.getloadavg()}
    configs = list(SAFETY_CONFIGS)
    with tempfile.TemporaryDirectory() as tmp, Sink("ok") as ok:
        base: str | None = None
        if before is not None:
            base = os.path.join(tmp, "before")
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", base, before],
                check=True,
            )
            commit = subprocess.run(
                ["git", "-C", base, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            configs.insert(0, f"before ({commit})")
        try:
            per_round: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
            per = max(1, blocks // rounds)
            for r in range(rounds):
                for config in configs if r % 2 == 0 else reversed(configs):
                    features = SAFETY_OPTIONS.get(config, "defaults")
                    res = figure(
                        "ours",
                        "caller_cost_features",
                        sdk_path=base if config.startswith("before") else None,
                        endpoint=ok.url,
                        blocks=per,
                        features=features,
                    )
                    if "error" in res:
                        raise RuntimeError(f"{config}: {res['error']}")
                    per_round[config].append(res)
        finally:
            if base is not None:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", base], check=False
                )
        out["configs"] = {}
        for config, results in per_round.items():
            merged = h.merge_rounds(results)
            merged["rounds"] = rounds
            _add_ratios(merged)
            for shape, fig in merged["shapes"].items():  # how far the rounds' medians spread
                meds = [r["shapes"][shape]["gc_on"]["median_us"] for r in results]
                fig["round_medians_us"] = sorted(meds)
            out["configs"][config] = merged
    return out


def safety_table(result: dict[str, Any]) -> str:
    """:func:`safety_run`'s figures: µs per block by shape and configuration."""
    configs = result["configs"]
    first = next(iter(configs.values()))
    lines = [
        f"[safety] sink up, drained after every 1,000-block burst; {first['blocks']:,} blocks "
        f"per shape and configuration over {first['rounds']} alternated rounds; µs per block",
        f"{'shape':<16} {'configuration':<22} {'median':>7} {'rounds min-max':>15} {'p99':>7} "
        f"{'× floor':>8} {'loop':>7} {'floor here':>10}",
    ]
    for shape in first["shapes"]:
        for config, res in configs.items():
            fig = res["shapes"][shape]
            meds = fig.get("round_medians_us") or [0.0]
            spread = f"{meds[0]:.2f}-{meds[-1]:.2f}"
            lines.append(
                f"{shape:<16} {config:<22} {fig['gc_on']['median_us']:>7.3f} {spread:>15} "
                f"{fig['gc_on']['p99_us']:>7.3f} {fig['ratio']:>7.2f}× "
                f"{fig['loop_us_gc_on']:>7.3f} {res['floor']['gc_on']['median_us']:>10.3f}"
            )
    lines.append(
        "features on: scrubbing, before_send copying each event, a sampler deciding every "
        "root task, gzip, a spool directory. rounds min-max: the spread of the per-process "
        "medians, the noise between processes running the same recording code"
    )
    return "\n".join(lines) + "\n"


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
    peers = result.get("peers") or {}
    live = (result.get("live") or {}).get("shapes", {}).get("with")
    if peers and live is not None:
        lines.append("[peers] the `with` block, sink up, drained after every burst (same run)")
        lines.append(
            f"{'sdk':<16} {'median':>8} {'p99':>8} {'× floor':>8} {'× ours':>8}   floor here"
        )
        ours = live["gc_on"]["median_us"] or 1e-9
        ours_floor = result["live"]["floor"]["gc_on"]["median_us"]
        lines.append(
            f"{NAMES['ours']:<16} {ours:>8.3f} {live['gc_on']['p99_us']:>8.3f} "
            f"{live['ratio']:>7.2f}× {1.0:>7.2f}×   {ours_floor:.3f}"
        )
        for peer, res in peers.items():
            if "error" in res:
                lines.append(f"{NAMES[peer]:<16} failed: {res['error'][:80]}")
                continue
            fig = res["shapes"]["with"]
            med = fig["gc_on"]["median_us"]
            # Across processes compare ratios to each one's floor, not absolute times.
            vs_ours = fig["ratio"] / (live["ratio"] or 1e-9)
            lines.append(
                f"{NAMES[peer]:<16} {med:>8.3f} {fig['gc_on']['p99_us']:>8.3f} "
                f"{fig['ratio']:>7.2f}× {vs_ours:>7.1f}×   "
                f"{res['floor']['gc_on']['median_us']:.3f}"
            )
        lines.append("(× ours: the peer's ratio to its floor over ours: how many times our cost)")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="hiveloop_async per-block cost vs the floor")
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS)
    parser.add_argument("--peer-blocks", type=int, default=DEFAULT_PEER_BLOCKS)
    parser.add_argument("--skip-peers", action="store_true", help="only our SDK")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--safety", action="store_true", help="the safety features off, default and on"
    )
    parser.add_argument("--before", default=None, help="with --safety: also this git ref")
    parser.add_argument("--rounds", type=int, default=3, help="with --safety")
    args = parser.parse_args(argv)
    if args.safety:
        result = safety_run(args.blocks, args.rounds, args.before)
        sys.stdout.write(safety_table(result))
    else:
        result = run(
            args.blocks, peers=() if args.skip_peers else PEERS, peer_blocks=args.peer_blocks
        )
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
