"""The ``hiveloop-async`` command: a local HiveBoard-compatible server and terminal views.

::

    hiveloop-async serve [--host H] [--port P] [--db PATH | --memory] [--api-key KEY]...
                         [--rate-limit N]
    hiveloop-async tasks [--url URL] [--api-key KEY] [--limit N] [--agent ID] [--status S]
    hiveloop-async timeline TASK_ID [--url URL] [--api-key KEY] [--detail]
    hiveloop-async tail [--url URL] [--api-key KEY] [--actions] [--errors] [--agent ID]
                        [--task ID] [--once] [-n N] [--interval S] [--heartbeats]

The client commands read ``--url`` from ``HIVELOOP_ENDPOINT`` (default
``http://127.0.0.1:8766``) and ``--api-key`` from ``HIVELOOP_API_KEY`` (default
``hb_local_dev``; the local server accepts any ``hb_`` key). The key is never printed.
Colors are used when stdout is a terminal and ``NO_COLOR`` is unset; ``--color`` /
``--no-color`` override that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp
import orjson

from ._render import render_event_line, render_task_table, render_timeline
from ._server import DEFAULT_PORT, default_db_path, is_loopback, start_server

__all__ = ["main"]

_DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
_DEFAULT_KEY = "hb_local_dev"
_PROG = "hiveloop-async"
_ACTION_TYPES = ("action_started", "action_completed", "action_failed")
_FAILURE_TYPES = ("task_failed", "action_failed")
#: How far back each ``tail`` poll looks, to catch events that arrive late.
_TAIL_WINDOW = timedelta(seconds=60)


class _CliError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 1."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _use_color(choice: bool | None, stream: TextIO) -> bool:
    if choice is not None:
        return choice
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# --------------------------------------------------------------------------- HTTP client


class _Client:
    """A tiny read-only client for the local server's JSON endpoints."""

    def __init__(self, url: str, api_key: str) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _Client:
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=30)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` and decode its JSON answer.

        :raises _CliError: when the server cannot be reached or answers with an error.
        """
        assert self._session is not None
        try:
            async with self._session.get(self._url + path, params=params or {}) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            raise _CliError(
                f"cannot reach {self._url} ({exc.__class__.__name__}); is `{_PROG} serve` running?"
            ) from None
        except asyncio.TimeoutError:
            raise _CliError(f"{self._url} did not answer within 30 s") from None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status in (401, 403):
            raise _CliError(
                f"the server refused the API key (HTTP {status}); "
                "pass --api-key or set HIVELOOP_API_KEY"
            )
        if status >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            raise _CliError(message or f"the server answered HTTP {status}", status)
        if body is None:
            raise _CliError(f"the server's answer to {path} is not JSON")
        return body


# --------------------------------------------------------------------------- commands


def _dashboard_url(host: str, port: int) -> str:
    """The URL to open in a browser (a wildcard bind is reached through 127.0.0.1)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(args: argparse.Namespace) -> int:
    db = ":memory:" if args.memory else str(args.db or default_db_path())
    try:
        server = await start_server(
            host=args.host,
            port=args.port,
            db=db,
            api_keys=args.api_key or None,
            rate_limit=args.rate_limit,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"{_PROG}: cannot start the server: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        print(f"{_PROG} server listening on {server.url} (db: {db})", flush=True)
        page = _dashboard_url(server.host, server.port)
        if is_loopback(server.host):
            print(f"dashboard: {page}/ (no key needed on this loopback address)", flush=True)
        else:
            print(
                f"dashboard: {page}/ (bound to {server.host}: the page and the read API "
                "need one of the --api-key keys; the page asks for it once per browser "
                "session)",
                flush=True,
            )
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.close()
    return 0


async def _tasks(args: argparse.Namespace, out: TextIO) -> int:
    params = {"limit": str(args.limit)}
    if args.agent:
        params["agent_id"] = args.agent
    if args.status:
        params["status"] = args.status
    async with _Client(args.url, args.api_key) as client:
        answer = await client.get("/v1/tasks", params)
    tasks = answer.get("data") if isinstance(answer, dict) else None
    print(render_task_table(tasks or [], color=_use_color(args.color, out)), file=out)
    return 0


async def _timeline(args: argparse.Namespace, out: TextIO) -> int:
    async with _Client(args.url, args.api_key) as client:
        try:
            answer = await client.get(f"/v1/tasks/{quote(args.task_id, safe='')}/timeline")
        except _CliError as exc:
            if exc.status == 404:
                raise _CliError(f"task {args.task_id!r} not found at {args.url}", 404) from None
            raise
    if not isinstance(answer, dict):
        raise _CliError("unexpected timeline answer")
    text = render_timeline(answer, detail=args.detail, color=_use_color(args.color, out))
    print(text, file=out)
    return 0


def _tail_plan(args: argparse.Namespace) -> tuple[list[dict[str, str]], Callable[[Any], bool]]:
    """The ``/v1/events`` queries for the chosen filters, and the exact client-side test."""
    base: dict[str, str] = {}
    if args.agent:
        base["agent_id"] = args.agent
    if args.task:
        base["task_id"] = args.task
    if args.heartbeats:
        base["exclude_heartbeats"] = "false"

    def is_error(event: Any) -> bool:
        return event.get("event_type") in _FAILURE_TYPES or event.get("severity") == "error"

    def is_action(event: Any) -> bool:
        return event.get("event_type") in _ACTION_TYPES

    if args.actions and args.errors:
        return [
            {**base, "event_type": ",".join(_ACTION_TYPES)}
        ], lambda e: is_action(e) and is_error(e)
    if args.actions:
        return [{**base, "event_type": ",".join(_ACTION_TYPES)}], is_action
    if args.errors:
        return [
            {**base, "event_type": ",".join(_FAILURE_TYPES)},
            {**base, "severity": "error"},
        ], is_error
    return [dict(base)], lambda e: True


def _sort_key(event: Any) -> tuple[float, str]:
    ts = event.get("timestamp")
    try:
        parsed = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp(), str(ts)
    except ValueError:
        return float("inf"), str(ts)


async def _fetch_events(
    client: _Client, query: dict[str, str], *, since: str | None, wanted: int | None
) -> list[Any]:
    """Events matching ``query`` (newest first), following cursors until ``wanted``."""
    params = dict(query)
    params["limit"] = "200"
    if since is not None:
        params["since"] = since
    found: list[Any] = []
    while True:
        answer = await client.get("/v1/events", params)
        data = answer.get("data") if isinstance(answer, dict) else None
        found.extend(event for event in data or [] if isinstance(event, dict))
        pagination = answer.get("pagination") if isinstance(answer, dict) else None
        cursor = pagination.get("cursor") if isinstance(pagination, dict) else None
        if not cursor or not data or (wanted is not None and len(found) >= wanted):
            return found
        params["cursor"] = cursor


async def _tail(args: argparse.Namespace, out: TextIO) -> int:
    color = _use_color(args.color, out)
    queries, keep = _tail_plan(args)
    seen: dict[str, float] = {}
    newest: float | None = None
    lines = args.lines if args.lines is not None else 0 if args.once else 50
    wanted = lines if lines > 0 else None

    async def collect(since: str | None, wanted: int | None) -> list[Any]:
        merged: dict[str, Any] = {}
        for query in queries:
            found = await _fetch_events(client, query, since=since, wanted=wanted)
            # The server lists newest first (ties: latest inserted first); reversed, the
            # stable sort below keeps events of one timestamp in the order they were stored.
            for event in reversed(found):
                event_id = event.get("event_id")
                if isinstance(event_id, str) and event_id not in seen and keep(event):
                    merged.setdefault(event_id, event)
        return sorted(merged.values(), key=_sort_key)

    def show(events: list[Any]) -> None:
        nonlocal newest
        now = datetime.now(timezone.utc)
        for event in events:
            print(render_event_line(event, now=now, color=color), file=out)
            stamp = _sort_key(event)[0]
            seen[event["event_id"]] = stamp
            if stamp != float("inf") and (newest is None or stamp > newest):
                newest = stamp
        out.flush()

    async with _Client(args.url, args.api_key) as client:
        backlog = await collect(None, wanted)
        show(backlog[-wanted:] if wanted is not None else backlog)
        while not args.once:
            await asyncio.sleep(args.interval)
            since = None
            if newest is not None:
                start = datetime.fromtimestamp(newest, timezone.utc) - _TAIL_WINDOW
                since = start.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                horizon = start.timestamp()
                for event_id in [k for k, v in seen.items() if v < horizon]:
                    del seen[event_id]
            show(await collect(since, None))
    return 0


# --------------------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _task_limit(text: str) -> int:
    value = _positive_int(text)
    if value > 200:
        raise argparse.ArgumentTypeError("must be at most 200")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("HIVELOOP_ENDPOINT") or _DEFAULT_URL,
        help="server base URL (default: $HIVELOOP_ENDPOINT or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("HIVELOOP_API_KEY") or _DEFAULT_KEY,
        help="API key (default: $HIVELOOP_API_KEY or a local development key)",
    )
    parser.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force or disable ANSI colors (default: when stdout is a terminal and "
        "NO_COLOR is unset)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Local HiveBoard-compatible server and terminal views."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the local server (Ctrl-C stops it)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address (%(default)s); a non-loopback one needs --api-key",
    )
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port (0 = any free port)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--db", help=f"SQLite file (default: {default_db_path()})")
    where.add_argument("--memory", action="store_true", help="keep events in memory only")
    serve.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accept only this key (repeatable; default: any key starting with hb_)",
    )
    serve.add_argument(
        "--rate-limit",
        type=_positive_int,
        metavar="N",
        help="ingest requests per second per key before answering 429 (default: off)",
    )

    tasks = commands.add_parser("tasks", help="list recent tasks")
    _add_client_options(tasks)
    tasks.add_argument("--limit", type=_task_limit, default=20, help="at most N tasks (≤200)")
    tasks.add_argument("--agent", help="only tasks of this agent")
    tasks.add_argument("--status", help="only tasks with this derived status")

    timeline = commands.add_parser("timeline", help="draw one task's timeline")
    timeline.add_argument("task_id", metavar="TASK_ID")
    _add_client_options(timeline)
    timeline.add_argument("--detail", action="store_true", help="show each node's payload")

    tail = commands.add_parser("tail", help="follow the activity stream")
    _add_client_options(tail)
    tail.add_argument("--actions", action="store_true", help="only action events")
    tail.add_argument("--errors", action="store_true", help="only failures and errors")
    tail.add_argument("--agent", help="only events of this agent")
    tail.add_argument("--task", help="only events of this task")
    tail.add_argument("--once", action="store_true", help="print what exists and exit")
    tail.add_argument(
        "-n",
        "--lines",
        type=int,
        default=None,
        help="events shown at start (0 = all; default: all with --once, else 50)",
    )
    tail.add_argument(
        "--interval", type=_interval, default=1.0, help="seconds between polls (%(default)s)"
    )
    tail.add_argument("--heartbeats", action="store_true", help="include heartbeats")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``hiveloop-async`` command line; return the exit status.

    Blocks until the command finishes (``serve`` and ``tail`` run until interrupted;
    Ctrl-C, or SIGTERM for ``serve``, ends them with status 0). Errors are reported on
    stderr with status 1 (2 for usage errors); nothing is raised.

    :param argv: the arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "tasks":
            return asyncio.run(_tasks(args, sys.stdout))
        if args.command == "timeline":
            return asyncio.run(_timeline(args, sys.stdout))
        return asyncio.run(_tail(args, sys.stdout))
    except _CliError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. `hiveloop-async tail | head`
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
