"""``make demo``: start a local HiveBoard-compatible server, run the example agent, and
print the timelines of its three tasks.

What it does, step by step (each step is something you can do by hand):

1. ``python -m hiveloop_async serve --port 0 --db <temp file>`` in a subprocess; the
   server prints the URL it listens on (port 0 picks a free port);
2. ``examples/agent_loop.py`` against that URL: three concurrent lead-qualification tasks,
   each a few turns of LLM calls and tool calls, one of which fails;
3. ``examples/two_services.py``: an orchestrator service (FastAPI) delegating to a research
   service (aiohttp) over HTTP, so two linked timelines;
4. ``hiveloop-async tasks`` and ``hiveloop-async timeline TASK_ID`` for each task;
5. prints the dashboard's URL (the server's ``/``); with ``--keep`` (``make demo-web``) the
   server stays up until Ctrl-C so that the tasks can be looked at in a browser;
6. stops the server (also on Ctrl-C or an error) and deletes the temporary database.

Colors are used when stdout is a terminal (``--color`` / ``--no-color`` override that).
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

from hiveloop_async import _cli

from . import agent_loop, two_services

_LISTENING = re.compile(r"listening on (http://\S+)")
_API_KEY = "hb_local_dev"


def _drain(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Forward the server's stdout lines until it closes (so its pipe never fills up)."""
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            lines.put(line)
    lines.put(None)


@contextlib.contextmanager
def local_server(db: Path, *, timeout: float = 20.0) -> Iterator[str]:
    """Run ``python -m hiveloop_async serve --port 0`` and yield its URL; always stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hiveloop_async", "serve", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        # Its own process group: a Ctrl-C in the terminal reaches only the demo, which then
        # stops the server in order (below).
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"the server did not start within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"the server exited early (status {proc.wait()})")
            found = _LISTENING.search(line)
            if found:
                url = found.group(1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the server closes its database and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _run_cli(argv: list[str], color: bool | None) -> int:
    """Show and run one ``hiveloop-async`` command (in this process: ``_cli.main``)."""
    print(f"\n$ hiveloop-async {' '.join(argv)}", flush=True)
    flag = [] if color is None else ["--color" if color else "--no-color"]
    # The command treats Ctrl-C as "stop this view" and returns 0; remember it, so that a
    # Ctrl-C stops the whole demo.
    interrupted = False

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        status = _cli.main([*argv, *flag])
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.flush()
    if interrupted:
        raise KeyboardInterrupt
    return status


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status (0 when every step worked)."""
    parser = argparse.ArgumentParser(description="a local end-to-end demo of hiveloop_async")
    parser.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force or disable colors (default: when stdout is a terminal)",
    )
    parser.add_argument("--detail", action="store_true", help="show each node's payload")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the server up afterwards (Ctrl-C stops it) to look at the dashboard",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="hiveloop-demo-") as tmp:
            print("Starting a local HiveBoard-compatible server ...", flush=True)
            with local_server(Path(tmp) / "demo.db") as url:
                print(f"Server listening on {url}", flush=True)
                print("Running examples/agent_loop.py: 3 leads qualified concurrently ...")
                task_ids = agent_loop.main(url, _API_KEY)
                print(
                    "Running examples/two_services.py: an orchestrator service delegates to a "
                    "research service over HTTP; their timelines link to each other ..."
                )
                task_ids += two_services.main(url, _API_KEY)
                status = _run_cli(["tasks", "--url", url], args.color)
                for task_id in task_ids:
                    extra = ["--detail"] if args.detail else []
                    status |= _run_cli(["timeline", task_id, *extra, "--url", url], args.color)
                print(
                    f"\nDone in {time.monotonic() - started:.1f} s. Explore further: "
                    "`hiveloop-async serve` (keeps events on disk), then "
                    "`python -m examples.agent_loop`, `hiveloop-async tasks`, "
                    "`hiveloop-async timeline TASK_ID --detail`, `hiveloop-async tail`."
                )
                print(f"Dashboard: {url}/#/task/{task_ids[0]}", flush=True)
                if not args.keep:
                    print("(`make demo-web` keeps this server up to open it in a browser)")
                    return status
                print("The server stays up; open the dashboard, Ctrl-C to stop.", flush=True)
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    print("\nstopping the server", flush=True)
                return status
    except KeyboardInterrupt:
        print("\ninterrupted; the server was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
