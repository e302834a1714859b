"""抄告 (62号令 2016 Art. 44): the notice of a closed over-limit case to the vehicle's home transport agency, and
notices received from other agencies. Pure: no I/O; docs/legal-basis.md §9.5.

- ``build`` turns a closed case (``CaseStore.show``) into the notice: every item Art. 44 lists — (1) vehicle:
  plate, type, owner, owning enterprise, 道路运输证号; (2) driver: name, 从业资格证编号, employer; (3) 货运源头单位
  and 货物装载单; (4) the 行政处罚决定书; (5) other material (the measurement and the evidence package) — with
  ``null`` where the case does not know an item, never a made-up value.
- ``due_on``: the closure date plus ``notices.due_working_days`` working days of the configured calendar
  (models/publication.py); ``overdue``: not sent and the due day has passed.
- Agencies (``parse_agencies``): the known transport agencies, each with the plate prefixes of its area
  (车籍地) and its Ed25519 public key. A notice travels as a signed envelope (``sign`` / ``open_envelope``):
  canonical JSON bytes of the notice, the sender's agency id and an Ed25519 signature by the sender's key. An
  inbound notice is accepted only from a known agency whose key verifies the signature, addressed to us, and
  complete (``validate``); ``case_facts`` makes a valid one count for 条例 Art. 66 like a case of our own.
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .art66 import CaseFacts
from .config import Config
from .documents import KIND_CODES
from .lifecycle import Act
from .publication import add_working_days

SCHEMA = "roadwatch.agency-notice/1"
ENVELOPE_SCHEMA = "roadwatch.agency-notice-envelope/1"
BASIS = "《超限运输车辆行驶公路管理规定》（交通运输部令2016年第62号）第四十四条"
AGENCY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_NOTICE_BYTES = 256 * 1024
# the items every notice carries (values may be null when the case does not know them); an inbound notice
# lacking one of these keys is malformed
SECTIONS = {
    "vehicle": ("plate", "plate_color", "kind", "category", "axle_count", "owner", "enterprise", "transport_cert_no"),
    "driver": ("id", "name", "qualification_no", "enterprise", "identified"),
    "source": ("site_id", "name", "loading_bill"),
    "decision": ("doc_no", "decided_on", "penalty", "fine_yuan", "basis", "authority", "served_on", "closed_on"),
    "violation": ("ts", "station", "gross_kg", "limit_kg", "excess_kg", "excess_pct"),
}
TOP = ("schema", "notice_id", "case_id", "from_agency", "to_agency", "issued_on", "due_on", "basis")


class NoticeError(ValueError):
    """``code``: malformed | unknown_agency | bad_signature | not_for_us | not_closed | bad_agencies."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


# --- agencies ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agency:
    agency_id: str
    name: str
    plates: tuple[str, ...]            # plate prefixes of its area (车籍地), e.g. ("湘B",)
    public_key: Ed25519PublicKey | None  # verifies its notices; None for an agency we only send to

    def key_id(self) -> str | None:
        if self.public_key is None:
            return None
        return hashlib.sha256(self.public_key.public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)).hexdigest()


def parse_public_key(text: str, where: str) -> Ed25519PublicKey:
    """A PEM public key, or the raw 32 key bytes in base64."""
    try:
        if text.lstrip().startswith("-----BEGIN "):   # a PEM block
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        raise NoticeError("bad_agencies", f"{where}: public_key is not an Ed25519 public key (PEM or base64)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise NoticeError("bad_agencies", f"{where}: public_key is not an Ed25519 key")
    return key


def parse_agencies(data: dict, where: str = "agencies") -> dict[str, Agency]:
    """``[[agency]]`` tables: agency_id, name, plates (prefixes), public_key (optional)."""
    rows = data.get("agency", [])
    if not isinstance(rows, list):
        raise NoticeError("bad_agencies", f"{where}: expected [[agency]] tables")
    out: dict[str, Agency] = {}
    prefixes: dict[str, str] = {}
    for i, row in enumerate(rows, 1):
        w = f"{where} agency #{i}"
        if not isinstance(row, dict):
            raise NoticeError("bad_agencies", f"{w}: expected a table")
        unknown = set(row) - {"agency_id", "name", "plates", "public_key"}
        if unknown:
            raise NoticeError("bad_agencies", f"{w}: unknown keys {sorted(unknown)}")
        aid = row.get("agency_id")
        if not isinstance(aid, str) or not AGENCY_ID_RE.match(aid):
            raise NoticeError("bad_agencies", f"{w}: agency_id must be 1–64 letters, digits, '_', '.', '-'")
        if aid in out:
            raise NoticeError("bad_agencies", f"{w}: agency_id {aid!r} listed twice")
        name = row.get("name")
        if not isinstance(name, str) or not name.strip():
            raise NoticeError("bad_agencies", f"{w}: name is required")
        plates = row.get("plates", [])
        if not isinstance(plates, list) or any(not isinstance(p, str) or not 1 <= len(p) <= 7 for p in plates):
            raise NoticeError("bad_agencies", f"{w}: plates must be a list of plate prefixes (e.g. [\"湘B\"])")
        for p in plates:
            if p in prefixes:
                raise NoticeError("bad_agencies", f"{w}: plate prefix {p!r} already belongs to {prefixes[p]}")
            prefixes[p] = aid
        key = row.get("public_key")
        if key is not None and not isinstance(key, str):
            raise NoticeError("bad_agencies", f"{w}: public_key must be a string")
        out[aid] = Agency(aid, name.strip(), tuple(plates), parse_public_key(key, w) if key else None)
    return out


def home_agency(plate: str, registered: str | None, agencies: dict[str, Agency]) -> str | None:
    """The vehicle's home agency: the registry's ``home_agency`` when set, else the agency whose plate prefix
    (车籍地) is the longest match of the plate; None when neither knows."""
    if registered:
        return registered
    best = None
    for a in agencies.values():
        for p in a.plates:
            if plate.startswith(p) and (best is None or len(p) > best[0]):
                best = (len(p), a.agency_id)
    return best[1] if best else None


# --- outbound -----------------------------------------------------------------------------------------------

def notice_id(case_id: str) -> str:
    return "N" + case_id


def due_on(closed_on: date, cfg: Config) -> date:
    return add_working_days(closed_on, int(cfg["notices.due_working_days"]), cfg)


def overdue(due: str, sent_at: str | None, today: date) -> bool:
    """Not sent and the due day is over (sent on the due day is in time)."""
    return sent_at is None and date.fromisoformat(due) < today


def _day(iso: str | None) -> str | None:
    return datetime.fromisoformat(iso).date().isoformat() if iso else None


def build(case: dict, cfg: Config, to_agency: str | None) -> dict:
    """The Art. 44 notice of a closed case. Raises NoticeError(not_closed) for any other case."""
    if case.get("status") != "closed":
        raise NoticeError("not_closed", f"a 抄告 is made when the case is closed; {case.get('case_id')} is "
                                        f"{case.get('status')}")
    m = case.get("manifest") or {}
    tg = m.get("targets") or {}
    veh, ent, drv_m = tg.get("vehicle") or {}, tg.get("enterprise") or {}, tg.get("driver") or {}
    src = tg.get("source_site") or {}
    liable = (case.get("liable") or {}).get("driver") or {}
    acts = {h["act"]: h for h in case.get("history") or []}
    decided = _day(acts["decide"]["at"])
    closed = _day(acts["close"]["at"])
    rp = (m.get("penalties") or {}).get("road_administration") or {}
    fine = int(case.get("fine_yuan") or 0)
    identified = bool(liable.get("identified"))
    same_driver = identified and liable.get("id") == drv_m.get("id")
    site, plate_m, vm = m.get("site") or {}, m.get("plate") or {}, m.get("vehicle") or {}
    return {
        "schema": SCHEMA, "notice_id": notice_id(case["case_id"]), "case_id": case["case_id"],
        "from_agency": cfg["notices.own_agency_id"], "from_agency_name": cfg["documents.agency_name"],
        "to_agency": to_agency, "issued_on": closed,
        "due_on": due_on(date.fromisoformat(closed), cfg).isoformat(), "basis": BASIS,
        "vehicle": {"plate": case["plate"], "plate_color": plate_m.get("color"), "kind": vm.get("kind"),
                    "category": vm.get("category"), "axle_count": vm.get("axle_count"),
                    "owner": veh.get("owner"), "enterprise": ent.get("name"), "enterprise_id": ent.get("id"),
                    "enterprise_licence_no": ent.get("licence_no"), "goods_vehicles": ent.get("goods_vehicles"),
                    "transport_cert_no": veh.get("transport_cert_no") or ent.get("vehicle_transport_cert_no")},
        "driver": {"id": liable.get("id") if identified else None,
                   "name": drv_m.get("name") if same_driver else None,
                   "qualification_no": drv_m.get("qualification_no") if same_driver else None,
                   "enterprise": drv_m.get("enterprise_id") if same_driver else None,
                   "identified": identified},
        "source": {"site_id": src.get("site_id") or case.get("source_site_id"), "name": src.get("name"),
                   "loading_bill": None},      # 货物装载单: not recorded by weigh-in-motion
        "decision": {"doc_no": f"{cfg['documents.number_prefix']}{KIND_CODES['decision']}〔{decided[:4]}〕"
                               f"{case['case_id']}号",
                     "decided_on": decided, "penalty": f"罚款人民币 {fine:,} 元" if fine else "警告",
                     "fine_yuan": fine, "basis": rp.get("basis"), "authority": cfg["documents.agency_name"],
                     "served_on": _day((acts.get("serve") or {}).get("at")), "closed_on": closed},
        "violation": {"ts": (m.get("time") or {}).get("ts") or case.get("ts"),
                      "station": site.get("name") or case.get("station_id"),
                      "gross_kg": (m.get("measurement") or {}).get("gross_kg"),
                      "limit_kg": (m.get("limit") or {}).get("limit_kg"),
                      "excess_kg": (m.get("excess") or {}).get("kg"), "excess_pct": (m.get("excess") or {}).get("pct")},
        "evidence": {"package": case["case_id"], "chain_id": (m.get("chain") or {}).get("chain_id"),
                     "documents": [d.get("kind") for d in case.get("documents") or []]},
    }


# --- envelopes ----------------------------------------------------------------------------------------------

def canonical(notice: dict) -> bytes:
    return orjson.dumps(notice, option=orjson.OPT_SORT_KEYS)


def sign(notice: dict, private: Ed25519PrivateKey, key_id: str) -> dict:
    body = canonical(notice)
    return {"schema": ENVELOPE_SCHEMA, "from_agency": notice["from_agency"], "key_id": key_id,
            "notice": notice, "signature": base64.b64encode(private.sign(body)).decode("ascii")}


def validate(notice) -> None:
    """Every required key present with the right shape (values of the Art. 44 items may be null)."""
    if not isinstance(notice, dict):
        raise NoticeError("malformed", "the notice is not a JSON object")
    if notice.get("schema") != SCHEMA:
        raise NoticeError("malformed", f"schema must be {SCHEMA!r}")
    missing = [k for k in TOP if k not in notice]
    for sec, keys in SECTIONS.items():
        part = notice.get(sec)
        if not isinstance(part, dict):
            missing.append(sec)
            continue
        missing += [f"{sec}.{k}" for k in keys if k not in part]
    if missing:
        raise NoticeError("malformed", f"missing field(s) {missing}")
    for k in ("notice_id", "case_id", "from_agency", "to_agency"):
        if not isinstance(notice[k], str) or not notice[k] or len(notice[k]) > 80:
            raise NoticeError("malformed", f"{k} must be a non-empty string")
    plate = notice["vehicle"]["plate"]
    if not isinstance(plate, str) or not 5 <= len(plate) <= 12:
        raise NoticeError("malformed", "vehicle.plate must be a plate number")
    for k in ("decided_on", "closed_on"):
        try:
            date.fromisoformat(notice["decision"][k])
        except (TypeError, ValueError):
            raise NoticeError("malformed", f"decision.{k} must be a YYYY-MM-DD date") from None
    if notice["decision"]["closed_on"] < notice["decision"]["decided_on"]:
        raise NoticeError("malformed", "decision.closed_on precedes decision.decided_on")
    if not isinstance(notice["driver"]["identified"], bool):
        raise NoticeError("malformed", "driver.identified must be true or false")


def open_envelope(raw: bytes, agencies: dict[str, Agency], own_agency: str) -> dict:
    """The notice inside a signed envelope from a known agency, addressed to ``own_agency``; NoticeError
    (malformed, unknown_agency, bad_signature, not_for_us) otherwise."""
    if len(raw) > MAX_NOTICE_BYTES:
        raise NoticeError("malformed", f"larger than {MAX_NOTICE_BYTES} bytes")
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise NoticeError("malformed", f"not JSON: {e}") from None
    if not isinstance(env, dict) or env.get("schema") != ENVELOPE_SCHEMA:
        raise NoticeError("malformed", f"not a signed notice envelope ({ENVELOPE_SCHEMA})")
    sender = env.get("from_agency")
    agency = agencies.get(sender) if isinstance(sender, str) else None
    if agency is None:
        raise NoticeError("unknown_agency", f"sender {str(sender)[:64]!r} is not a known agency")
    if agency.public_key is None:
        raise NoticeError("unknown_agency", f"no public key on file for agency {sender!r}")
    notice = env.get("notice")
    sig = env.get("signature")
    try:
        raw_sig = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except ValueError:
        raw_sig = b""
    if not isinstance(notice, dict) or not raw_sig:
        raise NoticeError("bad_signature", "no notice or no signature in the envelope")
    try:
        agency.public_key.verify(raw_sig, canonical(notice))
    except InvalidSignature:
        raise NoticeError("bad_signature", f"the signature does not verify with {sender}'s key") from None
    validate(notice)
    if notice["from_agency"] != sender:
        raise NoticeError("bad_signature", "the notice names another sender than its envelope")
    if notice["to_agency"] != own_agency:
        raise NoticeError("not_for_us", f"addressed to {notice['to_agency']!r}, not to {own_agency!r}")
    return notice


def case_facts(notice: dict, enterprise_id: str | None = None, goods_vehicles: int | None = None) -> CaseFacts:
    """A received notice as an Art. 66 case: decided on its decision date, served and closed on its dates;
    its driver counts only when the sending agency identified the driver. ``enterprise_id`` /
    ``goods_vehicles``: our registry's enterprise of the vehicle (the sender's ids are its own)."""
    d = notice["decision"]
    cid = f"{notice['from_agency']}:{notice['case_id']}"
    at = {k: f"{d[k]}T00:00:00+08:00" for k in ("decided_on", "closed_on")}
    served = f"{d['served_on']}T00:00:00+08:00" if d.get("served_on") else at["closed_on"]
    acts = [Act(cid, a, notice["from_agency"], at["decided_on"], at["decided_on"])
            for a in ("confirm", "file", "notify", "decide")]
    acts += [Act(cid, "serve", notice["from_agency"], served, served),
             Act(cid, "close", notice["from_agency"], at["closed_on"], at["closed_on"], reason="抄告")]
    drv = notice["driver"]
    gv = goods_vehicles if goods_vehicles is not None else notice["vehicle"].get("goods_vehicles")
    return CaseFacts(case_id=cid, plate=notice["vehicle"]["plate"],
                     enterprise_id=enterprise_id or notice["vehicle"].get("enterprise_id"),
                     goods_vehicles=gv if isinstance(gv, int) and not isinstance(gv, bool) else None,
                     driver_id=drv["id"] if drv["identified"] and drv.get("id") else None,
                     driver_source="officer" if drv["identified"] and drv.get("id") else "unknown", acts=acts)
