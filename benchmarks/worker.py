"""Run one figure for one SDK in this process and print its result.

``python -m benchmarks.worker SDK FIGURE [JSON_KWARGS]`` where SDK is ``ours``,
``hiveloop``, ``otel`` or ``sentry`` (``ours`` imports the package from
``HIVELOOP_BENCH_SDK_PATH`` when that is set: a baseline checkout). The result is printed
as ``RESULT {json}`` on the last line; the process then ends at once with ``os._exit``
(so no SDK's exit hook can hang on a dead sink). Peers run this with the peers'
interpreter: only the standard library and the peer's package are imported.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

from . import _harness as h


def run(sdk: str, figure: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if sdk == "ours":
        code = os.environ.get("HIVELOOP_BENCH_SDK_PATH")
        if code:  # another checkout's package (a baseline), ahead of this one's
            sys.path.insert(0, code)
        mod = importlib.import_module("benchmarks.sdk_ours")
        result: dict[str, Any] = getattr(mod, figure)(**kwargs)
        return result
    from . import _peer

    adapter = importlib.import_module(f"benchmarks.sdk_{sdk}").adapter()
    return _peer.run_figure(adapter, figure, kwargs)


def main(argv: list[str]) -> None:
    sdk, figure = argv[0], argv[1]
    kwargs = json.loads(argv[2]) if len(argv) > 2 else {}
    code = 0
    try:
        h.emit(run(sdk, figure, kwargs))
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
