// gpuctl dashboard: renders the server's snapshots. Every value goes into the page
// as text (textContent, createTextNode, attribute values): nothing the cluster or a
// cloud says is ever parsed as markup. No inline code: the page's CSP forbids it.
"use strict";

const state = { snap: null, sortKey: "name", sortAsc: true, selected: null, seriesKey: "provider", planned: false };
const COLORS = ["#1f6f5c", "#c2571a", "#3b5bdb", "#a61e4d", "#5c940d", "#862e9c", "#e67700", "#0b7285", "#495057"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
const dash = (v) => (v === null || v === undefined || v === "" ? "-" : v);

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return seconds + "s";
  if (seconds < 7200) return Math.floor(seconds / 60) + "m";
  if (seconds < 172800) return Math.floor(seconds / 3600) + "h";
  return Math.floor(seconds / 86400) + "d";
}

function card(label, value, testid) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value", "data-testid": testid }, value));
}

// A table from column specs: {key, title, num, render(row) -> Node|string}.
function fillTable(table, columns, rows, opts) {
  opts = opts || {};
  const head = clear(table.tHead);
  const tr = el("tr");
  for (const col of columns) {
    const th = el("th", { class: (col.num ? "num " : "") + (opts.sortKey === col.key ? "sorted" + (opts.sortAsc ? " asc" : "") : ""), "data-key": col.key }, col.title);
    if (opts.onSort) th.addEventListener("click", () => opts.onSort(col.key));
    tr.appendChild(th);
  }
  head.appendChild(tr);
  const body = clear(table.tBodies[0]);
  for (const row of rows) {
    const line = el("tr", { class: opts.onClick ? "clickable" + (opts.selected && opts.selected(row) ? " selected" : "") : "", "data-name": row.name || row.request || row.provider });
    for (const col of columns) {
      const value = col.render ? col.render(row) : dash(row[col.key]);
      line.appendChild(el("td", { class: (col.num ? "num" : "") + (col.wrap ? " wrap" : ""), "data-col": col.key }, value));
    }
    if (opts.onClick) line.addEventListener("click", () => opts.onClick(row));
    body.appendChild(line);
  }
  if (!rows.length) body.appendChild(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, opts.empty || "nothing yet")));
}

function labels(map) {
  return el("span", { class: "labels" }, Object.entries(map || {}).map(([k, v]) => el("span", {}, k + "=" + v)));
}

// -- Fleet -------------------------------------------------------------------------

const FLEET_COLUMNS = [
  { key: "name", title: "name" },
  { key: "phase", title: "phase", render: (r) => el("span", { class: "phase phase-" + r.phase, "data-testid": "phase" }, r.phase) },
  { key: "provider", title: "provider" },
  { key: "region", title: "region" },
  { key: "gpu", title: "GPU", render: (r) => r.gpuType + " x" + r.gpuCount },
  { key: "capacityType", title: "capacity" },
  { key: "pricePerHour", title: "$/h", num: true },
  { key: "ageSeconds", title: "age", num: true, render: (r) => age(r.ageSeconds) },
  { key: "node", title: "node" },
  { key: "accruedUSD", title: "accrued $", num: true },
  { key: "labels", title: "labels", wrap: true, render: (r) => labels(Object.assign({}, r.labels, r.nodeLabels)) },
  { key: "message", title: "message", wrap: true },
];

function sortValue(row, key) {
  const value = key === "gpu" ? row.gpuType + row.gpuCount : row[key];
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return value;
  if (/^-?\d+(\.\d+)?$/.test(value)) return parseFloat(value);
  return String(value).toLowerCase();
}

function matches(row, text, phase) {
  if (phase && row.phase !== phase) return false;
  if (!text) return true;
  const hay = [row.name, row.provider, row.region, row.gpuType, row.capacityType, row.node, row.phase,
    ...Object.entries(Object.assign({}, row.labels, row.nodeLabels)).map(([k, v]) => k + "=" + v)].join(" ").toLowerCase();
  return text.toLowerCase().split(/\s+/).every((word) => hay.includes(word));
}

function renderFleet() {
  const snap = state.snap;
  const fleet = snap.fleet;
  const summary = clear(document.getElementById("fleet-summary"));
  summary.appendChild(card("requests", fleet.requests.length, "count-requests"));
  for (const [phase, count] of Object.entries(fleet.byPhase)) summary.appendChild(card(phase, count, "count-" + phase));
  summary.appendChild(card("burn rate $/h", snap.cost.burnRatePerHour, "fleet-burn-rate"));

  const select = document.getElementById("phase-filter");
  const chosen = select.value;
  const phases = new Set(["Pending", "Provisioning", "Joining", "Ready", "Interrupted", "Terminating", "Failed"]);
  if (select.options.length === 1) for (const p of phases) select.appendChild(el("option", { value: p }, p));

  const text = document.getElementById("filter").value;
  const rows = fleet.requests.filter((r) => matches(r, text, chosen));
  rows.sort((a, b) => {
    const x = sortValue(a, state.sortKey), y = sortValue(b, state.sortKey);
    return (x < y ? -1 : x > y ? 1 : 0) * (state.sortAsc ? 1 : -1);
  });
  fillTable(document.getElementById("fleet"), FLEET_COLUMNS, rows, {
    sortKey: state.sortKey, sortAsc: state.sortAsc, empty: "no GPUNodeRequests",
    onSort: (key) => { state.sortAsc = state.sortKey === key ? !state.sortAsc : true; state.sortKey = key; renderFleet(); },
    onClick: (row) => { state.selected = row.uid; renderFleet(); },
    selected: (row) => row.uid === state.selected,
  });

  const pools = fleet.pools || [];
  document.getElementById("pools-block").hidden = pools.length === 0;
  fillTable(document.getElementById("pools"), [
    { key: "name", title: "name" }, { key: "ready", title: "ready" },
    { key: "machines", title: "machines", num: true }, { key: "launching", title: "launching", num: true },
    { key: "gpus", title: "GPUs", num: true }, { key: "gpusInUse", title: "in use", num: true },
    { key: "pricePerHour", title: "$/h", num: true }, { key: "ageSeconds", title: "age", num: true, render: (r) => age(r.ageSeconds) },
    { key: "message", title: "message", wrap: true },
  ], pools);

  const selected = fleet.requests.find((r) => r.uid === state.selected);
  document.getElementById("timeline-block").hidden = !selected;
  if (selected) {
    document.getElementById("timeline-name").textContent = selected.name;
    fillTable(document.getElementById("timeline"), [
      { key: "time", title: "time" },
      { key: "source", title: "source" },
      { key: "reason", title: "what", render: (r) => el("span", { class: r.type }, r.reason) },
      { key: "message", title: "message", wrap: true },
    ], (fleet.timelines[selected.uid] || []).slice().reverse());
  }
}

// -- Cost --------------------------------------------------------------------------

function renderChart() {
  const cost = state.snap.cost;
  const series = cost.series[state.seriesKey] || [];
  const box = clear(document.getElementById("chart"));
  const W = 900, H = 300, L = 60, R = 10, T = 10, B = 30;
  const times = series.length ? series[0].points.map((p) => Date.parse(p[0])) : [];
  const max = Math.max(0.0001, ...series.flatMap((s) => s.points.map((p) => parseFloat(p[1]))));
  const t0 = times[0] || 0, t1 = times[times.length - 1] || 1;
  const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "cumulative spend" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    chart.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e7eb" }));
    chart.appendChild(svg("text", { x: 4, y: y(v) + 4 }, "$" + v.toFixed(v < 1 ? 4 : 2)));
  }
  if (times.length) {
    chart.appendChild(svg("text", { x: L, y: H - 8 }, new Date(t0).toLocaleTimeString()));
    chart.appendChild(svg("text", { x: W - R - 70, y: H - 8 }, new Date(t1).toLocaleTimeString()));
  }
  series.forEach((s, i) => {
    const d = s.points.map((p, k) => (k ? "L" : "M") + x(Date.parse(p[0])).toFixed(1) + " " + y(parseFloat(p[1])).toFixed(1)).join(" ");
    chart.appendChild(svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "data-series": s.name, "data-last": s.points.length ? s.points[s.points.length - 1][1] : "0" }));
  });
  box.appendChild(chart);
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const swatch = el("i");
    swatch.style.background = COLORS[i % COLORS.length];
    legend.appendChild(el("span", {}, swatch, s.name + " $" + (s.points.length ? s.points[s.points.length - 1][1] : "0")));
  });
  box.appendChild(legend);
}

function renderCost() {
  const cost = state.snap.cost;
  const summary = clear(document.getElementById("cost-summary"));
  summary.appendChild(card("total spend $", cost.total.accruedUSD, "cost-total"));
  summary.appendChild(card("burn rate $/h", cost.burnRatePerHour, "burn-rate"));
  summary.appendChild(card("running", cost.total.running, "cost-running"));
  summary.appendChild(card("finished", cost.total.finished, "cost-finished"));
  renderChart();
  const money = { key: "accruedUSD", title: "$", num: true };
  fillTable(document.getElementById("by-provider"), [{ key: "provider", title: "provider" }, { key: "requests", title: "requests", num: true }, money], cost.byProvider);
  fillTable(document.getElementById("by-gpu"), [{ key: "gpuType", title: "GPU" }, { key: "requests", title: "requests", num: true }, money], cost.byGpuType);
  fillTable(document.getElementById("cost-requests"), [
    { key: "request", title: "request" }, { key: "state", title: "state" }, { key: "provider", title: "provider" },
    { key: "gpuType", title: "GPU" }, { key: "capacityType", title: "capacity" }, { key: "since", title: "since" },
    { key: "until", title: "until" }, money,
  ], cost.requests, { empty: "no spend recorded" });
}

// -- Providers ---------------------------------------------------------------------

function renderProviders() {
  const box = clear(document.getElementById("providers"));
  for (const p of state.snap.providers) {
    const ready = p.conditions.find((c) => c.type === "Ready");
    const block = el("div", { class: "provider", "data-provider": p.name },
      el("h2", {}, p.name + " ", el("span", { class: "muted" }, "(" + p.type + ")"), " ",
        el("span", { class: "phase phase-" + (ready && ready.status === "True" ? "Ready" : "Failed") }, ready ? "Ready=" + ready.status : "no status")),
      el("div", { class: "summary" },
        card("offers", dash(p.offerCount), "offers-" + p.name),
        card("API calls", p.apiCalls, "calls-" + p.name),
        card("throttled (429)", p.throttled, "throttled-" + p.name),
        card("limit req/s", dash(p.rateLimit.requestsPerSecond), "rps-" + p.name),
        card("launches/min", dash(p.rateLimit.launchesPerMinute), "lpm-" + p.name)),
      el("p", { class: "muted" }, "prices refreshed " + dash(p.lastPriceRefresh) + "; errors by type: " +
        (Object.entries(p.errorsByType).map(([k, v]) => k + " " + v).join(", ") || "none")));
    const conditions = el("table", {}, el("thead"), el("tbody"));
    fillTable(conditions, [{ key: "type", title: "condition" }, { key: "status", title: "status" }, { key: "reason", title: "reason" },
      { key: "message", title: "message", wrap: true }, { key: "lastTransitionTime", title: "since" }], p.conditions);
    block.appendChild(conditions);
    block.appendChild(el("h2", {}, "Recent errors"));
    const errors = el("table", {}, el("thead"), el("tbody"));
    fillTable(errors, [{ key: "time", title: "time" }, { key: "source", title: "source" },
      { key: "reason", title: "reason", render: (r) => el("span", { class: "Warning" }, r.reason) },
      { key: "message", title: "message", wrap: true }], p.recentErrors, { empty: "none" });
    block.appendChild(errors);
    box.appendChild(block);
  }
  if (!state.snap.providers.length) box.appendChild(el("p", { class: "muted" }, "no GPUProviders"));
}

// -- Offers ------------------------------------------------------------------------

const OFFER_COLUMNS = [
  { key: "provider", title: "provider" }, { key: "region", title: "region" }, { key: "nativeRegion", title: "native region" },
  { key: "instanceType", title: "instance type" }, { key: "gpuType", title: "GPU" }, { key: "gpuCount", title: "count", num: true },
  { key: "capacityType", title: "capacity" }, { key: "pricePerHour", title: "$/h", num: true },
  { key: "available", title: "available", render: (r) => (r.available ? "yes" : "no") },
];

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function loadCatalog() {
  try {
    const data = await getJSON("api/offers");
    const gpu = document.getElementById("plan-gpu");
    if (!gpu.options.length) for (const g of data.gpuTypes) gpu.appendChild(el("option", { value: g }, g));
    fillTable(document.getElementById("catalog"), OFFER_COLUMNS, data.offers, { empty: "no offers" });
    const errors = clear(document.getElementById("catalog-errors"));
    for (const f of data.unavailable) errors.appendChild(el("li", {}, f.provider + ": " + f.reason + ": " + f.message));
  } catch (err) {
    document.getElementById("plan-verdict").textContent = "catalog unavailable: " + err.message;
  }
}

async function plan(event) {
  if (event) event.preventDefault();
  const form = new FormData(document.getElementById("plan-form"));
  const query = new URLSearchParams(form).toString();
  const verdict = document.getElementById("plan-verdict");
  try {
    const data = await getJSON("api/plan?" + query);
    verdict.textContent = data.chosen
      ? `${data.want}: ${data.chosen.provider} ${data.chosen.instanceType} at $${data.chosen.pricePerHour}/h — $${data.costUSD} for ${data.hours} h`
      : `${data.want}: no offer — ${data.message}`;
    const rows = [...data.ranked.map((o) => Object.assign({ verdict: o.rank === 1 ? "chosen" : "fits", cost: o.costUSD }, o)),
      ...data.rejected.map((o) => Object.assign({ rank: "-", verdict: o.reason, cost: "-" }, o))];
    fillTable(document.getElementById("plan"), [{ key: "rank", title: "rank" }, ...OFFER_COLUMNS,
      { key: "cost", title: "cost $", num: true }, { key: "verdict", title: "verdict", wrap: true }], rows, { empty: "no offers" });
  } catch (err) {
    verdict.textContent = "cannot plan: " + err.message;
  }
}

// -- pages and the live stream -----------------------------------------------------

function page() { return (location.hash || "#fleet").slice(1); }

function show() {
  const current = page();
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== "page-" + current;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === current);
  if (current === "offers" && !state.planned) {
    state.planned = true;
    loadCatalog().then(() => plan());
  }
  render();
}

function render() {
  if (!state.snap) return;
  const current = page();
  if (current === "fleet") renderFleet();
  else if (current === "cost") renderCost();
  else if (current === "providers") renderProviders();
  const h = state.snap.health;
  document.getElementById("footer").textContent = `${state.snap.mode} · ledger read ${dash(h.ledgerReadAt)}` +
    (h.ledgerError ? " (error: " + h.ledgerError + ")" : "") + (h.eventsSynced ? "" : " · Events not available yet");
}

function connect() {
  const live = document.getElementById("live");
  const stream = new EventSource("api/stream");
  stream.addEventListener("snapshot", (event) => {
    state.snap = JSON.parse(event.data);
    live.className = "live on";
    live.textContent = "live · " + state.snap.now;
    live.dataset.now = state.snap.now;
    render();
  });
  stream.addEventListener("error", () => { live.className = "live off"; live.textContent = "reconnecting…"; });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filter").addEventListener("input", render);
  document.getElementById("phase-filter").addEventListener("change", render);
  document.getElementById("series-key").addEventListener("change", (e) => { state.seriesKey = e.target.value; render(); });
  document.getElementById("plan-form").addEventListener("submit", plan);
  window.addEventListener("hashchange", show);
  show();
  connect();
});
