"""The package version and the ``sdk_version`` sent in every envelope."""

from __future__ import annotations

__version__ = "0.1.0"
SDK_VERSION = f"hiveloop-async-{__version__}"
