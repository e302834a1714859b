// The printable overload case form (超限运输案件表): the reading, the limit and its legal basis, both penalty
// computations, 一超四罚 targets and counters, the evidence images and the case history — every field with a
// Chinese label and its unit, Beijing times, no internal codes. Data: api/cases/{id} (manifest + history).
import {$, el} from "./dom.js";

const caseId = decodeURIComponent(location.pathname.split("/").slice(-2)[0]);
// the same wording as the console (app.js STATUS_LABELS / ACTION_LABELS, models/lifecycle.py LABELS)
const STATUS = {detected: "待审核", reviewed: "审核中", confirmed: "已确认", dismissed: "不予立案", filed: "已立案",
  notified: "已告知", decided: "已决定", served: "已送达", closed: "已结案", withdrawn: "已撤销"};
const ACTS = {review: "审核", confirm: "确认", dismiss: "不予立案", file: "立案", notify: "告知", decide: "作出处罚决定",
  serve: "送达", close: "结案", withdraw: "撤销", amend: "补正事实", conflict: "记录冲突", detect: "检测立档"};
const VERDICT = {fine: "罚款", warning: "警告（不予罚款）", review: "转人工审核", none: "未超限", pass: "未超限"};
const REASONS = {calibration_invalid: "计量检定证书不在有效期内", calibration_missing: "无计量检定证书记录",
  low_plate_confidence: "车牌识别置信度偏低", unknown_plate: "车辆未在登记库中",
  device_legal_review_missing: "设备未经法制审核", device_technical_review_missing: "设备未经技术审核",
  device_signage_missing: "设备未设置明显标志", device_announcement_missing: "设备设置地点未向社会公布"};
const CALIB = {ok: "有效", invalid: "无效", missing: "无记录"};
const PLATE_COLOR = {1: "蓝", 2: "黄", 3: "黑", 4: "白", 5: "绿"};
const kg = (x) => (x === null || x === undefined) ? "—" : `${Number(x).toLocaleString("zh-CN", {maximumFractionDigits: 1})} kg`;
const pct = (x) => (x === null || x === undefined) ? "—" : `${Number(x).toFixed(2)} %`;
const yuan = (x) => (x === null || x === undefined) ? "—" : `${Number(x).toLocaleString("zh-CN")} 元`;
function bj(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  if (isNaN(d)) return String(ts);
  const b = new Date(d.getTime() + 8 * 3600e3).toISOString();
  return `${b.slice(0, 10)} ${b.slice(11, 19)}（北京时间）`;
}
function kv(rows) {
  return el("table", {}, ...rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => el("tr", {}, el("th", {text: k}), el("td", {}, v))));
}
const section = (title, ...content) => [el("h2", {text: title}), ...content];

function computationText(road) {
  // "excess 950 kg ≤ 1000 kg → 警告" → Chinese wording of the same computation
  if (!road) return "—";
  const t = road.tonnes, f = road.fine_yuan;
  if (road.action === "fine") {
    const per = t ? Math.round(f / t) : null;
    return `超限 ${t} 吨${per ? ` × ${per.toLocaleString("zh-CN")} 元/吨` : ""} = ${Number(f).toLocaleString("zh-CN")} 元（不足 1 吨的部分按规定取舍）`;
  }
  if (road.action === "warning") return "超限未达 1 吨：予以警告，不予罚款";
  return VERDICT[road.action] || "—";
}

async function main() {
  const r = await fetch(`../../api/cases/${encodeURIComponent(caseId)}`, {credentials: "same-origin"});
  if (r.status === 401) { location.replace("../../login"); return; }
  const c = await r.json();
  if (!r.ok) { $("form").replaceChildren(el("p", {text: `无此案件 no such case (${c.detail || r.status})`})); return; }
  const m = c.manifest || {};
  const lim = m.limit || {}, tol = m.tolerance || {}, ex = m.excess || {}, meas = m.measurement || {};
  const site = m.site || {}, veh = m.vehicle || {}, tg = m.targets || {}, pen = m.penalties || {};
  const road = pen.road_administration || null, police = pen.police || null, cnt = m.counters || null;
  const dec = m.decision || {action: c.action, fine_yuan: c.fine_yuan, review_reasons: []};
  const plate = (m.plate && m.plate.number) || c.plate;
  const history = (c.history && c.history.length ? c.history : (c.actions || []));
  const images = (c.evidence_files || []).map((f) => {
    const url = `../../api/cases/${encodeURIComponent(c.case_id)}/evidence/${f.split("/").map(encodeURIComponent).join("/")}`;
    return el("figure", {}, el("img", {src: url, alt: f}), el("figcaption", {text: f}));
  });
  document.title = `超限运输案件表 ${plate} ${c.case_id}`;
  $("form").replaceChildren(
    el("h1", {text: "超限运输车辆非现场执法案件表"}),
    el("div", {class: "sub"}, `案件编号 ${c.case_id} · 状态 `, el("span", {class: "badge", id: "status", text: STATUS[c.status] || "—"})),
    ...section("一、当事车辆及责任主体",
      kv([["车牌号码", `${plate}${m.plate && m.plate.color_name ? `（${m.plate.color_name}牌）` : PLATE_COLOR[c.plate_color] ? `（${PLATE_COLOR[c.plate_color]}牌）` : ""}`],
          ["车辆类型", [veh.category, veh.axle_count ? `${veh.axle_count} 轴` : ""].filter(Boolean).join(" · ")],
          ["车辆所有人", (tg.vehicle && tg.vehicle.owner) || c.enterprise],
          ["道路运输证号", tg.vehicle && tg.vehicle.transport_cert_no],
          ["核定载质量", tg.vehicle && tg.vehicle.rated_load_kg ? kg(tg.vehicle.rated_load_kg) : null],
          ["运输企业", tg.enterprise ? `${tg.enterprise.name}${tg.enterprise.licence_no ? `（经营许可证 ${tg.enterprise.licence_no}）` : ""}` : c.enterprise],
          ["驾驶人", tg.driver && tg.driver.name ? `${tg.driver.name}${tg.driver.qualification_no ? `（从业资格证 ${tg.driver.qualification_no}）` : ""}` : (c.driver || "未识别")],
          ["货物装载源头", c.source_site ? c.source_site.name : "未能从轨迹确定"]])),
    ...section("二、检测记录",
      kv([["检测时间", bj((m.time && m.time.ts) || c.ts)],
          ["检测站点", `${site.name || (c.station && c.station.name) || "—"}${site.county ? `（${site.county}）` : ""}`],
          ["检测设备", site.device_id ? `${site.device_id}，准确度等级 ${site.accuracy_class || "—"}` : null],
          ["计量检定", site.certificate_no ? `证书 ${site.certificate_no}，有效期 ${String(site.certificate_valid_from || "").slice(0, 10)} 至 ${String(site.certificate_valid_to || "").slice(0, 10)}，${CALIB[site.calibration_status] || "—"}` : null],
          ["车道 / 车速", `${m.lane ?? "—"} 车道 · ${m.speed_kmh ?? "—"} km/h`],
          ["实测总质量", el("b", {id: "gross", text: kg(meas.gross_kg ?? m.gross_kg)})],
          ["各轴轴重", veh.axle_loads_kg ? veh.axle_loads_kg.map((x, i) => `第${i + 1}轴 ${kg(x)}`).join("，") : null]])),
    ...section("三、限值及法律依据",
      kv([["总质量限值", el("b", {id: "limit", text: kg(lim.limit_kg ?? m.limit_kg)})],
          ["依据", el("span", {id: "basis", text: [lim.basis, lim.version ? `（${lim.version}）` : ""].join("")})],
          ["限值调整", (lim.adjustments || []).length ? lim.adjustments.map((a) => a.reason || a.basis || "").join("；") : "无"],
          ["备案允差", tol.value !== undefined ? `${(tol.value * 100).toFixed(1)} %（总质量超过 ${kg(tol.filing_threshold_kg)} 方予立案）` : null],
          ["超限质量", el("b", {id: "excess", text: `${kg(ex.kg ?? m.excess_kg)}（超限率 ${pct(ex.pct)}）`})]])),
    ...section("四、处罚计算",
      el("table", {class: "grid"},
        el("tr", {}, el("th", {text: "主体"}), el("th", {text: "计算"}), el("th", {text: "结果"}), el("th", {text: "依据"})),
        el("tr", {id: "road-penalty"}, el("td", {text: "公路管理机构"}), el("td", {text: computationText(road)}),
           el("td", {text: road ? (road.action === "fine" ? yuan(road.fine_yuan) : VERDICT[road.action] || "—") : yuan(c.fine_yuan)}), el("td", {text: road ? road.basis : "—"})),
        police ? el("tr", {id: "police-penalty"}, el("td", {text: "公安交通管理部门"}),
           el("td", {text: `超核定载质量 ${pct(police.over_rated_load_pct)}`}),
           el("td", {text: `罚款 ${yuan(police.fine_min_yuan)} 至 ${yuan(police.fine_max_yuan)}，记 ${police.points} 分`}),
           el("td", {text: police.basis})) : null),
      kv([["处理决定", el("b", {id: "decision", text: `${VERDICT[dec.action] || "—"}${dec.action === "fine" ? `，${yuan(dec.fine_yuan)}` : ""}`})],
          ["需人工审核的原因", (dec.review_reasons || []).length ? dec.review_reasons.map((x) => REASONS[x] || "其他原因").join("；") : null]])),
    ...(cnt ? section("五、一超四罚累计（近 " + cnt.window_days + " 日）",
      kv([["本车违法次数", `${cnt.vehicle} 次`], ["驾驶人违法次数", cnt.driver !== null && cnt.driver !== undefined ? `${cnt.driver} 次` : "—"],
          ["企业违法车辆占比", cnt.enterprise_share !== null && cnt.enterprise_share !== undefined ? `${(cnt.enterprise_share * 100).toFixed(2)} %（${cnt.enterprise_violating_vehicles} / ${cnt.enterprise_goods_vehicles} 辆）` : "—"],
          ["依据", cnt.basis]])) : []),
    ...section("六、现场图片", images.length ? el("div", {class: "images", id: "images"}, ...images) : el("p", {class: "muted", text: "本案无现场图片"})),
    ...section("七、处理记录",
      history.length ? el("table", {class: "grid", id: "history"},
        el("tr", {}, el("th", {text: "时间"}), el("th", {text: "操作"}), el("th", {text: "操作人"}), el("th", {text: "理由 / 意见"})),
        ...history.map((h) => el("tr", {}, el("td", {text: bj(h.at || h.ts) + (h.entered_at && h.at && h.entered_at.slice(0, 16) !== h.at.slice(0, 16) ? `，录入于 ${bj(h.entered_at)}` : "")}),
          el("td", {text: ACTS[h.act || h.action] || "其他"}),
          el("td", {text: h.by || h.operator || "—"}), el("td", {text: h.reason || ""}))))
        : el("p", {class: "muted", text: "尚无处理记录"})),
    ...section("八、证据完整性",
      kv([["电子签名", m.signing ? `${m.signing.alg}，密钥指纹 ${String(m.signing.key_id || "").slice(0, 16)}…` : "—"],
          ["证据链", m.chain ? `第 ${m.chain.seq} 号` : "—"],
          ["生成时间", bj(m.created_at)]])),
    el("div", {class: "sign"}, el("div", {text: "经办人（签名）"}), el("div", {text: "审核人（签名）"}), el("div", {text: "日期"})),
  );
  document.body.dataset.ready = "1";
}
$("print").onclick = () => window.print();
main().catch((e) => { $("form").replaceChildren(el("p", {text: "加载失败 " + e.message})); });
