"""Shared fixtures for the console tests (test_web_*.py, test_browser_*.py): a small registry, a seeded
archive, and a console served from a background thread for the browser tests."""
from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.models.registry import parse_registry
from roadwatch.streams.archive import open_archive
from roadwatch.streams.web import auth
from roadwatch.streams.web.console import create_console_app, run_console
from roadwatch.streams.web.live import InMemoryFleet, LiveHub

PASSWORD = "correct horse battery"

# a 1×1 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")

REGISTRY = {
    "region": "测试市",
    "enterprises": [
        {"enterprise_id": "E1", "name": "平安客运", "county": "长安区"},
        {"enterprise_id": "E2", "name": "安达危货", "county": "桥西区"},
        {"enterprise_id": "E3", "name": "顺通物流", "county": "桥西区", "goods_vehicles": 20},
    ],
    "vehicles": [
        {"plate": "冀A10001", "plate_color": 2, "category": "客运班车", "enterprise_id": "E1", "county": "长安区",
         "vehicle_kind": "bus", "transport_cert_no": "130100001"},
        {"plate": "冀A10002", "plate_color": 2, "category": "旅游包车", "enterprise_id": "E1", "vehicle_kind": "bus"},
        {"plate": "冀A20001", "plate_color": 2, "category": "危险货物运输车辆", "enterprise_id": "E2"},
        {"plate": "冀A20002", "plate_color": 2, "category": "危险货物运输车辆", "enterprise_id": "E2",
         "in_network": False},
        {"plate": "冀A30001", "plate_color": 2, "category": "普通货车", "enterprise_id": "E3", "axle_count": 6},
    ],
    "source_sites": [
        {"site_id": "S1", "name": "鑫源煤场", "kind": "coal",
         "polygon": [[114.40, 38.10], [114.42, 38.10], [114.42, 38.12], [114.40, 38.12], [114.40, 38.10]]},
    ],
    "zones": [
        {"zone_id": "Z1", "name": "市区禁行区", "kind": "restricted",
         "polygon": [[114.48, 38.02], [114.56, 38.02], [114.56, 38.08], [114.48, 38.08], [114.48, 38.02]]},
    ],
    "stations": [
        {"station_id": "ST1", "name": "石安治超站", "lat": 38.00, "lon": 114.40, "county": "桥西区"},
        {"station_id": "ST2", "name": "北郊治超站", "lat": 38.15, "lon": 114.60, "county": "长安区"},
    ],
}


def registry():
    return parse_registry(orjson.loads(orjson.dumps(REGISTRY)))


# cheap argon2 parameters keep the suite fast; test_web_auth checks the production defaults separately
FAST_HASH = {"web.argon2_time_cost": 1, "web.argon2_memory_kib": 1024}


def make_cfg(tmp_path: Path, **overrides) -> Config:
    return Config({"paths.data_dir": str(tmp_path / "var"), **FAST_HASH, **overrides})


def seed_user(cfg: Config, username: str, role: str, password: str = PASSWORD) -> None:
    auth.upsert_user(open_archive(cfg.archive_path), username, role, password, cfg)


def seed_case(cfg: Config, case_id: str = "C-ST1-冀A30001-1", status: str = "detected", *,
              with_image: bool = True, plate: str = "冀A30001") -> dict:
    conn = open_archive(cfg.archive_path)
    ev_dir = cfg.data_dir / "evidence" / "2024-05-06" / "case1"
    ev_dir.mkdir(parents=True, exist_ok=True)
    if with_image:
        (ev_dir / "front.png").write_bytes(PNG)
    manifest = {
        "case_id": case_id, "plate": plate, "gross_kg": 55300, "limit_kg": 49000, "tolerance": 0.05,
        "excess_kg": 6300, "fine_yuan": 3000, "axle_count": 6,
        "counters": {"vehicle_365d": 2, "driver_365d": 1, "enterprise_share": 0.05},
        "track": [{"ts": "2024-05-06T07:10:00+08:00", "lat": 38.11, "lon": 114.41},
                  {"ts": "2024-05-06T08:00:00+08:00", "lat": 38.05, "lon": 114.40},
                  {"ts": "2024-05-06T08:30:00+08:00", "lat": 38.00, "lon": 114.40}],
    }
    row = {"case_id": case_id, "plate": plate, "station_id": "ST1", "ts": "2024-05-06T08:30:00+08:00",
           "day": "2024-05-06", "action": "fine", "violation": 1, "excess_kg": 6300.0, "fine_yuan": 3000,
           "enterprise_id": "E3", "driver_id": None, "source_site_id": "S1", "status": status,
           "evidence_path": str(ev_dir.relative_to(cfg.data_dir)), "manifest": orjson.dumps(manifest).decode()}
    conn.execute(f"INSERT OR REPLACE INTO cases({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                 list(row.values()))
    return row


def seed_alert(cfg: Config, alert_id: str, *, type_: str = "overspeed", plate: str = "冀A10001",
               start_ts: str = "2024-05-06T09:00:00+08:00", severity: str = "medium",
               lat: float | None = 38.05, lon: float | None = 114.50) -> None:
    conn = open_archive(cfg.archive_path)
    conn.execute(
        "INSERT OR REPLACE INTO alerts(alert_id, type, plate, start_ts, end_ts, severity, lat, lon, late, details,"
        " day, emitted_at) VALUES (?,?,?,?,NULL,?,?,?,0,?,?,?)",
        (alert_id, type_, plate, start_ts, severity, lat, lon, orjson.dumps({"speed_kmh": 95}).decode(),
         start_ts[:10], start_ts))


def make_app(cfg: Config, *, hub: LiveHub | None = None, fleet: InMemoryFleet | None = None, **kw):
    hub = hub or LiveHub()
    fleet = fleet or InMemoryFleet()
    app = create_console_app(cfg, archive_path=cfg.archive_path, registry=registry(), live=hub, fleet=fleet,
                             **kw)
    return app, hub, fleet


class ConsoleThread:
    """The console served on 127.0.0.1 from its own event loop (playwright's sync API owns the test thread)."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.runner = self.loop.run_until_complete(run_console(self.app, "127.0.0.1", 0))
        self.port = self.runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10), "console did not start"
        return self

    def __exit__(self, *exc):
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def launch_chromium(playwright, executable_path: str = "/usr/bin/chromium"):
    """Headless Debian Chromium as the browser tests start it."""
    return playwright.chromium.launch(executable_path=executable_path, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"])


def collect_errors(page, errors: list[str]) -> None:
    """Page errors and console errors of ``page`` into ``errors`` (a browser test ends asserting it empty)."""
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)


def logged_in_page(browser, url: str, username: str, errors: list[str], *, width: int = 1366, height: int = 900,
                   password: str = PASSWORD):
    """A new page of ``browser`` logged into the console at ``url`` as ``username`` and ready; page errors go
    into ``errors``."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.set_default_timeout(10_000)
    page.goto(url)
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-btn")
    page.wait_for_selector("body[data-ready='1']")
    return page
