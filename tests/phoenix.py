"""Arize Phoenix, a real OTLP backend from PyPI, in its own virtual environment, on 127.0.0.1.

* :func:`ensure_venv` creates ``.phoenix-venv`` at the repository root and pip-installs
  ``arize-phoenix`` (pinned: :data:`PHOENIX_REQUIREMENT`) unless it is already there with the
  same requirement; it says how long that took. Phoenix never shares the SDK's venv: it pulls
  in its own OpenTelemetry, FastAPI and database stack.
* :class:`PhoenixServer` runs ``phoenix serve`` as a subprocess on free loopback ports, with
  a temporary working directory (SQLite), telemetry off and no requests of its own to the
  internet (``PHOENIX_TELEMETRY_ENABLED=false``, ``PHOENIX_ALLOW_EXTERNAL_RESOURCES=false``).
  Its OTLP/HTTP receiver is ``{url}/v1/traces`` (protobuf only: it answers 415 to JSON); it
  is read back through its REST API (``/v1/projects/{project}/spans``) and GraphQL.

Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".phoenix-venv"
PHOENIX_REQUIREMENT = "arize-phoenix==20.26.1"


def phoenix_bin() -> Path:
    return VENV / "bin" / "phoenix"


def ensure_venv() -> float:
    """Install Phoenix into :data:`VENV` unless done; return the seconds it took (0: cached)."""
    stamp = VENV / ".requirement"
    if phoenix_bin().exists() and stamp.exists() and stamp.read_text() == PHOENIX_REQUIREMENT:
        return 0.0
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PHOENIX_REQUIREMENT,
        ],
        check=True,
    )
    stamp.write_text(PHOENIX_REQUIREMENT)
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PhoenixServer:
    """``phoenix serve`` on 127.0.0.1; a context manager. ``url`` is its HTTP base URL."""

    def __init__(self, *, startup_timeout: float = 120.0) -> None:
        self.port = _free_port()
        self.grpc_port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = startup_timeout
        self._dir = tempfile.TemporaryDirectory(prefix="phoenix-")
        self._log = Path(self._dir.name) / "phoenix.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def __enter__(self) -> PhoenixServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
        env.update(
            {
                "PHOENIX_HOST": "127.0.0.1",
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
                "PHOENIX_WORKING_DIR": self._dir.name,
                "PHOENIX_TELEMETRY_ENABLED": "false",
                "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
            }
        )
        t0 = time.monotonic()
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(phoenix_bin()), "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = t0 + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"phoenix exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        self.startup_s = time.monotonic() - t0
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.__exit__()
        raise RuntimeError(f"phoenix did not start in {self._timeout} s: {self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._dir.cleanup()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- reading back through Phoenix's own API -------------------------------------------------

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span of ``project`` (REST ``GET /v1/projects/{project}/spans``, all pages)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
            url = f"{self.url}/v1/projects/{project}/spans?{query}"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    doc = json.loads(resp.read())
            except urllib.error.HTTPError as err:
                if err.code == 404:  # no span yet: the project does not exist yet
                    return []
                raise
            out.extend(doc["data"])
            cursor = doc.get("next_cursor")
            if not cursor:
                return out

    def graphql(self, query: str) -> dict[str, Any]:
        """Run a GraphQL query against Phoenix's ``/graphql``; its ``data``."""
        req = urllib.request.Request(
            self.url + "/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read())
        if doc.get("errors"):
            raise RuntimeError(str(doc["errors"])[:500])
        data: dict[str, Any] = doc["data"]
        return data
