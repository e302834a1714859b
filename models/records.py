"""Interchange records (faust.Record) and their validation.

Parsing never trusts input: ``parse_wim_reading`` / ``parse_ping`` take raw bytes or a dict and either
return a record or raise ``InvalidRecord`` with a short machine ``code`` and a human ``detail``. Agents turn
that into a dead-letter entry; batch CLIs into an error line. Field names and units are the interchange
contract that the gateway, simulators, console and reports rely on (see docs/formats.md).
"""
from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import faust
import orjson

from .pingschema import dicts_getter, validate_columns
from .timerange import PLAUSIBLE_YEARS, SAFE_YEARS, implausible, plausible_ms_range, plausible_years  # noqa: F401

BEIJING = timezone(timedelta(hours=8), "CST")

# JT/T 415 plate colours (JT/T 808-2019 adds 5 = green, new-energy).
PLATE_COLORS = {1: "蓝", 2: "黄", 3: "黑", 4: "白", 5: "绿", 9: "其他"}
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
PLATE_RE = re.compile(rf"^[{PROVINCES}][A-HJ-NP-Z][A-HJ-NP-Z0-9]{{4,5}}[A-HJ-NP-Z0-9挂学警港澳]$")
CATEGORIES = ("客运班车", "旅游包车", "危险货物运输车辆", "普通货车")
MAX_TEXT = 64


class InvalidRecord(ValueError):
    """Input that cannot become a record. ``code`` is stable (metrics label), ``detail`` is for people."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def check_plausible_time(dt: datetime, field: str = "ts", years: tuple[int, int] | None = None) -> datetime:
    """``InvalidRecord("bad_timestamp")`` unless ``dt`` lies in the plausible years (models/timerange.py)."""
    why = implausible(dt, field, years)
    if why:
        raise InvalidRecord("bad_timestamp", why)
    return dt


def parse_ts(value: Any, field: str = "ts", years: tuple[int, int] | None = None) -> datetime:
    """ISO-8601 with an explicit offset → aware datetime. Naive times are rejected: a bare local time is
    ambiguous between Beijing time (what terminals send) and UTC (what servers log). Times outside
    ``years`` are rejected too; the default only refuses years that overflow — the input parsers below pass
    the plausible years (``PLAUSIBLE_YEARS`` or the configured ``plausible_years(cfg)``)."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidRecord("bad_type", f"{field} must be an ISO-8601 string with offset")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord("bad_timestamp", f"{field} {value!r} is not ISO-8601") from None
    if dt.tzinfo is None:
        raise InvalidRecord("bad_timestamp", f"{field} {value!r} has no UTC offset")
    return check_plausible_time(dt, field, years or SAFE_YEARS)


def format_ts(dt: datetime) -> str:
    """Beijing time, ISO-8601 with offset, seconds precision (what every output carries)."""
    return _beijing_second(math.floor(dt.timestamp()))


@functools.lru_cache(maxsize=4096)
def _beijing_second(epoch_s: int) -> str:
    # memoised: a WIM reading formats "now" and its own time several times; most calls repeat a second
    return datetime.fromtimestamp(epoch_s, BEIJING).isoformat(timespec="seconds")


def epoch_ms_to_iso(ms: int) -> str:
    return _beijing_second(math.floor(ms / 1000))


def epoch_ms(dt: datetime) -> int:
    """An aware datetime → epoch milliseconds, rounded (what every ``*_ms`` field carries)."""
    return int(round(dt.timestamp() * 1000))


@functools.lru_cache(maxsize=4096)
def iso_to_epoch_ms(value: str) -> int:
    """A conversion, not a validation: the plausible-years check belongs to the parser that took the input
    (with its configured range); only years that would overflow are refused here. Memoised: most calls
    convert the same few registry dates (certificates, approvals, deployments) for every reading."""
    return epoch_ms(parse_ts(value))


def loads_object(raw: bytes | str | dict, max_bytes: int = 1_000_000) -> dict:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (bytes, bytearray, memoryview, str)) and len(raw) > max_bytes:
        raise InvalidRecord("oversized", f"record of {len(raw)} bytes exceeds {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as e:
        raise InvalidRecord("bad_json", str(e)[:120]) from None
    if not isinstance(obj, dict):
        raise InvalidRecord("bad_json", f"expected a JSON object, got {type(obj).__name__}")
    return obj


# --- field checkers -----------------------------------------------------------------------------------

def _req(d: dict, name: str) -> Any:
    if name not in d or d[name] is None:
        raise InvalidRecord("missing_field", f"{name} is required")
    return d[name]


def _num(d: dict, name: str, lo: float, hi: float, default: Any = ..., integer: bool = False) -> Any:
    v = d.get(name, default) if default is not ... else _req(d, name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRecord("bad_type", f"{name} must be a number, got {type(v).__name__}")
    if integer and not (isinstance(v, int) or float(v).is_integer()):
        raise InvalidRecord("bad_type", f"{name} must be an integer")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InvalidRecord("out_of_range", f"{name}={v} outside [{lo}, {hi}]")
    return int(v) if integer else float(v)


def _text(d: dict, name: str, default: Any = ..., max_len: int = MAX_TEXT) -> Any:
    v = d.get(name, default) if default is not ... else _req(d, name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidRecord("bad_type", f"{name} must be a string")
    if not v or len(v) > max_len:
        raise InvalidRecord("out_of_range", f"{name} must be 1–{max_len} characters")
    return v


def _bool(d: dict, name: str, default: bool) -> bool:
    v = d.get(name, default)
    if not isinstance(v, bool):
        raise InvalidRecord("bad_type", f"{name} must be true/false")
    return v


def _plate_color(d: dict) -> int:
    v = _num(d, "plate_color", 0, 99, integer=True)
    if v not in PLATE_COLORS:
        raise InvalidRecord("out_of_range", f"plate_color {v} is not a JT/T 415 code {sorted(PLATE_COLORS)}")
    return v


# --- records ----------------------------------------------------------------------------------------

class Image(faust.Record, serializer="json"):
    kind: str            # front | side | rear | video
    uri: str
    sha256: str


class WimReading(faust.Record, serializer="json"):
    """One vehicle passage over a weigh-in-motion station (masses in kg, speed km/h)."""
    station_id: str
    lane: int
    ts: str
    plate: str
    plate_color: int
    plate_confidence: float
    vehicle_kind: str     # truck (货车) | train (汽车列车)
    axle_count: int
    axle_loads_kg: list
    axle_spacings_m: list
    gross_kg: float
    speed_kmh: float
    device_id: str
    single_drive_axle: bool = False
    images: list = []
    reading_id: str = ""  # optional id from the station; de-duplication does not depend on it


def parse_wim_reading(raw: bytes | str | dict, max_bytes: int = 1_000_000, *,
                      years: tuple[int, int] | None = None) -> WimReading:
    d = loads_object(raw, max_bytes)
    ts = _text(d, "ts", max_len=40)
    parse_ts(ts, years=years or PLAUSIBLE_YEARS)
    plate = _text(d, "plate", max_len=16)
    kind = _text(d, "vehicle_kind", max_len=8)
    if kind not in ("truck", "train"):
        raise InvalidRecord("out_of_range", f"vehicle_kind must be truck or train, got {kind!r}")
    axles = _num(d, "axle_count", 2, 12, integer=True)
    loads = _req(d, "axle_loads_kg")
    if not isinstance(loads, list) or len(loads) != axles:
        raise InvalidRecord("inconsistent", f"axle_loads_kg must list {axles} loads")
    loads = [_num({"axle_load": x}, "axle_load", 0, 60_000) for x in loads]
    spacings = d.get("axle_spacings_m", [])
    if not isinstance(spacings, list) or (spacings and len(spacings) != axles - 1):
        raise InvalidRecord("inconsistent", f"axle_spacings_m must list {axles - 1} spacings")
    spacings = [_num({"axle_spacing": x}, "axle_spacing", 0.3, 20) for x in spacings]
    gross = _num(d, "gross_kg", 500, 200_000)
    if loads and abs(sum(loads) - gross) > max(50.0, 0.02 * gross):
        raise InvalidRecord("inconsistent", f"axle loads sum {sum(loads):.0f} ≠ gross_kg {gross:.0f}")
    images = d.get("images", [])
    if not isinstance(images, list) or len(images) > 16:
        raise InvalidRecord("bad_type", "images must be a list of at most 16 items")
    imgs = []
    for im in images:
        if not isinstance(im, dict):
            raise InvalidRecord("bad_type", "each image must be an object {kind, uri, sha256}")
        sha = _text(im, "sha256", max_len=64)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise InvalidRecord("bad_type", "image sha256 must be 64 lowercase hex digits")
        imgs.append(Image(kind=_text(im, "kind", max_len=16), uri=_text(im, "uri", max_len=512), sha256=sha))
    return WimReading(
        station_id=_text(d, "station_id"), lane=_num(d, "lane", 0, 32, integer=True), ts=ts,
        plate=plate, plate_color=_plate_color(d), plate_confidence=_num(d, "plate_confidence", 0, 1),
        vehicle_kind=kind, axle_count=axles, axle_loads_kg=loads, axle_spacings_m=spacings,
        gross_kg=gross, speed_kmh=_num(d, "speed_kmh", 0, 250), device_id=_text(d, "device_id"),
        single_drive_axle=_bool(d, "single_drive_axle", False), images=imgs,
        reading_id=_text(d, "reading_id", default=None) or "",
    )


class GpsPing(faust.Record, serializer="json"):
    """One position report (JT/T 808 0x0200 item) in interchange units."""
    plate: str
    plate_color: int
    terminal_id: str
    ts: str
    lat: float
    lon: float
    speed_kmh: float
    heading: int
    altitude_m: float
    alarm_flags: int = 0
    status_flags: int = 0
    reupload: bool = False
    driver_id: str | None = None
    mileage_km: float | None = None
    jt808_version: int = 0      # protocol of the terminal (2011/2013/2019); 0 = not known


def parse_ping(raw: bytes | str | dict, max_bytes: int = 1_000_000, *,
               years: tuple[int, int] | None = None) -> GpsPing:
    """Structural validation only (the one ping schema, ``models.pingschema``): a ping with well-typed fields
    is accepted even when its values are out of the regulator's range — that makes it *unqualified*
    (counted against 数据合格率), not invalid. ``ts`` may be ISO-8601 with offset or epoch ms; outside the
    plausible ``years`` (default 2000–2100) it is ``bad_timestamp``."""
    d = loads_object(raw, max_bytes)
    c, errs = validate_columns(dicts_getter([d]), 1, years=years)
    if errs:
        raise InvalidRecord(*errs[0])
    ts = d["ts"] if isinstance(d["ts"], str) else epoch_ms_to_iso(int(c.ts[0]))
    return GpsPing(
        plate=c.plate[0], plate_color=int(c.plate_color[0]), terminal_id=c.terminal_id[0], ts=ts,
        lat=float(c.lat[0]), lon=float(c.lon[0]), speed_kmh=float(c.speed_kmh[0]), heading=int(c.heading[0]),
        altitude_m=float(c.altitude_m[0]), alarm_flags=int(c.alarm_flags[0]), status_flags=int(c.status_flags[0]),
        reupload=bool(c.reupload[0]), driver_id=c.driver_id[0], mileage_km=c.mileage_km[0],
        jt808_version=int(c.jt808_version[0]) if c.jt808_version is not None else 0,
    )


class DriverEvent(faust.Record, serializer="json"):
    """JT/T 808 0x0702 driver IC card insert/remove, as published by the gateway."""
    plate: str
    terminal_id: str
    ts: str
    event: str            # login | logout
    driver_id: str = ""   # 从业资格证编号
    driver_name: str = ""


def parse_driver_event(raw: bytes | str | dict, max_bytes: int = 100_000, *,
                       years: tuple[int, int] | None = None) -> DriverEvent:
    d = loads_object(raw, max_bytes)
    ts = _text(d, "ts", max_len=40)
    parse_ts(ts, years=years or PLAUSIBLE_YEARS)
    event = _text(d, "event", max_len=8)
    if event not in ("login", "logout"):
        raise InvalidRecord("out_of_range", f"event must be login or logout, got {event!r}")
    return DriverEvent(plate=_text(d, "plate", max_len=16), terminal_id=_text(d, "terminal_id", max_len=20),
                       ts=ts, event=event, driver_id=_opt_text(d, "driver_id"),
                       driver_name=_opt_text(d, "driver_name", max_len=64))


def _opt_text(d: dict, name: str, max_len: int = MAX_TEXT) -> str:
    """An optional text field: absent, null or empty all mean "not given"."""
    return "" if d.get(name) in (None, "") else _text(d, name, max_len=max_len)


class Alert(faust.Record, serializer="json"):
    """A live alert. ``alert_id`` is deterministic (type, plate, start) so replays never duplicate."""
    alert_id: str
    type: str             # overspeed|fatigue|curfew|offline|geofence_enter|geofence_exit|terminal_alarm|overload
    plate: str
    start_ts: str
    end_ts: str | None = None
    severity: str = "medium"   # low | medium | high
    lat: float | None = None
    lon: float | None = None
    late: bool = False
    details: dict = {}


class DeadLetter(faust.Record, serializer="json"):
    source: str           # topic name, "gateway", "cli:assess-wim", …
    reason: str           # InvalidRecord.code
    detail: str
    original_b64: str     # the original bytes, base64
    ts: str               # when it was dead-lettered


# --- registry entries (the registry file, docs/formats.md) -------------------------------------------

class Enterprise(faust.Record, serializer="json"):
    enterprise_id: str
    name: str
    county: str = ""
    licence_no: str = ""        # 道路运输经营许可证号
    goods_vehicles: int = 0     # registered goods vehicles (Art. 66 10 % denominator)


class Vehicle(faust.Record, serializer="json"):
    plate: str
    plate_color: int
    category: str               # one of CATEGORIES
    enterprise_id: str
    owner: str = ""
    transport_cert_no: str = ""  # 道路运输证号
    county: str = ""
    vehicle_kind: str = "truck"  # truck | train | bus
    axle_count: int = 2
    registered_total_kg: float = 0.0     # 行驶证 总质量
    rated_load_kg: float = 0.0           # 核定载质量
    curb_kg: float = 0.0
    single_tyre_axles: int = 0           # non-drive axles with single tyres (no wide-base)
    air_suspension: bool = False
    single_drive_axle: bool = False
    long_distance: bool = False          # 长途客运 (curfew applies)
    route_km: float = 0.0
    driver_id: str = ""                  # registry assignment (fallback when no IC card event)
    terminal_id: str = ""
    in_network: bool = True              # 入网 on the platform
    home_agency: str = ""                # 车籍地 transport agency id (抄告, models/notices.py); "" = by plate prefix


class Driver(faust.Record, serializer="json"):
    driver_id: str
    name: str
    enterprise_id: str = ""
    qualification_no: str = ""   # 从业资格证编号


class SourceSite(faust.Record, serializer="json"):
    site_id: str
    name: str
    kind: str = ""               # coal | cement | sand | steel | station …
    polygon: list = []           # [[lon, lat], …] closed ring


class Zone(faust.Record, serializer="json"):
    zone_id: str
    name: str
    kind: str = "restricted"     # restricted | expressway
    polygon: list = []
    categories: list = []        # empty = every category


class Station(faust.Record, serializer="json"):
    station_id: str
    name: str
    lat: float
    lon: float
    lanes: int = 2
    accuracy_class: str = "5"
    tolerance: float | None = None       # per-station filing tolerance; None = config default
    tolerance_source: str = ""
    devices: list = []                   # [{device_id, cert_no, valid_from, valid_to}]
    county: str = ""
    # wim: 非现场执法点 (weighs, nobody on site); checkpoint: 超限检测站 (officers can stop and unload a truck)
    kind: str = "wim"
    downstream: list = []                # the road graph: [{"station": id, "km": road distance}] (models/intercept.py)


class MobileUnit(faust.Record, serializer="json"):
    """A mobile weighing unit (流动治超): one device, no fixed place — its position, road and direction at a
    reading's time come from the deployment active then (models/mobile.py)."""
    unit_id: str
    name: str
    county: str = ""                     # the county the unit is based in
    lanes: int = 1
    accuracy_class: str = "5"
    tolerance: float | None = None
    tolerance_source: str = ""
    device: dict = {}                    # {device_id, cert_no, valid_from, valid_to, approval, …} as a station's
    deployments: list = []               # [{deployment_id, lat, lon, road, direction, start, end, …}]

    @property
    def station_id(self) -> str:
        """A reading names the unit in its ``station_id``: the unit stands where a station would."""
        return self.unit_id
