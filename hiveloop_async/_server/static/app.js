// HiveLoop local dashboard: plain JavaScript, no dependencies, nothing fetched elsewhere.
// Every value that comes from the server is put in the page as text (textContent or text
// nodes), never as HTML.
"use strict";

const KEY_STORAGE = "hiveloop.apiKey";
const PAGE_SIZE = 50;
const state = { view: null, live: null, agents: [], refreshTimer: null };

// ------------------------------------------------------------------ DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 1);
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || typeof ms !== "number") return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}

function fmtCost(value) {
  if (typeof value !== "number" || value === 0) return value === 0 ? "$0" : "—";
  return value < 0.01 ? `$${value.toFixed(4)}` : `$${value.toFixed(2)}`;
}

function fmtInt(value) {
  return typeof value === "number" ? Math.round(value).toLocaleString("en-US") : "—";
}

function fmtClock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts ?? "");
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtAgo(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return "—";
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return d.toLocaleString();
}

function emptyState(title, ...lines) {
  return el("div", { class: "empty" }, el("strong", null, title), ...lines.map((l) => el("div", null, l)));
}

function sdkHint() {
  return [
    "Point the SDK at ", el("code", null, location.origin),
    ", e.g. ", el("code", null, `HiveBoard(api_key="hb_local_dev", endpoint="${location.origin}")`),
    " or run ", el("code", null, `python -m examples.agent_loop --endpoint ${location.origin}`), ".",
  ];
}

// ------------------------------------------------------------------ API

class AuthNeeded extends Error {}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const response = await fetch(url, { headers: authHeaders() });
  if (response.status === 401) {
    askForKey(sessionStorage.getItem(KEY_STORAGE) ? "That key was refused." : "");
    throw new AuthNeeded("API key needed");
  }
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

let keyDialogOpen = false;
function askForKey(message) {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key-error").textContent = message;
  if (!keyDialogOpen) {
    keyDialogOpen = true;
    dialog.showModal();
  }
}

function setupKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key-form").addEventListener("submit", () => {
    const value = document.getElementById("key-input").value.trim();
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    keyDialogOpen = false;
    dialog.close();
    startLive();
    route();
  });
  dialog.addEventListener("cancel", (e) => e.preventDefault());
}

// ------------------------------------------------------------------ event classification

function eventKind(ev) {
  const type = ev.event_type;
  const payloadKind = ev.payload && ev.payload.kind;
  if (type === "action_failed" || type === "task_failed") return "error";
  if (type && type.startsWith("task_")) return "task";
  if (type && type.startsWith("action_")) return "action";
  if (payloadKind === "llm_call") return "llm";
  if (payloadKind === "issue") return "issue";
  return "other";
}

function actionName(payload) {
  if (!payload || typeof payload !== "object") return null;
  return payload.action_name || (payload.data && payload.data.action_name) || null;
}

function eventSummary(ev) {
  const p = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
  if (p.kind === "llm_call" && p.data) return `${text(p.data.name)} → ${text(p.data.model)}`;
  if (ev.event_type === "action_failed" || ev.event_type === "task_failed") {
    const type = p.exception_type ? `${p.exception_type}: ` : "";
    return `${actionName(p) || ""} ${type}${p.exception_message || p.summary || ""}`.trim();
  }
  return actionName(p) || p.summary || "";
}

// ------------------------------------------------------------------ views: agents

async function viewAgents(main) {
  const [agents, fleet] = await Promise.all([api("/v1/agents", { limit: 200 }), api("/v1/pipeline")]);
  state.agents = agents.data;
  const pipeline = new Map(((fleet && fleet.agents) || []).map((a) => [a.agent_id, a]));
  main.replaceChildren(el("h1", null, "Agents"));
  if (!agents.data.length) {
    main.append(el("div", { class: "card" }, emptyState("No agents yet", sdkHint())));
    return;
  }
  const rows = agents.data.map((a) => {
    const p = pipeline.get(a.agent_id) || {};
    const task = a.current_task_id;
    return el("tr", null,
      el("td", null, el("strong", null, a.agent_id), el("div", { class: "muted" }, [a.agent_type, a.framework].filter(Boolean).join(" · "))),
      el("td", null, el("span", { class: `badge ${a.derived_status}`, "data-status": a.derived_status }, a.derived_status)),
      el("td", { class: "mono" }, task ? el("a", { href: `#/task/${encodeURIComponent(task)}` }, task) : "—"),
      el("td", null, text(a.last_event_type), el("div", { class: "muted" }, fmtAgo(a.last_seen))),
      el("td", { class: "num" }, a.heartbeat_age_seconds === null ? "—" : `${a.heartbeat_age_seconds} s`,
        el("div", { class: "muted" }, `stuck after ${a.stuck_threshold_seconds} s`)),
      el("td", { class: "num" }, fmtInt(p.queue_depth ?? 0)),
      el("td", { class: "num" }, fmtInt(p.active_issues ?? 0)),
      el("td", null, el("a", { href: `#/tasks?agent_id=${encodeURIComponent(a.agent_id)}` }, "tasks →")),
    );
  });
  main.append(el("div", { class: "card" }, el("table", { id: "agents-table" },
    el("thead", null, el("tr", null, el("th", null, "Agent"), el("th", null, "Status"), el("th", null, "Current task"),
      el("th", null, "Last event"), el("th", { class: "num" }, "Heartbeat"), el("th", { class: "num" }, "Queue"),
      el("th", { class: "num" }, "Open issues"), el("th", null, ""))),
    el("tbody", null, rows))));
}

// ------------------------------------------------------------------ views: tasks

function hashParams() {
  const [, query] = location.hash.split("?");
  return new URLSearchParams(query || "");
}

async function viewTasks(main) {
  const params = hashParams();
  const filters = {
    agent_id: params.get("agent_id") || "",
    status: params.get("status") || "",
    project_id: params.get("project_id") || "",
    q: params.get("q") || "",
  };
  const cursor = params.get("cursor") || "";
  const [page, agents, projects] = await Promise.all([
    api("/v1/tasks", { ...filters, cursor, limit: PAGE_SIZE }),
    api("/v1/agents", { limit: 200 }),
    api("/v1/projects"),
  ]);
  const go = (changes) => {
    const next = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...filters, ...changes })) if (v) next.set(k, v);
    location.hash = `#/tasks?${next}`;
  };
  const select = (name, label, values) => el("select", { name, "aria-label": label, onchange: (e) => go({ [name]: e.target.value, cursor: "" }) },
    el("option", { value: "" }, `${label}: all`),
    values.map((v) => el("option", { value: v, selected: v === filters[name] }, v)));
  const search = el("input", { type: "search", name: "q", placeholder: "task id contains…", value: filters.q });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") go({ q: search.value.trim(), cursor: "" }); });
  main.replaceChildren(el("h1", null, "Tasks"), el("div", { class: "filters" },
    select("agent_id", "Agent", agents.data.map((a) => a.agent_id)),
    select("status", "Status", ["processing", "completed", "failed", "escalated", "waiting"]),
    select("project_id", "Project", projects.data.map((p) => p.slug)),
    search, el("button", { onclick: () => go({ q: search.value.trim(), cursor: "" }) }, "Search")));
  const card = el("div", { class: "card" });
  main.append(card);
  if (!page.data.length) {
    const any = Object.values(filters).some(Boolean) || cursor;
    card.append(any ? emptyState("No task matches these filters", "Clear a filter to see more.")
      : emptyState("No tasks yet", sdkHint()));
    return;
  }
  const rows = page.data.map((t) => el("tr", {
    class: "link", "data-task-id": t.task_id,
    onclick: () => { location.hash = `#/task/${encodeURIComponent(t.task_id)}`; },
  },
  el("td", { class: "mono" }, el("a", { href: `#/task/${encodeURIComponent(t.task_id)}` }, t.task_id), el("div", { class: "muted" }, text(t.task_type))),
  el("td", null, text(t.agent_id)),
  el("td", null, el("span", { class: `badge ${t.derived_status}` }, t.derived_status)),
  el("td", null, fmtAgo(t.started_at), el("div", { class: "muted mono" }, fmtClock(t.started_at))),
  el("td", { class: "num" }, fmtDuration(t.duration_ms)),
  el("td", { class: "num" }, fmtInt(t.llm_call_count)),
  el("td", { class: "num" }, `${fmtInt(t.total_tokens_in)} / ${fmtInt(t.total_tokens_out)}`),
  el("td", { class: "num" }, fmtCost(t.total_cost)),
  el("td", { class: "num" + (t.error_count ? " error-text" : "") }, fmtInt(t.error_count))));
  card.append(el("table", { id: "tasks-table" },
    el("thead", null, el("tr", null, el("th", null, "Task"), el("th", null, "Agent"), el("th", null, "Status"),
      el("th", null, "Started"), el("th", { class: "num" }, "Duration"), el("th", { class: "num" }, "LLM calls"),
      el("th", { class: "num" }, "Tokens in / out"), el("th", { class: "num" }, "Cost"), el("th", { class: "num" }, "Errors"))),
    el("tbody", null, rows)));
  card.append(el("div", { class: "pager" },
    el("button", { disabled: !cursor, onclick: () => go({ cursor: "" }) }, "↑ Newest"),
    el("button", { id: "older", disabled: !page.pagination.has_more, onclick: () => go({ cursor: page.pagination.cursor }) }, "Older →")));
}

// ------------------------------------------------------------------ views: timeline

// Nodes in the order the events happened: task start/end, actions (one node per action id,
// its nested actions and LLM calls as children), LLM calls, other custom events.
function buildNodes(timeline) {
  const roots = [];
  const actions = new Map();
  const pending = [];
  for (const ev of timeline.events) {
    const type = ev.event_type;
    const payload = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
    if (type === "heartbeat") continue;
    if (type === "action_started" || type === "action_completed" || type === "action_failed") {
      let node = actions.get(ev.action_id);
      if (!node) {
        node = { kind: "action", events: [], children: [], parent: ev.parent_action_id, name: null, start: ev };
        actions.set(ev.action_id, node);
        pending.push(node);
      }
      node.events.push(ev);
      if (!node.parent && ev.parent_action_id) node.parent = ev.parent_action_id;
      node.name = node.name || actionName(payload);
      if (type !== "action_started") {
        node.end = ev;
        node.failed = type === "action_failed";
        node.duration = ev.duration_ms;
      }
      continue;
    }
    let node;
    if (type.startsWith("task_")) {
      node = { kind: "task", events: [ev], name: type.replace("_", " "), failed: type === "task_failed", duration: ev.duration_ms, end: ev };
    } else if (payload.kind === "llm_call") {
      const data = payload.data || {};
      node = { kind: "llm", events: [ev], name: `${text(data.name)}`, sub: text(data.model), duration: data.duration_ms, end: ev };
    } else {
      const kind = payload.kind === "issue" ? "issue" : "other";
      node = { kind, events: [ev], name: payload.kind || type, sub: payload.summary || "", end: ev, failed: type === "escalated" };
    }
    node.children = [];
    node.parent = ev.action_id || ev.parent_action_id || null;
    pending.push(node);
  }
  for (const node of pending) {
    const parent = node.parent && actions.get(node.parent);
    if (parent && parent !== node) parent.children.push(node);
    else roots.push(node);
  }
  for (const node of actions.values()) {
    node.name = node.name || "(action)";
    if (!node.end) node.sub = "running";
  }
  return roots;
}

function nodeRow(node, depth, totalMs, startMs, onSelect) {
  const hasKids = node.children.length > 0;
  const twisty = el("span", { class: "twisty" }, hasKids ? "▾" : "");
  const ev = node.start || node.events[0];
  const offset = new Date(ev.timestamp).getTime() - startMs;
  const bar = el("span", { class: "bar" }, el("i"));
  if (totalMs > 0) {
    const left = Math.max(0, Math.min(100, (offset / totalMs) * 100));
    const width = Math.max(1.5, Math.min(100 - left, ((node.duration || 0) / totalMs) * 100));
    bar.firstChild.style.left = `${left}%`;
    bar.firstChild.style.width = `${width}%`;
  }
  const row = el("div", {
    class: `node kind-${node.kind}${node.failed ? " failed" : ""}`,
    role: "treeitem", tabindex: "0",
    "data-kind": node.kind, "data-name": node.name, "data-failed": node.failed ? "true" : "false",
    "data-depth": String(depth),
  }, twisty, el("span", { class: "mark", "aria-hidden": "true" }), el("span", { class: "name" }, node.name),
  node.sub ? el("span", { class: "sub" }, node.sub) : null,
  el("span", { class: "dur" }, node.duration !== undefined && node.duration !== null ? fmtDuration(node.duration) : `+${fmtDuration(offset)}`),
  bar);
  row.addEventListener("click", (e) => {
    if (e.target === twisty && hasKids) {
      const kids = row.nextSibling;
      kids.classList.toggle("collapsed");
      twisty.textContent = kids.classList.contains("collapsed") ? "▸" : "▾";
      return;
    }
    onSelect(node, row);
  });
  row.addEventListener("keydown", (e) => { if (e.key === "Enter") onSelect(node, row); });
  return row;
}

function renderTree(nodes, container, depth, totalMs, startMs, onSelect) {
  for (const node of nodes) {
    container.append(nodeRow(node, depth, totalMs, startMs, onSelect));
    if (node.children.length) {
      const kids = el("div", { class: "children", role: "group" });
      renderTree(node.children, kids, depth + 1, totalMs, startMs, onSelect);
      container.append(kids);
    }
  }
}

function detailFields(node) {
  const ev = node.end || node.events[node.events.length - 1];
  const payload = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
  const fields = [["event", ev.event_type]];
  if (node.kind === "action") {
    fields.push(["action_name", node.name], ["duration", fmtDuration(node.duration)],
      ["status", ev.status || (node.end ? (node.failed ? "failure" : "success") : "running")]);
    for (const [k, v] of Object.entries(payload)) if (k !== "action_name") fields.push([k, v]);
  } else if (node.kind === "llm") {
    const data = payload.data && typeof payload.data === "object" ? payload.data : {};
    fields.push(["name", data.name], ["model", data.model], ["tokens_in", data.tokens_in], ["tokens_out", data.tokens_out],
      ["cost", data.cost], ["duration", fmtDuration(data.duration_ms)], ["prompt_preview", data.prompt_preview],
      ["response_preview", data.response_preview]);
    const shown = new Set(["name", "model", "tokens_in", "tokens_out", "cost", "duration_ms", "prompt_preview", "response_preview"]);
    for (const [k, v] of Object.entries(data)) if (!shown.has(k)) fields.push([k, v]);
    if (payload.summary) fields.push(["summary", payload.summary]);
  } else {
    if (ev.status) fields.push(["status", ev.status]);
    if (ev.duration_ms !== null && ev.duration_ms !== undefined) fields.push(["duration", fmtDuration(ev.duration_ms)]);
    for (const [k, v] of Object.entries(payload)) fields.push([k, v]);
  }
  for (const k of ["action_id", "parent_action_id", "task_run_id", "severity"]) if (ev[k]) fields.push([k, ev[k]]);
  return { ev, fields };
}

function renderDetail(panel, node) {
  const { ev, fields } = detailFields(node);
  const list = el("dl", { class: "kv", id: "detail-fields" });
  for (const [k, v] of fields) {
    list.append(el("dt", null, k), el("dd", { class: k.startsWith("exception") ? "bad" : null, "data-field": k }, text(v)));
  }
  panel.replaceChildren(
    el("h2", null, el("span", { class: `node kind-${node.kind}${node.failed ? " failed" : ""}` }, el("span", { class: "mark" })),
      el("span", { id: "detail-title" }, node.name), el("span", { class: "when" }, fmtClock(ev.timestamp))),
    list,
    el("details", { class: "raw" }, el("summary", null, `raw event${node.events.length > 1 ? "s" : ""}`),
      el("pre", null, node.events.map((e) => JSON.stringify(e, null, 2)).join("\n\n"))));
}

// Links between tasks of different services (hiveloop_async.contrib.propagation): the caller
// named in task_started, the callees named by delegation events.
function taskLinks(timeline) {
  const links = [];
  const link = (id) => el("a", { href: `#/task/${encodeURIComponent(id)}` }, text(id));
  for (const ev of timeline.events) {
    const p = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
    if (ev.event_type === "task_started" && p.caller_task_id) {
      links.push(el("span", { class: "link-caller" }, `⇠ called by ${text(p.caller_agent_id)} `, link(p.caller_task_id)));
    }
    const data = p.data && typeof p.data === "object" ? p.data : {};
    if (ev.event_type === "custom" && p.kind === "delegation" && data.sub_task_id) {
      links.push(el("span", { class: "link-callee" }, `⇢ delegated to ${text(data.subagent_id)} `, link(data.sub_task_id)));
    }
  }
  return links.length ? el("div", { class: "facts", id: "task-links" }, links) : null;
}

async function viewTimeline(main, taskId) {
  // The page draws its own tree from `events`; HiveBoard's action_tree would repeat them.
  const timeline = await api(`/v1/tasks/${encodeURIComponent(taskId)}/timeline`, { action_tree: "false" });
  if (!timeline) {
    main.replaceChildren(el("div", { class: "card" }, emptyState(`No task ${taskId}`, "It has no stored events on this server.")));
    return;
  }
  const started = performance.now();
  const nodes = buildNodes(timeline);
  const startMs = new Date(timeline.started_at).getTime();
  const lastMs = Math.max(...timeline.events.map((e) => new Date(e.timestamp).getTime()).filter((t) => !Number.isNaN(t)));
  const totalMs = timeline.duration_ms || (lastMs - startMs) || 0;
  const status = timeline.derived_status;
  const head = el("div", { class: "tl-head" }, el("h1", null, el("span", { class: "muted" }, "TIMELINE "), timeline.task_id),
    el("div", { class: "facts" },
      el("span", null, `duration ${fmtDuration(timeline.duration_ms)}`), el("span", null, `agent ${text(timeline.agent_id)}`),
      el("span", { class: `badge ${status}` }, status), el("span", null, `◆ ${timeline.llm_call_count ?? 0} LLM`),
      el("span", null, `${fmtInt(timeline.total_tokens_in)} in / ${fmtInt(timeline.total_tokens_out)} out`),
      el("span", null, fmtCost(timeline.total_cost))), taskLinks(timeline));
  const legend = el("div", { class: "legend" },
    [["task", "task start / end"], ["action", "action"], ["llm", "LLM call"], ["failed", "failure"]].map(([k, label]) =>
    el("span", { class: `node kind-${k === "failed" ? "action failed" : k}` }, el("span", { class: "mark" }), label)));
  const tree = el("div", { class: "tl card", role: "tree", id: "timeline" });
  const panel = el("aside", { class: "detail card", id: "detail" }, emptyState("Click a node", "Its fields, payload and exception appear here."));
  let selected = null;
  const onSelect = (node, row) => {
    if (selected) selected.classList.remove("selected");
    selected = row;
    row.classList.add("selected");
    renderDetail(panel, node);
  };
  renderTree(nodes, tree, 0, totalMs, startMs, onSelect);
  main.replaceChildren(el("div", null, el("a", { href: "#/tasks" }, "← Tasks")), head, legend, el("div", { class: "tl-layout" }, tree, panel));
  tree.dataset.renderMs = String(Math.round(performance.now() - started));
  tree.dataset.nodes = String(tree.querySelectorAll(".node").length);
}

// ------------------------------------------------------------------ views: activity

const FILTERS = {
  all: () => true,
  action: (k) => k === "action",
  llm: (k) => k === "llm",
  error: (k) => k === "error",
  issue: (k) => k === "issue",
  task: (k) => k === "task" || k === "error",
};

const activity = { filter: "all", paused: false, buffered: [], list: null, counter: null, seen: new Set() };

function eventRow(ev, fresh) {
  const kind = eventKind(ev);
  const where = [ev.agent_id, ev.task_id].filter(Boolean).join(" › ");
  return el("div", { class: `ev kind-${kind}${fresh ? " fresh" : ""}`, "data-kind": kind, "data-event-type": ev.event_type },
    el("span", { class: "mark" }), el("span", { class: "type" }, ev.event_type),
    el("span", { class: "where" }, ev.task_id ? el("a", { href: `#/task/${encodeURIComponent(ev.task_id)}` }, where) : where),
    el("span", { class: "what" }, eventSummary(ev)), el("span", { class: "when", title: ev.timestamp }, fmtClock(ev.timestamp)));
}

function applyActivityFilter() {
  if (!activity.list) return;
  const keep = FILTERS[activity.filter];
  for (const row of activity.list.children) row.hidden = !keep(row.dataset.kind);
}

function addActivity(events, fresh) {
  if (!activity.list || !activity.list.isConnected) return;
  const keep = FILTERS[activity.filter];
  for (const ev of events) {
    if (activity.seen.has(ev.event_id)) continue;
    activity.seen.add(ev.event_id);
    const row = eventRow(ev, fresh);
    row.hidden = !keep(row.dataset.kind);
    activity.list.prepend(row);
  }
  while (activity.list.children.length > 1000) activity.list.lastChild.remove();
  const empty = document.getElementById("activity-empty");
  if (empty) empty.hidden = activity.list.children.length > 0;
}

async function viewActivity(main) {
  const recent = await api("/v1/events", { limit: 200 });
  activity.list = el("div", { class: "stream", id: "stream" });
  activity.seen = new Set();
  activity.buffered = [];
  activity.counter = el("span", { class: "muted", id: "buffered" });
  const seg = el("div", { class: "seg", id: "stream-filters" }, Object.keys(FILTERS).map((name) =>
    el("button", { class: name === activity.filter ? "on" : null, "data-filter": name, onclick: (e) => {
      activity.filter = name;
      for (const b of seg.children) b.classList.toggle("on", b === e.currentTarget);
      applyActivityFilter();
    } }, name)));
  const pause = el("button", { id: "pause", onclick: () => {
    activity.paused = !activity.paused;
    pause.textContent = activity.paused ? "Resume" : "Pause";
    document.getElementById("live").classList.toggle("paused", activity.paused);
    if (!activity.paused) {
      addActivity(activity.buffered, true);
      activity.buffered = [];
      activity.counter.textContent = "";
    }
  } }, activity.paused ? "Resume" : "Pause");
  main.replaceChildren(el("h1", null, "Activity Stream"), el("div", { class: "filters" }, seg, pause, activity.counter),
    el("div", { class: "card" }, el("div", { id: "activity-empty", class: "empty-wrap" }, emptyState("No events yet", sdkHint())), activity.list));
  addActivity(recent.data.slice().reverse(), false);
}

function onLiveEvent(ev) {
  if (state.view === "activity") {
    if (activity.paused) {
      activity.buffered.push(ev);
      activity.counter.textContent = `${activity.buffered.length} new while paused`;
    } else {
      addActivity([ev], true);
    }
  } else if (state.view === "agents" || state.view === "tasks" || state.view === "cost") {
    // Other views refresh at most every 2 s while events arrive.
    if (!state.refreshTimer) state.refreshTimer = setTimeout(() => { state.refreshTimer = null; route(true); }, 2000);
  }
}

// ------------------------------------------------------------------ views: cost

async function viewCost(main) {
  const range = hashParams().get("range") || "24h";
  const cost = await api("/v1/cost", { range });
  const seg = el("div", { class: "seg" }, ["1h", "24h", "7d", "30d", "all"].map((r) =>
    el("button", { class: r === range ? "on" : null, onclick: () => { location.hash = `#/cost?range=${r}`; } }, r)));
  main.replaceChildren(el("h1", null, "Cost"), el("div", { class: "filters" }, seg));
  if (!cost.call_count) {
    main.append(el("div", { class: "card" }, emptyState("No LLM calls in this range",
      "Costs come from task.llm_call(...) events (cost, tokens_in, tokens_out).")));
    return;
  }
  const stat = (label, value) => el("div", { class: "card stat" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  main.append(el("div", { class: "stats" }, stat("Total cost", fmtCost(cost.total_cost)), stat("LLM calls", fmtInt(cost.call_count)),
    stat("Tokens in", fmtInt(cost.total_tokens_in)), stat("Tokens out", fmtInt(cost.total_tokens_out))));
  const table = (title, key, rows, id) => {
    const max = Math.max(...rows.map((r) => r.cost), 0) || 1;
    return el("div", { class: "card" }, el("h2", null, title), el("table", { id },
      el("thead", null, el("tr", null, el("th", null, key === "agent_id" ? "Agent" : "Model"), el("th", null, "Cost"),
        el("th", { class: "num" }, "Calls"), el("th", { class: "num" }, "Tokens in / out"))),
      el("tbody", null, rows.map((r) => {
        const bar = el("i");
        bar.style.width = `${(r.cost / max) * 100}%`;
        return el("tr", null, el("td", null, text(r[key])),
          el("td", null, el("div", { class: "barcell" }, el("span", { class: "bar" }, bar), fmtCost(r.cost))),
          el("td", { class: "num" }, fmtInt(r.call_count)),
          el("td", { class: "num" }, `${fmtInt(r.tokens_in)} / ${fmtInt(r.tokens_out)}`));
      }))));
  };
  main.append(el("div", { class: "grid cols-2" }, table("By agent", "agent_id", cost.by_agent, "cost-by-agent"),
    table("By model", "model", cost.by_model, "cost-by-model")));
}

// ------------------------------------------------------------------ live stream (SSE)

async function startLive() {
  if (state.live) state.live.abort();
  const controller = new AbortController();
  state.live = controller;
  const badge = document.getElementById("live");
  let after = null;
  while (!controller.signal.aborted) {
    try {
      const url = after === null ? "/v1/stream" : `/v1/stream?after=${after}`;
      const response = await fetch(url, { headers: authHeaders(), signal: controller.signal });
      if (response.status === 401) { badge.textContent = "● key needed"; badge.className = "live off"; return; }
      if (!response.ok || !response.body) throw new Error(`stream: HTTP ${response.status}`);
      badge.textContent = "● live";
      badge.className = activity.paused ? "live paused" : "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) after = Number(line.slice(4));
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) {
            try { onLiveEvent(JSON.parse(data)); } catch (err) { console.error(err); }
          }
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    badge.textContent = "● reconnecting";
    badge.className = "live off";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ------------------------------------------------------------------ router

async function route(refresh) {
  const hash = location.hash || "#/agents";
  const path = hash.slice(2).split("?")[0];
  const [view, ...rest] = path.split("/");
  const main = document.getElementById("main");
  state.view = view === "task" ? "timeline" : view;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === state.view || (state.view === "timeline" && link.dataset.view === "tasks"));
  }
  if (refresh && state.view === "activity") return;
  const started = performance.now();
  try {
    if (view === "task" && rest.length) await viewTimeline(main, decodeURIComponent(rest.join("/")));
    else if (view === "tasks") await viewTasks(main);
    else if (view === "activity") await viewActivity(main);
    else if (view === "cost") await viewCost(main);
    else await viewAgents(main);
    main.dataset.ready = state.view;
    main.dataset.ms = String(Math.round(performance.now() - started));
  } catch (err) {
    if (err instanceof AuthNeeded) {
      main.replaceChildren(el("div", { class: "card" }, emptyState("API key needed", "Enter one of the server's API keys to see its data.")));
      return;
    }
    main.replaceChildren(el("div", { class: "card" }, emptyState("Could not load this view", String(err.message || err))));
  }
}

window.addEventListener("hashchange", () => route(false));
window.addEventListener("DOMContentLoaded", () => {
  setupKeyDialog();
  route(false);
  startLive();
});
