"""The public surface: exports, errors, the ``init()`` singleton, and secrets kept out of text."""

from __future__ import annotations
import __future__

import logging
import types
from typing import Any

import pytest

import hiveloop_async
from hiveloop_async import (
    HiveBoard,
    HiveLoopConfigError,
    HiveLoopError,
    HiveLoopUsageError,
)

SECRET = "sk_secret123"
HB_SECRET = "hb_live_S3cr3tK3yV4lu3"

# hiveloop 0.2.0's ``__all__``: a drop-in must export every one of them.
HIVELOOP_020_ALL = {
    "init",
    "shutdown",
    "reset",
    "flush",
    "HiveBoard",
    "Agent",
    "Task",
    "HiveLoopError",
    "SDK_VERSION",
    "tool_payload",
}


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then everything else."""
    if name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def _fragments(secret: str, size: int = 4) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def _leaks(text: str, secret: str) -> set[str]:
    """The 4-character pieces of ``secret`` that appear in ``text``."""
    return {piece for piece in _fragments(secret) if piece in text}


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HIVELOOP_API_KEY", "HIVELOOP_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def test_all_is_sorted_and_lists_exactly_the_public_names() -> None:
    """``__all__`` is sorted (RUF022 order) and names every public attribute, nothing else."""
    exported = list(hiveloop_async.__all__)
    assert exported == sorted(exported, key=_isort_key)
    assert len(set(exported)) == len(exported)
    public = {
        name
        for name, value in vars(hiveloop_async).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }
    assert public | {"__version__"} == set(exported)
    assert set(exported) >= HIVELOOP_020_ALL


def test_exports_belong_to_the_package() -> None:
    """Every exported class and function reports ``__module__ == "hiveloop_async"``."""
    for name in hiveloop_async.__all__:
        value = getattr(hiveloop_async, name)
        if isinstance(value, str):
            continue
        assert value.__module__ == "hiveloop_async", name


def test_version_strings() -> None:
    """SDK_VERSION names the package version that goes in every envelope."""
    assert hiveloop_async.__version__
    assert hiveloop_async.SDK_VERSION.endswith(hiveloop_async.__version__)


def test_error_hierarchy() -> None:
    """Config and usage errors are HiveLoopErrors, which are Exceptions."""
    assert issubclass(HiveLoopConfigError, HiveLoopError)
    assert issubclass(HiveLoopUsageError, HiveLoopError)
    assert issubclass(HiveLoopError, Exception)


@pytest.mark.parametrize("key", [SECRET, "hbx_secret123", "HB_secret123", " hb_secret123"])
def test_bad_key_raises_config_error_without_the_key(key: str, no_env_key: None) -> None:
    """A key without the ``hb_`` prefix raises HiveLoopConfigError that shows none of the key."""
    with pytest.raises(HiveLoopConfigError) as excinfo:
        HiveBoard(api_key=key)
    exc = excinfo.value
    for text in (str(exc), repr(exc), repr(exc.args)):
        assert _leaks(text, key) == set(), text
    assert exc.__cause__ is None
    with pytest.raises(HiveLoopConfigError) as init_info:
        hiveloop_async.init(api_key=key)
    assert _leaks(str(init_info.value), key) == set()
    assert hiveloop_async.get_client() is None


def test_non_string_key_is_a_config_error(no_env_key: None) -> None:
    """A non-string key is rejected without echoing it."""
    bad: Any = 987654321
    with pytest.raises(HiveLoopConfigError) as excinfo:
        HiveBoard(api_key=bad)
    assert _leaks(str(excinfo.value), "987654321") == set()


def test_missing_key_raises_config_error(no_env_key: None) -> None:
    """No key at all raises HiveLoopConfigError (unless the client is disabled)."""
    with pytest.raises(HiveLoopConfigError):
        HiveBoard()
    disabled = HiveBoard(enabled=False)
    assert disabled.settings.enabled is False


def test_init_twice_returns_same_client_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A second init() warns and returns the first client unchanged."""
    first = hiveloop_async.init(api_key="hb_test_x", enabled=False, environment="one")
    with caplog.at_level(logging.WARNING, logger="hiveloop_async"):
        second = hiveloop_async.init(api_key="hb_test_y", enabled=False, environment="two")
    assert second is first
    assert first.environment == "one"
    assert hiveloop_async.get_client() is first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "init" in warnings[0].getMessage()


def test_init_after_shutdown_gives_a_fresh_client() -> None:
    """After shutdown(), init() starts a new live client instead of returning the dead one."""
    first = hiveloop_async.init(api_key="hb_test_x", enabled=False)
    hiveloop_async.shutdown(timeout=0)
    assert first.closed
    second = hiveloop_async.init(api_key="hb_test_x", enabled=False)
    assert second is not first
    assert not second.closed
    assert hiveloop_async.get_client() is second


def test_reset_forgets_the_client() -> None:
    """reset() shuts the client down and forgets it; a new init() creates another."""
    first = hiveloop_async.init(api_key="hb_test_x", enabled=False)
    hiveloop_async.reset()
    assert first.closed
    assert hiveloop_async.get_client() is None
    assert hiveloop_async.init(api_key="hb_test_x", enabled=False) is not first


def test_module_functions_without_init_do_nothing() -> None:
    """flush() and shutdown() without init() return None and do not raise."""
    assert hiveloop_async.get_client() is None
    assert hiveloop_async.flush(timeout=0) is None
    assert hiveloop_async.shutdown(timeout=0) is None
    hiveloop_async.reset()


def test_reprs_never_show_the_key() -> None:
    """No repr or str of the client, its settings, agents, tasks or scopes contains the key."""
    hb = HiveBoard(api_key=HB_SECRET, enabled=False)
    agent = hb.agent("repr-agent")
    task = agent.task("repr-task")
    scope = agent.track_context("repr-scope")
    texts = [
        repr(hb),
        str(hb),
        repr(hb.settings),
        str(hb.settings),
        repr(agent),
        repr(task),
        repr(scope),
        repr(hb.stats()),
        repr(hb.flush(timeout=0)),
    ]
    secret_part = HB_SECRET.removeprefix("hb_live_")
    for text in texts:
        assert _leaks(text, secret_part) == set(), text
    assert hb.settings.api_key == HB_SECRET


def test_current_helpers_outside_everything() -> None:
    """Outside any task or action the current_* helpers return None."""
    assert hiveloop_async.current_task() is None
    assert hiveloop_async.current_agent() is None
    assert hiveloop_async.current_action_id() is None
