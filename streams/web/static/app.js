// roadwatch operator console. Plain ES module, no build step, no CDN.
// Every piece of data reaches the DOM through textContent / attributes (never innerHTML).
// Live alerts arrive by Server-Sent Events; vehicle positions are refreshed as JSON every few seconds.

const SVG = "http://www.w3.org/2000/svg";
const TYPE_LABELS = {
  overspeed: "超速 Overspeed", fatigue: "疲劳 Fatigue", curfew: "凌晨运行 Curfew", offline: "离线 Offline",
  geofence_enter: "驶入禁区 Zone in", geofence_exit: "驶出区域 Zone out", terminal_alarm: "终端报警 Terminal",
  overload: "超限 Overload",
};
const SEV_LABELS = {high: "高", medium: "中", low: "低"};
const STATUS_LABELS = {detected: "待审核 detected", reviewed: "审核中 reviewed", confirmed: "已确认 confirmed",
  dismissed: "不予立案 dismissed", filed: "已立案 filed", notified: "已告知 notified", decided: "已决定 decided",
  served: "已送达 served", closed: "已结案 closed", withdrawn: "已撤销 withdrawn"};
const ACTION_LABELS = {review: "审核 Review", confirm: "确认 Confirm", dismiss: "不予立案 Dismiss", file: "立案 File",
  notify: "告知 Notify", decide: "决定 Decide", serve: "送达 Serve", close: "结案 Close", withdraw: "撤销 Withdraw"};
const REASON_REQUIRED = new Set(["dismiss", "withdraw", "close"]);
const MAX_ROWS = 500;

const state = {
  me: null, alerts: new Map(), filters: {type: "", category: "", enterprise: "", county: ""},
  mapData: null, vehicles: new Map(), selectedPlate: null, currentCase: null, highCount: 0,
  eventSource: null, lastEventId: "", fleetSort: {k: "online_rate", dir: 1}, fleetRows: [],
};

// --- small helpers -----------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
function fill(parent, ...children) {
  parent.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) e.setAttribute(k, v);
  return e;
}
const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined) ? "—" : (x * 100).toFixed(2) + "%";
const num = (x, d = 2) => (x === null || x === undefined) ? "—" : Number(x).toFixed(d);
function timeOf(ts) {
  if (!ts) return "";
  const s = String(ts);
  const today = new Date().toISOString().slice(0, 10);
  return s.slice(0, 10) === today ? s.slice(11, 19) : s.slice(5, 10) + " " + s.slice(11, 16);
}
function toast(msg, ms = 3500) {
  const t = $("toast");
  t.textContent = msg; t.hidden = false;
  clearTimeout(toast._t); toast._t = setTimeout(() => { t.hidden = true; }, ms);
}

async function api(path, opts = {}) {
  const init = {credentials: "same-origin", headers: {}, ...opts};
  if (init.body !== undefined && typeof init.body !== "string") {
    init.body = JSON.stringify(init.body);
    init.headers["Content-Type"] = "application/json";
  }
  if (init.method && init.method !== "GET") init.headers["X-CSRF-Token"] = state.me ? state.me.csrf : "";
  const r = await fetch(path, init);
  if (r.status === 401) { window.location.replace("login"); throw new Error("signed out"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { const e = new Error(body.detail || body.error || r.statusText); e.status = r.status; e.body = body; throw e; }
  return body;
}
const canAct = () => state.me && (state.me.role === "operator" || state.me.role === "admin");

// --- views ---------------------------------------------------------------------------------------------------
const loaders = {live: () => {}, cases: loadCases, fleet: loadFleet, reports: loadReports, users: loadUsers};
function showView(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.view === name);
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === "view-" + name);
  loaders[name]();
  if (name === "live") fitIfNeeded();
}

// --- live alert feed --------------------------------------------------------------------------------------------
function passes(a) {
  const f = state.filters;
  return (!f.type || a.type === f.type) && (!f.category || a.category === f.category)
    && (!f.enterprise || a.enterprise_id === f.enterprise) && (!f.county || a.county === f.county);
}

function alertRow(a) {
  const sev = ["high", "medium", "low"].includes(a.severity) ? a.severity : "medium";
  const row = el("div", {class: `alert sev-${sev}` + (a.ack_by ? " acked" : ""), "data-id": a.alert_id,
                         title: a.alert_id, onclick: () => focusAlert(a.alert_id)},
    el("span", {class: "time", text: timeOf(a.start_ts)}),
    el("span", {class: "type", text: TYPE_LABELS[a.type] || a.type}),
    el("span", {class: "plate", text: a.plate}),
    el("span", {class: "where"}, a.enterprise || "—", el("small", {text: [a.location, a.county].filter(Boolean).join(" · ")})),
    el("span", {}, el("span", {class: `badge sev-${sev}`, text: SEV_LABELS[sev]}),
       a.late ? el("span", {class: "badge late", title: "迟到数据 late data", text: "迟"}) : null),
  );
  if (a.end_ts) row.classList.add("ended");
  return row;
}

function renderAlerts() {
  const list = $("alert-list");
  const rows = [...state.alerts.values()].filter(passes)
    .sort((x, y) => String(y.start_ts).localeCompare(String(x.start_ts))).slice(0, MAX_ROWS);
  list.replaceChildren(...rows.map(alertRow));
  $("feed-count").textContent = `显示 ${rows.length} / 共 ${state.alerts.size} 条告警 alerts shown`;
  renderAlertMarks();
}

function upsertAlert(a, live) {
  const prev = state.alerts.get(a.alert_id);
  if (prev && prev.ack_by && !a.ack_by) { a.ack_by = prev.ack_by; a.ack_ts = prev.ack_ts; }
  state.alerts.set(a.alert_id, a);
  const list = $("alert-list");
  const old = list.querySelector(`[data-id="${CSS.escape(a.alert_id)}"]`);
  if (!passes(a)) { if (old) old.remove(); drawAlertMark(a); return; }
  const row = alertRow(a);
  if (old) old.replaceWith(row);           // a replay or an update (end_ts): same row, in place
  else {
    let before = null;
    for (const r of list.children) {
      const other = state.alerts.get(r.dataset.id);
      if (other && String(other.start_ts) <= String(a.start_ts)) { before = r; break; }
    }
    list.insertBefore(row, before);
    while (list.children.length > MAX_ROWS) list.lastChild.remove();
  }
  if (live && !prev) {
    row.classList.add("flash");
    if (a.severity === "high") highAlert(a);
  }
  drawAlertMark(a, live && !prev);
  $("feed-count").textContent = `显示 ${list.children.length} / 共 ${state.alerts.size} 条告警 alerts shown`;
}

function highAlert(a) {
  state.highCount += 1;
  const b = $("high-banner");
  b.hidden = false;
  b.textContent = `⚠ 新高危告警 ${state.highCount} 条 new high-severity alert(s) — 最新 latest: ${TYPE_LABELS[a.type] || a.type} ${a.plate} ${a.location || ""}`;
  b.style.animation = "none"; void b.offsetWidth; b.style.animation = "";
  b.onclick = () => { state.highCount = 0; b.hidden = true; focusAlert(a.alert_id); };
  if ($("sound").checked) beep();
}

let audioCtx = null;
function beep() {
  try {
    audioCtx = audioCtx || new AudioContext();
    const t = audioCtx.currentTime;
    for (const [i, f] of [[0, 880], [1, 660]]) {
      const o = audioCtx.createOscillator(), g = audioCtx.createGain();
      o.frequency.value = f; o.connect(g); g.connect(audioCtx.destination);
      g.gain.setValueAtTime(0.0001, t + i * 0.22);
      g.gain.exponentialRampToValueAtTime(0.25, t + i * 0.22 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.22 + 0.18);
      o.start(t + i * 0.22); o.stop(t + i * 0.22 + 0.2);
    }
  } catch (e) { /* no audio device: the visual cue remains */ }
}

async function loadAlerts() {
  const res = await api("api/alerts?limit=500");
  state.alerts.clear();
  for (const a of res.alerts) state.alerts.set(a.alert_id, a);
  renderAlerts();
  return res.event_id;
}

function connectStream(eventId) {
  if (state.eventSource) state.eventSource.close();
  const es = new EventSource("api/stream?since=" + encodeURIComponent(eventId || ""));
  state.eventSource = es;
  const conn = $("conn"), text = $("conn-text");
  es.onopen = () => { conn.className = "conn on"; text.textContent = "实时 live"; };
  es.onerror = () => { conn.className = "conn off"; text.textContent = "重连中 reconnecting"; };
  es.addEventListener("alert", (ev) => upsertAlert(JSON.parse(ev.data), true));
  es.addEventListener("ack", (ev) => {
    const k = JSON.parse(ev.data), a = state.alerts.get(k.alert_id);
    if (a) { a.ack_by = k.ack_by; a.ack_ts = k.ack_ts; upsertAlert(a, false); }
  });
  es.addEventListener("case", (ev) => onCaseEvent(JSON.parse(ev.data)));
  es.addEventListener("reset", async () => { await loadAlerts(); });
  es.addEventListener("logout", () => window.location.replace("login"));
}

for (const [id, key] of [["f-type", "type"], ["f-category", "category"], ["f-enterprise", "enterprise"], ["f-county", "county"]]) {
  $(id).addEventListener("change", (ev) => { state.filters[key] = ev.target.value; renderAlerts(); applyVehicleFilter(); });
}

// --- offline map (SVG, projected from our own registry data) -------------------------------------------------------
const map = {svg: $("map"), view: null, home: null, lat0: 35, lon0: 110, layers: {}};
const KX = () => 111.32 * Math.cos(map.lat0 * Math.PI / 180);
const proj = (lon, lat) => [(lon - map.lon0) * KX(), (map.lat0 - lat) * 110.57];     // km, y down
const unproj = (x, y) => [x / KX() + map.lon0, map.lat0 - y / 110.57];
function pxSize() {   // map units per screen pixel
  const r = map.svg.getBoundingClientRect();
  return map.view ? Math.max(map.view[2] / Math.max(r.width, 1), map.view[3] / Math.max(r.height, 1)) : 1;
}

function initMapLayers() {
  map.svg.replaceChildren();
  for (const name of ["zones", "sites", "tracks", "stations", "labels", "vehicles", "alerts"]) {
    map.layers[name] = svg("g", {class: "layer-" + name});
    map.svg.append(map.layers[name]);
  }
}

function setView(v) {
  map.view = v;
  map.svg.setAttribute("viewBox", v.join(" "));
  rescaleMarks();
}

function fitBounds(lons, lats) {
  if (!lons.length) return;
  const [x0, y0] = proj(Math.min(...lons), Math.max(...lats));
  const [x1, y1] = proj(Math.max(...lons), Math.min(...lats));
  const w = Math.max(x1 - x0, 2), h = Math.max(y1 - y0, 2), m = 0.1;
  // extra room at the bottom: the legend overlays the lowest ~60 px
  map.home = [x0 - w * m, y0 - h * m, w * (1 + 2 * m), h * (1 + 2 * m + 0.12)];
  setView(map.home.slice());
}

function fitIfNeeded() {
  if (!map.home) fitAll();
  else rescaleMarks();
}

function fitAll() {
  const lons = [], lats = [];
  const d = state.mapData;
  if (d && d.bbox) { lons.push(d.bbox[0], d.bbox[2]); lats.push(d.bbox[1], d.bbox[3]); }
  for (const v of state.vehicles.values()) if (v.lat !== null && v.lon !== null) { lons.push(v.lon); lats.push(v.lat); }
  if (lons.length) {
    map.lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
    map.lon0 = (Math.min(...lons) + Math.max(...lons)) / 2;
    drawStatic();
    for (const v of state.vehicles.values()) placeVehicle(v);
    for (const a of state.alerts.values()) drawAlertMark(a);
    fitBounds(lons, lats);
  }
}

function polyPoints(poly) { return poly.map(([lon, lat]) => proj(lon, lat).map((c) => c.toFixed(4)).join(",")).join(" "); }

function drawStatic() {
  const d = state.mapData;
  if (!d) return;
  const {zones, sites, stations, labels} = map.layers;
  zones.replaceChildren(...d.zones.map((z) => {
    const p = svg("polygon", {class: "zone " + (z.kind || ""), points: polyPoints(z.polygon)});
    p.append(svg("title")); p.lastChild.textContent = `${z.name} (${z.kind === "expressway" ? "高速 expressway" : "禁行区 restricted"})`;
    return p;
  }));
  sites.replaceChildren(...d.sites.map((s) => {
    const p = svg("polygon", {class: "site", points: polyPoints(s.polygon)});
    p.append(svg("title")); p.lastChild.textContent = `货源单位 source site: ${s.name} ${s.kind || ""}`;
    return p;
  }));
  stations.replaceChildren(...d.stations.map((s) => {
    const [x, y] = proj(s.lon, s.lat);
    const r = svg("rect", {class: "station", "data-x": x, "data-y": y, "data-px": 6});
    r.append(svg("title")); r.lastChild.textContent = `治超站 WIM station: ${s.name}`;
    return r;
  }));
  const lbl = [];
  for (const s of d.stations) lbl.push([s.name, s.lon, s.lat, 9]);
  for (const z of d.zones.concat(d.sites)) {
    const n = z.polygon.length;
    const lon = z.polygon.reduce((t, p) => t + p[0], 0) / n, lat = z.polygon.reduce((t, p) => t + p[1], 0) / n;
    lbl.push([z.name, lon, lat, 0]);
  }
  labels.replaceChildren(...lbl.map(([name, lon, lat, dx]) => {
    const [x, y] = proj(lon, lat);
    const t = svg("text", {class: "label", "data-x": x, "data-y": y, "data-dx": dx});
    t.textContent = name;
    return t;
  }));
  rescaleMarks();
}

function drawScale(k) {
  // a round distance close to 120 px wide
  const target = 120 * k;
  const pow = Math.pow(10, Math.floor(Math.log10(target)));
  const km = [1, 2, 5, 10].map((m) => m * pow).filter((d) => d <= target).pop() || pow;
  $("scale").firstChild.style.width = (km / k).toFixed(0) + "px";
  $("scale").lastChild.textContent = km >= 1 ? `${km} km` : `${Math.round(km * 1000)} m`;
}

function rescaleMarks() {
  const k = pxSize();
  if (map.view) drawScale(k);
  for (const r of map.layers.stations ? map.layers.stations.children : []) {
    const s = 10 * k, x = +r.dataset.x, y = +r.dataset.y;
    r.setAttribute("x", x - s / 2); r.setAttribute("y", y - s / 2); r.setAttribute("width", s); r.setAttribute("height", s);
  }
  for (const t of map.layers.labels ? map.layers.labels.children : []) {
    t.setAttribute("x", +t.dataset.x + (+t.dataset.dx) * k); t.setAttribute("y", +t.dataset.y + 4 * k);
    t.setAttribute("font-size", 12 * k);
  }
  for (const c of map.svg.querySelectorAll("[data-px]")) {
    if (c.tagName === "circle") c.setAttribute("r", (+c.dataset.px) * k);
  }
}

// wheel zoom around the cursor, drag to pan
map.svg.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  zoomAt(ev.deltaY < 0 ? 0.8 : 1.25, ev.clientX, ev.clientY);
}, {passive: false});
function zoomAt(f, cx, cy) {
  if (!map.view) return;
  const r = map.svg.getBoundingClientRect();
  const [vx, vy, vw, vh] = map.view;
  const k = pxSize();
  // viewBox is centred with "meet": find the map point under the cursor
  const ox = vx + (vw - r.width * k) / 2, oy = vy + (vh - r.height * k) / 2;
  const mx = ox + ((cx ?? r.left + r.width / 2) - r.left) * k, my = oy + ((cy ?? r.top + r.height / 2) - r.top) * k;
  setView([mx - (mx - vx) * f, my - (my - vy) * f, vw * f, vh * f]);
}
$("zoom-in").onclick = () => zoomAt(0.7);
$("zoom-out").onclick = () => zoomAt(1.4);
$("zoom-fit").onclick = () => { if (map.home) setView(map.home.slice()); };
{
  let drag = null;
  map.svg.addEventListener("pointerdown", (ev) => {
    if (ev.target.classList.contains("veh") || ev.target.classList.contains("alert-mark")) return;
    drag = {x: ev.clientX, y: ev.clientY, view: map.view.slice(), k: pxSize()};
    map.svg.setPointerCapture(ev.pointerId); map.svg.classList.add("dragging");
  });
  map.svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const v = drag.view;
    map.view = [v[0] - (ev.clientX - drag.x) * drag.k, v[1] - (ev.clientY - drag.y) * drag.k, v[2], v[3]];
    map.svg.setAttribute("viewBox", map.view.join(" "));
  });
  const end = () => { drag = null; map.svg.classList.remove("dragging"); };
  map.svg.addEventListener("pointerup", end); map.svg.addEventListener("pointercancel", end);
}
new ResizeObserver(() => rescaleMarks()).observe(map.svg);

// vehicles
function vehiclePasses(v) {
  const f = state.filters;
  return (!f.category || v.category === f.category) && (!f.enterprise || v.enterprise_id === f.enterprise)
    && (!f.county || v.county === f.county);
}
function placeVehicle(v) {
  let c = map.svg.querySelector(`circle.veh[data-plate="${CSS.escape(v.plate)}"]`);
  if (v.lat === null || v.lon === null) { if (c) c.remove(); return; }
  const [x, y] = proj(v.lon, v.lat);
  if (!c) {
    c = svg("circle", {"data-plate": v.plate, "data-px": 5});
    c.append(svg("title"));
    c.addEventListener("click", (ev) => { ev.stopPropagation(); selectVehicle(v.plate); });
    map.layers.vehicles.append(c);
    c.setAttribute("r", 5 * pxSize());
  }
  c.setAttribute("class", `veh ${v.state}` + (v.plate === state.selectedPlate ? " selected" : "") + (vehiclePasses(v) ? "" : " hidden-by-filter"));
  c.setAttribute("cx", x); c.setAttribute("cy", y);
  c.firstChild.textContent = `${v.plate} · ${v.state} · ${v.enterprise || ""} · ${timeOf(v.ts)}`;
}
function applyVehicleFilter() { for (const v of state.vehicles.values()) placeVehicle(v); }

async function refreshVehicles() {
  try {
    const res = await api("api/vehicles");
    const seen = new Set();
    for (const v of res.vehicles) { seen.add(v.plate); state.vehicles.set(v.plate, v); }
    for (const p of [...state.vehicles.keys()]) if (!seen.has(p)) {
      state.vehicles.delete(p);
      const c = map.svg.querySelector(`circle.veh[data-plate="${CSS.escape(p)}"]`); if (c) c.remove();
    }
    if (!map.home) fitAll();
    for (const v of state.vehicles.values()) placeVehicle(v);
    const counts = {moving: 0, stopped: 0, offline: 0, alerting: 0};
    for (const v of state.vehicles.values()) counts[v.state] = (counts[v.state] || 0) + 1;
    $("map-count").textContent = `车辆 ${state.vehicles.size} · 行驶 ${counts.moving} · 停车 ${counts.stopped} · 告警 ${counts.alerting} · 离线 ${counts.offline}`;
  } catch (e) { /* shown by the connection indicator; retried next tick */ }
}

// alerts on the map
function drawAlertMark(a, fresh = false) {
  if (!map.layers.alerts) return;
  let c = map.layers.alerts.querySelector(`[data-alert-id="${CSS.escape(a.alert_id)}"]`);
  if (a.lat === null || a.lat === undefined || a.lon === null || a.lon === undefined || !passes(a)) { if (c) c.remove(); return; }
  const [x, y] = proj(a.lon, a.lat);
  if (!c) {
    c = svg("circle", {"data-alert-id": a.alert_id, "data-px": 9});
    c.append(svg("title"));
    c.addEventListener("click", (ev) => { ev.stopPropagation(); focusAlert(a.alert_id); });
    map.layers.alerts.append(c);
    c.setAttribute("r", 9 * pxSize());
  }
  const sev = ["high", "medium", "low"].includes(a.severity) ? a.severity : "medium";
  c.setAttribute("class", `alert-mark sev-${sev}` + (fresh ? " fresh" : ""));
  c.setAttribute("cx", x); c.setAttribute("cy", y);
  c.firstChild.textContent = `${TYPE_LABELS[a.type] || a.type} ${a.plate} ${a.location || ""} ${timeOf(a.start_ts)}`;
  while (map.layers.alerts.children.length > MAX_ROWS) map.layers.alerts.firstChild.remove();
}
function renderAlertMarks() {
  if (!map.layers.alerts) return;
  map.layers.alerts.replaceChildren();
  for (const a of state.alerts.values()) drawAlertMark(a);
  rescaleMarks();
}

function focusAlert(id) {
  const a = state.alerts.get(id);
  if (!a) return;
  for (const r of document.querySelectorAll(".alert.selected")) r.classList.remove("selected");
  const row = $("alert-list").querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (row) row.scrollIntoView({block: "nearest"});
  if (a.lat !== null && a.lat !== undefined && map.view) {
    const [x, y] = proj(a.lon, a.lat);
    const [, , w, h] = map.view;
    setView([x - w / 2, y - h / 2, w, h]);
  }
  selectVehicle(a.plate, a);
}

// vehicle panel: registry info, recent track, recent alerts
async function selectVehicle(plate, fromAlert) {
  state.selectedPlate = plate;
  applyVehicleFilter();
  const panel = $("vehicle-panel"), body = $("vehicle-body");
  panel.hidden = false;
  body.replaceChildren(el("p", {class: "muted", text: "加载中 loading…"}));
  let res;
  try { res = await api("api/vehicles/" + encodeURIComponent(plate)); }
  catch (e) {
    fill(body, el("h3", {text: plate}), el("p", {class: "muted", text: "无登记信息 not in the registry"}),
                         fromAlert ? alertDetails(fromAlert) : null);
    return;
  }
  const v = res.vehicle, now = res.now;
  const track = res.track || [];
  map.layers.tracks.replaceChildren();
  if (track.length > 1) {
    map.layers.tracks.append(svg("polyline", {class: "track",
      points: track.map((p) => proj(p.lon, p.lat).join(",")).join(" ")}));
  }
  const ack = (a) => canAct() && !a.ack_by
    ? el("button", {class: "ack", "data-ack": a.alert_id, text: "确认收到 Ack", onclick: async (ev) => {
        ev.stopPropagation();
        try { await api(`api/alerts/${encodeURIComponent(a.alert_id)}/ack`, {method: "POST", body: {}}); toast("已确认 acknowledged"); }
        catch (e) { toast("失败 failed: " + e.message); }
      }}) : (a.ack_by ? el("small", {text: `已确认 ack: ${a.ack_by}`}) : null);
  fill(body,
    el("h3", {text: `${plate} `}, el("span", {class: `badge`, text: now ? now.state : "—"})),
    kvTable([["类别 Category", v.category], ["企业 Enterprise", v.enterprise], ["区县 County", v.county],
             ["道路运输证 Transport cert.", v.transport_cert_no], ["终端 Terminal", v.terminal_id],
             ["最新位置 Last fix", now ? `${num(now.lat, 5)}, ${num(now.lon, 5)} @ ${timeOf(now.ts)}` : "—"],
             ["轨迹点 Track points", String(track.length)]]),
    fromAlert ? alertDetails(fromAlert) : null,
    el("h3", {text: "近期告警 Recent alerts"}),
    res.alerts.length ? el("table", {class: "kv"}, ...res.alerts.map((a) => el("tr", {},
      el("th", {text: timeOf(a.start_ts)}), el("td", {}, (TYPE_LABELS[a.type] || a.type) + " ", ack(a))))) :
      el("p", {class: "muted", text: "无 none"}),
  );
}
function alertDetails(a) {
  const rows = [["告警 Alert", `${TYPE_LABELS[a.type] || a.type} (${a.severity})`], ["开始 Start", a.start_ts],
                ["结束 End", a.end_ts || "—"], ["位置 Place", a.location]];
  for (const [k, v] of Object.entries(a.details || {})) rows.push([k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
  return el("div", {class: "section"}, el("h3", {text: "告警详情 Alert details"}), kvTable(rows));
}
function kvTable(rows) {
  return el("table", {class: "kv"}, ...rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => el("tr", {}, el("th", {text: k}), el("td", {text: String(v)}))));
}
$("vehicle-close").onclick = () => {
  $("vehicle-panel").hidden = true; state.selectedPlate = null;
  map.layers.tracks.replaceChildren(); applyVehicleFilter();
};

// --- cases -----------------------------------------------------------------------------------------------------
async function loadCases() {
  const q = new URLSearchParams({limit: "200"});
  if ($("c-status").value) q.set("status", $("c-status").value);
  if ($("c-plate").value.trim()) q.set("plate", $("c-plate").value.trim());
  const res = await api("api/cases?" + q);
  $("case-counts").replaceChildren(...Object.entries(res.status_counts).map(([k, n]) => el("span", {text: `${STATUS_LABELS[k] || k}: ${n}`})));
  const tb = $("case-table").tBodies[0];
  tb.replaceChildren(...res.cases.map((c) => el("tr", {"data-case": c.case_id, onclick: () => openCase(c.case_id),
      class: state.currentCase === c.case_id ? "selected" : null},
    el("td", {text: timeOf(c.ts)}), el("td", {text: c.plate}), el("td", {text: c.station}),
    el("td", {class: "num", text: num(c.excess_kg, 0)}), el("td", {class: "num", text: String(c.fine_yuan)}),
    el("td", {text: c.action}), el("td", {}, el("span", {class: `badge st-${c.status}`, text: STATUS_LABELS[c.status] || c.status})))));
  if (!res.cases.length) tb.append(el("tr", {}, el("td", {colspan: 7, class: "muted", text: "无案件 no cases"})));
}
$("c-refresh").onclick = loadCases;
$("c-status").onchange = loadCases;

const FIELD_LABELS = {gross_kg: "总质量 gross kg", limit_kg: "限值 limit kg", excess_kg: "超限 excess kg",
  excess_pct: "超限率 excess %", tolerance: "允差 tolerance", fine_yuan: "罚款 fine ¥", axle_count: "轴数 axles",
  axle_loads_kg: "轴重 axle loads kg", station_id: "站点 station", device_id: "设备 device", lane: "车道 lane",
  speed_kmh: "速度 km/h", plate: "车牌 plate", ts: "时间 time", action: "处理 action", violation: "违法 violation",
  tolerance_source: "允差依据 tolerance source", cert_no: "检定证书 certificate", vehicle_kind: "车型 kind"};

function section(title, ...content) { return el("div", {class: "section"}, el("h3", {text: title}), ...content); }

function manifestSections(m) {
  // the manifest's shape belongs to the evidence module: render scalars, objects and small tables generically
  const out = [], scalars = [];
  for (const [k, v] of Object.entries(m || {})) {
    if (["images", "track", "track_excerpt"].includes(k)) continue;
    if (v === null || typeof v !== "object") scalars.push([FIELD_LABELS[k] || k, String(v)]);
    else if (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object")) scalars.push([FIELD_LABELS[k] || k, v.join(", ")]);
    else if (Array.isArray(v)) {
      const cols = [...new Set(v.slice(0, 50).flatMap((x) => Object.keys(x || {})))].slice(0, 8);
      out.push(section(FIELD_LABELS[k] || k, el("table", {class: "grid"},
        el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {text: FIELD_LABELS[c] || c})))),
        el("tbody", {}, ...v.slice(0, 50).map((x) => el("tr", {}, ...cols.map((c) => el("td", {text: fmt((x || {})[c])}))))))));
    } else {
      out.push(section(FIELD_LABELS[k] || k, kvTable(Object.entries(v).map(([kk, vv]) => [FIELD_LABELS[kk] || kk, fmt(vv)]))));
    }
  }
  if (scalars.length) out.unshift(section("证据摘要 Evidence summary", kvTable(scalars)));
  return out;
}
const fmt = (v) => v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v);

function trackSvg(track, site, station) {
  const pts = (track || []).filter((p) => p && p.lat !== undefined && p.lon !== undefined);
  const all = pts.map((p) => [p.lon, p.lat]).concat(site ? site.polygon : []).concat(station ? [[station.lon, station.lat]] : []);
  if (all.length < 2) return null;
  const lons = all.map((p) => p[0]), lats = all.map((p) => p[1]);
  const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2, kx = Math.cos(lat0 * Math.PI / 180);
  // km from the north-west corner: tiny degree-sized user units render unreliably
  const P = ([lon, lat]) => [(lon - Math.min(...lons)) * kx * 111.32, (Math.max(...lats) - lat) * 110.57];
  const w = Math.max((Math.max(...lons) - Math.min(...lons)) * kx * 111.32, 0.05), h = Math.max((Math.max(...lats) - Math.min(...lats)) * 110.57, 0.05);
  const s = svg("svg", {class: "track-svg", viewBox: `${-w * .05} ${-h * .05} ${w * 1.1} ${h * 1.1}`, preserveAspectRatio: "xMidYMid meet"});
  if (site) s.append(svg("polygon", {class: "site", points: site.polygon.map((p) => P(p).join(",")).join(" ")}));
  if (pts.length > 1) s.append(svg("polyline", {class: "track", points: pts.map((p) => P([p.lon, p.lat]).join(",")).join(" ")}));
  const k = Math.max(w, h) / 50;
  if (station) { const [x, y] = P([station.lon, station.lat]); s.append(svg("rect", {class: "station", x: x - k, y: y - k, width: 2 * k, height: 2 * k})); }
  return s;
}

async function openCase(id) {
  state.currentCase = id;
  for (const tr of $("case-table").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.case === id);
  const box = $("case-detail");
  let c;
  try { c = await api("api/cases/" + encodeURIComponent(id)); }
  catch (e) { box.replaceChildren(el("p", {class: "error", text: e.message})); return; }
  renderCase(c);
}

function renderCase(c) {
  const box = $("case-detail");
  const m = c.manifest || {};
  // a live update re-renders the open case: keep what the operator is typing
  const prev = $("case-reason");
  const typed = prev && state.shown && state.shown.case_id === c.case_id ? prev.value : "";
  state.shown = {case_id: c.case_id, status: c.status};
  const reason = el("textarea", {id: "case-reason", placeholder: "理由（不予立案、撤销、结案必填） reason (required to dismiss, withdraw, close)", maxlength: 500});
  reason.value = typed;
  // the legal date of the act (e.g. the decision date); empty = today
  const at = el("input", {id: "case-at", type: "date", title: "法律日期 legal date of the act (empty: today)"});
  const msg = el("span", {class: "error", id: "case-msg"});
  const buttons = (c.allowed_actions || []).map((a) => el("button", {
    class: a === "dismiss" || a === "withdraw" ? "danger" : "primary", "data-action": a, text: ACTION_LABELS[a] || a,
    onclick: async () => {
      if (REASON_REQUIRED.has(a) && !reason.value.trim()) { msg.textContent = "需要填写理由 a reason is required"; return; }
      try {
        const body = {action: a, reason: reason.value};
        if (at.value) body.at = at.value;
        const updated = await api(`api/cases/${encodeURIComponent(c.case_id)}/actions`, {method: "POST", body});
        reason.value = "";
        renderCase(updated); loadCases(); toast(`${ACTION_LABELS[a]} ✓ ${c.plate}`);
      } catch (e) { msg.textContent = e.message; }
    }}));
  const images = (c.evidence_files || []).map((f) => {
    const url = `api/cases/${encodeURIComponent(c.case_id)}/evidence/${f.split("/").map(encodeURIComponent).join("/")}`;
    return el("a", {href: url, target: "_blank", rel: "noopener", title: f}, el("img", {src: url, alt: f, loading: "lazy"}));
  });
  const track = m.track || m.track_excerpt || (m.source && m.source.track) || [];
  fill(box,
    el("h2", {}, `${c.plate} `, el("span", {class: `badge st-${c.status}`, text: STATUS_LABELS[c.status] || c.status}),
       el("small", {text: `  ${c.case_id}`})),
    section("案件 Case", kvTable([["时间 Time", c.ts], ["站点 Station", c.station ? c.station.name : c.station_id],
      ["处理 Action", c.action], ["违法 Counts for 一超四罚", c.violation ? "是 yes" : "否 no"],
      ["超限 Excess kg", num(c.excess_kg, 0)], ["罚款 Fine ¥", String(c.fine_yuan)], ["企业 Enterprise", c.enterprise || c.enterprise_id],
      ["驾驶员 Driver", c.driver || c.driver_id], ["货源单位 Source site", c.source_site ? `${c.source_site.name} (${c.source_site.kind || ""})` : c.source_site_id]])),
    images.length ? section("现场图片 Images", el("div", {class: "images"}, ...images))
                  : section("现场图片 Images", el("p", {class: "muted", text: "无本地图片 no local image files"})),
    (track.length || c.source_site) ? section("轨迹与货源 Track excerpt and source site", trackSvg(track, c.source_site, c.station) || el("p", {class: "muted", text: "无轨迹 no track"})) : null,
    ...manifestSections(m),
    section("处理 Actions", canAct() ? el("div", {class: "actions"}, reason, at, ...buttons,
        buttons.length ? null : el("span", {class: "muted", text: "无可用操作 no action available in this state"}), msg)
      : el("p", {class: "muted", text: "只读用户 read-only user"})),
    section("审计记录 Audit trail", c.actions.length ? el("table", {class: "grid", id: "audit"},
      el("thead", {}, el("tr", {}, el("th", {text: "时间 Time"}), el("th", {text: "法律日期 Legal date"}), el("th", {text: "操作 Action"}), el("th", {text: "操作员 Operator"}), el("th", {text: "理由 Reason"}))),
      el("tbody", {}, ...c.actions.map((a) => el("tr", {"data-audit": a.action},
        el("td", {text: a.ts}), el("td", {text: (a.at || "").slice(0, 10)}), el("td", {text: ACTION_LABELS[a.action] || a.action}), el("td", {text: a.operator}), el("td", {text: a.reason || ""})))))
      : el("p", {class: "muted", text: "尚无操作 no actions yet"})),
    el("details", {}, el("summary", {text: "证据清单原文 raw manifest"}), el("pre", {class: "raw", text: JSON.stringify(m, null, 2)})),
  );
}

function onCaseEvent(c) {
  if (document.querySelector("#view-cases.active")) {
    loadCases();
    // our own action already rendered the new status; only another operator's change needs a reload
    if (state.currentCase === c.case_id && (!state.shown || state.shown.status !== c.status)) openCase(c.case_id);
  }
  if (c.status === "detected") toast(`新超限案件 new overload case: ${c.plate}`);
}

// --- fleet status ---------------------------------------------------------------------------------------------
async function loadFleet() {
  const day = $("fleet-day").value;
  const res = await api("api/fleet/status" + (day ? "?day=" + day : ""));
  if (!day) $("fleet-day").value = res.day;
  const t = res.totals;
  const card = (label, value) => el("div", {class: "card"}, el("b", {text: value}), el("span", {text: label}));
  $("fleet-cards").replaceChildren(
    card("在线车辆 online now", `${t.online_now} / ${t.vehicles}`), card("今日上线 online today", String(t.online_today)),
    card("上线率 online rate", pct(t.online_rate)), card("数据合格率 data quality", pct(t.quality_rate)),
    card("轨迹完整率 track complete", pct(t.track_rate)), card("漂移车辆率 drift", pct(t.drift_rate)),
    card("平均超速次数 overspeed / veh", num(t.avg_overspeed)), card("平均疲劳驾驶 fatigue s / veh", num(t.avg_fatigue_s, 0)),
    card("今日告警 alerts today", String(t.alerts_today)), card("待处理案件 open cases", String(t.open_cases)));
  $("fleet-note").textContent = `${res.day} 截至目前 so far` + (res.unregistered_online ? ` · 未登记在线 unregistered online: ${res.unregistered_online}` : "");
  state.fleetRows = res.enterprises;
  renderFleet();
}
function renderFleet() {
  const {k, dir} = state.fleetSort;
  const rows = state.fleetRows.slice().sort((a, b) => {
    const x = a[k], y = b[k];
    if (x === null) return 1; if (y === null) return -1;
    return (typeof x === "string" ? x.localeCompare(y) : x - y) * dir;
  });
  const rate = (x, low) => el("td", {class: "num" + (x !== null && x < low ? " rate-low" : ""), text: pct(x)});
  $("fleet-table").tBodies[0].replaceChildren(...rows.map((r) => el("tr", {},
    el("td", {text: r.name}), el("td", {text: r.county}), el("td", {class: "num", text: String(r.vehicles)}),
    el("td", {class: "num", text: String(r.online_now)}), rate(r.online_rate, 0.9), rate(r.quality_rate, 0.8),
    rate(r.track_rate, 0.7), el("td", {class: "num", text: pct(r.drift_rate)}), el("td", {class: "num", text: num(r.avg_overspeed)}),
    el("td", {class: "num", text: num(r.avg_fatigue_s, 0)}), el("td", {class: "num", text: String(r.alerts_today)}),
    el("td", {class: "num", text: String(r.open_cases)}))));
}
for (const th of document.querySelectorAll("#fleet-table th")) {
  th.onclick = () => {
    const k = th.dataset.k;
    state.fleetSort = {k, dir: state.fleetSort.k === k ? -state.fleetSort.dir : 1};
    renderFleet();
  };
}
$("fleet-refresh").onclick = loadFleet;
$("fleet-day").onchange = loadFleet;

// --- reports ----------------------------------------------------------------------------------------------------
async function loadReports() {
  const res = await api("api/reports");
  const box = $("report-list");
  if (!res.months.length) { box.replaceChildren(el("p", {class: "muted", text: "暂无报告 no reports yet"})); return; }
  box.replaceChildren(...res.months.map((m) => el("div", {class: "month"}, el("h3", {text: m.month}),
    el("ul", {}, ...m.files.map((f) => el("li", {},
      el("a", {href: `api/reports/${m.month}/${encodeURIComponent(f.name)}`, download: f.name, text: f.name}),
      el("small", {text: `  ${(f.bytes / 1024).toFixed(1)} KiB · ${f.modified}`})))))));
}

// --- users (admin) -------------------------------------------------------------------------------------------------
async function loadUsers() {
  if (!state.me || state.me.role !== "admin") return;
  const res = await api("api/users");
  $("user-table").tBodies[0].replaceChildren(...res.users.map((u) => el("tr", {},
    el("td", {text: u.username}), el("td", {text: u.role}), el("td", {text: u.created_at}),
    el("td", {}, u.username === state.me.username ? null : el("button", {class: "danger", text: "删除 Remove", onclick: async () => {
      if (!confirm(`删除用户 remove ${u.username}?`)) return;
      try { await api("api/users/" + encodeURIComponent(u.username), {method: "DELETE"}); loadUsers(); }
      catch (e) { toast(e.message); }
    }})))));
}
$("user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  try {
    const r = await api("api/users", {method: "POST", body: {username: f.username.value.trim(), role: f.role.value, password: f.password.value || null}});
    $("user-msg").textContent = `${r.username}: ${r.result}`; f.password.value = ""; loadUsers();
  } catch (e) { $("user-msg").textContent = e.message; }
});

// --- start ---------------------------------------------------------------------------------------------------------
async function start() {
  state.me = await api("api/me");
  $("who").textContent = `${state.me.username} (${state.me.role})`;
  for (const b of document.querySelectorAll(".admin-only")) b.hidden = state.me.role !== "admin";
  const opt = (sel, value, label) => $(sel).append(el("option", {value, text: label}));
  for (const t of state.me.alert_types) opt("f-type", t, TYPE_LABELS[t] || t);
  for (const c of state.me.categories) opt("f-category", c, c);
  for (const e of state.me.enterprises) opt("f-enterprise", e.id, e.name);
  for (const c of state.me.counties) opt("f-county", c, c);
  for (const b of document.querySelectorAll(".tabs button")) b.onclick = () => showView(b.dataset.view);
  $("logout").onclick = async () => {
    try { await api("api/logout", {method: "POST", body: {}}); } finally { window.location.replace("login"); }
  };
  initMapLayers();
  state.mapData = await api("api/map");
  await refreshVehicles();
  fitAll();
  const eventId = await loadAlerts();
  connectStream(eventId);
  setInterval(refreshVehicles, Math.max(1, state.me.fleet_refresh_s) * 1000);
  document.body.dataset.ready = "1";     // for tests and health checks
}
start().catch((e) => { if (e.message !== "signed out") toast("启动失败 start failed: " + e.message, 10000); });
