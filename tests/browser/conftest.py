"""Browser fixtures: Debian's Chromium driven by Playwright, against a real ``serve``.

The browser is the system's (``apt-get install chromium``; ``make browser-deps``), since
Playwright's own browser download cannot work here. Without it the tests are skipped on a
workstation and fail under ``CI=true``. Screenshots go to ``test-artifacts/`` (gitignored);
with ``HIVELOOP_UPDATE_SCREENSHOTS=1`` the timeline one also replaces ``docs/timeline.png``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from examples import agent_loop
from hiveloop_async import HiveBoard

from ..server.helpers import read_line

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
KEY = "hb_local_dev"
T = TypeVar("T")
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


def chromium_path() -> str | None:
    """The system Chromium, if installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (run `make browser-deps`)")


class Served:
    """A running ``hiveloop-async serve`` subprocess."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hiveloop_async", "serve", "--port", "0", "--memory", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        line = read_line(self.process, timeout=60)
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"serve did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.banner = read_line(self.process, timeout=10)
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """SIGTERM, then wait (the server closes its database and exits)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a new thread and return its result (Playwright's sync API keeps an
    event loop running on this one, so ``asyncio.run`` cannot be called here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=120)


def record(url: str, agent_id: str, task_id: str, payload: dict[str, Any]) -> None:
    """:func:`record_task` from synchronous code; blocks until delivered."""
    in_thread(lambda: asyncio.run(record_task(url, agent_id, task_id, payload)))


async def record_task(url: str, agent_id: str, task_id: str, payload: dict[str, Any]) -> None:
    """Record one small task with the real SDK: an action whose payload is ``payload``,
    with an LLM call (and its previews) inside it."""
    async with HiveBoard(api_key=KEY, endpoint=url, flush_interval=0.1) as hb:
        agent = hb.agent(agent_id, type="test", framework="custom")
        async with (
            agent.task(task_id, project="browser-tests", type="check") as task,
            agent.track_context("inspect") as ctx,
        ):
            task.llm_call(
                "judge",
                model="gpt-4o-mini",
                tokens_in=12,
                tokens_out=3,
                cost=0.0001,
                prompt_preview=f"Is this safe? {payload}",
                response_preview="no",
            )
            ctx.set_payload(payload)
        assert await hb.aflush(timeout=10.0)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Served, list[str]]]:
    """``serve`` on a free 127.0.0.1 port, filled by the demo agent and one hostile payload."""
    server = Served()
    try:
        task_ids = in_thread(lambda: agent_loop.main(server.url, KEY, verbose=False))
        record(server.url, "xss-agent", "task-xss", {"note": XSS, "html": XSS})
        yield server, task_ids
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless system Chromium."""
    if sync_playwright is None:
        _unavailable("playwright is not installed")
    path = chromium_path()
    if path is None:
        _unavailable("chromium is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (light colour scheme, laptop size) that fails the test on script errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def screenshot(page: Page, name: str) -> Path:
    """Write ``test-artifacts/<name>.png`` (not compared; for people to look at)."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
