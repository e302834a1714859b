"""The public list of enforcement devices (公路治超非现场执法点位) as JSON, CSV and a standalone HTML page.

Rows come from ``models.devices.public_device_list``; `roadwatch devices publish` writes the three files and
the console serves the same renderings (/api/devices, /api/devices/devices.{csv,html}). The list holds no
personal data: locations, device type, the calibration certificate, and the review/announcement records.
"""
from __future__ import annotations

import csv
import html
import io
from datetime import datetime

import orjson

from roadwatch.models.config import Config
from roadwatch.models.devices import APPROVAL_ITEMS, public_device_list
from roadwatch.models.records import BEIJING, epoch_ms_to_iso
from roadwatch.models.registry import Registry

SCHEMA = "roadwatch.device-list/1"
TYPE_LABELS = {"fixed": "固定式", "mobile": "移动式"}
STATUS_LABELS = {"ok": "已完成", "pending": "未生效", "missing": "未完成"}


def device_list(registry: Registry, cfg: Config, as_of_ms: int | None = None) -> dict:
    if as_of_ms is None:
        as_of_ms = int(datetime.now(BEIJING).timestamp() * 1000)
    rows = public_device_list(registry, as_of_ms, cfg)
    return {"schema": SCHEMA, "region": registry.region or None, "as_of": epoch_ms_to_iso(as_of_ms),
            "required_items": [i for i, (key, _) in APPROVAL_ITEMS.items() if cfg[key]],
            "devices": rows, "approved": sum(r["approved"] for r in rows), "total": len(rows)}


def to_json(doc: dict) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


CSV_COLUMNS = ["station_id", "device_id", "location", "county", "road", "direction", "device_type", "lat", "lon",
               "calibration_cert_no", "calibration_valid_to", "approved"]


def to_csv(doc: dict) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    head = list(CSV_COLUMNS)
    for item in APPROVAL_ITEMS:
        head += [f"{item}_status", f"{item}_date", f"{item}_reference"]
    w.writerow(head)
    for r in doc["devices"]:
        row = [("yes" if r[c] else "no") if c == "approved" else ("" if r[c] is None else r[c]) for c in CSV_COLUMNS]
        for item in APPROVAL_ITEMS:
            a = r["approval"][item]
            row += [a["status"], a["date"] or "", a["reference"] or ""]
        w.writerow(row)
    return ("\ufeff" + buf.getvalue()).encode()        # BOM: Excel opens UTF-8 CSV with Chinese text correctly


_CSS = """body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #999;padding:4px 6px;text-align:left;
vertical-align:top}th{background:#eee}.ok{color:#176b2c}.missing,.pending{color:#b00020;font-weight:bold}
small{color:#555}@media print{body{margin:0}}"""


def to_html(doc: dict) -> bytes:
    e = html.escape
    title = f"{doc['region'] or ''}公路治超非现场执法设备公示"
    head = "".join(f"<th>{e(label)}</th>" for _, label in APPROVAL_ITEMS.values())
    body = []
    for r in doc["devices"]:
        cells = []
        for item in APPROVAL_ITEMS:
            a = r["approval"][item]
            txt = STATUS_LABELS[a["status"]]
            if a["date"]:
                txt += f"<br><small>{e(a['date'][:10])} {e(a['reference'] or '')}</small>"
            cells.append(f'<td class="{a["status"]}">{txt}</td>')
        body.append(
            f"<tr data-device=\"{e(r['device_id'])}\"><td>{e(r['location'])}<br><small>{e(r['county'] or '')} "
            f"{r['lat']:.5f}, {r['lon']:.5f}</small></td><td>{e(r['road'] or '—')}</td>"
            f"<td>{e(r['direction'] or '—')}</td><td>{e(TYPE_LABELS.get(r['device_type'], r['device_type']))}"
            f"<br><small>{e(r['device_id'])}</small></td><td>{e(r['calibration_cert_no'] or '—')}<br><small>有效期至 "
            f"{e((r['calibration_valid_to'] or '—')[:10])}</small></td>{''.join(cells)}"
            f"<td>{'是' if r['approved'] else '否'}</td></tr>")
    page = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"
            f"<p>截至 {e(doc['as_of'][:10])}，共 {doc['total']} 台设备，其中 {doc['approved']} 台已完成全部法定程序"
            f"（法制审核、技术审核、设置明显标志、向社会公布），其采集的数据方可作为行政处罚的证据"
            f"（《中华人民共和国行政处罚法》第四十一条）。</p>"
            f"<table><thead><tr><th>设置地点</th><th>道路</th><th>方向</th><th>设备类型</th><th>计量检定证书</th>"
            f"{head}<th>可用于处罚</th></tr></thead><tbody>{''.join(body)}</tbody></table></body></html>")
    return page.encode()
