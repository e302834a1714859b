"""Weigh-in-motion station simulator: passages → ``WimReading`` interchange dicts.

A passage has a *true* gross mass (from the truck's load state) and a *measured* one: true × (1 + ε),
ε ~ N(0, σ) with σ = in-service MPE / 2.5 and MPE = the accuracy class in percent (class 5 → ±5 %,
docs/legal-basis.md §2), rounded to the 10 kg scale interval. Axle loads are split from the measured gross
and always sum to it exactly. Plate reads carry a confidence; some are low-confidence, some misread (one
character changed → usually an unknown plate). Adjacent lane sensors sometimes report the same passage
twice (same masses, next lane, +1 s).
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from roadwatch.models.records import PLATE_RE, Station, Vehicle, format_ts

from .fleet import PLATE_CHARS, TRUCK_CONFIGS, expired_device, valid_device

# Art. 3 ¶1 gross limits (62号令 Art. 3, docs/legal-basis.md §1), keyed (kind, axles, single_drive_axle).
ART3_LIMIT_KG = {(k, a, s): lim for k, a, s, lim, _ in TRUCK_CONFIGS}

# Typical axle spacings (m) per configuration; a gap > 1.8 m separates axle groups.
SPACINGS_M = {
    ("truck", 2): [4.5], ("truck", 3): [4.0, 1.35], ("train", 3): [3.6, 6.2],
    ("truck", 4): [1.9, 4.2, 1.35], ("train", 4): [3.6, 5.6, 1.3], ("train", 5): [3.6, 1.35, 6.5, 1.31],
    ("train", 6): [3.6, 1.35, 6.5, 1.31, 1.31],
}
STEER_KG = (5500.0, 7000.0)   # front (steer) axle load range when loaded


def art3_limit(kind: str, axles: int, single_drive_axle: bool = False) -> int:
    axles = min(axles, 6)
    if (kind, axles, single_drive_axle) in ART3_LIMIT_KG:
        return ART3_LIMIT_KG[(kind, axles, single_drive_axle)]
    return ART3_LIMIT_KG[(kind, axles, False)] if (kind, axles, False) in ART3_LIMIT_KG else ART3_LIMIT_KG[("train", axles, False)]


def spacings(kind: str, axles: int) -> list:
    return list(SPACINGS_M.get((kind, axles)) or ([3.6, 1.35, 6.5] + [1.31] * (axles - 4))[: axles - 1])


def split_gross(gross_kg: float, axles: int, rng: np.random.Generator) -> list:
    """Per-axle loads in 10 kg steps summing exactly to ``gross_kg`` (itself a multiple of 10)."""
    steer = min(rng.uniform(*STEER_KG), gross_kg * 0.45)
    rest = gross_kg - steer
    w = rng.dirichlet(np.full(axles - 1, 20.0))
    loads = [round(steer, -1)] + [round(rest * x, -1) for x in w]
    loads[-1] = round(gross_kg - sum(loads[:-1]), 1)
    return [float(x) for x in loads]


def png_bytes(seed_text: str, w: int = 48, h: int = 24) -> bytes:
    """A small valid grayscale PNG whose pixels derive from ``seed_text`` (deterministic)."""
    digest = hashlib.sha256(seed_text.encode()).digest()
    rows = b"".join(b"\x00" + bytes(digest[(x * 7 + y * 13) % 32] for x in range(w)) for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def write_images(images_dir: Path, station_id: str, reading_id: str) -> list:
    """front/side/rear PNGs under ``images_dir/station_id/``; returns the reading's ``images`` list."""
    out = []
    d = images_dir / station_id
    d.mkdir(parents=True, exist_ok=True)
    for kind in ("front", "side", "rear"):
        data = png_bytes(f"{reading_id}|{kind}")
        path = d / f"{reading_id}_{kind}.png"
        path.write_bytes(data)
        out.append({"kind": kind, "uri": str(path), "sha256": hashlib.sha256(data).hexdigest()})
    return out


def misread(plate: str, rng: np.random.Generator) -> str:
    """Change one serial character (keeps the plate format valid)."""
    chars = list(plate)
    i = int(rng.integers(2, len(chars)))
    choices = [c for c in PLATE_CHARS if c != chars[i]]
    chars[i] = choices[int(rng.integers(len(choices)))]
    out = "".join(chars)
    return out if PLATE_RE.match(out) else plate


@dataclass
class WimTraffic:
    """Traffic parameters of one station (rates are fractions of passages)."""
    per_hour: float = 20.0          # station_traffic only: passages per hour by day (night: 40 %)
    overload_rate: float = 0.05     # loads above the Art. 3 limit (true mass)
    empty_rate: float = 0.25
    part_rate: float = 0.30         # the rest is "full" (90–100 % of the limit)
    low_conf_rate: float = 0.02     # plate confidence drawn below 0.9
    misread_rate: float = 0.01
    duplicate_rate: float = 0.01    # adjacent-sensor duplicate of the same passage
    foreign_rate: float = 0.03      # plates not in the registry (other provinces)
    images: str = "suspect"         # all | suspect (measured ≥ 95 % of the limit) | none
    sensor_error: bool = True


def true_gross(limit: float, curb: float, state: str, rng: np.random.Generator) -> float:
    if state == "empty":
        return curb * rng.uniform(1.0, 1.06)
    if state == "part":
        return curb + (limit - curb) * rng.uniform(0.3, 0.8)
    if state == "full":
        return limit * rng.uniform(0.90, 1.0)
    return limit * rng.uniform(1.06, 1.6)   # overloaded (clearly above tolerance on average)


def make_reading(station: Station, device: dict, *, plate: str, plate_color: int, kind: str, axles: int,
                 single_drive_axle: bool, ts: datetime, gross_kg: float, rng: np.random.Generator,
                 lane: int = 1, confidence: float = 0.97, speed_kmh: float = 60.0, reading_id: str = "",
                 images_dir: Path | None = None) -> dict:
    """One reading with the given *measured* gross (already including any sensor error)."""
    gross = float(round(gross_kg, -1))
    reading = {
        "station_id": station.station_id, "lane": int(lane), "ts": format_ts(ts), "plate": plate,
        "plate_color": int(plate_color), "plate_confidence": round(float(confidence), 3),
        "vehicle_kind": kind, "axle_count": int(axles), "axle_loads_kg": split_gross(gross, axles, rng),
        "axle_spacings_m": spacings(kind, axles), "gross_kg": gross, "speed_kmh": round(float(speed_kmh), 1),
        "device_id": device["device_id"], "single_drive_axle": bool(single_drive_axle),
        "images": write_images(images_dir, station.station_id, reading_id) if images_dir else [],
        "reading_id": reading_id,
    }
    return reading


def measure(true_kg: float, accuracy_class: str, rng: np.random.Generator) -> float:
    mpe = float(accuracy_class) / 100.0
    return true_kg * (1.0 + rng.normal(0.0, mpe / 2.5))


def station_traffic(station: Station, goods: list[Vehicle], start: datetime, end: datetime,
                    rng: np.random.Generator, traffic: WimTraffic, images_dir: Path | None = None,
                    weights: np.ndarray | None = None, seq0: int = 0) -> list[dict]:
    """Passages over one station between start and end at Poisson times (day/night rate), trucks drawn
    from ``goods`` — for a station seen alone. Scenarios derive passages from the trucks' trips instead
    (simulators/scenario.py), so a truck is weighed only where and when its track passes a station.

    Returns readings sorted by time; each carries ``_truth`` (true gross, load state, source plate,
    duplicate flag) for expectation derivation — strip it (``public``) before publishing."""
    out: list[dict] = []
    if not goods:
        return out
    t = start
    seq = seq0
    cdf = np.cumsum(weights / weights.sum()) if weights is not None else None
    while True:
        hour = t.hour
        rate = traffic.per_hour * (1.0 if 6 <= hour < 22 else 0.4)
        t = t + timedelta(seconds=max(1, int(rng.exponential(3600.0 / rate))))
        if t >= end:
            break
        v = goods[min(int(np.searchsorted(cdf, rng.random())), len(goods) - 1) if cdf is not None
                  else int(rng.integers(len(goods)))]
        rs = passage_readings(station, v, t, rng, traffic, images_dir, seq)
        seq += len(rs)
        out.extend(rs)
    return out


def passage_readings(station: Station, v: Vehicle, t: datetime, rng: np.random.Generator, traffic: WimTraffic,
                     images_dir: Path | None, seq: int) -> list[dict]:
    """The reading(s) of one passage of truck ``v`` at ``t``: a load state drawn by the traffic's rates,
    the sensor error of the station's accuracy class, and the plate reader's faults (foreign plate, low
    confidence, misread); sometimes an adjacent-lane duplicate (+1 s)."""
    tr = traffic
    foreign = rng.random() < tr.foreign_rate
    limit = art3_limit(v.vehicle_kind, v.axle_count, v.single_drive_axle)
    u = rng.random()
    state = ("overloaded" if u < tr.overload_rate else "empty" if u < tr.overload_rate + tr.empty_rate
             else "part" if u < tr.overload_rate + tr.empty_rate + tr.part_rate else "full")
    true_kg = true_gross(limit, v.curb_kg or limit * 0.35, state, rng)
    meas = measure(true_kg, station.accuracy_class, rng) if tr.sensor_error else true_kg
    plate = v.plate
    if foreign:
        plate = "粤" + plate[1:]
    conf = float(rng.uniform(0.92, 0.999))
    r = rng.random()
    if r < tr.low_conf_rate:
        conf = float(rng.uniform(0.5, 0.89))
    elif r < tr.low_conf_rate + tr.misread_rate:
        plate = misread(plate, rng)
    device = valid_device(station, t) or expired_device(station, t) or station.devices[0]
    seq += 1
    rid = f"{station.station_id}-{seq:08d}"
    want_images = tr.images == "all" or (tr.images == "suspect" and meas >= 0.95 * limit)
    reading = make_reading(station, device, plate=plate, plate_color=v.plate_color, kind=v.vehicle_kind,
                           axles=v.axle_count, single_drive_axle=v.single_drive_axle, ts=t, gross_kg=meas,
                           rng=rng, lane=int(rng.integers(1, station.lanes + 1)), confidence=conf,
                           speed_kmh=float(rng.uniform(30, 80)), reading_id=rid,
                           images_dir=images_dir if want_images else None)
    reading["_truth"] = {"true_kg": round(true_kg, 1), "state": state, "vehicle": v.plate, "duplicate": False}
    out = [reading]
    if rng.random() < tr.duplicate_rate:
        seq += 1
        dup = dict(reading)
        dup["lane"] = reading["lane"] + 1 if reading["lane"] < station.lanes else reading["lane"] - 1
        dup["ts"] = format_ts(t + timedelta(seconds=1))
        dup["reading_id"] = f"{station.station_id}-{seq:08d}"
        dup["_truth"] = dict(reading["_truth"], duplicate=True)
        out.append(dup)
    return out


def public(reading: dict) -> dict:
    """The reading without simulator-only ``_truth`` fields."""
    return {k: v for k, v in reading.items() if not k.startswith("_")}
