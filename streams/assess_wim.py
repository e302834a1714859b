"""``roadwatch assess wim``: WIM readings (JSON lines, stdin) → one verdict JSON line per reading (stdout).

The same ``models.overload.assess`` as the stream worker, with in-memory sources: a pings file (interchange
JSON lines) serves as the truck tracks (the loading-site search reads the stop events the GPS engine derives
from them) and, through its ``driver_id`` field, as the driver source; counters
and passages grow as the readings are assessed, in input order. With ``--archive PATH`` the verdicts and
cases are persisted there exactly as the worker does (``streams/wim.py``: same sources, same ``CaseStore``),
so ``roadwatch case act`` and ``roadwatch escalations`` can take over; without it nothing is stored. Malformed lines give an error line
``{"error": code, "detail": …, "line": n}`` and exit code 2 at the end.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import orjson

from roadwatch.models.config import Config, ConfigError, load_config
from roadwatch.models.evidence import EvidenceError, load_signing_key, write_package
from roadwatch.models.overload import MemoryCounters, MemoryDrivers, MemoryPassages, MemoryTracks, assess
from roadwatch.models.records import InvalidRecord, iso_to_epoch_ms, parse_ping, parse_wim_reading, plausible_years
from roadwatch.models.permits import PermitError, PermitIndex, registry_permits
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingschema import PingColumns
from roadwatch.models.registry import Registry, RegistryError, load_registry
from roadwatch.streams.cli import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="FILE", help="registry JSON (without it every plate is unknown → review)")
    p.add_argument("--pings", metavar="FILE", help="GPS pings, interchange JSON lines (tracks and driver ids)")
    p.add_argument("--config", dest="wim_config", metavar="FILE", help="TOML config file")
    p.add_argument("--evidence-dir", metavar="DIR", help="write an evidence package per case here")
    p.add_argument("--chain-id", default="cli", help="evidence hash-chain id (default: cli)")
    p.add_argument("--archive", metavar="PATH", help="persist verdicts and cases into this archive (SQLite); "
                                                     "counters, passages and driver cards come from it too. "
                                                     "Without it the run is a stateless dry run")


def load_pings(path: Path, max_bytes: int, cfg: Config, years: tuple[int, int] | None = None,
               registry: Registry | None = None) -> tuple[MemoryTracks, MemoryDrivers, int]:
    """The pings as the track source: their points, and the stop events the GPS engine derives from them
    (in time order, as the worker would: the loading-site search reads stops), plus their driver ids."""
    tracks, drivers, bad = MemoryTracks(), MemoryDrivers(), 0
    pings: list = []
    from . import feed_input     # a scenario/replay feed or JSON lines of pings
    lines, check, f = feed_input.pings(str(path), cfg, f"--pings {path}")
    with f:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                p = parse_ping(line, max_bytes, years=years)
            except InvalidRecord as e:
                bad += 1
                if bad <= 10:
                    print(f"roadwatch: {path} line {n}: {e.code}: {e.detail}", file=sys.stderr)
                continue
            t = iso_to_epoch_ms(p.ts)
            tracks.add(p.plate, t, p.lat, p.lon, p.speed_kmh)
            pings.append((t, p))
            if p.driver_id:
                drivers.add(p.plate, t, p.driver_id)
    for plate, start, end, lat, lon, _ in _engine_stops(pings, cfg, registry):
        tracks.add_stop(plate, start, end, lat, lon)
    if bad:
        print(f"roadwatch: {path}: {bad} malformed ping line(s) skipped", file=sys.stderr)
    check.verdict(rejected_downstream=bad)
    return tracks, drivers, bad + check.rejected


def _engine_stops(pings: list, cfg: Config, registry: Registry | None, batch: int = 8000) -> list[tuple]:
    """Stop events of ``(ts_ms, GpsPing)`` pings run through the GPS engine in time order."""
    proc = PingProcessor(cfg, registry, spill_dir=None)     # a batch run: the window in memory
    pings.sort(key=lambda x: x[0])
    for k in range(0, len(pings), batch):
        chunk = [p for _, p in pings[k:k + batch]]
        proc.process(PingColumns(
            plate=[p.plate for p in chunk], terminal_id=[p.terminal_id for p in chunk],
            plate_color=np.array([p.plate_color for p in chunk], dtype=np.int64),
            ts=np.array([t for t, _ in pings[k:k + batch]], dtype=np.int64),
            lat=np.array([p.lat for p in chunk], dtype=float), lon=np.array([p.lon for p in chunk], dtype=float),
            speed_kmh=np.array([p.speed_kmh for p in chunk], dtype=float),
            heading=np.array([p.heading for p in chunk], dtype=np.int64),
            altitude_m=np.array([p.altitude_m for p in chunk], dtype=float),
            alarm_flags=np.array([p.alarm_flags for p in chunk], dtype=np.int64),
            status_flags=np.array([p.status_flags for p in chunk], dtype=np.int64),
            reupload=np.array([p.reupload for p in chunk], dtype=bool), driver_id=[p.driver_id for p in chunk],
            mileage_km=[p.mileage_km for p in chunk]), now_ms=None)
    return proc.stop_events()[1]


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.wim_config:
        try:
            cfg = load_config(args.wim_config)
        except ConfigError as e:
            raise UsageError(f"config error: {e}") from None
    try:
        registry = load_registry(args.registry)
        permits = PermitIndex(registry_permits(registry))
    except (RegistryError, PermitError) as e:
        raise UsageError(str(e)) from None
    max_bytes = int(cfg["stream.max_record_bytes"])
    tracks = drivers = None
    bad_input = False
    if args.pings:
        tracks, drivers, bad = load_pings(Path(args.pings), max_bytes, cfg, plausible_years(cfg), registry)
        bad_input = bad > 0
    key = None
    if args.evidence_dir:
        try:
            key = load_signing_key(cfg.data_dir)
        except EvidenceError as e:
            raise UsageError(str(e)) from None
    counters, passages = MemoryCounters(), MemoryPassages()
    store = None
    if args.archive:
        from roadwatch.streams.archive import open_archive
        from roadwatch.streams.cases import ArchiveCounters, ArchiveDrivers, ArchiveTracks, CaseStore
        try:
            conn = open_archive(args.archive)
        except Exception as e:  # noqa: BLE001 - sqlite3 / OS errors name the file for the user
            raise UsageError(f"cannot open archive {args.archive}: {e}") from None
        store = CaseStore(conn, cfg, data_dir=cfg.data_dir)
        counters, passages = ArchiveCounters(conn), store
        if tracks is None:
            tracks, drivers = ArchiveTracks(conn), ArchiveDrivers(conn)
    out = sys.stdout.buffer
    from . import feed_input     # stdin: a scenario/replay feed (its wim-readings records) or JSON lines
    lines, check, _ = feed_input.readings("-", cfg, "assess wim: stdin")
    n_bad = 0
    for n, line in enumerate(lines, 1):
        try:
            reading = parse_wim_reading(line, max_bytes, years=plausible_years(cfg))
        except InvalidRecord as e:
            bad_input = True
            n_bad += 1
            out.write(orjson.dumps({"error": e.code, "detail": e.detail, "line": n}) + b"\n")
            continue
        verdict = assess(reading, registry, cfg, counters=counters, track=tracks, driver=drivers,
                         passages=passages, permits=permits)
        if store is not None:
            try:
                store.record(verdict, reading=reading, evidence_dir=args.evidence_dir, data_dir=cfg.data_dir,
                             chain_id=args.chain_id)
            except (EvidenceError, OSError) as e:
                raise UsageError(f"cannot store {verdict['case_id'] or verdict['passage_id']}: {e}") from None
            if args.evidence_dir and verdict["case_id"] and not verdict["duplicate_of"]:
                verdict["evidence_path"] = str(Path(args.evidence_dir) / verdict["case_id"])
        else:
            counters.record(verdict)
        if store is None and key is not None and verdict["case_id"] and not verdict["duplicate_of"]:
            try:
                pkg = write_package(args.evidence_dir, verdict, reading, chain_id=args.chain_id, key=key,
                                    sync=cfg["evidence.chain_sync"])
            except (EvidenceError, OSError) as e:
                raise UsageError(f"cannot write evidence for {verdict['case_id']}: {e}") from None
            verdict["evidence_path"] = str(pkg)
        out.write(orjson.dumps(verdict) + b"\n")
    out.flush()
    check.verdict(rejected_downstream=n_bad)          # too much rejected: one line saying so, exit 2
    if bad_input:
        print("roadwatch: malformed input: see the error lines on stdout (exit 2)", file=sys.stderr)
    return 2 if bad_input or check.rejected else 0
