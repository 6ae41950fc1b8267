"""HiveBoard's wire contract as constants: event types, severities and size limits.

One definition shared by the SDK (which shapes what it sends to fit) and the local server
(which validates what it receives), so that the two can never disagree. Constants only.
"""

from __future__ import annotations

from typing import Final

EVENT_TYPES: Final = frozenset(
    {
        "agent_registered",
        "heartbeat",
        "task_started",
        "task_completed",
        "task_failed",
        "action_started",
        "action_completed",
        "action_failed",
        "retry_started",
        "escalated",
        "approval_requested",
        "approval_received",
        "custom",
    }
)

SEVERITY_DEFAULTS: Final[dict[str, str]] = {
    "heartbeat": "debug",
    "agent_registered": "info",
    "task_started": "info",
    "task_completed": "info",
    "task_failed": "error",
    "action_started": "info",
    "action_completed": "info",
    "action_failed": "error",
    "retry_started": "warn",
    "escalated": "warn",
    "approval_requested": "info",
    "approval_received": "info",
    "custom": "info",
}

SEVERITIES: Final = frozenset({"debug", "info", "warn", "error"})

#: Payload size limit, measured as HiveBoard measures it (``json.dumps`` with ensure_ascii).
MAX_PAYLOAD_BYTES: Final = 32_768
#: Longest agent id, task id and other ids, in characters.
MAX_ID_LEN: Final = 256
MAX_SUMMARY_LEN: Final = 512
MAX_ENVIRONMENT_LEN: Final = 64
MAX_GROUP_LEN: Final = 128
#: One ingest request body, at most.
MAX_BATCH_BYTES: Final = 1_000_000
#: Events in one ingest request, at most.
MAX_BATCH_EVENTS: Final = 500
