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

Per-ping order of rules (documented in docs of each rule module):
1. quality (``models.quality``): reason mask; pings with an invalid plate are not attributed to a vehicle.
2. day counters (Beijing day of the ping): pings, qualified. ``track.day_slots`` days per vehicle live in a
   ring; pings for older days are "stale" (counted in the output only).
3. liveness for pings with a trusted time: offline episodes (the watermark moved on by more than
   ``offline.timeout_s`` between two receipts from the vehicle, last seen moving or with ACC on: one
   alert and one ``offline_events`` per silence, counted on the day of the vehicle's latest ping), terminal alarm
   rising edges.
4. track (``geo.track``) for qualified pings: distance, drift, gaps; older pings fill open gaps.
5. on "samples" (qualified, newer than the fix, not drift): overspeed episodes, fatigue clocks, curfew,
   geofence edges, track sampling for goods vehicles.

Rule details:
- overspeed: sample speed > limit (``models.monitoring.SpeedLimits``). A run of consecutive over-limit
  samples (broken by a sample at/below the limit or a data gap > ``track.gap_s``) counts when its duration
  (last over − first over) > ``speeding.min_duration_s``; a counted run starting ≤ ``speeding.merge_s``
  after the previous counted episode's last over-limit sample merges into it (one count, same alert id).
  Alert raised when the run qualifies (end_ts null) and updated when it ends (end_ts = last over sample).
- fatigue: an interval between samples counts as driving when the earlier sample was moving (speed >
  ``fatigue.stop_speed_kmh``) and the interval is shorter than ``fatigue.min_rest_min``. A rest is a stop
  (first stopped sample until the next moving sample) ≥ ``fatigue.min_rest_min``, or a silence of at
  least that long after a moving sample; a rest resets continuous driving. The limit applied at a sample
  is the night limit when the sample is at night. Fatigue seconds = driving beyond the limit. Cumulative
  driving over the last 24 h (hour buckets: the current hour + the 23 before) > ``fatigue.day_cum_h``
  raises a separate alert (once until it drops back under the limit).
- curfew: a moving sample in [curfew.start, curfew.end) of a vehicle in ``curfew.categories`` with
  ``long_distance`` and ``route_km`` > ``curfew.exempt_route_km``: one event and alert per night.
- geofence: restricted-zone membership of samples (zone categories filter by vehicle category); entering
  and leaving raise ``geofence_enter`` / ``geofence_exit``.
- terminal_alarm: rising edges of the JT/T 808 alarm word, by standard name.
- ``late``: alerts raised by re-uploaded pings or pings older than ``alerts.late_after_s`` vs the
  watermark carry ``late: true``.
Pings older than a vehicle's last sample update counters and fill gaps but drive no state machine.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import orjson

from roadwatch.geo.track import GapBook, TrackParams, track_step
from roadwatch.geo.zones import ZoneIndex

from .config import Config
from .monitoring import (CATEGORY_CODES, GOODS_CODES, HOUR_MS, UNKNOWN_CATEGORY,
                         SpeedLimits, alarm_bit_name, alarm_severity, day_string, hhmm_ms, in_window,
                         local_day_tod, make_alert, overspeed_severity)
from .quality import BIT, NO_WATERMARK, POSITION_DEFECTS, REASONS, classify, plate_valid
from .records import format_ts
from .registry import Registry

SNAPSHOT_VERSION = 1
NONE = -(1 << 62)          # "no time": far in the past, differences never overflow int64
STATUS_ACC = 1

# day counter columns (vehicle_day table order after plate/day)
F_PINGS, F_QUAL, F_KM, F_KMINC, F_DRIFT, F_OVERSPEED, F_FATIGUE, F_CURFEW, F_OFFLINE = range(9)
N_FIELDS = 9
DAY_COLUMNS = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count",
               "fatigue_s", "curfew_events", "offline_events")
_INT_FIELDS = (F_PINGS, F_QUAL, F_DRIFT, F_OVERSPEED, F_CURFEW, F_OFFLINE)


def _fields(words: int, slots: int) -> dict[str, tuple]:
    """name → (dtype, extra shape, initial value). All per-vehicle state; snapshot writes all of it."""
    return {
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
        "fat_last_ts": (np.int64, (), NONE), "fat_prev_moving": (np.bool_, (), False),
        "fat_acc": (np.int64, (), 0), "fat_stop": (np.int64, (), NONE), "fat_alerted": (np.bool_, (), False),
        "cum_b": (np.int32, (24,), 0), "cum_hour": (np.int64, (), NONE), "cum_tot": (np.int64, (), 0),
        "cum_alerted": (np.bool_, (), False),
        "curfew_day": (np.int32, (), -1), "zbits": (np.uint64, (words,), 0), "samp_ts": (np.int64, (), NONE),
        "slot_day": (np.int32, (slots,), -1), "cnt": (np.float64, (slots, N_FIELDS), 0.0),
        "dirty": (np.bool_, (slots,), False),
    }


@dataclass
class ProcessOutput:
    alerts: list = field(default_factory=list)
    pings: int = 0
    attributed: int = 0          # pings with a valid plate (kept in vehicle state)
    qualified: int = 0
    drift: int = 0
    out_of_order: int = 0        # qualified pings older than the vehicle's fix (gap-fill path)
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
    """Per-partition ping state and rules. ``process`` a batch, ``check_offline`` on a timer."""

    def __init__(self, cfg: Config, registry: Registry | None = None, zones=None, capacity: int = 1024):
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
        self._spec = _fields(self.zones.words, self.slots)
        self.n = 0
        self.a: dict[str, np.ndarray] = {}
        self._alloc(capacity)
        self.plates: list[str] = []
        self.index = _PlateIndex(self)
        self.gaps = GapBook(self.tp)
        self.watermark = int(NO_WATERMARK)
        self.pending_rows: list[dict] = []       # rows of day slots overwritten before day_rows() ran
        self.track_buf: list[tuple] = []
        self.stale_total = 0
        self._zmask_by_cat = np.stack([self.zones.category_mask(c) for c in (*CATEGORY_CODES, "")])
        self._goods = np.zeros(UNKNOWN_CATEGORY + 1, dtype=bool)
        self._goods[list(GOODS_CODES)] = True
        self._read_params()

    # --- configuration ------------------------------------------------------------------------------
    def _read_params(self) -> None:
        c = self.cfg
        self.stop_kmh = float(c["fatigue.stop_speed_kmh"])
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
        self.sample_ms = int(c["source.track_sample_s"]) * 1000
        self.alarm_unpositioned = bool(c["alerts.alarm_from_unpositioned"])
        self.limit_keys = sorted(set(self.limits.keys.values()))

    # --- vehicle table ------------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        old, self.a = self.a, {}
        for name, (dt, shape, init) in self._spec.items():
            arr = np.full((cap, *shape), init, dtype=dt)
            if name in old:
                arr[: self.n] = old[name][: self.n]
            self.a[name] = arr
        self.cap = cap

    def _add_vehicle(self, plate: str) -> int:
        i = self.n
        if i >= self.cap:
            self._alloc(self.cap * 2)
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

    def live_bytes_per_vehicle(self) -> float:
        """What the live state really costs per tracked vehicle: allocated arrays (including spare capacity)
        plus the plate list and plate→index dict (the benchmark's ``bytes_per_vehicle``)."""
        if self.n == 0:
            return 0.0
        import sys
        arrays = sum(a.nbytes for a in self.a.values())
        plates = sys.getsizeof(self.plates) + sum(sys.getsizeof(p) for p in self.plates)
        index = sys.getsizeof(self.index)
        return (arrays + plates + index) / self.n

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
        out.qualified = int(qualified.sum())
        out.attributed = int(attributed.sum())
        for i, name in enumerate(REASONS):
            c = int(np.count_nonzero(reasons & np.uint16(1 << i)))
            if c:
                out.reasons[name] = c
        time_ok = (reasons & (BIT["time_future"] | BIT["time_too_old"] | BIT["bad_flags"])) == 0
        trusted = attributed & time_ok
        if self.alarm_unpositioned:
            alarm_ok = trusted & ((reasons & ~POSITION_DEFECTS & ~BIT["plate_color"]) == 0)
        else:
            alarm_ok = qualified
        ts = cols.ts
        count_ts = np.where(time_ok, ts, np.where(q.wm_after != NO_WATERMARK, q.wm_after, ts))
        day, _ = local_day_tod(count_ts)
        _, tod = local_day_tod(ts)
        speed = cols.speed_kmh
        moving = speed > self.stop_kmh
        night = in_window(tod, *self.night)
        has_wm = q.wm_after != NO_WATERMARK
        late = cols.reupload.astype(bool) | (has_wm & ((np.where(has_wm, q.wm_after, ts) - ts) > self.late_ms))
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
        P_all = np.flatnonzero(attributed)
        order = P_all[np.argsort(idx[P_all], kind="stable")]
        vs = idx[order]
        m = len(order)
        starts = np.ones(m, dtype=bool)
        starts[1:] = vs[1:] != vs[:-1]
        grp_start = np.maximum.accumulate(np.where(starts, np.arange(m), 0))
        rank = np.arange(m) - grp_start
        ctx = _Batch(cols, idx, qualified, trusted, alarm_ok, day, tod, speed, moving, night, late, limit,
                     over, on_exp, curfew_win, zbits, q.wm_after, cat)
        alerts: list[tuple] = []
        max_rank = int(rank.max()) if m else -1
        if max_rank == 0:
            self._round(order, ctx, alerts, out)
        else:
            by_rank = np.argsort(rank, kind="stable")
            bounds = np.searchsorted(rank[by_rank], np.arange(max_rank + 2))
            for k in range(max_rank + 1):
                self._round(order[by_rank[bounds[k]:bounds[k + 1]]], ctx, alerts, out)
        alerts.sort(key=lambda x: (x[0], x[1]))
        out.alerts = [a for _, _, a in alerts]
        return out

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
            a["cnt"][nv, ns] = 0.0
            a["dirty"][nv, ns] = False
            a["slot_day"][nv, ns] = d[newer]
        return d < sd

    def _add_day(self, vi: int, d: int, f: int, value: float) -> bool:
        """Scalar counter update for the rare paths (gap fill, offline). False when the day is stale."""
        vi_a, d_a = np.array([vi]), np.array([d])
        if self._slot_prepare(vi_a, d_a)[0]:
            self.stale_total += 1
            return False
        s = d % self.slots
        self.a["cnt"][vi, s, f] += value
        self.a["dirty"][vi, s] = True
        return True

    def _round(self, P: np.ndarray, c: "_Batch", alerts: list, out: ProcessOutput) -> None:
        a = self.a
        vi = c.idx[P]
        t = c.cols.ts[P]
        mlen = len(P)
        d = c.day[P]
        stale = self._slot_prepare(vi, d)
        delta = np.zeros((mlen, N_FIELDS), dtype=np.float64)
        delta[:, F_PINGS] = 1.0
        qp = c.qualified[P]
        delta[:, F_QUAL] = qp
        mv = c.moving[P]

        # --- liveness: offline episodes, terminal alarms (trusted time, newer than the last ping) -----
        # Liveness follows RECEIPT in event time (the watermark when the ping arrived), so a blind-area
        # backlog arriving after a silence ends that one silence instead of looking like many.
        tr = c.trusted[P]
        seen = a["seen_wm"][vi]
        wm = c.wm_after[P]
        trig = tr & (seen != NONE) & (a["last_moving"][vi] | a["last_acc"][vi]) & (wm > seen + self.offline_ms)
        for j in np.flatnonzero(trig):
            v = int(vi[j])
            if not a["off_alerted"][v]:
                self._add_day(v, int(local_day_tod(a["last_ts"][v])[0]), F_OFFLINE, 1.0)
            alerts.append((int(P[j]), 0, self._offline_alert(v, int(seen[j]), end_ms=int(wm[j]))))
        if tr.any():
            a["seen_wm"][vi[tr]] = wm[tr]
            a["off_alerted"][vi[tr]] = False
        last = a["last_ts"][vi]
        inord = tr & (t > last)
        if inord.any():
            iv = vi[inord]
            ao = c.alarm_ok[P] & inord
            if ao.any():
                flags = c.cols.alarm_flags[P]
                rising = flags & ~a["alarm_prev"][vi] & 0xFFFFFFFF
                for j in np.flatnonzero(ao & (rising != 0)):
                    self._alarm_alerts(int(vi[j]), int(P[j]), int(t[j]), int(rising[j]), int(flags[j]), c, alerts)
                a["alarm_prev"][vi[ao]] = flags[ao]
            a["last_ts"][iv] = t[inord]
            a["last_moving"][iv] = mv[inord]
            a["last_acc"][iv] = (c.cols.status_flags[P][inord] & STATUS_ACC) != 0

        # --- track --------------------------------------------------------------------------------
        fix_ts = a["fix_ts"][vi]
        has_fix = fix_ts != NONE
        first = qp & ~has_fix
        cont = qp & has_fix & (t > fix_ts)
        ooo = qp & has_fix & (t <= fix_ts)
        lat, lon, spd = c.cols.lat[P], c.cols.lon[P], c.speed[P]
        sample = first.copy()
        if cont.any():
            ci = np.flatnonzero(cont)
            cv = vi[ci]
            r = track_step(fix_ts[ci], a["fix_lat"][cv], a["fix_lon"][cv], a["fix_speed"][cv],
                           a["drift_run"][cv], t[ci], lat[ci], lon[ci], spd[ci], self.tp)
            delta[ci, F_KM] = r.km
            delta[ci, F_KMINC] = r.km_incomplete
            delta[ci, F_DRIFT] = r.drift
            out.drift += int(r.drift.sum())
            for j in np.flatnonzero(r.gap):
                k, v = ci[j], int(cv[j])
                self.gaps.open(v, [int(fix_ts[k]), float(a["fix_lat"][v]), float(a["fix_lon"][v]),
                                   int(local_day_tod(np.int64(fix_ts[k]))[0])],
                               [int(t[k]), float(lat[k]), float(lon[k]), int(d[k])])
            a["drift_run"][cv] = np.where(r.drift & ~r.reanchor, a["drift_run"][cv] + 1, 0)
            newfix = r.move | r.reanchor
            fv, fk = cv[newfix], ci[newfix]
            a["fix_lat"][fv] = lat[fk]
            a["fix_lon"][fv] = lon[fk]
            upd = newfix | r.hold
            a["fix_ts"][cv[upd]] = t[ci[upd]]
            a["fix_speed"][cv[upd]] = spd[ci[upd]]
            sample[ci] = ~r.drift
        if first.any():
            fi = np.flatnonzero(first)
            fv = vi[fi]
            a["fix_ts"][fv] = t[fi]
            a["fix_lat"][fv] = lat[fi]
            a["fix_lon"][fv] = lon[fi]
            a["fix_speed"][fv] = spd[fi]
        good = ~stale
        if stale.any():
            out.stale_day += int(stale.sum())
            self.stale_total += int(stale.sum())

        if sample.any():
            self._samples(P, np.flatnonzero(sample), vi, t, d, delta, c, alerts)

        gv, gs = vi[good], (d % self.slots)[good]
        a["cnt"][gv, gs] += delta[good]
        a["dirty"][gv, gs] = True

        # out-of-order qualified pings: gap filling (rare, Python)
        if ooo.any():
            for j in np.flatnonzero(ooo):
                out.out_of_order += 1
                res = self.gaps.fill(int(vi[j]), int(t[j]), float(lat[j]), float(lon[j]), float(spd[j]), int(d[j]))
                if res is None:
                    continue
                if res[0] == "drift":
                    out.drift += 1
                    self._add_day(int(vi[j]), res[1], F_DRIFT, 1.0)
                else:
                    for day_, dkm, dinc in res[1]:
                        if self._add_day(int(vi[j]), day_, F_KM, dkm):
                            self._add_day(int(vi[j]), day_, F_KMINC, dinc)

    def _samples(self, P, si, vi_all, t_all, d_all, delta, c: "_Batch", alerts: list) -> None:
        """State machines on samples (rows ``si`` of the round)."""
        a = self.a
        Ps = P[si]
        vi = vi_all[si]
        t = t_all[si]
        v = c.speed[Ps]
        mv = c.moving[Ps]
        late = c.late[Ps]

        # --- overspeed ----------------------------------------------------------------------------
        o = c.over[Ps]
        rs = a["os_run_start"][vi]
        rl = a["os_run_last"][vi]
        counted = a["os_run_counted"][vi]
        active = rs != NONE
        broken = active & (~o | (t - rl > self.tp.gap_ms))
        for j in np.flatnonzero(broken & counted):
            alerts.append((int(Ps[j]), 1, self._overspeed_alert(int(vi[j]), end_ms=int(a["os_ep_last"][vi[j]]))))
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
                a["os_ep_late"][fv] = late[fj]
                cats, exps, nights = c.cat[Ps[fj]], c.on_exp[Ps[fj]], c.night[Ps[fj]]
                a["os_ep_key"][fv] = [self.limit_keys.index(self.limits.keys[(int(x), int(y), int(z))])
                                      for x, y, z in zip(cats, exps, nights)]
                delta[si[fj], F_OVERSPEED] += 1.0
            counted = counted | qualify
        oc = o & counted
        if oc.any():
            ov = vi[oc]
            a["os_ep_last"][ov] = t[oc]
            a["os_ep_max"][ov] = np.maximum(a["os_ep_max"][ov], v[oc])
        for j in np.flatnonzero(qualify):
            alerts.append((int(Ps[j]), 2, self._overspeed_alert(int(vi[j]), end_ms=None)))
        a["os_run_start"][vi] = rs
        a["os_run_last"][vi] = np.where(o, t, rl)
        a["os_run_max"][vi] = rmax
        a["os_run_counted"][vi] = counted

        # --- fatigue ------------------------------------------------------------------------------
        last = a["fat_last_ts"][vi]
        has_prev = last != NONE
        dt = np.where(has_prev, t - last, 0)
        prev_mv = a["fat_prev_moving"][vi]
        driving = has_prev & prev_mv & (dt < self.rest_ms)
        hole_rest = has_prev & prev_mv & (dt >= self.rest_ms)
        acc = np.where(hole_rest, 0, a["fat_acc"][vi])
        alerted = a["fat_alerted"][vi] & ~hole_rest
        acc = acc + np.where(driving, dt, 0)
        lim = np.where(c.night[Ps], self.night_cont_ms, self.day_cont_ms)
        excess = np.where(driving, np.minimum(dt, np.maximum(acc - lim, 0)), 0)
        delta[si, F_FATIGUE] += excess / 1000.0
        cross = driving & (acc > lim) & ~alerted
        for j in np.flatnonzero(cross):
            alerts.append((int(Ps[j]), 3, self._fatigue_alert(int(vi[j]), int(t[j]), "continuous", int(acc[j]),
                                                              int(lim[j]), bool(c.night[Ps[j]]), bool(late[j]),
                                                              float(c.cols.lat[Ps[j]]), float(c.cols.lon[Ps[j]]))))
        alerted = alerted | cross
        stop = a["fat_stop"][vi]
        ends = mv & (stop != NONE)
        reset = ends & (t - stop >= self.rest_ms)
        acc = np.where(reset, 0, acc)
        alerted = alerted & ~reset
        stop = np.where(ends, NONE, np.where(~mv & (stop == NONE), t, stop))
        a["fat_acc"][vi] = acc
        a["fat_alerted"][vi] = alerted
        a["fat_stop"][vi] = stop
        a["fat_last_ts"][vi] = t
        a["fat_prev_moving"][vi] = mv
        # cumulative driving over the last 24 h, hour buckets
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
            a["cum_b"][dv, H[dj] % 24] += dt[dj].astype(np.int32)
            a["cum_tot"][dv] += dt[dj]
        tot = a["cum_tot"][vi]
        over_cum = tot > self.cum_ms
        ccross = over_cum & ~a["cum_alerted"][vi]
        for j in np.flatnonzero(ccross):
            alerts.append((int(Ps[j]), 4, self._fatigue_alert(int(vi[j]), int(t[j]), "cumulative_24h", int(tot[j]),
                                                              self.cum_ms, bool(c.night[Ps[j]]), bool(late[j]),
                                                              float(c.cols.lat[Ps[j]]), float(c.cols.lon[Ps[j]]))))
        a["cum_alerted"][vi] = over_cum

        # --- curfew -------------------------------------------------------------------------------
        cw = c.curfew_win[Ps]
        if cw.any():
            dd = d_all[si]
            newc = cw & (a["curfew_day"][vi] != dd)
            for j in np.flatnonzero(newc):
                vv = int(vi[j])
                alerts.append((int(Ps[j]), 5, make_alert(
                    "curfew", self.plates[vv], int(t[j]), severity="high", lat=c.cols.lat[Ps[j]],
                    lon=c.cols.lon[Ps[j]], late=bool(late[j]),
                    details={"speed_kmh": round(float(v[j]), 1), "window": f"{self.cfg['curfew.start']}-"
                             f"{self.cfg['curfew.end']}", "config_key": "curfew.start",
                             "limit": f"{self.cfg['curfew.start']}-{self.cfg['curfew.end']}",
                             "route_km": self.registry.vehicles[self.plates[vv]].route_km})))
            a["curfew_day"][vi[newc]] = dd[newc]
            delta[si[newc], F_CURFEW] += 1.0

        # --- geofence -----------------------------------------------------------------------------
        if c.zbits is not None and self.zones.restricted:
            nb = c.zbits[Ps]
            old = a["zbits"][vi]
            changed = np.flatnonzero((nb != old).any(axis=1))
            for j in changed:
                vv = int(vi[j])
                for kind, bits in (("geofence_exit", old[j] & ~nb[j]), ("geofence_enter", nb[j] & ~old[j])):
                    for zid in self.zones.zone_ids(bits):
                        z = next(z for z in self.zones.restricted if z.zone_id == zid)
                        alerts.append((int(Ps[j]), 6 if kind == "geofence_exit" else 7, make_alert(
                            kind, self.plates[vv], int(t[j]), severity="high" if kind == "geofence_enter" else "medium",
                            lat=c.cols.lat[Ps[j]], lon=c.cols.lon[Ps[j]], late=bool(late[j]), discriminator=zid,
                            details={"zone_id": zid, "zone_name": z.name, "config_key": "registry.zones",
                                     "limit": zid})))
            a["zbits"][vi] = nb

        # --- track sampling (goods vehicles, for source tracing) ------------------------------------
        if self.sample_ms > 0:
            g = self._goods[c.cat[Ps]] & (t - a["samp_ts"][vi] >= self.sample_ms)
            if g.any():
                gj = np.flatnonzero(g)
                a["samp_ts"][vi[gj]] = t[gj]
                self.track_buf.append(np.stack([vi[gj].astype(np.float64), t[gj].astype(np.float64),
                                                c.cols.lat[Ps[gj]], c.cols.lon[Ps[gj]], v[gj]], axis=1))

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

    def _fatigue_alert(self, v: int, t: int, kind: str, driven_ms: int, limit_ms: int, night: bool, late: bool,
                       lat: float, lon: float) -> dict:
        key = ("fatigue.day_cum_h" if kind == "cumulative_24h"
               else "fatigue.night_continuous_h" if night else "fatigue.day_continuous_h")
        return make_alert("fatigue", self.plates[v], t, severity="high", lat=lat, lon=lon, late=late,
                          discriminator=kind,
                          details={"kind": kind, "driving_h": round(driven_ms / HOUR_MS, 4),
                                   "limit": round(limit_ms / HOUR_MS, 4), "config_key": key, "night": night})

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
        for bit in range(32):
            if rising >> bit & 1:
                alerts.append((pos, 8 + bit, make_alert(
                    "terminal_alarm", self.plates[v], t, severity=alarm_severity(bit),
                    lat=c.cols.lat[j] if c.qualified[j] else None, lon=c.cols.lon[j] if c.qualified[j] else None,
                    late=bool(c.late[j]), discriminator=str(bit),
                    details={"bit": bit, "name": alarm_bit_name(bit), "alarm_flags": flags,
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
        return [(self.plates[int(r[0])], int(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in arr.tolist()]

    def _row(self, v: int, s: int) -> dict:
        cnt = self.a["cnt"][v, s]
        row = {"plate": self.plates[v], "day": day_string(int(self.a["slot_day"][v, s]))}
        for f, name in enumerate(DAY_COLUMNS):
            row[name] = int(cnt[f]) if f in _INT_FIELDS else round(float(cnt[f]), 6)
        row["online"] = row["pings"] > 0
        row["updated_at"] = format_ts_ms(self.watermark_ms)
        return row

    def day_rows(self, dirty_only: bool = True) -> list[dict]:
        """Vehicle-day rows with absolute values (``vehicle_day`` columns + ``online``), sorted by
        (plate, day): every day changed since the last call (or every day held, ``dirty_only=False``)."""
        a, n = self.a, self.n
        sel = a["dirty"][:n] if dirty_only else (a["slot_day"][:n] >= 0)
        rows = self.pending_rows
        self.pending_rows = []
        vs, ss = np.nonzero(sel)
        if len(vs):
            days = a["slot_day"][vs, ss].tolist()
            cnts = a["cnt"][vs, ss]
            ints = cnts[:, list(_INT_FIELDS)].astype(np.int64).tolist()
            flts = np.round(cnts[:, [F_KM, F_KMINC, F_FATIGUE]], 6).tolist()
            dstr = {d: day_string(d) for d in set(days)}
            plates = self.plates
            for v, d, (pi, qu, dr, os_, cu, of), (km, kmi, fs) in zip(vs.tolist(), days, ints, flts):
                rows.append({"plate": plates[v], "day": dstr[d], "pings": pi, "qualified": qu, "km_total": km,
                             "km_incomplete": kmi, "drift_points": dr, "overspeed_count": os_, "fatigue_s": fs,
                             "curfew_events": cu, "offline_events": of, "online": pi > 0})
        a["dirty"][:n] = False
        if self.watermark != NO_WATERMARK:
            self.gaps.prune(self.watermark)
        updated = format_ts_ms(self.watermark_ms)
        for r in rows:
            r["updated_at"] = updated
        rows.sort(key=lambda r: (r["plate"], r["day"]))
        return rows

    # --- persistence --------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """All state as one npz blob (arrays trimmed to the vehicles held + a JSON meta array)."""
        meta = {"version": SNAPSHOT_VERSION, "plates": self.plates, "watermark": self.watermark,
                "gaps": self.gaps.to_json(), "pending_rows": self.pending_rows,
                "zones": self.zones.restricted_ids, "slots": self.slots, "stale_total": self.stale_total}
        arrays = {"__meta__": np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
                  "__track__": self._track_array()}
        arrays.update((k, v[: self.n]) for k, v in self.a.items())
        buf = io.BytesIO()
        # npz layout (np.load reads it) with fixed entry dates: the same state gives the same bytes
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info._compresslevel = 1
                with zf.open(info, "w") as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def restore(cls, cfg: Config, registry: Registry | None, zones, blob: bytes) -> "PingProcessor":
        """Rebuild from ``snapshot()``. Categories are re-read from the (possibly updated) registry; zone
        membership is kept only when the restricted zone list is unchanged."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = orjson.loads(z["__meta__"].tobytes())
            if meta.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"unsupported ping-state snapshot version {meta.get('version')!r}")
            n = len(meta["plates"])
            self = cls(cfg, registry, zones, capacity=max(1024, 1 << max(n - 1, 0).bit_length()))
            if meta["slots"] != self.slots:
                raise ValueError("track.day_slots changed since the snapshot; cannot restore")
            same_zones = meta["zones"] == self.zones.restricted_ids
            track = z["__track__"]
            self.track_buf = [track] if len(track) else []
            for k in self.a:
                if k in z.files and (k != "zbits" or same_zones):
                    self.a[k][:n] = z[k]
        self.n = n
        self.plates = list(meta["plates"])
        for i, p in enumerate(self.plates):
            dict.__setitem__(self.index, p, i)
            self._apply_registry(i, p)
        self.watermark = int(meta["watermark"])
        self.gaps.load_json(meta["gaps"])
        self.pending_rows = meta["pending_rows"]
        self.stale_total = int(meta["stale_total"])
        return self


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
