"""Archive-backed state for the WIM path: verdicts, cases and their histories, escalation proposals, and
the sources ``assess`` reads (counters, passages, driver cards, truck tracks). The rows are read and written by
``streams/archive/cases.py``; this module holds the workflow.

Everything is keyed by deterministic ids and written with insert-or-ignore (``ON CONFLICT DO NOTHING``), so
a replayed feed or a restarted worker re-writes the same rows and never opens a second case.

A case is a history (``case_acts``, append-only); its status and legal facts are derived from it by
``models/lifecycle.py`` and cached in ``case_state`` / ``cases.status`` in the same transaction. Art. 66
consequences are views over those histories (``models/art66.py``): after every change the store recomputes
the escalation proposals of the subjects the case touches (vehicle, identified driver, enterprise).
"""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson

from roadwatch.models import art66, lifecycle
from roadwatch.models.config import Config
from roadwatch.models.evidence import (EvidenceError, PackageBatch, SigningKey, WrittenPackage, append_entry,
                                      load_signing_key, write_package_files)
from roadwatch.models.lifecycle import Act, TransitionError
from roadwatch.models.records import BEIJING, WimReading, epoch_ms, format_ts, iso_to_epoch_ms, parse_ts
from roadwatch.streams import documents, notices
from roadwatch.streams.archive import ArchiveConnection
from roadwatch.streams.archive import cases as db
from roadwatch.streams.archive import evidence as evidence_db
from roadwatch.streams.archive.stops import prune_stops, save_stops, stops_between
from roadwatch.streams.archive.tracks import last_track_ts, prune_track_points, track_between, upsert_track_points


SYSTEM = "roadwatch"
EVIDENCE_COPIES = "evidence-archive"     # <data_dir>/…: read-only copies of packages written on other hosts
_SUBJECT_COL = {"vehicle": "plate", "enterprise": "enterprise_id", "driver": "driver_id"}   # inbound 抄告
log = logging.getLogger("roadwatch.cases")


def package_files(pkg: Path) -> list[tuple[str, bytes]]:
    """(path relative to the package, bytes) of every file of an evidence package (not its temporary files)."""
    out = []
    for f in sorted(pkg.rglob("*")):
        rel = f.relative_to(pkg)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append((rel.as_posix(), f.read_bytes()))
    return out


def archive_chain(conn: ArchiveConnection, evidence_dir: Path, chain_id: str) -> int:
    """Store the chain file ``chain-<chain_id>.jsonl`` of ``evidence_dir`` (its complete lines) and its signed
    head in the archive; returns how many lines were new. The head is read first: a link appended meanwhile
    is then stored without a head that counts it (never a head counting a link not stored)."""
    head = count = None
    try:
        head = (evidence_dir / f"chain-{chain_id}.head.json").read_bytes()
        count = int(orjson.loads(head)["head"]["count"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        head = None
    try:
        data = (evidence_dir / f"chain-{chain_id}.jsonl").read_bytes()
    except FileNotFoundError:
        return 0
    lines = [ln for ln in data.split(b"\n")[:-1] if ln.strip()]     # a line being appended is not complete yet
    return evidence_db.store_chain(conn, chain_id, lines, head, count)


@dataclass(frozen=True)
class _KeptReading:
    """A reading as ``wim_readings`` keeps it: its canonical JSON, the hash of that (the row's key) and its
    identity (station + reading id, or station + plate + time without an id)."""
    raw: bytes
    key: str
    identity: str

    @classmethod
    def of(cls, verdict: dict, reading: WimReading) -> "_KeptReading":
        return cls.at(reading, verdict["ts_ms"])

    @classmethod
    def at(cls, reading: WimReading, ts_ms: int) -> "_KeptReading":
        """``ts_ms``: the reading's time in epoch ms (its verdict's ``ts_ms``)."""
        rd = reading.asdict()
        rd["images"] = [im.asdict() if hasattr(im, "asdict") else im for im in reading.images]
        raw = orjson.dumps(rd, option=orjson.OPT_SORT_KEYS)
        identity = (f"{reading.station_id}|id:{reading.reading_id}" if reading.reading_id
                    else f"{reading.station_id}|{reading.plate}|{ts_ms}")
        return cls(raw, hashlib.sha256(raw).hexdigest(), identity)


_UNKNOWN = object()      # a look-up the batch cannot answer from what it fetched: ask the archive


class _BatchRows:
    """A WIM batch's rows and look-ups (``CaseStore.package_batch``).

    Its passages, readings and verdicts are inserted together at its end: one ``executemany`` per table
    instead of three statements per reading. The passages and readings its readings could meet in the
    archive are fetched at its start in two statements (``fetch``) instead of two look-ups per reading:
    the answers are the look-ups' own (nearest passage in the window; the reading's own row, else the first
    non-conflicting one with its identity). A look-up that could meet one of the batch's own rows (the same
    station and plate, the same reading key or identity) first inserts them all and asks the archive, so
    every read sees what the readings before it wrote."""

    def __init__(self):
        self.kept: dict[int, tuple] = {}                  # id(reading) → (reading, _KeptReading), from ``fetch``
        self._reset()

    def _reset(self) -> None:
        self.passages: list[tuple] = []
        self.readings: list[tuple] = []
        self.verdicts: list[tuple] = []
        self._plates: set[tuple[str, str]] = set()
        self._readings: set[str] = set()
        self._span: tuple[int, int] | None = None          # fetched passages began within it
        self._near: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._by_key: dict[str, dict] | None = None         # fetched readings
        self._by_identity: dict[str, list[dict]] = {}
        self._asked: set = set()          # the (station, plate) pairs, keys and identities fetched for

    def fetch(self, c, readings: list, window_ms: int) -> None:
        """The archive's passages and readings the batch's ``readings`` could meet (before any is stored)."""
        if not readings:
            return
        kept, plates, times = [], {}, []
        for r in readings:
            ts_ms = epoch_ms(parse_ts(r.ts))
            k = _KeptReading.at(r, ts_ms)
            self.kept[id(r)] = (r, k)
            kept.append(k)
            plates.setdefault(r.station_id, set()).add(r.plate)
            times.append(ts_ms)
            self._asked.update(((r.station_id, r.plate), k.key, k.identity))
        lo, hi = min(times) - window_ms, max(times) + window_ms
        for pid, station_id, plate, first in db.passages_near(c, {s: sorted(p) for s, p in plates.items()}, lo, hi):
            self._near.setdefault((station_id, plate), []).append((int(first), pid))
        self._span = (lo, hi)
        self._by_key = {}
        for row in db.readings_of(c, sorted({k.key for k in kept}), sorted({k.identity for k in kept})):
            if row["reading_key"] not in self._by_key:
                self._by_key[row["reading_key"]] = row
                self._by_identity.setdefault(row["identity"], []).append(row)

    def kept_reading(self, reading) -> "_KeptReading | None":
        """The ``_KeptReading`` ``fetch`` computed for ``reading`` (this very object), or None."""
        got = self.kept.get(id(reading))
        return got[1] if got is not None and got[0] is reading else None

    def find_passage(self, station_id: str, plate: str, ts_ms: int, window_ms: int):
        """``db.find_passage``'s answer from the fetched passages, or ``_UNKNOWN``."""
        if (self._span is None or (station_id, plate) not in self._asked
                or not self._span[0] <= ts_ms - window_ms <= ts_ms + window_ms <= self._span[1]):
            return _UNKNOWN
        near = [(abs(first - ts_ms), first, pid) for first, pid in self._near.get((station_id, plate), ())
                if ts_ms - window_ms <= first <= ts_ms + window_ms]
        if not near:
            return None
        _, first, pid = min(near)          # nearest, then earliest (first_ts_ms is unique per station and plate)
        return (pid, first)

    def reading_seen(self, key: str, identity: str):
        """``db.reading_seen``'s answer from the fetched readings, or ``_UNKNOWN``."""
        if self._by_key is None or key not in self._asked or identity not in self._asked:
            return _UNKNOWN
        own = self._by_key.get(key)
        if own is not None:
            return {**own, "seen": 1}
        first = [r for r in self._by_identity.get(identity, ()) if r["conflict_of"] is None]
        if not first:
            return None
        return {**min(first, key=lambda r: (r["received_at"], r["reading_key"])), "seen": 0}

    def passage(self, passage_id: str, station_id: str, plate: str, first_ts_ms: int) -> None:
        self.passages.append((passage_id, station_id, plate, int(first_ts_ms)))
        self._plates.add((station_id, plate))

    def reading(self, row: tuple) -> None:
        self.readings.append(row)
        self._readings.update(row[:2])                # its key and its identity

    def meets_passage(self, station_id: str, plate: str) -> bool:
        return (station_id, plate) in self._plates

    def meets_reading(self, key: str, identity: str) -> bool:
        return key in self._readings or identity in self._readings

    def write(self, c) -> None:
        """Insert the batch's rows; from now on its look-ups ask the archive."""
        if self.passages:
            db.note_passages(c, self.passages)
        if self.readings:
            db.insert_readings(c, self.readings)
        if self.verdicts:
            db.insert_verdicts(c, self.verdicts)
        self._reset()


def _iso(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, tz=timezone.utc))


def legal_date(value: str | None, now: datetime, *, not_after_today: bool = False) -> str:
    """``--at`` as given (a date → 00:00 Beijing time; a date-time needs its offset) → ISO-8601 Beijing.
    An act cannot be dated after the day it is entered (``not_after_today``)."""
    if value is None:
        return format_ts(now)
    value = value.strip()
    try:
        if len(value) == 10:
            out = datetime.combine(date.fromisoformat(value), datetime.min.time(), BEIJING)
        else:
            out = parse_ts(value, "at")
    except ValueError as e:
        raise CaseActionError("bad_input", f"--at {value!r}: {getattr(e, 'detail', e)} (ISO-8601 date or "
                                           "date-time with offset)") from None
    if not_after_today and out.astimezone(BEIJING).date() > now.astimezone(BEIJING).date():
        raise CaseActionError("bad_input", f"--at {value!r} lies after the day the act is entered "
                                           f"({now.astimezone(BEIJING).date().isoformat()})")
    return format_ts(out)


class CaseActionError(ValueError):
    """A refused case action. ``code``: not_found | bad_action | bad_transition | reason_required | bad_input |
    too_early (the console maps it to an HTTP answer, the CLI to exit code 2)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


MAX_REASON = lifecycle.MAX_REASON


def _act_from_row(r) -> Act:
    return Act(case_id=r["case_id"], action=r["action"], by=r["by_officer"], at=r["at"],
               entered_at=r["entered_at"], reason=r["reason"], driver_id=r["driver_id"],
               details=orjson.loads(r["details"]) if r["details"] else None)


class CaseStore:
    """Verdicts, cases and their histories in the archive; the one case workflow (console and CLI).
    Also the ``PassageSource`` for ``assess`` (``passages=store``)."""

    def __init__(self, conn: ArchiveConnection, cfg: Config, *, evidence_dir: str | Path | None = None,
                 data_dir: str | Path | None = None, watch_late_data: bool = False):
        if not isinstance(cfg, Config):
            raise TypeError("CaseStore needs the Config it is given")
        self.conn = conn
        self.cfg = cfg
        self.evidence_dir = Path(evidence_dir) if evidence_dir else None
        self.data_dir = Path(data_dir) if data_dir else None
        self._passages = ArchivePassages(conn)
        self._noted: dict[str, tuple[str, str, int]] = {}     # passages ``assess`` noted, stored by ``record``
        self._keys: dict[str, SigningKey] = {}
        self.watch_late_data = watch_late_data      # the worker: GPS and card data come through other partitions
        self._packages = PackageBatch()             # its writing thread starts with the first package
        self._batch: PackageBatch | None = None      # ``_packages`` within ``package_batch``
        self._rows: _BatchRows | None = None         # within ``package_batch``: rows inserted at its end

    # PassageSource
    def find_passage(self, station_id, plate, ts_ms, window_ms):
        if self._rows is not None:
            if self._rows.meets_passage(station_id, plate):
                self._rows.write(self.conn)
            found = self._rows.find_passage(station_id, plate, ts_ms, window_ms)
            if found is not _UNKNOWN:
                return found
        return self._passages.find_passage(station_id, plate, ts_ms, window_ms)

    def fetch_batch(self, readings: list) -> None:
        """Within ``package_batch``, before its first reading: fetch what its readings' look-ups will ask
        (``_BatchRows.fetch``)."""
        self._rows.fetch(self.conn, readings, int(self.cfg["overlimit.dedup_window_s"]) * 1000)

    def note_passage(self, station_id, plate, first_ts_ms, passage_id):
        # written by ``record`` in the verdict's transaction (one write transaction per reading, not two: each
        # waits for the archive's write lock); every caller of ``assess`` with this store records the verdict
        self._noted[passage_id] = (station_id, plate, int(first_ts_ms))

    def forget_noted(self) -> None:
        """Drop passages noted by an ``assess`` whose ``record`` failed (its transaction was rolled back)."""
        self._noted.clear()

    def _note_passage(self, c, passage_id: str, station_id: str, plate: str, first_ts_ms: int) -> None:
        if self._rows is not None:
            self._rows.passage(passage_id, station_id, plate, first_ts_ms)
        else:
            db.note_passage(c, passage_id, station_id, plate, first_ts_ms)

    def _key(self, data_dir: Path) -> SigningKey:
        given = str(data_dir)
        key = self._keys.get(given)                 # an absolute path as given: no resolution per case
        if key is None:
            k = str(Path(data_dir).resolve())
            key = self._keys.get(k) or load_signing_key(data_dir)
            self._keys[k] = key
            if os.path.isabs(given):
                self._keys[given] = key
        return key

    # --- detection ----------------------------------------------------------------------------------------

    def record(self, verdict: dict, *, reading: WimReading | None = None, evidence_dir: str | Path | None = None,
               data_dir: str | Path | None = None, chain_id: str = "default",
               evidence_path: str | None = None, manifest: dict | None = None) -> bool:
        """Store the passage's verdict; insert its case and its ``detect`` act once. True when a new case
        was created.

        With ``reading`` and ``evidence_dir`` the case's evidence package is written in the transaction, once
        the reading is known to be no conflict (a no-op when it exists), signed with the key of ``data_dir``
        (models/evidence.py); the signed manifest is stored with the case and every file of the package in
        the archive (streams/archive/evidence.py). A case the archive already holds — archived by another
        worker, on this host or another — gets no second package: the first one stays the case's evidence.
        Duplicate readings (``duplicate_of``) are not stored: their passage is. The reading (``_keep_reading``),
        the passage ``assess`` noted, the verdict and the case are one transaction."""
        evidence_dir = evidence_dir or self.evidence_dir
        if evidence_dir is not None and data_dir is None:
            data_dir = self.data_dir
        kept = None
        if reading is not None:
            kept = (self._rows.kept_reading(reading) if self._rows is not None else None) \
                or _KeptReading.of(verdict, reading)
        files: list[tuple[str, bytes]] = []
        written: WrittenPackage | None = None
        vjson = orjson.dumps(verdict).decode()
        day = verdict["ts"][:10]
        now = datetime.now(timezone.utc)
        with self.conn.transaction() as c:
            for pid, (station_id, plate, first_ms) in self._noted.items():
                self._note_passage(c, pid, station_id, plate, first_ms)
            noted = set(self._noted)
            conflict, appended = (self._keep_reading(c, verdict, vjson, kept, now) if kept is not None
                                  else (None, None))
            # the package in the transaction, after the reading decided it is no conflict: a failed write rolls
            # the reading back with it (the worker's batch holds the write lock around its packages anyway)
            if (not conflict and verdict.get("case_id") and not verdict.get("duplicate_of") and reading is not None
                    and evidence_dir is not None and not db.case_exists(c, verdict["case_id"])):
                written = write_package_files(evidence_dir, verdict, reading, chain_id=chain_id,
                                              key=self._key(Path(data_dir) if data_dir else Path(evidence_dir).parent),
                                              sync=self.cfg["evidence.chain_sync"], batch=self._batch)
                evidence_path = str(written.path)
                files = written.files or package_files(written.path)    # none written: it existed (a retry)
                manifest = orjson.loads(dict(files)["manifest.json"])
            created = (not conflict and not verdict.get("duplicate_of")
                       and self._insert_case(c, verdict, day, vjson, appended, format_ts(now), evidence_path,
                                             manifest, files, chain_id, written, noted))
        self._noted.clear()
        if conflict and conflict.get("first"):          # a new conflict (not a replayed one)
            log.warning("reading %s received again with other values: kept as a conflict for review",
                        conflict["identity"])
            if conflict["first"].get("case_id"):
                if self._batch is not None:
                    self._batch.flush()        # the first reading's package may be this batch's; its chain unlocked
                self._evidence_sync(conflict["first"]["case_id"])
        return created

    @contextmanager
    def package_batch(self):
        """Within: ``record`` writes each new case's evidence package on a thread (``PackageBatch``) while the
        caller goes on with its next readings; at the end every package is on disk before the caller's
        transaction, which holds their archive rows, can commit. Raises the error of a failed write then.
        The readings' passage, reading and verdict rows are inserted together at the end (``_BatchRows``),
        in the caller's transaction: call it inside one."""
        self._batch = self._packages
        self._rows = _BatchRows()
        try:
            yield
            self._rows.write(self.conn)
        except BaseException:
            try:
                self._batch.flush()             # a retry must never race a write of this attempt
            except Exception:  # noqa: BLE001 - the batch's own error is the one to report
                pass
            raise
        else:
            self._batch.flush()
        finally:
            self._batch = None
            self._rows = None

    def _insert_case(self, c, verdict: dict, day: str, vjson: str, reading_key: str | None, now: str,
                     evidence_path: str | None, manifest: dict | None, files: list, chain_id: str,
                     written: WrittenPackage | None, noted: set) -> bool:
        """In ``record``'s transaction: the verdict, and its case with the ``detect`` act once. ``noted``: the
        passages already written (those ``assess`` noted). ``reading_key``: the reading this transaction kept
        with ``vjson`` (``_keep_reading``), or None."""
        # the verdict's text is kept once: with the reading that gave it when there is one (the passage's row
        # refers to it), else in the passage's row — a second copy was a log page per reading (docs/performance.md)
        row = db.verdict_row(verdict, day, "" if reading_key else vjson, reading_key)
        if self._rows is not None:
            self._rows.verdicts.append(row)
        else:
            db.insert_verdicts(c, [row])
        if verdict["passage_id"] not in noted:
            self._note_passage(c, verdict["passage_id"], verdict["station_id"], verdict["plate"], verdict["ts_ms"])
        if not verdict.get("case_id"):
            return False
        drv = verdict.get("driver") or {}
        if not db.insert_case(c, verdict, day, drv.get("id"), evidence_path,
                              orjson.dumps(manifest if manifest is not None else verdict).decode()):
            return False
        db.insert_case_act(c, f"{verdict['case_id']}:detect", verdict["case_id"], 1, "detect", SYSTEM,
                           verdict["ts"], now)
        if files:
            evidence_db.store_package_files(c, verdict["case_id"], files, now, new_case=True)
            w = written
            if not (w and w.chain_line is not None and w.root is not None and evidence_db.store_chain_link(
                    c, chain_id, w.root, w.line_no, w.chain_line, w.head, w.head_count)):
                if self._batch is not None:
                    self._batch.flush()                # the chain file as planned, before it is read
                archive_chain(c, Path(evidence_path).parent, chain_id)      # what the archive lacks, from the file
        db.insert_case_state(c, verdict["case_id"], "detected", drv.get("id"), drv.get("source") or "unknown",
                             (verdict.get("enterprise") or {}).get("goods_vehicles"), now)
        if self.watch_late_data:
            last = last_track_ts(c, verdict["plate"])
            if last is None or last < int(verdict["ts_ms"]):     # the track covering the passage is not in yet
                db.insert_pending(c, verdict["case_id"], verdict["plate"], int(verdict["ts_ms"]),
                                  int(datetime.now(timezone.utc).timestamp() * 1000))
        return True

    def _keep_reading(self, c, verdict: dict, vjson: str, kept: "_KeptReading",
                      now: datetime) -> tuple[dict | None, str | None]:
        """Keep every reading (append-only). A reading whose identity (station + reading id, or station +
        plate + time without an id) was already received with other values is kept beside the first and
        flagged as a conflict for review: it changes no verdict and opens no case; the case of the first
        reading (if any) gets a ``conflict`` fact in its history. Sets ``verdict["conflict"]`` and returns it
        (None: no conflict) with the key of the reading row it appended (None: a replay, nothing appended).
        ``vjson``: the verdict's JSON as stored with the reading. In ``record``'s transaction."""
        key, identity = kept.key, kept.identity
        prior = _UNKNOWN
        if self._rows is not None:
            if self._rows.meets_reading(key, identity):
                self._rows.write(c)
            prior = self._rows.reading_seen(key, identity)
        if prior is _UNKNOWN:
            prior = db.reading_seen(c, key, identity)
        if prior is not None and prior["seen"]:
            if prior["conflict_of"] is None:
                return None, None                      # a replay of a reading we kept: nothing new
            verdict["conflict"] = {"reading_key": key, "conflict_of": prior["conflict_of"], "identity": identity}
            return verdict["conflict"], None
        row = (key, identity, verdict["passage_id"], format_ts(now), kept.raw.decode(), vjson,
               prior["reading_key"] if prior else None)
        if self._rows is not None:
            self._rows.reading(row)
        else:
            db.insert_reading(c, *row)
        if prior is None:
            return None, key
        first = orjson.loads(prior["verdict"])
        verdict["conflict"] = {"reading_key": key, "conflict_of": prior["reading_key"], "identity": identity,
                               "first": {k: first.get(k) for k in ("gross_kg", "action", "fine_yuan", "case_id")},
                               "second": {k: verdict.get(k) for k in ("gross_kg", "action", "fine_yuan")}}
        case_id = first.get("case_id")
        if case_id and db.case_exists(c, case_id):
            acts = self.history(case_id)
            act = Act(case_id=case_id, action="conflict", by=SYSTEM, at=verdict["ts"], entered_at=format_ts(now),
                      reason=(f"reading {identity} received again with other values: gross "
                              f"{first.get('gross_kg')} kg then {verdict.get('gross_kg')} kg; review the case"),
                      details={"reading_key": key, "conflict_of": prior["reading_key"],
                               "gross_kg": verdict.get("gross_kg")})
            self._insert_act(c, act, len(acts) + 1)
        return verdict["conflict"], key

    def conflicts(self, case_id: str | None = None) -> list[dict]:
        rows = db.reading_conflicts(self.conn)
        out = []
        for r in rows:
            first, second = orjson.loads(r["first_verdict"]), orjson.loads(r["verdict"])
            if case_id and first.get("case_id") != case_id:
                continue
            out.append({"identity": r["identity"], "reading_key": r["reading_key"], "conflict_of": r["conflict_of"],
                        "received_at": r["received_at"], "case_id": first.get("case_id"),
                        "first": {k: first.get(k) for k in ("gross_kg", "action", "fine_yuan")},
                        "second": {k: second.get(k) for k in ("gross_kg", "action", "fine_yuan")}})
        return out

    def set_evidence(self, case_id: str, evidence_path: str, manifest: dict) -> None:
        db.set_case_evidence(self.conn, case_id, evidence_path, orjson.dumps(manifest).decode())

    # --- cases written before the lifecycle existed ----------------------------------------------------------

    def migrate(self) -> None:
        """Give every case without a history its history (see ``_migrate``)."""
        self._migrate()

    def _migrate(self, case_id: str | None = None) -> None:
        """Give a case that has no history (an archive from before the lifecycle, or a row written directly)
        its ``detect`` act and ``case_state``; its old ``case_actions`` trail (or, without one, its stored
        status) becomes acts by ``migration``. Idempotent; a no-op for cases that have a history."""
        rows = db.cases_without_history(self.conn, case_id)
        if not rows:
            return
        now = datetime.now(timezone.utc)
        with self.conn.transaction() as c:
            for row in rows:
                cid = row["case_id"]
                if db.has_case_state(c, cid):
                    continue
                try:
                    man = orjson.loads(row["manifest"] or "{}")
                except orjson.JSONDecodeError:
                    man = {}
                drv = (man.get("driver") or ((man.get("targets") or {}).get("driver")) or {})
                src = drv.get("source") or ("unknown" if not row["driver_id"] else "registry")
                acts = [Act(cid, "detect", SYSTEM, row["ts"], format_ts(now))]
                trail = db.legacy_trail(c, cid)
                if not trail:
                    implied = {"reviewed": ["review"], "confirmed": ["confirm"], "dismissed": ["dismiss"],
                               "notified": ["confirm", "notify"]}.get(row["status"], [])
                    trail = [(a, "migration", "status before the case history existed", row["ts"]) for a in implied]
                status = "detected"
                for action, by, reason, ts in trail:
                    act = Act(cid, action, by or "migration", ts, format_ts(now), reason)
                    if action in lifecycle.TRANSITIONS and status in lifecycle.TRANSITIONS[action][0]:
                        status = lifecycle.TRANSITIONS[action][1]
                    else:       # e.g. the old notify straight after confirm (no 立案 recorded): kept as a fact
                        act = Act(cid, "legacy", by or "migration", ts, format_ts(now),
                                  f"{action} before the lifecycle" + (f": {reason}" if reason else ""))
                    acts.append(act)
                for i, a in enumerate(acts, 1):
                    aid = lifecycle.act_id(a) if a.action != "legacy" else f"{cid}:legacy:{i}"
                    db.insert_case_act(c, aid, cid, i, a.action, a.by, a.at, a.entered_at, a.reason)
                db.insert_case_state(c, cid, status, row["driver_id"], src,
                                     (man.get("enterprise") or {}).get("goods_vehicles"), format_ts(now))
                db.set_case_status(c, cid, status)

    # --- reading ------------------------------------------------------------------------------------------

    def get(self, case_id: str) -> dict | None:
        row = db.get_case(self.conn, case_id)
        return dict(row) if row else None

    def history(self, case_id: str) -> list[Act]:
        return [_act_from_row(r) for r in db.case_acts(self.conn, case_id)]

    def actions(self, case_id: str) -> list[dict]:
        """The case's acts after detection (the audit trail)."""
        return [{"case_id": case_id, "action": a.action, **a.as_dict()} for a in self.history(case_id)
                if a.action != "detect"]

    def show(self, case_id: str) -> dict | None:
        """The case as JSON: its row, manifest, ``history`` and the ``status`` derived from it, who is liable,
        the actions allowed now and the escalation proposals that rest on it."""
        self._migrate(case_id)
        row = self.get(case_id)
        if row is None:
            return None
        acts = self.history(case_id)
        derived = lifecycle.derive(acts)
        st = db.case_state(self.conn, case_id)
        try:
            manifest = orjson.loads(row.get("manifest") or "{}")
        except orjson.JSONDecodeError:
            manifest = {"unparsed": row.get("manifest")}
        out = {k: row[k] for k in row if k != "manifest"}
        out["manifest"] = manifest
        out["status"] = derived["status"]
        out["status_label"] = lifecycle.LABELS.get(derived["status"], derived["status"])
        out["decided_on"] = derived["decided_on"]
        out["history"] = [{k: v for k, v in a.as_dict().items() if k != "act_id"} for a in acts]
        out["allowed_actions"] = lifecycle.allowed_actions(derived["status"])
        out["liable"] = self._liable(row, st, derived)
        subjects = [row["plate"], row.get("enterprise_id"), row.get("driver_id"), (derived["driver"] or {}).get("id")]
        out["proposals"] = [p for p in self.proposals(subjects=subjects)
                            if case_id in p["basis"].get("case_ids", [])]
        out["conflicts"] = self.conflicts(case_id)
        out["documents"] = documents.listing(self.evidence_package(case_id))
        out["agency_notice"] = notices.case_notice(self.conn, case_id)
        return out

    @staticmethod
    def _liable(row, st, derived) -> dict:
        """The owner/operator always; a driver only when identified (card or officer); else "presumed"."""
        man = {}
        try:
            man = orjson.loads(row.get("manifest") or "{}")
        except orjson.JSONDecodeError:
            pass
        owner = (((man.get("targets") or {}).get("vehicle") or {}).get("owner")
                 or (man.get("vehicle") or {}).get("owner"))
        d = derived["driver"]
        if d:
            driver = {"id": d["id"], "source": "officer", "identified": True, "by": d["by"], "at": d["at"]}
        else:
            src = st["driver_source"] if st else "unknown"
            did = st["driver_id"] if st else row.get("driver_id")
            driver = {"id": did, "source": src, "identified": src in art66.IDENTIFIED_SOURCES and bool(did)}
            if src == "registry" and did:
                driver["presumed"] = True
        return {"owner": {"plate": row["plate"], "owner": owner, "enterprise_id": row.get("enterprise_id")},
                "driver": driver}

    # --- acting -------------------------------------------------------------------------------------------

    def act(self, case_id: str, action: str, operator: str, reason: str | None = None, *,
            at: str | None = None, driver_id: str | None = None, now: datetime | None = None) -> dict:
        """Apply one act of the workflow (models/lifecycle.py) and return the case (``show``).

        ``at`` is the legal date of the act (default: now); ``driver_id`` records a driver identified by the
        officer. Replaying an act that is already in the history changes nothing (``replayed: true``).
        Refused acts raise CaseActionError."""
        now = now or datetime.now(timezone.utc)
        reason = (reason or "").strip() or None
        driver_id = (driver_id or "").strip() or None
        if not isinstance(operator, str) or not operator.strip():
            raise CaseActionError("bad_input", "operator is required")
        if action not in lifecycle.ACTIONS and not (action == "amend" and driver_id):
            raise CaseActionError("bad_action", f"unknown action {action!r}; one of {', '.join(lifecycle.ACTIONS)}")
        if driver_id is not None and len(driver_id) > 64:
            raise CaseActionError("bad_input", "driver id longer than 64 characters")
        act = Act(case_id=case_id, action=action, by=operator.strip(), at=legal_date(at, now, not_after_today=True),
                  entered_at=format_ts(now), reason=reason, driver_id=driver_id)
        replayed = False
        self._migrate(case_id)
        with self.conn.transaction() as c:
            row = db.get_case(c, case_id)
            if row is None:
                raise CaseActionError("not_found", f"no case {case_id!r}")
            acts = self.history(case_id)
            ids = {lifecycle.act_id(a) for a in acts}
            if lifecycle.act_id(act) in ids:
                replayed = True
            else:
                status = lifecycle.derive(acts)["status"]
                try:
                    lifecycle.check(status, acts, act, statement_days=int(self.cfg["case.statement_days"]))
                except TransitionError as e:
                    raise CaseActionError(e.code, e.detail) from None
                self._insert_act(c, act, len(acts) + 1)
                acts.append(act)
                self._apply_derived(c, row, acts, now)
                # only a decided case (or a driver named) can change an Art. 66 count
                if lifecycle.derive(acts)["decided_on"] or act.driver_id:
                    self._recompute_escalations(c, row, now)
        pending = self._evidence_sync(case_id)
        out = self.show(case_id)
        # the document each step produces (告知书 on notify, 决定书 on decide), HTML on the evidence chain
        kind = {"notify": "inform", "decide": "decision"}.get(action)
        if kind and not pending and self.data_dir is not None and documents.package_of(self, case_id):
            try:
                documents.issue(self, case_id, kind, by=act.by, case=out)
                out = self.show(case_id)
            except (documents.DocumentError, EvidenceError, OSError) as e:
                log.warning("case %s: %s not issued (%s); issue it with `roadwatch case document`", case_id, kind, e)
                out["documents_pending"] = [kind]
        if action == "close" and out["status"] == "closed":   # the 62号令 Art. 44 抄告 (streams/notices.py)
            notices.on_close(self, case_id, out, by=act.by)
            out = self.show(case_id)
        out["replayed"] = replayed
        if pending:
            out["evidence_pending"] = pending
        if out["status"] == "confirmed" and action == "confirm":
            out["notify_due"] = format_ts(datetime.fromisoformat(act.at)
                                          + timedelta(days=int(self.cfg["notify.days_after_review"])))
        return out

    @staticmethod
    def _insert_act(c, act: Act, seq: int) -> None:
        db.insert_case_act(c, lifecycle.act_id(act), act.case_id, seq, act.action, act.by, act.at, act.entered_at,
                           act.reason, act.driver_id, act.details)

    def _apply_derived(self, c, row, acts: list[Act], now: datetime) -> None:
        """Cache the derived status in ``cases`` / ``case_state``; a confirmed review case takes the Art. 43
        action its measurement gives; a dismissed or withdrawn one no longer counts as a violation."""
        d = lifecycle.derive(acts)
        penalty = None
        if d["status"] == "confirmed" and row["action"] == "review":
            man = orjson.loads(row["manifest"])
            rp = man.get("road_penalty") or (man.get("penalties") or {}).get("road_administration") or {}
            if rp.get("action") in ("warning", "fine"):
                penalty = (rp["action"], int(rp.get("fine_yuan", 0)))
        officer_driver = d["driver"]["id"] if d["driver"] else None
        db.set_case_derived(c, row["case_id"], d["status"], penalty=penalty,
                            void=d["status"] in ("dismissed", "withdrawn"), driver_id=officer_driver)
        db.update_case_state(c, row["case_id"], d["status"], d["decided_on"], format_ts(now), officer_driver)

    # --- cross-partition data: driver cards and GPS tracks that arrive after the reading -------------------

    def pending(self) -> list[dict]:
        return db.pending_cases(self.conn)

    def resolve_pending(self, registry, now_ms: int | None = None) -> list[dict]:
        """Re-resolve driver identity and source site of cases whose covering data may still be on its way.

        A case waits until the vehicle's track has passed the passage (watermark: a track point at or after
        it) or ``case.resolve_timeout_s`` has run out; either way what is there now is compared with the case,
        and any change (a card login found, a loading site traced) is recorded as an ``amend`` fact — a new
        signed chain entry, the Art. 66 views recomputed. A covered case is done; a timed-out one stays open to
        late data for ``case.late_data_h``. Returns the amendments made."""
        from roadwatch.models.overload import trace_source_site
        now_ms = int(datetime.now(timezone.utc).timestamp() * 1000) if now_ms is None else int(now_ms)
        timeout_ms = int(self.cfg["case.resolve_timeout_s"]) * 1000
        late_ms = int(float(self.cfg["case.late_data_h"]) * 3_600_000)
        tracks, drivers = ArchiveTracks(self.conn), ArchiveDrivers(self.conn)
        out = []
        for p in self.pending():
            last = last_track_ts(self.conn, p["plate"])
            covered = last is not None and last >= p["ts_ms"]
            age = now_ms - p["detected_ms"]
            if not covered and age < timeout_ms:
                continue
            changes = self._late_changes(p["case_id"], p["plate"], p["ts_ms"], registry, tracks, drivers,
                                         trace_source_site)
            now = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
            with self.conn.transaction() as c:
                row = db.get_case(c, p["case_id"])
                if changes and row is not None:
                    acts = self.history(p["case_id"])
                    if lifecycle.derive(acts)["status"] not in lifecycle.FINAL:
                        act = Act(p["case_id"], "amend", SYSTEM, format_ts(now), format_ts(now),
                                  "late data: " + "; ".join(ch["note"] for ch in changes),
                                  details={ch["field"]: ch["value"] for ch in changes})
                        self._insert_act(c, act, len(acts) + 1)
                        for ch in changes:
                            if ch["field"] == "source_site_id":
                                db.set_case_source_site(c, p["case_id"], ch["value"])
                            else:
                                db.set_case_card_driver(c, p["case_id"], ch["value"])
                        self._recompute_escalations(c, row, now)
                        out.append({"case_id": p["case_id"], "changes": changes})
                if covered or age >= late_ms or row is None:
                    db.drop_pending(c, p["case_id"])
                else:
                    db.mark_pending_provisional(c, p["case_id"])
            if changes:
                self._evidence_sync(p["case_id"])
        return out

    def _late_changes(self, case_id, plate, ts_ms, registry, tracks, drivers, trace) -> list[dict]:
        row = self.get(case_id)
        st = db.case_state(self.conn, case_id)
        if row is None or st is None:
            return []
        changes = []
        card = drivers.active_driver(plate, ts_ms)
        if card and st["driver_source"] not in ("ic_card", "officer"):
            changes.append({"field": "driver_id", "value": card,
                            "note": f"IC card login of driver {card} active at the passage"})
        if not row["source_site_id"]:
            site = trace(registry, self.cfg, tracks, plate, ts_ms)
            if site.get("site_id"):
                changes.append({"field": "source_site_id", "value": site["site_id"],
                                "note": f"loading stop at source site {site['site_id']} traced on the track"})
        return changes

    # --- evidence: later facts as signed chain entries ---------------------------------------------------------

    def _evidence_sync(self, case_id: str) -> int:
        """Every act after detection becomes a signed entry on the case's evidence chain (the package is never
        rewritten). Idempotent per act id, so an entry lost to a crash after the act was stored is written by
        the case's next act. Returns how many entries could not be written now (0 = all there)."""
        row = self.get(case_id)
        if not row or not row.get("evidence_path") or self.data_dir is None:
            return 0
        pkg = Path(row["evidence_path"])
        if not pkg.is_absolute() and not (pkg / "manifest.json").exists():
            pkg = self.data_dir / pkg
        if not (pkg / "manifest.json").exists():
            return 0
        acts = [a for a in self.history(case_id) if a.action != "detect"]
        try:
            key = self._key(self.data_dir)
            for a in acts:
                d = a.as_dict()
                append_entry(pkg, {"id": d.pop("act_id"), "kind": "act", **d}, key=key,
                             sync=self.cfg["evidence.chain_sync"])
        except (EvidenceError, OSError) as e:
            log.warning("case %s: evidence entry not written yet (%s); retried with the case's next act",
                        case_id, e)
            return len(acts)
        self.archive_evidence(case_id, pkg)
        return 0

    def archive_evidence(self, case_id: str, pkg: Path) -> int:
        """Store the package's files the archive does not hold yet (entries and documents appended since);
        returns how many."""
        files = package_files(pkg)
        with self.conn.transaction():
            n = evidence_db.store_package_files(self.conn, case_id, files, format_ts(datetime.now(timezone.utc)))
            chain_id = (orjson.loads(dict(files)["manifest.json"]).get("chain") or {}).get("chain_id")
            if chain_id:
                archive_chain(self.conn, pkg.parent, chain_id)
        return n

    def evidence_package(self, case_id: str) -> Path | None:
        """The case's package to read: its folder when this host holds it, else a copy of what the archive
        holds, materialised under ``<data_dir>/evidence-archive/<case_id>`` (refreshed when the archive has
        files the copy lacks). None when the case has no package anywhere. Write only into the folder the
        case's ``evidence_path`` names (its chain lives there): the copy is for reading."""
        local = documents.package_of(self, case_id)
        if local is not None:
            return local
        if self.data_dir is None:
            return None
        dest = self.data_dir / EVIDENCE_COPIES / case_id
        stored = evidence_db.package_files(self.conn, case_id)
        if stored and all((dest / p).is_file() for p, _ in stored):
            return dest
        if not evidence_db.materialise(self.conn, case_id, dest):
            if stored:
                log.warning("case %s: archived evidence package unreadable or altered", case_id)
            return None
        return dest

    # --- Art. 66 views ------------------------------------------------------------------------------------

    def _facts(self, target: str | None = None, subject: str | None = None) -> list[art66.CaseFacts]:
        """Every case's Art. 66 facts, or (``target``, ``subject``) only the decided, not void cases of that
        subject (only those can count: models/art66.py)."""
        if not self.conn.in_transaction:
            self._migrate()
        rows = db.case_facts_rows(self.conn, target, subject)
        if not rows:
            return []
        ids = [r["case_id"] for r in rows]
        acts: dict[str, list[Act]] = {i: [] for i in ids}
        for r in db.case_acts_of(self.conn, ids):
            acts[r["case_id"]].append(_act_from_row(r))
        out = []
        for r in rows:
            src = r["driver_source"]
            det = r["det_driver"]
            if src == "officer":          # the cached row holds the officer's entry: detection is in the acts
                src, det = "unknown", None
            out.append(art66.CaseFacts(case_id=r["case_id"], plate=r["plate"], enterprise_id=r["enterprise_id"],
                                       goods_vehicles=r["goods_vehicles"], driver_id=det, driver_source=src,
                                       acts=acts[r["case_id"]]))
        return out

    def escalations(self, at: str) -> list[dict]:
        """``roadwatch escalations``: every subject over its Art. 66 threshold in the window ending at ``at``,
        with the open (or latest) proposal that covers it."""
        at_iso = legal_date(at, datetime.now(timezone.utc))
        out = art66.escalations_at(self._facts() + notices.art66_facts(self.conn), self.cfg, at_iso)
        props = self.proposals(subjects=sorted({e["subject"] for e in out}))
        for e in out:
            mine = [p for p in props if p["target"] == e["target"] and p["subject"] == e["subject"]]
            covering = [p for p in mine if set(p["basis"]["case_ids"]) & set(e["case_ids"])]
            e["proposal_id"] = (covering or mine or [{}])[-1].get("proposal_id")
        return out

    def _recompute_escalations(self, c, row, now: datetime) -> None:
        """Reconcile the proposals of the subjects this case touches with what the histories now give."""
        self._recompute_subjects(c, row["plate"], row["enterprise_id"], db.case_drivers(c, row["case_id"]),
                                 now)

    def recompute_subjects(self, plate: str, enterprise_id: str | None, drivers: set[str]) -> None:
        """Reconcile the proposals of these subjects (after an inbound 抄告 about them was accepted)."""
        with self.conn.transaction() as c:
            self._recompute_subjects(c, plate, enterprise_id, drivers, datetime.now(timezone.utc))

    def _recompute_subjects(self, c, plate: str, ent: str | None, drivers: set[str], now: datetime) -> None:
        scope = [("vehicle", plate)] + ([("enterprise", ent)] if ent else [])
        scope += [("driver", d) for d in sorted(drivers)]
        for target, subject in scope:
            facts = self._facts(target, subject) + notices.art66_facts(self.conn, **{_SUBJECT_COL[target]: subject})
            found = art66.crossings(facts, self.cfg, only=(target, subject)).get((target, subject))
            self._reconcile(c, target, subject, found, art66.counting_ids(facts, self.cfg), now)

    def _proposal_acts(self, proposal_id: str) -> list[Act]:
        return [Act(case_id=r["proposal_id"], action=r["action"], by=r["by_officer"], at=r["at"],
                    entered_at=r["entered_at"], reason=r["reason"],
                    details=orjson.loads(r["details"]) if r["details"] else None)
                for r in db.proposal_acts(self.conn, proposal_id)]

    def _proposal_note(self, c, proposal_id: str, action: str, at: str, now: datetime,
                       reason: str | None = None, details: dict | None = None, by: str = SYSTEM) -> None:
        seq = db.count_proposal_acts(c, proposal_id) + 1
        aid = f"{proposal_id}:{seq}:{action}" if action in ("basis", "flag") else f"{proposal_id}:{action}"
        db.insert_proposal_act(c, aid, proposal_id, seq, action, by, at, format_ts(now), reason,
                               orjson.dumps(details).decode() if details is not None else None)

    def _reconcile(self, c, target: str, subject: str, found: dict | None, counting_ids: set[str],
                   now: datetime) -> None:
        """Bring the subject's proposals in line with the histories: an open proposal follows the current
        basis; any proposal (open or decided) whose basis lost a case is flagged for review; a new proposal
        is created when the subject is over its threshold on cases no earlier proposal covered."""
        rows = db.subject_proposals(c, target, subject)
        statuses = {r["proposal_id"]: art66.proposal_status(self._proposal_acts(r["proposal_id"])) for r in rows}
        open_rows = [r for r in rows if statuses[r["proposal_id"]] in art66.PROPOSAL_OPEN]
        basis = ({k: found[k] for k in ("count", "threshold", "window_start", "window_end", "case_ids")}
                 if found else None)
        for r in rows:
            st = statuses[r["proposal_id"]]
            old = orjson.loads(r["basis"])
            lost = sorted(set(old["case_ids"]) - counting_ids)
            if st in art66.PROPOSAL_OPEN:
                if basis is not None and old != basis:
                    db.set_proposal_basis(c, r["proposal_id"], orjson.dumps(basis).decode())
                    self._proposal_note(c, r["proposal_id"], "basis", format_ts(now), now, None, basis)
                if basis is None:
                    flag = (f"basis fell away: no window over the threshold any more (was {old['count']} > "
                            f"{old['threshold']}); review the proposal")
                elif lost:
                    flag = f"basis changed: case(s) {', '.join(lost)} no longer count; review the proposal"
                else:
                    flag = r["flag"]
            elif st == "decided" and lost:
                flag = (f"decided on a basis that no longer holds: case(s) {', '.join(lost)} withdrawn or "
                        "dismissed; review the decision")
            else:
                continue
            if flag != r["flag"]:
                db.set_proposal_flag(c, r["proposal_id"], flag)
                self._proposal_note(c, r["proposal_id"], "flag", format_ts(now), now, flag)
        if basis is None or open_rows:
            return
        covered = set()
        for r in rows:
            covered |= set(orjson.loads(r["basis"])["case_ids"])
        if set(basis["case_ids"]) <= covered:
            return                           # already proposed and decided or withdrawn on this basis
        pid = art66.proposal_id(target, subject, basis["case_ids"])
        db.insert_proposal(c, pid, target, subject, art66.SANCTIONS[target], format_ts(now),
                           orjson.dumps(basis).decode())
        self._proposal_note(c, pid, "propose", found["window_end"] + "T00:00:00+08:00", now, None, basis)

    def proposals(self, status: str | None = None, subjects: list[str] | None = None) -> list[dict]:
        """Escalation proposals with their derived status and history (only those about ``subjects``)."""
        out = []
        if subjects is not None:
            subjects = [x for x in subjects if x]
        for r in db.list_proposals(self.conn, subjects):
            acts = self._proposal_acts(r["proposal_id"])
            st = art66.proposal_status(acts)
            if status and st != status:
                continue
            out.append({"proposal_id": r["proposal_id"], "target": r["target"], "subject": r["subject"],
                        "sanction": r["sanction"], "status": st, "created_at": r["created_at"],
                        "basis": orjson.loads(r["basis"]), "flag": r["flag"],
                        "allowed_actions": [a for a, (f, _) in art66.PROPOSAL_TRANSITIONS.items() if st in f],
                        "history": [{k: v for k, v in a.as_dict().items() if k != "act_id"} for a in acts]})
        return out

    def proposal(self, proposal_id: str) -> dict | None:
        subject = db.proposal_subject(self.conn, proposal_id)
        if subject is None:
            return None
        return next((p for p in self.proposals(subjects=[subject]) if p["proposal_id"] == proposal_id), None)

    def act_proposal(self, proposal_id: str, action: str, operator: str, reason: str | None = None, *,
                     at: str | None = None, now: datetime | None = None) -> dict:
        """The proposal's own workflow: legal_review (法制审核) → notify (告知, hearing right) → decide |
        withdraw. Replaying a transition already taken is a no-op."""
        now = now or datetime.now(timezone.utc)
        reason = (reason or "").strip() or None
        act = Act(case_id=proposal_id, action=action, by=(operator or "").strip(),
                  at=legal_date(at, now, not_after_today=True),
                  entered_at=format_ts(now), reason=reason)
        with self.conn.transaction() as c:
            if db.proposal_subject(c, proposal_id) is None:
                raise CaseActionError("not_found", f"no escalation proposal {proposal_id!r}")
            acts = self._proposal_acts(proposal_id)
            if any(a.action == action for a in acts) and action in art66.PROPOSAL_TRANSITIONS:
                out = self.proposal(proposal_id)
                return {**out, "replayed": True}
            try:
                art66.proposal_check(art66.proposal_status(acts), acts, act,
                                     hearing_days=int(self.cfg["case.hearing_days"]))
            except TransitionError as e:
                raise CaseActionError(e.code, e.detail) from None
            self._proposal_note(c, proposal_id, action, act.at, now, reason, by=act.by)
        return {**self.proposal(proposal_id), "replayed": False}


class ArchiveCounters:
    """``CounterSource`` over ``cases``: violations not dismissed, ``since < ts ≤ until`` (second resolution:
    case timestamps are stored as Beijing ISO-8601 seconds)."""

    def __init__(self, conn: ArchiveConnection):
        self.conn = conn

    def vehicle_violations(self, plate, since_ms, until_ms, exclude_case_id):
        return db.count_violations(self.conn, "plate", plate, _iso(since_ms), _iso(until_ms), exclude_case_id)

    def driver_violations(self, driver_id, since_ms, until_ms, exclude_case_id):
        return db.count_driver_violations(self.conn, driver_id, _iso(since_ms), _iso(until_ms), exclude_case_id)

    def source_site_violations(self, site_id, since_ms, until_ms, exclude_case_id):
        return db.count_violations(self.conn, "source_site", site_id, _iso(since_ms), _iso(until_ms),
                                   exclude_case_id)

    def enterprise_violating_vehicles(self, enterprise_id, since_ms, until_ms, exclude_plate):
        return db.count_enterprise_violating_vehicles(self.conn, enterprise_id, _iso(since_ms), _iso(until_ms),
                                                      exclude_plate)


class ArchivePassages:
    def __init__(self, conn: ArchiveConnection):
        self.conn = conn

    def find_passage(self, station_id, plate, ts_ms, window_ms):
        return db.find_passage(self.conn, station_id, plate, ts_ms, window_ms)

    def note_passage(self, station_id, plate, first_ts_ms, passage_id):
        db.note_passage(self.conn, passage_id, station_id, plate, first_ts_ms)


class ArchiveDrivers:
    """``DriverSource`` over ``driver_cards``: the latest card event at or before ts decides."""

    def __init__(self, conn: ArchiveConnection):
        self.conn = conn

    def record_driver_event(self, plate: str, ts: str, event: str, driver_id: str = "") -> None:
        if event not in ("login", "logout"):
            raise ValueError(f"event must be login or logout, got {event!r}")
        t = parse_ts(ts)
        db.record_driver_card(self.conn, plate, iso_to_epoch_ms(ts), format_ts(t), event, driver_id or "")

    def active_driver(self, plate, ts_ms):
        last = db.last_card_event(self.conn, plate, ts_ms)
        if last is None or last[0] != "login" or not last[1]:
            return None
        return last[1]


class ArchiveTracks:
    """``TrackSource`` over ``vehicle_stops`` and ``track_points`` (both written by the GPS path)."""

    def __init__(self, conn: ArchiveConnection):
        self.conn = conn

    def record_points(self, plate: str, ts_ms, lat, lon, speed_kmh) -> None:
        upsert_track_points(self.conn, [(plate, int(t), float(a), float(o), float(s))
                                        for t, a, o, s in zip(ts_ms, lat, lon, speed_kmh)])

    def record_stops(self, plate: str, stops) -> None:
        """(start_ms, end_ms, lat, lon, closed_ms) stops of ``plate`` (tests, imports)."""
        save_stops(self.conn, (), [(plate, int(s), int(e), float(a), float(o), int(c)) for s, e, a, o, c in stops])

    def stops(self, plate, since_ms, until_ms):
        rows = stops_between(self.conn, plate, since_ms, until_ms)
        if not rows:
            e = np.empty(0)
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), e, e.copy()
        a = np.array([tuple(r) for r in rows], dtype=object)
        return (a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(float), a[:, 3].astype(float))

    def points(self, plate, since_ms, until_ms):
        rows = track_between(self.conn, plate, since_ms, until_ms)
        if not rows:
            e = np.empty(0)
            return np.empty(0, dtype=np.int64), e, e.copy(), e.copy()
        a = np.array([tuple(r) for r in rows], dtype=float)
        return a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3]

    def prune_track_points(self, before_ms: int) -> int:
        """Track points and stop events older than ``before_ms`` (data time): how many points."""
        prune_stops(self.conn, before_ms)
        return prune_track_points(self.conn, before_ms)


ArchiveTrack = ArchiveTracks   # the name the worker (streams/wim.py) imports
