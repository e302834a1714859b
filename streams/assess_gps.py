"""``roadwatch assess gps``: GPS pings as interchange JSON lines (stdin) → alerts as JSON lines (stdout).

The same engine as the stream (``models.ping_state.PingProcessor``), fed in batches of ``--batch`` lines.
stdin's JSON lines are parsed in blocks by Arrow's JSON reader on a second thread while the engine runs
(streams/feed_input.py, models/pingjson.py); a block it cannot vouch for is parsed line by line (orjson,
then numpy per column). A malformed line becomes one error JSON line on stderr (``{"line", "reason",
"detail"}``, its line number in the input), is counted, and makes the exit code 2 at the end — it never
stops the run.

Output: the final version of every alert (an overspeed alert raised while the episode is open and updated
when it ends is printed once, closed; one that late data contradicted is printed with
``details.state = "withdrawn"``), in the order the alerts were first raised, then the offline alerts of
vehicles still silent at the end of the input (checked against the data's own watermark). Lines are
validated with the one ping schema (``models.pingschema``).
``--stats FILE`` writes the vehicle-day rows (``vehicle_day`` columns + ``online``) as JSON lines.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from contextlib import contextmanager
from itertools import islice
from typing import Iterable

import numpy as np
import orjson

from roadwatch.geo.zones import ZoneIndex
from roadwatch.models.config import Config
from roadwatch.models.pingjson import LineErrors as _Errors, parse_lines
from roadwatch.models.pingschema import PingColumns, concat, take
from roadwatch.models.ping_state import OUTPUT_ONLY_STEPS, PingProcessor
from roadwatch.models.timerange import plausible_years
from roadwatch.models.registry import Registry, RegistryError, load_registry, parse_registry

from .cli import UsageError

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="FILE", help="registry JSON (vehicle categories, zones)")
    p.add_argument("--zones", metavar="FILE",
                   help="zones: JSON list of Zone objects or a registry file (default: the registry's zones)")
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file")
    p.add_argument("--stats", metavar="FILE", help="write vehicle-day rows as JSON lines to FILE")
    p.add_argument("--batch", metavar="N", type=int, default=8000, help="pings per engine batch (default 8000)")
    p.add_argument("--sort-by-time", action="store_true",
                   help="input is not in arrival order (e.g. grouped by plate): read it all, replay in time order")


_LINE_TYPES = {bytes, bytearray, str}


def run_pings(lines: Iterable[bytes], registry: Registry | None, zones, cfg: Config, batch: int = 8000,
              now_ms: int | None = None, sort_by_time: bool = False,
              keep_alerts: bool = True) -> tuple[list[dict], list[dict], list[dict]]:
    """The batch path: (final alerts in first-raised order, vehicle-day rows, errors).

    The input is processed in its own order, as the stream would receive it (watermark, "late", offline and
    the max-lag check all follow that order). Input grouped by vehicle (e.g. an export sorted by plate)
    must be passed with ``sort_by_time=True``: it is then read completely and replayed in time order
    (stable), as if received live. ``zones``: None (the registry's zones), a ``ZoneIndex`` or a list of
    ``Zone``. ``now_ms``: processing clock for the "future" check of pings without ``recv_ts``
    (default: the wall clock). ``keep_alerts=False``: alerts are not kept (``report monthly`` needs only the
    day rows), so memory does not grow with them."""
    with _fewer_collections():
        return _run_pings(lines, registry, zones, cfg, batch, now_ms, sort_by_time, keep_alerts)


@contextmanager
def _fewer_collections():
    """The batch path allocates a dict per JSON line and frees it a chunk later (no cycles): with the default
    thresholds the cyclic collector ran every 700 of them and re-scanned the registry and the engine state
    each time (≈ 10 % of the run, docs/performance.md). Long-lived objects are frozen out of its scans and
    young collections run every 100 000 allocations instead; restored afterwards."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _run_pings(lines, registry, zones, cfg, batch, now_ms, sort_by_time, keep_alerts):
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    proc = PingProcessor(cfg, registry, zones, spill_dir=None)     # a batch run: the window in memory
    # sampled track points and stop events are stream outputs (``track_points``, ``vehicle_stops``) with no
    # consumer here: not made at all (≈ 4 % of the province month, docs/performance.md)
    proc.skip_output_steps(OUTPUT_ONLY_STEPS)
    alerts: dict[str, dict] = {}
    errors = _Errors()
    buf: list = []
    held: list[PingColumns] = []
    line_no = 0
    first = 1

    def apply(cols: PingColumns) -> None:
        out = proc.process(cols, now_ms=now_ms)
        # a replay's stop withdrawals (``_retract_stops``) have no consumer either: never held
        proc.stop_retract.clear()
        if keep_alerts:
            for a in out.alerts:
                alerts[a["alert_id"]] = a   # an update keeps the first-raised position

    def flush() -> None:
        cols = parse_lines(buf, first, errors, plausible_years(cfg))
        if cols is not None:
            held.append(cols) if sort_by_time else apply(cols)

    it = iter(lines)
    for item in it:
        if not isinstance(item, (bytes, bytearray, str)):   # a feed record already in columns (feed_input)
            if buf:
                flush()
                buf, first = [], line_no + 1
            held.append(item) if sort_by_time else apply(item)
            continue
        # a line: take the rest of a batch of lines at once (column batches are never read ahead: memory)
        chunk = [item, *islice(it, batch - len(buf) - 1)]
        if not buf and set(map(type, chunk)) <= _LINE_TYPES:   # the common case: a whole batch of lines
            buf = chunk
            line_no += len(chunk)
            if len(chunk) == batch:
                flush()
                buf, first = [], line_no + 1
            continue
        for raw in chunk:
            if not isinstance(raw, (bytes, bytearray, str)):
                if buf:
                    flush()
                    buf, first = [], line_no + 1
                held.append(raw) if sort_by_time else apply(raw)
                continue
            line_no += 1
            buf.append(raw)
            if len(buf) >= batch:
                flush()
                buf = []
                first = line_no + 1
    if buf:
        flush()
    if held:
        allc = concat(held)
        order = np.argsort(allc.ts, kind="stable")
        for s in range(0, len(order), batch):
            apply(take(allc, order[s:s + batch]))
    for a in proc.check_offline():
        if keep_alerts:
            alerts.setdefault(a["alert_id"], a)
    rows = proc.day_rows(dirty_only=True)
    if proc.past:   # late data for days no longer in memory: recomputed on the rows emitted for them
        rows = proc.merge_past_days(rows, [])
    return list(alerts.values()), rows, sorted(errors, key=lambda e: e["line"])


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
    from . import feed_input     # stdin: a scenario/replay feed or JSON lines of pings
    lines, check, _ = feed_input.pings("-", cfg, "assess gps: stdin", columns=True, batch=args.batch)
    alerts, rows, errors = run_pings(lines, registry, zones, cfg, batch=args.batch,
                                     sort_by_time=args.sort_by_time)
    n_engine = len(errors)          # lines the engine rejected; the reader's are in check (JSON lines of pings)
    errors = sorted(errors + check.errors, key=lambda e: e["line"])
    err = sys.stderr.buffer
    for e in errors:
        err.write(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE))
    err.flush()
    if errors:
        print(f"roadwatch assess gps: {len(errors)} malformed line(s) skipped", file=sys.stderr)
    check.verdict(rejected_downstream=n_engine)
    out = sys.stdout.buffer
    out.write(b"".join(orjson.dumps(a, option=orjson.OPT_APPEND_NEWLINE) for a in alerts))
    out.flush()
    if args.stats:
        try:
            with open(args.stats, "wb") as f:
                f.write(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
        except OSError as e:
            raise UsageError(f"cannot write --stats {args.stats}: {e.strerror}") from None
    return 2 if errors or check.rejected else 0
