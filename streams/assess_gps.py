"""``roadwatch assess gps``: GPS pings as interchange JSON lines (stdin) → alerts as JSON lines (stdout).

The same engine as the stream (``models.ping_state.PingProcessor``), fed in batches of ``--batch`` lines.
Lines are parsed column-wise (orjson per line, then numpy per column) so the command keeps up with the
engine; a malformed line becomes one error JSON line on stderr (``{"line", "reason", "detail"}``), is
counted, and makes the exit code 2 at the end — it never stops the run.

Output: the final version of every alert (an overspeed alert raised while the episode is open and updated
when it ends is printed once, closed), in the order the alerts were first raised, then the offline alerts
of vehicles still silent at the end of the input (checked against the data's own watermark).
``--stats FILE`` writes the vehicle-day rows (``vehicle_day`` columns + ``online``) as JSON lines.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import Iterable

import numpy as np
import orjson

from roadwatch.geo.zones import ZoneIndex
from roadwatch.models.config import Config
from roadwatch.models.pingbatch import PingColumns
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.records import InvalidRecord, check_plausible_time
from roadwatch.models.registry import Registry, RegistryError, load_registry, parse_registry

from .cli import UsageError

# name → (default (… = required), lo, hi, integer) — structural bounds of models.records.parse_ping
_NUMERIC = {
    "plate_color": (..., 0, 255, True), "lat": (..., -90.0, 90.0, False), "lon": (..., -180.0, 180.0, False),
    "speed_kmh": (..., 0.0, 6553.5, False), "heading": (..., 0, 65535, True),
    "altitude_m": (..., -32768.0, 65535.0, False), "alarm_flags": (0, 0, 0xFFFFFFFF, True),
    "status_flags": (0, 0, 0xFFFFFFFF, True),
}
_TEXT = {"plate": 16, "terminal_id": 20}
_NUM_TYPES = {int, float}
_ISO_FAST_LEN = len("2026-01-01T00:00:00+08:00")
_SUFFIX, _PREFIX = itemgetter(slice(19, None)), itemgetter(slice(0, 19))
_TS_MIN, _TS_MAX = 946_684_800_000, 4_102_444_800_000   # 2000-01-01 … 2100-01-01 (epoch ms)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="FILE", help="registry JSON (vehicle categories, zones)")
    p.add_argument("--zones", metavar="FILE",
                   help="zones: JSON list of Zone objects or a registry file (default: the registry's zones)")
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file")
    p.add_argument("--stats", metavar="FILE", help="write vehicle-day rows as JSON lines to FILE")
    p.add_argument("--batch", metavar="N", type=int, default=2000, help="pings per engine batch (default 2000)")
    p.add_argument("--sort-by-time", action="store_true",
                   help="input is not in arrival order (e.g. grouped by plate): read it all, replay in time order")


class _Errors(list):
    def add(self, line: int, reason: str, detail: str) -> None:
        self.append({"line": line, "reason": reason, "detail": detail})


def _ts_column(col: list, bad: np.ndarray, errs: dict) -> np.ndarray:
    """``ts`` as epoch ms: ints (epoch ms) or ISO-8601 strings with an offset."""
    n = len(col)
    out = np.zeros(n, dtype=np.int64)
    types = set(map(type, col))
    if types <= {int}:
        out[:] = col
        rng = (out < _TS_MIN) | (out > _TS_MAX)
        for i in np.flatnonzero(rng):
            _bad(bad, errs, i, "bad_timestamp", f"ts={col[i]} is not epoch milliseconds in 2000–2100")
        return out
    if types == {str} and set(map(len, col)) == {_ISO_FAST_LEN} and set(map(_SUFFIX, col)) == {"+08:00"}:
        fast = list(range(n))      # the common case: every ts is "YYYY-MM-DDTHH:MM:SS+08:00"
    else:
        fast = [i for i, x in enumerate(col) if type(x) is str and len(x) == _ISO_FAST_LEN
                and x.endswith("+08:00")]
    if fast:
        try:
            secs = np.array([col[i][:19] for i in fast] if len(fast) < n else list(map(_PREFIX, col)),
                            dtype="datetime64[s]").astype(np.int64)
            out[fast] = secs * 1000 - 8 * 3_600_000
            done = set(fast)
            for i in np.flatnonzero((out[fast] < _TS_MIN) | (out[fast] > _TS_MAX)):
                _bad(bad, errs, fast[i], "bad_timestamp", f"ts {col[fast[i]]!r} is outside the plausible years")
        except ValueError:
            done = set()
    else:
        done = set()
    for i, x in enumerate(col):
        if i in done:
            continue
        if type(x) is int:
            out[i] = x
            if not _TS_MIN <= x <= _TS_MAX:
                _bad(bad, errs, i, "bad_timestamp", f"ts={x} is not epoch milliseconds in 2000–2100")
        elif type(x) is str and len(x) <= 40:
            try:
                dt = datetime.fromisoformat(x)
            except ValueError:
                _bad(bad, errs, i, "bad_timestamp", f"ts {x!r} is not ISO-8601")
                continue
            if dt.tzinfo is None:
                _bad(bad, errs, i, "bad_timestamp", f"ts {x!r} has no UTC offset")
                continue
            try:
                check_plausible_time(dt)          # years like 1 or 9999 overflow below
            except InvalidRecord as e:
                _bad(bad, errs, i, e.code, e.detail)
                continue
            out[i] = int(round(dt.timestamp() * 1000))
        elif x is None:
            _bad(bad, errs, i, "missing_field", "ts is required")
        else:
            _bad(bad, errs, i, "bad_type", "ts must be epoch ms or an ISO-8601 string with offset")
    return out


def _bad(bad: np.ndarray, errs: dict, i: int, code: str, detail: str) -> None:
    if not bad[i]:
        bad[i] = True
        errs[int(i)] = (code, detail)


def parse_lines(lines: list, first_line: int, errors: _Errors) -> PingColumns | None:
    """JSON lines → ``PingColumns`` of the valid lines; invalid lines are added to ``errors``."""
    try:   # fast path: every line is a JSON object — parsed as one array (one orjson call per chunk)
        dicts = orjson.loads(b"[" + b",".join(lines) + b"]")
        if len(dicts) == len(lines) and set(map(type, dicts)) == {dict}:
            pos = list(range(first_line, first_line + len(dicts)))
            return _columns(dicts, pos, errors)
    except (orjson.JSONDecodeError, TypeError):   # a bad line (or str lines): sort it out line by line
        pass
    dicts = []
    pos = []
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            errors.add(first_line + k, "bad_json", str(e)[:120])
            continue
        if type(d) is not dict:
            errors.add(first_line + k, "bad_json", f"expected a JSON object, got {type(d).__name__}")
            continue
        dicts.append(d)
        pos.append(first_line + k)
    return _columns(dicts, pos, errors)


def _col(dicts: list, name: str, default=None) -> list:
    return list(map(dict.get, dicts, repeat(name), repeat(default)))


def _columns(dicts: list, pos: list, errors: _Errors) -> PingColumns | None:
    n = len(dicts)
    if n == 0:
        return None
    bad = np.zeros(n, dtype=bool)
    errs: dict[int, tuple[str, str]] = {}
    cols: dict = {}
    for name, lim in _TEXT.items():
        col = _col(dicts, name)
        if set(map(type, col)) == {str} and 0 < min(map(len, col)) and max(map(len, col)) <= lim:
            cols[name] = col
            continue
        for i, x in enumerate(col):
            if type(x) is not str or not 0 < len(x) <= lim:
                _bad(bad, errs, i, "missing_field" if x is None else "bad_type",
                     f"{name} must be a string of 1–{lim} characters")
        cols[name] = col
    cols["ts"] = _ts_column(_col(dicts, "ts"), bad, errs)
    for name, (default, lo, hi, integer) in _NUMERIC.items():
        col = _col(dicts, name) if default is ... else _col(dicts, name, default)
        if set(map(type, col)) <= _NUM_TYPES:
            arr = np.array(col, dtype=np.float64)
        else:
            arr = np.zeros(n, dtype=np.float64)
            for i, x in enumerate(col):
                if type(x) in _NUM_TYPES:
                    arr[i] = x
                elif x is None and default is not ...:
                    arr[i] = default
                else:
                    _bad(bad, errs, i, "missing_field" if x is None else "bad_type", f"{name} must be a number")
        wrong = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
        for i in np.flatnonzero(wrong):
            _bad(bad, errs, i, "out_of_range", f"{name}={col[i]} outside [{lo}, {hi}]")
        if integer:
            for i in np.flatnonzero(np.isfinite(arr) & (arr != np.floor(arr))):
                _bad(bad, errs, i, "bad_type", f"{name} must be an integer")
            arr = np.where(np.isfinite(arr), arr, 0).astype(np.int64)
        cols[name] = arr
    reup = _col(dicts, "reupload", False)
    if not set(map(type, reup)) <= {bool}:
        for i, x in enumerate(reup):
            if type(x) is not bool:
                _bad(bad, errs, i, "bad_type", "reupload must be true/false")
    cols["reupload"] = np.array([x is True for x in reup], dtype=bool)
    recv = None
    if any("recv_ts" in d for d in dicts):
        rb = np.zeros(n, dtype=bool)
        recv = _ts_column([d.get("recv_ts", d.get("ts")) for d in dicts], rb, {})  # noqa: rare
        recv = np.where(rb, cols["ts"], recv)
    for i in sorted(errs):
        errors.add(pos[i], *errs[i])
    keep = np.flatnonzero(~bad)
    if len(keep) == 0:
        return None
    kl = keep.tolist()
    driver, mileage = _col(dicts, "driver_id"), _col(dicts, "mileage_km")
    return PingColumns(
        plate=[cols["plate"][i] for i in kl] if len(kl) < n else cols["plate"],
        terminal_id=[cols["terminal_id"][i] for i in kl] if len(kl) < n else cols["terminal_id"],
        plate_color=cols["plate_color"][keep], ts=cols["ts"][keep], lat=cols["lat"][keep], lon=cols["lon"][keep],
        speed_kmh=cols["speed_kmh"][keep], heading=cols["heading"][keep], altitude_m=cols["altitude_m"][keep],
        alarm_flags=cols["alarm_flags"][keep], status_flags=cols["status_flags"][keep],
        reupload=cols["reupload"][keep], driver_id=[driver[i] for i in kl] if len(kl) < n else driver,
        mileage_km=[mileage[i] for i in kl] if len(kl) < n else mileage, recv_ts=None if recv is None else recv[keep])


def take(c: PingColumns, sel: np.ndarray) -> PingColumns:
    """The pings ``sel`` (index array) of a batch, in that order."""
    lst = sel.tolist()
    return PingColumns(
        plate=[c.plate[i] for i in lst], terminal_id=[c.terminal_id[i] for i in lst], plate_color=c.plate_color[sel],
        ts=c.ts[sel], lat=c.lat[sel], lon=c.lon[sel], speed_kmh=c.speed_kmh[sel], heading=c.heading[sel],
        altitude_m=c.altitude_m[sel], alarm_flags=c.alarm_flags[sel], status_flags=c.status_flags[sel],
        reupload=c.reupload[sel], driver_id=[c.driver_id[i] for i in lst], mileage_km=[c.mileage_km[i] for i in lst],
        recv_ts=None if c.recv_ts is None else c.recv_ts[sel])


def _concat(parts: list[PingColumns]) -> PingColumns:
    def cat(name):
        return np.concatenate([getattr(p, name) for p in parts])
    lists = {k: [x for p in parts for x in getattr(p, k)] for k in ("plate", "terminal_id", "driver_id", "mileage_km")}
    recv = (np.concatenate([p.recv_ts if p.recv_ts is not None else p.ts for p in parts])
            if any(p.recv_ts is not None for p in parts) else None)
    return PingColumns(plate_color=cat("plate_color"), ts=cat("ts"), lat=cat("lat"), lon=cat("lon"),
                       speed_kmh=cat("speed_kmh"), heading=cat("heading"), altitude_m=cat("altitude_m"),
                       alarm_flags=cat("alarm_flags"), status_flags=cat("status_flags"), reupload=cat("reupload"),
                       recv_ts=recv, **lists)


def run_pings(lines: Iterable[bytes], registry: Registry | None, zones, cfg: Config, batch: int = 2000,
              now_ms: int | None = None, sort_by_time: bool = False) -> tuple[list[dict], list[dict], list[dict]]:
    """The batch path: (final alerts in first-raised order, vehicle-day rows, errors).

    The input is processed in its own order, as the stream would receive it (watermark, "late", offline and
    the max-lag check all follow that order). Input grouped by vehicle (e.g. an export sorted by plate)
    must be passed with ``sort_by_time=True``: it is then read completely and replayed in time order
    (stable), as if received live. ``zones``: None (the registry's zones), a ``ZoneIndex`` or a list of
    ``Zone``. ``now_ms``: processing clock for the "future" check of pings without ``recv_ts``
    (default: the wall clock)."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    proc = PingProcessor(cfg, registry, zones)
    alerts: dict[str, dict] = {}
    errors = _Errors()
    buf: list = []
    held: list[PingColumns] = []
    line_no = 0
    first = 1

    def apply(cols: PingColumns) -> None:
        for a in proc.process(cols, now_ms=now_ms).alerts:
            alerts[a["alert_id"]] = a   # an update keeps the first-raised position

    def flush() -> None:
        cols = parse_lines(buf, first, errors)
        if cols is not None:
            held.append(cols) if sort_by_time else apply(cols)

    for raw in lines:
        line_no += 1
        buf.append(raw)
        if len(buf) >= batch:
            flush()
            buf = []
            first = line_no + 1
    if buf:
        flush()
    if held:
        allc = _concat(held)
        order = np.argsort(allc.ts, kind="stable")
        for s in range(0, len(order), batch):
            apply(take(allc, order[s:s + batch]))
    for a in proc.check_offline():
        alerts.setdefault(a["alert_id"], a)
    return list(alerts.values()), proc.day_rows(dirty_only=True), sorted(errors, key=lambda e: e["line"])


def _load_zones(path: str | None, registry: Registry) -> ZoneIndex:
    if path is None:
        return ZoneIndex.from_registry(registry)
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except OSError as e:
        raise UsageError(f"cannot read zones file {path}: {e.strerror}") from None
    except orjson.JSONDecodeError as e:
        raise UsageError(f"zones file {path} is not valid JSON: {e}") from None
    if isinstance(data, list):
        data = {"zones": data}
    if not isinstance(data, dict):
        raise UsageError(f"zones file {path}: expected a list of zones or a registry object")
    try:
        reg = parse_registry({"zones": data.get("zones", [])})
    except RegistryError as e:
        raise UsageError(f"zones file {path}: {e}") from None
    return ZoneIndex(reg.zones.values())


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.batch < 1 or args.batch > 100_000:
        raise UsageError("--batch must be 1–100000")
    try:
        registry = load_registry(args.registry)
    except RegistryError as e:
        raise UsageError(str(e)) from None
    zones = _load_zones(args.zones, registry)
    alerts, rows, errors = run_pings(sys.stdin.buffer, registry, zones, cfg, batch=args.batch,
                                     sort_by_time=args.sort_by_time)
    err = sys.stderr.buffer
    for e in errors:
        err.write(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE))
    err.flush()
    out = sys.stdout.buffer
    out.write(b"".join(orjson.dumps(a, option=orjson.OPT_APPEND_NEWLINE) for a in alerts))
    out.flush()
    if args.stats:
        try:
            with open(args.stats, "wb") as f:
                f.write(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
        except OSError as e:
            raise UsageError(f"cannot write --stats {args.stats}: {e.strerror}") from None
    if errors:
        print(f"roadwatch assess gps: {len(errors)} malformed line(s) skipped", file=sys.stderr)
        return 2
    return 0
