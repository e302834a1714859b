"""``roadwatch demo`` — the README's main command: everything on a bare machine, one process tree.

embedded broker → worker (child process, console + /metrics) → a simulated province feed published at
accelerated speed → a live alert ticker on this terminal. The scenario is the last few hours up to *now*,
replayed so that it catches up with the wall clock and never runs ahead of it: trucks cross WIM stations
(some overloaded), a hazardous-goods truck speeds, a bus drives past its driving limit, a vehicle enters a
restricted zone — so alerts appear within seconds. Ctrl-C (or SIGTERM) stops the feed, the
worker and the broker cleanly.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from roadwatch.models.config import Config, load_config
from roadwatch.models.records import BEIJING

from . import topics as T

BACKGROUND_GPS = True
SEVERITY_MARK = {"high": "高", "medium": "中", "low": "低"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speed", type=float, default=30.0, help="simulated time per real second (default 30×)")
    p.add_argument("--hours", type=float, default=5.0, help="simulated hours of traffic, the last ones up to now (default 5)")
    p.add_argument("--vehicles", type=int, default=80, help="background fleet size (default 80)")
    p.add_argument("--port", type=int, default=None, help="console port (default web.port)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--keep-data", action="store_true", help="do not wipe <data_dir>/demo at start")


def demo_scenario(now: datetime, hours: float, vehicles: int, speed: float | None = None) -> dict:
    """A scenario (docs/scenarios.md) that the feed, replayed at ``speed``×, brings up to ``now`` — recent
    history that catches up with the wall clock, so its last alerts are live.

    One clock: event times never run ahead of the wall clock (``demo_start``; the feed also holds any record
    not yet due, ``hold_until_due``), because the evidence ``created_at`` and the audit ``entered_at`` record
    the real time of the act — a weighing "detected" after its evidence was sealed would contradict the
    record (docs/evidence.md). And the feed's day is the wall clock's day: every fix, reading and alert of
    the demo falls on today (Beijing), so the console's "today" and the feed agree."""
    start = demo_start(now, hours, speed)

    def at(minutes: float) -> str:
        return (start + timedelta(minutes=minutes)).isoformat()

    return {
        "scenario": {"name": "demo", "description": "live demo feed", "seed": int(start.timestamp()) % 100000,
                     "start": start.isoformat(), "hours": hours, "settle_before_scripted_wim": False,
                     "flush_s": 2.0},
        # alive within a minute at any hour: departures bunched in the span's first half hour, and in the
        # small hours (a span from 00:00) trucks on the road — nothing but them may legally drive then
        "fleet": {"vehicles": vehicles, "stations": 4, "background_gps": BACKGROUND_GPS, "active_days": 1.0,
                  "truck_active_days": 1.0, "night_trucks": True, "depart_spread_min": 30,
                  "background_wim": True, "overload_rate": 0.15,
                  "drift_vehicle_rate": 0.05, "bad_value_rate": 0.002, "images": "suspect"},
        "vehicle": [
            {"alias": "heavy", "category": "普通货车", "axle_count": 2, "gps": True},
            {"alias": "dg", "category": "危险货物运输车辆"},
            {"alias": "tour", "category": "旅游包车"},
            {"alias": "bus", "category": "客运班车", "long_distance": True, "route_km": 420.0},
        ],
        "behaviour": [
            {"kind": "passage", "vehicle": "heavy", "at": at(1), "over_limit_kg": 3000},
            {"kind": "speeding", "vehicle": "dg", "at": at(2), "speed": 78, "duration_s": 150},
            # Z002 applies to every category (Z001 restricts hazardous goods only): the coach's entry fires
            {"kind": "zone", "vehicle": "tour", "at": at(6), "zone": "Z002", "dwell_min": 8},
        ] + _fatigue(start, hours),
    }


def demo_start(now: datetime, hours: float, speed: float | None = None) -> datetime:
    """The span's start (whole minutes, Beijing): the span ends when a feed replayed at ``speed``× from
    ``now`` catches up with the wall clock (``now + hours / speed``), so at every moment of the replay the
    event time is at or behind the wall clock; then kept within today (not before 00:00, ending before
    midnight). Only when ``now`` is less than ``hours`` after midnight does the span end in the future: the
    feed then holds each record until it is due (``hold_until_due``)."""
    h = min(hours, 23.0)
    nowb = now.astimezone(BEIJING)
    lead = timedelta(hours=h / speed) if speed and speed > 0 else timedelta(0)
    start = (nowb - timedelta(hours=h) + lead).replace(second=0, microsecond=0)
    midnight0 = nowb.replace(hour=0, minute=0, second=0, microsecond=0)
    latest = midnight0 + timedelta(days=1) - timedelta(hours=h, minutes=1)
    return max(midnight0, min(start, latest))


def hold_until_due(records, stop: threading.Event, now=time.time):
    """Yield each record no earlier than its event time on the wall clock ``now()`` (seconds): the demo's
    feed never runs ahead of the time that evidence and audit entries record. Returns when ``stop`` is set."""
    for r in records:
        while not stop.is_set():
            wait = r.ts_ms / 1000.0 - now()
            if wait <= 0:
                break
            stop.wait(min(wait, 1.0))
        if stop.is_set():
            return
        yield r


def _fatigue(start: datetime, hours: float) -> list[dict]:
    """A bus driving past its continuous limit — by day (4 h) or by night (2 h, from 22:00), whichever fits
    inside the demo's span without straddling the two (the rule differs between them)."""
    t = start + timedelta(minutes=10)
    end = start + timedelta(hours=hours)
    night_start = t.replace(hour=22, minute=0)
    if t.hour >= 22 or t.hour < 6:
        night_start = t
    night_end = (night_start + timedelta(days=1)).replace(hour=6, minute=0) if night_start.hour >= 22 \
        else night_start.replace(hour=6, minute=0)
    if 6 <= t.hour < 22 and t + timedelta(hours=4.5) <= min(end, night_start):
        return [{"kind": "fatigue", "vehicle": "bus", "at": t.isoformat(), "drive_h": 4.5}]
    n0 = max(t, night_start + timedelta(minutes=5))
    if n0 + timedelta(hours=2.5) <= min(end, night_end):
        return [{"kind": "fatigue", "vehicle": "bus", "at": n0.isoformat(), "drive_h": 2.5}]
    return []


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.simulators.replay import publish
    from roadwatch.simulators.scenario import build, parse_scenario
    from roadwatch.streams.batcher import make_producer

    from .runtime import stack

    from .proclock import LOCK_NAME, Busy, check_port_free, hold, holder, is_stopping, note_stopping, wait_released

    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    base = Path(cfg["paths.data_dir"]).resolve()
    data = base / "demo"
    port = args.port if args.port is not None else int(cfg["web.port"])
    host = cfg["web.host"]
    # a demo restarted right after Ctrl-C: the previous one is still stopping (its worker, its broker) and
    # said so in its lock's note — wait for it rather than refuse
    who = holder(base / "demo.lock")
    if is_stopping(who):
        wait = float(cfg["demo.restart_wait_s"])
        say(f"waiting up to {wait:g} s for the previous demo to stop ({who}) …")
        who = wait_released(base / "demo.lock", wait)
        if who:
            raise Busy(f"{base} is in use by {who} (not stopped after {wait:g} s)")
    # refuse, touching nothing, while another demo or a worker uses this data directory or the port
    who = who or holder(data / LOCK_NAME)
    if who:
        raise Busy(f"{base if 'demo (' in who else data} is in use by {who}")
    check_port_free(host, port)
    hold(base / "demo.lock", f"roadwatch demo (console port {port})")     # ours from here on
    if data.exists() and not args.keep_data:
        shutil.rmtree(data)  # the embedded broker starts empty: so does the demo's archive
    data.mkdir(parents=True, exist_ok=True)
    overrides = f'paths.data_dir="{data}";web.port={port}'
    prev = os.environ.get("ROADWATCH_SET")
    os.environ["ROADWATCH_SET"] = ";".join(filter(None, [prev, overrides]))
    cfg = load_config(getattr(args, "config", None))

    say("building the simulated feed …")
    scn = parse_scenario(demo_scenario(datetime.now(timezone.utc), args.hours, args.vehicles, args.speed))
    built = build(scn, cfg, images_dir=data / "images")
    reg_path = data / "registry.json"
    built.registry.dump(reg_path)
    st_ = built.stats
    say(f"feed: {st_['vehicles']} vehicles, {st_['stations']} WIM stations, {st_['pings']:,} pings, "
        f"{st_['wim_readings']:,} WIM readings over {args.hours:g} h, replayed at {args.speed:g}× real time")

    password = secrets.token_urlsafe(9)
    _create_operator(cfg, "demo", password)

    stopping = StopSignals((signal.SIGINT, signal.SIGTERM))
    stop = stopping.event

    with stack(cfg, registry_path=str(reg_path), config_path=getattr(args, "config", None)) as st:
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if port == 0 and st.worker:          # "any free port": the worker's ready line names the one it got
            ready = next((x for x in st.worker.lines if "worker ready" in x), "")
            port = ready.split(f"http://{shown}:", 1)[-1].split("/", 1)[0] if f"http://{shown}:" in ready else 0
        print(f"roadwatch demo ready — console http://{shown}:{port}/  user: demo  password: {password}",
              flush=True)
        print(f"  metrics http://{shown}:{port}/metrics · archive {cfg.archive_path} · Ctrl-C to stop",
              flush=True)
        ticker = threading.Thread(target=_ticker, args=(st.bootstrap, stop), daemon=True)
        ticker.start()
        feeder = threading.Thread(target=_feed, args=(built, st, args.speed, stop, publish, make_producer),
                                  daemon=True)
        feeder.start()
        deadline = time.monotonic() + args.duration if args.duration else None
        try:
            while not stopping.requested:
                if deadline and time.monotonic() > deadline:
                    break
                if st.worker and st.worker.proc.poll() is not None:
                    say("the worker stopped unexpectedly:\n" + "\n".join(st.worker.lines[-20:]))
                    return 1
                time.sleep(0.2)        # never inside the event's lock, where a signal handler might find it
        finally:
            stop.set()
            note_stopping(base / "demo.lock")        # a demo started from now on waits for this one
        print("stopping …", flush=True)
    print("stopped cleanly", flush=True)
    return 0


class StopSignals:
    """Ctrl-C / SIGTERM for the demo: the handler only records the signal, and the main thread sets ``event``,
    which the feed and ticker threads wait on. A handler runs between two bytecodes of the main thread; when
    that was inside the event's own lock (``Event.wait`` re-taking it), an ``Event.set`` in the handler waited
    for that lock forever: a demo that ignored Ctrl-C (seen once, both handlers stuck in ``Event.set``)."""

    def __init__(self, signals):
        self.event = threading.Event()
        self.signals: list[int] = []
        for sig in signals:
            signal.signal(sig, self._record)

    def _record(self, signum, _frame) -> None:
        self.signals.append(signum)           # takes no lock

    @property
    def requested(self) -> bool:
        return bool(self.signals) or self.event.is_set()


def _create_operator(cfg: Config, user: str, password: str) -> None:
    from .archive import open_archive
    from .web import auth
    auth.upsert_user(open_archive(cfg.archive_path), user, "operator", password, cfg=cfg)


def _feed(built, st, speed, stop, publish, make_producer) -> None:
    producer = make_producer(st.bootstrap)
    records = built.records

    try:
        res = publish(hold_until_due(records, stop), producer, speed, total=len(records), on_sent=st.note_sent, progress=False)
        if not stop.is_set():
            print(f"[feed] finished: {res['messages']:,} records; the console stays up — Ctrl-C to stop",
                  flush=True)
    except Exception as e:  # noqa: BLE001 - the feed is a demo helper; report and keep the console up
        print(f"[feed] stopped: {e}", file=sys.stderr, flush=True)
    finally:
        try:
            producer.close(timeout=5)
        except Exception:  # noqa: BLE001
            pass


def _ticker(bootstrap: str, stop: threading.Event) -> None:
    """Print each alert once (replays carry the same id) as a line an operator can read at a glance."""
    from kafka import KafkaConsumer
    c = KafkaConsumer(T.ALERTS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False, fetch_max_wait_ms=100)
    seen: set[str] = set()
    try:
        while not stop.is_set():
            for recs in c.poll(timeout_ms=300).values():
                for r in recs:
                    try:
                        a = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue
                    key = f"{a.get('alert_id')}|{a.get('end_ts')}"
                    if key in seen:
                        continue
                    seen.add(key)
                    print(format_alert(a), flush=True)
    finally:
        c.close()


def format_alert(a: dict) -> str:
    t = (a.get("start_ts") or "")[11:19]
    d = a.get("details") or {}
    kind = a.get("type", "?")
    if kind == "overload":
        what = (f"{d.get('action')} {d.get('fine_yuan') or 0} 元: {d.get('gross_kg', 0):,.0f} kg on "
                f"{d.get('limit_kg', 0):,.0f} kg at {d.get('station_id')}")
    elif kind == "overspeed":
        what = f"max {d.get('max_speed_kmh')} km/h > {d.get('limit')} km/h"
    elif kind.startswith("geofence"):
        what = f"zone {d.get('zone_name') or d.get('zone_id')}"
    elif kind == "fatigue":
        what = f"driven {d.get('driving_h')} h > {d.get('limit')} h"
    elif kind == "terminal_alarm":
        what = f"alarm {d.get('name') or d.get('bit')}"
    else:                           # the facts, without the rule's config key (docs name it)
        what = ", ".join(f"{k}={v}" for k, v in list(d.items()) if k != "config_key")[:120]
    ended = " (ended)" if a.get("end_ts") and kind not in ("overload",) else ""
    late = " [late]" if a.get("late") else ""
    return (f"[ALERT {t}] {kind:<15} {a.get('plate', ''):<9} {SEVERITY_MARK.get(a.get('severity'), '?')} "
            f"{what}{ended}{late}")
