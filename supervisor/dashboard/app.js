// tunnel-py dashboard: renders the supervisor's status snapshot, pushed by server-sent events
// (/events, one snapshot a second). Rates are computed here from successive byte counters.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const HISTORY = 40; // rate samples kept per session for its sparkline
const SVG = "http://www.w3.org/2000/svg";
const sessions = new Map(); // session_id -> {row, last, up: [], down: []}
let totalsLast = null;

const $ = (id) => document.getElementById(id);

function size(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}
const rate = (n) => size(n) + "/s";

function age(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.floor(seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}

function sparkline(values) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 80 22");
  const line = document.createElementNS(SVG, "polyline");
  const max = Math.max(1, ...values);
  const step = 80 / Math.max(1, HISTORY - 1);
  const offset = (HISTORY - values.length) * step;
  line.setAttribute("points", values.map((v, i) => `${(offset + i * step).toFixed(1)},${(21 - (v / max) * 20).toFixed(1)}`).join(" "));
  svg.appendChild(line);
  return svg;
}

function cell(row, label, cls) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function newRow(s) {
  const row = document.createElement("tr");
  row.dataset.sessionId = s.session_id;
  const receiver = cell(row, "receiver", "mono");
  receiver.textContent = s.receiver_id.slice(0, 12);
  receiver.title = s.receiver_id;
  cell(row, "source", "mono").textContent = s.source;
  for (const [label, cls] of [["path", "path"], ["RTT", "rtt num"], ["age", "age num"], ["up", "up"], ["down", "down"], ["streams", "streams num"]]) {
    cell(row, label, cls);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "close";
  button.textContent = "Close";
  button.addEventListener("click", () => closeSession(s.session_id, button));
  cell(row, "", "act").appendChild(button);
  document.querySelector("#sessions tbody").appendChild(row);
  return { row, last: null, up: [], down: [] };
}

function rateCell(td, samples, total) {
  td.replaceChildren();
  const box = document.createElement("div");
  box.className = "rate";
  const text = document.createElement("span");
  text.className = "rate-text";
  text.textContent = samples.length ? rate(samples[samples.length - 1]) : "–";
  const bytes = document.createElement("span");
  bytes.className = "total bytes";
  bytes.textContent = size(total);
  box.append(sparkline(samples), text, bytes);
  td.appendChild(box);
}

function push(list, value) {
  list.push(Math.max(0, value));
  if (list.length > HISTORY) list.shift();
}

function renderSession(s, at) {
  const entry = sessions.get(s.session_id) || newRow(s);
  sessions.set(s.session_id, entry);
  if (entry.last) {
    const dt = at - entry.last.at;
    if (dt > 0) {
      push(entry.up, (s.bytes_up - entry.last.up) / dt);
      push(entry.down, (s.bytes_down - entry.last.down) / dt);
    }
  }
  entry.last = { at, up: s.bytes_up, down: s.bytes_down };
  const q = (sel) => entry.row.querySelector(sel);
  q(".path").textContent = s.state === "connected" ? (s.path || "?") + (s.route ? ` (${s.route})` : "") : s.state;
  // iroh reports whole milliseconds: 0 means under one.
  q(".rtt").textContent = s.rtt_ms == null ? "–" : s.rtt_ms < 1 ? "< 1 ms" : s.rtt_ms.toFixed(1) + " ms";
  q(".age").textContent = age(s.age_s);
  rateCell(q(".up"), entry.up, s.bytes_up);
  rateCell(q(".down"), entry.down, s.bytes_down);
  q(".streams").textContent = s.flows_open ? `${s.flows_open} flows` : `${s.streams_open} / ${s.streams_total}`;
}

function renderTotals(status) {
  const t = status.totals;
  $("mode").textContent = status.mode;
  $("endpoint").textContent = status.endpoint_id;
  $("active").textContent = `${status.sessions.length} / ${status.max_sessions}`;
  $("admitted").textContent = t.sessions_admitted;
  const refused = Object.entries(t.sessions_refused).filter(([, n]) => n > 0);
  $("refused").textContent = refused.reduce((sum, [, n]) => sum + n, 0);
  $("refused-detail").textContent = refused.map(([why, n]) => `${why} ${n}`).join(", ");
  $("bytes-up").textContent = size(t.bytes_up);
  $("bytes-down").textContent = size(t.bytes_down);
  if (totalsLast && status.sampled_at > totalsLast.at) {
    const dt = status.sampled_at - totalsLast.at;
    $("rate-up").textContent = rate(Math.max(0, (t.bytes_up - totalsLast.up) / dt));
    $("rate-down").textContent = rate(Math.max(0, (t.bytes_down - totalsLast.down) / dt));
  }
  totalsLast = { at: status.sampled_at, up: t.bytes_up, down: t.bytes_down };
  const setup = t.setup_seconds;
  $("setup").textContent = setup.count ? (setup.sum / setup.count).toFixed(2) + " s" : "–";
  $("drain").disabled = status.draining;
  $("drain-state").textContent = status.draining ? "draining: no new sessions" : "";
}

function render(status) {
  renderTotals(status);
  const live = new Set();
  for (const s of status.sessions) {
    live.add(s.session_id);
    renderSession(s, status.sampled_at);
  }
  for (const [id, entry] of sessions) {
    if (!live.has(id)) {
      entry.row.remove();
      sessions.delete(id);
    }
  }
  $("empty").hidden = status.sessions.length > 0;
}

async function post(path) {
  const response = await fetch(path, { method: "POST", headers: { "X-CSRF-Token": CSRF } });
  if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
}

async function closeSession(id, button) {
  button.disabled = true;
  button.textContent = "Closing…";
  try {
    await post(`/api/sessions/${id}/close`);
  } catch (err) {
    $("message").textContent = `close failed: ${err.message}`;
    button.disabled = false;
    button.textContent = "Close";
  }
}

// Draining refuses every new receiver: the button asks to be pressed twice.
$("drain").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Press again to drain";
    setTimeout(() => { button.classList.remove("armed"); button.textContent = "Drain sender"; }, 5000);
    return;
  }
  button.classList.remove("armed");
  button.textContent = "Drain sender";
  try {
    await post("/api/drain");
  } catch (err) {
    $("message").textContent = `drain failed: ${err.message}`;
  }
});

const feed = new EventSource("/events");
feed.addEventListener("status", (event) => {
  $("feed").dataset.state = "live";
  $("feed").textContent = "live";
  render(JSON.parse(event.data));
});
feed.addEventListener("error", () => {
  $("feed").dataset.state = "lost";
  $("feed").textContent = "reconnecting…";
});
