"""The stateful ping engine: per-vehicle state in numpy arrays, vectorised across vehicles.

Design (docs/performance.md): a batch holds many vehicles interleaved. The engine maps plates to a
dense vehicle index, stable-sorts the batch by vehicle index (ties keep ARRIVAL order, so a vehicle's
pings are applied in the order they arrived, exactly as if they had come one by one) and then iterates
over RANK: the k-th ping of every vehicle in the batch forms round k, one vectorised state-machine step
over the vehicles present (fancy indexing; a vehicle appears at most once per round). Live batches need
1–3 rounds. Alerts are rare: masks find them, a Python loop over the hits builds the dicts. Alerts of a
batch are returned in arrival order of the pings that raised them, so one batch or many give the same
output.

Event time: "now" is the watermark = running max of ping times and receipt times (``models.quality``).
Offline, "late" and staleness use it, never the wall clock (``check_offline(now_ms)`` may be given the
wall clock by a live worker when it wants a silent fleet to go offline).

Order of rules: quality (``models.quality``, once per batch: reason mask; pings with an invalid plate are
not attributed), then per round the steps of ``ROUND_STEPS`` — one function each, with the config keys it
reads: dedupe → liveness → track (distance, drift, gaps) → overspeed → fatigue → fatigue_24h → curfew →
geofence → terminal alarms → stops → track sampling → day counters → gap fill. Day counters:
``track.day_slots`` Beijing days per vehicle live in a ring; pings for older days are "stale" (counted in the
output only).

Rule details:
- dedupe: a ping whose fix time equals (± ``quality.duplicate_tolerance_s``) one of the vehicle's last
  ``RECENT`` fix times is counted once: quality reason ``duplicate``, no counter, no rule.
- liveness (trusted time): offline episodes (the watermark moved on by more than ``offline.timeout_s``
  between two receipts from the vehicle, last seen moving or with ACC on: one alert and one
  ``offline_events`` per silence, counted on the day of the vehicle's latest ping).
- track (``geo.track``) for qualified pings newer than the fix: distance, drift, gaps. "Samples" = qualified,
  not drift; the later rules run on samples.
- overspeed: sample speed > limit (``models.monitoring.SpeedLimits``). A run of consecutive over-limit
  samples (broken by a sample at/below the limit or a data gap > ``track.gap_s``) counts when its duration
  (last over − first over) > ``speeding.min_duration_s``; a counted run starting ≤ ``speeding.merge_s``
  after the previous counted episode's last over-limit sample merges into it (one count, same alert id).
  Alert raised when the run qualifies (end_ts null) and updated when it ends (end_ts = last over sample).
- fatigue (docs/legal-basis.md §7): the interval between two samples is driving when the earlier one was
  moving (speed > ``fatigue.stop_speed_kmh``) or the vehicle moved more than ``fatigue.rest_max_move_km``
  across it — unless it is a rest: a silence ≥ ``fatigue.min_rest_min`` without that movement, or a stop
  (first stopped sample until it drives again) of that length. A rest or a driver change (``driver_id``)
  ends the run. The run passes its limit when it exceeds ``fatigue.day_continuous_h`` in all or its part
  inside the night window exceeds ``fatigue.night_continuous_h``; fatigue seconds = the driving beyond.
  The episode opens at the first sample beyond the limit and closes (end_ts, duration) when the rest
  begins. Cumulative driving over the last 24 h (hour buckets) > ``fatigue.day_cum_h`` is a separate
  episode, closed when it drops back under the limit.
- curfew: a moving sample in [curfew.start, curfew.end) of a vehicle in ``curfew.categories`` with
  ``long_distance`` and ``route_km`` > ``curfew.exempt_route_km``: one event and alert per night.
- geofence: restricted-zone membership of samples (zone categories filter by vehicle category); entering
  and leaving raise ``geofence_enter`` / ``geofence_exit``.
- terminal_alarm: rising edges of the JT/T 808 alarm word, named by the terminal's protocol version.
- ``late``: alerts raised by re-uploaded pings or pings older than ``alerts.late_after_s`` vs the
  watermark carry ``late: true``.

Late data (``_replay_late``): a qualified ping older than the vehicle's newest one but newer than its replay
checkpoint "a" is merged into the vehicle's held samples (checkpoints "a"/"b" of the rule state move ping by
ping in event time, ``_step_checkpoints``, so "a" lies one to two ``late.replay_window_h`` behind the newest
fix and the same pings are merged however the feed was cut into batches); after the batch the rule state is
restored from checkpoint "a" and ``REPLAY_STEPS`` re-run over the samples in time order. The rule counters
added since the checkpoint are replaced by the re-derived ones; alerts that changed are published again,
alerts that no longer hold are published with ``details.state = "withdrawn"``. Older pings are counted and fill open track gaps that end
before checkpoint "a" only.

Past days and closed months: a ping for a day older than the vehicle's in-memory day slots adds its
contributions to ``past`` (per vehicle and day); the caller recomputes that day's row on the row it stored
(``merge_past_days``: absolute values). A ping whose day belongs to a month whose report has been made
(``report.close_grace_h`` after the month ends, by the data clock: the newest fix time received) — or that
is older than ``late.recompute_horizon_days`` — takes part in no rule and is counted on the data clock's day
(the day it was received), in ``late_from_closed`` too.
"""
from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat

import numpy as np
import orjson

from roadwatch.geo.distance import haversine_km
from roadwatch.geo.track import GapBook, TrackParams, track_step
from roadwatch.geo.zones import ZoneIndex

from .config import Config
from .held_samples import HIST, SpilledSamples, hist_concat as _hist_concat, sort_dedupe, unexpired
from .monitoring import (BEIJING_OFFSET_MS, BUS_CODES, CATEGORY_CODES, DAY_MS, GOODS_CODES, HOUR_MS,
                         UNKNOWN_CATEGORY,
                         SpeedLimits, alarm_bit_name, alarm_severity, day_string, hhmm_ms, in_window,
                         local_day_tod, make_alert, night_overlap_ms, overspeed_severity)
from .quality import BIT, NO_WATERMARK, POSITION_DEFECTS, REASONS, classify, plate_valid
from .pingschema import PingColumns
from .records import format_ts, iso_to_epoch_ms
from .registry import Registry

_log = logging.getLogger("roadwatch.ping_state")
SNAPSHOT_VERSION = 2
NONE = -(1 << 62)          # "no time": far in the past, differences never overflow int64
RECENT = 16                # fix times remembered per vehicle for the duplicate check
# ... held as int32 offsets from a per-vehicle base (``_recent_rows``): R_EMPTY = no time, WIDE = a base
# marking a vehicle whose times do not fit (held whole in ``PingProcessor._recent_wide``)
R_EMPTY = np.iinfo(np.int32).min
WIDE = np.iinfo(np.int64).min
STATUS_ACC = 1

# day counter columns (vehicle_day table order after plate/day)
F_PINGS, F_QUAL, F_KM, F_KMINC, F_DRIFT, F_OVERSPEED, F_FATIGUE, F_CURFEW, F_OFFLINE, F_CLOSED = range(10)
N_FIELDS = 10
DAY_COLUMNS = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count",
               "fatigue_s", "curfew_events", "offline_events", "late_from_closed")
_INT_FIELDS = (F_PINGS, F_QUAL, F_DRIFT, F_OVERSPEED, F_CURFEW, F_OFFLINE, F_CLOSED)
# day counters that the rules derive from the time-ordered samples (re-derived when late data arrives)
RULE_F_IDX = (F_KM, F_KMINC, F_DRIFT, F_OVERSPEED, F_FATIGUE, F_CURFEW)
# The day counters are held in two arrays (snapshots still write them as one float64 array, ``cnt``): the
# fractional ones as float64 (``cnt_f``: km sums and fatigue seconds, the same additions as ever) and the
# counts as int32 (``cnt_i``: sums of 0/1 and 1.0 increments, exact in both; 2**31 would take 2 147 483 648
# pings of one vehicle on one day). Their columns, the rule-derived ones first (``rc_*`` hold those):
CNT_F = (F_KM, F_KMINC, F_FATIGUE)
CNT_I = (F_DRIFT, F_OVERSPEED, F_CURFEW, F_PINGS, F_QUAL, F_OFFLINE, F_CLOSED)
RULE_I = 3                  # CNT_I[:RULE_I]: the rule-derived counts; every CNT_F column is rule-derived
assert set(CNT_F) | set(CNT_I[:RULE_I]) == set(RULE_F_IDX) and set(CNT_I) == set(_INT_FIELDS)
# where the columns of ``cnt_f``/``cnt_i`` and of the ``rc_*_f``/``rc_*_i`` pairs sit in the one-array layout
_RC_F_POS = [RULE_F_IDX.index(f) for f in CNT_F]
_RC_I_POS = [RULE_F_IDX.index(f) for f in CNT_I[:RULE_I]]
_CNT_COL = {f: ("cnt_f", j) for j, f in enumerate(CNT_F)} | {f: ("cnt_i", j) for j, f in enumerate(CNT_I)}
# per-vehicle state the time-ordered rules own (restored from a checkpoint before a replay)
RULE_FIELDS = ("fix_ts", "fix_lat", "fix_lon", "fix_speed", "drift_run",
               "os_run_start", "os_run_last", "os_run_max", "os_run_counted", "os_ep_start", "os_ep_last",
               "os_ep_max", "os_ep_limit", "os_ep_key", "os_ep_lat", "os_ep_lon", "os_ep_late",
               "fat_last_ts", "fat_prev_moving", "fat_lat", "fat_lon", "fat_driver", "fat_acc", "fat_nacc",
               "fat_stop", "fat_alerted", "fat_ep_start", "fat_ep_night", "fat_ep_lat", "fat_ep_lon",
               "fat_ep_late", "fat_ep_driver", "fat_ep_excess", "cum_b", "cum_hour", "cum_tot", "cum_alerted",
               "cum_start", "cum_lat", "cum_lon", "cum_late", "curfew_day", "zbits",
               "stop_start", "stop_last", "stop_lat", "stop_lon")
# the checkpoints' copies of RULE_FIELDS: views of one table (``PingProcessor._alloc_checkpoints``)
_CK_NAMES = frozenset(p + f for p in ("ck_", "ckb_") for f in RULE_FIELDS)
RULE_ALERTS = frozenset({"overspeed", "fatigue", "curfew", "geofence_enter", "geofence_exit"})


def _fields(words: int, slots: int, replay: bool = True) -> dict[str, tuple]:
    """name → (dtype, extra shape, initial value). All per-vehicle state; snapshot writes all of it."""
    spec = {
        "cat": (np.int8, (), UNKNOWN_CATEGORY), "curfew_ok": (np.bool_, (), False),
        "fix_ts": (np.int64, (), NONE), "fix_lat": (np.float64, (), 0.0), "fix_lon": (np.float64, (), 0.0),
        "fix_speed": (np.float32, (), 0.0), "drift_run": (np.int16, (), 0),
        "last_ts": (np.int64, (), NONE), "seen_wm": (np.int64, (), NONE), "last_moving": (np.bool_, (), False), "last_acc": (np.bool_, (), False),
        "off_alerted": (np.bool_, (), False), "alarm_prev": (np.int64, (), 0),
        "os_run_start": (np.int64, (), NONE), "os_run_last": (np.int64, (), NONE),
        "os_run_max": (np.float32, (), 0.0), "os_run_counted": (np.bool_, (), False),
        "os_ep_start": (np.int64, (), NONE), "os_ep_last": (np.int64, (), NONE),
        "os_ep_max": (np.float32, (), 0.0), "os_ep_limit": (np.float32, (), 0.0),
        "os_ep_key": (np.int16, (), 0), "os_ep_lat": (np.float64, (), 0.0), "os_ep_lon": (np.float64, (), 0.0),
        "os_ep_late": (np.bool_, (), False),
        # the last RECENT fix times (snapshot: "recent_ts", int64): offsets from a base (``_recent_rows``)
        "recent_off": (np.int32, (RECENT,), R_EMPTY), "recent_base": (np.int64, (), NONE),
        "recent_pos": (np.int8, (), 0),
        "fat_last_ts": (np.int64, (), NONE), "fat_prev_moving": (np.bool_, (), False),
        "fat_lat": (np.float64, (), 0.0), "fat_lon": (np.float64, (), 0.0), "fat_driver": (np.int32, (), -1),
        "fat_acc": (np.int64, (), 0), "fat_nacc": (np.int64, (), 0), "fat_stop": (np.int64, (), NONE),
        "fat_alerted": (np.bool_, (), False), "fat_ep_start": (np.int64, (), NONE),
        "fat_ep_night": (np.bool_, (), False), "fat_ep_lat": (np.float64, (), 0.0),
        "fat_ep_lon": (np.float64, (), 0.0), "fat_ep_late": (np.bool_, (), False),
        "fat_ep_driver": (np.int32, (), -1), "fat_ep_excess": (np.int64, (), 0),
        "cum_b": (np.int32, (24,), 0), "cum_hour": (np.int64, (), NONE), "cum_tot": (np.int64, (), 0),
        "cum_alerted": (np.bool_, (), False), "cum_start": (np.int64, (), NONE),
        "cum_lat": (np.float64, (), 0.0), "cum_lon": (np.float64, (), 0.0), "cum_late": (np.bool_, (), False),
        "curfew_day": (np.int32, (), -1), "zbits": (np.uint64, (words,), 0), "samp_ts": (np.int64, (), NONE),
        "slot_day": (np.int32, (slots,), -1),
        "cnt_f": (np.float64, (slots, len(CNT_F)), 0.0), "cnt_i": (np.int32, (slots, len(CNT_I)), 0),
        "dirty": (np.bool_, (slots,), False),
        # the open stop of a vehicle (``_step_stops``): first and last stopped sample, where it stopped
        "stop_start": (np.int64, (), NONE), "stop_last": (np.int64, (), NONE),
        "stop_lat": (np.float32, (), 0.0), "stop_lon": (np.float32, (), 0.0),
    }
    if not replay:
        return spec
    # late data (``_replay_late``): newest qualified fix time; two checkpoints of the rule state ("a": where a
    # replay starts, "b": the next "a"), their times, and what the rules added to each day since each of them
    spec["q_last"] = (np.int64, (), NONE)
    spec["ck_ts"] = (np.int64, (), NONE)
    spec["ckb_ts"] = (np.int64, (), NONE)
    # (each as its float64 and int32 columns, as the day counters: CNT_F, CNT_I[:RULE_I])
    for ck in ("rc_a", "rc_b"):
        spec[ck + "_f"] = (np.float64, (slots, len(CNT_F)), 0.0)
        spec[ck + "_i"] = (np.int32, (slots, RULE_I), 0)
    for f in RULE_FIELDS:
        spec["ck_" + f] = spec[f]
        spec["ckb_" + f] = spec[f]
    return spec


@dataclass
class ProcessOutput:
    alerts: list = field(default_factory=list)
    pings: int = 0
    attributed: int = 0          # pings with a valid plate (kept in vehicle state)
    qualified: int = 0
    drift: int = 0
    out_of_order: int = 0        # qualified pings older than the vehicle's fix (gap-fill path)
    duplicates: int = 0          # second copies of a fix (same vehicle, same fix time): counted once
    replayed: int = 0            # vehicles whose rules were re-evaluated because late data arrived
    late_beyond_window: int = 0  # qualified pings older than the vehicle's replay window (counted, gap fill only)
    stale_day: int = 0           # pings for a day no longer held in memory
    new_vehicles: int = 0
    reasons: dict = field(default_factory=dict)   # reason name → pings failing it


class _PlateIndex(dict):
    """plate → vehicle index; unseen valid plates are registered on lookup, invalid ones map to -1."""

    def __init__(self, owner: "PingProcessor"):
        super().__init__()
        self.owner = owner

    def __missing__(self, plate):
        if not plate_valid(plate):
            return -1
        return self.owner._add_vehicle(plate)


class PingProcessor:
    """Per-partition ping state and rules. ``process`` a batch, ``check_offline`` on a timer.

    ``spill_dir``: a directory for the replay window's held samples (``models.held_samples``: sorted runs in
    files, read through memory maps — a live worker's choice, one directory per partition) and its
    checkpoints' table (``_alloc_checkpoints``); None keeps them in memory (batch runs, where the window is
    short-lived and the sort-on-read store is fastest)."""

    def __init__(self, cfg: Config, registry: Registry | None = None, zones=None, capacity: int = 1024,
                 spill_dir=None):
        self.cfg = cfg
        self.registry = registry or Registry()
        if zones is None:
            zones = ZoneIndex.from_registry(self.registry)
        elif not isinstance(zones, ZoneIndex):
            zones = ZoneIndex(zones)
        self.zones: ZoneIndex = zones
        self.tp = TrackParams.from_config(cfg)
        self.limits = SpeedLimits(cfg)
        self.slots = int(cfg["track.day_slots"])
        if self.slots < 1:
            raise ValueError("track.day_slots must be ≥ 1")
        self._spec = _fields(self.zones.words, self.slots, float(cfg["late.replay_window_h"]) > 0)
        # the replay window's held samples (and the checkpoint table, ``_alloc``) in files (``spill_dir``), or
        # in memory: the fields holding them below then stay empty
        self._spill = (_spilled(spill_dir) if spill_dir is not None
                       and float(cfg["late.replay_window_h"]) > 0 else None)
        self._ck_dtype = _checkpoint_dtype(self._spec) if "ck_ts" in self._spec else None
        self._ck_tab: np.ndarray | None = None   # per vehicle: checkpoints "a" ([v, 0]), "b" ([v, 1]) of RULE_FIELDS
        if self._ck_dtype is not None:            # a row of the table as a new vehicle has it
            self._ck_init = np.zeros(1, dtype=self._ck_dtype)
            for f in RULE_FIELDS:
                self._ck_init[f] = self._spec[f][2]
        self.n = 0
        self.a: dict[str, np.ndarray] = {}
        self._day_f = self._day_i = None   # the day counters and the rc_* beside them (``_alloc_day``)
        self._alloc(capacity)
        self.plates: list[str] = []
        self.index = _PlateIndex(self)
        self.gaps = GapBook(self.tp)
        self.watermark = int(NO_WATERMARK)
        self.pending_rows: list[dict] = []       # rows of day slots overwritten before day_rows() ran
        self.track_buf: list[tuple] = []
        self.stop_buf: list[tuple] = []          # ended stops (vehicle, start, end, lat, lon, closed) not drained
        self.stop_retract: dict[int, int] = {}   # vehicle → stops closed after this time were re-derived
        self.stale_total = 0
        self.past: dict[tuple[int, int], np.ndarray] = {}   # (vehicle, day) → contributions to a day not held
        self.fix_clock = NONE                     # newest fix time with a plausible time (month close)
        self._hist = np.zeros(0, dtype=HIST)     # samples inside the replay window (``_history``)
        self._hist_new: list[np.ndarray] = []
        self._hist_new_n = 0
        self._hist_sorted = True                  # ``_hist`` sorted by (vehicle, time), duplicates removed
        self._hist_log: list[np.ndarray] | None = None   # samples added since the last segment capture
        self._late_pending: set[int] = set()
        self._recent_wide: dict[int, np.ndarray] = {}   # vehicle → its RECENT fix times (base WIDE)
        self._replay_before_b = False
        self._alog_n = 0                          # alerts of the current batch already in ``alog``
        self.alog: dict[int, dict] = {}          # rule alerts raised since each vehicle's checkpoint "a"
        self.drivers: list[str] = []             # driver code → 从业资格证 number (IC card)
        self.driver_index: dict[str, int] = {}
        self._zmask_by_cat = np.stack([self.zones.category_mask(c) for c in (*CATEGORY_CODES, "")])
        self._goods = np.zeros(UNKNOWN_CATEGORY + 1, dtype=bool)
        self._goods[list(GOODS_CODES)] = True
        if cfg["track.sample_all"]:               # every monitored vehicle: console playback and area search
            self._goods[list(CATEGORY_CODES.values())] = True
        # stop events: every vehicle but buses (a truck missing from the GPS registry may still be weighed)
        self._stop_cats = np.ones(UNKNOWN_CATEGORY + 1, dtype=bool)
        self._stop_cats[list(BUS_CODES)] = False
        self._read_params()

    # --- configuration ------------------------------------------------------------------------------
    def _read_params(self) -> None:
        c = self.cfg
        self.stop_kmh = float(c["fatigue.stop_speed_kmh"])
        self.rest_move_km = float(c["fatigue.rest_max_move_km"])
        self.dup_ms = int(c["quality.duplicate_tolerance_s"]) * 1000
        self.replay_ms = int(round(float(c["late.replay_window_h"]) * HOUR_MS))
        self.rest_ms = int(round(float(c["fatigue.min_rest_min"]) * 60_000))
        self.day_cont_ms = int(round(float(c["fatigue.day_continuous_h"]) * HOUR_MS))
        self.night_cont_ms = int(round(float(c["fatigue.night_continuous_h"]) * HOUR_MS))
        self.cum_ms = int(round(float(c["fatigue.day_cum_h"]) * HOUR_MS))
        self.night = (hhmm_ms(c["night.start"], "night.start"), hhmm_ms(c["night.end"], "night.end"))
        self.curfew = (hhmm_ms(c["curfew.start"], "curfew.start"), hhmm_ms(c["curfew.end"], "curfew.end"))
        self.os_min_ms = int(c["speeding.min_duration_s"]) * 1000
        self.os_merge_ms = int(c["speeding.merge_s"]) * 1000
        self.offline_ms = int(c["offline.timeout_s"]) * 1000
        self.late_ms = int(c["alerts.late_after_s"]) * 1000
        self.close_grace_ms = int(round(float(c["report.close_grace_h"]) * HOUR_MS))
        self.horizon_days = int(c["late.recompute_horizon_days"])
        self.sample_ms = int(c["track.sample_s"]) * 1000
        self._round_steps, self._replay_steps = ROUND_STEPS, REPLAY_STEPS     # (``skip_output_steps``)
        self.src_stop_kmh = float(c["source.stop_speed_kmh"])
        self.src_stop_ms = int(round(float(c["source.min_stop_min"]) * 60_000))
        self.src_move_km = float(c["source.stop_max_move_m"]) / 1000.0
        self.alarm_unpositioned = bool(c["alerts.alarm_from_unpositioned"])
        self.limit_keys = sorted(set(self.limits.keys.values()))

    # --- vehicle table ------------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        old, self.a = self.a, {}
        views = self._alloc_checkpoints(cap) if self._ck_dtype is not None else {}
        views.update(self._alloc_day(cap))
        for name, (dt, shape, init) in self._spec.items():    # (in spec order: a snapshot writes them so)
            arr = views.get(name)
            if arr is None:
                arr = np.full((cap, *shape), init, dtype=dt)
                if name in old:
                    arr[: self.n] = old[name][: self.n]
            self.a[name] = arr
        self.cap = cap

    def _alloc_day(self, cap: int) -> dict[str, np.ndarray]:
        """The day counters and what the rules added to them since each checkpoint, side by side per (vehicle,
        slot): ``cnt_f | rc_a_f | rc_b_f`` in one float64 array (``_day_f``), ``cnt_i | rc_a_i | rc_b_i`` in one
        int32 array (``_day_i``); ``a[name]`` are views of them. ``_step_day_counters`` updates all three of
        a row with one gather and one scatter per array."""
        out = {}
        for attr, names, dt in (("_day_f", _DAY_F, np.float64), ("_day_i", _DAY_I, np.int32)):
            names = [k for k in names if k in self._spec]
            widths = [self._spec[k][1][-1] for k in names]
            arr = np.zeros((cap, self.slots, sum(widths)), dtype=dt)
            old = getattr(self, attr)
            if old is not None:
                arr[: self.n] = old[: self.n]
            setattr(self, attr, arr)
            # ``delta``'s columns in the order of the array's (``_step_day_counters``)
            setattr(self, attr.replace("_day", "_day_cols"),
                    np.array([c for k in names for c in _DAY_COLS[k]], dtype=np.intp))
            lo = 0
            for k, w in zip(names, widths):
                out[k] = arr[:, :, lo:lo + w]
                lo += w
        return out

    def _alloc_checkpoints(self, cap: int) -> dict[str, np.ndarray]:
        """The two checkpoints of the rule state (``ck_*``: "a", ``ckb_*``: "b") as one table of packed rows,
        seen field by field as ``a["ck_" + f]`` / ``a["ckb_" + f]``. They are read only when a vehicle's window
        moves (``_step_checkpoints``: once per ``late.replay_window_h`` per vehicle) and when late data re-runs
        its rules, never by the live rule steps: with ``spill_dir`` the table is a file beside the held samples
        (mapped; the page cache holds it, as it holds their runs), else in the heap. A table file that cannot be
        made (disk full) leaves the table in the heap: the same results."""
        tab, old, n, kept = None, self._ck_tab, self.n, 0
        if self._spill is not None:
            try:
                if isinstance(old, np.memmap):       # a growth: the file extended, its rows stay in place
                    tab, kept = self._spill.grow_table(self._ck_dtype, (cap, 2)), len(old)
                else:
                    tab = self._spill.table(self._ck_dtype, (cap, 2))
            except OSError as err:
                _log.warning("replay checkpoints kept in memory: cannot write them under %s (%s)",
                             self._spill.dir, err)
                tab, kept = None, 0
        if tab is None:
            tab = np.zeros((cap, 2), dtype=self._ck_dtype)
        raw = _raw(tab)
        if old is not None and not kept:     # whole rows as bytes: one copy, not one per field
            raw[:n] = _raw(old)[:n]
        raw[max(n, kept):] = _raw(self._ck_init)[0]
        if self._spill is not None and not isinstance(tab, np.memmap):
            self._spill.drop_table()
        self._ck_tab = tab
        plain = tab.view(np.ndarray)         # (views of a memmap run Python code each time they are indexed)
        return {pre + f: plain[:, k][f] for k, pre in enumerate(("ck_", "ckb_")) for f in RULE_FIELDS}

    def _add_vehicle(self, plate: str) -> int:
        i = self.n
        if i >= self.cap:
            self._alloc(_grown(self.cap))
        self.n += 1
        self.plates.append(plate)
        self.index[plate] = i
        self._apply_registry(i, plate)
        return i

    def _apply_registry(self, i: int, plate: str) -> None:
        v = self.registry.vehicles.get(plate)
        cat = CATEGORY_CODES.get(v.category, UNKNOWN_CATEGORY) if v is not None else UNKNOWN_CATEGORY
        self.a["cat"][i] = cat
        self.a["curfew_ok"][i] = bool(v is not None and v.category in self.cfg["curfew.categories"]
                                      and v.long_distance and v.route_km > float(self.cfg["curfew.exempt_route_km"]))

    @property
    def watermark_ms(self) -> int:
        """Event-time watermark (epoch ms), 0 before the first ping."""
        return 0 if self.watermark == NO_WATERMARK else int(self.watermark)

    def state_bytes_per_vehicle(self) -> int:
        """Bytes of array state per vehicle (the row width of the state arrays)."""
        return sum(np.dtype(dt).itemsize * int(np.prod(shape or (1,))) for dt, shape, _ in self._spec.values())

    def close(self) -> None:
        """Release the held-sample files of a spilled window (the engine is not used afterwards)."""
        if self._spill is not None:
            self._spill.close()

    def live_bytes_per_vehicle(self) -> float:
        """What the live state really costs per tracked vehicle: allocated arrays (including spare capacity),
        the samples held for re-evaluating late data, plus the plate list and plate→index dict (the
        benchmark's ``bytes_per_vehicle``). With ``spill_dir`` the held samples in files are not counted
        (``held_bytes_on_disk``), only what of them stays in memory."""
        if self.n == 0:
            return 0.0
        import sys
        arrays = sum(a.nbytes for k, a in self.a.items() if k not in _CK_NAMES)
        if self._ck_tab is not None and not isinstance(self._ck_tab, np.memmap):
            arrays += self._ck_tab.nbytes   # (mapped: ``checkpoint_bytes_on_disk``)
        if self._spill is not None:    # only its chunks: the rest is on disk (``held_bytes_on_disk``)
            arrays += self._spill.heap_bytes()
        arrays += self._hist.nbytes + sum(h.nbytes for h in self._hist_new)      # the replay window
        if self._hist_log:      # samples of the next snapshot segment already merged into the store
            waiting = {id(h) for h in self._hist_new}
            arrays += sum(h.nbytes for h in self._hist_log if id(h) not in waiting)
        if self._recent_wide:       # fix times too far apart for the offset layout (``_recent_rows``)
            arrays += sys.getsizeof(self._recent_wide) + sum(map(sys.getsizeof, self._recent_wide.values()))
        plates = sys.getsizeof(self.plates) + sum(sys.getsizeof(p) for p in self.plates)
        index = sys.getsizeof(self.index)
        return (arrays + plates + index) / self.n

    def held_bytes_on_disk(self) -> int:
        """Bytes of held samples in the ``spill_dir`` files (0 when they are held in memory)."""
        return self._spill.disk_bytes() if self._spill is not None else 0

    def checkpoint_bytes_on_disk(self) -> int:
        """Bytes of the replay checkpoints' table in its ``spill_dir`` file, spare rows included (0 when it is in
        memory)."""
        return self._ck_tab.nbytes if isinstance(self._ck_tab, np.memmap) else 0

    # --- the batch step -----------------------------------------------------------------------------
    def process(self, cols, now_ms: int | None = None) -> ProcessOutput:
        """Apply one ``PingColumns`` batch. ``now_ms``: processing clock for the "future" check of pings
        without a receipt time (None = the check is skipped for them)."""
        n = len(cols)
        out = ProcessOutput(pings=n)
        if n == 0:
            return out
        n_before = self.n
        idx = np.fromiter(map(self.index.__getitem__, cols.plate), dtype=np.int64, count=n)
        out.new_vehicles = self.n - n_before
        attributed = idx >= 0
        q = classify(cols, self.cfg, attributed, self.watermark, now_ms)
        self.watermark = q.watermark
        reasons = q.reasons
        qualified = reasons == 0
        out.attributed = int(attributed.sum())
        time_ok = (reasons & (BIT["time_future"] | BIT["time_too_old"] | BIT["bad_flags"])) == 0
        trusted = attributed & time_ok
        if self.alarm_unpositioned:
            alarm_ok = trusted & ((reasons & ~POSITION_DEFECTS & ~BIT["plate_color"]) == 0)
        else:
            alarm_ok = qualified
        ts = cols.ts
        has_wm = q.wm_after != NO_WATERMARK
        # the data's clock (newest fix time so far, ping by ping): a month is closed by it, not by receipt
        # times, so a feed replayed the next day (``simulate --gateway``) is judged on its own time
        fix_clock = np.maximum.accumulate(np.concatenate([[self.fix_clock], np.where(time_ok, ts, NONE)]))[1:]
        self.fix_clock = int(fix_clock[-1])
        closed = attributed & time_ok & self._day_closed(ts, fix_clock)
        # counted on the day received: pings refused for their time (the watermark's day), and pings of a
        # closed month (the data clock's day)
        count_ts = np.where(closed, fix_clock, np.where(time_ok, ts, np.where(has_wm, q.wm_after, ts)))
        late = cols.reupload.astype(bool) | (has_wm & ((np.where(has_wm, q.wm_after, ts) - ts) > self.late_ms))
        drivers = cols.driver_id
        driver = self._driver_codes(drivers)
        ctx = self._context(cols, idx, attributed, qualified, trusted, alarm_ok, late, driver, count_ts,
                            q.wm_after, reasons, time_ok, closed)
        alerts: list[tuple] = []
        self._alog_n = 0
        self._rounds(ctx, np.flatnonzero(attributed), alerts, out, self._round_steps)
        if self.replay_ms > 0:
            self._log_alerts(alerts)
        if self._late_pending:
            self._replay_late(alerts, out, n)
        alerts.sort(key=lambda x: (x[0], x[1]))
        out.alerts = [a for _, _, a in alerts]
        out.qualified = int(np.count_nonzero(reasons == 0))      # after the duplicate check
        for i, name in enumerate(REASONS):
            c = int(np.count_nonzero(reasons & np.uint16(1 << i)))
            if c:
                out.reasons[name] = c
        return out

    def _day_closed(self, ts: np.ndarray, wm: np.ndarray) -> np.ndarray:
        """Pings whose Beijing day can no longer change its row: its month's report has been made
        (``report.close_grace_h`` after the month ended, by the data clock ``wm``) or it is more than
        ``late.recompute_horizon_days`` (when set) older than the data clock's day."""
        day, _ = local_day_tod(ts)
        lo, hi = (int(day.min()), int(day.max())) if len(day) else (-1, -1)
        if 0 <= lo and hi < _SANE_DAYS:
            # (a batch within one month — nearly always — needs its next month's first day once, not per ping)
            ends = _next_month_day(np.array([lo, hi], dtype=np.int64))
            nxt = ends[0] if ends[0] == ends[1] else _next_month_day(day)
        else:
            nxt = _next_month_day(day)
        closed = wm >= nxt * DAY_MS - BEIJING_OFFSET_MS + self.close_grace_ms
        if self.horizon_days > 0:
            closed |= local_day_tod(wm)[0] - day > self.horizon_days
        return closed

    def _context(self, cols, idx, attributed, qualified, trusted, alarm_ok, late, driver, count_ts, wm_after,
                 reasons, time_ok, closed=None) -> "_Batch":
        """Per-ping values every rule step reads (day, night, limits, zones, curfew window …)."""
        n = len(cols)
        day, _ = local_day_tod(count_ts)
        _, tod = local_day_tod(cols.ts)
        speed = cols.speed_kmh
        moving = speed > self.stop_kmh
        night = in_window(tod, *self.night)
        safe_idx = np.where(attributed, idx, 0)
        cat = self.a["cat"][safe_idx].astype(np.int64)
        if self.zones:
            zq = np.flatnonzero(qualified)
            zbits = np.zeros((n, self.zones.words), dtype=np.uint64)
            on_exp = np.zeros(n, dtype=bool)
            zb, ze = self.zones.lookup(cols.lon[zq], cols.lat[zq])
            zbits[zq] = zb & self._zmask_by_cat[cat[zq]]
            on_exp[zq] = ze
        else:
            zbits = None
            on_exp = np.zeros(n, dtype=bool)
        limit = self.limits.table[cat, on_exp.astype(np.int64), night.astype(np.int64)]
        over = speed > limit
        curfew_win = in_window(tod, *self.curfew) & moving & self.a["curfew_ok"][safe_idx]
        if closed is None:
            closed = np.zeros(n, dtype=bool)
        return _Batch(cols, idx, qualified, trusted, alarm_ok, day, tod, speed, moving, night, late, limit,
                      over, on_exp, curfew_win, zbits, wm_after, cat, reasons, time_ok, driver, closed)

    def _rounds(self, ctx: "_Batch", P_all: np.ndarray, alerts: list, out: ProcessOutput, steps,
                replay: bool = False) -> None:
        """Stable-sort the pings ``P_all`` by vehicle and apply ``steps`` round by round (rank k = the k-th
        ping of every vehicle), so each vehicle's pings are applied in their order in ``P_all``."""
        idx = ctx.idx
        order = P_all[np.argsort(idx[P_all], kind="stable")]
        vs = idx[order]
        m = len(order)
        if m == 0:
            return
        starts = np.ones(m, dtype=bool)
        starts[1:] = vs[1:] != vs[:-1]
        grp_start = np.maximum.accumulate(np.where(starts, np.arange(m), 0))
        rank = np.arange(m) - grp_start
        max_rank = int(rank.max())
        if max_rank == 0:
            self._round(order, ctx, alerts, out, steps, replay)
            return
        by_rank = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[by_rank], np.arange(max_rank + 2))
        for k in range(max_rank + 1):
            self._round(order[by_rank[bounds[k]:bounds[k + 1]]], ctx, alerts, out, steps, replay)

    # --- late data: merge into the timeline and re-evaluate the rules for the range -----------------
    def _history_add(self, vi, t, lat, lon, spd, late, drv) -> None:
        """Remember samples for a later replay: appended as chunks; when they reach the store's size, the
        store and the chunks are compacted (``_history_compact``) — sorted only when a replay or a snapshot
        reads them (``_history``): sorting at every merge was 11 % of ``report monthly --pings`` on the
        province month (docs/performance.md). The chunks waiting cost at most the store's own memory."""
        if self.replay_ms <= 0 or not len(vi):
            return
        h = np.empty(len(vi), dtype=HIST)
        h["v"], h["ts"], h["lat"], h["lon"], h["spd"], h["drv"], h["late"] = vi, t, lat, lon, spd, drv, late
        if self._spill is not None:
            self._spill.add(h, self.a["ck_ts"])
            return
        self._hist_new.append(h)
        self._hist_new_n += len(vi)
        if self._hist_log is not None:
            self._hist_log.append(h)
        if self._hist_new_n > max(4096, len(self._hist)):
            self._history_compact()

    def _history_compact(self) -> None:
        """Store and chunks as one array in arrival order, without the samples no longer newer than their
        vehicle's checkpoint "a" (they can never be replayed: memory stays bounded by the window). The
        stable sort in ``_history`` later gives what sorting at every step would have: same order, the
        first of equal (vehicle, time) kept."""
        h = _hist_concat([self._hist, *self._hist_new])
        self._hist_new, self._hist_new_n = [], 0
        self._hist = unexpired(h, self.a["ck_ts"])      # (no second copy of the store when nothing expired)
        self._hist_sorted = False

    def _history(self) -> np.ndarray:
        """The held samples (vehicle, ts, lat, lon, speed, late, driver), newer than each vehicle's
        checkpoint, sorted by vehicle then time, one row per (vehicle, ts)."""
        if self.replay_ms <= 0:
            return self._hist
        if self._spill is not None:
            return self._spill.all_rows(self.a["ck_ts"])
        if self._hist_new or not self._hist_sorted:
            h = sort_dedupe(_hist_concat([self._hist, *self._hist_new]))
            self._hist_new, self._hist_new_n = [], 0
            self._hist = h
            self._hist_sorted = True
        self._hist = unexpired(self._hist, self.a["ck_ts"])
        return self._hist

    def _history_rows(self, vs: np.ndarray) -> np.ndarray:
        """Held samples of the vehicles ``vs`` (sorted), sorted by vehicle then time."""
        if self._spill is not None:
            return self._spill.rows(vs, self.a["ck_ts"])
        h = self._history()
        lo = np.searchsorted(h["v"], vs, "left")
        hi = np.searchsorted(h["v"], vs, "right")
        return np.concatenate([h[i:j] for i, j in zip(lo.tolist(), hi.tolist())] or [np.zeros(0, dtype=HIST)])

    def _log_alerts(self, alerts: list) -> None:
        """Remember the rule alerts raised by the live pass since the last call (``alog``: what a replay
        compares its re-derived alerts with)."""
        for _, _, al in alerts[self._alog_n:]:
            if al["type"] in RULE_ALERTS:
                self.alog.setdefault(self.index[al["plate"]], {})[al["alert_id"]] = al
        self._alog_n = len(alerts)

    def _replay_late(self, alerts: list, out: ProcessOutput, pos: int, only: list | None = None,
                     k0: int = 0) -> None:
        """Vehicles that received pings older than their newest sample (re-uploads, late pings) inside the
        replay window: restore the rule state of their checkpoint, re-apply every held sample in time order
        (the late ones merged in), put the re-derived rule counters in place of the old ones, and publish
        the difference: alerts the late data raises (late, with their true event time), corrected ones, and
        withdrawn ones (state "withdrawn", never silently dropped)."""
        a = self.a
        vs = np.array(sorted(self._late_pending if only is None else only), dtype=np.int64)
        self._late_pending.difference_update(vs.tolist())
        rows = self._history_rows(vs)
        out.replayed += len(vs)
        # rule state back to the checkpoint; counters lose what the rules added since then
        for f in RULE_FIELDS:
            a[f][vs] = a["ck_" + f][vs]
        self._retract_stops(vs, rows)
        cnt0_f, cnt0_i, dirty0 = a["cnt_f"][vs], a["cnt_i"][vs], a["dirty"][vs].copy()   # (copies)
        a["cnt_f"][vs] = cnt0_f - a["rc_a_f"][vs]
        ci = cnt0_i.copy()
        ci[:, :, :RULE_I] -= a["rc_a_i"][vs]
        a["cnt_i"][vs] = ci
        for ck in ("rc_a_f", "rc_a_i", "rc_b_f", "rc_b_i"):
            a[ck][vs] = 0
        for v in vs.tolist():
            lim = int(a["ck_ts"][v])
            if v in self.gaps.gaps:       # gaps after the checkpoint are found again by the replay
                keep = [g for g in self.gaps.gaps[v] if g[1][-1][0] <= lim]
                if keep:
                    self.gaps.gaps[v] = keep
                else:
                    del self.gaps.gaps[v]
        m = len(rows)
        vi = rows["v"].astype(np.int64)
        cols = PingColumns(plate=[self.plates[v] for v in vi.tolist()], terminal_id=[""] * m,
                           plate_color=np.zeros(m, dtype=np.int64), ts=rows["ts"].copy(),
                           lat=rows["lat"].copy(), lon=rows["lon"].copy(), speed_kmh=rows["spd"].copy(),
                           heading=np.zeros(m, dtype=np.int64), altitude_m=np.zeros(m),
                           alarm_flags=np.zeros(m, dtype=np.int64), status_flags=np.zeros(m, dtype=np.int64),
                           reupload=rows["late"] > 0, driver_id=[None] * m, mileage_km=[None] * m)
        ones = np.ones(m, dtype=bool)
        ctx = self._context(cols, vi, ones, ones, ones, ones, rows["late"] > 0, rows["drv"].astype(np.int32),
                            cols.ts, cols.ts, np.zeros(m, dtype=np.uint16), ones)
        raised: list[tuple] = []
        # up to checkpoint "b" first, so that "b" is taken again from the corrected timeline
        ckb = a["ckb_ts"][vi]
        first = np.flatnonzero(rows["ts"] <= ckb)
        self._replay_before_b = True
        self._rounds(ctx, first, raised, out, self._replay_steps, replay=True)
        self._replay_before_b = False
        hb = vs[a["ckb_ts"][vs] != NONE]
        for f in RULE_FIELDS:
            a["ckb_" + f][hb] = a[f][hb]
        self._rounds(ctx, np.flatnonzero(rows["ts"] > ckb), raised, out, self._replay_steps, replay=True)
        # a day's row is published again only when a value changed
        a["dirty"][vs] = (dirty0 | (np.round(a["cnt_f"][vs], 6) != np.round(cnt0_f, 6)).any(axis=2)
                          | (a["cnt_i"][vs] != cnt0_i).any(axis=2))
        newest: dict[int, dict] = {}
        for _, _, al in raised:
            newest[al["alert_id"]] = al
        by_v: dict[int, dict] = {int(v): {} for v in vs}
        for aid, al in newest.items():
            by_v[self.index[al["plate"]]][aid] = al
        k = k0        # (pos, k): where the published alerts sort among the batch's
        for v, new in by_v.items():
            old = self.alog.get(v, {})
            for aid, al in new.items():      # ``late`` comes from the fix that raised it (re-upload / late)
                if old.get(aid) != al:
                    alerts.append((pos, k, al))
                k += 1
            for aid, al in old.items():
                if aid not in new:
                    det = dict(al.get("details") or {}, state="withdrawn",
                               withdrawn_reason="late data changed the episode")
                    alerts.append((pos, k, dict(al, end_ts=al.get("end_ts") or al["start_ts"], details=det)))
                    k += 1
            self.alog[v] = {aid: al for aid, al in new.items()}

    def _step_checkpoints(self, r: "_Round") -> None:
        """Move the replay checkpoints in event time, at the vehicle's first qualified fix a window after
        checkpoint "b" (before that fix is applied): "a" (where a replay starts) takes over "b", and "b"
        restarts at the newest fix. Taken ping by ping, never at batch ends, so where the window starts
        does not depend on how the feed was cut into batches; "a" stays one to two windows behind the
        newest fix. A replay still pending for the vehicle (late data earlier in this batch) is run first, so
        that "b" always holds the corrected timeline."""
        a, vi, t = self.a, r.vi, r.t
        ql = a["q_last"][vi]
        newer = r.qp & (ql != NONE) & (t > ql)
        if not newer.any():
            return
        ckb = a["ckb_ts"][vi]
        unset_b = newer & (ckb == NONE)
        rot = newer & (ckb != NONE) & (t - ckb >= self.replay_ms)
        if not (unset_b | rot).any():
            return
        rv = vi[rot]
        pend = [j for j in np.flatnonzero(rot).tolist() if int(vi[j]) in self._late_pending]
        if pend:
            self._log_alerts(r.alerts)
            for j in pend:   # published at this fix's place in the batch, before what the fix itself raises
                self._replay_late(r.alerts, r.out, int(r.P[j]), [int(vi[j])], k0=-(1 << 30))
            self._alog_n = len(r.alerts)     # what the replay published is not live-pass output
        if len(rv):
            raw = _raw(self._ck_tab)     # "a" takes over "b": whole rows of the table (``_alloc_checkpoints``)
            raw[rv, 0] = raw[rv, 1]
            a["ck_ts"][rv] = a["ckb_ts"][rv]
            a["rc_a_f"][rv] = a["rc_b_f"][rv]
            a["rc_a_i"][rv] = a["rc_b_i"][rv]
        bv = vi[unset_b | rot]
        for f in RULE_FIELDS:
            a["ckb_" + f][bv] = a[f][bv]
        a["ckb_ts"][bv] = a["q_last"][bv]
        a["rc_b_f"][bv] = 0.0
        a["rc_b_i"][bv] = 0
        for v in rv.tolist():
            lim = int(a["ck_ts"][v])
            log = self.alog.get(v)
            if log:
                self.alog[v] = {k: al for k, al in log.items() if iso_to_epoch_ms(al["start_ts"]) > lim}

    def _add_past(self, v: int, d: int, delta: np.ndarray) -> None:
        acc = self.past.get((v, d))
        if acc is None:
            acc = self.past[(v, d)] = np.zeros(N_FIELDS)
        acc += delta

    def past_day_keys(self) -> list[tuple[str, str]]:
        """(plate, day) of the past days that late data changed since the last ``merge_past_days``."""
        return sorted({(self.plates[v], day_string(d)) for v, d in self.past})

    def merge_past_days(self, rows: list[dict], stored: list[dict]) -> list[dict]:
        """Recompute the rows of past days (``past_day_keys``) as absolute values: each on its newest row —
        from ``rows`` (not yet stored, e.g. drained by ``day_rows``) or else from ``stored`` (the archive's
        rows of those keys) or else from zero. Returns ``rows`` with the recomputed rows in place (one row per
        key, sorted) and forgets the contributions."""
        base = {(r["plate"], r["day"]): r for r in stored}
        out: dict[tuple[str, str], dict] = {}
        for r in rows:
            out[(r["plate"], r["day"])] = r
        base.update(out)
        updated = format_ts_ms(self.watermark_ms)
        for (v, d), delta in sorted(self.past.items()):
            key = (self.plates[v], day_string(d))
            old = base.get(key)
            row = {"plate": key[0], "day": key[1]}
            for f, name in enumerate(DAY_COLUMNS):
                val = (float(old.get(name, 0) or 0) if old else 0.0) + float(delta[f])
                row[name] = int(round(val)) if f in _INT_FIELDS else round(val, 6)
            row["online"] = row["pings"] > 0
            row["updated_at"] = updated
            base[key] = out[key] = row
        self.past = {}
        return sorted(out.values(), key=lambda r: (r["plate"], r["day"]))

    def _slot_prepare(self, vi: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Make the day slots of (vehicle, day) current; returns the mask of pings whose day is stale."""
        a = self.a
        slot = d % self.slots
        sd = a["slot_day"][vi, slot]
        newer = d > sd
        if newer.any():
            nv, ns = vi[newer], slot[newer]
            for j in np.flatnonzero(a["dirty"][nv, ns]):
                self.pending_rows.append(self._row(int(nv[j]), int(ns[j])))
            self._day_f[nv, ns] = 0.0     # the counters and their rc_a, rc_b (``_alloc_day``)
            self._day_i[nv, ns] = 0
            a["dirty"][nv, ns] = False
            a["slot_day"][nv, ns] = d[newer]
        return d < sd

    def _add_day(self, vi: int, d: int, f: int, value: float) -> None:
        """Scalar counter update for the rare paths (gap fill, offline); a day no longer held goes to
        ``past`` (its stored row is recomputed)."""
        vi_a, d_a = np.array([vi]), np.array([d])
        if self._slot_prepare(vi_a, d_a)[0]:
            self.stale_total += 1
            delta = np.zeros(N_FIELDS)
            delta[f] = value
            self._add_past(vi, d, delta)
            return
        s = d % self.slots
        arr, j = _CNT_COL[f]
        self.a[arr][vi, s, j] += value if arr == "cnt_f" else int(value)
        self.a["dirty"][vi, s] = True

    # --- the per-round rule steps (one function per rule, applied in ROUND_STEPS order) ---------------
    def _round(self, P: np.ndarray, c: "_Batch", alerts: list, out: ProcessOutput, steps=None,
               replay: bool = False) -> None:
        """One ping per vehicle (rows ``P`` of the batch): every rule of ``steps`` in order."""
        r = _Round(P, c, alerts, out)
        r.replay = replay
        r.vi = c.idx[P]
        r.t = c.cols.ts[P]
        r.d = c.day[P]
        r.stale = self._slot_prepare(r.vi, r.d)
        r.delta = np.zeros((len(P), N_FIELDS), dtype=np.float64)
        r.qp = c.qualified[P] & ~c.closed[P]
        r.tr = c.trusted[P].copy()
        r.sample = np.zeros(len(P), dtype=bool)
        for step in steps or ROUND_STEPS:
            step.fn(self, r)

    def _step_dedupe(self, r: "_Round") -> None:
        """A second ping of the same vehicle with the same fix time (± ``quality.duplicate_tolerance_s``) is
        counted once: it takes no part in any counter or rule and is reported as reason ``duplicate``."""
        a, vi, t = self.a, r.vi, r.t
        tok = r.c.time_ok[r.P]
        # |stored time − t| on the offsets (``_recent_rows``, without building the int64 times)
        base = a["recent_base"][vi]
        off = a["recent_off"][vi]
        gap = off - (t - base)[:, None]
        hit = np.abs(gap, out=gap) <= self.dup_ms
        hit &= off != R_EMPTY
        near = np.abs(t - NONE) <= self.dup_ms      # (an empty slot holds NONE: never near a real time)
        if near.any():
            hit[near] |= off[near] == R_EMPTY
        if self._recent_wide:
            for j in np.flatnonzero(base == WIDE).tolist():
                hit[j] = np.abs(self._recent_wide[int(vi[j])] - t[j]) <= self.dup_ms
        dup = tok & hit.any(axis=1)
        if dup.any():
            r.out.duplicates += int(dup.sum())
            r.c.reasons[r.P[dup]] |= BIT["duplicate"]
            r.qp &= ~dup
            r.tr &= ~dup
        r.dup = dup
        keep = tok & ~dup
        if keep.any():
            kv = r.vi[keep]
            pos = a["recent_pos"][kv]
            self._recent_put(kv, pos, r.t[keep])
            a["recent_pos"][kv] = (pos + 1) % RECENT
        r.delta[:, F_PINGS] = np.where(dup, 0.0, 1.0)
        cl = r.c.closed[r.P] & ~dup
        r.delta[:, F_QUAL] = r.qp | (cl & r.c.qualified[r.P])
        r.delta[:, F_CLOSED] = cl

    def _recent_rows(self, vi: np.ndarray) -> np.ndarray:
        """The last RECENT fix times of the vehicles ``vi`` (int64, NONE where none), exactly as written: each
        vehicle's are held as int32 offsets from its ``recent_base`` (64 + 8 B instead of 128 B), or whole in
        ``_recent_wide`` when they span more than an int32 of milliseconds (≈ 24 days) around it."""
        a = self.a
        base = a["recent_base"][vi]
        off = a["recent_off"][vi]
        rec = off.astype(np.int64)
        rec += base[:, None]
        rec[off == R_EMPTY] = NONE
        if self._recent_wide:
            for j in np.flatnonzero(base == WIDE).tolist():
                rec[j] = self._recent_wide[int(vi[j])]
        return rec

    def _recent_put(self, vi: np.ndarray, pos: np.ndarray, t: np.ndarray) -> None:
        """Write fix time ``t`` at slot ``pos`` of the vehicles ``vi`` (distinct)."""
        a = self.a
        base = a["recent_base"][vi]
        first = base == NONE
        if first.any():
            base[first] = t[first]
            a["recent_base"][vi[first]] = t[first]
        d = t - base
        fits = (base != WIDE) & (d > R_EMPTY) & (d <= np.iinfo(np.int32).max)
        if fits.all():
            a["recent_off"][vi, pos] = d
            return
        a["recent_off"][vi[fits], pos[fits]] = d[fits]
        for j in np.flatnonzero(~fits).tolist():
            v = int(vi[j])
            row = self._recent_rows(vi[j:j + 1])[0]
            row[int(pos[j])] = t[j]
            self._recent_set(v, row)

    def _recent_set(self, v: int, row: np.ndarray) -> None:
        """Hold vehicle ``v``'s fix times ``row`` (int64, NONE = none) as offsets from its newest time, or
        whole in ``_recent_wide`` when one of them is too far from it."""
        a = self.a
        have = row != NONE
        base = int(row[have].max()) if have.any() else NONE
        d = np.where(have, row - (base if have.any() else 0), R_EMPTY)
        if ((d > R_EMPTY) | ~have).all():
            a["recent_base"][v] = base
            a["recent_off"][v] = d
            self._recent_wide.pop(v, None)
        else:
            a["recent_base"][v] = WIDE
            a["recent_off"][v] = R_EMPTY
            self._recent_wide[v] = row.copy()

    def _recent_load(self, rec: np.ndarray) -> None:
        """The fix times of a snapshot's ``recent_ts`` (int64, one row per vehicle) into the offset layout."""
        a, n = self.a, len(rec)
        have = rec != NONE
        some = have.any(axis=1)
        base = np.where(some, np.where(have, rec, NONE).max(axis=1), NONE)
        d = np.where(have, rec - np.where(some, base, 0)[:, None], R_EMPTY)
        ok = ((d > R_EMPTY) | ~have).all(axis=1)
        a["recent_base"][:n] = base
        a["recent_off"][:n] = np.where(ok[:, None], d, R_EMPTY)
        for v in np.flatnonzero(~ok).tolist():
            self._recent_set(v, rec[v])

    def _step_liveness(self, r: "_Round") -> None:
        """Offline episodes. Liveness follows RECEIPT in event time (the watermark when the ping arrived), so a
        blind-area backlog arriving after a silence ends that one silence instead of looking like many."""
        a, c, vi = self.a, r.c, r.vi
        tr = c.trusted[r.P]                 # a duplicate still shows the terminal is alive
        seen = a["seen_wm"][vi]
        wm = c.wm_after[r.P]
        trig = tr & (seen != NONE) & (a["last_moving"][vi] | a["last_acc"][vi]) & (wm > seen + self.offline_ms)
        for j in np.flatnonzero(trig):
            v = int(vi[j])
            if not a["off_alerted"][v]:
                self._add_day(v, int(local_day_tod(a["last_ts"][v])[0]), F_OFFLINE, 1.0)
            r.alerts.append((int(r.P[j]), 0, self._offline_alert(v, int(seen[j]), end_ms=int(wm[j]))))
        if tr.any():
            a["seen_wm"][vi[tr]] = wm[tr]
            a["off_alerted"][vi[tr]] = False

    def _step_track(self, r: "_Round") -> None:
        """Distance, drift and gaps (``geo.track``) for qualified pings newer than the vehicle's fix; the
        pings that are not drift become the "samples" every later rule runs on."""
        a, vi, t, qp = self.a, r.vi, r.t, r.qp
        P = r.P
        lat, lon, spd = r.c.cols.lat[P], r.c.cols.lon[P], r.c.speed[P]
        if self.replay_ms > 0 and not r.replay:
            # older than the vehicle's newest fix: inside the replay window it is merged into the timeline
            # after the round (``_replay_late``), older than the window it only fills track gaps
            self._step_checkpoints(r)
            late = qp & (t < a["q_last"][vi])
            if late.any():
                # newer than checkpoint "a" (moved in event time, ``_step_checkpoints``): merged. (A fix for a
                # day no longer held cannot change that day's row: it is not merged either.)
                again = late & (t > a["ck_ts"][vi]) & ~r.stale
                for v in vi[again].tolist():
                    self._late_pending.add(v)
                beyond = late & ~again
                r.out.late_beyond_window += int(beyond.sum())
                keep = qp & ~beyond
            else:       # (all in order, the usual round: nothing merged, nothing beyond the window)
                beyond, keep = late, qp
            hk = slice(None) if keep.all() else keep      # (no masked copies when every ping is kept)
            self._history_add(vi[hk], t[hk], lat[hk], lon[hk], spd[hk], r.c.late[P][hk], r.c.driver[P][hk])
            qv = vi[qp]
            a["q_last"][qv] = np.maximum(a["q_last"][qv], t[qp])
            qp = qp & ~late
        else:
            beyond = None
        fix_ts = a["fix_ts"][vi]
        has_fix = fix_ts != NONE
        first = qp & ~has_fix
        cont = qp & has_fix & (t > fix_ts)
        r.ooo = qp & has_fix & (t <= fix_ts)
        if beyond is not None:
            r.ooo |= beyond
        r.sample = first.copy()
        if cont.any():
            ci = np.flatnonzero(cont)
            cv = vi[ci]
            s = track_step(fix_ts[ci], a["fix_lat"][cv], a["fix_lon"][cv], a["fix_speed"][cv],
                           a["drift_run"][cv], t[ci], lat[ci], lon[ci], spd[ci], self.tp)
            r.delta[ci, F_KM] = s.km
            r.delta[ci, F_KMINC] = s.km_incomplete
            r.delta[ci, F_DRIFT] = s.drift
            r.out.drift += int(s.drift.sum())
            for j in np.flatnonzero(s.gap):
                k, v = ci[j], int(cv[j])
                self.gaps.open(v, [int(fix_ts[k]), float(a["fix_lat"][v]), float(a["fix_lon"][v]),
                                   int(local_day_tod(np.int64(fix_ts[k]))[0])],
                               [int(t[k]), float(lat[k]), float(lon[k]), int(r.d[k])])
            a["drift_run"][cv] = np.where(s.drift & ~s.reanchor, a["drift_run"][cv] + 1, 0)
            newfix = s.move | s.reanchor
            fv, fk = cv[newfix], ci[newfix]
            a["fix_lat"][fv] = lat[fk]
            a["fix_lon"][fv] = lon[fk]
            upd = newfix | s.hold
            a["fix_ts"][cv[upd]] = t[ci[upd]]
            a["fix_speed"][cv[upd]] = spd[ci[upd]]
            r.sample[ci] = ~s.drift
        if first.any():
            fi = np.flatnonzero(first)
            fv = vi[fi]
            a["fix_ts"][fv] = t[fi]
            a["fix_lat"][fv] = lat[fi]
            a["fix_lon"][fv] = lon[fi]
            a["fix_speed"][fv] = spd[fi]
        r.si = np.flatnonzero(r.sample)
        r.Ps = P[r.si]
        r.svi = vi[r.si]
        r.st = t[r.si]
        r.slate = r.c.late[r.Ps]

    def _step_overspeed(self, r: "_Round") -> None:
        """Overspeed episodes on samples (see the module docstring)."""
        if not len(r.si):
            return
        a, c, vi, t, Ps, si = self.a, r.c, r.svi, r.st, r.Ps, r.si
        v = c.speed[Ps]
        o = c.over[Ps]
        rs = a["os_run_start"][vi]
        rl = a["os_run_last"][vi]
        counted = a["os_run_counted"][vi]
        active = rs != NONE
        broken = active & (~o | (t - rl > self.tp.gap_ms))
        for j in np.flatnonzero(broken & counted):
            r.alerts.append((int(Ps[j]), 1, self._overspeed_alert(int(vi[j]), end_ms=int(a["os_ep_last"][vi[j]]))))
        new_run = o & (~active | broken)
        rs = np.where(new_run, t, np.where(o, rs, NONE))
        counted = np.where(new_run | ~o, False, counted)
        rmax = np.where(new_run, v, np.maximum(a["os_run_max"][vi], v)).astype(np.float32)
        qualify = o & ~counted & (t - rs > self.os_min_ms)
        if qualify.any():
            ep_last = a["os_ep_last"][vi]
            merged = qualify & (ep_last != NONE) & (rs - ep_last <= self.os_merge_ms)
            fresh = qualify & ~merged
            if fresh.any():
                fv, fj = vi[fresh], np.flatnonzero(fresh)
                a["os_ep_start"][fv] = rs[fj]
                a["os_ep_max"][fv] = rmax[fj]
                a["os_ep_limit"][fv] = c.limit[Ps[fj]]
                a["os_ep_lat"][fv] = c.cols.lat[Ps[fj]]
                a["os_ep_lon"][fv] = c.cols.lon[Ps[fj]]
                a["os_ep_late"][fv] = r.slate[fj]
                cats, exps, nights = c.cat[Ps[fj]], c.on_exp[Ps[fj]], c.night[Ps[fj]]
                a["os_ep_key"][fv] = [self.limit_keys.index(self.limits.keys[(int(x), int(y), int(z))])
                                      for x, y, z in zip(cats, exps, nights)]
                r.delta[si[fj], F_OVERSPEED] += 1.0
            counted = counted | qualify
        oc = o & counted
        if oc.any():
            ov = vi[oc]
            a["os_ep_last"][ov] = t[oc]
            a["os_ep_max"][ov] = np.maximum(a["os_ep_max"][ov], v[oc])
        for j in np.flatnonzero(qualify):
            r.alerts.append((int(Ps[j]), 2, self._overspeed_alert(int(vi[j]), end_ms=None)))
        a["os_run_start"][vi] = rs
        a["os_run_last"][vi] = np.where(o, t, rl)
        a["os_run_max"][vi] = rmax
        a["os_run_counted"][vi] = counted

    def _step_fatigue(self, r: "_Round") -> None:
        """Continuous driving (module docstring, "fatigue"): driving intervals, rests, the night part of the
        run, driver changes, episodes opened when a limit is passed and closed when the rest is taken."""
        if not len(r.si):
            return
        a, c, vi, t, Ps, si = self.a, r.c, r.svi, r.st, r.Ps, r.si
        mv = c.moving[Ps]
        lat, lon = c.cols.lat[Ps], c.cols.lon[Ps]
        drv = c.driver[Ps]
        last = a["fat_last_ts"][vi]
        has_prev = last != NONE
        dt = np.where(has_prev, t - last, 0)
        moved = has_prev & (haversine_km(a["fat_lat"][vi], a["fat_lon"][vi], lat, lon) > self.rest_move_km)
        long_gap = dt >= self.rest_ms
        # a silence counts as rest only if it lasted the minimum rest AND the vehicle did not move across it
        gap_rest = has_prev & long_gap & ~moved
        driving = has_prev & ~gap_rest & (a["fat_prev_moving"][vi] | moved)
        # a stop (first stopped sample → the vehicle drives again) of at least the minimum rest; when it drove
        # off between two fixes the stop ended at the last stopped fix
        stop0 = a["fat_stop"][vi]
        stop_ends = (stop0 != NONE) & (mv | driving)
        stop_rest = stop_ends & (np.where(driving, last, t) - stop0 >= self.rest_ms)
        prev_drv = a["fat_driver"][vi]
        drv_change = has_prev & (drv >= 0) & (prev_drv >= 0) & (drv != prev_drv)
        reset = gap_rest | drv_change | stop_rest
        # the rest began at the first stopped fix, or after the last fix before the silence / the old driver
        rest_start = np.where((stop_rest | gap_rest) & (stop0 != NONE), stop0, last)
        acc, nacc = a["fat_acc"][vi], a["fat_nacc"][vi]
        self._close_fatigue(r, np.flatnonzero(reset & a["fat_alerted"][vi]), rest_start, acc, nacc)
        acc = np.where(reset, 0, acc)
        nacc = np.where(reset, 0, nacc)
        alerted = a["fat_alerted"][vi] & ~reset
        ex_before = self._excess(acc, nacc)
        d_ms = np.where(driving, dt, 0)
        acc = acc + d_ms
        nacc = nacc + np.where(driving, night_overlap_ms(last, t, *self.night), 0)
        excess = self._excess(acc, nacc)
        r.delta[si, F_FATIGUE] += (excess - ex_before) / 1000.0
        cross = driving & (excess > 0) & ~alerted
        for j in np.flatnonzero(cross):
            v = int(vi[j])
            night_hit = bool(nacc[j] - self.night_cont_ms > acc[j] - self.day_cont_ms)
            a["fat_ep_start"][v] = t[j]
            a["fat_ep_night"][v] = night_hit
            a["fat_ep_lat"][v], a["fat_ep_lon"][v] = lat[j], lon[j]
            a["fat_ep_late"][v] = r.slate[j]
            a["fat_ep_driver"][v] = drv[j] if drv[j] >= 0 else prev_drv[j]
            a["fat_ep_excess"][v] = excess[j]
            r.alerts.append((int(Ps[j]), 3, self._fatigue_alert(v, int(acc[j]), int(nacc[j]), None)))
        alerted = alerted | cross
        ep = alerted & ~cross
        if ep.any():
            a["fat_ep_excess"][vi[ep]] = excess[ep]
        stop = np.where(stop_ends, NONE, stop0)
        stop = np.where(~mv & (stop == NONE), t, stop)
        a["fat_acc"][vi], a["fat_nacc"][vi] = acc, nacc
        a["fat_alerted"][vi] = alerted
        a["fat_stop"][vi] = stop
        a["fat_last_ts"][vi] = t
        a["fat_prev_moving"][vi] = mv
        a["fat_lat"][vi], a["fat_lon"][vi] = lat, lon
        a["fat_driver"][vi] = np.where(drv >= 0, drv, np.where(reset, -1, prev_drv))
        r.driving_ms = d_ms

    def _excess(self, acc: np.ndarray, nacc: np.ndarray) -> np.ndarray:
        """Driving beyond the limits: the run beyond the day limit, or its night part beyond the night limit."""
        return np.maximum(np.maximum(acc - self.day_cont_ms, nacc - self.night_cont_ms), 0)

    def _close_fatigue(self, r: "_Round", js: np.ndarray, end: np.ndarray, acc: np.ndarray, nacc: np.ndarray) -> None:
        for j in js:
            v = int(r.svi[j])
            r.alerts.append((int(r.Ps[j]), 3, self._fatigue_alert(v, int(acc[j]), int(nacc[j]), int(end[j]))))

    def _step_fatigue_24h(self, r: "_Round") -> None:
        """Cumulative driving over the last 24 h (hour buckets: the current hour + the 23 before)."""
        if not len(r.si):
            return
        a, c, vi, t, Ps = self.a, r.c, r.svi, r.st, r.Ps
        driving = r.driving_ms > 0
        H = (t + 8 * HOUR_MS) // HOUR_MS
        ch = a["cum_hour"][vi]
        moved = H != ch
        if moved.any():
            mj = np.flatnonzero(moved)
            mvv = vi[mj]
            adv = np.minimum(H[mj] - np.where(ch[mj] == NONE, H[mj] - 24, ch[mj]), 24)
            base = np.where(ch[mj] == NONE, 0, ch[mj] + 1)
            offs = (np.arange(24)[None, :] - base[:, None]) % 24
            clear = offs < adv[:, None]
            b = a["cum_b"][mvv]
            a["cum_tot"][mvv] -= np.where(clear, b, 0).sum(axis=1)
            a["cum_b"][mvv] = np.where(clear, 0, b)
            a["cum_hour"][mvv] = H[mj]
        if driving.any():
            dj = np.flatnonzero(driving)
            dv = vi[dj]
            add = np.minimum(r.driving_ms[dj], 24 * HOUR_MS)
            a["cum_b"][dv, H[dj] % 24] += add.astype(np.int32)
            a["cum_tot"][dv] += add
        tot = a["cum_tot"][vi]
        over_cum = tot > self.cum_ms
        was = a["cum_alerted"][vi]
        for j in np.flatnonzero(over_cum & ~was):
            v = int(vi[j])
            a["cum_start"][v] = t[j]
            a["cum_lat"][v], a["cum_lon"][v] = c.cols.lat[Ps[j]], c.cols.lon[Ps[j]]
            a["cum_late"][v] = r.slate[j]
            r.alerts.append((int(Ps[j]), 4, self._cum_alert(v, int(tot[j]), None)))
        for j in np.flatnonzero(~over_cum & was):
            r.alerts.append((int(Ps[j]), 4, self._cum_alert(int(vi[j]), int(tot[j]), int(t[j]))))
        a["cum_alerted"][vi] = over_cum

    def _step_curfew(self, r: "_Round") -> None:
        """A moving sample inside the curfew window of a vehicle the curfew applies to: one event per night."""
        if not len(r.si):
            return
        a, c, vi, t, Ps = self.a, r.c, r.svi, r.st, r.Ps
        cw = c.curfew_win[Ps]
        if not cw.any():
            return
        dd = r.d[r.si]
        newc = cw & (a["curfew_day"][vi] != dd)
        for j in np.flatnonzero(newc):
            vv = int(vi[j])
            r.alerts.append((int(Ps[j]), 5, make_alert(
                "curfew", self.plates[vv], int(t[j]), severity="high", lat=c.cols.lat[Ps[j]],
                lon=c.cols.lon[Ps[j]], late=bool(r.slate[j]),
                details={"speed_kmh": round(float(c.speed[Ps[j]]), 1), "window": f"{self.cfg['curfew.start']}-"
                         f"{self.cfg['curfew.end']}", "config_key": "curfew.start",
                         "limit": f"{self.cfg['curfew.start']}-{self.cfg['curfew.end']}",
                         "route_km": self.registry.vehicles[self.plates[vv]].route_km})))
        a["curfew_day"][vi[newc]] = dd[newc]
        r.delta[r.si[newc], F_CURFEW] += 1.0

    def _step_geofence(self, r: "_Round") -> None:
        """Restricted-zone membership of samples: entering / leaving raise geofence_enter / geofence_exit."""
        c = r.c
        if not len(r.si) or c.zbits is None or not self.zones.restricted:
            return
        a, vi, t, Ps = self.a, r.svi, r.st, r.Ps
        nb = c.zbits[Ps]
        old = a["zbits"][vi]
        for j in np.flatnonzero((nb != old).any(axis=1)):
            vv = int(vi[j])
            for kind, bits in (("geofence_exit", old[j] & ~nb[j]), ("geofence_enter", nb[j] & ~old[j])):
                for zid in self.zones.zone_ids(bits):
                    z = next(z for z in self.zones.restricted if z.zone_id == zid)
                    r.alerts.append((int(Ps[j]), 6 if kind == "geofence_exit" else 7, make_alert(
                        kind, self.plates[vv], int(t[j]), severity="high" if kind == "geofence_enter" else "medium",
                        lat=c.cols.lat[Ps[j]], lon=c.cols.lon[Ps[j]], late=bool(r.slate[j]), discriminator=zid,
                        details={"zone_id": zid, "zone_name": z.name, "config_key": "registry.zones", "limit": zid})))
        a["zbits"][vi] = nb

    def _step_terminal_alarms(self, r: "_Round") -> None:
        """Rising edges of the JT/T 808 alarm word, on pings with a trusted time newer than the last one."""
        a, c, vi, t, P = self.a, r.c, r.vi, r.t, r.P
        inord = r.tr & (t > a["last_ts"][vi])
        if not inord.any():
            return
        ao = c.alarm_ok[P] & inord & ~r.dup
        if ao.any():
            flags = c.cols.alarm_flags[P]
            rising = flags & ~a["alarm_prev"][vi] & 0xFFFFFFFF
            for j in np.flatnonzero(ao & (rising != 0)):
                self._alarm_alerts(int(vi[j]), int(P[j]), int(t[j]), int(rising[j]), int(flags[j]), c, r.alerts)
            a["alarm_prev"][vi[ao]] = flags[ao]
        iv = vi[inord]
        a["last_ts"][iv] = t[inord]
        a["last_moving"][iv] = c.moving[P][inord]
        a["last_acc"][iv] = (c.cols.status_flags[P][inord] & STATUS_ACC) != 0

    def _step_stops(self, r: "_Round") -> None:
        """Stop events (source tracing, geo/sites.py) of every vehicle but buses: a stop is a run of samples
        at or below ``source.stop_speed_kmh`` within ``source.stop_max_move_m`` of where it began (a silence
        does not end it). It ends at the next faster or farther sample; one that lasted
        ``source.min_stop_min`` from its first to its last stopped sample is kept for ``vehicle_stops``.
        A rule of the time-ordered timeline: a replay re-derives it (``_retract_stops``)."""
        if not len(r.si):
            return
        a, c, vi, t, Ps = self.a, r.c, r.svi, r.st, r.Ps
        g = self._stop_cats[c.cat[Ps]]
        if not g.all():
            vi, t, Ps = vi[g], t[g], Ps[g]
            if not len(vi):
                return
        lat, lon = c.cols.lat[Ps], c.cols.lon[Ps]
        stopped = c.speed[Ps] <= self.src_stop_kmh
        st0 = a["stop_start"][vi]
        ends = st0 != NONE
        if ends.any():
            oj = np.flatnonzero(ends & stopped)
            far = haversine_km(a["stop_lat"][vi[oj]].astype(np.float64), a["stop_lon"][vi[oj]].astype(np.float64),
                               lat[oj], lon[oj]) > self.src_move_km
            ends &= ~stopped
            ends[oj[far]] = True
            if ends.any():
                last = a["stop_last"][vi]
                for j in np.flatnonzero(ends & (last - st0 >= self.src_stop_ms)).tolist():
                    v = int(vi[j])
                    # held as float32 (≈ 1 m): 5 decimals give back the fix's own position
                    self.stop_buf.append((v, int(st0[j]), int(last[j]), round(float(a["stop_lat"][v]), 5),
                                          round(float(a["stop_lon"][v]), 5), int(t[j])))
                a["stop_start"][vi[ends]] = NONE
        if stopped.any():
            begin = stopped & (a["stop_start"][vi] == NONE)
            bv = vi[begin]
            a["stop_start"][bv] = t[begin]
            a["stop_lat"][bv] = lat[begin]
            a["stop_lon"][bv] = lon[begin]
            a["stop_last"][vi[stopped]] = t[stopped]

    def _retract_stops(self, vs: np.ndarray, rows: np.ndarray) -> None:
        """Before a replay of ``vs``: the stops their replayed samples closed are derived again, so those
        already found (buffered or archived) are withdrawn — every stop closed after the checkpoint (or,
        without one, after the vehicle's first held sample)."""
        ck = self.a["ck_ts"][vs]
        if (ck == NONE).any() and len(rows):
            first = np.searchsorted(rows["v"], vs, "left")
            has = first < len(rows)
            own = np.zeros(len(vs), dtype=bool)
            own[has] = rows["v"][first[has]] == vs[has]
            ck = np.where((ck == NONE) & own, rows["ts"][np.minimum(first, len(rows) - 1)] - 1, ck)
        after = dict(zip(vs.tolist(), ck.tolist()))
        for v, t in after.items():
            self.stop_retract[v] = min(t, self.stop_retract.get(v, t))
        if self.stop_buf:
            self.stop_buf = [s for s in self.stop_buf if s[0] not in after or s[5] <= after[s[0]]]

    def stop_events(self) -> tuple[list[tuple], list[tuple]]:
        """Drain the stop events: (withdrawals ``(plate, closed after ms)``, stops ``(plate, start_ms, end_ms,
        lat, lon, closed_ms)``) for ``vehicle_stops`` — withdrawals applied first."""
        plates = self.plates
        retract = sorted((plates[v], t) for v, t in self.stop_retract.items())
        stops = sorted((plates[v], s, e, la, lo, cl) for v, s, e, la, lo, cl in self.stop_buf)
        self.stop_buf, self.stop_retract = [], {}
        return retract, stops

    def skip_output_steps(self, names) -> None:
        """Leave out rules whose only product is a stream output the caller never reads — the batch paths
        (streams/assess_gps.py) have no ``track_points`` (``track_sampling``) and no ``vehicle_stops``
        (``stops``). No other rule reads what these keep, so rows and alerts are the same
        (tests/test_engine_batch.py)."""
        names = set(names)
        if not names <= OUTPUT_ONLY_STEPS:
            raise ValueError(f"only {sorted(OUTPUT_ONLY_STEPS)} can be skipped, not {sorted(names - OUTPUT_ONLY_STEPS)}")
        self._round_steps = tuple(s for s in ROUND_STEPS if s.name not in names)
        self._replay_steps = tuple(s for s in REPLAY_STEPS if s.name not in names)

    def _step_track_sampling(self, r: "_Round") -> None:
        """One track point per ``track.sample_s`` of goods vehicles (every vehicle with ``track.sample_all``):
        ``track_points`` (console playback and area search, the intercept's fix)."""
        if self.sample_ms <= 0 or not len(r.si):
            return
        a, c, vi, t, Ps = self.a, r.c, r.svi, r.st, r.Ps
        g = self._goods[c.cat[Ps]] & (t - a["samp_ts"][vi] >= self.sample_ms)
        if g.any():
            gj = np.flatnonzero(g)
            a["samp_ts"][vi[gj]] = t[gj]
            self.track_buf.append(np.stack([vi[gj].astype(np.float64), t[gj].astype(np.float64),
                                            c.cols.lat[Ps[gj]], c.cols.lon[Ps[gj]], c.speed[Ps[gj]]], axis=1))

    def _step_day_counters(self, r: "_Round") -> None:
        """Add the round's contributions to the vehicle-day counters of the pings' days (stale days: counted
        in the output only)."""
        a = self.a
        good = ~r.stale
        if r.stale.any() and not r.replay:        # (a replay meets them again: counted once)
            k = int(r.stale.sum())
            r.out.stale_day += k
            self.stale_total += k
            for j in np.flatnonzero(r.stale):     # a day no longer held: its stored row is recomputed
                self._add_past(int(r.vi[j]), int(r.d[j]), r.delta[j])
        # (vehicle, slot) as one row index of the counters seen as 2-D: numpy's fast path for row gathers
        # (two index arrays into the 3-D array cost 10 % of the engine, docs/performance.md)
        allgood = not r.stale.any()
        gv = r.vi if allgood else r.vi[good]
        row = gv * self.slots + (r.d if allgood else r.d[good]) % self.slots
        delta = r.delta if allgood else r.delta[good]
        # the counters and, beside them, rc_a and rc_b (what the time-ordered rules added since each checkpoint,
        # ``_alloc_day``): one gather of ``delta``'s columns and one add per array (the counts of ``delta`` are
        # whole numbers: exact as int32)
        day_f, day_i = _slot_rows(self._day_f), _slot_rows(self._day_i)
        add_f = delta.take(self._day_cols_f, axis=1)
        add_i = delta.take(self._day_cols_i, axis=1).astype(np.int32)
        _slot_rows(a["dirty"])[row] = True
        nf, ni = len(CNT_F), len(CNT_I)
        if self.replay_ms > 0 and not self._replay_before_b:
            hb = a["ckb_ts"][gv] != NONE
            if hb.all():        # (every vehicle past its first window: no masked copies)
                day_f[row] += add_f
                day_i[row] += add_i
                return
            day_f[row[hb]] += add_f[hb]
            day_i[row[hb]] += add_i[hb]
            row, add_f, add_i = row[~hb], add_f[~hb], add_i[~hb]
        # the counters, and rc_a with the window on: not rc_b (before its first checkpoint "b", or in a replay
        # before "b" is taken again)
        wf, wi = (2 * nf, ni + RULE_I) if self.replay_ms > 0 else (nf, ni)
        if wf == add_f.shape[1] and wi == add_i.shape[1]:
            day_f[row] += add_f
            day_i[row] += add_i
        else:
            day_f[row, :wf] += add_f[:, :wf]
            day_i[row, :wi] += add_i[:, :wi]

    def _step_gap_fill(self, r: "_Round") -> None:
        """Qualified pings older than the vehicle's fix (blind-area re-uploads): fill open track gaps."""
        if not r.ooo.any():
            return
        c = r.c
        for j in np.flatnonzero(r.ooo):
            r.out.out_of_order += 1
            p = int(r.P[j])
            v = int(r.vi[j])
            res = self.gaps.fill(v, int(r.t[j]), float(c.cols.lat[p]), float(c.cols.lon[p]), float(c.speed[p]),
                                 int(r.d[j]), before=int(self.a["ck_ts"][v]) if self.replay_ms > 0 else None)
            if res is None:
                continue
            if res[0] == "drift":
                r.out.drift += 1
                self._add_day(v, res[1], F_DRIFT, 1.0)
            else:
                for day_, dkm, dinc in res[1]:
                    self._add_day(v, day_, F_KM, dkm)
                    self._add_day(v, day_, F_KMINC, dinc)

    # --- alert builders -----------------------------------------------------------------------------
    def _overspeed_alert(self, v: int, end_ms: int | None) -> dict:
        a = self.a
        lim = float(a["os_ep_limit"][v])
        mx = float(a["os_ep_max"][v])
        start = int(a["os_ep_start"][v])
        det = {"max_speed_kmh": round(mx, 1), "limit": round(lim, 1),
               "config_key": self.limit_keys[int(a["os_ep_key"][v])],
               "min_duration_s": self.os_min_ms // 1000, "state": "open" if end_ms is None else "closed"}
        if end_ms is not None:
            det["duration_s"] = (end_ms - start) / 1000.0
        return make_alert("overspeed", self.plates[v], start, end_ms=end_ms,
                          severity=overspeed_severity(mx, lim, self.cfg), lat=a["os_ep_lat"][v],
                          lon=a["os_ep_lon"][v], late=bool(a["os_ep_late"][v]), details=det)

    def _fatigue_alert(self, v: int, driven_ms: int, night_ms: int, end_ms: int | None) -> dict:
        """Continuous-driving episode: raised open when a limit is passed, closed (``end_ts``, duration) when
        the rest is taken or the driver changes."""
        a = self.a
        night = bool(a["fat_ep_night"][v])
        lim = self.night_cont_ms if night else self.day_cont_ms
        start = int(a["fat_ep_start"][v])
        det = {"kind": "continuous", "driving_h": round(driven_ms / HOUR_MS, 4),
               "night_driving_h": round(night_ms / HOUR_MS, 4), "limit": round(lim / HOUR_MS, 4),
               "config_key": "fatigue.night_continuous_h" if night else "fatigue.day_continuous_h", "night": night,
               "driver_id": self._driver_name(int(a["fat_ep_driver"][v])),
               "state": "open" if end_ms is None else "closed"}
        if end_ms is not None:
            det["duration_s"] = max(end_ms - start, 0) / 1000.0
            det["fatigue_s"] = round(int(a["fat_ep_excess"][v]) / 1000.0, 3)
        return make_alert("fatigue", self.plates[v], start, end_ms=end_ms, severity="high",
                          lat=a["fat_ep_lat"][v], lon=a["fat_ep_lon"][v], late=bool(a["fat_ep_late"][v]),
                          discriminator="continuous", details=det)

    def _cum_alert(self, v: int, total_ms: int, end_ms: int | None) -> dict:
        """24-hour cumulative driving: raised when the total passes the limit, closed when it drops back."""
        a = self.a
        start = int(a["cum_start"][v])
        det = {"kind": "cumulative_24h", "driving_h": round(total_ms / HOUR_MS, 4),
               "limit": round(self.cum_ms / HOUR_MS, 4), "config_key": "fatigue.day_cum_h", "night": False,
               "state": "open" if end_ms is None else "closed"}
        if end_ms is not None:
            det["duration_s"] = max(end_ms - start, 0) / 1000.0
        return make_alert("fatigue", self.plates[v], start, end_ms=end_ms, severity="high", lat=a["cum_lat"][v],
                          lon=a["cum_lon"][v], late=bool(a["cum_late"][v]), discriminator="cumulative_24h",
                          details=det)

    def _driver_codes(self, drivers: list) -> np.ndarray:
        """Driver codes of a batch's ``driver_id`` column: new drivers registered in order of first
        appearance (as ``_driver_code`` one by one would), then one C-level lookup per ping (a Python call
        per ping cost 15 % of the engine on the province month, docs/performance.md)."""
        n = len(drivers)
        if not any(drivers):
            return np.full(n, -1, dtype=np.int32)
        index = self.driver_index
        for d in dict.fromkeys(drivers):
            if d and d not in index:
                self._driver_code(d)
        return np.fromiter(map(index.get, drivers, repeat(-1)), dtype=np.int32, count=n)

    def _driver_code(self, driver_id) -> int:
        """Driver (IC card 从业资格证 number) → small int; unknown → -1."""
        if not driver_id:
            return -1
        code = self.driver_index.get(driver_id)
        if code is None:
            code = self.driver_index[driver_id] = len(self.drivers)
            self.drivers.append(driver_id)
        return code

    def _driver_name(self, code: int):
        return self.drivers[code] if 0 <= code < len(self.drivers) else None

    def _offline_alert(self, v: int, last_ms: int, end_ms: int | None) -> dict:
        a = self.a
        det = {"last_seen_ts": format_ts_ms(last_ms), "limit": self.offline_ms // 1000,
               "config_key": "offline.timeout_s", "state": "open" if end_ms is None else "closed"}
        if end_ms is not None:
            det["silent_s"] = (end_ms - last_ms) / 1000.0
        has_fix = a["fix_ts"][v] != NONE
        return make_alert("offline", self.plates[v], last_ms, end_ms=end_ms, severity="medium",
                          lat=a["fix_lat"][v] if has_fix else None, lon=a["fix_lon"][v] if has_fix else None,
                          details=det)

    def _alarm_alerts(self, v: int, pos: int, t: int, rising: int, flags: int, c: "_Batch", alerts: list) -> None:
        j = pos
        version = int(c.cols.jt808_version[j]) if c.cols.jt808_version is not None else 0
        for bit in range(32):
            if rising >> bit & 1:
                alerts.append((pos, 8 + bit, make_alert(
                    "terminal_alarm", self.plates[v], t, severity=alarm_severity(bit),
                    lat=c.cols.lat[j] if c.qualified[j] else None, lon=c.cols.lon[j] if c.qualified[j] else None,
                    late=bool(c.late[j]), discriminator=str(bit),
                    details={"bit": bit, "name": alarm_bit_name(bit, version), "alarm_flags": flags,
                             "config_key": "alerts.alarm_from_unpositioned", "limit": None})))

    # --- timers and views ---------------------------------------------------------------------------
    def check_offline(self, now_ms: int | None = None) -> list[dict]:
        """Offline alerts for vehicles silent longer than ``offline.timeout_s`` before ``now_ms``
        (default: the watermark) that were last seen moving or with ACC on. One alert per silence."""
        clock = self.watermark if now_ms is None else int(now_ms)
        if clock == NO_WATERMARK or self.n == 0:
            return []
        a, n = self.a, self.n
        last = a["seen_wm"][:n]
        hits = np.flatnonzero((last != NONE) & (a["last_moving"][:n] | a["last_acc"][:n]) & ~a["off_alerted"][:n]
                              & (clock > last + self.offline_ms))
        out = []
        for v in hits:
            v = int(v)
            a["off_alerted"][v] = True
            self._add_day(v, int(local_day_tod(a["last_ts"][v])[0]), F_OFFLINE, 1.0)
            out.append(self._offline_alert(v, int(last[v]), end_ms=None))
        return out

    def online_count(self, now_ms: int | None = None) -> int:
        clock = self.watermark if now_ms is None else int(now_ms)
        seen = self.a["seen_wm"][: self.n]
        return int(np.count_nonzero((seen != NONE) & (seen >= clock - self.offline_ms)))

    def vehicles_view(self, now_ms: int | None = None) -> list[dict]:
        """Operator map: plate, lat, lon, speed, state (moving|stopped|offline|alerting), last_ts."""
        clock = self.watermark if now_ms is None else int(now_ms)
        a, n = self.a, self.n
        out = []
        last = a["last_ts"][:n]
        seen = a["seen_wm"][:n]
        alerting = (a["os_run_counted"][:n] | a["fat_alerted"][:n] | (a["zbits"][:n] != 0).any(axis=1))
        for v in np.flatnonzero(last != NONE):
            if clock - seen[v] > self.offline_ms:
                state = "offline"
            elif alerting[v]:
                state = "alerting"
            else:
                state = "moving" if a["last_moving"][v] else "stopped"
            has_fix = a["fix_ts"][v] != NONE
            out.append({"plate": self.plates[v], "lat": float(a["fix_lat"][v]) if has_fix else None,
                        "lon": float(a["fix_lon"][v]) if has_fix else None,
                        "speed_kmh": float(a["fix_speed"][v]) if has_fix else None, "state": state,
                        "last_ts": format_ts_ms(int(last[v]))})
        return out

    def _track_array(self) -> np.ndarray:
        """Buffered samples as rows (vehicle index, ts, lat, lon, speed), sorted by vehicle then time."""
        if not self.track_buf:
            return np.zeros((0, 5))
        arr = np.concatenate(self.track_buf)
        return arr[np.lexsort((arr[:, 1], arr[:, 0]))]

    def sample_track(self) -> list[tuple]:
        """Drain sampled goods-vehicle points: (plate, ts_ms, lat, lon, speed_kmh) for ``track_points``."""
        arr = self._track_array()
        self.track_buf = []
        # column-wise, C-level (a commit drains thousands of points: a tuple built per row in Python cost 6 %
        # of the worker, docs/performance.md)
        return list(zip(map(self.plates.__getitem__, arr[:, 0].astype(np.int64).tolist()),
                        arr[:, 1].astype(np.int64).tolist(), arr[:, 2].tolist(), arr[:, 3].tolist(),
                        arr[:, 4].tolist()))

    def _cnt_rows(self, vs: np.ndarray, ss: np.ndarray) -> np.ndarray:
        """The day counters of (vehicle, slot) pairs as float64 rows in ``DAY_COLUMNS`` order (the one-array
        layout: every count is exact in float64)."""
        out = np.empty((len(vs), N_FIELDS))
        out[:, CNT_F] = self.a["cnt_f"][vs, ss]
        out[:, CNT_I] = self.a["cnt_i"][vs, ss]
        return out

    def _row(self, v: int, s: int) -> dict:
        cnt = self._cnt_rows(np.array([v]), np.array([s]))[0]
        row = {"plate": self.plates[v], "day": day_string(int(self.a["slot_day"][v, s]))}
        for f, name in enumerate(DAY_COLUMNS):
            row[name] = int(cnt[f]) if f in _INT_FIELDS else round(float(cnt[f]), 6)
        row["online"] = row["pings"] > 0
        row["updated_at"] = format_ts_ms(self.watermark_ms)
        return row

    def day_rows(self, dirty_only: bool = True) -> list[dict]:
        """Vehicle-day rows with absolute values (``vehicle_day`` columns + ``online`` + ``updated_at``),
        sorted by (plate, day): every day changed since the last call (or every day held,
        ``dirty_only=False``). The worker's commit takes the tuples of ``day_table`` instead."""
        return self.day_table(dirty_only).dicts()

    def day_table(self, dirty_only: bool = True) -> "DayRows":
        """``day_rows`` as tuples in ``DAY_ROW_COLS`` order, built column-wise (a dict per dirty vehicle-day
        every commit cost 9 % of the worker, docs/performance.md)."""
        a, n = self.a, self.n
        sel = a["dirty"][:n] if dirty_only else (a["slot_day"][:n] >= 0)
        rows = [tuple(r.get(c, 0) for c in DAY_ROW_COLS) for r in self.pending_rows]
        self.pending_rows = []
        vs, ss = np.nonzero(sel)
        if len(vs):
            days = a["slot_day"][vs, ss].tolist()
            cnts = self._cnt_rows(vs, ss)
            dstr = {d: day_string(d) for d in set(days)}
            cols = [cnts[:, f].astype(np.int64).tolist() if f in _INT_FIELDS else np.round(cnts[:, f], 6).tolist()
                    for f in range(N_FIELDS)]
            rows.extend(zip(map(self.plates.__getitem__, vs.tolist()), map(dstr.__getitem__, days), *cols))
        a["dirty"][:n] = False
        if self.watermark != NO_WATERMARK:
            self.gaps.prune(self.watermark)
        rows.sort()
        return DayRows(rows, format_ts_ms(self.watermark_ms))

    # --- persistence --------------------------------------------------------------------------------
    def snapshot(self, compress: bool = True) -> bytes:
        """All state as one npz blob (arrays trimmed to the vehicles held + a JSON meta array).
        ``compress=False``: entries stored, not deflated — the worker's archive compresses the whole blob
        with a faster codec (streams/archive/snapshots.py); ``restore`` reads both."""
        return self.snapshot_capture().encode(compress)

    def snapshot_capture(self, segments: str | None = None) -> "SnapshotCapture":
        """The state as ``snapshot`` writes it, taken in a few ms on the caller's thread: the arrays of the
        vehicles held copied, the rest serialised, the held samples by reference (``_history`` never changes
        an array in place, it builds new ones). ``SnapshotCapture.encode`` writes the blob — in another
        thread while this engine runs on (streams/gps.py).

        ``segments``: where the replay window's held samples go. None: inside the blob. "full": all of them
        into ``SnapshotCapture.segment()``, the blob without them. "delta": only the samples added since the
        previous "full"/"delta" capture (the engine logs them from a first "full" capture on). ``restore``
        takes the blob and the segments of the last full capture and every delta after it, in order."""
        if segments not in (None, "full", "delta"):
            raise ValueError(f"segments must be None, 'full' or 'delta', not {segments!r}")
        spill = self._spill
        if segments == "delta" and (self._hist_log is None if spill is None else not spill.logging):
            raise ValueError("a delta snapshot needs a full one first")
        meta = {"version": SNAPSHOT_VERSION, "hist_in_segments": segments is not None, "plates": self.plates,
                "watermark": self.watermark, "gaps": self.gaps.to_json(), "pending_rows": self.pending_rows,
                "zones": self.zones.restricted_ids, "slots": self.slots, "stale_total": self.stale_total,
                "fix_clock": self.fix_clock, "stops": self.stop_buf,
                "stop_retract": sorted(self.stop_retract.items()),
                "drivers": self.drivers, "alog": [[v, list(d.values())] for v, d in sorted(self.alog.items())],
                "past": [[v, d, delta.tolist()] for (v, d), delta in sorted(self.past.items())]}
        arrays = {"__meta__": np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
                  "__track__": self._track_array()}
        tab = (_raw(self._ck_tab)[: self.n].copy().view(self._ck_dtype)      # (one copy, whole rows)
               if self._ck_tab is not None else None)
        for k, v in self.a.items():       # (the layout of earlier versions: the same bytes for the same state)
            if k == "recent_off":
                arrays["recent_ts"] = self._recent_rows(np.arange(self.n))
            elif k in _JOINED:          # the day counters (and theirs since each checkpoint) as one float64 array
                name, cols = _JOINED[k]
                both = np.empty((self.n, self.slots, len(cols[0]) + len(cols[1])))
                both[:, :, cols[0]] = v[: self.n]
                both[:, :, cols[1]] = self.a[k[:-1] + "i"][: self.n]
                arrays[name] = both
            elif k in _JOINED_I:
                pass
            elif k in _CK_NAMES:
                arrays[k] = tab[:, 0 if k.startswith("ck_") else 1][k.split("_", 1)[1]]
            elif k != "recent_base":
                arrays[k] = v[: self.n].copy()
        if spill is not None:      # (the store's files are read by ``encode``: a run is never changed in place)
            if segments is None:
                return SnapshotCapture(arrays, self._history(), [])
            ck = self.a["ck_ts"]
            return SnapshotCapture(arrays, None, [], spill.capture_full(ck) if segments == "full"
                                   else spill.capture_delta(ck))
        if segments is None:
            return SnapshotCapture(arrays, self._hist, list(self._hist_new))
        seg = [self._hist, *self._hist_new] if segments == "full" else self._hist_log
        self._hist_log = []
        return SnapshotCapture(arrays, None, [], seg)

    @classmethod
    def restore(cls, cfg: Config, registry: Registry | None, zones, blob: bytes,
                segments: list[bytes] | None = None, spill_dir=None) -> "PingProcessor":
        """Rebuild from ``snapshot()`` (or a capture's blob and, when it keeps the held samples in segments,
        those ``segments`` in order). Categories are re-read from the (possibly updated) registry; zone
        membership is kept only when the restricted zone list is unchanged. ``spill_dir`` as for the
        constructor: the held samples are then written to new files there (the snapshot is their source)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = orjson.loads(z["__meta__"].tobytes())
            if meta.get("version") not in (1, SNAPSHOT_VERSION):   # 1: no replay window yet (starts empty)
                raise ValueError(f"unsupported ping-state snapshot version {meta.get('version')!r}")
            n = len(meta["plates"])
            self = cls(cfg, registry, zones, capacity=_grown(n), spill_dir=spill_dir)
            if meta["slots"] != self.slots:
                raise ValueError("track.day_slots changed since the snapshot; cannot restore")
            same_zones = meta["zones"] == self.zones.restricted_ids
            track = z["__track__"]
            self.track_buf = [track] if len(track) else []
            self.stop_buf = [tuple(s) for s in meta.get("stops", ())]
            self.stop_retract = {int(v): int(t) for v, t in meta.get("stop_retract", ())}
            if "__hist__" in z.files:   # as the engine held it (maybe unsorted: ``_history_compact``)
                self._hist = _hist_from_snapshot(z["__hist__"])
                self._hist_sorted = False
            if "__hist_new__" in z.files and len(z["__hist_new__"]):   # samples not yet merged (``_history``)
                self._hist_new = [z["__hist_new__"]]
                self._hist_new_n = len(self._hist_new[0])
            if meta.get("hist_in_segments"):
                if segments is None:
                    raise ValueError("this snapshot keeps its held samples in segments: restore needs them")
                # merged by ``_history`` as the engine would have (in order: the first copy of a fix wins)
                self._hist_new = [h for h in map(_segment_samples, segments) if len(h)]
                self._hist_new_n = sum(map(len, self._hist_new))
                self._hist_log = []        # the owner goes on with delta snapshots
            had_window = "ck_ts" in z.files
            for k in self.a:
                if k in _JOINED:
                    name, cols = _JOINED[k]
                    if name not in z.files:
                        continue
                    src = z[name]
                    if name == "cnt" and src.shape[-1] != N_FIELDS:     # before late_from_closed: 9 columns
                        src = np.concatenate([src, np.zeros((*src.shape[:-1], N_FIELDS - src.shape[-1]))], -1)
                    self.a[k][:n] = src[:, :, cols[0]]
                    self.a[k[:-1] + "i"][:n] = src[:, :, cols[1]]   # (whole numbers: exact as int32)
                elif k in z.files and (k not in ("zbits", "ck_zbits", "ckb_zbits") or same_zones):
                    self.a[k][:n] = z[k]
            if "recent_ts" in z.files:
                self._recent_load(z["recent_ts"])
        self.n = n
        self.plates = list(meta["plates"])
        for i, p in enumerate(self.plates):
            dict.__setitem__(self.index, p, i)
            self._apply_registry(i, p)
        self.watermark = int(meta["watermark"])
        self.gaps.load_json(meta["gaps"])
        self.pending_rows = meta["pending_rows"]
        self.stale_total = int(meta["stale_total"])
        self.fix_clock = int(meta.get("fix_clock", NONE))
        if n and self.replay_ms > 0 and not had_window:
            # no replay window in the snapshot (version 1, or written with the window off): it starts now
            # (older late data only fills gaps)
            a = self.a
            last = np.maximum(a["fix_ts"][:n], a["fat_last_ts"][:n])
            a["q_last"][:n] = last
            a["ck_ts"][:n] = last
            for f in RULE_FIELDS:
                a["ck_" + f][:n] = a[f][:n]
        self.drivers = list(meta.get("drivers", []))
        self.driver_index = {d: i for i, d in enumerate(self.drivers)}
        self.alog = {int(v): {al["alert_id"]: al for al in als} for v, als in meta.get("alog", [])}
        self.past = {(int(v), int(d)): np.array(x, dtype=np.float64) for v, d, x in meta.get("past", [])}
        if self._spill is not None:   # the loaded samples, in the order the engine added them, to the files
            self._spill.load([self._hist, *self._hist_new], self.a["ck_ts"])
            self._hist, self._hist_new, self._hist_new_n = np.zeros(0, dtype=HIST), [], 0
            if self._hist_log is not None:
                self._hist_log = None
                self._spill.start_log()
        return self


# arrays held as a float64 and an int32 part that snapshots write as one float64 array: the float64 part's name →
# (the snapshot's name, (its columns, the int32 part's columns) in the snapshot's array)
_JOINED = {"cnt_f": ("cnt", (list(CNT_F), list(CNT_I))),
           "rc_a_f": ("rc_a", (_RC_F_POS, _RC_I_POS)), "rc_b_f": ("rc_b", (_RC_F_POS, _RC_I_POS))}
_JOINED_I = frozenset(k[:-1] + "i" for k in _JOINED)
_DAY_F = tuple(_JOINED)                          # side by side in ``_day_f`` / ``_day_i`` (``_alloc_day``)
_DAY_I = tuple(k[:-1] + "i" for k in _JOINED)
_DAY_COLS = {"cnt_f": CNT_F, "cnt_i": CNT_I, "rc_a_f": CNT_F, "rc_b_f": CNT_F, "rc_a_i": CNT_I[:RULE_I],
             "rc_b_i": CNT_I[:RULE_I]}      # ``delta``'s columns in each (``_alloc_day``)


def _spilled(directory) -> SpilledSamples | None:
    """The held-sample files under ``directory``; None (held in memory: the same results) when it cannot be
    made — a full or read-only disk must not stop the engine."""
    try:
        return SpilledSamples(directory)
    except OSError as err:
        _log.warning("replay window kept in memory: cannot use %s (%s)", directory, err)
        return None


def _checkpoint_dtype(spec: dict) -> np.dtype:
    """One packed row of the checkpoint table: the RULE_FIELDS, widest alignment first (every field aligned)."""
    fields = sorted(RULE_FIELDS, key=lambda f: -np.dtype(spec[f][0]).alignment)
    names, formats, offsets, off = [], [], [], 0
    for f in fields:
        dt, shape, _ = spec[f]
        d = np.dtype((dt, shape)) if shape else np.dtype(dt)
        names.append(f)
        formats.append(d)
        offsets.append(off)
        off += d.itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": -(-off // 8) * 8})


def _raw(tab: np.ndarray) -> np.ndarray:
    """The rows of a checkpoint table as opaque bytes: numpy copies packed records field by field, ≈ 15 times
    slower."""
    return tab.view(np.ndarray).view(np.dtype((np.void, tab.dtype.itemsize)))


def _grown(n: int) -> int:
    """Capacity of the vehicle table for ``n`` vehicles and growth: a sixteenth more (at least 128 rows, at
    least 1 024 in all), not double — the spare rows are live state too (``live_bytes_per_vehicle``: at most
    ≈ 6 % above the rows used once past 2 048 vehicles). A growth copies the ≈ 0.75 KB heap row of every
    vehicle held (the checkpoint table's file is extended in place): ≈ 1.5 ms per 2 500 vehicles, about a
    dozen times while a partition's fleet first reports."""
    return max(1024, n + max(128, n // 16))


def _segment_samples(blob: bytes) -> np.ndarray:
    """The ``HIST`` rows of one segment (``SnapshotCapture.segment``)."""
    arr = np.lib.format.read_array(io.BytesIO(blob), allow_pickle=False)
    if arr.dtype != HIST:
        raise ValueError(f"not a segment of held samples: {arr.dtype}")
    return arr


_SANE_DAYS = 1 << 20      # day numbers below this (year ≈ 4840) convert to months without overflow


def _next_month_day(day: np.ndarray) -> np.ndarray:
    """Day number of the first day of the month after each Beijing day ``day``."""
    return (day.astype("datetime64[D]").astype("datetime64[M]") + 1).astype("datetime64[D]").astype(np.int64)


def _hist_from_snapshot(arr: np.ndarray) -> np.ndarray:
    """Held samples of a snapshot: packed (``HIST``), or the 7 float64 columns of earlier snapshots."""
    if arr.dtype == HIST:
        return arr
    h = np.empty(len(arr), dtype=HIST)
    for k, name in enumerate(("v", "ts", "lat", "lon", "spd", "late", "drv")):
        h[name] = arr[:, k] if len(arr) else []
    return h


def _slot_rows(arr: np.ndarray) -> np.ndarray:
    """A per-(vehicle, day slot) array seen with one row per (vehicle, slot): ``vehicle * slots + slot``.
    Always a view (setting ``shape`` raises rather than copy), so writes reach the state."""
    v = arr.view()
    v.shape = (arr.shape[0] * arr.shape[1], *arr.shape[2:])
    return v


class SnapshotCapture:
    """A consistent copy of one engine's state (``PingProcessor.snapshot_capture``); ``encode`` reads only
    this copy, so it may run in another thread while the engine processes the next batches."""

    def __init__(self, arrays: dict, hist: np.ndarray | None, hist_new: list, seg: list | None = None):
        self.arrays, self.hist, self.hist_new, self.seg = arrays, hist, hist_new, seg

    def segment(self) -> bytes | None:
        """The held samples of a "full" or "delta" capture as one npy array (``HIST`` rows, in the order the
        engine added them); None when the blob holds them itself."""
        if self.seg is None:
            return None
        buf = io.BytesIO()
        np.lib.format.write_array(buf, _hist_concat(self.seg) if self.seg else np.zeros(0, dtype=HIST),
                                  allow_pickle=False)
        return buf.getvalue()

    def encode(self, compress: bool = True) -> bytes:
        """The npz blob ``PingProcessor.restore`` reads. The held samples are written as the engine holds
        them: the sorted store (``__hist__``) and the samples not yet merged into it (``__hist_new__``, in
        arrival order) — restore merges them as ``_history`` would, so no sort runs for a snapshot."""
        arrays = dict(self.arrays)
        if self.hist is not None:
            arrays["__hist__"] = self.hist
        if self.hist_new:
            arrays["__hist_new__"] = np.concatenate(self.hist_new)
        buf = io.BytesIO()
        # npz layout (np.load reads it) with fixed entry dates: the same state gives the same bytes
        method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with zipfile.ZipFile(buf, "w", compression=method, compresslevel=1 if compress else None) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                info._compresslevel = 1 if compress else None
                with zf.open(info, "w") as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        return buf.getvalue()


def format_ts_ms(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, tz=timezone.utc))


@dataclass
class _Batch:
    cols: object
    idx: np.ndarray
    qualified: np.ndarray
    trusted: np.ndarray
    alarm_ok: np.ndarray
    day: np.ndarray
    tod: np.ndarray
    speed: np.ndarray
    moving: np.ndarray
    night: np.ndarray
    late: np.ndarray
    limit: np.ndarray
    over: np.ndarray
    on_exp: np.ndarray
    curfew_win: np.ndarray
    zbits: np.ndarray | None
    wm_after: np.ndarray
    cat: np.ndarray
    reasons: np.ndarray          # quality reason mask per ping (the duplicate step adds its bit)
    time_ok: np.ndarray
    driver: np.ndarray           # driver code per ping (-1 unknown)
    closed: np.ndarray           # its day's month is closed: no rule, counted on the day received


class _Round:
    """Arrays of one round (at most one ping per vehicle), filled in by the steps in order."""

    def __init__(self, P: np.ndarray, c: _Batch, alerts: list, out: ProcessOutput):
        self.P, self.c, self.alerts, self.out = P, c, alerts, out
        self.dup = np.zeros(len(P), dtype=bool)
        self.replay = False
        self.ooo = np.zeros(len(P), dtype=bool)
        self.driving_ms = np.zeros(0, dtype=np.int64)


DAY_ROW_COLS = ("plate", "day") + DAY_COLUMNS     # the ``vehicle_day`` columns a row carries


@dataclass
class DayRows:
    """Vehicle-day rows as tuples (``DAY_ROW_COLS`` order; one per (plate, day), sorted) and the engine's
    ``updated_at`` of the batch; ``dicts`` gives the published form (+ ``online``, ``updated_at``)."""
    rows: list
    updated_at: str

    def dicts(self) -> list[dict]:
        return [self.row_dict(r, self.updated_at) for r in self.rows]

    @staticmethod
    def row_dict(row: tuple, updated_at: str) -> dict:
        """One row in its published form."""
        return dict(zip(DAY_ROW_COLS, row), online=row[2] > 0, updated_at=updated_at)

    @classmethod
    def from_dicts(cls, rows: list[dict], updated_at: str) -> "DayRows":
        return cls([tuple(r[c] for c in DAY_ROW_COLS) for r in rows], updated_at)


@dataclass(frozen=True)
class Step:
    """One rule of the per-round pipeline and the config keys it reads."""
    name: str
    keys: tuple
    fn: object


# The rules of a round, in the order they are applied (quality runs once per batch, before the rounds).
ROUND_STEPS: tuple[Step, ...] = (
    Step("dedupe", ("quality.duplicate_tolerance_s",), PingProcessor._step_dedupe),
    Step("liveness", ("offline.timeout_s",), PingProcessor._step_liveness),
    Step("track", ("drift.v_max_kmh", "drift.stationary_jump_km", "drift.stationary_speed_kmh",
                   "drift.stationary_jump_max_s", "drift.stationary_hold", "drift.reanchor_after", "track.gap_s",
                   "track.gap_km", "late.replay_window_h"), PingProcessor._step_track),
    Step("overspeed", ("speeding.min_duration_s", "speeding.merge_s", "speeding.*", "track.gap_s"),
         PingProcessor._step_overspeed),
    Step("fatigue", ("fatigue.day_continuous_h", "fatigue.night_continuous_h", "fatigue.min_rest_min",
                     "fatigue.rest_max_move_km", "fatigue.stop_speed_kmh", "night.start", "night.end"),
         PingProcessor._step_fatigue),
    Step("fatigue_24h", ("fatigue.day_cum_h",), PingProcessor._step_fatigue_24h),
    Step("curfew", ("curfew.start", "curfew.end", "curfew.exempt_route_km", "curfew.categories"),
         PingProcessor._step_curfew),
    Step("geofence", ("registry.zones",), PingProcessor._step_geofence),
    Step("terminal_alarms", ("alerts.alarm_from_unpositioned",), PingProcessor._step_terminal_alarms),
    Step("stops", ("source.stop_speed_kmh", "source.min_stop_min", "source.stop_max_move_m"),
         PingProcessor._step_stops),
    Step("track_sampling", ("track.sample_s", "track.sample_all"), PingProcessor._step_track_sampling),
    Step("day_counters", ("track.day_slots",), PingProcessor._step_day_counters),
    Step("gap_fill", ("track.fill_max_gaps", "track.fill_window_h", "track.fill_max_points"),
         PingProcessor._step_gap_fill),
)
# Re-evaluation after late data (``PingProcessor._replay_late``): the time-ordered rules and their counters,
# over the vehicle's held samples in time order ("late.replay_window_h").
REPLAY_STEPS: tuple[Step, ...] = tuple(s for s in ROUND_STEPS if s.name in
                                       ("track", "overspeed", "fatigue", "fatigue_24h", "curfew", "geofence",
                                        "stops", "day_counters"))
# rules that only feed a stream output (``PingProcessor.skip_output_steps``)
OUTPUT_ONLY_STEPS = frozenset({"track_sampling", "stops"})
