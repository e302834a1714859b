// 平台 view: the JT/T 809 lower platforms (企业/服务商平台 that forward to this centre) — main and slave link state,
// 平台连通率 of the running month so far, and platform inspections (查岗) with the form that sends one to one or
// all platforms. Data: GET api/platforms, POST api/platforms/inspections (operator). Platform events do not reach
// the live stream, so the view re-reads the overview every REFRESH_MS while it is shown.
// The helpers (api, el, …) come from app.js; every value reaches the DOM through textContent.

const REFRESH_MS = 5000;
export const INSPECTION_LABELS = {queued: "待发送", pending: "待应答", answered: "已按时应答", late: "超时应答",
  missed: "未应答", undeliverable: "未送达（平台离线）"};
const END_REASONS = {logout: "平台注销", lost: "连接中断", idle: "长时间无数据", server_stop: "本端服务停止",
  server_restart: "本端服务重启", replaced: "被新登录替换"};
const PROTOCOLS = {2011: "JT/T 809-2011", 2019: "JT/T 809-2019"};

let h = null;                 // helpers from app.js
let timer = null;
let names = new Map();        // centre id → platform name (also used by the vehicle panel)

function fmtEpoch(s) {        // epoch seconds → Beijing "MM-DD HH:MM:SS"
  if (s === null || s === undefined) return "—";
  const b = new Date(s * 1000 + 8 * 3600e3).toISOString();
  return b.slice(5, 10) + " " + b.slice(11, 19);
}
const nameOf = (p) => `${p.name}（${p.center_id}）`;

export function platformLabel(centerId) {
  if (centerId === null || centerId === undefined) return "直连（JT/T 808 终端直接接入）";
  return names.has(centerId) ? `${names.get(centerId)}（${centerId}）` : `平台 ${centerId}`;
}

function linkCell(link, kind) {
  const {el} = h;
  if (!link) return el("td", {class: "link-off", text: kind === "main" ? "从未登录" : "—"});
  const since = fmtEpoch(link.since);
  if (link.online) return el("td", {}, el("span", {class: "badge link-on", text: "在线"}), ` 自 ${since}`);
  const why = kind === "main" && link.end_reason ? `（${END_REASONS[link.end_reason] || "断开"}）` : "";
  return el("td", {}, el("span", {class: "badge link-down", text: "离线"}), ` 自 ${since}${why}`);
}

function rateCell(r) {
  const {el} = h;
  if (!r || r.percent === null) return el("td", {class: "num", text: "—"});
  return el("td", {class: "num" + (r.percent < 90 ? " rate-low" : ""), title: `${r.numerator_label} / ${r.denominator_label}`},
    `${r.percent.toFixed(2)}%`, el("small", {text: ` ${r.numerator} / ${r.denominator} 分钟`}));
}

function render(res) {
  const {el, fill, canAct, $} = h;
  const ps = res.platforms;
  names = new Map(ps.map((p) => [p.center_id, p.name]));
  $("platform-table").tBodies[0].replaceChildren(...ps.map((p) => el("tr", {"data-center": p.center_id},
    el("td", {text: nameOf(p)}),
    el("td", {text: p.link ? PROTOCOLS[p.link.protocol] || String(p.link.protocol) : "—"}),
    linkCell(p.link, "main"), linkCell(p.link && p.link.online ? p.slave : null, "slave"),
    el("td", {text: p.link ? fmtEpoch(p.link.last_seen) : "—"}),
    rateCell(p.connectivity), el("td", {class: "num", text: String(p.vehicles)}))));
  if (!ps.length) $("platform-table").tBodies[0].replaceChildren(el("tr", {}, el("td", {colspan: 7, class: "muted",
    text: "尚未配置下级平台（jt809.platforms_file）"})));
  const rows = ps.flatMap((p) => p.inspections.map((i) => ({...i, platform: nameOf(p)})))
    .sort((a, b) => b.requested_ts - a.requested_ts);
  $("inspection-table").tBodies[0].replaceChildren(...rows.map((i) => el("tr", {"data-inspection": i.inspection_id, "data-status": i.status},
    el("td", {text: i.platform}), el("td", {class: "question", text: i.question}),
    el("td", {text: fmtEpoch(i.requested_ts)}), el("td", {text: i.requested_by}),
    el("td", {text: fmtEpoch(i.sent_ts)}), el("td", {text: fmtEpoch(i.deadline_ts)}),
    el("td", {text: i.answer || "—"}), el("td", {text: fmtEpoch(i.answered_ts)}),
    el("td", {}, el("span", {class: `badge insp-${i.status}`, text: INSPECTION_LABELS[i.status] || "未知"})))));
  if (!rows.length) $("inspection-table").tBodies[0].replaceChildren(el("tr", {}, el("td", {colspan: 9, class: "muted",
    text: "近 31 天无查岗记录"})));
  $("platform-note").textContent = `本月（北京时间）自 ${fmtEpoch(res.month_start)} 至 ${fmtEpoch(res.now)} · 每 ${REFRESH_MS / 1000} 秒刷新`;
  const sel = $("insp-target"), keep = sel.value;
  fill(sel, el("option", {value: "all", text: "全部平台 All platforms"}),
    ...ps.map((p) => el("option", {value: String(p.center_id), text: nameOf(p)})));
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "all";
  $("insp-form").hidden = !canAct();
  $("insp-readonly").hidden = canAct();
}

export async function loadPlatforms() {
  try { render(await h.api("api/platforms")); }
  catch (e) { h.$("platform-note").textContent = "加载失败 load failed: " + e.message; }
}

export async function ensureNames() {
  if (!names.size) { try { names = new Map((await h.api("api/platforms")).platforms.map((p) => [p.center_id, p.name])); } catch (e) { /* ids only */ } }
}

export function initPlatforms(helpers) {
  h = helpers;
  const {$} = h;
  $("insp-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("insp-msg"), q = $("insp-question").value.trim(), mins = $("insp-minutes").value;
    if (!q) { msg.textContent = "请填写查岗问题 a question is required"; return; }
    const body = {platform: $("insp-target").value, question: q};
    if (mins) body.minutes = Number(mins);
    try {
      const r = await h.api("api/platforms/inspections", {method: "POST", body});
      msg.textContent = "";
      $("insp-question").value = "";
      h.toast(`查岗已提交 ${r.queued.length} 个平台 queued for ${r.queued.length} platform(s)`);
      loadPlatforms();
    } catch (e) { msg.textContent = e.message; }
  });
  clearInterval(timer);
  timer = setInterval(() => { if (document.querySelector("#view-platforms.active")) loadPlatforms(); }, REFRESH_MS);
}
