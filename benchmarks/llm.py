"""Added cost per OpenAI call: ``contrib.openai.instrument`` next to Langfuse's and
LangSmith's OpenAI wrappers, against the bare client, in the same run (``make bench-llm``).

    python -m benchmarks.llm [--calls 2000] [--block 25] [--rounds 2] [--skip-peers]
                             [--baseline ../other-checkout]
    python -m benchmarks.llm --method process [--calls 200] [--rounds 5]

The default method (``ab``, :func:`run_ab`) runs each wrapper in its own processes next to
a bare client of the same class talking to the same fake server, alternating blocks of
``--block`` bare and wrapped calls (A B B A); a wrapped block ends with the SDK's flush. Per
block it reads the CPU clock of the calling thread and of every other thread
(``pthread_getcpuclockid``); the added cost per call is the wrapped block's minus the
adjacent bare block's, median and quartiles over the pairs, split into calling thread and
background threads. Langfuse's drop-in patches the ``openai`` classes: its bare blocks run
with the original class attributes put back (``llm_worker.Toggle``). ``ours_nousage`` is ours
with ``include_usage=False`` (the peers do not ask for the usage chunk). The
``stream_usage`` case is the same stream with the caller's own
``stream_options={"include_usage": True}``: the usage chunk is then in the bare client's
figure too, and the peers read the tokens as we do (the like-for-like stream). ``--baseline DIR``
adds ``baseline`` and ``baseline_nousage``: the same two configurations with the
``hiveloop_async`` of another checkout (e.g. a worktree of main), run by that checkout's own
``benchmarks.llm_worker``, interleaved with the others in the same run (before/after A/B).

The older method (``--method process``) is described below; it cannot resolve costs below
a few hundred µs on a loaded machine.

* installs the peers into ``benchmarks/.llm-peers-venv`` (as ``make bench`` does for its
  own peers: ``langfuse``, ``langsmith``, the same ``openai`` and ``httpx`` as ours, and
  our runtime dependencies; ``hiveloop_async`` itself is imported from this checkout), so
  that every configuration, the bare client included, runs on one interpreter with the
  same packages; ``--skip-peers`` runs bare and ours only, with this interpreter;
* starts the fake OpenAI server of ``tests/providers`` in its own process and the
  benchmark sink (:mod:`benchmarks.sink`) in another, both on 127.0.0.1: Langfuse exports
  OTLP to it (``LANGFUSE_BASE_URL``), LangSmith its runs (``LANGSMITH_ENDPOINT``), ours
  HiveBoard events; the keys are dummies and nothing leaves the machine;
* each round runs every configuration once, in a fresh process
  (:mod:`benchmarks.llm_worker`), in an order that rotates from round to round: the sync
  and the async client, a plain call and a call streamed in ``--chunks`` chunks, each
  ``--calls`` times, then the SDK's own flush inside the measured window;
* the cost is the process CPU time of that window per call (every thread, so the peers'
  background exporters are counted) and the median wall time of one call; the added cost
  of a wrapper is its figure minus the bare client's of the same round, and the table
  shows the median over the rounds and our ratio to each peer;
* what reached the sink is counted (one ``llm_call`` event, one Langfuse span, one
  LangSmith run per call): a configuration that did not export every call is marked.

Writes ``benchmarks/results/llm.json`` and ``llm.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .run import ensure_peers
from .sink import ROOT, Sink

LLM_PEERS_VENV = ROOT / "benchmarks" / ".llm-peers-venv"
PEERS = ("langfuse", "langsmith")
NAMES = {
    "bare": "bare client",
    "ours": "hiveloop_async",
    "ours_nousage": "ours, no usage",
    "baseline": "baseline",
    "baseline_nousage": "base, no usage",
    "langfuse": "Langfuse",
    "langsmith": "LangSmith",
}
RESULTS = ROOT / "benchmarks" / "results"
KEYS = (
    "sync/plain",
    "sync/stream",
    "sync/stream_usage",
    "async/plain",
    "async/stream",
    "async/stream_usage",
)
#: The cases a ``--baseline`` checkout's worker is asked for (an older worker knows no
#: ``stream_usage``, and would run it as ``stream``).
BASELINE_CASES = ["plain", "stream"]


def peer_requirements() -> tuple[str, ...]:
    """The peers, with the ``openai`` and ``httpx`` this interpreter has (same client code
    for every configuration) and our runtime dependencies."""
    from importlib import metadata

    pinned = tuple(f"{n}=={metadata.version(n)}" for n in ("openai", "httpx"))
    return ("langfuse", "langsmith", *pinned, "aiohttp", "anyio", "orjson")


def peer_env(sink_url: str) -> dict[str, str]:
    """The environment of a worker: the peers pointed at the sink, dummy keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGCHAIN_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        LANGFUSE_PUBLIC_KEY="pk-lf-bench",
        LANGFUSE_SECRET_KEY="sk-lf-bench",
        LANGFUSE_BASE_URL=sink_url,
        LANGFUSE_HOST=sink_url,
        LANGSMITH_TRACING="true",
        LANGSMITH_API_KEY="lsv2_bench",
        LANGSMITH_ENDPOINT=sink_url,
        LANGSMITH_PROJECT="bench-llm",
        OPENAI_API_KEY="sk-bench",
    )
    return env


class Provider:
    """The fake OpenAI server (``tests/providers/server.py``) in its own process, so that
    its CPU time is not the worker's."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.llm", "--serve-provider"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError("the fake provider did not start")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}/v1"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve_provider() -> None:
    """Run the fake provider until killed; print its port first."""
    from tests.providers.server import FakeProvider

    server = FakeProvider().start()
    print(json.dumps({"port": server.port}), flush=True)
    while True:
        time.sleep(3600)


#: ``--baseline`` configurations -> the configuration their worker runs.
BASELINE = {"baseline": "ours", "baseline_nousage": "ours_nousage"}


def worker(
    python: str, config: str, env: dict[str, str], root: Path = ROOT, **kwargs: Any
) -> dict[str, Any]:
    """One configuration in a fresh process, its worker and ``hiveloop_async`` imported
    from the checkout ``root``: its figures, or ``{"error": ...}``."""
    if root != ROOT:
        env = {**env, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [python, "-m", "benchmarks.llm_worker", config, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=600,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (proc.stderr or proc.stdout).strip()
    log(f"  {config} FAILED\n{tail[-2000:]}")
    return {"error": tail.splitlines()[-1] if tail else f"exit {proc.returncode}"}


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run(
    calls: int = 200,
    rounds: int = 5,
    chunks: int = 50,
    peers: bool = True,
    modes: tuple[str, ...] = ("sync", "async"),
) -> dict[str, Any]:
    """Every round of every configuration; the raw figures and their medians."""
    configs = ("bare", "ours", *PEERS) if peers else ("bare", "ours")
    res: dict[str, Any] = {
        "calls": calls,
        "rounds": rounds,
        "chunks": chunks,
        "configs": list(configs),
    }
    if peers:
        res["install"] = ensure_peers(LLM_PEERS_VENV, peer_requirements())
        python = str(LLM_PEERS_VENV / "bin" / "python")
    else:
        python = sys.executable
    res["interpreter"] = python
    provider = Provider()
    try:
        with Sink("ok") as sink:
            env = peer_env(sink.url)
            raw: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
            for r in range(rounds):
                order = configs[r % len(configs) :] + configs[: r % len(configs)]
                t0 = time.monotonic()
                for config in order:
                    raw[config].append(
                        worker(
                            python,
                            config,
                            env,
                            provider_url=provider.url,
                            sink_url=sink.url,
                            calls=calls,
                            chunks=chunks,
                            modes=list(modes),
                        )
                    )
                log(f"  round {r + 1}/{rounds}: {' '.join(order)}  {time.monotonic() - t0:.1f} s")
            counts = sink.counts()
    finally:
        provider.close()
    res["raw"] = raw
    res["unrouted"] = {k: v for k, v in counts.items() if k.startswith("unrouted:")}
    res["bad_requests"] = counts.get("bad_requests", 0)
    res["summary"] = summarize(raw, configs)
    return res


def summarize(raw: dict[str, list[dict[str, Any]]], configs: tuple[str, ...]) -> dict[str, Any]:
    """Per mode/case: medians over the rounds of each figure, of the added cost against the
    same round's bare client, the exported items, and our ratio to each peer."""
    out: dict[str, Any] = {}
    rounds = len(raw["bare"])
    for key in KEYS:
        if not all(key in r for r in raw["bare"]):
            continue
        row: dict[str, Any] = {}
        for config in configs:
            runs = raw[config]
            if any("error" in r or key not in r for r in runs):
                row[config] = {"error": next((r.get("error") for r in runs if "error" in r), "?")}
                continue
            figs = [r[key] for r in runs]
            bare = [raw["bare"][i][key] for i in range(rounds)]
            added = [
                f["cpu_us_per_call"] - b["cpu_us_per_call"] for f, b in zip(figs, bare, strict=True)
            ]
            row[config] = {
                "cpu_us": statistics.median(f["cpu_us_per_call"] for f in figs),
                "wall_us": statistics.median(f["wall_median_us"] for f in figs),
                "added_cpu_us": statistics.median(added),
                "added_cpu_quartiles_us": _quartiles(added),
                "added_wall_us": statistics.median(
                    f["wall_median_us"] - b["wall_median_us"]
                    for f, b in zip(figs, bare, strict=True)
                ),
                "flush_ms": statistics.median(f["flush_ms"] for f in figs),
                "per_call_items": [f["per_call_items"] for f in figs],
                "calls": [f["calls"] for f in figs],
                "verified": all(f["verified"] for f in figs),
                "exported_last_round": figs[-1]["exported"],
            }
        ours = row.get("ours", {})
        for peer in PEERS:
            p = row.get(peer)
            if p is None or "error" in p or "error" in ours:
                continue
            for fig in ("added_cpu_us", "added_wall_us"):
                # a ratio of a cost within the noise (zero or below) would mean nothing
                if p[fig] > 0 and ours[fig] > 0:
                    row.setdefault("ratio", {})[f"{peer}_{fig[6:-3]}"] = round(
                        ours[fig] / p[fig], 3
                    )
        out[key] = row
    return out


def _quartiles(values: list[float]) -> list[float]:
    """The first and third quartiles (the values themselves when there are fewer than 2)."""
    if len(values) < 2:
        return [round(v, 1) for v in values * 2][:2]
    q = statistics.quantiles(values, n=4)
    return [round(q[0], 1), round(q[2], 1)]


def table(res: dict[str, Any]) -> str:
    """The side-by-side table of :func:`run`'s result."""
    lines = [
        f"added cost per OpenAI call vs the bare client, {res['calls']} calls x "
        f"{res['rounds']} interleaved rounds per configuration, fake server on 127.0.0.1, "
        f"stream = {res['chunks']} chunks; medians over the rounds",
        "cpu = process CPU time per call incl. background exporter threads and the final "
        "flush; wall = median wall time of one call; +cpu IQR = quartiles of the per-round "
        "added cost (the noise)",
        "",
        f"{'case':<19}{'configuration':<16}{'cpu µs':>9}{'+cpu µs':>10}{'+cpu IQR':>18}"
        f"{'wall µs':>10}{'+wall µs':>10}{'flush ms':>10}  exported",
    ]
    for key, row in res["summary"].items():
        for config in res["configs"]:
            f = row.get(config, {})
            if "error" in f:
                lines.append(f"{key:<19}{NAMES[config]:<16}  FAILED: {f['error']}")
                continue
            items = f["per_call_items"]
            exp = (
                "-"
                if config == "bare"
                else f"{min(items)}..{max(items)} of {f['calls'][0]} per round"
                + ("" if f["verified"] else "  NOT ALL EXPORTED")
            )
            added = "" if config == "bare" else f"{f['added_cpu_us']:+10.1f}"
            q1, q3 = f["added_cpu_quartiles_us"]
            iqr = "" if config == "bare" else f"{q1:+.0f}..{q3:+.0f}"
            added_w = "" if config == "bare" else f"{f['added_wall_us']:+10.1f}"
            lines.append(
                f"{key:<19}{NAMES[config]:<16}{f['cpu_us']:9.1f}{added:>10}{iqr:>18}"
                f"{f['wall_us']:10.1f}{added_w:>10}{f['flush_ms']:10.2f}  {exp}"
            )
        ratio = row.get("ratio")
        if ratio:
            lines.append(
                f"{'':<19}ours / peer (added, where both are above zero): "
                + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in ratio.items())
            )
        lines.append("")
    if res.get("unrouted"):
        lines.append(f"requests the sink did not know: {res['unrouted']}")
    if res.get("bad_requests"):
        lines.append(f"requests the sink could not parse: {res['bad_requests']}")
    versions = {
        c: runs[0].get("versions")
        for c, runs in res["raw"].items()
        if runs and runs[0].get("versions")
    }
    lines.append(f"versions: {json.dumps(versions, sort_keys=True)}")
    lines.append(f"interpreter: {res['interpreter']}")
    return "\n".join(lines)


# -- the A/B method (default): bare and wrapped alternated block by block in one process ------


def run_ab(
    calls: int = 2000,
    block: int = 25,
    rounds: int = 2,
    chunks: int = 50,
    peers: bool = True,
    modes: tuple[str, ...] = ("sync", "async"),
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Each wrapper against the bare client in its own processes (``rounds`` of them, the
    order of the wrappers rotating), ``calls`` wrapped calls per mode and case in all.
    ``baseline``: another checkout whose ``hiveloop_async`` runs as ``baseline`` and
    ``baseline_nousage`` (see the module's docstring)."""
    configs: tuple[str, ...] = ("ours", "ours_nousage")
    if baseline is not None:
        configs += tuple(BASELINE)
    if peers:
        configs += PEERS
    res: dict[str, Any] = {
        "method": "ab",
        "calls": calls,
        "block": block,
        "rounds": rounds,
        "chunks": chunks,
        "configs": list(configs),
    }
    if baseline is not None:
        res["baseline"] = _describe_checkout(baseline)
    if peers:
        res["install"] = ensure_peers(LLM_PEERS_VENV, peer_requirements())
        python = str(LLM_PEERS_VENV / "bin" / "python")
    else:
        python = sys.executable
    res["interpreter"] = python
    per_round = max(block, calls // rounds)
    provider = Provider()
    try:
        with Sink("ok") as sink:
            env = peer_env(sink.url)
            raw: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
            for r in range(rounds):
                order = configs[r % len(configs) :] + configs[: r % len(configs)]
                for config in order:
                    t0 = time.monotonic()
                    root = ROOT
                    if config in BASELINE:
                        assert baseline is not None
                        root = baseline
                    raw[config].append(
                        worker(
                            python,
                            BASELINE.get(config, config),
                            env,
                            root,
                            method="ab",
                            provider_url=provider.url,
                            sink_url=sink.url,
                            calls=per_round,
                            block=block,
                            chunks=chunks,
                            modes=list(modes),
                            **({"cases": BASELINE_CASES} if config in BASELINE else {}),
                        )
                    )
                    log(f"  round {r + 1}/{rounds}: {config}  {time.monotonic() - t0:.1f} s")
            counts = sink.counts()
    finally:
        provider.close()
    res["raw"] = raw
    res["unrouted"] = {k: v for k, v in counts.items() if k.startswith("unrouted:")}
    res["bad_requests"] = counts.get("bad_requests", 0)
    res["summary"] = summarize_ab(raw, configs)
    return res


def _describe_checkout(root: Path) -> dict[str, str]:
    """Where ``root`` is and its commit (for the record of a ``--baseline`` run)."""
    head = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"path": str(root), "commit": head[:100]}


def _per_call(b: dict[str, Any], block: int, part: str = "total") -> float:
    """µs per call of one block: its calling thread, its other threads, or both."""
    ns = b["caller"] + b["threads"] if part == "total" else b[part]
    return float(ns) / block / 1e3


def summarize_ab(raw: dict[str, list[dict[str, Any]]], configs: tuple[str, ...]) -> dict[str, Any]:
    """Per mode/case and wrapper: over every pair of adjacent blocks of every round, the
    added CPU per call (wrapped block minus bare block: calling thread + other threads), its
    median and quartiles, the same split into calling thread / other threads, the bare
    client's own CPU per call, the exports counted, and our ratio to each peer."""
    out: dict[str, Any] = {}
    block = 0
    for key in KEYS:
        row: dict[str, Any] = {}
        for config in configs:
            runs = raw[config]
            bad = next((r for r in runs if "error" in r or key not in r), None)
            if bad is not None:
                if "error" in bad:
                    row[config] = {"error": bad["error"]}
                continue
            pairs = [p for r in runs for p in r[key]["pairs"]]
            block = runs[0]["block"]
            added = [_per_call(p["wrapped"], block) - _per_call(p["bare"], block) for p in pairs]
            parts = {
                part: statistics.median(
                    _per_call(p["wrapped"], block, part) - _per_call(p["bare"], block, part)
                    for p in pairs
                )
                for part in ("caller", "threads", "process", "wall")
            }
            threads: dict[str, float] = {}
            for p in pairs:
                for name, ns in p["wrapped"]["by_thread"].items():
                    threads[name] = threads.get(name, 0.0) + ns
            for p in pairs:
                for name, ns in p["bare"]["by_thread"].items():
                    threads[name] = threads.get(name, 0.0) - ns
            row[config] = {
                "pairs": len(pairs),
                "bare_us": statistics.median(_per_call(p["bare"], block) for p in pairs),
                "added_us": statistics.median(added),
                "added_quartiles_us": _quartiles(added),
                "added_mean_us": statistics.fmean(added),
                "added_caller_us": parts["caller"],
                "added_threads_us": parts["threads"],
                "added_process_us": parts["process"],
                "added_wall_us": parts["wall"],
                "threads_mean_us": {
                    k: round(v / 1e3 / block / len(pairs), 1)
                    for k, v in sorted(threads.items())
                    if abs(v / 1e3 / block / len(pairs)) >= 0.5
                },
                "wrapped_calls": sum(r[key]["wrapped_calls"] for r in runs),
                "per_call_items": sum(r[key]["per_call_items"] for r in runs),
                "verified": all(r[key]["verified"] for r in runs),
            }
        ours = row.get("ours", {})
        for peer in PEERS:
            p = row.get(peer)
            if p is None or "error" in p or "error" in ours or not ours:
                continue
            if p["added_us"] > 0:
                row.setdefault("ratio", {})[peer] = round(ours["added_us"] / p["added_us"], 3)
        for mine, base in (("ours", "baseline"), ("ours_nousage", "baseline_nousage")):
            m, b = row.get(mine), row.get(base)
            if m and b and "error" not in m and "error" not in b:
                row.setdefault("change", {})[mine] = round(m["added_us"] - b["added_us"], 1)
        if row:
            out[key] = row
    return out


def table_ab(res: dict[str, Any]) -> str:
    """The side-by-side table of :func:`run_ab`'s result."""
    lines = [
        f"added CPU per OpenAI call vs the bare client in the same process: {res['calls']} "
        f"wrapped + {res['calls']} bare calls per case in blocks of {res['block']}, "
        f"alternated A B B A, {res['rounds']} process(es) per wrapper; fake server on "
        f"127.0.0.1, stream = {res['chunks']} chunks",
        "stream: the caller asks for no usage (ours adds stream_options.include_usage and "
        "hides the usage chunk; the peers do not ask for it); stream_usage: the caller passes "
        "stream_options={'include_usage': True} (the usage chunk is in the bare client's "
        "figure too, every wrapper can read the tokens)",
        "+cpu = (calling thread + every other thread) of a wrapped block (with the SDK's "
        "flush) minus the adjacent bare block, per call: median over the pairs, IQR = "
        "quartiles; caller / threads = the same split; wall = added wall time per call",
        "",
        f"{'case':<19}{'configuration':<16}{'bare µs':>9}{'+cpu µs':>10}{'+cpu IQR':>16}"
        f"{'caller':>9}{'threads':>9}{'wall':>9}  exported",
    ]
    for key, row in res["summary"].items():
        for config in res["configs"]:
            f = row.get(config)
            if f is None:
                continue
            if "error" in f:
                lines.append(f"{key:<19}{NAMES[config]:<16}  FAILED: {f['error']}")
                continue
            q1, q3 = f["added_quartiles_us"]
            exp = f"{f['per_call_items']} of {f['wrapped_calls']}" + (
                "" if f["verified"] else "  NOT ALL EXPORTED"
            )
            lines.append(
                f"{key:<19}{NAMES[config]:<16}{f['bare_us']:9.0f}{f['added_us']:+10.1f}"
                f"{f'{q1:+.0f}..{q3:+.0f}':>16}{f['added_caller_us']:+9.1f}"
                f"{f['added_threads_us']:+9.1f}{f['added_wall_us']:+9.0f}  {exp}"
            )
        ratio = row.get("ratio")
        if ratio:
            lines.append(
                f"{'':<19}ours / peer (+cpu): "
                + ", ".join(f"{NAMES[k]} {v:.3f}" for k, v in ratio.items())
            )
        change = row.get("change")
        if change:
            lines.append(
                f"{'':<19}ours - baseline (+cpu µs): "
                + ", ".join(f"{NAMES[k]} {v:+.1f}" for k, v in change.items())
            )
        lines.append("")
    if res.get("baseline"):
        lines.append(f"baseline: {res['baseline']['path']} at {res['baseline']['commit']}")
    lines.append("background threads, mean µs per call (wrapped minus bare blocks):")
    for key, row in res["summary"].items():
        for config in res["configs"]:
            f = row.get(config)
            if f and "threads_mean_us" in f:
                lines.append(f"  {key:<19}{NAMES[config]:<16}{json.dumps(f['threads_mean_us'])}")
    if res.get("unrouted"):
        lines.append(f"requests the sink did not know: {res['unrouted']}")
    if res.get("bad_requests"):
        lines.append(f"requests the sink could not parse: {res['bad_requests']}")
    versions = {
        c: runs[0].get("versions")
        for c, runs in res["raw"].items()
        if runs and runs[0].get("versions")
    }
    lines.append(f"versions: {json.dumps(versions, sort_keys=True)}")
    lines.append(f"interpreter: {res['interpreter']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write ``benchmarks/results/llm.{json,txt}``."""
    parser = argparse.ArgumentParser(description="added cost per LLM call, peers side by side")
    parser.add_argument(
        "--method",
        choices=("ab", "process"),
        default="ab",
        help="ab (default): bare and wrapped alternated in one process; process: the older "
        "whole-process CPU per configuration, each in a fresh process",
    )
    parser.add_argument("--calls", type=int, help="wrapped calls per case (ab: 2000; process: 200)")
    parser.add_argument(
        "--rounds", type=int, help="processes per configuration (ab: 2; process: 5)"
    )
    parser.add_argument("--block", type=int, default=25, help="ab: calls per block")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="ab: also run ours from this other checkout (e.g. a worktree of main)",
    )
    parser.add_argument("--sync-only", action="store_true")
    parser.add_argument("--serve-provider", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    parser.add_argument("--table", metavar="JSON", help="print the table of a saved run")
    args = parser.parse_args(argv)
    if args.serve_provider:
        serve_provider()
        return 0
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        if saved.get("method") == "ab":
            saved["summary"] = summarize_ab(saved["raw"], tuple(saved["configs"]))
            print(table_ab(saved))
        else:
            saved["summary"] = summarize(saved["raw"], tuple(saved["configs"]))
            print(table(saved))
        return 0
    modes = ("sync",) if args.sync_only else ("sync", "async")
    if args.method == "ab":
        res = run_ab(
            calls=args.calls or 2000,
            block=args.block,
            rounds=args.rounds or 2,
            chunks=args.chunks,
            peers=not args.skip_peers,
            modes=modes,
            baseline=args.baseline.resolve() if args.baseline else None,
        )
        text = table_ab(res)
        name = "llm"
    else:
        res = run(
            calls=args.calls or 200,
            rounds=args.rounds or 5,
            chunks=args.chunks,
            peers=not args.skip_peers,
            modes=modes,
        )
        text = table(res)
        name = "llm-process"
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
        (RESULTS / f"{name}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
