"""hiveloop_async: an async-first observability SDK for AI agents, wire-compatible with HiveBoard.

Drop-in for hiveloop 0.2.0 (``import hiveloop_async as hiveloop``), built for asyncio.

The path of one event, module by module: a scope (``_track``, ``_task``) or an agent method
(``_agent``) appends a record to the queue (``_queue``, through its ``Route``); the sender
(``_transport``) takes records, encodes them (``_serialize``), batches them and decides what
each response means (``_delivery``), and settles every event in the queue's accounting.
``_client`` ties a queue to its sender and lifecycle; ``_runner`` runs the sender in a
thread when the application gives it no loop.

Layering, bottom to top: a module imports only from the layers below it, never inside a
function (``tests/test_layering.py`` checks it on the source)::

    _exceptions, _internal, _version, _ids, _wire, _context, _payloads, _forward  leaves
    _tracecontext, _queue, _scrub, _hooks, _spool  trace ids; queue; redaction; before_send; spool
    _track, _otlp                                 ActionScope and the decorator; OTLP spans (pure)
    _recording                                    event() and llm_call(), once for Agent and Task
    _task                                         Task
    _agent                                        Agent: the recording API
    _config, _serialize, _delivery, _resolve, _sampling  settings; JSON; policy; DNS; sampling
    _otlp_sender, _spooler                        the OTLP destination's I/O; spool write/replay
    _transport                                    the sender: session, request workers, heartbeats
    _runner                                       sender thread, exit drain, atexit/fork
    _client                                       HiveBoard: queue + sender + lifecycle, stats()
    _api                                          init(), shutdown(), flush(), current_*()
    __init__, testing, contrib                    the public package, test helpers, integrations
    _server, _render                              the local server; terminal views
    _cli                                          the ``hiveloop-async`` command
    __main__                                      ``python -m hiveloop_async``
"""

from ._agent import Agent as Agent
from ._api import UntrackedScope as UntrackedScope
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
from ._sampling import TaskInfo as TaskInfo
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
    "TaskInfo",
    "UntrackedScope",
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
