"""The dashboard in a real browser, against a real ``serve`` filled by the real SDK.

The demo agent (``examples/agent_loop.py``) qualifies three leads; each task alternates LLM
calls (purple squares) and tool calls (blue circles), ``enrich_company`` always fails (red)
and ``research`` nests ``web_search`` and ``summarize`` (which makes its own LLM call).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from examples import two_services

from .conftest import ARTIFACTS, KEY, ROOT, XSS, Served, in_thread, record, screenshot

# Light-scheme colours of app.css, as the browser computes them.
GREEN, BLUE, PURPLE, RED = (
    "rgb(31, 157, 85)",
    "rgb(47, 111, 222)",
    "rgb(139, 63, 217)",
    ("rgb(217, 54, 54)"),
)


def api(url: str, path: str, key: str | None = None) -> tuple[int, Any]:
    """GET ``url + path`` (stdlib client); returns the status and decoded body."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"null")
        exc.close()
        return exc.code, body


def failed_task(served: tuple[Served, list[str]]) -> str:
    """A demo task whose timeline has a failed action."""
    server, task_ids = served
    for task_id in task_ids:
        _, timeline = api(server.url, f"/v1/tasks/{task_id}/timeline")
        if any(e["event_type"] == "action_failed" for e in timeline["events"]):
            return task_id
    raise AssertionError("the demo recorded no failed action")


def open_timeline(page: Page, url: str, task_id: str) -> None:
    page.goto(f"{url}/#/task/{task_id}")
    expect(page.locator("main[data-ready=timeline]")).to_be_attached()


def expected_roots(timeline: dict[str, Any]) -> list[tuple[str, Any]]:
    """The top-level nodes the manual draws, computed from the stored events."""
    roots: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for ev in timeline["events"]:
        kind, payload = ev["event_type"], ev.get("payload") or {}
        if kind in ("task_started", "task_completed", "task_failed"):
            roots.append(("task", kind.replace("_", " ")))
        elif kind.startswith("action_") and not ev.get("parent_action_id"):
            if ev["action_id"] not in seen:
                seen.add(ev["action_id"])
                roots.append(("action", payload.get("action_name")))
        elif payload.get("kind") == "llm_call" and not ev.get("action_id"):
            roots.append(("llm", payload["data"]["name"]))
    return roots


def test_task_list_shows_the_demo_tasks(page: Page, served: tuple[Served, list[str]]) -> None:
    server, task_ids = served
    page.goto(f"{server.url}/#/tasks")
    rows = page.locator("#tasks-table tbody tr")
    expect(rows.first).to_be_visible()
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.taskId)")
    assert set(task_ids) <= set(shown)
    assert shown.index("task-xss") < min(shown.index(t) for t in task_ids)  # newest first
    row = page.locator(f"#tasks-table tr[data-task-id='{task_ids[0]}']")
    expect(row).to_contain_text("lead-qualifier")
    expect(row).to_contain_text("completed")
    screenshot(page, "tasks")
    page.select_option("select[name=agent_id]", "xss-agent")
    expect(page.locator("#tasks-table tbody tr")).to_have_count(1)
    page.fill("input[name=q]", "4802")
    page.click("text=Search")
    expect(page.locator(".empty")).to_contain_text("No task matches")


def test_timeline_draws_the_manuals_nodes_in_order(
    page: Page, served: tuple[Served, list[str]]
) -> None:
    server, _ = served
    task_id = failed_task(served)
    _, timeline = api(server.url, f"/v1/tasks/{task_id}/timeline")
    open_timeline(page, server.url, task_id)
    nodes = page.locator("#timeline .node").evaluate_all(
        """rows => rows.map(r => ({
            kind: r.dataset.kind, name: r.dataset.name, depth: Number(r.dataset.depth),
            failed: r.dataset.failed === 'true',
            color: getComputedStyle(r.querySelector('.mark')).backgroundColor,
            radius: getComputedStyle(r.querySelector('.mark')).borderRadius }))"""
    )
    roots = [(n["kind"], n["name"]) for n in nodes if n["depth"] == 0]
    assert roots == expected_roots(timeline)
    assert roots[0] == ("task", "task started") and roots[-1] == ("task", "task completed")
    assert roots[1][0] == "llm"  # reason first, then act
    kinds = [k for k, _ in roots[1:-1]]
    assert kinds.count("llm") >= 3 and kinds.count("action") >= 4
    for i, kind in enumerate(kinds):  # every run of tool calls follows an LLM call
        if kind == "action" and kinds[i - 1] != "action":
            assert kinds[i - 1] == "llm", kinds
    by_name = {n["name"]: n for n in nodes if n["kind"] == "action"}
    for n in nodes:
        if n["kind"] == "task":
            assert (n["color"], n["radius"]) == (GREEN, "50%")
        elif n["kind"] == "llm":
            assert (n["color"], n["radius"]) == (PURPLE, "2px")  # a square
        elif n["kind"] == "action" and not n["failed"]:
            assert (n["color"], n["radius"]) == (BLUE, "50%")
    assert by_name["enrich_company"]["failed"] and by_name["enrich_company"]["color"] == RED
    # Nesting: research > web_search, research > summarize > its own LLM call.
    index = [n["name"] for n in nodes]
    research = index.index("research")
    assert [(n["name"], n["depth"]) for n in nodes[research : research + 4]] == [
        ("research", 0),
        ("web_search", 1),
        ("summarize", 1),
        ("summarize", 2),
    ]
    assert nodes[research + 3]["kind"] == "llm"
    # Collapsing research hides its children.
    page.locator("#timeline .node[data-name=research] .twisty").click()
    expect(page.locator("#timeline .node[data-name=web_search]")).to_be_hidden()
    page.locator("#timeline .node[data-name=research] .twisty").click()
    expect(page.locator("#timeline .node[data-name=web_search]")).to_be_visible()


def _field(page: Page, name: str) -> str:
    return page.locator(f"#detail-fields dd[data-field={name}]").inner_text()


def test_clicking_crm_search_shows_its_payload(
    page: Page, served: tuple[Served, list[str]]
) -> None:
    server, _ = served
    open_timeline(page, server.url, failed_task(served))
    page.locator("#timeline .node[data-name=crm_search]").click()
    expect(page.locator("#detail-title")).to_have_text("crm_search")
    assert _field(page, "event") == "action_completed"
    assert _field(page, "action_name") == "crm_search"
    assert _field(page, "status") == "success"
    assert _field(page, "duration").endswith("ms") or _field(page, "duration").endswith("s")
    args = json.loads(_field(page, "args"))
    assert set(args) == {"query", "fields"} and args["fields"] == "name,email,phone"
    assert "email" in _field(page, "result_preview")
    page.locator("#timeline .node[data-kind=llm]").first.click()
    assert _field(page, "event") == "custom"
    for name in ("name", "model", "tokens_in", "tokens_out", "cost", "duration"):
        assert _field(page, name) not in ("", "—"), name
    assert _field(page, "model").startswith("claude")
    # The demo sends no previews; an SDK task that does shows them.
    open_timeline(page, server.url, "task-xss")
    judge = page.locator("#timeline .node[data-kind=llm][data-name=judge]")
    assert judge.get_attribute("data-depth") == "1"  # inside the `inspect` action
    judge.click()
    assert (_field(page, "model"), _field(page, "tokens_in")) == ("gpt-4o-mini", "12")
    assert (_field(page, "tokens_out"), _field(page, "cost")) == ("3", "0.0001")
    assert _field(page, "prompt_preview").startswith("Is this safe?")
    assert _field(page, "response_preview") == "no"


def test_clicking_the_failed_node_shows_the_exception(
    page: Page, served: tuple[Served, list[str]]
) -> None:
    server, _ = served
    open_timeline(page, server.url, failed_task(served))
    page.locator("#timeline .node[data-failed=true][data-name=enrich_company]").click()
    assert _field(page, "event") == "action_failed"
    assert _field(page, "status") == "failure"
    assert _field(page, "exception_type") == "ConnectionError"
    assert "Enrichment API timeout after 5000ms" in _field(page, "exception_message")
    screenshot(page, "timeline")
    if os.environ.get("HIVELOOP_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(ARTIFACTS / "timeline.png", ROOT / "docs" / "timeline.png")


def test_dark_mode_and_other_views(browser: Any, served: tuple[Served, list[str]]) -> None:
    server, _ = served
    context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(f"{server.url}/#/agents")
        expect(page.locator("#agents-table")).to_contain_text("lead-qualifier")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 26)"
        screenshot(page, "agents-dark")
        page.goto(f"{server.url}/#/cost")
        expect(page.locator("#cost-by-model")).to_contain_text("claude")
        expect(page.locator("#cost-by-agent")).to_contain_text("lead-qualifier")
        screenshot(page, "cost-dark")
        open_timeline(page, server.url, failed_task(served))
        screenshot(page, "timeline-dark")
    finally:
        context.close()


def test_activity_stream_is_live_and_pauses(page: Page, served: tuple[Served, list[str]]) -> None:
    server, _ = served
    page.goto(f"{server.url}/#/activity")
    expect(page.locator("main[data-ready=activity]")).to_be_attached()
    expect(page.locator("#live")).to_have_text("● live")
    record(server.url, "live-agent", "task-live-1", {"n": 1})
    expect(page.locator("#stream .ev", has_text="task-live-1").first).to_be_visible(timeout=5000)
    screenshot(page, "activity")
    page.click("#pause")
    record(server.url, "live-agent", "task-live-2", {"n": 2})
    expect(page.locator("#buffered")).to_contain_text("new while paused", timeout=5000)
    assert page.locator("#stream .ev", has_text="task-live-2").count() == 0
    page.click("#pause")
    expect(page.locator("#stream .ev", has_text="task-live-2").first).to_be_visible()


def test_error_filter_shows_only_failures(page: Page, served: tuple[Served, list[str]]) -> None:
    server, _ = served
    page.goto(f"{server.url}/#/activity")
    expect(page.locator("#stream .ev").first).to_be_visible()
    page.click("#stream-filters button[data-filter=error]")
    visible = page.locator("#stream .ev:visible")
    expect(visible.first).to_be_visible()
    kinds = visible.evaluate_all("rows => rows.map(r => r.dataset.eventType)")
    assert kinds and set(kinds) <= {"action_failed", "task_failed"}
    page.click("#stream-filters button[data-filter=action]")
    kinds = page.locator("#stream .ev:visible").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)"
    )
    assert kinds and set(kinds) == {"action"}


def test_html_in_a_payload_is_shown_as_text(page: Page, served: tuple[Served, list[str]]) -> None:
    server, _ = served
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    open_timeline(page, server.url, "task-xss")
    page.locator("#timeline .node[data-name=inspect]").click()
    assert _field(page, "note") == XSS
    assert _field(page, "html") == XSS
    assert page.locator("#detail script, #detail img, main img").count() == 0
    page.locator("#detail details.raw summary").click()
    expect(page.locator("#detail pre")).to_contain_text("<script>")
    page.goto(f"{server.url}/#/activity")
    expect(page.locator("#stream .ev").first).to_be_visible()
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert not dialogs


def test_non_loopback_bind_needs_the_key(page: Page) -> None:
    """Bound to 0.0.0.0 with a key: the API answers 401 without it; the page asks once."""
    server = Served("--host", "0.0.0.0", "--api-key", "hb_secret_1")
    try:
        assert "need one of the --api-key keys" in server.banner
        url = f"http://127.0.0.1:{server.port}"  # only loopback traffic
        for path in ("/v1/tasks", "/v1/agents", "/v1/cost", "/v1/stream"):
            status, body = api(url, path)
            assert (status, body["error"]) == (401, "authentication_failed"), path
        assert api(url, "/v1/tasks", key="hb_secret_1")[0] == 200
        page.goto(f"{url}/#/agents")
        expect(page.locator("#key-dialog")).to_be_visible()
        page.fill("#key-input", "hb_secret_1")
        page.click("#key-form button[type=submit]")
        expect(page.locator("main[data-ready=agents]")).to_be_attached()
        expect(page.locator("#live")).to_have_text("● live")
        assert page.evaluate("sessionStorage.getItem('hiveloop.apiKey')") == "hb_secret_1"
        page.reload()  # kept for the session: no second prompt
        expect(page.locator("main[data-ready=agents]")).to_be_attached()
        expect(page.locator("#key-dialog")).to_be_hidden()
    finally:
        server.stop()


def test_linked_services_link_to_each_other(page: Page, served: tuple[Served, list[str]]) -> None:
    """two_services: the orchestrator's timeline links to the research task, and back."""
    server, _ = served
    orchestrator, research = in_thread(lambda: two_services.main(server.url, KEY))
    open_timeline(page, server.url, orchestrator)
    callee = page.locator("#task-links .link-callee a")
    expect(callee).to_have_text(research)
    callee.click()
    expect(page.locator("main[data-ready=timeline] .tl-head h1")).to_contain_text(research)
    caller = page.locator("#task-links .link-caller a")
    expect(caller).to_have_text(orchestrator)
    expect(page.locator("#task-links .link-caller")).to_contain_text("called by orchestrator")
    caller.click()
    expect(page.locator("main[data-ready=timeline] .tl-head h1")).to_contain_text(orchestrator)


@pytest.fixture(autouse=True)
def _artifacts_dir() -> None:
    ARTIFACTS.mkdir(exist_ok=True)
