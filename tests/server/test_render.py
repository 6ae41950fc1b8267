"""The terminal views: exact text on stored API answers (``tests/server/fixtures``).

The fixtures are real answers of the local server (``received_at`` frozen), so these tests
also pin the read API's shapes the views rely on.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

import pytest

from hiveloop_async._render import (
    format_cost,
    format_duration,
    format_relative,
    render_event_line,
    render_task_table,
    render_timeline,
)

from .helpers import load_fixture

MANUAL_TIMELINE = """\
TIMELINE  task-lead-4801  ⏱ 12.4s  🤖 lead-qualifier  ✔ completed  ◆ 3 LLM

  ■ phase1 LLM  claude-sonnet  1200 in / 340 out  $0.0042  3.1s
  ● crm_search  0.8s
  ● score_lead  0.2s
  ■ phase2 LLM  claude-sonnet  900 in / 210 out  $0.0031  2.1s
  ● send_email  1.1s
  ■ phase1 LLM  claude-sonnet  1500 in / 400 out  $0.005  2.8s
"""

FAILED_TIMELINE = """\
TIMELINE  task-lead-4801  ⏱ 12.4s  🤖 lead-qualifier  ✖ failed  ◆ 2 LLM

  ● process_lead  1.8s
  ├── ■ phase1 LLM  claude-sonnet  1200 in / 340 out  $0.0042  3.1s
  ├── ● crm_search  0.8s
  └── ✖ send_email  0.3s  ConnectionError: SMTP timeout
  ◇ retry_started  retrying the email
  ◇ escalated  needs a human
  ◇ approval_requested  send anyway?
  ◇ approval_received  ok
  ■ summarize LLM  claude-haiku  200 in / 50 out  $0.001
  ● late_cleanup  running
  ✖ task failed  ValueError: bad lead
"""

FAILED_TIMELINE_DETAIL = """\
TIMELINE  task-lead-4801  ⏱ 12.4s  🤖 lead-qualifier  ✖ failed  ◆ 2 LLM

  ● process_lead  1.8s  06:01:00.030
  │ event         action_completed
  │ action_name   process_lead
  │ duration      1.8s
  │ status        success
  ├── ■ phase1 LLM  claude-sonnet  1200 in / 340 out  $0.0042  3.1s  06:01:00.040
  │     event        custom
  │     name         phase1
  │     model        claude-sonnet
  │     tokens_in    1200
  │     tokens_out   340
  │     cost         0.0042
  │     duration     3.1s
  │     summary      phase1 → claude-sonnet (1200 in / 340 out, $0.0042)
  │     tags         ["llm"]
  ├── ● crm_search  0.8s  06:01:00.050
  │     event         action_completed
  │     action_name   crm_search
  │     duration      0.8s
  │     status        success
  │     args          {"query": "Acme Corp"}
  └── ✖ send_email  0.3s  ConnectionError: SMTP timeout  06:01:00.070
        event               action_failed
        action_name         send_email
        duration            0.3s
        status              failure
        exception_type      ConnectionError
        exception_message   SMTP timeout
  ◇ retry_started  retrying the email  06:01:00.090
    event     retry_started
    summary   retrying the email
    data      {"attempt": 1}
  ◇ escalated  needs a human  06:01:00.100
    event     escalated
    summary   needs a human
    data      {"assigned_to": "ops"}
  ◇ approval_requested  send anyway?  06:01:00.110
    event     approval_requested
    summary   send anyway?
  ◇ approval_received  ok  06:01:00.120
    event     approval_received
    summary   ok
    data      {"decision": "approved"}
  ■ summarize LLM  claude-haiku  200 in / 50 out  $0.001  06:01:00.150
    event        custom
    name         summarize
    model        claude-haiku
    tokens_in    200
    tokens_out   50
    cost         0.001
    summary      summarize → claude-haiku
  ● late_cleanup  running  06:01:00.155
    event         action_started
    action_name   late_cleanup
    duration      —
    status        running
    data          {"action_name": "late_cleanup"}
  ✖ task failed  ValueError: bad lead  06:01:00.160
    event               task_failed
    duration            12.4s
    status              failure
    summary             Task task-lead-4801 failed
    exception_type      ValueError
    exception_message   bad lead
"""

TASK_TABLE = """\
TASK            STATUS        AGENT           STARTED              DURATION  LLM  ACTIONS  ERRORS  COST
task-lead-4801  ✔ completed   lead-qualifier  2026-11-24 20:13:10  12.4s     3    3        0       $0.0123
E               ◌ processing  x               2026-11-24 06:01:05  —         0    1        0       —
D               ⏸ waiting     y               2026-11-24 06:01:04  —         0    1        0       —
C               ▲ escalated   x               2026-11-24 06:01:03  —         0    1        0       —
B               ✖ failed      y               2026-11-24 06:01:02  5.0s      1    1        1       $0.1
A               ✔ completed   x               2026-11-24 06:01:01  1.0s      1    1        0       $0.5
"""  # noqa: E501


def test_manual_timeline_matches_the_users_manual_picture() -> None:
    """LLM nodes and tool actions in time order, with the manual's header and durations."""
    text = render_timeline(load_fixture("timeline_manual_task.json"))
    assert text + "\n" == MANUAL_TIMELINE
    assert text.splitlines()[0] == (
        "TIMELINE  task-lead-4801  ⏱ 12.4s  🤖 lead-qualifier  ✔ completed  ◆ 3 LLM"
    )


def test_failed_task_timeline_nests_actions_and_marks_failures() -> None:
    assert render_timeline(load_fixture("timeline_failed_task.json")) + "\n" == FAILED_TIMELINE


def test_failed_task_timeline_with_detail_panels() -> None:
    text = render_timeline(load_fixture("timeline_failed_task.json"), detail=True)
    assert text + "\n" == FAILED_TIMELINE_DETAIL


def test_detail_panel_of_a_tool_node_is_the_manuals() -> None:
    text = render_timeline(load_fixture("timeline_manual_task.json"), detail=True)
    lines = text.splitlines()
    start = lines.index("  ● crm_search  0.8s  20:13:13.200")
    assert lines[start + 1 : start + 8] == [
        "    event            action_completed",
        "    action_name      crm_search",
        "    duration         0.8s",
        "    status           success",
        '    args             {"query": "Acme Corp", "fields": "name,email,phone"}',
        '    result_preview   {"name": "Acme Corp", "email": "jane@acme.com", ...}',
        "    success          true",
    ]


def test_colors_only_when_asked() -> None:
    timeline = load_fixture("timeline_failed_task.json")
    plain = render_timeline(timeline)
    colored = render_timeline(timeline, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[35m■ phase1 LLM\x1b[0m" in colored  # purple LLM node
    assert "\x1b[34m● crm_search\x1b[0m" in colored  # blue action
    assert "\x1b[31m✖ send_email  0.3s  ConnectionError: SMTP timeout\x1b[0m" in colored
    assert "\x1b[31m✖ failed\x1b[0m" in colored.splitlines()[0]
    assert _strip_ansi(colored) == plain


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_empty_and_odd_timelines_do_not_raise() -> None:
    text = render_timeline({"task_id": "t", "events": [], "action_tree": []})
    assert text == (
        "TIMELINE  t  ⏱ —  🤖 —  ◌ processing  ◆ 0 LLM\n\n  (no actions or LLM calls recorded)"
    )
    odd = copy.deepcopy(load_fixture("timeline_failed_task.json"))
    odd["action_tree"][0]["name"] = None
    odd["events"][4]["payload"]["data"] = "not a dict"
    odd["llm_call_count"] = "many"
    text = render_timeline(odd, detail=True)
    assert "● (unnamed action)  1.8s" in text
    assert "◆ 2 LLM" in text.splitlines()[0]  # counted from the nodes instead
    assert "├── ■ phase1 → claude-sonnet (1200 in / 340 out, $0.0042) LLM" in text


def test_task_table() -> None:
    assert render_task_table(load_fixture("tasks.json")["data"]) + "\n" == TASK_TABLE
    assert render_task_table([]) == "No tasks found."


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (7, "7ms"),
        (350, "350ms"),
        (800, "0.8s"),
        (999.6, "1.0s"),
        (1000, "1.0s"),
        (12_400, "12.4s"),
        (59_940, "59.9s"),
        (187_000, "3m 07s"),
        (3_723_000, "1h 02m"),
        (None, "—"),
        ("12", "—"),
        (True, "—"),
    ],
)
def test_format_duration(ms: Any, text: str) -> None:
    assert format_duration(ms) == text


def test_format_cost() -> None:
    assert [format_cost(c) for c in (0.0042, 1e-05, 0.5, 12, None)] == [
        "$0.0042",
        "$0.00001",
        "$0.5",
        "$12",
        "—",
    ]


_NOW = datetime(2026, 11, 24, 6, 1, 5, tzinfo=timezone.utc)


def test_activity_stream_lines() -> None:
    events = list(reversed(load_fixture("events_failed_task.json")["data"]))
    lines = [render_event_line(e, now=_NOW) for e in events]
    assert lines[3] == (
        "● action_started     lead-qualifier > task-lead-4801      just now    (process_lead)"
    )
    assert lines[4] == (
        "■ custom             lead-qualifier > task-lead-4801      just now    "
        "(llm_call: phase1 → claude-sonnet (1200 in / 340 out, $0.0042))"
    )
    assert lines[8] == (
        "✖ action_failed      lead-qualifier > task-lead-4801      just now    "
        "(send_email: ConnectionError: SMTP timeout)"
    )
    assert lines[11] == (
        "● approval_requested lead-qualifier > task-lead-4801      just now    (send anyway?)"
    )
    assert lines[-1] == (
        "✖ task_failed        lead-qualifier > task-lead-4801      just now    "
        "(ValueError: bad lead)"
    )
    colored = render_event_line(events[8], now=_NOW, color=True)
    assert colored.startswith("\x1b[31m✖ action_failed")


def test_event_line_without_task_or_payload() -> None:
    beat = {"event_type": "heartbeat", "agent_id": "a1", "timestamp": "2026-11-24T05:58:00Z"}
    assert (
        render_event_line(beat, now=_NOW)
        == "● heartbeat          a1                                   3m ago"
    )


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        ("2026-11-24T06:01:04.000Z", "just now"),
        ("2026-11-24T06:01:30.000Z", "just now"),  # a client clock ahead of ours
        ("2026-11-24T06:00:50Z", "15s ago"),
        ("2026-11-24T05:01:05+00:00", "1h ago"),
        ("2026-11-22T06:01:05", "2d ago"),
        ("yesterday", "yesterday"),
        (None, "—"),
    ],
)
def test_relative_time(ts: Any, text: str) -> None:
    assert format_relative(ts, _NOW) == text
