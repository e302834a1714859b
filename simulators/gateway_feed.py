"""Send a scenario's fixes to the JT/T 808 TCP gateway as real terminals would (``simulate --gateway``).

One TCP connection per vehicle: 0x0100 registration → 0x8100 (auth code) → 0x0102 authentication →
0x0702 IC-card login (when the scenario has one) → 0x0200 per live fix, and blind-area fixes as 0x0704
batches (type 1 = re-upload, ≤ 30 items) at their receipt time, then 0x0003 deregistration (so a later
run can register the same vehicles again). Pacing follows simulated receipt time
scaled by ``speed``; each connection also stays under the gateway's per-connection frame-rate limit.

The gateway stamps receipt with its own clock, so fixes are rebased by whole days to the current date
(night windows and day boundaries keep their clock times). Day-keyed expectations then shift by the same
number of days; alert expectations (type, plate, count) are unaffected.
"""
from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone

from roadwatch.models.records import BEIJING

BATCH_MAX = 30


def _plan(built, day_shift_s: int) -> dict[int, list]:
    """vid → [(recv_s, kind, payload)] in receipt order; kind 'loc' | 'batch' | 'card'."""
    cols = built.pings
    per: dict[int, list] = defaultdict(list)
    if cols:
        for i in range(len(cols["vid"])):
            p = {"lat": float(cols["lat"][i]), "lon": float(cols["lon"][i]), "speed_kmh": float(cols["speed_kmh"][i]),
                 "heading": int(cols["heading"][i]) % 65536, "altitude_m": float(cols["altitude_m"][i]),
                 "alarm_flags": int(cols["alarm_flags"][i]), "status_flags": int(cols["status_flags"][i]),
                 "ts": (int(cols["ts"][i]) + day_shift_s) * 1000, "mileage_km": float(cols["mileage_km"][i])}
            per[int(cols["vid"][i])].append((int(cols["recv_ts"][i]) + day_shift_s, "batch" if cols["reupload"][i] else "loc", p))
    vid_of = {v.plate: i for i, v in enumerate(built.registry.vehicles.values())}
    for r in built.records:
        if r.topic == "driver-events":
            import orjson
            e = orjson.loads(r.value)
            per[vid_of[e["plate"]]].append((r.ts_ms // 1000 + day_shift_s, "card", e))
    out = {}
    for vid, evs in per.items():
        evs.sort(key=lambda x: (x[0], x[1] != "card"))
        merged: list = []
        for t, kind, p in evs:
            if kind == "batch" and merged and merged[-1][1] == "batch" and merged[-1][0] == t and len(merged[-1][2]) < BATCH_MAX:
                merged[-1][2].append(p)
            else:
                merged.append((t, kind, [p] if kind == "batch" else p))
        out[vid] = merged
    return out


async def _terminal(host: str, port: int, veh, driver, events: list, speed: float | None, t_sim0: int,
                    t_wall0: float, min_gap_s: float, stats: dict) -> None:
    from roadwatch.streams.jt808 import codec as c
    tid = veh.terminal_id
    reader, writer = await asyncio.open_connection(host, port)
    serial = 0
    buf = bytearray()

    def frame(msg_id: int, body: bytes) -> bytes:
        nonlocal serial
        serial = (serial + 1) & 0xFFFF
        return c.build_frame(msg_id, tid, serial, body)

    async def expect(msg_id: int) -> c.Message:
        while True:
            for f in c.split_frames(buf):
                m = c.parse_frame(f)
                if m.msg_id == msg_id:
                    return m
            data = await asyncio.wait_for(reader.read(4096), 10)
            if not data:
                raise ConnectionError(f"gateway closed the connection of terminal {tid}")
            buf.extend(data)

    try:
        writer.write(frame(c.REGISTRATION, c.encode_registration(veh.plate, veh.plate_color)))
        m = await expect(c.REGISTRATION_RESPONSE)
        resp = c.decode_registration_response(m.body)
        if resp["result"] != 0:
            raise ConnectionError(f"registration of {veh.plate} refused (result {resp['result']})")
        writer.write(frame(c.AUTHENTICATION, c.encode_authentication(resp["auth_code"])))
        m = await expect(c.PLATFORM_RESPONSE)
        if c.decode_body(m.msg_id, m.body)["result"] != 0:
            raise ConnectionError(f"authentication of terminal {tid} ({veh.plate}) refused")

        async def drain_replies():
            while await reader.read(65536):
                pass
        drainer = asyncio.create_task(drain_replies())
        last = 0.0
        for t, kind, p in events:
            due = t_wall0 + ((t - t_sim0) / speed if speed else 0.0)
            due = max(due, last + min_gap_s)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "loc":
                writer.write(frame(c.LOCATION, c.encode_location(p)))
                stats["pings"] += 1
            elif kind == "batch":
                writer.write(frame(c.BATCH_LOCATION, c.encode_batch_upload(p, True)))
                stats["pings"] += len(p)
            else:
                d = driver
                writer.write(frame(c.DRIVER_CARD, c.encode_driver_card(
                    1, datetime.fromtimestamp(t, tz=BEIJING), driver_name=p.get("driver_name", ""),
                    qualification_no=(d.qualification_no if d else "") or p.get("driver_id", ""))))
            stats["frames"] += 1
            last = time.monotonic()
            await writer.drain()
        # a simulated terminal leaves no binding behind (0x0003 revokes its code), so the next run can
        # register the same vehicles again; a real terminal keeps its code instead
        writer.write(frame(c.DEREGISTRATION, b""))
        await writer.drain()
        # half-close and wait for the gateway to close its side: it has then read every frame
        if writer.can_write_eof():
            writer.write_eof()
        try:
            await asyncio.wait_for(drainer, 10)
        except asyncio.TimeoutError:
            drainer.cancel()
    finally:
        writer.close()


async def _run(built, host: str, port: int, speed: float | None, max_fps: float) -> dict:
    now = datetime.now(timezone.utc).astimezone(BEIJING)
    start = datetime.fromtimestamp(min((r.ts_ms for r in built.records), default=0) / 1000, tz=BEIJING)
    shift_days = (now.date() - start.date()).days - (1 if speed is None else 0)
    plan = _plan(built, shift_days * 86400)
    vehicles = list(built.registry.vehicles.values())
    stats = {"pings": 0, "frames": 0, "terminals": len(plan), "day_shift": shift_days, "errors": 0}
    t_sim0 = min((evs[0][0] for evs in plan.values()), default=0)
    t_wall0 = time.monotonic() + 0.5
    tasks = [_terminal(host, port, vehicles[vid], built.registry.drivers.get(vehicles[vid].driver_id), evs, speed,
                       t_sim0, t_wall0, 1.0 / max_fps, stats) for vid, evs in plan.items()]
    for res in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(res, BaseException):
            stats["errors"] += 1
            print(f"roadwatch: terminal failed: {res}", file=sys.stderr)
    return stats


def send_to_gateway(built, target: str, speed: float | None, max_fps: float = 40.0) -> int:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        from roadwatch.streams.cli import UsageError
        raise UsageError(f"--gateway must be HOST:PORT, got {target!r}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # one socket per terminal
    t0 = time.monotonic()
    stats = asyncio.run(_run(built, host, int(port), speed, max_fps))
    print(f"gateway {target}: {stats['terminals']} terminals, {stats['frames']:,} frames, {stats['pings']:,} fixes "
          f"in {time.monotonic() - t0:.1f} s (times shifted by {stats['day_shift']} days), {stats['errors']} errors",
          file=sys.stderr)
    return 1 if stats["errors"] else 0
