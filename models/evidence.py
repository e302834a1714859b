"""Evidence packages for overload cases: manifest, artefacts, hash chain, Ed25519 signature.

Layout (docs/evidence.md)::

    <evidence_dir>/<case_id>/manifest.json   every §4.5 field we can fill + SHA-256 of every artefact
    <evidence_dir>/<case_id>/manifest.sig    {"alg": "Ed25519", "key_id", "signature"} over manifest bytes
    <evidence_dir>/<case_id>/reading.json    the WIM reading as received (parsed record)
    <evidence_dir>/<case_id>/images/…        copies of station images held locally (hash-checked)
    <evidence_dir>/<case_id>/track.geojson   GPS track from the loading stop to the weighing
    <evidence_dir>/chain-<chain_id>.jsonl    append-only: one link per package of that chain

Each manifest names the previous manifest's SHA-256 in its chain; each chain link carries its own
``link_sha256`` so a flipped byte in a link is detected. Chains are per ``chain_id`` (one per worker /
partition) so writers never race; a chain file is also ``flock``-ed while a package is added (for a whole
batch by ``PackageBatch``, which writes a batch's packages on a thread).

Writing a package whose case directory exists is a no-op. Key material is never logged.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .records import PLATE_COLORS, WimReading, format_ts

try:        # the package writer without the interpreter lock (models/_evidence_io.c); optional
    from . import _evidence_io as _NATIVE
except ImportError:                     # no C compiler at install time: the Python writer
    _NATIVE = None

MANIFEST_SCHEMA = "roadwatch.evidence/1"
ENTRY_SCHEMA = "roadwatch.evidence-entry/1"
HEAD_SCHEMA = "roadwatch.chain-head/1"
KEY_ENV = "ROADWATCH_SIGNING_KEY_FILE"
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
CHAIN_SYNC = ("each", "behind")     # config ``evidence.chain_sync``: when a chain append reaches the disk
log = logging.getLogger("roadwatch.evidence")


class EvidenceError(ValueError):
    pass


class NotAPackage(EvidenceError):
    """The path is not an evidence package (or tree of them)."""


def _tmp_beside(path: Path) -> Path:
    """The temporary name a file or folder is written under before it is renamed to ``path`` (this process's)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- keys -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    key_id: str

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_bytes(raw)


def _publish(public: Ed25519PublicKey, trusted_dir: Path) -> str:
    kid = key_id_of(public)
    if not trusted_dir.is_dir():
        trusted_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(trusted_dir, 0o755)           # never group/world-writable, whatever the umask
    p = trusted_dir / f"{kid}.pub"
    if not p.exists():
        p.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
        os.chmod(p, 0o644)
    return kid


def check_trusted_dir(trusted_dir: str | os.PathLike) -> Path:
    """The trusted-keys folder, refused (EvidenceError) when anyone but its owner could drop a key into it:
    group/world-writable, or owned by another user than us or root. Key files are checked the same way
    when they are read (``load_trusted_key``)."""
    d = Path(trusted_dir)
    try:
        st = d.stat()
    except OSError:
        raise EvidenceError(f"trusted keys folder {d} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise EvidenceError(f"trusted keys folder {d} is not a directory")
    if st.st_mode & 0o022:
        raise EvidenceError(f"trusted keys folder {d} is group- or world-writable (mode "
                            f"{stat.S_IMODE(st.st_mode):03o}): anyone could add a key; refusing to trust it")
    if st.st_uid not in (0, os.geteuid()):
        raise EvidenceError(f"trusted keys folder {d} belongs to another user (uid {st.st_uid}); refusing to trust it")
    return d


def load_signing_key(data_dir: str | os.PathLike, env: dict | None = None) -> SigningKey:
    """``$ROADWATCH_SIGNING_KEY_FILE`` (must exist) or ``<data_dir>/keys/evidence-ed25519.pem`` (created with
    mode 0600 on first use). The public key is published to ``<data_dir>/keys/trusted/<key_id>.pub``."""
    env = os.environ if env is None else env
    data_dir = Path(data_dir)
    given = env.get(KEY_ENV)
    path = Path(given) if given else data_dir / "keys" / "evidence-ed25519.pem"
    if not path.exists():
        if given:
            raise EvidenceError(f"{KEY_ENV} names a file that does not exist: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # written whole under a temporary name, then linked into place: a write that fails (disk full) must
        # not leave an empty key file that no later attempt can load; a link never replaces a key another
        # process made meanwhile (theirs is used)
        tmp = _tmp_beside(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise EvidenceError(f"cannot load signing key {path}: {type(e).__name__}") from None  # no key bytes
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"signing key {path} is not an Ed25519 key")
    kid = _publish(key.public_key(), data_dir / "keys" / "trusted")
    return SigningKey(private=key, key_id=kid)


def load_trusted_key(trusted_dir: Path, key_id: str) -> Ed25519PublicKey | None:
    if not re.fullmatch(r"[0-9a-f]{64}", key_id or ""):
        return None
    p = Path(trusted_dir) / f"{key_id}.pub"
    try:
        st = p.stat()
        if st.st_mode & 0o022 or st.st_uid not in (0, os.geteuid()):
            return None                          # a key file others could replace is not trusted
        data = p.read_bytes()
    except OSError:
        return None
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            pub = Ed25519PublicKey.from_public_bytes(data)
        except ValueError:
            return None
    if not isinstance(pub, Ed25519PublicKey) or key_id_of(pub) != key_id:
        return None
    return pub


# --- manifest -----------------------------------------------------------------------------------------------

def _local_image_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        u = urlparse(uri)
        if u.netloc not in ("", "localhost"):
            return None
        return Path(unquote(u.path))
    if "://" in uri:
        return None
    return Path(uri)


def _hold_image(im, i: int) -> tuple[dict, bytes | None]:
    """The manifest's entry for a station image, and the bytes to hold: a local image is held only when its
    content matches the station's declared SHA-256 (the station vouches for the bytes, and a reading cannot
    make us copy arbitrary local files). The bytes hashed are the bytes held: they are read once."""
    entry = {"kind": im.kind, "uri": im.uri, "declared_sha256": im.sha256}
    src = _local_image_path(im.uri)
    if src is None:
        return {**entry, "held": False, "sha256": im.sha256, "note": "referenced, not held (remote URI)"}, None
    try:
        st = src.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_IMAGE_BYTES:
            raise OSError("not a regular file of acceptable size")
        with open(src, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise OSError("grew past the acceptable size")
    except OSError:
        return {**entry, "held": False, "sha256": im.sha256, "note": "referenced, not held (not readable)"}, None
    actual = sha256_bytes(data)
    if actual != im.sha256:
        return {**entry, "held": False, "sha256": im.sha256, "actual_sha256": actual,
                "note": "referenced, not held: file content does not match the declared sha256"}, None
    ext = (src.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", src.suffix.lower()) else ".bin")
    name = f"images/{i:02d}-{re.sub(r'[^a-z0-9]', '', im.kind.lower())[:12] or 'image'}{ext}"
    return {**entry, "held": True, "path": name, "sha256": actual}, data


def build_manifest(verdict: dict, reading: WimReading) -> dict:
    """Every §4.5 field that the verdict (which carries the registry facts) and the reading can fill.
    Artefacts, chain and signing blocks are added by ``write_package``."""
    st = verdict.get("station") or {}
    veh = verdict.get("vehicle") or {}
    ent = verdict.get("enterprise") or {}
    cal = verdict.get("calibration") or {}
    drv = verdict.get("driver") or {}
    return {
        "schema": MANIFEST_SCHEMA,
        "case_id": verdict["case_id"], "passage_id": verdict["passage_id"],
        "site": {
            "station_id": reading.station_id, "name": st.get("name"), "lat": st.get("lat"), "lon": st.get("lon"),
            "county": st.get("county"), "device_id": reading.device_id, "accuracy_class": st.get("accuracy_class"),
            "certificate_no": cal.get("cert_no"), "certificate_valid_from": cal.get("valid_from"),
            "certificate_valid_to": cal.get("valid_to"), "calibration_status": cal.get("status"),
            "device_approval": verdict.get("device_approval"),
            # a mobile unit (流动治超): the deployment that places the reading (models/mobile.py)
            **({"deployment": verdict["deployment"]} if verdict.get("deployment") else {}),
        },
        "time": {"ts": verdict["ts"], "clock": "station device clock"},
        "lane": reading.lane, "direction": (verdict.get("deployment") or {}).get("direction"),
        "speed_kmh": reading.speed_kmh,
        "plate": {"number": reading.plate, "color": reading.plate_color,
                  "color_name": PLATE_COLORS.get(reading.plate_color), "confidence": reading.plate_confidence},
        "vehicle": {
            "kind": reading.vehicle_kind, "category": veh.get("category"),
            "axle_count": reading.axle_count, "axle_loads_kg": list(reading.axle_loads_kg),
            "axle_spacings_m": list(reading.axle_spacings_m),
            "axle_groups": verdict.get("axle_groups"),
            "single_drive_axle": veh.get("single_drive_axle", reading.single_drive_axle),
            "single_tyre_axles": veh.get("single_tyre_axles"), "air_suspension": veh.get("air_suspension"),
        },
        "measurement": {"gross_kg": verdict["gross_kg"], "assessed_gross_kg": verdict["assessed_gross_kg"]},
        "limit": {"limit_kg": verdict["limit_kg"], "basis": verdict["limit_basis"],
                  "version": verdict["limit_version"], "adjustments": verdict["limit_adjustments"]},
        "tolerance": {"value": verdict["tolerance"], "source": verdict["tolerance_source"],
                      "mode": verdict["tolerance_mode"], "filing_threshold_kg": verdict["filing_threshold_kg"]},
        "excess": {"kg": verdict["excess_kg"], "pct": verdict["excess_pct"], "over_limit": verdict["over_limit"]},
        "decision": {"action": verdict["action"], "fine_yuan": verdict["fine_yuan"],
                     "review_reasons": verdict.get("review_reasons") or []},
        "penalties": {"road_administration": verdict.get("road_penalty"), "police": verdict.get("police")},
        "axle_findings": verdict.get("axle_findings") or [],
        "counters": verdict.get("counters"), "permit": verdict.get("permit"),
        "targets": {
            "vehicle": {"plate": reading.plate, "owner": veh.get("owner"),
                        "transport_cert_no": veh.get("transport_cert_no"),
                        "registered_total_kg": veh.get("registered_total_kg"),
                        "rated_load_kg": veh.get("rated_load_kg"), "home_agency": veh.get("home_agency")},
            "driver": {"id": drv.get("id"), "source": drv.get("source"), "name": drv.get("name"),
                       "qualification_no": drv.get("qualification_no"), "enterprise_id": drv.get("enterprise_id")},
            "enterprise": {"id": ent.get("id"), "name": ent.get("name"), "licence_no": ent.get("licence_no"),
                           "goods_vehicles": ent.get("goods_vehicles"),
                           "vehicle_transport_cert_no": veh.get("transport_cert_no")},
            "source_site": verdict.get("source_site"),
        },
        "review_trail": {"entries": [], "note": "review, confirmation, dismissal and notification are "
                                                "recorded in the archive's case_actions table"},
    }


# --- writing ------------------------------------------------------------------------------------------------

def _chain_path(evidence_dir: Path, chain_id: str) -> Path:
    return evidence_dir / f"chain-{chain_id}.jsonl"


def _link_hash(link: dict) -> str:
    body = {k: v for k, v in link.items() if k != "link_sha256"}
    return sha256_bytes(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def _read_links(path: Path) -> list:
    """Raw lines of a chain file: each parsed dict, or the raw bytes when unparseable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            out.append(obj if isinstance(obj, dict) else line)
        except orjson.JSONDecodeError:
            out.append(line)
    return out


@dataclass
class _Tail:
    """What the next link of a chain needs (its last link, how many links, the root) and the file state it was
    read from: a chain file that changed since (another process appended, someone edited it) is read again."""
    stamp: tuple | None     # None: planned, not yet written
    count: int              # links (what the signed head counts)
    lines: int              # non-empty lines, links or not (the archive numbers a chain's lines)
    last: dict | None
    root: str | None


_TAILS: dict[str, _Tail] = {}      # this process's view of the chain files it appends to
_TAILS_LOCK = threading.Lock()


def _stamp(fd: int) -> tuple:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _chain_tail(chain, path: Path) -> _Tail:
    """The tail of the (locked) chain file: from memory when the file is as this process left it, else read
    once. Reading the whole file for every package made each case's cost grow with its chain."""
    stamp = _stamp(chain.fileno())
    with _TAILS_LOCK:
        t = _TAILS.get(str(path))
    if t is not None and t.stamp == stamp:
        return t
    lines = _read_links(path)
    links = [ln for ln in lines if isinstance(ln, dict)]
    first = lines[0] if lines and isinstance(lines[0], dict) else None
    return _Tail(stamp, len(links), len(lines), links[-1] if links else None,
                 first.get("link_sha256") if first else None)


def _remember_tail(chain, path: Path, tail: _Tail) -> None:
    """``tail`` is the chain file's tail as it is now (after this process appended to it)."""
    tail.stamp = _stamp(chain.fileno())
    with _TAILS_LOCK:
        _TAILS[str(path)] = tail


class _SyncBehind:
    """``fsync`` of appended chain files on one background thread, soon after the append: the append itself
    (written and flushed to the kernel under the chain's lock) survives a crash of the process at once; the
    background sync bounds what a power loss could take to the last few milliseconds — as SQLite's
    ``synchronous=NORMAL`` archive does for the case rows (docs/evidence.md "Durability")."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self.failures = 0

    def schedule(self, path: Path) -> None:
        key = str(path)
        with self._lock:
            if key in self._pending:
                return                               # a sync not started yet covers this append too
            self._pending.add(key)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-sync")
            self._pool.submit(self._sync, key)

    def _sync(self, key: str) -> None:
        with self._lock:
            self._pending.discard(key)               # appends from now on schedule another sync
        try:
            fd = os.open(key, os.O_RDONLY)
            try:
                os.fsync(fd)                         # any descriptor of the file flushes its pages
            finally:
                os.close(fd)
        except OSError as err:
            self.failures += 1
            log.error("fsync of evidence chain %s failed: %s", key, err)

    def wait(self) -> None:
        """Until every scheduled sync has run (tests; a clean shutdown)."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.submit(lambda: None).result()


SYNC_BEHIND = _SyncBehind()


def _seal_link(link: dict) -> bytes:
    """Set ``link``'s own hash; returns its line (without the newline)."""
    link["link_sha256"] = _link_hash(link)
    return orjson.dumps(link, option=orjson.OPT_SORT_KEYS)


def _write_line(f, path: Path, line: bytes, sync: str) -> None:
    """Append a sealed link's line to the locked chain file ``f``."""
    f.seek(0, os.SEEK_END)
    f.write(line + b"\n")
    f.flush()
    if sync == "each":
        os.fsync(f.fileno())
    else:
        SYNC_BEHIND.schedule(path)


@dataclass
class WrittenPackage:
    """What ``write_package_files`` wrote, so the caller can archive it without reading it back: the package's
    files, and — when this call appended it — the chain link (its line, its line number in the chain file, the
    chain's root: the first line's ``link_sha256``, None when that line is unreadable) and the signed head
    with the count it signs."""
    path: Path
    files: list[tuple[str, bytes]] = field(default_factory=list)
    chain_line: bytes | None = None
    line_no: int | None = None
    root: str | None = None
    head: bytes | None = None
    head_count: int | None = None


@dataclass
class _Plan:
    """A package computed in memory — every file's bytes, its chain line and the re-signed head — before any
    of it is written (``_write_plan``): planning needs the chain's tail, writing only the disk."""
    tmp: Path
    written: WrittenPackage
    link: dict
    tail: _Tail              # the chain's tail once the line is appended (its stamp is set after the write)
    head_path: Path
    sync: str


def write_package(evidence_dir: str | os.PathLike, verdict: dict, reading: WimReading, *,
                  chain_id: str, key: SigningKey, sync: str) -> Path:
    """Write (once) the package of ``verdict["case_id"]``; returns its directory. ``sync``: ``evidence.chain_sync``."""
    return write_package_files(evidence_dir, verdict, reading, chain_id=chain_id, key=key, sync=sync).path


def write_package_files(evidence_dir: str | os.PathLike, verdict: dict, reading: WimReading, *,
                        chain_id: str, key: SigningKey, sync: str,
                        batch: "PackageBatch | None" = None) -> WrittenPackage:
    """``write_package``, returning what was written (``WrittenPackage``; no files when the package existed).
    With ``batch`` the files are written on its thread: on disk once ``batch.flush()`` has returned."""
    evidence_dir = Path(evidence_dir)
    case_id = verdict.get("case_id")
    if not case_id or not _ID_RE.match(case_id):
        raise EvidenceError(f"verdict has no usable case_id: {case_id!r}")
    if not _ID_RE.match(chain_id):
        raise EvidenceError(f"chain_id must match {_ID_RE.pattern}: {chain_id!r}")
    if sync not in CHAIN_SYNC:
        raise EvidenceError(f"chain sync must be one of {CHAIN_SYNC}: {sync!r}")
    final = evidence_dir / case_id
    if (final / "manifest.json").exists():
        return WrittenPackage(final)
    if batch is not None:
        return batch.write(evidence_dir, final, verdict, reading, chain_id, key, sync)
    evidence_dir.mkdir(parents=True, exist_ok=True)
    chain_path = _chain_path(evidence_dir, chain_id)
    with open(chain_path, "ab+") as chain:
        fcntl.flock(chain.fileno(), fcntl.LOCK_EX)
        if (final / "manifest.json").exists():          # written meanwhile by another process
            return WrittenPackage(final)
        plan = _plan_package(evidence_dir, final, verdict, reading, chain_id, key, sync,
                             _chain_tail(chain, chain_path))
        _write_plan(plan, chain, chain_path)
        _remember_tail(chain, chain_path, plan.tail)
    return plan.written


def _plan_package(evidence_dir: Path, final: Path, verdict: dict, reading: WimReading, chain_id: str,
                  key: SigningKey, sync: str, tail: _Tail) -> _Plan:
    """The package of ``verdict`` as the next link after ``tail``, in memory."""
    case_id = final.name
    files: list[tuple[str, bytes]] = []
    artefacts = []
    rd = reading.asdict()
    rd["images"] = [im.asdict() if hasattr(im, "asdict") else im for im in reading.images]
    reading_bytes = orjson.dumps(rd, option=_DUMP)
    files.append(("reading.json", reading_bytes))
    artefacts.append({"kind": "reading", "path": "reading.json", "held": True, "sha256": sha256_bytes(reading_bytes)})
    for i, im in enumerate(reading.images):
        a, data = _hold_image(im, i)
        artefacts.append(a)
        if data is not None:
            files.append((a["path"], data))
    if verdict.get("track_excerpt"):
        tb = orjson.dumps(verdict["track_excerpt"], option=_DUMP)
        files.append(("track.geojson", tb))
        artefacts.append({"kind": "track", "path": "track.geojson", "held": True, "sha256": sha256_bytes(tb)})
    prev = tail.last
    manifest = build_manifest(verdict, reading)
    manifest["artefacts"] = artefacts
    manifest["created_at"] = format_ts(datetime.now(timezone.utc))
    manifest["chain"] = {"chain_id": chain_id, "seq": (int(prev.get("seq", 0)) + 1) if prev else 1,
                         "prev_manifest_sha256": prev.get("manifest_sha256") if prev else None}
    manifest["signing"] = {"alg": "Ed25519", "key_id": key.key_id}
    mbytes = orjson.dumps(manifest, option=_DUMP) + b"\n"
    sig = {"alg": "Ed25519", "key_id": key.key_id, "signature": base64.b64encode(key.sign(mbytes)).decode("ascii")}
    sbytes = orjson.dumps(sig, option=_DUMP) + b"\n"
    files += [("manifest.json", mbytes), ("manifest.sig", sbytes)]
    link = {"seq": manifest["chain"]["seq"], "case_id": case_id, "kind": "package",
            "manifest_sha256": sha256_bytes(mbytes), "prev_manifest_sha256": manifest["chain"]["prev_manifest_sha256"],
            "prev_link_sha256": prev.get("link_sha256") if prev else None, "ts": manifest["created_at"]}
    line = _seal_link(link)
    after = _Tail(None, tail.count + 1, tail.lines + 1, link, tail.root if tail.lines else link["link_sha256"])
    head = _head_bytes(chain_id, after.count, link, key)
    return _Plan(_tmp_beside(final),
                 WrittenPackage(final, sorted(files), line, after.lines, after.root, head, after.count),
                 link, after, _head_path(evidence_dir, chain_id), sync)


def _write_plan(plan: _Plan, chain, chain_path: Path) -> None:
    """Write a planned package: its files in a temporary directory renamed into place, then its chain line
    (the chain file locked by the caller), then the re-signed head. Only disk work: ``PackageBatch`` runs
    this on its thread, in C when the native helper is built (one release of the interpreter lock for all
    of it, so the thread does not slow the event loop's SQL: ``models/_evidence_io.c``)."""
    if _NATIVE is not None:
        _write_plan_native(plan, chain, chain_path)
        return
    w = plan.written
    tmp = plan.tmp
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for rel, data in w.files:
            if "/" in rel:
                (tmp / rel).parent.mkdir(exist_ok=True)
            (tmp / rel).write_bytes(data)
        os.replace(tmp, w.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_line(chain, chain_path, w.chain_line, plan.sync)
    _replace_file(plan.head_path, w.head)


def _write_plan_native(plan: _Plan, chain, chain_path: Path) -> None:
    """``_write_plan``'s steps in one call of the native helper; the same files, bytes, order and errors."""
    w = plan.written
    each = plan.sync == "each"        # the link fsync-ed before the head is replaced: the head then in Python
    head = (None, None, None) if each else (
        str(_tmp_beside(plan.head_path)), str(plan.head_path), w.head)
    args = (str(plan.tmp), str(w.path), w.files, chain.fileno(), w.chain_line + b"\n", *head)
    try:
        try:
            _NATIVE.write_package(*args)
        except FileExistsError as e:
            if getattr(e, "step", None) != 1 or e.filename != str(plan.tmp):
                raise
            shutil.rmtree(plan.tmp, ignore_errors=True)      # an earlier attempt's leftovers: start again
            _NATIVE.write_package(*args)
    except OSError as e:
        if getattr(e, "step", None) in (1, 2):               # nothing in place: leave nothing behind
            shutil.rmtree(plan.tmp, ignore_errors=True)
        raise
    if each:
        os.fsync(chain.fileno())
        _replace_file(plan.head_path, w.head)
    else:
        SYNC_BEHIND.schedule(chain_path)


class PackageBatch:
    """A batch of packages planned by the caller and written, in order, by one thread meanwhile: the caller
    (the WIM worker's batch) goes on with its next readings' SQL while the disk work of the previous packages
    — files, a directory, renames: a third of the WIM loop — runs beside it. ``write`` returns at once what
    will be written (the archive rows need nothing more); ``flush`` waits until it is, and must return before
    the caller commits anything that names these packages.

    A chain's lock is held from its first package in the batch until ``flush``, so its tail is this batch's
    to extend. After a failed write the batch writes nothing more and ``flush`` raises that error; the
    chains' remembered tails are dropped, so the retry reads them from the files."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._chains: dict[str, list] = {}          # chain path → [open file, tail as planned]
        self._jobs: list = []
        self._failed: BaseException | None = None

    def write(self, evidence_dir: Path, final: Path, verdict: dict, reading: WimReading, chain_id: str,
              key: SigningKey, sync: str) -> WrittenPackage:
        chain_path = _chain_path(evidence_dir, chain_id)
        held = self._chains.get(str(chain_path))
        if held is None:
            evidence_dir.mkdir(parents=True, exist_ok=True)
            f = open(chain_path, "ab+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                held = [f, _chain_tail(f, chain_path)]
            except BaseException:
                f.close()
                raise
            self._chains[str(chain_path)] = held
            if (final / "manifest.json").exists():      # written by another process before we held the lock
                return WrittenPackage(final)
        plan = _plan_package(evidence_dir, final, verdict, reading, chain_id, key, sync, held[1])
        held[1] = plan.tail
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-write")
        self._jobs.append(self._pool.submit(self._write, plan, held[0], chain_path))
        return plan.written

    def _write(self, plan: _Plan, chain, chain_path: Path) -> None:
        if self._failed is not None:
            raise EvidenceError(f"not written: an earlier package of the batch failed ({self._failed})")
        try:
            _write_plan(plan, chain, chain_path)
        except BaseException as err:
            self._failed = err
            raise

    def flush(self) -> None:
        """Wait for every write; release the chains. Raises the first failed write's error."""
        jobs, self._jobs = self._jobs, []
        err = None
        for j in jobs:
            e = j.exception()                            # waits
            if e is not None and err is None:
                err = e
        chains, self._chains = self._chains, {}
        failed, self._failed = self._failed, None
        for path, (f, tail) in chains.items():
            try:
                if failed is None and err is None:
                    _remember_tail(f, Path(path), tail)
                else:
                    with _TAILS_LOCK:
                        _TAILS.pop(path, None)
            finally:
                f.close()                                # releases the lock
        if err is not None:
            raise err


# --- later facts and the signed chain head -------------------------------------------------------------------

def _head_path(evidence_dir: Path, chain_id: str) -> Path:
    return evidence_dir / f"chain-{chain_id}.head.json"


def _head_bytes(chain_id: str, count: int, last: dict | None, key: SigningKey) -> bytes:
    """The chain's head (count and last link hash), signed: re-signed after every append, so a removed tail,
    an inserted or replayed link is reported even when the attacker recomputes the (unkeyed) link hashes."""
    body = {"schema": HEAD_SCHEMA, "chain_id": chain_id, "count": count,
            "last_link_sha256": last["link_sha256"] if last else None,
            "ts": format_ts(datetime.now(timezone.utc))}
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    doc = {"head": body, "alg": "Ed25519", "key_id": key.key_id,
           "signature": base64.b64encode(key.sign(raw)).decode("ascii")}
    return orjson.dumps(doc, option=_DUMP) + b"\n"


def _replace_file(path: Path, data: bytes) -> None:
    tmp = _tmp_beside(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def append_entry(pkg: str | os.PathLike, fact: dict, *, key: SigningKey, sync: str) -> Path:
    """Record a later fact about a case (an act of its history, a driver identified, a source site traced
    later) as a new signed entry on the package's own chain; the package itself is never rewritten.

    ``fact["id"]`` identifies the fact: appending the same id again is a no-op (returns the existing entry).
    The entry is ``<case>/entries/NNNN-<kind>.json`` + ``.sig``, linked like a package. ``sync``:
    ``evidence.chain_sync``."""
    if sync not in CHAIN_SYNC:
        raise EvidenceError(f"chain sync must be one of {CHAIN_SYNC}: {sync!r}")
    pkg = Path(pkg)
    manifest = orjson.loads((pkg / "manifest.json").read_bytes())
    chain_id = manifest["chain"]["chain_id"]
    fid = str(fact.get("id") or "")
    if not fid:
        raise EvidenceError("a fact needs an id")
    kind = re.sub(r"[^a-z0-9]", "", str(fact.get("kind", "fact")).lower())[:16] or "fact"
    evidence_dir = pkg.parent
    edir = pkg / "entries"
    chain_path = _chain_path(evidence_dir, chain_id)
    with open(chain_path, "ab+") as chain:
        fcntl.flock(chain.fileno(), fcntl.LOCK_EX)
        existing = sorted(edir.glob("*.json")) if edir.is_dir() else []
        for f in existing:
            try:
                if orjson.loads(f.read_bytes()).get("fact", {}).get("id") == fid:
                    return f
            except (orjson.JSONDecodeError, AttributeError):
                continue
        tail = _chain_tail(chain, chain_path)
        prev = tail.last
        rel = f"entries/{len(existing) + 1:04d}-{kind}.json"
        doc = {"schema": ENTRY_SCHEMA, "case_id": manifest["case_id"], "fact": fact,
               "created_at": format_ts(datetime.now(timezone.utc)),
               "chain": {"chain_id": chain_id, "seq": (int(prev.get("seq", 0)) + 1) if prev else 1,
                         "prev_manifest_sha256": prev.get("manifest_sha256") if prev else None},
               "signing": {"alg": "Ed25519", "key_id": key.key_id}}
        body = orjson.dumps(doc, option=_DUMP) + b"\n"
        edir.mkdir(exist_ok=True)
        tmp = _tmp_beside(edir / Path(rel).name)
        tmp.write_bytes(body)
        sig = {"alg": "Ed25519", "key_id": key.key_id, "signature": base64.b64encode(key.sign(body)).decode("ascii")}
        (edir / (Path(rel).stem + ".sig")).write_bytes(orjson.dumps(sig, option=_DUMP) + b"\n")
        os.replace(tmp, pkg / rel)
        link = {"seq": doc["chain"]["seq"], "case_id": manifest["case_id"], "kind": "entry", "path": rel,
                "manifest_sha256": sha256_bytes(body), "prev_manifest_sha256": doc["chain"]["prev_manifest_sha256"],
                "prev_link_sha256": prev.get("link_sha256") if prev else None, "ts": doc["created_at"]}
        _write_line(chain, chain_path, _seal_link(link), sync)
        after = _Tail(None, tail.count + 1, tail.lines + 1, link, tail.root if tail.lines else link["link_sha256"])
        _remember_tail(chain, chain_path, after)
        _replace_file(_head_path(evidence_dir, chain_id), _head_bytes(chain_id, after.count, link, key))
    return pkg / rel


# --- verification -------------------------------------------------------------------------------------------

def is_package(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def verify_package(path: str | os.PathLike, trusted_keys_dir: str | os.PathLike) -> list[str]:
    """Problems with one package (empty list = intact). Raises ``NotAPackage`` for other paths."""
    pkg = Path(path)
    if not is_package(pkg):
        raise NotAPackage(f"{pkg} is not an evidence package (no manifest.json)")
    problems: list[str] = []
    mbytes = (pkg / "manifest.json").read_bytes()
    msha = sha256_bytes(mbytes)
    try:
        manifest = orjson.loads(mbytes)
        if not isinstance(manifest, dict):
            raise ValueError
    except (orjson.JSONDecodeError, ValueError):
        manifest = None
        problems.append("manifest.json: altered (not a valid manifest)")
    # the chain link tells whether the manifest bytes are the ones that were written
    chain_id = ((manifest or {}).get("chain") or {}).get("chain_id")
    link = None
    if manifest is not None and not (isinstance(chain_id, str) and _ID_RE.match(chain_id)):
        problems.append("manifest.json: altered (no valid chain id)")
    elif chain_id:
        problems += _check_link_for(pkg, manifest, msha)
    elif manifest is None:
        # find the link by case id in any chain file
        for cf in pkg.parent.glob("chain-*.jsonl"):
            for ln in _read_links(cf):
                if isinstance(ln, dict) and ln.get("case_id") == pkg.name:
                    link = ln
        if link and link.get("manifest_sha256") != msha:
            problems.append(f"manifest.json: altered (sha256 differs from chain link seq {link.get('seq')})")
    # signature
    try:
        sig = orjson.loads((pkg / "manifest.sig").read_bytes())
        if set(sig) != {"alg", "key_id", "signature"} or sig["alg"] != "Ed25519":
            raise ValueError("unexpected fields")
        raw_sig = base64.b64decode(sig["signature"], validate=True)
        if base64.b64encode(raw_sig).decode("ascii") != sig["signature"]:
            raise ValueError("non-canonical base64")     # e.g. a flipped padding bit
        kid = sig["key_id"]
    except FileNotFoundError:
        problems.append("manifest.sig: missing")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        problems.append("manifest.sig: altered (unreadable signature file)")
    else:
        pub = load_trusted_key(Path(trusted_keys_dir), kid if isinstance(kid, str) else "")
        if pub is None:
            problems.append(f"manifest.sig: signing key {str(kid)[:16]}… is not in the trusted keys")
        else:
            try:
                pub.verify(raw_sig, mbytes)
            except InvalidSignature:
                if not any(p.startswith("manifest.json") for p in problems):
                    problems.append("manifest.sig: signature does not verify (signature altered)")
                else:
                    problems.append("manifest.sig: signature does not verify the altered manifest")
            if manifest is not None and (manifest.get("signing") or {}).get("key_id") != kid:
                problems.append("manifest.sig: key id differs from the manifest's signing key")
    # the package must sit under its own case id: a copied or swapped directory names another case
    if manifest is not None and manifest.get("case_id") != pkg.name:
        problems.append(f"manifest.json: belongs to case {manifest.get('case_id')}, not to directory {pkg.name} "
                        "(package copied, swapped or renamed)")
    # later facts: signed entries on the chain
    listed = {"manifest.json", "manifest.sig"}
    if manifest is not None and (pkg / "entries").is_dir():
        entry_problems, entry_files = _check_entries(pkg, manifest, trusted_keys_dir)
        problems += entry_problems
        listed |= entry_files
    # artefacts
    for a in (manifest or {}).get("artefacts") or []:
        if not isinstance(a, dict) or not a.get("held"):
            continue
        rel = a.get("path") or ""
        listed.add(rel)
        f = pkg / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            problems.append(f"artefact {rel}: path escapes the package")
        elif not f.is_file():
            problems.append(f"artefact {rel}: missing")
        elif sha256_file(f) != a.get("sha256"):
            problems.append(f"artefact {rel}: altered (sha256 mismatch)")
    if manifest is not None:
        for f in sorted(pkg.rglob("*")):
            rel = f.relative_to(pkg).as_posix()
            if f.is_file() and rel not in listed:
                problems.append(f"file {rel}: not listed in the manifest")
    return problems


def _verify_sig(trusted_keys_dir, sig_bytes: bytes, data: bytes, what: str) -> list[str]:
    try:
        sig = orjson.loads(sig_bytes)
        raw_sig = base64.b64decode(sig["signature"], validate=True)
        if sig.get("alg") != "Ed25519" or base64.b64encode(raw_sig).decode("ascii") != sig["signature"]:
            raise ValueError
        kid = sig["key_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return [f"{what}: signature unreadable (altered)"]
    pub = load_trusted_key(Path(trusted_keys_dir), kid if isinstance(kid, str) else "")
    if pub is None:
        return [f"{what}: signing key {str(kid)[:16]}… is not in the trusted keys"]
    try:
        pub.verify(raw_sig, data)
    except InvalidSignature:
        return [f"{what}: signature does not verify (altered)"]
    return []


def _check_entries(pkg: Path, manifest: dict, trusted_keys_dir) -> tuple[list[str], set[str]]:
    """Each entry file: signed, of this case, and linked on the package's chain with its hash."""
    problems, files = [], set()
    chain_id = (manifest.get("chain") or {}).get("chain_id") or ""
    links = {ln.get("path"): ln for ln in _read_links(_chain_path(pkg.parent, chain_id))
             if isinstance(ln, dict) and ln.get("kind") == "entry" and ln.get("case_id") == manifest.get("case_id")}
    for f in sorted((pkg / "entries").glob("*.json")):
        rel = f.relative_to(pkg).as_posix()
        files |= {rel, rel[:-5] + ".sig"}
        data = f.read_bytes()
        sig = f.with_suffix(".sig")
        if not sig.is_file():
            problems.append(f"entry {rel}: signature missing")
        else:
            problems += _verify_sig(trusted_keys_dir, sig.read_bytes(), data, f"entry {rel}")
        ln = links.pop(rel, None)
        if ln is None:
            problems.append(f"entry {rel}: not linked on chain {chain_id} (inserted or chain truncated)")
        elif ln.get("manifest_sha256") != sha256_bytes(data):
            problems.append(f"entry {rel}: altered (sha256 differs from chain link seq {ln.get('seq')})")
        try:
            doc = orjson.loads(data)
            if doc.get("case_id") != manifest.get("case_id"):
                problems.append(f"entry {rel}: belongs to case {doc.get('case_id')}")
            # files an entry holds (issued documents): present, inside the package, with the hash it signed
            for held in (doc.get("fact") or {}).get("files") or []:
                hrel = str(held.get("path") or "")
                files.add(hrel)
                hf = pkg / hrel
                if ".." in Path(hrel).parts or Path(hrel).is_absolute():
                    problems.append(f"entry {rel}: file {hrel} escapes the package")
                elif not hf.is_file():
                    problems.append(f"file {hrel}: missing (entry {rel} holds it)")
                elif sha256_file(hf) != held.get("sha256"):
                    problems.append(f"file {hrel}: altered (sha256 differs from entry {rel})")
        except (orjson.JSONDecodeError, AttributeError):
            problems.append(f"entry {rel}: altered (not valid JSON)")
    for rel, ln in links.items():
        problems.append(f"entry {rel}: missing (chain link seq {ln.get('seq')} names it)")
    return problems, files


def _check_link_for(pkg: Path, manifest: dict, msha: str) -> list[str]:
    chain = manifest.get("chain") or {}
    cf = _chain_path(pkg.parent, chain["chain_id"])
    name = cf.name
    links = _read_links(cf)
    if not links:
        return [f"chain {name}: missing (package not linked)"]
    mine = None
    for i, ln in enumerate(links):
        if (isinstance(ln, dict) and ln.get("case_id") == manifest.get("case_id")
                and ln.get("kind", "package") == "package"):
            mine = (i, ln)
    problems = []
    if mine is None:
        # a flipped byte may have made this package's link unparseable: name the broken links
        bad = [i + 1 for i, ln in enumerate(links) if not isinstance(ln, dict) or _link_hash(ln) != ln.get("link_sha256")]
        if bad:
            return [f"chain {name}: link at line {b} altered" for b in bad]
        return [f"chain {name}: no link for case {manifest.get('case_id')}"]
    i, ln = mine
    if _link_hash(ln) != ln.get("link_sha256"):
        problems.append(f"chain {name}: link seq {ln.get('seq')} (line {i + 1}) altered")
    if ln.get("manifest_sha256") != msha:
        problems.append(f"manifest.json: altered (sha256 differs from chain link seq {ln.get('seq')})")
    if ln.get("seq") != chain.get("seq") or ln.get("prev_manifest_sha256") != chain.get("prev_manifest_sha256"):
        problems.append(f"chain {name}: link seq {ln.get('seq')} (line {i + 1}) does not match the manifest's chain")
    if chain.get("seq", 1) > 1:
        prev = links[i - 1] if i > 0 else None
        if not isinstance(prev, dict) or _link_hash(prev) != prev.get("link_sha256"):
            problems.append(f"chain {name}: previous link (line {i}) altered or missing")
        elif prev.get("manifest_sha256") != chain.get("prev_manifest_sha256"):
            problems.append(f"chain {name}: link seq {ln.get('seq')} does not follow the previous link")
    return problems


def verify_chain(evidence_dir: Path, chain_file: Path, trusted_keys_dir=None) -> list[str]:
    """Walk one chain: every link intact, seq 1..n consecutive, each link naming its predecessor (manifest
    and link hash), each case's package linked once, entries present; then the signed head: its count and
    last link hash must match (a removed tail, an inserted or replayed link)."""
    problems = []
    prev_sha, prev_link, expect = None, None, 1
    seen_packages: dict[str, int] = {}
    links = _read_links(chain_file)
    for i, ln in enumerate(links):
        where = f"chain {chain_file.name}: link at line {i + 1}"
        if not isinstance(ln, dict) or _link_hash(ln) != ln.get("link_sha256"):
            problems.append(f"{where} altered")
            prev_sha, prev_link, expect = None, None, expect + 1
            continue
        if ln.get("seq") != expect:
            problems.append(f"{where}: seq {ln.get('seq')} where {expect} was expected (link removed or inserted)")
        if prev_sha is not None and ln.get("prev_manifest_sha256") != prev_sha:
            problems.append(f"{where}: previous-manifest hash does not match line {i}")
        if prev_link is not None and "prev_link_sha256" in ln and ln["prev_link_sha256"] != prev_link:
            problems.append(f"{where}: previous-link hash does not match line {i}")
        cid = str(ln.get("case_id"))
        pkg = evidence_dir / cid
        if not _ID_RE.match(cid) or not is_package(pkg):
            problems.append(f"{where}: package {ln.get('case_id')} missing")
        elif ln.get("kind") == "entry":
            rel = str(ln.get("path") or "")
            f = pkg / rel
            if ".." in Path(rel).parts or not f.is_file():
                problems.append(f"{where}: entry {cid}/{rel} missing")
            elif sha256_file(f) != ln.get("manifest_sha256"):
                problems.append(f"{where}: entry {cid}/{rel} altered")
        else:
            if cid in seen_packages:
                problems.append(f"{where}: package {cid} already linked at line {seen_packages[cid]} (replayed)")
            seen_packages.setdefault(cid, i + 1)
        prev_sha, prev_link, expect = ln.get("manifest_sha256"), ln.get("link_sha256"), (ln.get("seq") or expect) + 1
    if trusted_keys_dir is not None:
        problems += _check_head(evidence_dir, chain_file, links, trusted_keys_dir)
    return problems


def _check_head(evidence_dir: Path, chain_file: Path, links: list, trusted_keys_dir) -> list[str]:
    chain_id = chain_file.name[len("chain-"):-len(".jsonl")]
    hp = _head_path(evidence_dir, chain_id)
    name = f"chain {chain_file.name}"
    try:
        doc = orjson.loads(hp.read_bytes())
        head = doc["head"]
        raw = orjson.dumps(head, option=orjson.OPT_SORT_KEYS)
        sig = orjson.dumps({k: doc[k] for k in ("alg", "key_id", "signature")})
    except FileNotFoundError:
        return [f"{name}: signed head {hp.name} missing (the chain's length cannot be proven)"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return [f"{name}: signed head {hp.name} unreadable (altered)"]
    problems = _verify_sig(trusted_keys_dir, sig, raw, f"{name}: head")
    if problems:
        return problems
    good = [ln for ln in links if isinstance(ln, dict)]
    if head.get("chain_id") != chain_id:
        problems.append(f"{name}: signed head belongs to chain {head.get('chain_id')}")
    if head.get("count") != len(links):
        problems.append(f"{name}: {len(links)} link(s) but the signed head counts {head.get('count')} "
                        "(links removed from the end, or added)")
    elif not good or good[-1].get("link_sha256") != head.get("last_link_sha256"):
        problems.append(f"{name}: last link differs from the signed head (chain replaced or replayed)")
    return problems


def verify_tree(root: str | os.PathLike, trusted_keys_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Problems by package / chain file under an evidence directory (only entries with problems)."""
    root = Path(root)
    pkgs = sorted(p for p in root.iterdir() if not p.name.startswith(".") and is_package(p)) if root.is_dir() else []
    chains = sorted(root.glob("chain-*.jsonl")) if root.is_dir() else []
    for h in sorted(root.glob("chain-*.head.json")) if root.is_dir() else []:
        if not (root / (h.name[:-len(".head.json")] + ".jsonl")).exists():
            chains.append(root / (h.name[:-len(".head.json")] + ".jsonl"))     # head without chain: reported
    if not pkgs and not chains:
        raise NotAPackage(f"{root} holds no evidence packages")
    out: dict[str, list[str]] = {}
    for p in pkgs:
        probs = verify_package(p, trusted_keys_dir)
        if probs:
            out[p.name] = probs
    for c in chains:
        probs = verify_chain(root, c, trusted_keys_dir)
        if probs:
            out[c.name] = probs
    return out
