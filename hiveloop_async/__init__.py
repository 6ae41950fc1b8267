"""hiveloop_async: an async-first observability SDK for AI agents, wire-compatible with HiveBoard.

Drop-in for hiveloop 0.2.0 (``import hiveloop_async as hiveloop``), built for asyncio.

Layering, bottom to top (a module imports only from the layers below it)::

    _accel, _speedups (C, optional)             which hot path runs; the C one
    _exceptions, _internal, _version, _events   errors, SDK logging, ids and clocks
    _context                                    the ContextVar that makes a scope current
    _payloads                                   payload builders (pure)
    _track, _task                               ActionScope and Task: record on enter/exit
    _agent                                      Agent: the recording API
    _config, _client                            settings; HiveBoard: queue, lifecycle, stats
    _serialize, _resolve, _transport            records -> JSON; host names at exit; the sender
    _module                                     init()/shutdown()/flush(), current_*()
    testing, contrib.log_handler                public helpers
    _server, _render, _cli                      the local HiveBoard-compatible server, CLI
"""

from ._agent import Agent as Agent
from ._api import current_action_id as current_action_id
from ._api import current_agent as current_agent
from ._api import current_task as current_task
from ._api import flush as flush
from ._api import get_client as get_client
from ._api import init as init
from ._api import reset as reset
from ._api import shutdown as shutdown
from ._api import track as track
from ._api import track_context as track_context
from ._client import FlushResult as FlushResult
from ._client import HiveBoard as HiveBoard
from ._client import Stats as Stats
from ._context import bind_context as bind_context
from ._exceptions import HiveLoopConfigError as HiveLoopConfigError
from ._exceptions import HiveLoopError as HiveLoopError
from ._exceptions import HiveLoopUsageError as HiveLoopUsageError
from ._payloads import tool_payload as tool_payload
from ._task import Task as Task
from ._track import ActionScope as ActionScope
from ._version import SDK_VERSION as SDK_VERSION
from ._version import __version__ as __version__

__all__ = (
    "SDK_VERSION",
    "ActionScope",
    "Agent",
    "FlushResult",
    "HiveBoard",
    "HiveLoopConfigError",
    "HiveLoopError",
    "HiveLoopUsageError",
    "Stats",
    "Task",
    "__version__",
    "bind_context",
    "current_action_id",
    "current_agent",
    "current_task",
    "flush",
    "get_client",
    "init",
    "reset",
    "shutdown",
    "tool_payload",
    "track",
    "track_context",
)

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
