"""Whether the optional C hot path (``hiveloop_async._speedups``) is in use.

The extension is built when the package is installed and a C compiler is present; without
it the pure-Python implementation in ``_track.py`` runs, with the same behaviour. Setting
``HIVELOOP_ASYNC_PURE_PYTHON=1`` before the first import chooses the pure-Python one.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("HIVELOOP_ASYNC_PURE_PYTHON", "").strip() not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


#: The C module, or None when the pure-Python hot path runs.
speedups: ModuleType | None = _load()
