// The operator's page: log in over JSON-RPC, list the host and its VMs, and draw live graphs
// from /rrd_updates (JSON) every 5 s. No libraries and no external fetches.
"use strict";

const POLL_MS = 5000;
const WINDOW_S = 600;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
let session = null;
let names = {}; // uuid -> display name

async function rpc(method, params) {
  const r = await fetch("/jsonrpc", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", method: method, params: params, id: 1 }),
  });
  const j = await r.json();
  if (j.error) {
    if (j.error.message === "SESSION_INVALID") loggedOut();
    throw new Error([j.error.message].concat(j.error.data || []).join(" "));
  }
  return j.result;
}

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function loadInventory() {
  const hosts = await rpc("host.get_all_records", [session]);
  const host = Object.values(hosts)[0];
  if (host) {
    names[host.uuid] = "host " + host.name_label;
    document.getElementById("host").textContent = "Host " + host.name_label;
  }
  const vms = await rpc("VM.get_all_records", [session]);
  const body = document.querySelector("#vms tbody");
  body.replaceChildren();
  const list = Object.values(vms).filter((v) => !v.is_a_template && !v.is_a_snapshot);
  list.sort((a, b) => a.name_label.localeCompare(b.name_label));
  for (const v of list) {
    names[v.uuid] = v.name_label;
    const tr = el("tr");
    tr.append(el("td", v.name_label), el("td", v.power_state),
      el("td", String(Math.round(Number(v.memory_dynamic_max) / 1048576))));
    tr.dataset.uuid = v.uuid;
    body.append(tr);
  }
}

// Which graph a data source belongs to and how it is scaled; null for those not drawn.
function classify(kind, ds) {
  if (kind === "host" && ds === "cpu_avg") return ["cpu", 1, "avg"];
  if (kind === "vm" && /^cpu\d+$/.test(ds)) return ["cpu", 1, "avg"];
  if (kind === "host" && ds === "memory_total_kib") return ["memory", 1 / 1024, "sum"];
  if (kind === "host" && ds === "memory_free_kib") return ["memory", -1 / 1024, "sum"];
  if (kind === "vm" && ds === "memory") return ["memory", 1 / 1048576, "sum"];
  if (/^(pif|vif)_.+_(rx|tx)$/.test(ds)) return ["network", 1 / 1024, "sum"];
  if (/^vbd_.+_(read|write)$/.test(ds)) return ["disk", 1 / 1024, "sum"];
  return null;
}

// Turns the xport into graph -> [{label, points: [[t, v]]}].
function series(x) {
  const rows = x.data.slice().sort((a, b) => Number(a.t) - Number(b.t));
  const groups = {};
  x.meta.legend.forEach((name, col) => {
    const parts = name.split(":"); // CF:kind:uuid:ds
    if (parts.length < 4) return;
    const kind = parts[1], uuid = parts[2], ds = parts.slice(3).join(":");
    const c = classify(kind, ds);
    if (!c) return;
    const key = c[0] + "/" + uuid;
    const g = groups[key] || (groups[key] = { graph: c[0], uuid: uuid, mode: c[2], cols: [] });
    g.cols.push([col, c[1]]);
  });
  const out = { cpu: [], memory: [], network: [], disk: [] };
  for (const g of Object.values(groups)) {
    const points = [];
    for (const r of rows) {
      let sum = 0, n = 0;
      for (const [col, scale] of g.cols) {
        const v = Number(r.values[col]);
        if (Number.isFinite(v)) { sum += v * scale; n += 1; }
      }
      if (n === g.cols.length && n > 0) {
        points.push([Number(r.t), g.mode === "avg" ? sum / n : sum]);
      }
    }
    out[g.graph].push({ label: names[g.uuid] || g.uuid.slice(0, 8), points: points });
  }
  for (const k of Object.keys(out)) out[k].sort((a, b) => a.label.localeCompare(b.label));
  return out;
}

// How many pixels carry a series' colour: what a reader of the page sees plotted.
function inked(ctx, w, h) {
  const rgb = COLOURS.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  const d = ctx.getImageData(0, 0, w, h).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (rgb.some((c) => c[0] === d[i] && c[1] === d[i + 1] && c[2] === d[i + 2])) n += 1;
  }
  return n;
}

function draw(id, lines, t0, t1) {
  const c = document.getElementById("g-" + id);
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  let max = 0;
  for (const l of lines) for (const p of l.points) max = Math.max(max, p[1]);
  if (id === "cpu") max = Math.max(max, 1);
  max = max > 0 ? max * 1.1 : 1;
  ctx.strokeStyle = "#ccc";
  ctx.strokeRect(pad, 4, w - pad - 4, h - pad);
  ctx.fillStyle = "#555";
  ctx.font = "10px sans-serif";
  ctx.fillText(max.toPrecision(3), 2, 12);
  ctx.fillText("0", 2, h - pad + 4);
  ctx.fillText("-" + Math.round((t1 - t0) / 60) + " min", pad, h - pad + 14);
  ctx.fillText("now", w - 24, h - pad + 14);
  const xs = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - pad - 4);
  const ys = (v) => 4 + (1 - v / max) * (h - pad - 4);
  let plotted = 0;
  const legend = document.getElementById("l-" + id);
  legend.replaceChildren();
  lines.forEach((l, i) => {
    const colour = COLOURS[i % COLOURS.length];
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    l.points.forEach((p, j) => {
      if (j === 0) ctx.moveTo(xs(p[0]), ys(p[1]));
      else ctx.lineTo(xs(p[0]), ys(p[1]));
    });
    ctx.stroke();
    plotted += l.points.length;
    const s = el("span", "\u25A0 " + l.label);
    s.style.color = colour;
    legend.append(s);
  });
  c.dataset.points = String(plotted);
  c.dataset.inked = String(inked(ctx, w, h));
  c.dataset.series = String(lines.length);
}

async function poll() {
  if (session === null) return;
  const now = Math.floor(Date.now() / 1000);
  const q = "start=" + (now - WINDOW_S) + "&cf=AVERAGE&interval=5&host=true&json=true&session_id=" +
    encodeURIComponent(session);
  const status = document.getElementById("status");
  try {
    const r = await fetch("/rrd_updates?" + q);
    if (r.status === 401) loggedOut();
    if (!r.ok) throw new Error("rrd_updates: HTTP " + r.status + " " + (await r.text()).trim());
    const x = await r.json();
    const s = series(x);
    const t1 = Math.max(now, Number(x.meta.end));
    for (const g of ["cpu", "memory", "network", "disk"]) draw(g, s[g], t1 - WINDOW_S, t1);
    status.textContent = "Updated " + new Date().toLocaleTimeString() + ": " + x.meta.rows + " samples";
    document.body.dataset.state = "ready";
  } catch (e) {
    status.textContent = String(e.message || e);
    document.body.dataset.state = "error";
  }
}

let timer = null;

// Back to the login form when the session is gone (logged out elsewhere, xapi restarted).
function loggedOut() {
  session = null;
  sessionStorage.removeItem("session_id");
  if (timer !== null) clearInterval(timer);
  timer = null;
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("error").textContent = "Session ended: please log in again.";
}

async function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  try {
    await loadInventory();
  } catch (e) {
    document.getElementById("status").textContent = String(e.message || e);
  }
  await poll();
  if (timer !== null) clearInterval(timer);
  timer = setInterval(async () => {
    await loadInventory().catch(() => {});
    await poll();
  }, POLL_MS);
}

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("error");
  err.textContent = "";
  try {
    session = await rpc("session.login_with_password", [
      document.getElementById("user").value,
      document.getElementById("password").value,
      "1.0",
      "xen-rs web",
    ]);
    sessionStorage.setItem("session_id", session);
    start();
  } catch (e) {
    err.textContent = "Login failed: " + (e.message || e);
  }
});

// A session handed over in the URL (`#session_id=...`) or kept from an earlier login.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("session_id");
if (fromHash) {
  sessionStorage.setItem("session_id", fromHash);
  history.replaceState(null, "", location.pathname);
}
session = sessionStorage.getItem("session_id");
if (session) start();
