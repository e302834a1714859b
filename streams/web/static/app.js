// roadwatch operator console. Plain ES module, no build step, no CDN (Leaflet and supercluster are vendored).
// Every piece of data reaches the DOM through textContent / attributes (never innerHTML).
// Live alerts arrive by Server-Sent Events; vehicle positions are refreshed as JSON every few seconds.

import {el} from "./dom.js";
import {ConsoleMap, SPEED_BINS} from "./map.js";
import {ensureNames, initPlatforms, loadPlatforms, platformLabel} from "./platforms.js";

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
const loaders = {live: () => {}, cases: loadCases, fleet: loadFleet, reports: loadReports, devices: loadDevices,
  platforms: loadPlatforms, users: loadUsers};
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

// --- map (Leaflet + canvas vehicles; see map.js) ---------------------------------------------------------------
const STATE_LABELS = {moving: "行驶", stopped: "停车", offline: "离线", alerting: "告警", no_data: "无数据"};
const VERDICT_LABELS = {fine: "罚款", warning: "警告", review: "人工审核", pass: "未超限", none: "未超限"};
const REVIEW_REASONS = {calibration_invalid: "计量检定失效", calibration_missing: "无计量检定证书记录", unknown_plate: "车牌未登记",
  low_confidence: "车牌识别置信度低", low_plate_confidence: "车牌识别置信度低",
  device_legal_review_missing: "设备未经法制审核", device_technical_review_missing: "设备未经技术审核",
  device_signage_missing: "设备未设明显标志", device_announcement_missing: "设备未向社会公布",
  plate_unreadable: "车牌无法识别", not_in_population: "不在统计范围", device_fault: "设备故障", suspect: "数据可疑"};
const FATIGUE_KINDS = {continuous_day: "日间连续驾驶", continuous_night: "夜间连续驾驶", continuous: "连续驾驶", cumulative_24h: "24 小时累计驾驶"};
let cmap = null;
const prevPos = new Map();        // plate → [lat, lon, heading]: headings from successive positions

function fmtTs(ts) {              // ISO with offset → Beijing "MM-DD HH:MM:SS"
  if (!ts) return "—";
  const d = new Date(ts);
  if (isNaN(d)) return String(ts);
  const b = new Date(d.getTime() + 8 * 3600e3).toISOString();
  return b.slice(5, 10) + " " + b.slice(11, 19);
}
function fmtDur(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h} 小时 ` : "") + (h || m ? `${m} 分 ` : "") + `${r} 秒`;
}
const kmh = (v) => (v === null || v === undefined) ? "—" : `${Number(v).toFixed(1)} km/h`;

function describeVehicle(v) {
  return `${v.plate} · ${STATE_LABELS[v.state] || v.state} · ${v.category || "未登记"} · ${v.enterprise || ""} · ${kmh(v.speed_kmh)} · ${fmtTs(v.ts)}`;
}
function describeAlert(a) { return `${TYPE_LABELS[a.type] || a.type} · ${a.plate} · ${a.location || ""} · ${fmtTs(a.start_ts)}`; }

function initMap() {
  cmap = new ConsoleMap($("map"), state.me.map || {}, {
    vehicle: (plate) => selectVehicle(plate), alert: (id) => focusAlert(id),
    describe: describeVehicle, describeAlert,
  });
  window.rwMap = cmap;              // a handle for tests and the browser console
  const b = (state.me.map || {}).boundaries;
  return b ? cmap.loadBoundaries(`static/vendor/boundaries/${encodeURIComponent(b)}.json`) : Promise.resolve();
}
function fitAll() { if (cmap) cmap.fit(state.mapData && state.mapData.bbox, [...state.vehicles.values()]); }
function fitIfNeeded() { if (cmap) cmap.map.invalidateSize(); }

function vehiclePasses(v) {
  const f = state.filters;
  return (!f.category || v.category === f.category) && (!f.enterprise || v.enterprise_id === f.enterprise)
    && (!f.county || v.county === f.county);
}
function applyVehicleFilter() { if (cmap) cmap.setVehicles([...state.vehicles.values()].filter(vehiclePasses)); }

async function refreshVehicles() {
  try {
    const res = await api("api/vehicles");
    state.vehicles.clear();
    for (const v of res.vehicles) {
      const p = prevPos.get(v.plate);
      let heading = p ? p[2] : null;
      if (p && v.lat !== null && (Math.abs(p[0] - v.lat) > 1e-4 || Math.abs(p[1] - v.lon) > 1e-4)) {
        const y = Math.sin((v.lon - p[1]) * Math.PI / 180) * Math.cos(v.lat * Math.PI / 180);
        const x = Math.cos(p[0] * Math.PI / 180) * Math.sin(v.lat * Math.PI / 180)
          - Math.sin(p[0] * Math.PI / 180) * Math.cos(v.lat * Math.PI / 180) * Math.cos((v.lon - p[1]) * Math.PI / 180);
        heading = (Math.atan2(y, x) * 180 / Math.PI + 360) % 360;
      }
      if (v.lat !== null) prevPos.set(v.plate, [v.lat, v.lon, heading]);
      v.heading = v.heading ?? heading;
      state.vehicles.set(v.plate, v);
    }
    applyVehicleFilter();
    const counts = {moving: 0, stopped: 0, offline: 0, alerting: 0};
    let monitored = 0;
    for (const v of state.vehicles.values()) {
      counts[v.state] = (counts[v.state] || 0) + 1;
      if (MONITORED.has(v.category)) monitored += 1;
    }
    $("map-count").textContent = `地图车辆 ${state.vehicles.size}（两客一危 ${monitored}）· 行驶 ${counts.moving} · 停车 ${counts.stopped} · 告警 ${counts.alerting} · 离线 ${counts.offline}`;
    if (!$("tree-panel").hidden) loadTree();
  } catch (e) { /* shown by the connection indicator; retried next tick */ }
}
const MONITORED = new Set(["客运班车", "旅游包车", "危险货物运输车辆"]);

function drawAlertMark() { renderAlertMarks(); }
function renderAlertMarks() {
  if (!cmap) return;
  clearTimeout(renderAlertMarks._t);
  renderAlertMarks._t = setTimeout(() => cmap.setAlerts([...state.alerts.values()].filter(passes)), 50);
}

function focusAlert(id) {
  const a = state.alerts.get(id);
  if (!a) return;
  for (const r of document.querySelectorAll(".alert.selected")) r.classList.remove("selected");
  const row = $("alert-list").querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (row) { row.classList.add("selected"); row.scrollIntoView({block: "nearest"}); }
  if (a.lat !== null && a.lat !== undefined && cmap) cmap.panTo(a.lat, a.lon, 12);
  selectVehicle(a.plate, a);
}

// --- vehicle panel: registry info, playback, alerts with handling notes, cases -----------------------------------
async function selectVehicle(plate, fromAlert) {
  state.selectedPlate = plate;
  if (cmap) cmap.setSelected(plate);
  const panel = $("vehicle-panel"), body = $("vehicle-body");
  panel.hidden = false;
  body.replaceChildren(el("p", {class: "muted", text: "加载中 loading…"}));
  let res;
  try { res = await api("api/vehicles/" + encodeURIComponent(plate)); }
  catch (e) {
    fill(body, el("h3", {text: plate}), el("p", {class: "muted", text: "未登记车辆 not in the registry"}),
         fromAlert ? alertDetails(fromAlert) : null);
    return;
  }
  const v = res.vehicle, now = res.now;
  if (v.platform !== null && v.platform !== undefined) await ensureNames();
  stopPlayback();
  if (cmap) { if ((res.track || []).length > 1) cmap.showTrack(res.track); else cmap.clearTrack(); }   // the recent track
  const handled = (a) => a.ack_by ? el("small", {class: "handled", text: `已处理 ${a.ack_by}`}) : el("small", {class: "open", text: "未处理"});
  fill(body,
    el("h3", {text: `${plate} `}, el("span", {class: `badge st-${now ? now.state : "no_data"}`, text: now ? STATE_LABELS[now.state] || now.state : "无数据"})),
    kvTable([["类别 Category", v.category], ["企业 Enterprise", v.enterprise], ["区县 County", v.county],
             ["道路运输证 Transport cert.", v.transport_cert_no], ["终端 Terminal", v.terminal_id],
             ["转发平台 Via platform", platformLabel(v.platform)],
             ["最新位置 Last fix", now && now.lat !== null ? `${num(now.lat, 5)}, ${num(now.lon, 5)}（${fmtTs(now.ts)}）` : "—"],
             ["速度 Speed", now ? kmh(now.speed_kmh) : "—"]]),
    el("div", {class: "row-buttons"},
      el("button", {class: "primary", id: "pb-open", text: "轨迹回放 Playback", onclick: () => openPlayback(plate)}),
      now && now.lat !== null ? el("button", {text: "定位 Locate", onclick: () => cmap.panTo(now.lat, now.lon, 14)}) : null),
    el("div", {id: "playback"}),
    fromAlert ? alertDetails(fromAlert) : null,
    el("h3", {text: "近期告警 Recent alerts"}),
    res.alerts.length ? el("table", {class: "kv clickable"}, ...res.alerts.map((a) => el("tr", {"data-alert": a.alert_id, onclick: () => {
        state.alerts.set(a.alert_id, state.alerts.get(a.alert_id) || a); selectVehicle(plate, state.alerts.get(a.alert_id)); }},
      el("th", {text: fmtTs(a.start_ts)}), el("td", {}, (TYPE_LABELS[a.type] || a.type) + " ", handled(a))))) :
      el("p", {class: "muted", text: "无 none"}),
    el("h3", {text: "超限案件 Overload cases"}),
    (res.cases || []).length ? el("table", {class: "kv clickable"}, ...res.cases.map((c) => el("tr", {"data-case-link": c.case_id, onclick: () => gotoCase(c.case_id)},
      el("th", {text: fmtTs(c.ts)}), el("td", {text: `${VERDICT_LABELS[c.action] || c.action} · ${STATUS_LABELS[c.status] || c.status}`})))) :
      el("p", {class: "muted", text: "无 none"}),
    el("h3", {text: "外地抄告 Notices from other agencies"}),
    (res.notices_in || []).length ? el("table", {class: "kv", id: "vehicle-notices-in"}, ...res.notices_in.map((n) => el("tr", {"data-notice": n.notice_key},
      el("th", {text: n.decided_on}), el("td", {text: `${n.from_agency} · ${n.notice.decision.penalty} · ${n.notice.violation.station || ""}`})))) :
      el("p", {class: "muted", text: "无 none"}),
  );
}

function gotoCase(caseId) { showView("cases"); openCase(caseId); }
function gotoVehicle(plate) { showView("live"); selectVehicle(plate); const v = state.vehicles.get(plate); if (v && v.lat !== null) cmap.panTo(v.lat, v.lon, 13); }

function detailRows(a) {
  const d = a.details || {}, rows = [];
  const add = (k, v) => { if (v !== undefined && v !== null && v !== "") rows.push([k, v]); };
  switch (a.type) {
    case "overspeed":
      add("最高速度 Max speed", kmh(d.max_speed_kmh)); add("限速 Limit", kmh(d.limit));
      add("持续时间 Duration", d.duration_s !== undefined ? fmtDur(d.duration_s) : null);
      add("最短计入时长 Counted after", d.min_duration_s !== undefined ? `${d.min_duration_s} 秒` : null); break;
    case "fatigue":
      add("类型 Kind", FATIGUE_KINDS[d.kind] || "疲劳驾驶"); add("已驾驶 Driven", d.driving_h !== undefined ? `${Number(d.driving_h).toFixed(2)} 小时` : null);
      add("限值 Limit", d.limit !== undefined ? `${Number(d.limit).toFixed(1)} 小时` : null); add("夜间 Night", d.night === undefined ? null : d.night ? "是" : "否"); break;
    case "curfew":
      add("速度 Speed", kmh(d.speed_kmh)); add("禁行时段 Curfew", d.window); break;
    case "offline":
      add("最后定位 Last seen", fmtTs(d.last_seen_ts)); add("离线判定 Offline after", d.limit !== undefined ? fmtDur(d.limit) : null);
      add("离线时长 Silent for", d.silent_s !== undefined ? fmtDur(d.silent_s) : null); break;
    case "geofence_enter": case "geofence_exit":
      add("区域 Zone", d.zone_name || d.zone_id); break;
    case "terminal_alarm":
      add("报警 Alarm", d.name); add("报警位 Bit", d.bit); break;
    case "overload":
      add("处理 Verdict", VERDICT_LABELS[d.action] || d.action); add("总质量 Gross", d.gross_kg !== undefined ? `${Number(d.gross_kg).toLocaleString("zh-CN")} kg` : null);
      add("限值 Limit", d.limit_kg !== undefined ? `${Number(d.limit_kg).toLocaleString("zh-CN")} kg` : null);
      add("超限 Excess", d.excess_kg !== undefined && d.excess_kg !== null ? `${Number(d.excess_kg).toLocaleString("zh-CN")} kg（${num(d.excess_pct, 1)} %）` : null);
      add("罚款 Fine", d.fine_yuan !== undefined ? `${d.fine_yuan} 元` : null);
      add("审核原因 Review reason", d.review_reason ? (REVIEW_REASONS[d.review_reason] || "需人工审核") : null); break;
    default: break;
  }
  if (d.state) add("状态 State", d.state === "open" ? "进行中 ongoing" : "已结束 ended");
  return rows;
}

function alertDetails(a) {
  const sev = SEV_LABELS[a.severity] || a.severity;
  const rows = [["告警 Alert", `${TYPE_LABELS[a.type] || a.type}（${sev}）`], ["开始 Start", fmtTs(a.start_ts)],
                ["结束 End", a.end_ts ? fmtTs(a.end_ts) : "—"], ["位置 Place", a.location], ...detailRows(a)];
  const notes = el("div", {class: "notes", id: "alert-notes"}, el("p", {class: "muted", text: "加载中…"}));
  const box = el("div", {class: "section", "data-alert-detail": a.alert_id}, el("h3", {text: "告警详情 Alert details"}), kvTable(rows),
    a.details && a.details.case_id ? el("p", {}, el("a", {href: "#", "data-goto-case": a.details.case_id, text: "查看超限案件 open the case →",
      onclick: (ev) => { ev.preventDefault(); gotoCase(a.details.case_id); }})) : null,
    el("h3", {text: "报警处理意见 Handling"}), notes);
  loadNotes(a, notes);
  return box;
}

async function loadNotes(a, box) {
  let res;
  try { res = await api(`api/alerts/${encodeURIComponent(a.alert_id)}/notes`); } catch (e) { box.replaceChildren(); return; }
  const list = res.notes.length ? el("table", {class: "grid notes-table"},
    el("thead", {}, el("tr", {}, el("th", {text: "时间 Time"}), el("th", {text: "处理人 By"}), el("th", {text: "处理意见 Note"}))),
    el("tbody", {}, ...res.notes.map((n) => el("tr", {}, el("td", {text: fmtTs(n.ts)}), el("td", {text: n.operator}), el("td", {text: n.note})))))
    : el("p", {class: "muted", text: "尚未处理 not handled yet"});
  if (!canAct()) { box.replaceChildren(list); return; }
  const ta = el("textarea", {id: "note-text", maxlength: 500, placeholder: "处理意见（如：已电话联系驾驶员，要求就近停车休息） handling note"});
  const msg = el("span", {class: "error"});
  const btn = el("button", {class: "primary", id: "note-submit", text: "提交处理意见 Submit", onclick: async () => {
    if (!ta.value.trim()) { msg.textContent = "请填写处理意见 a note is required"; return; }
    try {
      const r = await api(`api/alerts/${encodeURIComponent(a.alert_id)}/notes`, {method: "POST", body: {note: ta.value}});
      const cur = state.alerts.get(a.alert_id);
      if (cur) { cur.ack_by = r.ack_by; cur.ack_ts = r.ack_ts; upsertAlert(cur, false); }
      toast("已处理 handled ✓"); loadNotes(a, box);
    } catch (e) { msg.textContent = e.message; }
  }});
  box.replaceChildren(list, ta, el("div", {class: "row-buttons"}, btn, msg));
}

function kvTable(rows) {
  return el("table", {class: "kv"}, ...rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => el("tr", {}, el("th", {text: k}), el("td", {text: String(v)}))));
}
$("vehicle-close").onclick = () => {
  $("vehicle-panel").hidden = true; state.selectedPlate = null; stopPlayback();
  if (cmap) { cmap.setSelected(null); cmap.clearTrack(); }
};

// --- track playback ------------------------------------------------------------------------------------------------
const pb = {points: [], i: 0, timer: null};
function localInput(ms) { return new Date(ms + 8 * 3600e3).toISOString().slice(0, 16); }   // Beijing, for datetime-local
function stopPlayback() { if (pb.timer) { clearInterval(pb.timer); pb.timer = null; } const b = $("pb-play"); if (b) b.textContent = "▶ 播放 Play"; }

let playbackSeq = 0;
async function openPlayback(plate, fromIso, toIso) {
  const box = $("playback");
  stopPlayback();
  const info = await api(`api/tracks/${encodeURIComponent(plate)}?span=1`);     // the span kept
  const end = info.kept_to ? Date.parse(info.kept_to) : Date.now();
  const start = info.kept_from ? Math.max(Date.parse(info.kept_from), end - 6 * 3600e3) : end - 6 * 3600e3;
  const from = el("input", {type: "datetime-local", id: "pb-from", value: fromIso ? localInput(Date.parse(fromIso)) : localInput(start)});
  const to = el("input", {type: "datetime-local", id: "pb-to", value: toIso ? localInput(Date.parse(toIso)) : localInput(end + 60e3)});
  const slider = el("input", {type: "range", id: "pb-slider", min: 0, max: 0, value: 0});
  const readout = el("div", {class: "pb-readout", id: "pb-readout"});
  const speed = el("select", {id: "pb-speed"}, ...[1, 4, 16, 64].map((k) => el("option", {value: k, text: `×${k}`})));
  const play = el("button", {id: "pb-play", text: "▶ 播放 Play"});
  const legend = el("div", {class: "speed-legend"}, el("span", {text: "速度 km/h："}),
    ...SPEED_BINS.map(([, c, t]) => el("span", {}, el("i", {style: `background:${c}`}), t)));
  const show = () => {
    const p = pb.points[pb.i];
    if (!p) { readout.textContent = "所选时段无轨迹点 no track points in this range"; return; }
    cmap.movePlayMarker(p);
    readout.textContent = `${fmtTs(p.ts)} · ${kmh(p.speed_kmh)} · 第 ${pb.i + 1} / ${pb.points.length} 点`;
  };
  const load = async () => {
    stopPlayback();
    const seq = ++playbackSeq;            // an answer to a superseded query (the panel's own first load) is dropped
    const q = new URLSearchParams({from: from.value, to: to.value});
    const res = await api(`api/tracks/${encodeURIComponent(plate)}?${q}`);
    if (seq !== playbackSeq) return;
    pb.points = res.points; pb.i = 0;
    slider.max = Math.max(0, pb.points.length - 1); slider.value = 0;
    cmap.showTrack(pb.points); cmap.fitTrack(pb.points); show();
    box.dataset.points = String(pb.points.length);
  };
  slider.oninput = () => { pb.i = +slider.value; show(); };
  play.onclick = () => {
    if (pb.timer) { stopPlayback(); return; }
    if (pb.i >= pb.points.length - 1) pb.i = 0;
    play.textContent = "❚❚ 暂停 Pause";
    pb.timer = setInterval(() => {
      pb.i = Math.min(pb.points.length - 1, pb.i + +speed.value);
      slider.value = pb.i; show();
      if (pb.i >= pb.points.length - 1) stopPlayback();
    }, 200);
  };
  fill(box, el("div", {class: "section playback"}, el("h3", {text: `轨迹回放 Track playback（每 ${state.me.map.track_sample_s} 秒一点）`}),
    el("div", {class: "pb-range"}, el("label", {}, "从 ", from), el("label", {}, "到 ", to), el("button", {id: "pb-load", text: "查询 Load", onclick: load})),
    slider, el("div", {class: "row-buttons"}, play, speed), readout, legend));
  await load();
}

// --- search: partial plate, enterprise, county -------------------------------------------------------------------------
let searchSeq = 0;
$("veh-search").addEventListener("input", async (ev) => {
  const q = ev.target.value.trim(), box = $("search-results"), seq = ++searchSeq;
  if (!q) { box.hidden = true; return; }
  let res;
  try { res = await api("api/search?q=" + encodeURIComponent(q)); } catch (e) { return; }
  if (seq !== searchSeq) return;
  box.hidden = false;
  fill(box, el("div", {class: "muted", text: `找到 ${res.total} 辆 found`}),
    ...res.vehicles.map((v) => el("div", {class: "result", "data-plate": v.plate, onclick: () => { box.hidden = true; gotoVehicle(v.plate); }},
      el("i", {class: `dot ${v.state}`}), el("b", {text: v.plate}), el("small", {text: ` ${v.category || "未登记"} · ${v.enterprise || "—"} · ${STATE_LABELS[v.state] || v.state}`}))));
});
document.addEventListener("click", (ev) => { if (!ev.target.closest(".search")) $("search-results").hidden = true; });

// --- vehicle tree by enterprise ------------------------------------------------------------------------------------------
$("tree-toggle").onclick = () => { const p = $("tree-panel"); p.hidden = !p.hidden; if (!p.hidden) loadTree(); };
async function loadTree() {
  const res = await api("api/tree");
  const open = new Set([...document.querySelectorAll("#tree-body details[open]")].map((d) => d.dataset.ent));
  fill($("tree-body"), ...res.enterprises.map((e) => {
    const online = e.vehicles.filter((v) => v.state !== "offline" && v.state !== "no_data").length;
    const d = el("details", {"data-ent": e.enterprise_id},
      el("summary", {}, el("b", {text: e.name}), el("small", {text: ` ${e.county} · 在线 ${online}/${e.vehicles.length}`})),
      ...e.vehicles.map((v) => el("div", {class: "leaf", "data-plate": v.plate, onclick: () => gotoVehicle(v.plate)},
        el("i", {class: `dot ${v.state}`}), v.plate, el("small", {text: ` ${v.category} · ${STATE_LABELS[v.state] || v.state}`}))));
    if (open.has(e.enterprise_id)) d.open = true;
    return d;
  }));
}

// --- 区域查车: draw a rectangle, list the vehicles inside in a time range ----------------------------------------------------
$("area-start").onclick = () => {
  toast("在地图上拖动画出矩形 drag a rectangle on the map", 4000);
  $("area-start").classList.add("active");
  cmap.drawRectangle((bb, rect) => {
    $("area-start").classList.remove("active");
    state.area = {bb, rect};
    const newest = Math.max(0, ...[...state.vehicles.values()].map((v) => Date.parse(v.ts) || 0)) || Date.now();
    const day0 = Date.parse(new Date(newest + 8 * 3600e3).toISOString().slice(0, 10) + "T00:00:00+08:00");
    $("area-from").value = localInput(day0); $("area-to").value = localInput(newest + 60e3);
    $("area-panel").hidden = false;
    $("area-box").textContent = `${bb.south.toFixed(4)}°N – ${bb.north.toFixed(4)}°N，${bb.west.toFixed(4)}°E – ${bb.east.toFixed(4)}°E`;
    areaSearch();
  });
};
async function areaSearch() {
  const {bb} = state.area;
  const q = new URLSearchParams({bbox: [bb.west, bb.south, bb.east, bb.north].map((x) => x.toFixed(6)).join(","),
                                 from: $("area-from").value, to: $("area-to").value});
  const tb = $("area-table").tBodies[0];
  try {
    const res = await api("api/area?" + q);
    $("area-count").textContent = `${res.vehicles.length} 辆车 vehicles`;
    tb.replaceChildren(...res.vehicles.map((r) => el("tr", {"data-plate": r.plate, onclick: () => { gotoVehicle(r.plate); setTimeout(() => openPlayback(r.plate, r.first, r.last), 300); }},
      el("td", {text: r.plate}), el("td", {text: r.category || "未登记"}), el("td", {text: r.enterprise || "—"}),
      el("td", {text: fmtTs(r.first)}), el("td", {text: fmtTs(r.last)}), el("td", {class: "num", text: String(r.points)}))));
    if (!res.vehicles.length) tb.append(el("tr", {}, el("td", {colspan: 6, class: "muted", text: "该区域该时段无车辆 no vehicle in this area and time"})));
  } catch (e) { $("area-count").textContent = e.message; }
}
$("area-go").onclick = areaSearch;
$("area-close").onclick = () => { $("area-panel").hidden = true; if (state.area && state.area.rect) state.area.rect.remove(); state.area = null; };

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
    el("td", {text: VERDICT_LABELS[c.action] || c.action}), el("td", {}, el("span", {class: `badge st-${c.status}`, text: STATUS_LABELS[c.status] || c.status})))));
  if (!res.cases.length) tb.append(el("tr", {}, el("td", {colspan: 7, class: "muted", text: "无案件 no cases"})));
}
$("c-refresh").onclick = loadCases;
$("c-status").onchange = loadCases;

function section(title, ...content) { return el("div", {class: "section"}, el("h3", {text: title}), ...content); }

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

// --- the case as an officer reads it: the same facts and wording as the printable form (case-print.js) ---------
const ACT_LABELS = {...Object.fromEntries(Object.entries(ACTION_LABELS).map(([k, v]) => [k, v.split(" ")[0]])),
  decide: "作出处罚决定", detect: "检测立档", amend: "补正事实", conflict: "记录冲突", identify_driver: "认定驾驶人"};
const DRIVER_SOURCES = {ic_card: "IC卡识别", officer: "执法人员认定", registry: "登记库指派驾驶人", unknown: "未识别"};
const CALIB_LABELS = {ok: "有效", invalid: "无效", missing: "无记录"};
const TARGET_LABELS = {vehicle: "车辆", driver: "驾驶人", enterprise: "企业"};
const PROPOSAL_STATUS = {proposed: "待法制审核", reviewed: "已法制审核", notified: "已告知", decided: "已决定", withdrawn: "已撤销"};
const SITE_KINDS = {coal: "煤矿", cement: "水泥厂", sand: "砂石场", steel: "钢材市场", station: "货运站"};
const kgs = (x) => (x === null || x === undefined) ? "—" : `${Number(x).toLocaleString("zh-CN", {maximumFractionDigits: 1})} kg`;
const yuan = (x) => (x === null || x === undefined) ? "—" : `${Number(x).toLocaleString("zh-CN")} 元`;
function bjFull(ts) {             // ISO with offset → Beijing "YYYY-MM-DD HH:MM:SS"
  if (!ts) return "—";
  const d = new Date(ts);
  if (isNaN(d)) return "—";
  const b = new Date(d.getTime() + 8 * 3600e3).toISOString();
  return `${b.slice(0, 10)} ${b.slice(11, 19)}`;
}

// a driver is liable only when identified (IC card or officer); the registry's driver is only presumed
function driverText(c) {
  const d = (c.liable && c.liable.driver) || {};
  const name = c.driver || d.id || c.driver_id || "";
  if (!name) return "未识别（不追究驾驶人责任）";
  if (d.identified) return `${name}（${DRIVER_SOURCES[d.source] || "已识别"}）`;
  return `${name}（推定：${DRIVER_SOURCES[d.source] || "未识别"}，未经识别不予追责）`;
}

function roadComputation(road) {
  if (!road) return "—";
  if (road.action === "fine") {
    const per = road.tonnes ? Math.round(road.fine_yuan / road.tonnes) : null;
    return `超限 ${road.tonnes} 吨${per ? ` × ${per.toLocaleString("zh-CN")} 元/吨` : ""} = ${yuan(road.fine_yuan)}`;
  }
  if (road.action === "warning") return "超限未达 1 吨：予以警告，不予罚款";
  return VERDICT_LABELS[road.action] || "—";
}

function historyTable(history) {
  if (!history.length) return el("p", {class: "muted", text: "尚无处理记录"});
  return el("table", {class: "grid", id: "audit"},
    el("thead", {}, el("tr", {}, el("th", {text: "法律时间"}), el("th", {text: "操作"}), el("th", {text: "操作人"}),
                                 el("th", {text: "录入时间"}), el("th", {text: "理由 / 意见"}))),
    el("tbody", {}, ...history.map((h) => el("tr", {"data-audit": h.act},
      el("td", {text: bjFull(h.at)}), el("td", {text: ACT_LABELS[h.act] || "其他"}), el("td", {text: h.by === "roadwatch" ? "系统" : (h.by || "—")}),
      el("td", {text: bjFull(h.entered_at)}), el("td", {text: h.reason || ""})))));
}

// the intercept task (布控) this case's passage opened, and its field outcome (intercept.html records it)
const OUTCOME_LABELS = {intercepted: "已拦截", not_found: "未发现", released: "已放行"};
function interceptTable(t) {
  const o = t.outcome;
  return kvTable([
    ["布控任务", `${t.task_id}（在“布控”页处置）`],
    ["布控点位", (t.targets || []).map((x) => `${x.name}（${x.km} km，预计 ${bjFull(x.eta)}）`).join("；") || "前方可达范围内无执法点"],
    ["有效至", bjFull(t.expires_at)],
    ["处置结果", o ? `${OUTCOME_LABELS[o.outcome] || o.outcome}（${o.by}，${bjFull(o.at)}）`
      + (o.unloaded_kg !== null && o.unloaded_kg !== undefined ? `；卸载 ${kgs(o.unloaded_kg)}；现场处理：${o.on_the_spot ? "是" : "否"}` : "")
      + (o.reason ? `；${o.reason}` : "") : "待处置"]]);
}

function renderCase(c) {
  const box = $("case-detail");
  const m = c.manifest || {};
  const lim = m.limit || {}, tol = m.tolerance || {}, ex = m.excess || {}, meas = m.measurement || {};
  const site = m.site || {}, veh = m.vehicle || {}, tg = m.targets || {}, pen = m.penalties || {};
  const road = pen.road_administration || null, police = pen.police || null, cnt = m.counters || null;
  const dec = m.decision || {action: c.action, fine_yuan: c.fine_yuan, review_reasons: []};
  const owner = (c.liable && c.liable.owner) || {};
  // a live update re-renders the open case: keep what the operator is typing
  const prev = $("case-reason");
  const typed = prev && state.shown && state.shown.case_id === c.case_id ? prev.value : "";
  state.shown = {case_id: c.case_id, status: c.status};
  const reason = el("textarea", {id: "case-reason", placeholder: "理由（不予立案、撤销、结案必填）", maxlength: 500});
  reason.value = typed;
  // the legal date of the act (e.g. the decision date); empty = today
  const at = el("input", {id: "case-at", type: "date", title: "法律日期（空：今天）"});
  const msg = el("span", {class: "error", id: "case-msg"});
  const buttons = (c.allowed_actions || []).map((a) => el("button", {
    class: a === "dismiss" || a === "withdraw" ? "danger" : "primary", "data-action": a, text: ACT_LABELS[a] || a,
    onclick: async () => {
      if (REASON_REQUIRED.has(a) && !reason.value.trim()) { msg.textContent = "需要填写理由"; return; }
      try {
        const body = {action: a, reason: reason.value};
        if (at.value) body.at = at.value;
        const updated = await api(`api/cases/${encodeURIComponent(c.case_id)}/actions`, {method: "POST", body});
        reason.value = "";
        renderCase(updated); loadCases(); toast(`${ACT_LABELS[a] || a} ✓ ${c.plate}`);
      } catch (e) { msg.textContent = e.message; }
    }}));
  const images = (c.evidence_files || []).map((f) => {
    const url = `api/cases/${encodeURIComponent(c.case_id)}/evidence/${f.split("/").map(encodeURIComponent).join("/")}`;
    return el("a", {href: url, target: "_blank", rel: "noopener", title: "现场图片"}, el("img", {src: url, alt: "现场图片", loading: "lazy"}));
  });
  const track = m.track || m.track_excerpt || (m.source && m.source.track) || [];
  const siteName = c.source_site ? c.source_site.name : null;
  const history = (c.history && c.history.length) ? c.history
    : (c.actions || []).map((a) => ({act: a.action, by: a.operator, at: a.at, entered_at: a.ts, reason: a.reason}));
  const evUrl = (f) => `api/cases/${encodeURIComponent(c.case_id)}/evidence/${f.split("/").map(encodeURIComponent).join("/")}`;
  const docs = (c.documents || []).map((d) => el("tr", {"data-document": d.kind},
    el("td", {text: DOCUMENT_LABELS[d.kind] || "文书"}), el("td", {text: bjFull(d.issued_at)}), el("td", {text: d.by || ""}),
    el("td", {}, ...d.files.map((f) => el("a", {href: evUrl(f.path), target: "_blank", rel: "noopener",
      title: `SHA-256 ${f.sha256}`, text: f.media_type === "application/pdf" ? "PDF 文件 " : "网页文件 "}))),
    el("td", {}, el("small", {title: d.entry, text: /(\d+)/.test(d.entry || "") ? `第 ${Number(/(\d+)/.exec(d.entry)[1])} 条` : "—"}))));
  const issueButtons = canAct() ? ["notice", "inform", "decision"].map((k) => el("button", {"data-issue": k,
    text: `生成${DOCUMENT_LABELS[k]}`, onclick: async () => {
      try { await api(`api/cases/${encodeURIComponent(c.case_id)}/documents`, {method: "POST", body: {kind: k}}); openCase(c.case_id); }
      catch (e) { toast(e.message); }
    }})) : [];
  fill(box,
    el("h2", {}, `${c.plate} `, el("span", {class: `badge st-${c.status}`, text: (STATUS_LABELS[c.status] || "").split(" ")[0] || "—"}),
       el("small", {text: `  案件编号 ${c.case_id}`}),
       el("a", {class: "print-link", id: "case-print-link", href: `case/${encodeURIComponent(c.case_id)}/print`, target: "_blank", rel: "noopener", text: "打印案件表"}),
       el("a", {class: "print-link", id: "case-vehicle-link", href: "#", text: "查看车辆 →", onclick: (ev) => { ev.preventDefault(); gotoVehicle(c.plate); }})),
    section("检测记录", kvTable([
      ["检测时间（北京时间）", bjFull((m.time && m.time.ts) || c.ts)],
      ["检测站点", `${site.name || (c.station && c.station.name) || "—"}${site.county ? `（${site.county}）` : ""}`],
      ["计量检定", site.certificate_no ? `证书 ${site.certificate_no}，${CALIB_LABELS[site.calibration_status] || "状态不明"}` : null],
      ["车道 / 车速", m.lane !== undefined ? `${m.lane} 车道 · ${m.speed_kmh ?? "—"} km/h` : null],
      ["车辆类型", [veh.category, veh.axle_count ? `${veh.axle_count} 轴` : ""].filter(Boolean).join(" · ")],
      ["实测总质量", kgs(meas.gross_kg ?? m.gross_kg ?? c.gross_kg)],
      ["各轴轴重", veh.axle_loads_kg ? veh.axle_loads_kg.map((x, i) => `第${i + 1}轴 ${kgs(x)}`).join("，") : null]])),
    section("限值及法律依据", kvTable([
      ["总质量限值", kgs(lim.limit_kg ?? m.limit_kg ?? c.limit_kg)],
      ["依据", lim.basis ? `${lim.basis}${lim.version ? `（${lim.version}）` : ""}` : "—"],
      ["限值调整", (lim.adjustments || []).length ? lim.adjustments.map((x) => x.reason || x.basis || "").join("；") : "无"],
      ["备案允差", tol.value !== undefined ? `${(tol.value * 100).toFixed(1)} %（总质量超过 ${kgs(tol.filing_threshold_kg)} 方予立案）` : null],
      ["超限质量", `${kgs(ex.kg ?? c.excess_kg)}${ex.pct !== undefined ? `（超限率 ${num(ex.pct, 2)} %）` : ""}`]])),
    section("处罚计算", el("table", {class: "grid", id: "case-penalties"},
      el("thead", {}, el("tr", {}, el("th", {text: "主体"}), el("th", {text: "计算"}), el("th", {text: "结果"}), el("th", {text: "依据"}))),
      el("tbody", {},
        el("tr", {}, el("td", {text: "公路管理机构"}), el("td", {text: roadComputation(road)}),
          el("td", {text: road ? (road.action === "fine" ? yuan(road.fine_yuan) : VERDICT_LABELS[road.action] || "—") : yuan(c.fine_yuan)}),
          el("td", {text: road && road.basis ? road.basis : "—"})),
        police ? el("tr", {}, el("td", {text: "公安交通管理部门"}), el("td", {text: `超核定载质量 ${num(police.over_rated_load_pct, 2)} %`}),
          el("td", {text: `罚款 ${yuan(police.fine_min_yuan)} 至 ${yuan(police.fine_max_yuan)}，记 ${police.points} 分`}),
          el("td", {text: police.basis || "—"})) : null)),
      kvTable([["处理决定", `${VERDICT_LABELS[dec.action] || "—"}${dec.action === "fine" ? `，${yuan(dec.fine_yuan)}` : ""}`],
               ["计入一超四罚", c.violation ? "是" : "否"],
               ["需人工审核的原因", (dec.review_reasons || []).length ? dec.review_reasons.map((x) => REVIEW_REASONS[x] || "其他原因").join("；") : null]])),
    c.intercept ? section("布控拦截", interceptTable(c.intercept)) : null,
    section("责任主体", kvTable([
      ["车辆所有人", (tg.vehicle && tg.vehicle.owner) || owner.owner || c.enterprise || "—"],
      ["道路运输证号", tg.vehicle && tg.vehicle.transport_cert_no],
      ["运输企业", c.enterprise || (tg.enterprise && tg.enterprise.name) || "—"],
      ["驾驶人", driverText(c)],
      ["货物装载源头", siteName || "未能从轨迹确定"]])),
    cnt ? section(`一超四罚累计（近 ${cnt.window_days} 日）`, kvTable([
      ["本车违法次数", `${cnt.vehicle} 次`],
      ["驾驶人违法次数", cnt.driver !== null && cnt.driver !== undefined ? `${cnt.driver} 次` : "—"],
      ["企业违法车辆占比", cnt.enterprise_share !== null && cnt.enterprise_share !== undefined ? `${(cnt.enterprise_share * 100).toFixed(2)} %（${cnt.enterprise_violating_vehicles} / ${cnt.enterprise_goods_vehicles} 辆）` : "—"]])) : null,
    (c.proposals || []).length ? section("抄告及处罚建议（第六十六条）", el("table", {class: "grid", id: "case-proposals"},
      el("thead", {}, el("tr", {}, el("th", {text: "对象"}), el("th", {text: "主体"}), el("th", {text: "建议处罚"}), el("th", {text: "状态"}), el("th", {text: "提出时间"}))),
      el("tbody", {}, ...c.proposals.map((p) => el("tr", {}, el("td", {text: TARGET_LABELS[p.target] || "—"}), el("td", {text: p.subject}),
        el("td", {text: p.sanction}), el("td", {text: PROPOSAL_STATUS[p.status] || "—"}), el("td", {text: bjFull(p.created_at)})))))) : null,
    (c.conflicts || []).length ? section("数据冲突（同一过车记录两次上报不一致）", el("table", {class: "grid", id: "case-conflicts"},
      el("thead", {}, el("tr", {}, el("th", {text: "收到时间"}), el("th", {text: "首次总质量"}), el("th", {text: "再次总质量"}))),
      el("tbody", {}, ...c.conflicts.map((x) => el("tr", {}, el("td", {text: bjFull(x.received_at)}),
        el("td", {text: kgs(x.first.gross_kg)}), el("td", {text: kgs(x.second.gross_kg)})))))) : null,
    section("现场图片", images.length ? el("div", {class: "images"}, ...images) : el("p", {class: "muted", text: "本案无现场图片"})),
    (track.length || c.source_site) ? section("轨迹与货源", trackSvg(track, c.source_site, c.station) || el("p", {class: "muted", text: "无轨迹"})) : null,
    section("处理", canAct() ? el("div", {class: "actions"}, reason, at, ...buttons,
        buttons.length ? null : el("span", {class: "muted", text: "当前状态无可用操作"}), msg)
      : el("p", {class: "muted", text: "只读用户"})),
    section("文书（已签名并入证据链）",
      docs.length ? el("table", {class: "grid", id: "documents"}, el("thead", {}, el("tr", {}, el("th", {text: "文书"}),
        el("th", {text: "生成时间"}), el("th", {text: "经办人"}), el("th", {text: "文件"}), el("th", {text: "证据链条目"}))),
        el("tbody", {}, ...docs)) : el("p", {class: "muted", text: "尚无文书"}),
      issueButtons.length ? el("div", {class: "actions"}, ...issueButtons) : null),
    c.agency_notice ? section("抄告车籍地道路运输管理机构（62号令第四十四条）",
      el("div", {id: "case-agency-notice", "data-overdue": c.agency_notice.overdue ? "1" : "0"}, kvTable([
        ["抄告对象", c.agency_notice.to_agency || "未查明（车籍地机构不在 notices.agencies_file 中）"],
        ["应抄告日期", c.agency_notice.due_on],
        ["状态", c.agency_notice.sent_at ? `已抄告 ${bjFull(c.agency_notice.sent_at)}` : c.agency_notice.overdue ? "逾期未抄告" : "待抄告"]]))) : null,
    section("处理记录", historyTable(history)),
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
    card("两客一危在线 monitored online now", `${t.online_now} / ${t.vehicles}`), card("今日上线 online today", String(t.online_today)),
    card("上线率 online rate", pct(t.online_rate)), card("数据合格率 data quality", pct(t.quality_rate)),
    card("轨迹完整率 track complete", pct(t.track_rate)), card("漂移车辆率 drift", pct(t.drift_rate)),
    card("平均超速次数 overspeed / veh", num(t.avg_overspeed)), card("平均疲劳驾驶 fatigue s / veh", num(t.avg_fatigue_s, 0)),
    card("今日告警 alerts today", String(t.alerts_today)), card("待处理案件 open cases", String(t.open_cases)),
    ...interceptionCards(res.interception, card));
  $("fleet-note").textContent = `${res.day}（数据时钟 feed clock）截至目前 so far · 统计范围：入网的两客一危车辆（地图另显示普通货车和未登记车辆）`
    + (res.unregistered_online ? ` · 未登记在线 unregistered online: ${res.unregistered_online}` : "");
  state.fleetRows = res.enterprises;
  renderFleet();
}
// this month's 拦截率 and 查处率 (numerator / denominator), as the monthly report counts them
function interceptionCards(ic, card) {
  if (!ic) return [];
  const t = ic.total, q = t.interception_rate, e = t.enforcement_rate;
  const rate = (r) => (r.percent === null ? "—" : `${r.percent}%`) + ` (${r.numerator}/${r.denominator})`;
  return [card(`本月拦截率 interception ${ic.month}`, rate(q)), card(`本月查处率 enforcement ${ic.month}`, rate(e)),
    card("布控中 open intercept tasks", String(t.open)), card("本月卸载 unloaded t", num(t.unloaded_t))];
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
  const res = await api("api/reports/months");
  const box = $("report-list");
  const files = (m, list, base) => el("ul", {class: "files"}, ...list.map((f) => el("li", {},
    el("a", {href: `${base}/${m}/${encodeURIComponent(f.name)}`, download: f.name, text: REPORT_FILE_LABELS[f.name] || f.name}),
    el("small", {text: `  ${(f.bytes / 1024).toFixed(1)} KiB · 生成于 ${fmtTs(f.modified)}`}))));
  if (!res.months.length) { box.replaceChildren(el("p", {class: "muted", text: "归档中尚无任何月份的数据 no month has data in the archive yet"})); return; }
  box.replaceChildren(el("table", {class: "grid", id: "report-months"},
    el("thead", {}, el("tr", {}, el("th", {text: "月份 Month"}), el("th", {text: "状态 Status"}), el("th", {text: "文件 Files"}), el("th", {text: ""}))),
    el("tbody", {}, ...res.months.map((m) => {
      const official = m.files.length > 0;
      const label = official ? "已生成 generated" : m.over ? "未生成 not generated" : "本月进行中 month in progress";
      const btn = official ? null : el("button", {class: "primary", "data-generate": m.month,
        text: m.over ? "生成报告 Generate" : "生成截至目前的预览 Preview so far",
        onclick: async (ev) => {
          ev.target.disabled = true; ev.target.textContent = "生成中… generating";
          try { await api(`api/reports/${m.month}/generate`, {method: "POST", body: {}}); toast(`${m.month} 报告已生成 report generated`); }
          catch (e) { toast("生成失败 failed: " + e.message); }
          loadReports();
        }});
      return el("tr", {"data-month": m.month}, el("td", {text: m.month}), el("td", {text: label}),
        el("td", {}, official ? files(m.month, m.files, "api/reports") : null,
          m.preview.length ? el("div", {}, el("small", {text: "预览（月未结束，仅供参考） preview, month not over:"}), files(m.month, m.preview, "api/report-previews")) : null),
        el("td", {}, btn));
    }))));
}
const REPORT_FILE_LABELS = {"report.html": "报告（网页） report.html", "report.xlsx": "报告（Excel） report.xlsx",
  "report.csv": "考核指标 rates.csv", "report.json": "数据 report.json", "trace_vehicles.csv": "车辆明细 trace_vehicles.csv",
  "trace_excluded.csv": "剔除明细 trace_excluded.csv", "case_review.csv": "案卷评查 case_review.csv"};

// --- devices: the public device list (streams/device_list.py) ---------------------------------------------------
const DOCUMENT_LABELS = {notice: "违法行为通知书", inform: "行政处罚告知书", decision: "行政处罚决定书", agency_notice: "违法超限运输抄告单"};
const DEVICE_ITEM_STATUS = {ok: "已完成", pending: "未生效", missing: "未完成"};
async function loadDevices() {
  const res = await api("api/devices");
  $("dev-summary").textContent = `截至 ${res.as_of.slice(0, 10)}：${res.total} 台设备，${res.approved} 台可用于处罚 ` +
    `(${res.approved} of ${res.total} usable for fines)`;
  $("device-table").tBodies[0].replaceChildren(...res.devices.map((d) => el("tr", {"data-device": d.device_id},
    el("td", {}, el("div", {text: d.location}), el("small", {text: d.county || ""})),
    el("td", {text: d.road || "—"}), el("td", {text: d.direction || "—"}),
    el("td", {text: `${d.device_type === "mobile" ? "移动式" : "固定式"} ${d.device_id}`}),
    el("td", {text: `${d.calibration_cert_no || "—"} 至 ${(d.calibration_valid_to || "—").slice(0, 10)}`}),
    ...["legal_review", "technical_review", "signage", "announcement"].map((k) => {
      const a = d.approval[k];
      return el("td", {class: a.status === "ok" ? "ok" : "bad", title: a.reference || "",
        text: `${DEVICE_ITEM_STATUS[a.status]}${a.date ? " " + a.date.slice(0, 10) : ""}`});
    }),
    el("td", {class: d.approved ? "ok" : "bad", text: d.approved ? "是 yes" : "否 no"}))));
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
  initPlatforms({api, el, fill, canAct, toast, $});
  $("logout").onclick = async () => {
    try { await api("api/logout", {method: "POST", body: {}}); } finally { window.location.replace("login"); }
  };
  state.mapData = await api("api/map");
  const boundaries = initMap();
  cmap.setPlaces(state.mapData);
  await refreshVehicles();
  fitAll();
  await boundaries;
  const eventId = await loadAlerts();
  connectStream(eventId);
  setInterval(refreshVehicles, Math.max(1, state.me.fleet_refresh_s) * 1000);
  document.body.dataset.ready = "1";     // for tests and health checks
}
start().catch((e) => { if (e.message !== "signed out") toast("启动失败 start failed: " + e.message, 10000); });
