"""Exceptions raised by hiveloop_async.

The SDK raises only for misuse or bad configuration, never while recording::

    HiveLoopError                 base class; also what hiveloop 0.2.0 raised
    ├── HiveLoopConfigError       invalid configuration (a key without ``hb_``, a bad option)
    └── HiveLoopUsageError        an object used the wrong way (a scope entered twice,
                                  a blocking flush called from the SDK's own loop thread)

Exceptions raised by the host program always pass through unchanged.
"""

from __future__ import annotations

__all__ = ["HiveLoopConfigError", "HiveLoopError", "HiveLoopUsageError"]


class HiveLoopError(Exception):
    """Base class of every exception the SDK raises on purpose."""


class HiveLoopConfigError(HiveLoopError):
    """Raised for invalid configuration, such as an API key that does not start with ``hb_``.

    The message never contains any character of the key.
    """


class HiveLoopUsageError(HiveLoopError):
    """Raised when an SDK object is used the wrong way (for example a scope entered twice)."""
