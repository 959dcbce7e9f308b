// nagare web page: query box with completion and history, time pickers, SVG charts,
// sortable tables, dashboards. No dependencies; served by the daemon.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#4fb3ff", "#ffb347", "#7bd389", "#ff6b9d", "#b39dff", "#ffd84f", "#4fe0d2", "#ff8a65", "#9ccc65", "#90a4ae"];
const TOP_LINES = 8;
let vocab = null;
let lastResult = null;

// ---------- units ----------
function scaled(v, units, step) {
  let x = v, i = 0;
  while (Math.abs(x) >= step && i + 1 < units.length) { x /= step; i++; }
  if (i === 0) return (Number.isInteger(x) ? x : x.toFixed(1)) + " " + units[0];
  return (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(1)) + " " + units[i];
}
const human = {
  bytes: (v) => scaled(v, ["B", "KB", "MB", "GB", "TB", "PB"], 1000),
  "bit/s": (v) => scaled(v, ["bps", "Kbps", "Mbps", "Gbps", "Tbps"], 1000),
  "packets/s": (v) => scaled(v, ["pps", "Kpps", "Mpps", "Gpps"], 1000),
  MB: (v) => (v >= 1024 ? (Math.round((v / 1024) * 10) / 10) + " GB" : v + " MB"),
};
function fmt(v, unit) {
  if (v === null || v === undefined) return "Unknown";
  if (Array.isArray(v)) return v.map((x) => fmt(x)).join(", ");
  if (typeof v === "number") {
    if (unit && human[unit]) return human[unit](v);
    if (Math.abs(v) >= 10000) return scaled(v, ["", "K", "M", "G", "T"], 1000).trim();
    return Number.isInteger(v) ? String(v) : v.toFixed(2);
  }
  return String(v);
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

// ---------- time range ----------
const RANGE_CLAUSE = { "1h": "in last 1 hour", "24h": "in last 24 hours", "2d": "in last 2 days", "7d": "in last 7 days" };
const HAS_TIME = /\b(in\s+last\s+\d+|last\s+\d+\s+\w+|between\b|during\b|\bat\s+['"])/i;
function timeState() {
  return {
    range: $("range").value,
    from: $("from").value, to: $("to").value,
    during: $("offhours").checked ? $("during-from").value + "-" + $("during-to").value : null,
  };
}
function compose(text, st) {
  text = text.trim();
  if (HAS_TIME.test(text)) return text; // the query says when
  let clause = RANGE_CLAUSE[st.range] || "";
  if (st.range === "custom" && st.from && st.to) {
    clause = `between '${st.from.replace("T", " ")}' and '${st.to.replace("T", " ")}'`;
  }
  if (st.during) clause += (clause ? " " : "") + "during " + st.during;
  return clause ? text + " " + clause : text;
}

// ---------- token ----------
// A server with tokens needs `Authorization: Bearer SECRET`. The page takes the secret
// from ?token= once (and removes it from the address) or from the sign-in field, and
// keeps it in sessionStorage (this tab only).
const TOKEN_KEY = "nagare.token";
(function tokenFromUrl() {
  const u = new URL(location.href);
  const t = u.searchParams.get("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t.trim());
    u.searchParams.delete("token");
    history.replaceState(null, "", u.pathname + u.search + u.hash);
  }
})();
function showLogin(msg) {
  $("login").classList.remove("hidden");
  $("login-msg").textContent = msg || "";
  $("token").focus();
}
async function signIn() {
  const t = $("token").value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  $("token").value = "";
  $("login").classList.add("hidden");
  api("/api/v1/vocabulary").then((r) => { if (r.ok) vocab = r.body; });
  await loadDashboards();
  if ($("query").value.trim()) run();
}

// ---------- API ----------
async function api(path, opts) {
  opts = Object.assign({}, opts || {});
  const headers = Object.assign({}, opts.headers || {});
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) headers.authorization = "Bearer " + t;
  opts.headers = headers;
  const r = await fetch(path, opts);
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401) showLogin(t ? "the token was refused; enter another" : "this server needs a token");
  return { ok: r.ok, status: r.status, body };
}
function runQuery(q) {
  return api("/api/v1/query", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query: q }) });
}

// ---------- errors ----------
function showError(err, q) {
  const box = $("error");
  if (!err) { box.classList.add("hidden"); box.textContent = ""; return; }
  const e = err.error || err;
  let text = "error: " + (e.message || "query failed");
  if (typeof e.start === "number") {
    const before = q.slice(0, e.start);
    const line = before.split("\n").length;
    const lineStart = before.lastIndexOf("\n") + 1;
    const lineText = q.split("\n")[line - 1] || "";
    const col = e.start - lineStart;
    const width = Math.max(1, (e.end || e.start + 1) - e.start);
    text += `\n  line ${line}, column ${col + 1}\n  ${lineText}\n  ${" ".repeat(col)}${"^".repeat(width)}`;
  }
  if (e.hint) text += "\n  hint: " + e.hint;
  box.textContent = text;
  box.classList.remove("hidden");
}

// ---------- charts ----------
function seriesByMetric(result) {
  const m = new Map();
  for (const s of result.series) {
    if (!m.has(s.metric)) m.set(s.metric, []);
    m.get(s.metric).push(s);
  }
  return m;
}
function groupName(g) { return g.length ? g.map((x) => fmt(x)).join(" / ") : "all"; }

// Top groups as lines, the rest summed as "other".
function topLines(list) {
  const total = (s) => s.points.reduce((a, p) => a + p[1], 0);
  const sorted = [...list].sort((a, b) => total(b) - total(a));
  const lines = sorted.slice(0, TOP_LINES).map((s) => ({ name: groupName(s.group), points: s.points }));
  const rest = sorted.slice(TOP_LINES);
  if (rest.length) {
    const pts = rest[0].points.map((p, i) => [p[0], rest.reduce((a, s) => a + (s.points[i] ? s.points[i][1] : 0), 0)]);
    lines.push({ name: `other (${rest.length})`, points: pts });
  }
  return lines;
}

function lineChart(metric, unit, lines, domain, compact) {
  const W = 900, H = compact ? 150 : 220, L = 64, R = 10, T = 8, B = 22;
  const ns = "http://www.w3.org/2000/svg";
  const div = document.createElement("div");
  div.className = "chart";
  div.innerHTML = `<h3>${esc(metric)} <span class="status">(${esc(unit)})</span></h3>`;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("data-metric", metric);
  const [t0, t1] = domain;
  // lines hidden from the legend (a click toggles one): the scale follows what is shown,
  // so a dominant group (often internal "Unknown") can be set aside
  const hidden = new Set();
  let ymax = 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const draw = () => {
    ymax = 0;
    lines.forEach((l, i) => { if (!hidden.has(i)) for (const p of l.points) ymax = Math.max(ymax, p[1]); });
    if (ymax <= 0) ymax = 1;
    let g = `<g class="grid">`;
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4;
      g += `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>`;
    }
    g += `</g><g class="axis">`;
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4;
      g += `<text x="${L - 6}" y="${y(v) + 3}" text-anchor="end">${esc(fmt(v, unit))}</text>`;
    }
    const span = t1 - t0;
    for (let i = 0; i <= 6; i++) {
      const t = t0 + (span * i) / 6;
      const d = new Date(t * 1000);
      const label = span > 2 * 86400 ? `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, "0")}:00`
        : `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
      g += `<text x="${x(t)}" y="${H - 6}" text-anchor="middle">${label}</text>`;
    }
    g += `</g>`;
    lines.forEach((l, i) => {
      const d = l.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
      g += `<path class="line" data-group="${esc(l.name)}" stroke="${COLORS[i % COLORS.length]}" d="${d}"${hidden.has(i) ? ' visibility="hidden"' : ""}/>`;
    });
    g += `<line class="cursor" x1="0" x2="0" y1="${T}" y2="${H - B}" stroke="#888" stroke-dasharray="3,3" visibility="hidden"/>`;
    svg.innerHTML = g;
  };
  draw();
  div.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.innerHTML = lines.map((l, i) => `<span data-i="${i}" title="show / hide"><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(l.name)}</span>`).join("");
  legend.querySelectorAll("span").forEach((sp) => sp.addEventListener("click", () => {
    const i = Number(sp.dataset.i);
    if (hidden.has(i)) hidden.delete(i); else hidden.add(i);
    sp.classList.toggle("off", hidden.has(i));
    draw();
  }));
  div.appendChild(legend);
  // hover: nearest bucket, values of every line
  const tip = $("tooltip");
  svg.addEventListener("mousemove", (ev) => {
    const rect = svg.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * W;
    const pts = lines[0] ? lines[0].points : [];
    if (!pts.length) return;
    let best = 0, bd = Infinity;
    pts.forEach((p, i) => { const d = Math.abs(x(p[0]) - px); if (d < bd) { bd = d; best = i; } });
    const t = pts[best][0];
    const cursor = svg.querySelector(".cursor");
    cursor.setAttribute("x1", x(t)); cursor.setAttribute("x2", x(t)); cursor.setAttribute("visibility", "visible");
    tip.innerHTML = `<b>${new Date(t * 1000).toLocaleString()}</b><br>` + lines
      .map((l, i) => `<i style="color:${COLORS[i % COLORS.length]}">■</i> ${esc(l.name)}: ${esc(fmt(l.points[best] ? l.points[best][1] : 0, unit))}`)
      .join("<br>");
    tip.style.left = ev.clientX + 14 + "px";
    tip.style.top = ev.clientY + 14 + "px";
    tip.classList.remove("hidden");
  });
  svg.addEventListener("mouseleave", () => { svg.querySelector(".cursor").setAttribute("visibility", "hidden"); tip.classList.add("hidden"); });
  return div;
}

function barChart(result, compact) {
  const cols = result.columns;
  const nkeys = cols.findIndex((c) => c.name === "count");
  if (nkeys <= 0 || !result.rows.length) return null;
  // the ordering column: first aggregate after count, else count
  const vi = cols.length > nkeys + 1 ? nkeys + 1 : nkeys;
  const unit = cols[vi].unit;
  const rows = result.rows.slice(0, compact ? 10 : 15);
  const max = Math.max(...rows.map((r) => Number(r[vi]) || 0), 1);
  const W = 900, rowH = 20, L = 220, H = rows.length * rowH + 6;
  const div = document.createElement("div");
  div.className = "chart bar";
  div.innerHTML = `<h3>${esc(cols[vi].name)} by ${esc(cols.slice(0, nkeys).map((c) => c.name).join(", "))}</h3>`;
  let s = `<svg viewBox="0 0 ${W} ${H}" data-kind="bar">`;
  rows.forEach((r, i) => {
    const v = Number(r[vi]) || 0;
    const w = ((W - L - 110) * v) / max;
    const name = r.slice(0, nkeys).map((x) => fmt(x)).join(" / ");
    s += `<text x="${L - 8}" y="${i * rowH + 14}" text-anchor="end">${esc(name.length > 34 ? name.slice(0, 33) + "…" : name)}</text>`;
    s += `<rect class="bar" x="${L}" y="${i * rowH + 3}" width="${Math.max(1, w)}" height="${rowH - 6}" fill="${COLORS[0]}"><title>${esc(name)}: ${esc(fmt(v, unit))}</title></rect>`;
    s += `<text class="val" x="${L + w + 6}" y="${i * rowH + 14}">${esc(fmt(v, unit))}</text>`;
  });
  div.innerHTML += s + "</svg>";
  return div;
}

// ---------- table ----------
function table(result) {
  const t = document.createElement("table");
  t.id = "result-table";
  const cols = result.columns;
  const numeric = cols.map((c) => !!c.unit || c.name === "count");
  let rows = result.rows.slice();
  let sortCol = -1, asc = false;
  const render = () => {
    t.innerHTML = "<thead><tr>" + cols.map((c, i) =>
      `<th data-i="${i}" class="${numeric[i] ? "num" : ""} ${i === sortCol ? "sorted " + (asc ? "asc" : "desc") : ""}">${esc(c.name)}</th>`).join("") + "</tr></thead>";
    const body = rows.map((r) => "<tr>" + r.map((v, i) =>
      `<td class="${numeric[i] ? "num" : ""}${v === null ? " null" : ""}" data-raw="${esc(v === null ? "" : Array.isArray(v) ? v.join(",") : v)}">${esc(fmt(v, cols[i].unit))}</td>`).join("") + "</tr>").join("");
    t.innerHTML += "<tbody>" + body + "</tbody>";
    t.querySelectorAll("th").forEach((th) => th.addEventListener("click", () => {
      const i = Number(th.dataset.i);
      asc = sortCol === i ? !asc : !numeric[i];
      sortCol = i;
      rows.sort((a, b) => {
        const x = a[i], y = b[i];
        const c = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
        return asc ? c : -c;
      });
      render();
    }));
  };
  render();
  return t;
}

function renderResult(result, targets, compact) {
  const { charts, bars, tablewrap } = targets;
  charts.innerHTML = ""; bars.innerHTML = ""; tablewrap.innerHTML = "";
  const domain = [Date.parse(result.time_range.start) / 1000, Date.parse(result.time_range.end) / 1000];
  if (result.series.length) {
    for (const [metric, list] of seriesByMetric(result)) {
      charts.appendChild(lineChart(metric, list[0].unit, topLines(list), domain, compact));
    }
  } else {
    const b = barChart(result, compact);
    if (b) bars.appendChild(b);
  }
  tablewrap.appendChild(table(result));
}

// ---------- query view ----------
function queryHistory() { try { return JSON.parse(localStorage.getItem("nagare.history") || "[]"); } catch (_) { return []; } }
function remember(q) {
  const h = queryHistory().filter((x) => x !== q);
  h.unshift(q);
  localStorage.setItem("nagare.history", JSON.stringify(h.slice(0, 50)));
  drawHistory();
}
function drawHistory() {
  $("history").innerHTML = queryHistory().map((q) => `<li>${esc(q)}</li>`).join("");
  $("history").querySelectorAll("li").forEach((li) => li.addEventListener("click", () => { $("query").value = li.textContent; run(); }));
}

function writeHash() {
  const st = timeState();
  const p = new URLSearchParams({ q: $("query").value, range: st.range });
  if (st.range === "custom") { p.set("from", st.from); p.set("to", st.to); }
  if (st.during) p.set("during", st.during);
  history_replace("#" + p.toString());
}
function history_replace(h) { if (location.hash !== h) window.history.replaceState(null, "", h); }
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (p.get("range")) $("range").value = p.get("range");
  if (p.get("from")) $("from").value = p.get("from");
  if (p.get("to")) $("to").value = p.get("to");
  if (p.get("during")) {
    const [a, b] = p.get("during").split("-");
    $("offhours").checked = true; $("during-from").value = a; $("during-to").value = b;
  }
  syncControls();
  if (p.get("view") === "dash") switchView("dash");
  if (p.get("q")) { $("query").value = p.get("q"); return true; }
  return false;
}
function syncControls() {
  $("custom").classList.toggle("hidden", $("range").value !== "custom");
  $("tod").classList.toggle("hidden", !$("offhours").checked);
}

async function run() {
  const text = $("query").value.trim();
  if (!text) return;
  const q = compose(text, timeState());
  $("status").textContent = "running…";
  showError(null);
  writeHash();
  const r = await runQuery(q);
  if (!r.ok) {
    $("status").textContent = "";
    showError(r.body || { message: `HTTP ${r.status}` }, q);
    return;
  }
  remember(text);
  lastResult = r.body;
  const res = r.body;
  $("status").textContent = `${res.query} · ${res.rows.length} rows${res.truncated ? " (limit reached)" : ""} · ${res.time_range.start} → ${res.time_range.end} · ${res.resolution_s}s buckets · ${res.stats.rows_scanned} rows scanned in ${res.stats.took_ms} ms`;
  renderResult(res, { charts: $("charts"), bars: $("bars"), tablewrap: $("tablewrap") }, false);
}

// ---------- completion ----------
function candidates() {
  if (!vocab) return [];
  const c = [];
  for (const x of vocab.entities) c.push([x, "entity"]);
  for (const x of vocab.properties) c.push([x, "property"]);
  for (const x of vocab.metrics) c.push([x, "metric"]);
  for (const x of vocab.keywords) c.push([x, "keyword"]);
  return c;
}
function quotedCandidates() {
  if (!vocab) return [];
  return [...vocab.flow_types.map((x) => [x, "flow type"]), ...vocab.countries.map((x) => [x, "country"]),
    ...vocab.vms.map((x) => [x, "vm"]), ...vocab.l2_networks.map((x) => [x, "l2 network"]), ...vocab.hosts.map((x) => [x, "host"])];
}
let compSel = 0, compItems = [], compPrefix = "";
function complete() {
  const inp = $("query");
  const before = inp.value.slice(0, inp.selectionStart);
  const inQuote = (before.match(/'/g) || []).length % 2 === 1;
  let prefix, list;
  if (inQuote) {
    prefix = before.slice(before.lastIndexOf("'") + 1);
    list = quotedCandidates();
  } else {
    const m = before.match(/([A-Za-z][\w-]*(?:\s+[A-Za-z][\w-]*){0,2})$/);
    prefix = m ? m[1] : "";
    list = candidates();
  }
  const box = $("complete");
  if (!prefix) { box.classList.add("hidden"); return; }
  // the longest word suffix of the typed text that begins some candidate
  const words = prefix.split(/\s+/);
  compItems = [];
  for (let k = 0; k < words.length && !compItems.length; k++) {
    const p = words.slice(k).join(" ").toLowerCase();
    compItems = list.filter(([w]) => w.toLowerCase().startsWith(p) && w.toLowerCase() !== p).slice(0, 10);
    compPrefix = words.slice(k).join(" ");
  }
  if (!compItems.length) { box.classList.add("hidden"); return; }
  compSel = 0;
  box.innerHTML = compItems.map(([w, k], i) => `<li class="${i === 0 ? "sel" : ""}" data-i="${i}">${esc(w)}<span class="kind">${k}</span></li>`).join("");
  box.querySelectorAll("li").forEach((li) => li.addEventListener("mousedown", (e) => { e.preventDefault(); accept(Number(li.dataset.i)); }));
  box.classList.remove("hidden");
}
function accept(i) {
  const inp = $("query");
  const pos = inp.selectionStart;
  const start = pos - compPrefix.length;
  const word = compItems[i][0];
  inp.value = inp.value.slice(0, start) + word + inp.value.slice(pos);
  inp.selectionStart = inp.selectionEnd = start + word.length;
  $("complete").classList.add("hidden");
}

// ---------- dashboards ----------
let dashboards = [];
async function loadDashboards() {
  const r = await api("/api/v1/dashboards");
  dashboards = r.ok ? r.body.dashboards : [];
  const sel = $("dash-select");
  const cur = sel.value;
  sel.innerHTML = dashboards.map((d) => `<option>${esc(d.name)}</option>`).join("");
  if (cur && dashboards.some((d) => d.name === cur)) sel.value = cur;
  $("dash-names").innerHTML = dashboards.map((d) => `<option value="${esc(d.name)}">`).join("");
}
async function drawDashboard() {
  const d = dashboards.find((x) => x.name === $("dash-select").value);
  const wrap = $("panels");
  wrap.innerHTML = "";
  if (!d) return;
  let section = null;
  $("dash-status").textContent = `refreshed ${new Date().toLocaleTimeString()}`;
  d.panels.forEach((p, idx) => {
    if (p.section && p.section !== section) {
      section = p.section;
      const h = document.createElement("h2");
      h.textContent = section;
      wrap.appendChild(h);
    }
    const el = document.createElement("div");
    el.className = "panel";
    el.innerHTML = `<div class="ptitle"><b>${esc(p.title || p.query)}</b><span><button class="open">open</button> <button class="rm">remove</button></span></div>
      <div class="q">${esc(p.query)}</div><div class="pc"></div><div class="pb"></div><div class="pt"></div>`;
    wrap.appendChild(el);
    el.querySelector(".rm").addEventListener("click", async () => {
      await api(`/api/v1/dashboards/${encodeURIComponent(d.name)}/panels/${idx}`, { method: "DELETE" });
      await loadDashboards(); drawDashboard();
    });
    el.querySelector(".open").addEventListener("click", () => {
      $("query").value = p.query; $("range").value = p.range || "24h";
      if (p.from) $("from").value = p.from; if (p.to) $("to").value = p.to;
      $("offhours").checked = !!p.during;
      if (p.during) { const [a, b] = p.during.split("-"); $("during-from").value = a; $("during-to").value = b; }
      syncControls(); switchView("query"); run();
    });
    const q = compose(p.query, { range: p.range || "24h", from: p.from, to: p.to, during: p.during });
    runQuery(q).then((r) => {
      if (!r.ok) { el.querySelector(".pt").innerHTML = `<pre class="error">${esc((r.body && r.body.error && r.body.error.message) || "failed")}</pre>`; return; }
      const res = r.body;
      res.rows = res.rows.slice(0, 10);
      renderResult(res, { charts: el.querySelector(".pc"), bars: el.querySelector(".pb"), tablewrap: el.querySelector(".pt") }, true);
    });
  });
}
async function pin() {
  const name = $("pin-name").value.trim() || "Operations";
  const text = $("query").value.trim();
  if (!text) return;
  const st = timeState();
  const panel = { title: text.length > 60 ? text.slice(0, 57) + "…" : text, query: text, range: st.range };
  if (st.range === "custom") { panel.from = st.from; panel.to = st.to; }
  if (st.during) panel.during = st.during;
  const r = await api(`/api/v1/dashboards/${encodeURIComponent(name)}/panels`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(panel),
  });
  if (!r.ok) { showError(r.body || { message: "cannot pin" }, text); return; }
  $("status").textContent = `pinned to dashboard “${name}”`;
  await loadDashboards();
  $("dash-select").value = name;
}

// ---------- views ----------
function switchView(v) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === v));
  $("view-query").classList.toggle("hidden", v !== "query");
  $("view-dash").classList.toggle("hidden", v !== "dash");
  if (v === "dash") { loadDashboards().then(drawDashboard); }
}

window.addEventListener("DOMContentLoaded", async () => {
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => switchView(t.dataset.view)));
  $("run").addEventListener("click", run);
  $("range").addEventListener("change", syncControls);
  $("offhours").addEventListener("change", syncControls);
  $("pin").addEventListener("click", pin);
  $("share").addEventListener("click", () => { writeHash(); navigator.clipboard && navigator.clipboard.writeText(location.href); $("status").textContent = "link copied: " + location.href; });
  $("dash-select").addEventListener("change", drawDashboard);
  $("dash-refresh").addEventListener("click", drawDashboard);
  $("login-go").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); signIn(); } });
  const inp = $("query");
  inp.addEventListener("input", complete);
  inp.addEventListener("keydown", (e) => {
    const box = $("complete");
    const open = !box.classList.contains("hidden");
    if (open && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
      e.preventDefault();
      compSel = (compSel + (e.key === "ArrowDown" ? 1 : compItems.length - 1)) % compItems.length;
      box.querySelectorAll("li").forEach((li, i) => li.classList.toggle("sel", i === compSel));
    } else if (open && (e.key === "Tab" || (e.key === "Enter" && compItems.length))) {
      e.preventDefault(); accept(compSel);
    } else if (e.key === "Escape") {
      box.classList.add("hidden");
    } else if (e.key === "Enter") {
      e.preventDefault(); run();
    }
  });
  inp.addEventListener("blur", () => setTimeout(() => $("complete").classList.add("hidden"), 150));
  drawHistory();
  api("/api/v1/vocabulary").then((r) => { if (r.ok) vocab = r.body; });
  await loadDashboards();
  setInterval(() => { if (!$("view-dash").classList.contains("hidden")) drawDashboard(); }, 60000);
  if (readHash()) run();
});
