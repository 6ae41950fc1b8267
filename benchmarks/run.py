"""hiveloop_async side by side with its peers, every figure of product.md §6 (``make bench``).

``python -m benchmarks.run [--quick] [--soak [--soak-minutes M]] [--skip-peers]``

* installs the peers into ``benchmarks/.peers-venv`` (``python -m venv`` + pip: hiveloop
  0.2.0, the OpenTelemetry SDK with its OTLP/HTTP exporter, the Sentry SDK) unless already
  there with the same requirements;
* starts the sinks (:mod:`benchmarks.sink`: one answering, one that never answers, one that
  refuses connections) on 127.0.0.1, shared by every SDK;
* runs every figure of every SDK in its own subprocess (ours with this interpreter, the peers
  with the peers' one) through :mod:`benchmarks.worker`;
* prints one table and writes the figures to ``benchmarks/results/latest.json``.

``--soak`` (not part of CI) instead records with our SDK for minutes against a refusing sink
and prints the RSS over time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import _harness as h
from .sink import ROOT, Sink

PEERS_VENV = ROOT / "benchmarks" / ".peers-venv"
PEER_REQUIREMENTS = (
    "hiveloop==0.2.0",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "sentry-sdk",
)
RESULTS = ROOT / "benchmarks" / "results"
PEERS = ("hiveloop", "otel", "sentry")
NAMES = {
    "ours": "hiveloop_async",
    "hiveloop": "hiveloop 0.2.0",
    "otel": "OpenTelemetry",
    "sentry": "Sentry",
}

FULL = {
    "caller_ours": 100_000,
    "caller_peers": 20_000,
    "burst": 100_000,
    "memory": 100_000,
    "lag_s": 3.0,
    "ingest_events": 100_000,
}
QUICK = {
    "caller_ours": 5_000,
    "caller_peers": 2_000,
    "burst": 10_000,
    "memory": 10_000,
    "lag_s": 1.0,
    "ingest_events": 10_000,
}


# -- the peers' environment ------------------------------------------------------------------


def peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def ensure_peers(
    venv: Path = PEERS_VENV, requirements: tuple[str, ...] = PEER_REQUIREMENTS
) -> dict[str, Any]:
    """Create the peers' venv and install them, unless done with the same requirements."""
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(requirements)
    python = venv / "bin" / "python"
    t0 = time.monotonic()
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        log(f"installing the peers into {venv.relative_to(ROOT)} ...")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *requirements,
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        stamp.write_text(wanted)
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {"install_s": round(time.monotonic() - t0, 1), "packages": freeze}


# -- running one figure ----------------------------------------------------------------------


def figure(
    sdk: str,
    name: str,
    timeout: float = 300,
    sdk_path: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run one figure of one SDK in a fresh subprocess; its result, or ``{"error": ...}``.

    ``sdk_path``: for ``ours``, import the package from that checkout instead (a baseline).
    """
    python = sys.executable if sdk == "ours" else str(peers_python())
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("HIVELOOP_BENCH_SDK_PATH", None)
    if sdk_path is not None:
        env["HIVELOOP_BENCH_SDK_PATH"] = sdk_path
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [python, "-m", "benchmarks.worker", sdk, name, json.dumps(kwargs)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    took = time.monotonic() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["worker_s"] = round(took, 1)
            log(f"  {NAMES[sdk]:<15} {name:<15} {took:6.1f} s")
            return result
    tail = (proc.stderr or proc.stdout)[-1500:]
    log(f"  {NAMES[sdk]:<15} {name:<15} FAILED\n{tail}")
    return {"error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {proc.returncode}"}


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- the whole run ---------------------------------------------------------------------------


def measure(sizes: dict[str, Any], peers: tuple[str, ...]) -> dict[str, Any]:
    """Every figure for us and for ``peers``; the sinks are started and stopped here."""
    res: dict[str, Any] = {"sizes": sizes, "ours": {}, **{p: {} for p in peers}}
    with Sink("ok") as ok, Sink("never") as never, Sink("refuse") as refuse:
        log("caller cost per block (sender live, delivered after every 1,000-block burst)")
        res["ours"]["caller"] = figure(
            "ours", "caller_cost", endpoint=ok.url, blocks=sizes["caller_ours"]
        )
        for p in peers:
            res[p]["caller"] = figure(
                p, "caller_cost", endpoint=ok.url, blocks=sizes["caller_peers"]
            )
        log(f"{sizes['burst']:,}-block burst: default settings, then a queue that holds it all")
        for queue in ("default", "big"):
            for mode in ("thread", "loop"):
                res["ours"][f"burst_{queue}_{mode}"] = figure(
                    "ours", "burst", endpoint=ok.url, blocks=sizes["burst"], queue=queue, mode=mode
                )
            for p in peers:
                res[p][f"burst_{queue}"] = figure(
                    p, "burst", endpoint=ok.url, blocks=sizes["burst"], queue=queue
                )
        log("memory per queued event while the sink refuses connections")
        res["ours"]["memory"] = figure(
            "ours", "memory", endpoint=refuse.url, blocks=sizes["memory"]
        )
        for p in peers:
            res[p]["memory"] = figure(p, "memory", endpoint=refuse.url, blocks=sizes["memory"])
        log("event-loop lag at 50,000 events/s")
        res["ours"]["lag"] = figure("ours", "loop_lag", endpoint=ok.url, seconds=sizes["lag_s"])
        log("shutdown(2.0) against a sink that never answers")
        res["ours"]["shutdown"] = figure("ours", "shutdown_never", endpoint=never.url)
        for p in peers:
            res[p]["shutdown"] = figure(p, "shutdown_never", endpoint=never.url, bound=10.0)
        log("the local server's ingest rate")
        res["ours"]["ingest"] = figure("ours", "server_ingest", events=sizes["ingest_events"])
    return res


# -- the table -------------------------------------------------------------------------------


def _get(d: dict[str, Any], *path: str) -> Any:
    cur: Any = d
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _us(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f} µs"


def _caller(res: dict[str, Any], shape: str, stat: str = "median_us") -> str:
    c = res.get("caller") or {}
    if "error" in c:
        return "error"
    fig = _get(c, "shapes", shape)
    floor = _get(c, "floor", "gc_on", "median_us")
    if fig is None or not floor:
        return "n/a"
    v = fig["gc_on"][stat]
    return f"{v:.2f} µs ({v / floor:.1f}×)"


def rows(res: dict[str, Any], peers: tuple[str, ...]) -> list[tuple[str, list[str], str]]:
    """(figure, [ours, *peers], goal) rows of the table."""
    ours = res["ours"]
    out: list[tuple[str, list[str], str]] = []

    def row(label: str, mine: str, theirs: list[str], goal: str = "") -> None:
        out.append((label, [mine, *theirs], goal))

    def per_peer(fn: Any) -> list[str]:
        return [fn(res[p]) for p in peers]

    row(
        "floor, per-block median (this process)",
        _us(_get(ours, "caller", "floor", "gc_on", "median_us")),
        per_peer(lambda r: _us(_get(r, "caller", "floor", "gc_on", "median_us"))),
    )
    row(
        "caller `with`, median (× floor)",
        _caller(ours, "with"),
        per_peer(lambda r: _caller(r, "with")),
        "≤ 2×",
    )
    row(
        "caller `with`, p99",
        _us(_get(ours, "caller", "shapes", "with", "gc_on", "p99_us")),
        per_peer(lambda r: _us(_get(r, "caller", "shapes", "with", "gc_on", "p99_us"))),
    )
    row(
        "caller `with`, median, gc off",
        _us(_get(ours, "caller", "shapes", "with", "gc_off", "median_us")),
        per_peer(lambda r: _us(_get(r, "caller", "shapes", "with", "gc_off", "median_us"))),
    )
    for shape in ("async with", "sync decorator", "async decorator"):
        row(
            f"caller {shape}, median (× floor)",
            _caller(ours, shape),
            ["-" for _ in peers],
            "≤ 2.5×",
        )
        row(
            f"caller {shape}, p99",
            _us(_get(ours, "caller", "shapes", shape, "gc_on", "p99_us")),
            ["-" for _ in peers],
        )

    def amortized(r: dict[str, Any], key: str) -> str:
        b = r.get(key) or {}
        if "error" in b:
            return "error"
        floor = _get(r, "caller", "floor", "loop_us_gc_on") or _get(
            ours, "caller", "floor", "loop_us_gc_on"
        )
        v = b.get("amortized_us")
        if v is None:
            return "n/a"
        return f"{v:.2f} µs ({v / floor:.1f}×)" if floor else f"{v:.2f} µs"

    row(
        "amortized / block, sender live (loop time / blocks; × floor loop)",
        amortized(ours, "burst_big_thread"),
        per_peer(lambda r: amortized(r, "burst_big")),
        "≤ 4×",
    )
    row(
        "CPU / block, all threads, until delivered",
        _us(_get(ours, "burst_big_thread", "cpu_us_per_block")),
        per_peer(lambda r: _us(_get(r, "burst_big", "cpu_us_per_block"))),
    )

    def rate(b: Any, key: str, unit: str) -> str:
        if not isinstance(b, dict) or "error" in b or b.get(key) is None:
            return "error" if isinstance(b, dict) and "error" in b else "n/a"
        return f"{b[key]:,} {unit}/s ({b['blocks_per_s']:,} blocks/s)"

    row(
        "end-to-end delivery, queue holds the burst",
        rate(ours.get("burst_big_thread"), "events_per_s", "events")
        + " thread; "
        + rate(ours.get("burst_big_loop"), "events_per_s", "events")
        + " loop",
        [
            rate(res[p].get("burst_big"), "items_per_s", "events" if p == "hiveloop" else "spans")
            for p in peers
        ],
        "≥ 150,000 events/s",
    )

    def share(b: Any) -> str:
        if not isinstance(b, dict) or "share" not in b:
            return "error" if isinstance(b, dict) and "error" in b else "n/a"
        return f"{100 * b['share']:.1f}%"

    row(
        "share of the burst delivered, default settings",
        f"{share(ours.get('burst_default_thread'))} thread; "
        f"{share(ours.get('burst_default_loop'))} loop",
        per_peer(lambda r: share(r.get("burst_default"))),
        "100%",
    )

    def mem(r: dict[str, Any]) -> str:
        m = r.get("memory") or {}
        if "error" in m:
            return "error"
        t = m.get("tracemalloc") or {}
        v = t.get("per_event", t.get("per_item"))
        if v is None:
            return "n/a"
        text = f"{v:,.0f} B"
        rss = _get(m, "rss", "per_event")
        return text + (f" ({rss:,.0f} B RSS)" if rss is not None else "")

    row(
        "memory / queued event, sink refusing (tracemalloc)",
        mem(ours),
        per_peer(mem),
        "≤ 300 B",
    )
    lag = ours.get("lag") or {}
    lag_text = (
        "error"
        if "error" in lag
        else f"{lag.get('added_p99_ms_loop', 0):+.2f} ms loop, "
        f"{lag.get('added_p99_ms_thread', 0):+.2f} ms thread (p99 "
        f"{_get(lag, 'loop', 'p99_ms')} / {_get(lag, 'thread', 'p99_ms')} vs "
        f"{lag.get('baseline_p99_ms')} ms without SDK)"
    )
    row(
        "event-loop lag p99 added, 50,000 events/s",
        lag_text,
        ["n/a (no asyncio sender; records < 50k/s)" for _ in peers],
        "≤ 1 ms",
    )

    def shut(r: dict[str, Any]) -> str:
        s = r.get("shutdown") or {}
        if "error" in s:
            return "error"
        if s.get("seconds") is None:
            return f"> {s.get('killed_after_s', 10):g} s (killed)"
        return f"{s['seconds']:.2f} s"

    sh = ours.get("shutdown") or {}
    sh_text = (
        "error"
        if "error" in sh
        else f"{_get(sh, 'thread', 'seconds')} s thread; {_get(sh, 'loop', 'seconds')} s loop"
    )
    row("shutdown(2.0), sink never answers", sh_text, per_peer(shut), "≤ 2.2 s")
    ingest = ours.get("ingest") or {}
    row(
        "local server ingest (benchmarks.server_ingest)",
        str(ingest.get("summary", ingest.get("error", "n/a"))),
        ["-" for _ in peers],
    )
    return out


def render(res: dict[str, Any], peers: tuple[str, ...]) -> str:
    """The table, as GitHub markdown (readable as plain text too)."""
    header = ["figure", NAMES["ours"], *(NAMES[p] for p in peers), "goal"]
    body = [[label, *cells, goal] for label, cells, goal in rows(res, peers)]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in body)])


def notes(res: dict[str, Any], peers: tuple[str, ...]) -> str:
    """Settings and caveats that go with the table."""
    out = []
    ours_d = _get(res, "ours", "caller", "defaults") or {}
    out.append(
        f"- hiveloop_async {ours_d.get('version', '?')}: max_queue_size "
        f"{ours_d.get('max_queue_size')}, "
        f"batch_size {ours_d.get('batch_size')}; `with`/sync decorator with the sender on its "
        "thread (client never started on a loop), `async with`/async decorator with "
        "`async with HiveBoard` (sender on the app's loop); decorator bodies only return (no "
        "public way to reach the current action from inside a decorated function). Loop-mode "
        "burst: one `await asyncio.sleep(0)` per 100 blocks."
    )
    for p in peers:
        d = _get(res, p, "burst_default", "defaults") or _get(res, p, "caller", "defaults") or {}
        cap = _get(res, p, "burst_big", "capacity")
        what = "max_spans per transaction" if p == "sentry" else "queue"
        out.append(
            f"- {NAMES[p]}: defaults {json.dumps(d)}; {what} resized to {cap} for the "
            "'queue holds the burst' and memory figures."
        )
    out.append(
        "- Items on the wire per block: 2 events for hiveloop_async and hiveloop, 1 span for "
        "OpenTelemetry and Sentry. OTLP spans are counted at the sink by walking the protobuf "
        "(span names read, the root span excluded); Sentry spans by parsing each transaction."
    )
    out.append(
        "- Caller cost: per-block median/p99 of blocks timed one by one (timer overhead "
        "subtracted), GC on, paced in bursts of 1,000 blocks with delivery awaited between "
        "bursts (Sentry: one transaction per burst). Ratios are to the floor measured in the "
        "same process."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="hiveloop_async vs its peers")
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or so)")
    parser.add_argument("--soak", action="store_true", help="RSS over time under overload")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--skip-peers", action="store_true", help="only our SDK")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    if args.soak:
        soak(args.soak_minutes)
        return
    started = time.monotonic()
    meta: dict[str, Any] = {
        "machine": h.machine(),
        "loadavg_start": os.getloadavg(),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    peers: tuple[str, ...] = () if args.skip_peers else PEERS
    if peers:
        meta["peers_env"] = ensure_peers()
    res = measure(QUICK if args.quick else FULL, peers)
    meta["loadavg_end"] = os.getloadavg()
    meta["total_s"] = round(time.monotonic() - started, 1)
    res["meta"] = meta
    text = render(res, peers)
    res["table"] = text
    res["notes"] = notes(res, peers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    m = meta["machine"]
    sys.stdout.write(text + "\n\n" + res["notes"] + "\n\n")
    sys.stdout.write(
        f"SDK at {m['commit']}; machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}; "
        "load average "
        f"{meta['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end; "
        f"{meta['total_s']:.0f} s in all; figures in {args.out}\n"
    )


def soak(minutes: float) -> None:
    """Record at full speed for ``minutes`` against a refusing sink; print RSS over time."""
    with Sink("refuse") as refuse:
        res = figure(
            "ours", "soak", timeout=minutes * 60 + 120, endpoint=refuse.url, minutes=minutes
        )
    if "error" in res:
        sys.stdout.write(f"soak failed: {res['error']}\n")
        return
    sys.stdout.write(f"{'t (s)':>7} {'RSS (MB)':>9} {'blocks':>12} {'dropped':>12} {'queue':>7}\n")
    for s in res["samples"]:
        sys.stdout.write(
            f"{s['t']:>7.0f} {s['rss'] / 1e6:>9.1f} {s['blocks']:>12,} {s['dropped']:>12,} "
            f"{s['queue_depth']:>7,}\n"
        )
    out = RESULTS / "soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    sys.stdout.write(
        f"RSS growth after the first minute: {res['rss_growth_after_1min'] / 1e6:.1f} MB\n"
    )


if __name__ == "__main__":
    main()
