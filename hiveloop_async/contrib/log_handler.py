"""``HiveBoardLogHandler``: turns WARNING-and-above log records into agent issues.

Same behaviour as hiveloop 0.2.0's handler, without its feedback loop: records of the SDK's
own loggers (``hiveloop_async.*``) and records emitted while the handler is already handling
one on this thread are ignored, so a full queue can never fill itself with its own warnings.
"""

from __future__ import annotations

import logging
import threading

from .._agent import Agent
from .._internal import SDK_LOGGER_PREFIX

_LEVELS = ((logging.CRITICAL, "critical"), (logging.ERROR, "high"), (logging.WARNING, "medium"))


class HiveBoardLogHandler(logging.Handler):
    """A ``logging.Handler`` that reports records as ``custom`` / ``issue`` events.

    WARNING maps to ``medium``, ERROR to ``high``, CRITICAL to ``critical`` (levels in
    between map down). The issue id is ``log-{logger}-{LEVEL}``. ``emit`` never raises and
    never blocks.
    """

    def __init__(self, agent: Agent, level: int = logging.WARNING, category: str = "log") -> None:
        super().__init__(level)
        self.agent = agent
        self.category = category
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if name == SDK_LOGGER_PREFIX or name.startswith(SDK_LOGGER_PREFIX + "."):
            return
        if getattr(self._busy, "active", False):
            return
        severity = next((sev for lvl, sev in _LEVELS if record.levelno >= lvl), None)
        if severity is None:
            return
        self._busy.active = True
        try:
            summary = self.format(record) if self.formatter else record.getMessage()
            self.agent.report_issue(
                summary[:512],
                severity,
                issue_id=f"log-{name}-{record.levelname}",
                category=self.category,
                context={
                    "logger": name,
                    "filename": record.filename,
                    "lineno": record.lineno,
                    "funcName": record.funcName,
                },
            )
        except Exception:
            self.handleError(record)
        finally:
            self._busy.active = False


__all__ = ["HiveBoardLogHandler"]
