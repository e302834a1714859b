"""Lawful weighing devices: the approval record beside the calibration certificate, and the public list.

行政处罚法 Art. 41 (docs/legal-basis.md §9.1): data from an electronic monitoring device may support a
penalty only if the device passed a legal review and a technical review, is signposted, and its location was
announced to the public. Each registry device (docs/registry-format.md#stations) may carry an ``approval``
object with one record per item (date, reference, reviewer). ``approval_status`` tells, for one reading's
time, which of the *required* items (config ``devices.require_*``) the device lacks; ``assess`` sends such
a reading to review (models/overload.py step 3) — it never becomes a fine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Config
from .mobile import active_deployment
from .records import InvalidRecord, iso_to_epoch_ms, parse_ts

if TYPE_CHECKING:                   # registry.py imports this module to check device entries
    from .registry import Registry

# item → (config key that requires it, label used in documents and the public list)
APPROVAL_ITEMS: dict[str, tuple[str, str]] = {
    "legal_review": ("devices.require_legal_review", "法制审核"),
    "technical_review": ("devices.require_technical_review", "技术审核"),
    "signage": ("devices.require_signage", "设置警示标志"),
    "announcement": ("devices.require_announcement", "向社会公布设置地点"),
}
ITEM_FIELDS = ("date", "reference", "reviewer")
DEVICE_TYPES = ("fixed", "mobile")
# the optional device fields besides the calibration certificate; checked by ``check_device``
DEVICE_TEXT_FIELDS = ("road", "direction", "location")
DEVICE_FIELDS = ("device_id", "cert_no", "valid_from", "valid_to", "device_type", *DEVICE_TEXT_FIELDS, "approval")


def reason_for(item: str) -> str:
    """The review reason a missing item gives (``device_<item>_missing``)."""
    return f"device_{item}_missing"


def check_device(dev: dict) -> str | None:
    """Why the device entry's approval/description fields are malformed (None when they are fine).
    Called by the registry loader, which names the entry."""
    unknown = sorted(set(dev) - set(DEVICE_FIELDS))
    if unknown:                      # a misspelt "aproval" would otherwise read as "not approved"
        return f"unknown field(s) {unknown}"
    dtype = dev.get("device_type", "fixed")
    if dtype not in DEVICE_TYPES:
        return f"device_type must be one of {list(DEVICE_TYPES)}"
    for k in DEVICE_TEXT_FIELDS:
        if k in dev and not isinstance(dev[k], str):
            return f"{k} must be text"
    appr = dev.get("approval", {})
    if not isinstance(appr, dict):
        return "approval must be an object"
    unknown = sorted(set(appr) - set(APPROVAL_ITEMS))
    if unknown:
        return f"approval: unknown item(s) {unknown}; expected some of {list(APPROVAL_ITEMS)}"
    for item, rec in appr.items():
        if rec is None:
            continue
        problem = check_item(item, rec)
        if problem:
            return f"approval.{problem}"
    return None


def check_item(item: str, rec) -> str | None:
    """Why one approval record (date, reference, reviewer) is malformed; also a mobile deployment's
    ``announcement`` (models/mobile.py)."""
    if not isinstance(rec, dict):
        return f"{item} must be an object with {list(ITEM_FIELDS)}"
    extra = sorted(set(rec) - set(ITEM_FIELDS))
    if extra:
        return f"{item}: unknown field(s) {extra}"
    for f in ITEM_FIELDS:
        if not isinstance(rec.get(f), str) or not rec[f].strip():
            return f"{item}.{f} is required (text)"
    try:
        parse_ts(rec["date"], "date")
    except InvalidRecord as err:
        return f"{item}: {err.detail}"
    return None


def required_items(cfg: Config) -> list[str]:
    return [item for item, (key, _) in APPROVAL_ITEMS.items() if cfg[key]]


def item_status(dev: dict | None, item: str, ts_ms: int) -> str:
    """ok (on file, dated at or before ``ts_ms``) | pending (on file, dated later) | missing."""
    rec = ((dev or {}).get("approval") or {}).get(item)
    if not rec:
        return "missing"
    return "ok" if iso_to_epoch_ms(rec["date"]) <= ts_ms else "pending"


def approval_status(registry: "Registry", station_id: str, device_id: str, ts_ms: int, cfg: Config) -> dict:
    """``status`` ok | not_approved; ``missing``: the required items the device lacks at ``ts_ms`` (not on
    file, or dated after the reading); ``items``: each item's status (required or not)."""
    dev = registry.station_device(station_id, device_id)
    if dev is not None and station_id in registry.mobile_units:
        # a mobile unit's location is announced per deployment: the one active at the reading's time counts
        dep = active_deployment(registry, station_id, ts_ms) or {}
        dev = {**dev, "approval": {**(dev.get("approval") or {}), "announcement": dep.get("announcement")}}
    items = {item: item_status(dev, item, ts_ms) for item in APPROVAL_ITEMS}
    req = required_items(cfg)
    missing = [item for item in req if items[item] != "ok"]
    out = {"status": "not_approved" if missing else "ok", "required": req, "missing": missing, "items": items}
    if dev is None:
        out["detail"] = "device not in the registry"
    return out


def public_device_list(registry: "Registry", as_of_ms: int, cfg: Config) -> list[dict]:
    """One row per registered device, for the public 通告 list: where it is, what it is, and whether each
    review and the announcement are on file as of ``as_of_ms`` (with dates and references)."""
    rows = []
    req = required_items(cfg)

    def row(point_id: str, dev: dict, location: str, county: str, lat: float, lon: float, **extra) -> dict:
        appr = dev.get("approval") or {}
        items = {}
        for item, (_, label) in APPROVAL_ITEMS.items():
            rec = appr.get(item) or {}
            # the reviewer is left out: it may name a person, and the public needs the date and reference
            items[item] = {"label": label, "status": item_status(dev, item, as_of_ms),
                           "date": rec.get("date"), "reference": rec.get("reference")}
        missing = [i for i in req if items[i]["status"] != "ok"]
        return {
            "station_id": point_id, "device_id": dev["device_id"],
            "location": location, "county": county or None,
            "road": dev.get("road") or None, "direction": dev.get("direction") or None,
            "device_type": dev.get("device_type", "fixed"), "lat": lat, "lon": lon,
            "calibration_cert_no": dev.get("cert_no") or None, "calibration_valid_to": dev.get("valid_to"),
            "approval": items, "approved": not missing, "missing": missing, **extra,
        }
    for st in sorted(registry.stations.values(), key=lambda s: s.station_id):
        for dev in st.devices:
            rows.append(row(st.station_id, dev, dev.get("location") or st.name, st.county, st.lat, st.lon))
    # a mobile unit: one row per deployment — its place, road and period, and that deployment's announcement
    for unit in sorted(registry.mobile_units.values(), key=lambda u: u.unit_id):
        dev = unit.device
        for dep in sorted(unit.deployments, key=lambda d: iso_to_epoch_ms(d["start"])):
            placed = {**dev, "device_type": "mobile", "road": dep["road"], "direction": dep["direction"],
                      "approval": {**(dev.get("approval") or {}), "announcement": dep.get("announcement")}}
            where = f"{unit.name}（流动）{dep['road']} {dep['start'][:16]}–{dep['end'][:16]}"
            rows.append(row(unit.unit_id, placed, where, unit.county, dep["lat"], dep["lon"],
                            deployment_id=dep["deployment_id"], deployed_from=dep["start"], deployed_to=dep["end"]))
    return rows
