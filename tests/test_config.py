"""Configuration: settings resolution (keywords, HIVELOOP_* variables, config files,
defaults), invalid values falling back with one warning, key validation, ``enabled``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import hiveloop_async as hl
from hiveloop_async import HiveLoopConfigError
from hiveloop_async._config import resolve_settings


def settings(env: dict[str, str] | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        api_key=None,
        endpoint=None,
        environment=None,
        group=None,
        flush_interval=None,
        batch_size=None,
        max_queue_size=None,
        debug=None,
        enabled=None,
        shutdown_timeout=None,
    )
    args.update(kw)
    return resolve_settings(env=env or {}, **args)


def test_keywords_beat_environment_variables() -> None:
    """Keyword arguments win over HIVELOOP_* variables, which win over defaults."""
    env = {
        "HIVELOOP_API_KEY": "hb_env_key",
        "HIVELOOP_ENDPOINT": "http://127.0.0.1:9999/",
        "HIVELOOP_ENVIRONMENT": "staging",
        "HIVELOOP_GROUP": "g-env",
        "HIVELOOP_BATCH_SIZE": "250",
    }
    s = settings(env)
    assert (s.api_key, s.endpoint, s.environment, s.group, s.batch_size) == (
        "hb_env_key",
        "http://127.0.0.1:9999",
        "staging",
        "g-env",
        250,
    )
    s = settings(env, api_key="hb_kw", environment="prod-kw", batch_size=10)
    assert (s.api_key, s.environment, s.batch_size) == ("hb_kw", "prod-kw", 10)


def test_invalid_values_fall_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Unparsable or out-of-range values use the default and warn once each."""
    with caplog.at_level(logging.WARNING, logger="hiveloop_async"):
        s = settings(
            {"HIVELOOP_FLUSH_INTERVAL": "soon", "HIVELOOP_MAX_QUEUE_SIZE": "-5"},
            api_key="hb_x",
            batch_size=5000,
        )
        settings({"HIVELOOP_FLUSH_INTERVAL": "soon"}, api_key="hb_x")
    assert s.flush_interval == 5.0
    assert s.max_queue_size == 250_000
    assert s.batch_size == 500
    texts = [r.getMessage() for r in caplog.records]
    assert sum("flush_interval" in t for t in texts) == 1
    assert sum("max_queue_size" in t for t in texts) == 1
    assert sum("batch_size" in t for t in texts) == 1


def test_bad_keys_raise_without_showing_them() -> None:
    """A key without hb_ raises HiveLoopConfigError naming none of its characters."""
    with pytest.raises(HiveLoopConfigError) as info:
        hl.HiveBoard(api_key="sk-live-supersecretvalue")
    assert "supersecret" not in str(info.value)
    with pytest.raises(HiveLoopConfigError):
        settings({})


def test_disabled_runs_user_code_and_sends_nothing() -> None:
    """HIVELOOP_DISABLED / enabled=False: no key needed, no thread, events counted."""
    s = settings({"HIVELOOP_DISABLED": "1"})
    assert s.enabled is False
    hb = hl.HiveBoard(enabled=False)
    agent = hb.agent("off")
    with agent.task("t"), agent.track_context("x"):
        pass
    stats = hb.stats()
    assert stats["mode"] is None
    assert stats["dropped"]["disabled"] == stats["recorded"] == 5


def test_plain_http_to_a_remote_host_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """A key over http:// to a non-loopback host warns once; loopback never warns."""
    with caplog.at_level(logging.WARNING, logger="hiveloop_async"):
        settings(api_key="hb_x", endpoint="http://127.0.0.1:8766")
        settings(api_key="hb_x", endpoint="http://hiveboard.example/")
        settings(api_key="hb_x", endpoint="http://hiveboard.example/")
    warnings = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1
    assert "hb_x" not in caplog.text


def test_endpoint_from_user_config_but_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~/.loophive/loophive.cfg is read; ./loophive.cfg only when opted in."""
    home = tmp_path / "home"
    (home / ".loophive").mkdir(parents=True)
    (home / ".loophive" / "loophive.cfg").write_text(
        "[loophive]\nendpoint = http://127.0.0.1:7001/\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "loophive.cfg").write_text("[loophive]\nendpoint = http://127.0.0.1:7002\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert settings(api_key="hb_x").endpoint == "http://127.0.0.1:7001"
    assert settings(api_key="hb_x", read_local_config=True).endpoint == "http://127.0.0.1:7002"
