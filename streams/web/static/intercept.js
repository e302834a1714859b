// 布控任务: the dispatch list of intercept tasks and the field-outcome form, phone first.
// Data: api/intercept/tasks (the list), POST api/intercept/tasks/{id}/outcome (operators); new and updated
// tasks arrive on the console's live stream (api/stream, event "intercept"). Every value reaches the DOM
// through textContent. Status is re-derived here from expires_ms so a task turns "expired" without a reload.
import {$, el} from "./dom.js";

const LABELS = {open: "布控中", expired: "已过期", intercepted: "已拦截", not_found: "未发现", released: "已放行"};
const BASIS = {gps: "车载定位（位置+航向）", road_graph: "路网（站点上下游）"};
const DONE = new Set(["intercepted", "not_found", "released"]);
const state = {me: null, tasks: new Map(), filter: "open", current: null, eventId: ""};

function bj(ms, withDay = false) {          // epoch ms → Beijing "HH:MM" (or "MM-DD HH:MM")
  if (ms === null || ms === undefined) return "—";
  const b = new Date(ms + 8 * 3600e3).toISOString();
  return (withDay ? b.slice(5, 10) + " " : "") + b.slice(11, 16);
}
const statusOf = (t) => t.outcome ? t.outcome.outcome : (t.expires_ms > Date.now() ? "open" : "expired");
const canAct = () => state.me && (state.me.role === "operator" || state.me.role === "admin");

async function api(path, opts = {}) {
  const init = {credentials: "same-origin", headers: {}, ...opts};
  if (opts.body !== undefined) { init.body = JSON.stringify(opts.body); init.headers["Content-Type"] = "application/json"; }
  if (init.method && init.method !== "GET") init.headers["X-CSRF-Token"] = state.me ? state.me.csrf : "";
  const r = await fetch(path, init);
  if (r.status === 401) { location.replace("login"); throw new Error("signed out"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(data.detail || data.error || String(r.status)), {code: data.error});
  return data;
}

function card(t) {
  const st = statusOf(t);
  const p = t.passages[t.passages.length - 1] || {};
  const facts = el("dl", {class: "facts"},
    el("div", {}, el("dt", {text: "检测站"}), el("dd", {text: `${t.station_name || t.station_id} · ${bj(t.detected_ms, true)}`})),
    el("div", {}, el("dt", {text: "超限"}), el("dd", {text: `${p.excess_pct ?? "—"}% · 总重 ${p.gross_kg ?? "—"} kg · 过车 ${t.passages.length} 次`})),
    el("div", {}, el("dt", {text: "研判依据"}), el("dd", {text: BASIS[t.basis] || t.basis})),
    el("div", {}, el("dt", {text: "有效至"}), el("dd", {text: bj(t.expires_ms, true)})));
  const targets = t.targets.length
    ? el("ul", {class: "targets"}, t.targets.map((x) => el("li", {"data-point": x.point_id},
        el("span", {text: `${x.kind === "mobile" ? "流动 " : ""}${x.name} · ${x.km} km`}),
        el("span", {class: "eta", text: `预计 ${bj(x.eta_ms)}`}))))
    : el("p", {class: "muted", text: "前方可达范围内无执法点，请指挥调度"});
  const o = t.outcome;
  const outcome = o ? el("p", {class: "outcome", text: `${LABELS[o.outcome]} · ${o.by} · ${bj(o.at_ms, true)}`
    + (o.unloaded_kg !== null && o.unloaded_kg !== undefined ? ` · 卸载 ${o.unloaded_kg} kg` : "")
    + (o.on_the_spot !== null && o.on_the_spot !== undefined ? ` · 现场处理：${o.on_the_spot ? "是" : "否"}` : "")
    + (o.reason ? ` · ${o.reason}` : "")}) : null;
  const btn = !o && canAct() ? el("button", {class: "record primary", type: "button", text: "记录处置结果"}) : null;
  if (btn) btn.onclick = () => openSheet(t);
  return el("article", {class: "task", id: "task-" + t.task_id, "data-task": t.task_id, "data-status": st},
    el("header", {}, el("span", {class: "plate", text: t.plate}), el("span", {class: "badge " + st, text: LABELS[st]})),
    facts, targets, outcome, btn);
}

function render(flashId) {
  const all = [...state.tasks.values()].sort((a, b) => b.detected_ms - a.detected_ms);
  const f = state.filter;
  const shown = all.filter((t) => !f || (f === "done" ? DONE.has(statusOf(t)) : statusOf(t) === f));
  $("n-open").textContent = String(all.filter((t) => statusOf(t) === "open").length);
  $("list").replaceChildren(...(shown.length ? shown.map(card) : [el("p", {class: "muted", text: "暂无任务 no tasks"})]));
  if (flashId) {
    const c = $("task-" + flashId);
    if (c) { c.classList.add("flash"); setTimeout(() => c.classList.remove("flash"), 2500); }
  }
}

function openSheet(t) {
  state.current = t;
  $("outcome-form").reset();
  $("sheet-task").textContent = `${t.plate} · ${t.station_name || t.station_id} ${bj(t.detected_ms, true)}`;
  $("point").replaceChildren(el("option", {value: "", text: "—"}),
    ...t.targets.map((x) => el("option", {value: x.point_id, text: x.name})));
  if (t.targets.length) $("point").value = t.targets[0].point_id;     // the nearest point, by ETA
  $("form-error").textContent = "";
  toggleFields();
  $("sheet").showModal();
}
function toggleFields() {
  $("intercepted-fields").hidden = $("outcome-form").elements.outcome.value !== "intercepted";
}

async function submit(ev) {
  ev.preventDefault();
  const form = $("outcome-form").elements;
  const outcome = form.outcome.value;
  const body = {outcome};
  const reason = $("reason").value.trim();
  if (reason) body.reason = reason;
  if ($("at").value) body.at = $("at").value + ":00+08:00";       // the officer's clock is Beijing time
  if (outcome === "intercepted") {
    if ($("unloaded").value === "") { $("form-error").textContent = "请填写卸载质量 (kg)"; return; }
    body.unloaded_kg = Number($("unloaded").value);
    body.on_the_spot = form.spot.value === "yes";
    if ($("point").value) body.point_id = $("point").value;
  }
  $("submit").disabled = true;
  try {
    const t = await api(`api/intercept/tasks/${encodeURIComponent(state.current.task_id)}/outcome`, {method: "POST", body});
    state.tasks.set(t.task_id, t);
    $("sheet").close();
    render(t.task_id);
  } catch (e) {
    $("form-error").textContent = e.message;
  } finally {
    $("submit").disabled = false;
  }
}

function connect() {
  const es = new EventSource("api/stream?since=" + encodeURIComponent(state.eventId));
  es.onopen = () => { $("conn").className = "conn on"; };
  es.onerror = () => { $("conn").className = "conn off"; };
  es.addEventListener("intercept", (m) => {
    state.eventId = m.lastEventId || state.eventId;
    const t = JSON.parse(m.data);
    const old = state.tasks.get(t.task_id);
    if (old && old.outcome && !t.outcome) return;            // an older publication of a closed task
    if (old && !t.outcome && (old.revision || 0) > (t.revision || 0)) return;
    state.tasks.set(t.task_id, {...old, ...t, station_name: t.station_name || (old && old.station_name)});
    render(t.task_id);
  });
  es.addEventListener("reset", () => load());
  es.addEventListener("logout", () => { es.close(); location.replace("login"); });
}

async function load() {
  const res = await api("api/intercept/tasks?limit=500");
  state.eventId = res.event_id;
  state.tasks = new Map(res.tasks.map((t) => [t.task_id, t]));
  render();
}

async function main() {
  state.me = await api("api/me");
  $("who").textContent = `${state.me.username}（${canAct() ? "可记录处置结果" : "只读"}）`;
  for (const b of document.querySelectorAll(".filters button")) {
    b.onclick = () => {
      state.filter = b.dataset.status;
      for (const x of document.querySelectorAll(".filters button")) x.classList.toggle("active", x === b);
      render();
    };
  }
  for (const r of $("outcome-form").elements.outcome) r.onchange = toggleFields;
  $("outcome-form").onsubmit = submit;
  $("cancel").onclick = () => $("sheet").close();
  await load();
  connect();
  setInterval(() => render(), 60_000);      // open → expired as time passes
}
main();
