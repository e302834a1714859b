"""The one registry of configuration keys (like Traccar's ``Keys``).

Every threshold the rules use is declared here once, with its default, its type, its range (numbers:
finite, inclusive ``lo``/``hi``) and its source: the section of ``docs/legal-basis.md`` that states the
statute and article it rests on, or says that it is a project decision; operational settings say "ops"
(§10 of that page). Values are never buried constants in the rules: the rules receive a ``Config`` and
read keys from it.

Config files are TOML. Tables nest the dotted names, so ``[overlimit] filing_tolerance = 0.04`` sets
``overlimit.filing_tolerance``. ``roadwatch config show`` prints the effective values and where each came
from (default / file / env).
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config file or value is invalid (bad usage: exit code 2)."""


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    source: str          # "docs/legal-basis.md §N (statute / project decision)", or "ops …" for operational settings
    doc: str
    choices: tuple | None = None
    lo: float | None = None   # inclusive bounds for numbers (each item of a list); None = unbounded
    hi: float | None = None

    def check(self, value: Any) -> Any:
        d = self.default
        if isinstance(d, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name}: expected true/false, got {value!r}")
        elif isinstance(d, float) and not isinstance(d, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{self.name}: expected a number, got {value!r}")
            value = float(value)
        elif isinstance(d, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{self.name}: expected an integer, got {value!r}")
        elif isinstance(d, str):
            if not isinstance(value, str):
                raise ConfigError(f"{self.name}: expected a string, got {value!r}")
        elif isinstance(d, list):
            if not isinstance(value, list) or len(value) != len(d):
                raise ConfigError(f"{self.name}: expected a list of {len(d)} values, got {value!r}")
            if any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in value):
                raise ConfigError(f"{self.name}: list items must be numbers or strings, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name}: must be one of {list(self.choices)}, got {value!r}")
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if not math.isfinite(v):
                    raise ConfigError(f"{self.name}: must be a finite number, got {v!r}")
                if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
                    raise ConfigError(f"{self.name}: must lie in [{self.lo}, {self.hi}], got {v!r}")
        return value


KEYS: dict[str, Key] = {}


def _k(name: str, default: Any, source: str, doc: str, choices: Iterable | None = None, *,
       lo: float | None = None, hi: float | None = None) -> None:
    assert name not in KEYS, name
    KEYS[name] = Key(name, default, source, doc, tuple(choices) if choices is not None else None, lo, hi)


# --- overload: Art. 3 limits and adjustments (legal basis §1) -----------------------------------------------
_k("overlimit.single_tyre_reduction_kg", 3000, "docs/legal-basis.md §1 (62号令 Art.3¶2(2))",
   "limit reduction per non-drive axle with single tyres per side (no wide-base tyres)", lo=0, hi=10000)
_k("overlimit.air_suspension_bonus_kg", 1000, "docs/legal-basis.md §1 (交公路发〔2016〕124号 table note 4)",
   "3- and 4-axle trucks with dual-tyre drive axle and air suspension", lo=0, hi=5000)
_k("overlimit.air_suspension_axles", [3, 4], "docs/legal-basis.md §1 (交公路发〔2016〕124号 table note 4)",
   "axle counts (truck) eligible for the air-suspension bonus", lo=2, hi=6)
# --- overload: tolerance, device validity, plate reads (legal basis §2) ----------------------------------
_k("overlimit.filing_tolerance", 0.05, "docs/legal-basis.md §2 (project decision)",
   "default per-station tolerance: over-limit only when gross > limit × (1 + tolerance)", lo=0, hi=0.2)
_k("overlimit.tolerance_mode", "threshold", "docs/legal-basis.md §2 (project decision)",
   "threshold: compare gross with limit×(1+tol), excess = gross − limit; "
   "deduct: subtract tol×gross from the measurement first, excess = deducted − limit",
   ("threshold", "deduct"))
_k("overlimit.requires_valid_calibration", True, "docs/legal-basis.md §2 (62号令, verified devices only; 处罚法 Art.41)",
   "a reading from a device without a valid calibration certificate never produces a fine")
_k("overlimit.min_plate_confidence", 0.9, "docs/legal-basis.md §2 (project decision)",
   "plate reads below this confidence go to review", lo=0, hi=1)
_k("overlimit.dedup_window_s", 120, "docs/legal-basis.md §2 (project decision)",
   "readings of the same plate at the same station within this window are one passage (one case)", lo=0, hi=3600)
# --- overload: Art. 43 fines (legal basis §3) ---------------------------------------------------------------
_k("overlimit.warning_max_kg", 1000, "docs/legal-basis.md §3 (62号令 Art.43(二))",
   "excess up to this → warning, no fine", lo=0, hi=5000)
_k("overlimit.fine_per_tonne_yuan", 500, "docs/legal-basis.md §3 (62号令 Art.43(二))",
   "fine per 1000 kg over", lo=0, hi=10000)
_k("overlimit.fine_cap_yuan", 30000, "docs/legal-basis.md §3 (62号令 Art.43; 条例 Art.64)",
   "maximum fine", lo=0, hi=30000)
_k("overlimit.tonne_rounding", "floor", "docs/legal-basis.md §3 (project decision)",
   "rounding of partial tonnes", ("floor", "ceil"))
# --- overload: axle loads, informational only (legal basis §1, unverified) ----------------------------------
_k("axle.check_enabled", True, "docs/legal-basis.md §1 (GB 1589-2016 axle loads, unverified: informational only)",
   "report axle-load findings (informational, never fined)")
_k("axle.single_single_tyre_kg", 7000, "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "single axle, single tyres", lo=1000, hi=30000)
_k("axle.single_dual_tyre_kg", 10000, "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "single axle, dual tyres", lo=1000, hi=30000)
_k("axle.drive_axle_kg", 11500, "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "single drive axle", lo=1000, hi=30000)
_k("axle.tandem_spacings_m", [1.0, 1.3, 1.8], "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "tandem spacing band edges", lo=0.1, hi=10)
_k("axle.tandem_kg", [11500, 16000, 18000], "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "tandem limits for spacing <1.0 / 1.0–1.3 / 1.3–1.8 m", lo=1000, hi=60000)
_k("axle.tridem_kg", [21000, 24000], "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "tridem limits for spacing ≤1.3 / 1.3–1.4 m", lo=1000, hi=60000)
_k("axle.group_max_spacing_m", 1.8, "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "axles closer than this form a group", lo=0.1, hi=10)
_k("axle.tridem_spacings_m", [1.3, 1.4], "docs/legal-basis.md §1 (GB 1589-2016, unverified)",
   "tridem band edges: largest spacing ≤ first / ≤ second", lo=0.1, hi=10)
# --- police 超载 assessment (legal basis §3) ------------------------------------------------------------------
_k("police.fine_low_yuan", [200, 500], "docs/legal-basis.md §3 (道交法 Art.92)",
   "fine range when over 核定载质量 by ≤ 30 %", lo=0, hi=10000)
_k("police.fine_high_yuan", [500, 2000], "docs/legal-basis.md §3 (道交法 Art.92)",
   "fine range when over by > 30 %", lo=0, hi=10000)
_k("police.high_tier_pct", 30.0, "docs/legal-basis.md §3 (道交法 Art.92)",
   "percentage above which the high fine range applies", lo=0, hi=1000)
_k("police.points_pct", [30.0, 50.0], "docs/legal-basis.md §3 (公安部令第163号)",
   "band edges for 1/3/6 points", lo=0, hi=1000)
_k("police.points", [1, 3, 6], "docs/legal-basis.md §3 (公安部令第163号)",
   "points below / between / at-or-above the band edges", lo=0, hi=12)
# --- 一超四罚 (legal basis §4, §5) --------------------------------------------------------------------------
_k("art66.window_days", 365, "docs/legal-basis.md §4 (条例 Art.66 “1年内”; rolling window: project decision)",
   "rolling window for the Art. 66 counters", lo=1, hi=3660)
_k("art66.vehicle_driver_threshold", 3, "docs/legal-basis.md §4 (条例 Art.66)",
   "more than this many violations escalates", lo=0, hi=1000)
_k("art66.enterprise_share", 0.10, "docs/legal-basis.md §4 (条例 Art.66)",
   "share of goods vehicles strictly above which 停业整顿", lo=0, hi=1)
_k("source.lookback_h", 12.0, "docs/legal-basis.md §5 (62号令 Art.28/32 source sites; parameter: project decision)",
   "how far back the GPS track is searched for the loading stop", lo=0, hi=168)
_k("source.min_stop_min", 15.0, "docs/legal-basis.md §5 (62号令 Art.28/32 source sites; parameter: project decision)",
   "minimum stop inside a site polygon that counts as loading", lo=0, hi=1440)
_k("source.stop_speed_kmh", 3.0, "docs/legal-basis.md §5 (62号令 Art.28/32 source sites; parameter: project decision)",
   "speed at or below which the truck counts as stopped", lo=0, hi=60)
_k("notify.days_after_review", 5, "docs/legal-basis.md §4 (处罚法 Art.41 “及时告知”; days: project decision after the police rule)",
   "notification deadline after review", lo=0, hi=365)
# --- data quality (legal basis §6) ---------------------------------------------------------------
_k("quality.lon_range", [73.55, 135.0833], "docs/legal-basis.md §6 (交运发〔2016〕160号 annex notes)",
   "qualified longitude range (73°33′E–135°05′E)", lo=-180, hi=180)
_k("quality.lat_range", [3.85, 53.55], "docs/legal-basis.md §6 (交运发〔2016〕160号 annex notes)",
   "qualified latitude range (3°51′N–53°33′N)", lo=-90, hi=90)
_k("quality.speed_range_kmh", [0.0, 160.0], "docs/legal-basis.md §6 (交运发〔2016〕160号 annex notes)",
   "qualified speed range", lo=0, hi=1000)
_k("quality.heading_range", [0, 359], "docs/legal-basis.md §6 (交运发〔2016〕160号 annex notes)",
   "qualified heading range", lo=0, hi=360)
_k("quality.alt_range_m", [-200.0, 6500.0], "docs/legal-basis.md §6 (交运发〔2016〕160号 annex notes)",
   "qualified altitude range", lo=-1000, hi=10000)
_k("quality.future_tolerance_s", 60, "docs/legal-basis.md §6 (交运发〔2016〕160号 annex “≤当前时间”; skew: project decision)",
   "a ping later than receipt time by more than this is 'future' (allows small terminal clock skew)", lo=0, hi=86400)
_k("quality.max_lag_s", 7 * 86400, "docs/legal-basis.md §6 (project decision)",
   "a ping older than this at receipt is unqualified", lo=0, hi=31622400)
_k("quality.require_positioned", True, "docs/legal-basis.md §6 (JT/T 808-2019 0x0200 status bit 1)",
   "status bit 1 (positioned) must be set")
# --- drift and track completeness (legal basis §6) ---------------------------------------------------
_k("drift.v_max_kmh", 160.0, "docs/legal-basis.md §6 (project decision)",
   "implied speed above this between qualified points is drift", lo=1, hi=2000)
_k("drift.stationary_jump_km", 0.5, "docs/legal-basis.md §6 (project decision)",
   "jump while reported stationary that counts as drift", lo=0, hi=1000)
_k("drift.stationary_speed_kmh", 1.0, "docs/legal-basis.md §6 (project decision)",
   "reported speed at or below this counts as stationary", lo=0, hi=60)
_k("drift.min_points", 1, "docs/legal-basis.md §6 (project decision)",
   "drift points in the month that make a 漂移车辆", lo=1, hi=1000000)
_k("track.gap_s", 300, "docs/legal-basis.md §6 (project decision)",
   "time gap above which a segment may be incomplete", lo=1, hi=86400)
_k("track.gap_km", 1.0, "docs/legal-basis.md §6 (project decision)",
   "distance above which a timed-out segment is incomplete", lo=0, hi=1000)
# --- live monitoring (legal basis §7) -----------------------------------------------------------------
_k("speeding.min_duration_s", 30, "docs/legal-basis.md §7 (交运发〔2016〕160号 annex notes)",
   "overspeed counts only when continuous for more than this", lo=0, hi=3600)
_k("speeding.merge_s", 60, "docs/legal-basis.md §7 (交运发〔2016〕160号 annex notes)",
   "overspeed episodes closer than this merge into one", lo=0, hi=3600)
_k("speeding.dg_expressway_kmh", 80.0, "docs/legal-basis.md §7 (危险货物道路运输安全管理办法 Art.46)",
   "hazardous goods, expressway", lo=1, hi=300)
_k("speeding.dg_other_kmh", 60.0, "docs/legal-basis.md §7 (危险货物道路运输安全管理办法 Art.46)",
   "hazardous goods, other roads", lo=1, hi=300)
_k("speeding.bus_expressway_kmh", 100.0, "docs/legal-basis.md §7 (道交法实施条例 Art.78, unverified)",
   "buses, expressway (daytime)", lo=1, hi=300)
_k("speeding.bus_other_kmh", 80.0, "docs/legal-basis.md §7 (unverified; project decision)",
   "buses, other roads (daytime)", lo=1, hi=300)
_k("speeding.truck_expressway_kmh", 100.0, "docs/legal-basis.md §7 (道交法实施条例 Art.78, unverified)",
   "other goods vehicles, expressway", lo=1, hi=300)
_k("speeding.truck_other_kmh", 80.0, "docs/legal-basis.md §7 (unverified; project decision)",
   "other goods vehicles, other roads", lo=1, hi=300)
_k("speeding.bus_night_factor", 0.8, "docs/legal-basis.md §7 (道路运输车辆动态监督管理办法, night speed ≤ 80 %)",
   "passenger vehicles at night: fraction of the daytime limit", lo=0.1, hi=1)
_k("night.start", "22:00", "docs/legal-basis.md §7 (project decision)", "night window start (Beijing time)")
_k("night.end", "06:00", "docs/legal-basis.md §7 (project decision)", "night window end (Beijing time)")
_k("fatigue.day_continuous_h", 4.0, "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38; 道交法实施条例 Art.62(7))",
   "continuous driving limit by day", lo=0.1, hi=1000)
_k("fatigue.night_continuous_h", 2.0, "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38)",
   "continuous driving limit by night", lo=0.1, hi=1000)
_k("fatigue.min_rest_min", 20.0, "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38; 道交法实施条例 Art.62(7))",
   "a stop at least this long resets continuous driving", lo=1, hi=1440)
_k("fatigue.day_cum_h", 8.0, "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38)",
   "cumulative driving limit in 24 h", lo=0.1, hi=1000)
_k("fatigue.stop_speed_kmh", 0.0, "docs/legal-basis.md §7 (project decision)",
   "speed at or below which the vehicle counts as stopped", lo=0, hi=60)
_k("curfew.start", "02:00", "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38(5))", "long-distance bus curfew start")
_k("curfew.end", "05:00", "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38(5))", "long-distance bus curfew end")
_k("curfew.exempt_route_km", 100.0, "docs/legal-basis.md §7 (道路旅客运输企业安全管理规范 Art.38(5))",
   "routes up to this length are exempt", lo=0, hi=10000)
_k("curfew.categories", ["客运班车"], "docs/legal-basis.md §7 (project decision)", "categories the curfew applies to")
_k("offline.timeout_s", 900, "docs/legal-basis.md §7 (project decision)",
   "no ping for this long (last seen moving or ACC on) → offline alert", lo=10, hi=604800)
_k("alerts.late_after_s", 300, "docs/legal-basis.md §7 (project decision)",
   "a ping older than this at processing time updates metrics but raises alerts marked late", lo=0, hi=604800)
# --- stream and operations (not legal values) -------------------------------------------------------
_k("stream.partitions", 4, "ops (docs/legal-basis.md §10)", "partitions of the input topics", lo=1, hi=256)
_k("stream.batch_max_pings", 500, "ops (docs/legal-basis.md §10)",
   "ping batch flush size (gateway, simulators)", lo=1, hi=100000)
_k("stream.batch_max_ms", 500, "ops (docs/legal-basis.md §10)",
   "ping batch flush interval: the longest a position waits in a gateway before it is published (0 = at the next "
   "tick); each flush is a Kafka publish cycle with a fixed cost (docs/performance.md, round 7)", lo=0, hi=60000)
_k("stream.gps_coalesce_pings", 8000, "ops (docs/legal-basis.md §10)",
   "ping batches already waiting for the worker are applied together, up to this many pings per engine call "
   "(each call has a fixed cost; nothing waits for batches that have not arrived; 1 = one batch per call)",
   lo=1, hi=1_000_000)
_k("stream.snapshot_interval_s", 5.0, "ops (docs/legal-basis.md §10)",
   "how often per-partition ping state, day rows and track samples are committed (the cost grows with the "
   "number of commits while catching up; live alerts do not wait for it)", lo=0.05, hi=3600)
_k("stream.stats_publish_interval_s", 30.0, "ops (docs/legal-basis.md §10)",
   "how often changed vehicle-day rows are mirrored to the vehicle-day-stats topic", lo=0.05, hi=86400)
_k("stream.session_timeout_s", 2.0, "ops (docs/legal-basis.md §10)",
   "consumer session timeout (the embedded broker holds every join ceil(t/2) s; heartbeats run on Faust's consumer thread)",
   lo=0.5, hi=300)
_k("stream.heartbeat_interval_s", 0.5, "ops (docs/legal-basis.md §10)", "consumer heartbeat", lo=0.05, hi=60)
_k("stream.fetch_max_wait_ms", 100, "ops (docs/legal-basis.md §10)",
   "consumer fetch wait (Faust default 1500 stalls the single-node broker; the embedded broker answers a "
   "waiting fetch up to half this wait after data arrives, Apache Kafka at once: docs/operations.md)",
   lo=1, hi=10000)
_k("stream.producer_linger_ms", 5, "ops (docs/legal-basis.md §10)",
   "how long every producer of the worker (Faust's and the alerts sender) gathers records into one request",
   lo=0, hi=1000)
_k("stream.producer_max_request_bytes", 4_000_000, "ops (docs/legal-basis.md §10)",
   "largest produce request of the worker's producers: must hold a 2 000-ping columnar batch and stay within "
   "the broker's message.max.bytes", lo=1_000_000, hi=100_000_000)
_k("stream.alerts_queued_max", 200_000, "ops (docs/legal-basis.md §10)",
   "alerts waiting for Kafka (broker away) before the agents that raise them wait too (~100 MB at most)",
   lo=1000, hi=10_000_000)
_k("stream.wim_batch_max", 50, "ops (docs/legal-basis.md §10)",
   "WIM readings the worker takes at most at once, of those already waiting (and arriving within "
   "stream.wim_batch_linger_ms): stored in one archive transaction (all or none: a fault repeats them all, "
   "idempotently), then published in order",
   lo=1, hi=1000)
_k("stream.wim_batch_linger_ms", 20.0, "ops (docs/legal-basis.md §10)",
   "when no more WIM readings are waiting, how long the agent waits once for the next ones before it stores "
   "its batch (0 = never): fewer, larger archive transactions for that much latency", lo=0, hi=1000)
_k("stream.max_record_bytes", 1_000_000, "ops (docs/legal-basis.md §10)",
   "larger input records are dead-lettered", lo=1024, hi=100000000)
_k("paths.data_dir", "var", "ops (docs/legal-basis.md §10)", "working data: archive, evidence, reports, keys")
_k("paths.archive", "", "ops (docs/legal-basis.md §10)",
   "archive: a SQLite file path (default <data_dir>/archive.sqlite) or a postgresql://… URL (see archive.url)")
_k("web.port", 6066, "ops (docs/legal-basis.md §10)", "console port (0 = any free port, printed on the ready line)",
   lo=0, hi=65535)
_k("demo.restart_wait_s", 60.0, "ops (docs/legal-basis.md §10)",
   "a demo started while the previous one is still stopping waits this long for it (then refuses)",
   lo=0, hi=3600)
_k("web.session_ttl_s", 8 * 3600, "ops (docs/legal-basis.md §10)", "console session lifetime", lo=60, hi=2592000)
_k("gateway.port", 7808, "ops (docs/legal-basis.md §10)", "JT/T 808 TCP port", lo=0, hi=65535)
_k("gateway.max_frame_bytes", 4096, "ops (docs/legal-basis.md §10)",
   "largest accepted JT/T 808 frame (escaped)", lo=16, hi=1048576)
_k("gateway.idle_timeout_s", 300.0, "ops (docs/legal-basis.md §10)",
   "close an authenticated terminal connection idle this long", lo=0.1, hi=86400)
_k("gateway.max_frames_per_s", 50, "ops (docs/legal-basis.md §10)",
   "per-connection frame rate limit", lo=1, hi=100000)
_k("gateway.max_connections", 10000, "ops (docs/legal-basis.md §10)",
   "concurrent terminal connections (also capped by the descriptor limit minus gateway.fd_reserve)", lo=1, hi=1000000)
_k("gateway.buffer_max_pings", 200_000, "ops (docs/legal-basis.md §10)",
   "pings buffered while Kafka is unreachable before back-pressure", lo=1, hi=50_000_000)
# --- monthly report (legal basis §8) --------------------------------------------------------------------
_k("report.decimals", 2, "docs/legal-basis.md §8 (rounding half-up: project decision)",
   "rates shown rounded half-up to this many decimals", lo=0, hi=6)
_k("report.categories", ["客运班车", "旅游包车", "危险货物运输车辆"], "docs/legal-basis.md §8 (交运发〔2016〕160号 Art.2)",
   "两客一危 categories")
_k("score.network_weight", 5.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "入网率 weight", lo=0, hi=100)
_k("score.network_zero_below", 0.90, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "入网率 below this scores 0", lo=0, hi=1)
_k("score.online_weight", 10.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "上线率 weight", lo=0, hi=100)
_k("score.drift_weight", 15.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "漂移率 weight (15 − rate × 15)", lo=0, hi=100)
_k("score.drift_zero_above", 0.05, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "漂移率 above this scores 0", lo=0, hi=1)
_k("score.track_weight", 40.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "轨迹完整率 weight", lo=0, hi=100)
_k("score.track_zero_below", 0.70, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "轨迹完整率 below this scores 0", lo=0, hi=1)
_k("score.quality_weight", 30.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "数据合格率 weight", lo=0, hi=100)
_k("score.quality_zero_below", 0.80, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, agency table)",
   "数据合格率 below this scores 0", lo=0, hi=1)
_k("report.platform_name", "市级监督平台", "ops (docs/legal-basis.md §10)", "platform name used in the report narrative")
_k("report.trend_months", 6, "ops (docs/legal-basis.md §10)",
   "months shown in the rate trend chart (report month included)", lo=1, hi=120)
_k("report.ranking_size", 5, "ops (docs/legal-basis.md §10)",
   "enterprises/counties listed in each top and bottom ranking", lo=1, hi=1000)
_k("score.rate_basis", "rounded", "docs/legal-basis.md §8 (project decision)",
   "score from the published (rounded) percent or the exact ratio; thresholds are compared on the same basis",
   ("rounded", "exact"))
# enterprise table (道路运输企业, legal basis §8); provinces deviate ("各省可结合地方实际情况优化"), hence keys
_k("score.ent_network_weight", 5.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 入网率 weight", lo=0, hi=100)
_k("score.ent_network_zero_below", 0.90, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 入网率 below this scores 0", lo=0, hi=1)
_k("score.ent_online_weight", 5.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 上线率 weight", lo=0, hi=100)
_k("score.ent_track_weight", 15.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 轨迹完整率 weight", lo=0, hi=100)
_k("score.ent_track_zero_below", 0.70, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 轨迹完整率 below this scores 0", lo=0, hi=1)
_k("score.ent_quality_weight", 15.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 数据合格率 weight", lo=0, hi=100)
_k("score.ent_quality_zero_below", 0.80, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 数据合格率 below this scores 0", lo=0, hi=1)
_k("score.ent_drift_weight", 10.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 漂移率 weight (w − rate × w)", lo=0, hi=100)
_k("score.ent_drift_zero_above", 0.05, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 漂移率 above this scores 0", lo=0, hi=1)
_k("score.ent_overspeed_weight", 20.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 平均超速次数 weight; x ≤ A: w/2 + (A−x)/A·w/2, A < x < 2A: (2A−x)/A·w/2, x ≥ 2A: 0", lo=0, hi=100)
_k("score.ent_fatigue_weight", 20.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 平均疲劳驾驶时长 weight (same A / 2A curve)", lo=0, hi=100)
_k("score.ent_check_weight", 10.0, "docs/legal-basis.md §8 (交运发〔2016〕160号 annex, enterprise table)",
   "enterprise: 平台查岗响应率 weight (rate of the JT/T 809 platform forwarding its vehicles; "
   "not assessed and excluded from max points when there is none)", lo=0, hi=100)
# --- console (streams/web) ------------------------------------------------------------------------
_k("web.sse_queue_max", 1000, "ops (docs/legal-basis.md §10)",
   "events queued per live-feed client; a client that falls further behind is dropped", lo=1, hi=1000000)
_k("web.sse_heartbeat_s", 15.0, "ops (docs/legal-basis.md §10)",
   "live-feed keep-alive comment interval (also re-checks the session)", lo=0.01, hi=3600)
_k("web.live_ring_size", 5000, "ops (docs/legal-basis.md §10)",
   "recent live events kept so a reconnecting client resumes by Last-Event-ID", lo=0, hi=1000000)
_k("web.login_max_failures", 5, "ops (docs/legal-basis.md §10)",
   "failed logins per user or per client address within the window before lock-out", lo=1, hi=1000)
_k("web.login_window_s", 300, "ops (docs/legal-basis.md §10)", "login rate-limit window", lo=1, hi=86400)
_k("web.min_password_len", 10, "ops (docs/legal-basis.md §10)", "minimum console password length", lo=8, hi=1024)
_k("web.fleet_refresh_s", 5.0, "ops (docs/legal-basis.md §10)",
   "how often the console map refreshes vehicle positions", lo=0.5, hi=3600)
_k("web.cookie_secure", False, "ops (docs/legal-basis.md §10)",
   "mark the session cookie Secure (set true when served over HTTPS)")
_k("web.argon2_time_cost", 3, "ops (docs/legal-basis.md §10)",
   "argon2id passes for console password hashes (RFC 9106 low-memory profile)", lo=1, hi=100)
_k("web.argon2_memory_kib", 65536, "ops (docs/legal-basis.md §10)",
   "argon2id memory per console password hash, KiB", lo=8, hi=4194304)

# --- GPS ping engine (models/ping_state.py, geo/track.py) -------------------------------------------
_k("drift.stationary_hold", True, "docs/legal-basis.md §6 (project decision)",
   "while both the last fix and the new point report speed <= drift.stationary_speed_kmh, hold the fix: "
   "stationary GNSS wander adds no distance")
_k("drift.reanchor_after", 3, "docs/legal-basis.md §6 (project decision)",
   "after this many consecutive drift points the latest becomes the new fix (no distance); 0 = never", lo=0, hi=10000)
_k("track.fill_max_gaps", 8, "docs/legal-basis.md §6 (project decision)",
   "open track gaps kept per vehicle for blind-area re-uploads to fill", lo=0, hi=10000)
_k("track.fill_window_h", 48.0, "docs/legal-basis.md §6 (project decision)",
   "open gaps older than this (vs the watermark) can no longer be filled", lo=0, hi=8784)
_k("track.fill_max_points", 2000, "docs/legal-basis.md §6 (project decision)",
   "re-uploaded points kept per open gap", lo=0, hi=10000000)
_k("track.day_slots", 2, "ops (docs/legal-basis.md §10)",
   "vehicle-day counters kept in memory per vehicle (today + late days); " "pings for older days are counted as stale",
   lo=1, hi=366)
_k("alerts.overspeed_high_ratio", 1.2, "docs/legal-basis.md §7 (project decision)",
   "overspeed alert severity high above limit × this", lo=1, hi=10)
_k("alerts.alarm_from_unpositioned", True, "docs/legal-basis.md §7 (project decision)",
   "pass terminal alarms through from pings whose only defects are position fields (e.g. GNSS antenna cut)")

# --- JT/T 808 gateway: terminal identity and per-client bounds (streams/jt808/gateway.py) -----------
_k("gateway.auth_timeout_s", 30.0, "ops",
   "a connection that has not authenticated (0x0102) this long after connecting is closed", lo=0.1, hi=3600)
_k("gateway.max_unauthenticated", 2048, "ops",
   "connections not yet authenticated; when full, the oldest of them is closed to admit a new one", lo=1, hi=1_000_000)
_k("gateway.max_pending_per_address", 64, "ops",
   "unauthenticated connections per source address (terminals behind one carrier NAT share an address)",
   lo=1, hi=1_000_000)
_k("gateway.max_auth_failures", 3, "ops", "failed registrations/authentications per connection before it is closed",
   lo=1, hi=1000)
_k("gateway.reassembly_max_bytes", 65536, "ops",
   "bytes of split-message fragments held per connection; more closes the connection", lo=1024, hi=16_777_216)
_k("gateway.reassembly_max_messages", 16, "ops", "split messages in progress per connection; more closes it",
   lo=1, hi=4096)
_k("gateway.revocation_check_s", 5.0, "ops",
   "how often the gateway looks for revoked auth codes and closes those terminals' connections", lo=0.05, hi=3600)
_k("gateway.fd_reserve", 64, "ops",
   "file descriptors kept free for the Kafka producer, the archive and /metrics", lo=16, hi=100_000)
_k("gateway.accept_pause_s", 1.0, "ops", "pause before accepting again after the descriptor limit was hit",
   lo=0.05, hi=60)
_k("gateway.coalesce_ms", 10.0, "ops",
   "after a read the gateway's event loop handles nothing new for this many ms, so the reads arriving meanwhile "
   "share one wake-up (0 = wake on every read): replies wait at most this long; 10 ms measured −20 % CPU per "
   "position at 333 positions/s, 20 ms −38 % but a p99 over 50 ms on a loaded host (docs/performance.md)",
   lo=0, hi=50)
_k("gateway.event_loop", "uvloop", "ops",
   "uvloop (libuv's loop in C: with coalesced wake-ups, a third of asyncio's median reply delay; "
   "docs/performance.md) or the standard library's asyncio", ("asyncio", "uvloop"))
_k("gateway.producer", "aiokafka", "ops",
   "Kafka client of `roadwatch gateway`: aiokafka in the gateway's event loop (~0.7 ms of CPU per publish cycle "
   "of four records) or kafka-python with its sender thread (~1.8 ms; docs/performance.md)",
   ("aiokafka", "kafka-python"))
_k("gateway.front_end", "auto", "ops",
   "who runs the terminals' sockets: native (the compiled extension streams/jt808/_frontend.c: frames, the "
   "location/heartbeat answers and the position batch in C, everything else handed to the Python gateway; "
   "about half the CPU per position, docs/performance.md), python (the gateway's asyncio protocol), or auto "
   "(native when the extension was built at install time, else python)", ("auto", "python", "native"))
_k("gateway.gc_freeze_s", 60.0, "ops",
   "move long-lived objects out of the cyclic collector this often (0 = only after start-up)", lo=0, hi=86400)


# --- case lifecycle, Art. 66 views, permits (models/lifecycle.py, models/art66.py, models/permits.py) ---
_k("art66.counts_from", "decided", "docs/legal-basis.md §4.3 (project decision; 条例 Art. 66)",
   "earliest case status that counts for Art. 66 (that status and the later ones: decided → served → closed)",
   ("decided", "served", "closed"))
_k("case.statement_days", 3, "docs/legal-basis.md §4.2 (处罚法 Art. 44/45; transport practice [S])",
   "the owner's 陈述申辩 period after notification: no decision dated earlier", lo=0, hi=60)
_k("case.resolve_timeout_s", 600, "docs/legal-basis.md §5.2 (project decision)",
   "a new case waits this long for the GPS track / card events covering its passage (other partitions) before "
   "driver and source site are taken as provisional", lo=0, hi=86400)
_k("case.late_data_h", 48.0, "docs/legal-basis.md §5.2 (project decision)",
   "track or card data arriving up to this long after detection still amends the case (new chain entry, "
   "counts recomputed)", lo=0, hi=720)
_k("case.resolve_interval_s", 30.0, "ops", "how often the worker re-resolves cases waiting for cross-partition data",
   lo=1, hi=3600)
_k("evidence.chain_sync", "behind", "docs/legal-basis.md §10 (project decision)",
   "when an evidence chain link reaches the disk: 'behind' = written under the chain's lock at once, fsync-ed on "
   "a background thread milliseconds later (the archive's own durability); 'each' = fsync before the case is "
   "stored (a few ms per case on the WIM path)", choices=("each", "behind"))
_k("evidence.trusted_keys_dir", "", "ops",
   "folder of trusted public keys for `evidence verify` (default <data_dir>/keys/trusted); refused when "
   "group/world-writable")
_k("case.hearing_days", 5, "docs/legal-basis.md §4.4 (处罚法 Art. 63/64)",
   "period to request a hearing after an escalation proposal is notified: no decision dated earlier", lo=0, hi=60)


# --- GPS rules on real feeds (duplicates, drift time bound, fatigue across gaps) ----------------------
_k("quality.duplicate_tolerance_s", 0, "docs/legal-basis.md §6 (project decision)",
   "a ping of the same vehicle whose fix time is within this many seconds of an earlier one is a duplicate: "
   "counted once (quality reason 'duplicate')", lo=0, hi=3600)
_k("drift.stationary_jump_max_s", 120, "docs/legal-basis.md §6 (project decision)",
   "the stationary-jump drift rule applies only when the points are at most this many seconds apart "
   "(a vehicle parked after one unqualified arrival fix is not drifting); 0 = no time bound", lo=0, hi=86400)
_k("fatigue.rest_max_move_km", 1.0, "docs/legal-basis.md §7 (project decision)",
   "a silence of at least fatigue.min_rest_min counts as rest only if the vehicle moved less than this "
   "across it; a stop that moved more is driving", lo=0.0, hi=100.0)
_k("late.replay_window_h", 1.0, "docs/legal-basis.md §7 (project decision)",
   "late and re-uploaded pings up to this old at least (the window's start moves in event time, one such "
   "step at a time: 1–2× this behind the vehicle's newest fix) are merged into the vehicle's timeline and "
   "every time-ordered rule is re-evaluated; older ones only fill track gaps; 0 = off", lo=0.0, hi=48.0)

# --- console map, tracks and process hygiene (streams/web/, streams/demo.py) ----------------------------
_k("web.host", "127.0.0.1", "ops", "address the console and /metrics listen on; 0.0.0.0 exposes them to the network")
_k("web.tile_url", "", "ops",
   "base-map tile URL template ({z}/{x}/{y}, optional {s}), e.g. a 天地图 URL with its tk key or a self-hosted "
   "tile server; empty = offline: the bundled administrative boundaries only")
_k("web.tile_crs", "wgs84", "ops",
   "datum of the tile source: gcj02 (most Chinese web maps) shifts vehicles and zones for display only",
   choices=("wgs84", "gcj02"))
_k("web.tile_attribution", "", "ops", "attribution text the tile source requires (shown on the map)")
_k("web.boundaries", "hunan", "ops",
   "bundled offline administrative boundaries shown under the map (static/vendor/boundaries/NAME.json); "
   "empty = none")
_k("track.sample_all", True, "ops",
   "sample track points (track.sample_s) for every monitored vehicle, not only goods vehicles: the "
   "console's track playback and area search read them")
_k("track.keep_h", 48.0, "ops",
   "sampled track points and stop events are kept this long (by data time; at least twice source.lookback_h)", lo=1, hi=24 * 400)

# --- archive (streams/archive/) ---------------------------------------------------------------------------
_k("archive.url", "", "ops",
   "PostgreSQL archive, postgresql://user:password@host:port/db (also $ROADWATCH_ARCHIVE); empty = SQLite at "
   "paths.archive")
_k("archive.pool_size", 4, "ops", "PostgreSQL connections per worker process (pool maximum)", lo=1, hi=64)
_k("archive.checkpoint_interval_s", 1.0, "ops (docs/legal-basis.md §10)",
   "SQLite: how often the worker copies its write-ahead log into the database and lets it start over (each "
   "copy's disk sync grows with what the log gathered since the last; PostgreSQL checkpoints by itself)",
   lo=1.0, hi=3600)

# --- JT/T 809 platform link (streams/jt809) ---------------------------------------------------------
_k("jt809.port", 7809, "ops", "JT/T 809 main-link TCP port (lower platforms connect here)", lo=0, hi=65535)
_k("jt809.platforms_file", "", "ops",
   "TOML file of [[platform]] tables: name, center_id, user_id, password, protocol (2011|2019), "
   "cipher = \"M1,IA1,IC1\" (optional), encrypt_downlink; empty = no platform may log in")
_k("jt809.auth_timeout_s", 30.0, "ops", "close a main link that has not logged in (0x1001) within this time",
   lo=1, hi=3600)
_k("jt809.max_refused_logins", 3, "ops", "close a connection after this many refused 0x1001 logins", lo=1, hi=100)
_k("jt809.idle_timeout_s", 180.0, "ops",
   "close a main link silent this long (lower platforms send 0x1005 heartbeats, typically every 60 s)", lo=5, hi=86400)
_k("jt809.max_frame_bytes", 65536, "ops", "largest accepted JT/T 809 frame (as received)", lo=64, hi=16_777_216)
_k("jt809.max_connections", 200, "ops", "concurrent main-link connections", lo=1, hi=100_000)
_k("jt809.slave_link", True, "ops", "open the slave link (0x9001) back to the lower platform after its login")
_k("jt809.slave_heartbeat_s", 60.0, "ops", "slave-link heartbeat (0x9005) interval", lo=1, hi=3600)
_k("jt809.slave_connect_timeout_s", 10.0, "ops", "slave-link connect and answer timeout", lo=0.1, hi=600)
_k("jt809.inspection_answer_minutes", 10, "docs/legal-basis.md §8 (project decision)",
   "查岗 answer deadline sent in 0x9301 (2019 ANSWER_TIME, minutes); a later 0x1301 counts as late, not answered",
   lo=1, hi=255)
_k("jt809.queue_poll_s", 1.0, "ops", "how often the link server picks up inspections queued by the console/CLI",
   lo=0.05, hi=60)

# --- faults: internal failures and plausible times (streams/retry.py, models/records.py) --------------
_k("faults.retry_initial_s", 0.5, "ops",
   "first back-off after an internal fault (disk full, database error, a bug) paused a component; doubles "
   "per failed attempt", lo=0.01, hi=60.0)
_k("faults.retry_max_s", 30.0, "ops", "longest back-off between retries of a paused component", lo=0.05, hi=3600.0)
_k("time.min_year", 2000, "docs/legal-basis.md §10 (project decision)",
   "readings, pings, batches and driver events dated before 1 January of this year are bad_timestamp",
   lo=1970, hi=2100)
_k("time.max_year", 2100, "docs/legal-basis.md §10 (project decision)",
   "readings, pings, batches and driver events dated after 31 December of this year are bad_timestamp",
   lo=2000, hi=2200)


# --- lawful devices (models/devices.py; 行政处罚法 Art. 41) -------------------------------------------------
_k("devices.require_legal_review", True, "docs/legal-basis.md §9.1 (行政处罚法 Art. 41)",
   "a reading may become a fine only if its device's legal review (法制审核) is on file, dated at or before it")
_k("devices.require_technical_review", True, "docs/legal-basis.md §9.1 (行政处罚法 Art. 41)",
   "a reading may become a fine only if its device's technical review (技术审核) is on file, dated at or before it")
_k("devices.require_signage", True, "docs/legal-basis.md §9.1 (行政处罚法 Art. 41)",
   "a reading may become a fine only if its device's signage (设置明显标志) is on file, dated at or before it")
_k("devices.require_announcement", True, "docs/legal-basis.md §9.1 (行政处罚法 Art. 41)",
   "a reading may become a fine only if its device's location was announced to the public (向社会公布), dated at "
   "or before it")


# --- case documents (models/documents.py, streams/documents.py) ------------------------------------------------
_k("documents.agency_name", "某市交通运输综合行政执法支队", "ops",
   "the authority named on notices, 告知书 and 决定书 (the deploying agency's full name)")
_k("documents.seal_text", "（印章）", "ops", "text printed where the agency's seal goes")
_k("documents.agency_contact", "地址：____  电话：____", "ops", "address and telephone printed on every document")
_k("documents.number_prefix", "交执", "ops", "document number prefix: <prefix><kind>〔<year>〕<case id>号")
_k("documents.review_authority", "某市人民政府", "docs/legal-basis.md §9.2 (行政复议法)",
   "the body that hears an administrative review (行政复议机关) of the agency's decisions")
_k("documents.court", "某市某区人民法院", "docs/legal-basis.md §9.2 (行政诉讼法)",
   "the court where a decision may be challenged")
_k("documents.payment_days", 15, "docs/legal-basis.md §9.2 (处罚法 Art. 67)",
   "days after service to pay the fine, printed on the decision", lo=1, hi=60)
_k("documents.review_days", 60, "docs/legal-basis.md §9.2 (行政复议法 Art. 20)",
   "days after service to apply for administrative review, printed on the decision", lo=1, hi=365)
_k("documents.litigation_months", 6, "docs/legal-basis.md §9.2 (行政诉讼法 Art. 46)",
   "months after service to sue, printed on the decision", lo=1, hi=24)
_k("documents.templates_dir", "", "ops",
   "folder with the agency's adapted templates (base.html — the shared frame —, notice.html, inform.html, decision.html, "
   "agency_notice.html); a file missing there "
   "falls back to the bundled one; empty = bundled templates only")


# --- publication of decisions (models/publication.py) --------------------------------------------------------
_k("publication.within_working_days", 7, "docs/legal-basis.md §9.3 (国办发〔2018〕118号 [S])",
   "a decision is to be on the public list within this many working days of its date (publish_by)", lo=1, hi=60)
_k("publication.plate_mask", "middle", "docs/legal-basis.md §9.3 (project decision)",
   "middle: 湘B***3S (province, city letter and the last two characters stay); none: the full plate",
   ("middle", "none"))
_k("publication.mask_organisations", False, "docs/legal-basis.md §9.3 (project decision)",
   "also mask the names of enterprises (a natural person's name is always masked to its first character)")
_k("calendar.holidays", "", "ops",
   "public holidays (comma-separated YYYY-MM-DD) that are not working days; set from the State Council's "
   "yearly notice")
_k("calendar.extra_workdays", "", "ops",
   "weekend days that are working days (调休 make-up days), comma-separated YYYY-MM-DD")


# --- 抄告 and case-file review (models/notices.py, models/case_review.py) ----------------------------------
_k("notices.due_working_days", 7, "docs/legal-basis.md §9.5 (62号令 2016 Art. 44)",
   "the 抄告 to the vehicle's home transport agency is due this many working days after the case is closed "
   "(calendar.* keys)", lo=1, hi=60)
_k("notices.own_agency_id", "local", "ops",
   "this agency's id in the exchange of 抄告 (the sender of our notices; inbound notices must be addressed to it)")
_k("notices.agencies_file", "", "ops",
   "TOML file of the known transport agencies ([[agency]] agency_id, name, plates = plate prefixes of its "
   "area, public_key = its Ed25519 key): where our notices go and whose notices we accept; empty = none known")
_k("notices.publish_interval_s", 30.0, "ops",
   "how often the worker puts unsent 抄告 on the agency-notices topic and refreshes the overdue gauge",
   lo=1.0, hi=3600.0)
_k("review.sample_rate", 0.1, "docs/legal-basis.md §9.6 (project decision)",
   "share of the month's closed cases drawn for case-file review (案卷评查); at least one when any closed",
   lo=0.0, hi=1.0)
_k("review.seed", 0, "docs/legal-basis.md §9.6 (project decision)",
   "seed of the review sample: the same seed and month draw the same files", lo=0, hi=2**31 - 1)
_k("review.decision_days", 90, "docs/legal-basis.md §9.6 (行政处罚法 Art. 60)",
   "a decision is due within this many days after the case is filed (立案)", lo=1, hi=365)
_k("review.service_days", 7, "docs/legal-basis.md §9.6 (行政处罚法 Art. 61)",
   "the decision is to be served within this many days after it is made", lo=0, hi=60)


# --- batch inputs (streams/feed_input.py) ------------------------------------------------------------
_k("input.max_rejected_share", 0.01, "ops",
   "assess gps / assess wim / report monthly --pings: refuse the input (exit 2) when more than this share "
   "of its lines or pings is rejected", lo=0.0, hi=1.0)

# --- interception (布控) at off-site points (models/intercept.py) ---------------------------------------------
_k("intercept.enabled", True, "docs/legal-basis.md §11 (project decision)",
   "create intercept tasks (布控) for passages over the intercept threshold")
_k("intercept.actions", "fine", "docs/legal-basis.md §11 (project decision)",
   "which verdicts are over the intercept threshold: fine (every fine-level case, the default) or "
   "fine_or_warning", ("fine", "fine_or_warning"))
_k("intercept.min_excess_pct", 0.0, "docs/legal-basis.md §11 (project decision)",
   "and only when the excess over the limit is at least this percentage (0: every case of those actions)",
   lo=0.0, hi=1000.0)
_k("intercept.vehicle_kinds", "truck,train", "docs/legal-basis.md §11 (project decision)",
   "vehicle classes intercepted (comma-separated: truck 货车, train 汽车列车)")
_k("intercept.min_axles", 2, "docs/legal-basis.md §11 (project decision)",
   "and only vehicles with at least this many axles", lo=2, hi=12)
_k("intercept.expiry_min", 120, "docs/legal-basis.md §11 (project decision)",
   "a task expires this long after the truck's latest passage that opened or updated it", lo=5, hi=2880)
_k("intercept.max_eta_min", 120.0, "docs/legal-basis.md §11 (project decision)",
   "enforcement points the truck would reach later than this are not tasked", lo=1.0, hi=1440.0)
_k("intercept.max_targets", 3, "docs/legal-basis.md §11 (project decision)",
   "at most this many enforcement points per task (the nearest by ETA)", lo=1, hi=20)
_k("intercept.gps_max_age_s", 600, "docs/legal-basis.md §11 (project decision)",
   "a GPS fix within this many seconds of the passage is the truck's live position (else the road graph)",
   lo=10, hi=7200)
_k("intercept.gps_min_move_m", 50.0, "docs/legal-basis.md §11 (project decision)",
   "the heading comes from the latest fix and the newest earlier fix at least this far from it", lo=1.0, hi=5000.0)
_k("intercept.heading_cone_deg", 60.0, "docs/legal-basis.md §11 (project decision)",
   "a point is ahead of the truck when its bearing lies within this angle of the truck's heading",
   lo=5.0, hi=180.0)
_k("intercept.road_factor", 1.3, "docs/legal-basis.md §11 (project decision)",
   "road distance / straight-line distance, for ETAs from a GPS position", lo=1.0, hi=3.0)
_k("intercept.min_speed_kmh", 20.0, "docs/legal-basis.md §11 (project decision)",
   "a GPS or passage speed below this is not used for an ETA (intercept.default_speed_kmh instead)",
   lo=1.0, hi=120.0)
_k("intercept.default_speed_kmh", 60.0, "docs/legal-basis.md §11 (project decision)",
   "speed assumed for an ETA when neither the GPS fix nor the passage gives a usable one", lo=5.0, hi=120.0)
_k("intercept.mobile_attach_km", 5.0, "docs/legal-basis.md §11 (project decision)",
   "road-graph mode: a mobile team off the graph counts as at the nearest station within this distance",
   lo=0.1, hi=100.0)
_k("intercept.outcome_publish_s", 2.0, "ops",
   "how often the WIM worker puts outcomes recorded in the console or the CLI on intercept-tasks", lo=0.1, hi=3600.0)
_k("intercept.metrics_interval_s", 30.0, "ops",
   "how often the WIM worker refreshes this month's 拦截率 / 查处率 gauges from the archive", lo=1.0, hi=3600.0)

# --- performance: wire format (models/pingbatch.py, docs/formats.md) -------------------------------------------
_k("stream.wire_format", "arrow", "ops (docs/legal-basis.md §10)",
   "encoding of the gps-pings records our producers write (gateway, platform link, simulators): arrow = an Apache "
   "Arrow IPC record batch (read without parsing), json = the JSON columnar form; the worker reads both",
   ("arrow", "json"))
# --- late data for past days and closed months (models/ping_state.py, streams/monthly.py) -------------------
_k("report.close_grace_h", 1.0, "docs/legal-basis.md §8 (project decision)",
   "the monthly report of a month is made this long after the month ends (Beijing time; its statistic time): "
   "late data of the month received before then still counts in it", lo=0.0, hi=240.0)
_k("late.recompute_horizon_days", 0, "docs/legal-basis.md §7 (project decision)",
   "vehicle-day rows of past days are recomputed when late data for them arrives up to this many days after "
   "the day (0 = until the month's report is made, report.close_grace_h); later data is counted on the day "
   "it is received and flagged (late_from_closed)", lo=0, hi=366)
# --- snapshots (issue 19: incremental state commits, streams/gps.py) ----------------------------------------
_k("stream.snapshot_full_every", 12, "ops (docs/legal-basis.md §10)",
   "a partition's snapshot rewrites the replay window's held samples every this many commits; the commits "
   "between append only the samples added since the previous one (restore reads at most this many segments)",
   lo=1, hi=10000)
_k("stream.track_points_per_transaction", 5000, "ops (docs/legal-basis.md §10)",
   "on SQLite, a snapshot commit with more sampled track points than this stores them first, this many per "
   "transaction, so that its own transaction holds the archive's one write lock briefly (~7 ms per 1 000 "
   "points here; docs/performance.md). PostgreSQL has no such lock: one transaction there", lo=1, hi=10_000_000)
_k("stream.gc_freeze_s", 60.0, "ops (docs/legal-basis.md §10)",
   "the worker moves long-lived objects (registry, engine state, Faust) out of the cyclic collector after "
   "start-up and this often (0 = only after start-up): a full collection over them held the event loop "
   "55-125 ms (docs/performance.md)", lo=0, hi=86400)

# --- stop events and track samples (models/ping_state.py ``_step_stops`` / ``_step_track_sampling``) ---
_k("source.stop_max_move_m", 300.0, "docs/legal-basis.md §5 (62号令 Art.28/32 source sites; parameter: project decision)",
   "a stop (speed <= source.stop_speed_kmh) ends when the vehicle is this far from where it stopped; stops of "
   "goods vehicles lasting source.min_stop_min are archived (vehicle_stops) and searched for the loading site",
   lo=10, hi=5000)
_k("track.sample_s", 120, "ops",
   "one archived track point per vehicle per this many seconds (track_points: the console's playback and area "
   "search, the intercept's GPS fix and heading, the case watermark; source tracing reads stop events)",
   lo=1, hi=3600)


class Config:
    """Effective configuration: defaults overlaid by a TOML file and ``ROADWATCH_<KEY>`` env vars."""

    def __init__(self, values: dict[str, Any] | None = None, origins: dict[str, str] | None = None):
        self._values = {k: key.default for k, key in KEYS.items()}
        self._origin = {k: "default" for k in KEYS}
        self.reads: set[str] | None = None      # names read, while ``record_reads()`` is on (tests)
        for k, v in (values or {}).items():
            self.set(k, v, (origins or {}).get(k, "override"))

    def record_reads(self) -> set[str]:
        """Start recording which keys are read (tests/test_config_honoured.py); returns the live set."""
        self.reads = set()
        return self.reads

    def set(self, name: str, value: Any, origin: str = "override") -> None:
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"unknown config key {name!r} (see `roadwatch config show`)")
        self._values[name] = key.check(value)
        self._origin[name] = origin

    def __getitem__(self, name: str) -> Any:
        if self.reads is not None:
            self.reads.add(name)
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        if self.reads is not None:
            self.reads.add(name)
        return self._values.get(name, default)

    def origin(self, name: str) -> str:
        return self._origin[name]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def data_dir(self) -> Path:
        return Path(self["paths.data_dir"])

    @property
    def archive_path(self) -> Path | str:
        """The archive: a PostgreSQL URL (``archive.url``, or a URL in ``paths.archive``) as a string, else
        the SQLite file as a ``Path`` (streams/archive/ opens either)."""
        url = self["archive.url"]
        if url:
            return url
        p = self["paths.archive"]
        if "://" in p or p.startswith("sqlite:"):
            return p
        return Path(p) if p else self.data_dir / "archive.sqlite"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file (``path`` or ``$ROADWATCH_CONFIG``), then ``ROADWATCH_SET`` overrides.

    ``ROADWATCH_SET="stream.partitions=8;web.port=7000"`` overrides single keys (values parsed as TOML).
    """
    env = os.environ if env is None else env
    cfg = Config()
    path = path or env.get("ROADWATCH_CONFIG")
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} cannot be read as UTF-8 text: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
        for k, v in _flatten(data).items():
            cfg.set(k, v, f"file:{p}")
    for item in filter(None, (env.get("ROADWATCH_SET") or "").split(";")):
        name, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"ROADWATCH_SET item {item!r} is not KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        cfg.set(name.strip(), value, "env:ROADWATCH_SET")
    if env.get("ROADWATCH_ARCHIVE"):
        cfg.set("archive.url", env["ROADWATCH_ARCHIVE"], "env:ROADWATCH_ARCHIVE")
    return cfg


def read_toml_file(cfg: Config, key: str) -> tuple[dict, str] | None:
    """The TOML file a config key names (``jt809.platforms_file``, ``notices.agencies_file``) as (data, path);
    None when the key is empty. ConfigError when it is missing or unreadable."""
    path = cfg[key]
    if not path:
        return None
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8")), str(p)
    except FileNotFoundError:
        raise ConfigError(f"{key} not found: {p}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{key} {p} cannot be read: {e}") from None


def render_toml(cfg: Config) -> str:
    """The effective config as a commented TOML document (``roadwatch config show``)."""
    lines: list[str] = ["# roadwatch effective configuration", ""]
    section = None
    for name in sorted(KEYS, key=lambda n: (n.split(".")[0], n)):
        key = KEYS[name]
        sec, _, leaf = name.partition(".")
        if sec != section:
            lines += ["", f"[{sec}]"]
            section = sec
        origin = cfg.origin(name)
        lines.append(f"# {key.doc} — source: {key.source}; default {_toml_value(key.default)}"
                     + ("" if origin == "default" else f"; set by {origin}"))
        lines.append(f"{leaf} = {_toml_value(cfg[name])}")
    return "\n".join(lines).lstrip() + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
