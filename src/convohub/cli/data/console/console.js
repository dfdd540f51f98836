// The ops console. Plain JavaScript, no build step: it signs in with an API key, calls the
// services' own APIs with it (Authorization: Bearer KEY), and refetches its panels whenever
// the hub's change stream (/v1/console/stream, Server-Sent Events) says the hub moved.
"use strict";

const KEY_STORAGE = "convohub.console.key";
const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const state = {
  key: sessionStorage.getItem(KEY_STORAGE),
  session: null,
  selected: null, // the conversation id shown in the conversation view
  offers: [],
  refreshing: null,
  again: false,
  stream: null,
  refreshes: 0,
};

// --- small helpers -------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

/** A DOM element; children are nodes or strings (always text, never HTML). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) element.append(child);
  return element;
}

function fill(panel, ...children) {
  const body = document.querySelector(`#${panel} .body`);
  body.replaceChildren(...children.flat());
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const sign = seconds < 0 ? "-" : "";
  let s = Math.abs(Math.round(seconds));
  if (s < 60) return `${sign}${s}s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  s = Math.floor(s / 60);
  return `${sign}${Math.floor(s / 60)}h ${String(s % 60).padStart(2, "0")}m`;
}

const percent = (value) => (value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`);
const score = (value) => (value === null || value === undefined ? "–" : value.toFixed(2));
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }) : "");
const shortId = (id) => (id && id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id || "–");
const kindOf = (type) => type.replace(/^convohub\./, "").replace(/\.v\d+$/, "").replace(/_/g, " ");
const isSupervisor = () => state.session && state.session.role !== "agent";

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Call an API with the signed-in key; a problem answer becomes an ApiError. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let problem;
    try { problem = await response.json(); } catch { problem = { title: response.statusText }; }
    if (response.status === 401 && state.session) signOut(problem.detail);
    throw new ApiError(response.status, problem);
  }
  return response.status === 204 ? null : response.json();
}

function problemText(error) {
  if (error instanceof ApiError && error.status === 403) return `Not for this key: ${error.message}`;
  return error.message || String(error);
}

// --- sign in and out -----------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  try {
    state.session = await api("/v1/console/session");
  } catch (error) {
    state.key = null;
    throw error;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  const s = state.session;
  $("#who").textContent = `${s.tenant_name} · ${s.agent_id ? `agent ${s.agent_id}` : s.role}`;
  document.body.dataset.role = s.role;
  $("#who").hidden = false;
  $("#sign-out").hidden = false;
  $("#sign-in").hidden = true;
  $("#console").hidden = false;
  $("#conversations-title").textContent = isSupervisor() ? "Recent conversations" : "My conversations";
  for (const panel of document.querySelectorAll(".supervisor-only")) panel.hidden = !isSupervisor();
  for (const panel of document.querySelectorAll(".agent-only")) panel.hidden = !s.agent_id;
  $("#kpis").replaceChildren();
  const tiles = isSupervisor() ? ["conversations", "service-level", "csat", "frt", "waiting", "oldest", "online"] : ["offers", "waiting", "oldest", "online"];
  for (const id of tiles) kpi(id, "", "…");
  listen();
  await refresh();
}

function signOut(reason) {
  state.key = null;
  state.session = null;
  state.selected = null;
  sessionStorage.removeItem(KEY_STORAGE);
  if (state.stream) state.stream.abort();
  setLive(false);
  $("#who").hidden = true;
  $("#sign-out").hidden = true;
  $("#console").hidden = true;
  $("#sign-in").hidden = false;
  const shown = $("#sign-in-error");
  shown.textContent = reason || "";
  shown.hidden = !reason;
}

// --- live updates over Server-Sent Events --------------------------------------------------

function setLive(on, version) {
  const live = $("#live");
  live.dataset.state = on ? "on" : "off";
  if (version !== undefined) live.dataset.version = version;
  live.querySelector("span").textContent = on ? `live · ${new Date().toLocaleTimeString([], { hour12: false })}` : "offline";
}

/** Read the change stream with fetch (EventSource cannot send the Authorization header). */
async function listen() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch("/v1/console/stream", {
        headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (response.status === 401) return signOut("The key is no longer valid.");
      if (!response.ok) throw new Error(`stream answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onStreamEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function onStreamEvent(block) {
  let name = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const { version } = JSON.parse(data);
  setLive(true, version);
  if (name === "change" || name === "tick" || name === "hello") refresh();
}

// --- panels --------------------------------------------------------------------------------

/** Refetch every panel; a refresh asked for while one runs runs once more after it. */
async function refresh() {
  if (!state.session) return;
  if (state.refreshing) { state.again = true; return state.refreshing; }
  state.refreshing = (async () => {
    do {
      state.again = false;
      const jobs = [loadQueuesAgentsAndKpis(), loadSla(), loadConversations(), loadOffers()];
      if (isSupervisor()) jobs.push(loadMetrics());
      if (state.selected) jobs.push(showConversation(state.selected, { quiet: true }));
      await Promise.allSettled(jobs);
      state.refreshes += 1;
      document.body.dataset.refreshes = state.refreshes;
    } while (state.again && state.session);
  })();
  try { await state.refreshing; } finally { state.refreshing = null; }
}

function guard(panel, loader) {
  return loader().catch((error) => fill(panel, h("p", { class: "problem" }, problemText(error))));
}

function kpi(id, label, value, extra = "") {
  const tile = $(`#kpi-${id}`) || $("#kpis").appendChild(h("div", { class: "kpi", id: `kpi-${id}` }, h("b"), h("span")));
  tile.querySelector("b").textContent = value;
  tile.querySelector("b").className = extra;
  tile.querySelector("span").textContent = label;
}

const loadQueuesAgentsAndKpis = () => Promise.all([
  guard("panel-queues", async () => {
    const { queues } = await api("/v1/queues");
    const waiting = queues.reduce((sum, q) => sum + q.length, 0);
    kpi("waiting", "waiting in queues", waiting);
    const oldest = Math.max(0, ...queues.map((q) => q.oldest_wait_seconds));
    kpi("oldest", "longest wait now", duration(oldest), oldest > 120 ? "bad" : "");
    fill("panel-queues", h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "skill group"), h("th", { class: "num" }, "waiting"),
        h("th", { class: "num" }, "oldest"), h("th", { class: "num" }, "est. wait"), h("th", { class: "num" }, "agents free/online"))),
      h("tbody", {}, queues.map((q) => h("tr", { dataset: { queue: q.skill_group, length: q.length } },
        h("td", {}, q.skill_group),
        h("td", { class: `num ${q.length ? "warn" : ""}` }, q.length),
        h("td", { class: "num" }, duration(q.oldest_wait_seconds)),
        h("td", { class: "num" }, duration(q.estimated_wait_seconds)),
        h("td", { class: "num" }, `${q.agents_available}/${q.agents_online}`))))));
  }),
  guard("panel-agents", async () => {
    const { agents } = await api("/v1/agents");
    const me = agents.find((a) => a.agent_id === state.session.agent_id);
    state.myPresence = me ? me.presence : null;
    const presence = $("#my-presence");
    if (presence) presence.textContent = state.myPresence ? `You are ${state.myPresence}.` : "";
    const online = agents.filter((a) => a.presence === "online").length;
    kpi("online", "agents online", `${online}/${agents.length}`);
    fill("panel-agents", agents.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "agent"), h("th", {}, "presence"), h("th", { class: "num" }, "load"), h("th", {}, "per channel"))),
      h("tbody", {}, agents.map((a) => h("tr", { dataset: { agent: a.agent_id, presence: a.presence, load: a.load } },
        h("td", {}, a.name || a.agent_id, h("div", { class: "empty" }, a.agent_id)),
        h("td", {}, h("span", { class: `pill ${a.presence}` }, a.presence)),
        h("td", { class: "num" }, `${a.load}/${a.capacity}`,
          h("div", { class: "meter" }, h("i", { style: `width:${a.capacity ? Math.round((100 * a.load) / a.capacity) : 0}%` }))),
        h("td", {}, channelLoads(a.channels)))))) :
      h("p", { class: "empty" }, "No agents configured."));
  }),
]);

/** The channels an agent is busy on (load/capacity); the idle ones only as a count. */
function channelLoads(channels) {
  const entries = Object.entries(channels);
  const busy = entries.filter(([, c]) => c.load > 0);
  return h("div", { class: "chips" },
    busy.map(([channel, c]) => h("span", { class: "pill assigned", dataset: { channel, load: c.load } }, `${channel} ${c.load}/${c.capacity}`)),
    entries.length > busy.length ? h("span", { class: "pill", title: entries.filter(([, c]) => !c.load).map(([channel, c]) => `${channel} 0/${c.capacity}`).join(", ") },
      busy.length ? `+${entries.length - busy.length} idle` : `${entries.length} channels idle`) : "");
}

const loadSla = () => guard("panel-sla", async () => {
  const { clocks } = await api("/v1/sla/at-risk?limit=8");
  fill("panel-sla", clocks.length ? h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "conversation"), h("th", {}, "clock"), h("th", { class: "num" }, "target"), h("th", { class: "num" }, "left"))),
    h("tbody", {}, clocks.map((c) => h("tr", { class: "clickable", dataset: { conversation: c.conversation_id }, onclick: () => showConversation(c.conversation_id) },
      h("td", {}, shortId(c.conversation_id)),
      h("td", {}, c.metric.replace(/_/g, " "), c.breached ? h("span", { class: "pill breached" }, " breached") : ""),
      h("td", { class: "num" }, duration(c.target_seconds)),
      h("td", { class: `num ${c.remaining_seconds < 0 ? "bad" : c.remaining_seconds < 60 ? "warn" : ""}` }, duration(c.remaining_seconds)))))) :
    h("p", { class: "empty" }, "No running SLA clocks."));
});

async function loadMetrics() {
  const [total, byHour, byChannel] = await Promise.all([
    api("/v1/metrics"), api("/v1/metrics?group_by=hour"), api("/v1/metrics?group_by=channel"),
  ].map((call) => call.catch((error) => error)));
  if (!(total instanceof Error)) {
    const t = total.rows[0];
    kpi("conversations", "conversations", t.conversations);
    kpi("service-level", `answered within ${total.service_level_seconds}s`, percent(t.service_level),
      t.service_level !== null && t.service_level < 0.8 ? "warn" : "good");
    kpi("csat", `CSAT (${t.csat_answers} answers)`, score(t.csat));
    kpi("frt", "first response", duration(t.first_response_seconds));
    document.body.dataset.conversations = t.conversations;
  }
  if (byHour instanceof Error) {
    fill("panel-trends", h("p", { class: "problem" }, problemText(byHour)));
    fill("panel-heatmap", h("p", { class: "problem" }, problemText(byHour)));
  } else {
    renderTrends(byHour.rows);
    renderHeatmap(byHour.rows);
  }
  if (byChannel instanceof Error) fill("panel-channels", h("p", { class: "problem" }, problemText(byChannel)));
  else renderChannels(byChannel.rows);
}

function lineChart(label, points, { min, max, format }) {
  const width = 300, height = 120, pad = 18;
  const x = (i) => pad + (points.length < 2 ? (width - 2 * pad) / 2 : (i * (width - 2 * pad)) / (points.length - 1));
  const y = (v) => height - pad - ((v - min) / (max - min)) * (height - 2 * pad);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  for (const v of [min, (min + max) / 2, max]) {
    chart.append(svg("line", { x1: pad, x2: width - pad, y1: y(v), y2: y(v), stroke: "#e3e7ee" }));
    chart.append(svg("text", { x: 0, y: y(v) + 3, "font-size": 9, fill: "#6b7385" }, format(v)));
  }
  const drawn = points.map((p, i) => [x(i), y(p.value)]);
  if (drawn.length > 1) chart.append(svg("polyline", { points: drawn.map((d) => d.join(",")).join(" "), fill: "none", stroke: "#2f6fed", "stroke-width": 2 }));
  drawn.forEach(([cx, cy], i) => {
    const dot = svg("circle", { cx, cy, r: 3, fill: "#2f6fed" });
    dot.append(svg("title", {}, `${points[i].hour}: ${format(points[i].value)}`));
    chart.append(dot);
  });
  const last = points.length ? format(points[points.length - 1].value) : "–";
  return h("div", { class: "chart" }, h("div", { class: "label" }, `${label} · last hour ${last}`), chart);
}

function renderTrends(rows) {
  const recent = rows.slice(-24);
  const service = recent.filter((r) => r.service_level !== null).map((r) => ({ hour: r.hour, value: r.service_level }));
  const csat = recent.filter((r) => r.csat !== null).map((r) => ({ hour: r.hour, value: r.csat }));
  if (!recent.length) return fill("panel-trends", h("p", { class: "empty" }, "No conversations yet."));
  fill("panel-trends", h("div", { class: "charts" },
    lineChart("Service level", service, { min: 0, max: 1, format: percent }),
    lineChart("CSAT (1–5)", csat, { min: 1, max: 5, format: (v) => v.toFixed(1) })));
}

function renderHeatmap(rows) {
  const counts = Array.from({ length: 7 }, () => new Array(24).fill(0));
  for (const row of rows) {
    if (!row.hour) continue;
    const at = new Date(row.hour);
    counts[(at.getUTCDay() + 6) % 7][at.getUTCHours()] += row.conversations;
  }
  const peak = Math.max(1, ...counts.flat());
  const cells = [h("span")];
  for (let hour = 0; hour < 24; hour++) cells.push(h("span", { class: "hour" }, hour % 3 === 0 ? hour : ""));
  counts.forEach((hours, day) => {
    cells.push(h("span", {}, WEEKDAYS[day]));
    hours.forEach((count, hour) => cells.push(h("span", {
      class: "cell",
      title: `${WEEKDAYS[day]} ${hour}:00 UTC: ${count} conversations`,
      dataset: { count },
      style: count ? `background: rgba(47, 111, 237, ${0.15 + (0.85 * count) / peak})` : undefined,
    })));
  });
  fill("panel-heatmap", h("div", { class: "heatmap", dataset: { total: counts.flat().reduce((a, b) => a + b, 0) } }, cells));
}

function renderChannels(rows) {
  const total = rows.reduce((sum, r) => sum + r.conversations, 0);
  if (!total) return fill("panel-channels", h("p", { class: "empty" }, "No conversations yet."));
  const sorted = [...rows].sort((a, b) => b.conversations - a.conversations);
  fill("panel-channels", h("div", { class: "bars" }, sorted.map((r) => h("div", { class: "row", dataset: { channel: r.channel || "unknown", count: r.conversations } },
    h("span", {}, r.channel || "unknown"),
    h("div", {}, h("div", { class: "fill", style: `width:${Math.max(2, (100 * r.conversations) / total)}%` })),
    h("span", { class: "num" }, `${r.conversations} · ${Math.round((100 * r.conversations) / total)}%`)))));
}

const loadConversations = () => guard("panel-conversations", async () => {
  const query = isSupervisor() ? "limit=15" : "assignee=me&limit=15";
  const { items } = await api(`/v1/conversations?${query}`);
  fill("panel-conversations", items.length ? h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "conversation"), h("th", {}, "channel"), h("th", {}, "state"), h("th", {}, "agent"), h("th", {}, "group"), h("th", {}, "updated"))),
    h("tbody", {}, items.map((c) => h("tr", {
      class: `clickable ${c.conversation_id === state.selected ? "selected" : ""}`,
      dataset: { conversation: c.conversation_id },
      onclick: () => showConversation(c.conversation_id),
    },
    h("td", {}, shortId(c.conversation_id), c.vip ? h("span", { class: "pill offered", title: "VIP" }, "VIP") : ""),
    h("td", {}, c.channel || "–"),
    h("td", {}, h("span", { class: `pill ${c.state}` }, c.state)),
    h("td", {}, c.assigned_agent_id || "–"),
    h("td", {}, c.skill_group || "–", c.priority ? ` · ${c.priority}` : ""),
    h("td", {}, clock(c.updated_at)))))) :
    h("p", { class: "empty" }, isSupervisor() ? "No conversations yet." : "Nothing assigned to you yet: accept an offer."));
});

const loadOffers = () => {
  if (!state.session.agent_id) return Promise.resolve();
  return guard("panel-offers", async () => {
    const { offers } = await api("/v1/offers");
    state.offers = offers;
    kpi("offers", "offers for me", offers.length, offers.length ? "warn" : "");
    fill("panel-offers", offers.length ? h("table", {},
      h("tbody", {}, offers.map((o) => h("tr", { dataset: { offer: o.offer_id, conversation: o.conversation_id } },
        h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showConversation(o.conversation_id); } }, shortId(o.conversation_id))),
        h("td", {}, `${o.channel} · ${o.skill_group || "–"} · ${o.priority || ""}`, o.vip ? " · VIP" : ""),
        h("td", { class: "num" }, h("button", { class: "accept", onclick: () => accept(o) }, "Accept")))))) :
      h("p", { class: "empty" }, "No offers waiting. Set yourself online to get some."),
    presenceControl());
  });
};

function presenceControl() {
  const set = (presence) => api(`/v1/agents/${encodeURIComponent(state.session.agent_id)}/presence`, { method: "PUT", body: { presence } })
    .then(refresh, (error) => alert(problemText(error)));
  return h("div", { class: "buttons", style: "display:flex;gap:8px;margin-top:8px;align-items:center" },
    h("span", { id: "my-presence", class: "empty" }, state.myPresence ? `You are ${state.myPresence}.` : ""),
    h("button", { class: "secondary", onclick: () => set("online") }, "Go online"),
    h("button", { class: "secondary", onclick: () => set("away") }, "Away"));
}

async function accept(offer) {
  try {
    await api(`/v1/offers/${encodeURIComponent(offer.offer_id)}/accept`, { method: "POST" });
    state.selected = offer.conversation_id;
  } catch (error) {
    alert(problemText(error));
  }
  await refresh();
}

// --- the conversation view -----------------------------------------------------------------

function timelineItem(entry) {
  const data = entry.data || {};
  const content = data.content || {};
  const author = data.author || data.resolved_by || data.customer || null;
  const who = author ? author.display_name || author.id || author.kind || "" : data.agent_id || "";
  const text = content.text || data.text || content.transcript || data.summary || "";
  const from = entry.type.includes("message_received") ? "from-customer" : entry.type.includes("message_sent") ? "from-agent" : "";
  return h("li", { class: from, dataset: { type: entry.type } },
    h("span", { class: "at" }, clock(entry.at)),
    h("span", { class: "kind" }, kindOf(entry.type)), who ? ` · ${who}` : "",
    entry.delivery_state ? h("span", { class: "pill" }, entry.delivery_state) : "",
    text ? h("div", { class: "text" }, text) : "");
}

function routingView(routing) {
  if (!routing) return h("p", { class: "empty" }, "The router has not seen this conversation yet.");
  const explanation = routing.explanation || {};
  const classification = routing.classification || {};
  const candidates = explanation.candidates || [];
  return h("div", { class: "routing" },
    h("h2", {}, "Routing"),
    h("p", {}, h("span", { class: `pill ${routing.state}` }, routing.state), " ",
      `${routing.skill_group || "–"} · ${routing.priority || "–"}${routing.vip ? " · VIP" : ""}`,
      classification.rule_id ? ` · rule ${classification.rule_id} (${classification.kind})` : ""),
    explanation.summary ? h("p", { class: "summary" }, `Why: ${explanation.summary}`,
      explanation.strategy ? ` (${explanation.strategy.replace(/_/g, " ")}, widening ${explanation.widening_level})` : "") : "",
    candidates.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "candidate"), h("th", { class: "num" }, "load"), h("th", { class: "num" }, "skill"), h("th", {}, "verdict"))),
      h("tbody", {}, candidates.map((c) => h("tr", {},
        h("td", {}, c.agent_id),
        h("td", { class: "num" }, `${c.load}/${c.capacity}`),
        h("td", { class: "num" }, c.proficiency ?? "–"),
        h("td", { class: c.rejected_because ? "" : "good" }, c.rejected_because || (c.agent_id === routing.agent_id ? "chosen" : "eligible")))))) : "",
    routing.transfers && routing.transfers.length ? h("p", {}, `${routing.transfers.length} transfer(s)`) : "");
}

async function showConversation(id, { quiet = false } = {}) {
  if (state.selected !== id) state.report = null;
  state.selected = id;
  for (const row of document.querySelectorAll("#panel-conversations tr.clickable")) row.classList.toggle("selected", row.dataset.conversation === id);
  let conversation, routing;
  try {
    [conversation, routing] = await Promise.all([
      api(`/v1/conversations/${encodeURIComponent(id)}`),
      api(`/v1/conversations/${encodeURIComponent(id)}/routing`).catch((error) => {
        if (error.status === 404) return null;
        throw error;
      }),
    ]);
  } catch (error) {
    if (!quiet || error.status === 404) fill("panel-conversation", h("p", { class: "problem" }, problemText(error)));
    return;
  }
  if (state.selected !== id) return; // another conversation was picked meanwhile
  const c = conversation;
  const offer = state.offers.find((o) => o.conversation_id === id);
  // Only what changed is repainted, and the reply form is kept: a live update must not
  // eat what the agent is typing.
  const signature = JSON.stringify([c, routing, offer ? offer.offer_id : null]);
  const body = document.querySelector("#panel-conversation .body");
  let view = body.querySelector(".view");
  let form = body.querySelector("form.actions");
  if (!form || form.dataset.conversation !== id) {
    view = h("div", { class: "view" });
    form = replyForm(id);
    body.replaceChildren(view, form);
    if (state.report && state.report.id === id) report(state.report.error, state.report.notice);
  } else if (view.dataset.signature === signature) {
    return;
  }
  view.dataset.signature = signature;
  view.replaceChildren(
    h("div", { class: "meta", dataset: { conversation: c.conversation_id, state: c.state } },
      h("b", {}, c.conversation_id),
      h("span", { class: `pill ${c.state}` }, c.state),
      h("span", { class: "pill" }, c.channel || "–"),
      c.assigned_agent_id ? h("span", { class: "pill assigned" }, `agent ${c.assigned_agent_id}`) : "",
      c.skill_group ? h("span", { class: "pill" }, c.skill_group) : "",
      c.vip ? h("span", { class: "pill offered" }, "VIP") : ""),
    h("h2", {}, "Timeline"),
    h("ol", { class: "timeline" }, c.timeline.map(timelineItem)),
    routingView(routing));
  const acceptButton = form.querySelector("button.accept");
  acceptButton.hidden = !offer;
  acceptButton.onclick = offer ? () => accept(offer) : null;
  form.elements.text.placeholder = c.state === "closed" ? "This conversation is closed." : "Write a reply to the customer…";
  form.querySelector("button.send").disabled = c.state === "closed";
  form.querySelector("button.resolve").disabled = c.state !== "open";
  const timeline = view.querySelector(".timeline");
  timeline.scrollTop = timeline.scrollHeight;
}

function replyForm(id) {
  return h("form", { class: "actions", dataset: { conversation: id }, onsubmit: (event) => { event.preventDefault(); reply(id, event.target); } },
    h("button", { type: "button", class: "accept", hidden: true }, "Accept this offer"),
    h("textarea", { name: "text", "aria-label": "Reply" }),
    h("div", { class: "buttons" },
      h("button", { type: "submit", class: "send" }, "Send reply"),
      h("button", { type: "button", class: "secondary resolve", onclick: () => resolve(id) }, "Resolve")),
    h("p", { class: "problem", role: "alert", hidden: true }),
    h("p", { class: "notice", hidden: true }));
}

function report(error, notice) {
  state.report = { id: state.selected, error, notice }; // kept across the view's repaints
  const panel = $("#panel-conversation");
  const problem = panel.querySelector(".problem");
  const done = panel.querySelector(".notice");
  if (problem) { problem.textContent = error ? problemText(error) : ""; problem.hidden = !error; }
  if (done) { done.textContent = notice || ""; done.hidden = !notice; }
}

async function reply(id, form) {
  report(null);
  const text = form.elements.text.value.trim();
  if (!text) return report(new Error("Write something first."));
  try {
    const answer = await api(`/v1/conversations/${encodeURIComponent(id)}/messages`, {
      method: "POST", body: { text },
    });
    form.elements.text.value = "";
    await showConversation(id);
    report(null, `Sent (message ${answer.message_id}).`);
  } catch (error) {
    report(error);
  }
}

async function resolve(id) {
  report(null);
  try {
    await api(`/v1/conversations/${encodeURIComponent(id)}/resolve`, { method: "POST", body: {} });
    await refresh();
    await showConversation(id);
    report(null, "Resolved.");
  } catch (error) {
    report(error);
  }
}

// --- start ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#key").value.trim();
    try {
      await signIn(key);
      $("#key").value = "";
    } catch (error) {
      signOut(error instanceof ApiError && error.status === 401 ? `Sign-in refused: ${error.message}` : problemText(error));
    }
  });
  $("#sign-out").addEventListener("click", () => signOut());
  if (state.key) signIn(state.key).catch(() => signOut("Please sign in again."));
  else signOut();
});
