"""``roadwatch bench``: the ping path, WIM latency and the batch path, as ratios against a baseline
measured in the same run (the machine is shared and noisy: absolute figures drift, ratios much less).

(a) baseline — raw aiokafka group consumer (``getmany``, no decoding) of the pings pre-produced ONE ping per
    record, as a naive feed would carry them;
(b) the live worker's full ping pipeline (decode, quality, drift, gaps, alerts, vehicle-day stats, snapshots)
    on the same pings pre-produced in columnar batches — a real ``roadwatch worker`` process; the rate is
    read from its own ``roadwatch_pings_total`` counter between the first and the last processed ping;
(c) WIM readings produced at a fixed rate through the running worker while the bench's fleet goes on
    reporting every 30 s (``LiveFleet``), after the worker has committed (b)'s feed; latency = reading
    timestamp → the verdict arriving on ``overload-cases``. (c1), before it: the same readings right after
    (b), while the worker still commits the burst (a catch-up, not the steady state);
(d) the batch ``assess gps`` path (JSON lines in, alerts out) in this process.
Producing the input is never timed. Peak RSS is the worker's VmHWM.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from roadwatch.models.config import Config
from roadwatch.simulators.fleet import full_approval

from . import topics as T
from .broker import free_port


def add_arguments(p: argparse.ArgumentParser) -> None:
    from . import bench_gateway
    p.add_argument("target", nargs="?", choices=("pipeline", "gateway"), default="pipeline",
                   help="pipeline (default: parts a–d below) or gateway (streams/bench_gateway.py)")
    bench_gateway.add_arguments(p)
    p.add_argument("--pings", type=int, default=1_000_000, help="pings for (a), (b) and (d) (default 1 000 000)")
    p.add_argument("--vehicles", type=int, default=10_000, help="simulated vehicles (default 10 000)")
    p.add_argument("--batch", type=int, default=2000, help="pings per Kafka record for (b) (default 2000)")
    p.add_argument("--wim-rate", type=int, default=500, help="WIM readings per second for (c) (default 500)")
    p.add_argument("--wim-seconds", type=float, default=10.0, help="duration of (c) (default 10 s)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")
    p.add_argument("--out", metavar="FILE", help="also write the JSON figures to FILE")
    p.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c,d")
    p.add_argument("--wim-trace", metavar="FILE",
                   help="also write each timed WIM verdict of (c1) and (c) to FILE (CSV: part, seconds into the "
                        "part when the reading was sent, reading→verdict ms, reading→verdict sent ms): when the "
                        "slow ones came")
    p.add_argument("--archive", metavar="URL",
                   help="postgresql://… : the workers archive there (each part in a scratch schema, dropped "
                        "afterwards) instead of a temporary SQLite file")
    p.add_argument("--workers", type=int, default=1,
                   help="also run the scale-out part with this many workers sharing the partitions (e.g. 2)")


def _progress(label: str, done: int, total: int, t0: float) -> None:
    if not sys.stderr.isatty():
        return
    rate = done / max(1e-9, time.monotonic() - t0)
    sys.stderr.write(f"\r  {label}: {done:,}/{total:,} ({rate:,.0f}/s)   ")
    sys.stderr.flush()


# --- the feed -----------------------------------------------------------------------------------------

def synth_pings(n: int, vehicles: int, seed: int = 7) -> dict:
    """A live-like interleaved feed: every vehicle reports every 30 s, moving along a straight-ish road,
    ~2 % overspeed pings, ~1 % unqualified. Columnar numpy, generated in well under a second."""
    rng = np.random.default_rng(seed)
    plates = [f"苏{'ABCDEFGHJK'[(i // 100000) % 10]}{i % 100000:05d}" for i in range(vehicles)]
    rounds = -(-n // vehicles)
    vid = np.tile(np.arange(vehicles), rounds)[:n]
    k = np.repeat(np.arange(rounds), vehicles)[:n]
    t0 = int(time.time() * 1000) - rounds * 30_000
    ts = t0 + k * 30_000 + (vid % 30) * 1000
    base_lat = 31.0 + rng.random(vehicles) * 3.0
    base_lon = 117.0 + rng.random(vehicles) * 4.0
    # Speeds are autocorrelated per vehicle (a base cruising speed plus small noise), as on real roads:
    # about a quarter of the hazardous-goods trucks cruise above their 60 km/h limit.
    cruise = np.clip(rng.normal(55, 8, vehicles), 20, 110)
    speed = np.clip(cruise[vid] + rng.normal(0, 3, n), 0, 140)
    step = speed / 3600 * 30 / 111.0
    lat = base_lat[vid] + k * step * 0.7
    lon = base_lon[vid] + k * step * 0.7
    unq = rng.random(n) < 0.01
    lat = np.where(unq, 0.0, lat)
    return {"plate": [plates[i] for i in vid.tolist()], "vid": vid, "ts": ts, "lat": lat, "lon": lon,
            "speed": speed, "plates": plates}


def feed_rows(f: dict, lo: int, hi: int) -> list[dict]:
    plate, ts, lat, lon, sp = f["plate"], f["ts"].tolist(), f["lat"].tolist(), f["lon"].tolist(), f["speed"].tolist()
    return [{"plate": plate[i], "plate_color": 2, "terminal_id": f"T{f['vid'][i]:011d}", "ts": ts[i],
             "lat": lat[i], "lon": lon[i], "speed_kmh": round(sp[i], 1), "heading": 90, "altitude_m": 20.0,
             "alarm_flags": 0, "status_flags": 3, "reupload": False} for i in range(lo, hi)]


WIM_PLATES = 20_000


def wim_plate(i: int) -> str:
    return f"浙B{i % WIM_PLATES:05d}"


def bench_registry(f: dict, path: Path) -> None:
    from roadwatch.models.registry import Registry
    from roadwatch.models.records import Enterprise, Station, Vehicle
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="基准运输", goods_vehicles=len(f["plates"]))
    cats = ("客运班车", "旅游包车", "危险货物运输车辆", "普通货车")
    for i, p in enumerate(f["plates"]):
        reg.vehicles[p] = Vehicle(plate=p, plate_color=2, category=cats[i % 4], enterprise_id="E1",
                                  axle_count=2, registered_total_kg=18000.0, rated_load_kg=10000.0, curb_kg=8000.0)
    for i in range(WIM_PLATES):  # the trucks crossing the WIM station in part (c)
        p = wim_plate(i)
        reg.vehicles[p] = Vehicle(plate=p, plate_color=2, category="普通货车", enterprise_id="E1", axle_count=2,
                                  registered_total_kg=18000.0, rated_load_kg=10000.0, curb_kg=6000.0)
    reg.stations["S1"] = Station(station_id="S1", name="基准站", lat=32.0, lon=118.0,
                                 devices=[{"device_id": "D1", "cert_no": "JJG907-1",
                                           "valid_from": "2020-01-01T00:00:00+08:00",
                                           "valid_to": "2099-01-01T00:00:00+08:00",
                                           "approval": full_approval("2020-01-01T00:00:00+08:00", "BENCH")}])
    reg.dump(path)


# --- (a) baseline ---------------------------------------------------------------------------------------

async def _produce_naive(bootstrap: str, topic: str, f: dict) -> None:
    from aiokafka import AIOKafkaProducer
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await prod.start()
    try:
        n = len(f["plate"])
        for lo in range(0, n, 20000):
            futs = [await prod.send(topic, key=r["plate"].encode(), value=orjson.dumps(r))
                    for r in feed_rows(f, lo, min(n, lo + 20000))]
            await asyncio.gather(*futs)
    finally:
        await prod.stop()


async def _consume_raw(bootstrap: str, topic: str, n: int, group: str = "bench-baseline") -> float:
    from aiokafka import AIOKafkaConsumer
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         auto_offset_reset="earliest", session_timeout_ms=2000, heartbeat_interval_ms=500,
                         fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20)
    await c.start()
    got, t0, c0 = 0, None, None
    try:
        while got < n:
            batch = await c.getmany(timeout_ms=1000, max_records=20000)
            for recs in batch.values():
                if recs and t0 is None:
                    t0, c0 = time.perf_counter(), time.process_time()
                got += len(recs)
        LAST_CPU_RATE[0] = got / max(1e-9, time.process_time() - c0)
        return got / (time.perf_counter() - t0)
    finally:
        await c.stop()


LAST_CPU_RATE = [float("nan")]   # the last raw consume's records per CPU second of this process


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat; iowait counts as idle)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz


def embedded_broker_pid() -> int | None:
    """The embedded broker this process started (a child named ``tansu…``), or None (``$ROADWATCH_KAFKA``)."""
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm.startswith("tansu") and int(rest[1]) == me:
            return int(d.name)
    return None


def part_a(bootstrap: str, f: dict, partitions: int) -> float:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("bench-naive", partitions, 1)])
    admin.close()
    asyncio.run(_produce_naive(bootstrap, "bench-naive", f))
    return asyncio.run(_consume_raw(bootstrap, "bench-naive", len(f["plate"])))


def part_a_again(bootstrap: str, n: int) -> float:
    """The baseline once more, after (b) and (c), from the same records (a new consumer group): the
    machine's speed drifts during a run, so the ratio is taken against the mean of both measurements."""
    return asyncio.run(_consume_raw(bootstrap, "bench-naive", n, group="bench-baseline-2"))


# --- (b) live pipeline ------------------------------------------------------------------------------------

def produce_batches(bootstrap: str, f: dict, batch: int, partitions: int, wire: str = "arrow") -> dict:
    """Columnar batches per partition through the product's batcher, in the ``wire`` encoding
    (``stream.wire_format``); returns next offsets per partition."""
    from .batcher import PingBatcher, make_producer
    prod = make_producer(bootstrap)
    ends: dict = {}
    futures = []

    def send(partition, key, value):
        futures.append(prod.send(T.GPS_PINGS, key=key, value=value, partition=partition))

    b = PingBatcher(send, partitions, max_pings=batch, max_ms=10**9, wire=wire)
    n = len(f["plate"])
    for lo in range(0, n, 50000):
        for r in feed_rows(f, lo, min(n, lo + 50000)):
            b.add(r)
    b.flush()
    prod.flush()
    for fut in futures:
        md = fut.get(30)
        ends[(T.GPS_PINGS, md.partition)] = max(ends.get((T.GPS_PINGS, md.partition), 0), md.offset + 1)
    prod.close()
    return ends


def scrape(port: int) -> dict[str, float]:
    for attempt in range(50):  # the server may still be binding right after the ready line
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            break
        except OSError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+([-+\deE.na]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _loop_lag(m: dict[str, float]) -> dict[float, float]:
    """Cumulative bucket counts of the worker's ``roadwatch_event_loop_lag_seconds`` (le → count)."""
    out = {}
    for k, v in m.items():
        mm = re.match(r'roadwatch_event_loop_lag_seconds_bucket\{le="([^"]+)"\}', k)
        if mm:
            out[float(mm.group(1))] = v
    return out


def _lag_over(m0: dict[str, float], m1: dict[str, float]) -> dict | None:
    """The worker's event-loop probes between two scrapes: how many ticks, and how many woke up more than
    50, 100, 200, … ms late (None: no tick)."""
    lag0 = _loop_lag(m0)
    lag = {le: n - lag0.get(le, 0) for le, n in _loop_lag(m1).items()}
    if not lag:
        return None
    ticks = lag[max(lag)]          # the +Inf bucket: every tick
    return {"ticks": ticks, **{f"over_{int(le * 1000)}ms": ticks - n for le, n in lag.items()
                               if 0.05 <= le < float("inf")}}


def _hist_mean(m0: dict, m1: dict, name: str, scale: float = 1.0, labels: str = "") -> float | None:
    """The mean of a worker histogram's observations between two scrapes (None: none)."""
    n = m1.get(f"{name}_count{labels}", 0.0) - m0.get(f"{name}_count{labels}", 0.0)
    if n <= 0:
        return None
    return (m1.get(f"{name}_sum{labels}", 0.0) - m0.get(f"{name}_sum{labels}", 0.0)) / n * scale


def pings_done(port: int) -> float:
    m = scrape(port)
    return sum(v for k, v in m.items() if k.startswith("roadwatch_pings_total{"))


def worker_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def part_b(stack, port: int, n: int, ends: dict, pid: int | None = None) -> tuple[float, float]:
    """(pings per second, pings per CPU second of the worker process) from the first to the last ping."""
    t_first = None
    done0 = 0.0
    cpu0 = 0.0
    deadline = time.monotonic() + 600
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        done = pings_done(port)
        now = time.perf_counter()
        if t_first is None and done > 0:
            t_first, done0 = now, done
            cpu0 = proc_cpu_s(pid) if pid else float("nan")
        if done >= n:
            cpu = (proc_cpu_s(pid) - cpu0) if pid else float("nan")
            return ((done - done0) / max(1e-9, now - t_first) if now > t_first else float("nan"),
                    (done - done0) / cpu if cpu > 0 else float("nan"))
        _progress("pipeline", int(done), n, t0)
        # each scrape costs the measured worker CPU (it renders every metric): poll every 20 ms only near the
        # end, where the finishing time is read; before that after half the expected remaining time (≤ 250 ms)
        rate = (done - done0) / (now - t_first) if t_first is not None and now > t_first else 0.0
        time.sleep(min(0.25, max(0.02, (n - done) / rate / 2)) if rate > 0 else 0.02)
    raise RuntimeError("the worker did not process the feed within 10 minutes")


# the user's single-key overrides, read before the bench sets its own: every process it starts gets them,
# followed by the bench's keys (its data directory and ports), which win
_USER_SET = os.environ.get("ROADWATCH_SET", "")


def _set_for(keys: str) -> str:
    return f"{_USER_SET};{keys}" if _USER_SET.strip() else keys


def _archive_env(archive_url: str | None) -> dict:
    return {"ROADWATCH_ARCHIVE": archive_url} if archive_url else {}


def part_scale(cfg_path, f: dict, batch: int, partitions: int, reg_path: Path, tmp: Path, workers: int,
               archive_url: str | None = None, wim: tuple[int, float] | None = None) -> dict:
    """Scale-out: ``workers`` worker processes in one consumer group split the partitions of the same
    pre-produced feed (fresh broker, shared archive). Rate = all workers' pings over the time from the first
    to the last processed ping; then the archive is checked: every ping counted exactly once. With ``wim``
    (readings/s, seconds), part (c) then runs once more against the same workers, which split the WIM
    partitions too (``wim_*`` keys)."""
    from roadwatch.models.config import load_config
    from . import archive
    from .broker import EmbeddedBroker, create_topics
    from .runtime import WorkerProcess, wait_consumed
    n = len(f["plate"])
    data = tmp / f"scale{workers}"
    cfg = load_config(cfg_path)
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, cfg)
        ends = produce_batches(broker.bootstrap, f, batch, partitions, cfg["stream.wire_format"])
        wps, ports = [], []
        try:
            # all workers start together (one waiting for the other would let the first take most of the feed
            # alone), and the rate counts only pings processed while this loop watched: from the first
            # observed progress, minus what was already done then
            for _ in range(workers):
                p = free_port()
                wps.append(WorkerProcess(
                    broker.bootstrap, registry_path=str(reg_path), config_path=cfg_path,
                    env={"ROADWATCH_SET": _set_for(f'paths.data_dir="{data}";web.port={p}'),
                         "ROADWATCH_BROKER_EPOCH": "bench-scale", **_archive_env(archive_url)}))
                ports.append(p)
            for wp in wps:
                wp.wait_ready(90)
            t_first, done0 = None, 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 600:
                done = sum(pings_done(p) for p in ports)
                now = time.perf_counter()
                if t_first is None and done > 0:
                    t_first, done0 = now, done
                if done >= n:
                    break
                _progress(f"{workers} workers", int(done), n, t0)
                time.sleep(0.02)
            rate = (n - done0) / max(1e-9, time.perf_counter() - t_first)
            per_worker = [pings_done(p) for p in ports]
            wait_consumed(broker.bootstrap, ends, timeout=120)
            # committed offsets follow the archive's transaction (RELIABILITY.md): every ping is in by now,
            # and counted before the WIM part's fleet adds its own
            conn = archive.open_archive(archive_url or data / "archive.sqlite")
            try:
                counted = archive.total_pings(conn)
            finally:
                conn.close()
            out = {}
            if wim is not None:
                # as part (c): the fleet goes on reporting while the readings come, now split over the workers
                fleet = LiveFleet(broker.bootstrap, f, cfg)
                cpu0 = sum(proc_cpu_s(wp.proc.pid) for wp in wps)
                c = part_c(broker.bootstrap, wim[0], wim[1], int(cfg["stream.fetch_max_wait_ms"]), fleet)
                out = {"wim_p50_ms": c.p50, "wim_p99_ms": c.p99, "wim_verdicts": c.verdicts,
                       "wim_cpu_ms_per_reading": (sum(proc_cpu_s(wp.proc.pid) for wp in wps) - cpu0) * 1000
                       / (wim[0] * wim[1])}
        finally:
            for wp in wps:
                wp.stop()
    return {"rate": rate, "per_worker_pings": per_worker, "archived_pings": counted, "expected_pings": n, **out}


# --- (c) WIM latency ----------------------------------------------------------------------------------------

class LiveFleet:
    """The bench's fleet going on reporting, every vehicle every 30 s from where the feed left it, stamped
    with the wall clock: the GPS load a centre has while WIM readings arrive (10 000 vehicles: 333 pings/s),
    sent through the product's batcher (``stream.batch_max_ms`` batches, as the gateway sends them)."""

    INTERVAL_S = 30.0

    def __init__(self, bootstrap: str, f: dict, cfg: Config):
        from .batcher import PingBatcher, make_producer
        v = len(f["plates"])
        self.plates = f["plates"]
        self.lat, self.lon, self.speed = np.zeros(v), np.zeros(v), np.zeros(v)
        vid = f["vid"]
        self.lat[vid], self.lon[vid], self.speed[vid] = f["lat"], f["lon"], f["speed"]   # each one's last fix
        self.lat = np.where(self.lat == 0.0, 31.0, self.lat)        # the feed's unqualified fixes: a real place
        self.lon = np.where(self.lon == 0.0, 117.0, self.lon)
        self.step = self.speed / 3600 * self.INTERVAL_S / 111.0 * 0.7
        self.prod = make_producer(bootstrap)
        self.batcher = PingBatcher(lambda part, key, value: self.prod.send(T.GPS_PINGS, key=key, value=value,
                                                                            partition=part),
                                   int(cfg["stream.partitions"]), int(cfg["stream.batch_max_pings"]),
                                   float(cfg["stream.batch_max_ms"]), wire=cfg["stream.wire_format"])
        self.next_v = 0
        self.sent = 0
        self.rate = v / self.INTERVAL_S

    def due(self, elapsed_s: float) -> None:
        """Send the fixes due ``elapsed_s`` after the start (vehicle i reports at i × 30 s / fleet size)."""
        want = int(elapsed_s * self.rate)
        now_ms = int(time.time() * 1000)
        while self.sent < want:
            i = self.next_v
            self.lat[i] += self.step[i]
            self.lon[i] += self.step[i]
            self.batcher.add({"plate": self.plates[i], "plate_color": 2, "terminal_id": f"T{i:011d}", "ts": now_ms,
                              "lat": float(self.lat[i]), "lon": float(self.lon[i]),
                              "speed_kmh": round(float(self.speed[i]), 1), "heading": 45, "altitude_m": 20.0,
                              "alarm_flags": 0, "status_flags": 3, "reupload": False})
            self.next_v = (i + 1) % len(self.plates)
            self.sent += 1
        self.batcher.poll()

    def close(self) -> None:
        self.batcher.flush()
        self.prod.flush()
        self.prod.close()


class WimLatency(NamedTuple):
    """Part (c)'s figures: reading sent → verdict received by the bench's consumer (the goal's measure), and
    reading sent → the verdict record's timestamp (sent by the worker: without the consumer's own hop)."""
    p50: float
    p99: float
    verdicts: int
    published_p50: float
    published_p99: float
    # every timed verdict by send time: (seconds into the part, reading→verdict ms, → sent by the worker ms)
    samples: tuple = ()


def part_c(bootstrap: str, rate: int, seconds: float, fetch_wait_ms: int, fleet: LiveFleet | None = None,
           first: int = 0) -> WimLatency:
    """Readings at a fixed rate; a consumer thread stamps each verdict's arrival on ``overload-cases``. With
    ``fleet``, the GPS fleet reports meanwhile. ``first``: the number of the first reading (a second run
    sends other readings, of other trucks: not replays of the first run's)."""
    import threading
    from datetime import datetime, timezone
    from kafka import KafkaConsumer
    # the wait the worker's consumers use: a short one polls many times a second on the 2 cores the worker
    # needs; the embedded broker answers up to half of it after a verdict arrives (docs/operations.md)
    cons = KafkaConsumer(T.OVERLOAD_CASES, bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=fetch_wait_ms)
    # its partitions and their end offsets before the first reading is sent: resolved later (a loaded machine),
    # "latest" would lie past the first verdicts, and they would never be timed
    deadline = time.monotonic() + 30
    while not cons.assignment() and time.monotonic() < deadline:
        cons.poll(timeout_ms=200)
    for tp in cons.assignment():
        cons.position(tp)
    arrived: dict[str, float] = {}
    published: dict[str, float] = {}      # the verdict record's own timestamp: when the worker sent it
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            for recs in cons.poll(timeout_ms=50).values():
                now = time.time()
                for r in recs:
                    plate = orjson.loads(r.value).get("plate")
                    arrived.setdefault(plate, now)
                    published.setdefault(plate, r.timestamp / 1000)

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    total = int(rate * seconds)
    sent: dict[str, float] = {}

    async def produce() -> None:
        # each reading sent on its own as a station sends it (no linger), through aiokafka: kafka-python's
        # producer took ~60 % of a core for 500 records/s, against ~25 %, on the 2 cores the worker needs
        from aiokafka import AIOKafkaProducer
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        await prod.start()
        try:
            t0 = time.perf_counter()
            for k in range(total):
                i = first + k
                delay = t0 + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if fleet is not None:
                    fleet.due(time.perf_counter() - t0)
                plate = wim_plate(i)
                # one truck in ten is overloaded (a case with a signed evidence package); all share one queue
                over = i % 10 == 0
                loads = [7000, 14000] if over else [6000, 9000]
                reading = {"station_id": "S1", "lane": 1,
                           "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                           "plate": plate, "plate_color": 2, "plate_confidence": 0.99, "vehicle_kind": "truck",
                           "axle_count": 2, "axle_loads_kg": loads, "axle_spacings_m": [4.0],
                           "gross_kg": sum(loads), "speed_kmh": 60, "device_id": "D1", "reading_id": f"bench-{i}"}
                if over:
                    sent[plate] = time.time()
                await prod.send(T.WIM_READINGS, key=plate.encode(), value=orjson.dumps(reading))
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(produce())
    if fleet is not None:
        fleet.close()
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(p in arrived for p in sent):
        time.sleep(0.05)
    stop.set()
    th.join(2)
    cons.close()
    # the consumer thread stamps a verdict's arrival and its record's timestamp together
    t0 = min(sent.values(), default=0.0)
    samples = tuple(sorted((t - t0, (arrived[p] - t) * 1000, (published[p] - t) * 1000)
                           for p, t in sent.items() if p in arrived))
    return WimLatency(*_p50_p99([s[1] / 1000 for s in samples]), len(samples),
                      *_p50_p99([s[2] / 1000 for s in samples]), samples)


def write_trace(path: str | Path, part: str, c: WimLatency) -> None:
    """Append part ``part``'s timed verdicts to the CSV ``path`` (``--wim-trace``), a header first if it is
    new: p99 is a handful of verdicts, and whether they came together (a stall) or spread out (a backlog) says
    where to look (docs/performance.md, round 17)."""
    new = not Path(path).exists() or Path(path).stat().st_size == 0
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write("part,sent_s,verdict_ms,sent_by_worker_ms\n")
        for t, lat, pub in c.samples:
            fh.write(f"{part},{t:.4f},{lat:.2f},{pub:.2f}\n")


def _p50_p99(seconds: list[float]) -> tuple[float, float]:
    """Median and 99th percentile in ms (NaN for none)."""
    ms = np.array(seconds) * 1000 if seconds else np.array([float("nan")])
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# --- (d) batch path -----------------------------------------------------------------------------------------

def part_d(f: dict, registry_path: Path, cfg: Config) -> dict:
    """The batch path on the same pings, from JSON lines of single pings and from a binary Arrow IPC stream
    of 2 000-ping record batches (docs/formats.md), each read through ``streams/feed_input.py`` as
    ``assess gps`` reads stdin. Rates per wall second (what a user waits) and per CPU second of this
    process (what the code costs on a shared, noisy machine)."""
    import io
    from roadwatch.models.pingarrow import encode_arrow
    from roadwatch.models.registry import load_registry
    from . import feed_input
    from .assess_gps import run_pings
    n = len(f["plate"])
    lines = []
    for lo in range(0, n, 100000):
        rows = feed_rows(f, lo, min(n, lo + 100000))
        lines.extend(orjson.dumps(r) + b"\n" for r in rows)
    inputs = {"json": b"".join(lines),
              "arrow": b"".join(encode_arrow(_arrow_cols(f, lo, min(n, lo + 2000))) for lo in range(0, n, 2000))}
    del lines
    reg = load_registry(registry_path)
    out = {}
    for name, data in inputs.items():
        t0, c0 = time.perf_counter(), time.process_time()
        chk = feed_input.InputCheck("bench", feed_input.PINGS, 0.0)
        _, rows, errors = run_pings(feed_input.read_lines(io.BufferedReader(io.BytesIO(data)), feed_input.PINGS, chk,
                                                          columns=True), reg, None, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if errors or chk.rejected or sum(r["pings"] for r in rows) != n:
            raise RuntimeError(f"batch path ({name}) did not read every ping: {chk}, {errors[:3]}")
        out[f"batch_rate_{name}"], out[f"batch_rate_{name}_cpu"] = n / wall, n / cpu
        out[f"batch_input_mib_{name}"] = len(data) / 2 ** 20
    return out


def _arrow_cols(f: dict, lo: int, hi: int) -> dict:
    vid = f["vid"][lo:hi]
    return {"plate": f["plate"][lo:hi], "terminal_id": [f"T{v:011d}" for v in vid.tolist()],
            "plate_color": np.full(hi - lo, 2, dtype=np.uint8), "ts": f["ts"][lo:hi],
            "lat": f["lat"][lo:hi], "lon": f["lon"][lo:hi], "speed_kmh": np.round(f["speed"][lo:hi], 1),
            "heading": np.full(hi - lo, 90, dtype=np.uint16), "altitude_m": np.full(hi - lo, 20.0),
            "alarm_flags": np.zeros(hi - lo, dtype=np.uint32), "status_flags": np.full(hi - lo, 3, dtype=np.uint32),
            "reupload": np.zeros(hi - lo, dtype=bool), "driver_id": [None] * (hi - lo),
            "mileage_km": [None] * (hi - lo)}


# --- driver ----------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.target == "gateway":
        from . import bench_gateway
        return bench_gateway.run(args, cfg)
    skip = set(filter(None, args.skip.split(",")))
    if getattr(args, "wim_trace", None):
        Path(args.wim_trace).write_text("", encoding="utf-8")      # this run's verdicts only
    results: dict = {"pings": args.pings, "vehicles": args.vehicles, "batch": args.batch,
                     "load_avg_start": list(os.getloadavg())}
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"roadwatch bench: {args.pings:,} pings from {args.vehicles:,} vehicles; generating the feed…")
    f = synth_pings(args.pings, args.vehicles)
    with contextlib.ExitStack() as scope:
        if args.archive:
            from .archive import POSTGRESQL, ArchiveError, parse_target, redact
            from .archive.scratch import scratch_schema
            try:
                if parse_target(args.archive)[0] != POSTGRESQL:
                    raise ArchiveError("--archive takes a postgresql:// URL (SQLite is the default)")
                archive_b = scope.enter_context(scratch_schema(args.archive, "rw_bench"))
                archive_s = scope.enter_context(scratch_schema(args.archive, "rw_bench"))
            except ArchiveError as e:
                from .errors import UsageError
                raise UsageError(str(e)) from None
            except Exception as e:   # noqa: BLE001 - the server refused: say so, no traceback
                from .errors import UsageError
                raise UsageError(f"cannot use the archive {redact(args.archive)}: {e}") from None
            results["archive"] = "postgresql"
            say(f"    archive: PostgreSQL {redact(args.archive)} (scratch schemas)")
        else:
            archive_b = archive_s = None
            results["archive"] = "sqlite"
        return _run(args, cfg, f, results, say, skip, archive_b, archive_s)


def _run(args, cfg, f, results, say, skip, archive_b, archive_s) -> int:
    from .runtime import stack
    with tempfile.TemporaryDirectory(prefix="roadwatch-bench-") as tmp:
        tmp = Path(tmp)
        reg_path = tmp / "registry.json"
        bench_registry(f, reg_path)
        port = free_port()
        env = {"ROADWATCH_SET": _set_for(f'paths.data_dir="{tmp / "data"}";web.port={port}'),
               **_archive_env(archive_b)}
        os.environ["ROADWATCH_SET"] = env["ROADWATCH_SET"]
        from roadwatch.models.config import load_config
        cfg = load_config(getattr(args, "config", None))
        parts = int(cfg["stream.partitions"])
        results["wire_format"] = cfg["stream.wire_format"]
        # part (c)'s verdict consumer waits as the worker's consumers do: on the embedded broker a waiting
        # fetch is answered up to half this wait after the data arrives (docs/performance.md, round 10)
        fetch_wait = int(cfg["stream.fetch_max_wait_ms"])
        with stack(cfg, registry_path=None, worker=False) as st:
            if "a" not in skip:
                say("(a) baseline: pre-producing one ping per record (not timed)…")
                results["baseline_rate"] = part_a(st.bootstrap, f, parts)
                results["baseline_rate_cpu"] = LAST_CPU_RATE[0]
                say(f"    raw aiokafka consume: {results['baseline_rate']:,.0f} pings/s")
            if "b" not in skip or "c" not in skip:
                from .runtime import WorkerProcess, ready_worker, wait_consumed
                if "b" not in skip:
                    say(f"(b) pipeline: pre-producing {args.batch}-ping columnar batches (not timed)…")
                    t_pub = time.perf_counter()
                    ends = produce_batches(st.bootstrap, f, args.batch, parts, cfg["stream.wire_format"])
                    results["publish_rate"] = args.pings / (time.perf_counter() - t_pub)
                    say(f"    batcher + kafka-python producer: {results['publish_rate']:,.0f} pings/s")
                wp, port, results["worker_ready_s"] = ready_worker(lambda p: WorkerProcess(
                    st.bootstrap, registry_path=str(reg_path), config_path=getattr(args, "config", None),
                    env=dict(env, ROADWATCH_SET=_set_for(f'paths.data_dir="{tmp / "data"}";web.port={p}'))), 60)
                try:
                    say("    " + (wp.lines[-1] if wp.lines else ""))
                    say(f"    worker ready in {results['worker_ready_s']:.1f} s")
                    if "b" not in skip:
                        mb0 = scrape(port)
                        results["ping_rate"], results["ping_rate_cpu"] = part_b(st, port, args.pings, ends,
                                                                                 wp.proc.pid)
                        say(f"\n    full pipeline: {results['ping_rate']:,.0f} pings/s")
                        m = scrape(port)
                        # what catching up costs the loop (and a WIM reading arriving meanwhile): engine calls
                        # of up to stream.gps_coalesce_pings pings
                        results["loop_lag_b"] = _lag_over(mb0, m)
                        say(f"    worker's event loop during (b): {results['loop_lag_b']}")
                        results["bytes_per_vehicle"] = m.get("roadwatch_state_bytes_per_vehicle")
                        # how many of (b)'s records one engine call took together (stream.gps_coalesce_pings)
                        calls = m.get("roadwatch_gps_engine_call_batches_count")
                        if calls:
                            results["engine_call_records"] = m["roadwatch_gps_engine_call_batches_sum"] / calls
                    if "c" not in skip:
                        if "b" not in skip:
                            # right after (b): the worker still commits the burst's state and track samples
                            say(f"(c1) WIM right after (b)'s burst: {args.wim_rate} readings/s for "
                                f"{args.wim_seconds:.0f} s…")
                            c1 = part_c(st.bootstrap, args.wim_rate, args.wim_seconds, fetch_wait)
                            results.update(wim_after_burst_p50_ms=c1.p50, wim_after_burst_p99_ms=c1.p99)
                            if args.wim_trace:
                                write_trace(args.wim_trace, "c1", c1)
                            say(f"    reading→verdict p50 {c1.p50:.1f} ms, p99 {c1.p99:.1f} ms "
                                f"({c1.verdicts} verdicts)")
                            t_drain = time.monotonic()
                            if not wait_consumed(st.bootstrap, ends, timeout=600):
                                raise RuntimeError("the worker did not commit (b)'s feed within 10 minutes")
                            results["drain_after_b_s"] = time.monotonic() - t_drain
                            say(f"    (b)'s commits done {results['drain_after_b_s']:.1f} s later")
                        fleet = LiveFleet(st.bootstrap, f, cfg)
                        results["gps_live_rate"] = fleet.rate
                        say(f"(c) WIM: {args.wim_rate} readings/s for {args.wim_seconds:.0f} s while the "
                            f"{len(f['plates']):,} vehicles report every 30 s ({fleet.rate:,.0f} pings/s)…")
                        m0 = scrape(port)
                        cpu0, gen0, t_c = proc_cpu_s(wp.proc.pid), proc_cpu_s(os.getpid()), time.monotonic()
                        broker_pid = embedded_broker_pid()
                        broker0 = proc_cpu_s(broker_pid) if broker_pid else float("nan")
                        busy0, all0 = machine_cpu_s()
                        c = part_c(st.bootstrap, args.wim_rate, args.wim_seconds, fetch_wait, fleet,
                                   first=int(args.wim_rate * args.wim_seconds))
                        # the worker's CPU per reading: what the latency's headroom depends on, steadier than
                        # the latency itself on a shared machine (it includes the live GPS feed and the timers)
                        results["wim_cpu_ms_per_reading"] = ((proc_cpu_s(wp.proc.pid) - cpu0) * 1000
                                                             / (args.wim_rate * args.wim_seconds))
                        # the load generator (this process: readings, the fleet, the verdict consumer) shares
                        # the worker's 2 cores: its share, so a run's contention can be read off
                        results["wim_generator_cpu_pct"] = ((proc_cpu_s(os.getpid()) - gen0) * 100
                                                            / (time.monotonic() - t_c))
                        # and so do the embedded broker and anything else running: the cores the worker had
                        busy1, all1 = machine_cpu_s()
                        results["wim_machine_busy_cores"] = ((busy1 - busy0) / (all1 - all0) * os.cpu_count()
                                                             if all1 > all0 else float("nan"))
                        if broker_pid:
                            results["wim_broker_cpu_pct"] = ((proc_cpu_s(broker_pid) - broker0) * 100
                                                             / (time.monotonic() - t_c))
                        results.update(wim_p50_ms=c.p50, wim_p99_ms=c.p99, wim_verdicts=c.verdicts,
                                       wim_published_p50_ms=c.published_p50, wim_published_p99_ms=c.published_p99)
                        if args.wim_trace:
                            write_trace(args.wim_trace, "c", c)
                        say(f"    reading→verdict p50 {c.p50:.1f} ms, p99 {c.p99:.1f} ms ({c.verdicts} verdicts); "
                            f"verdict sent by the worker: p50 {c.published_p50:.1f} ms, p99 {c.published_p99:.1f} ms; "
                            f"worker CPU {results['wim_cpu_ms_per_reading']:.2f} ms per reading (GPS included)")
                        say(f"    the machine: {results['wim_machine_busy_cores']:.2f} of {os.cpu_count()} cores busy; "
                            f"load generator {results['wim_generator_cpu_pct']:.0f} % of a core"
                            + (f", embedded broker {results['wim_broker_cpu_pct']:.0f} %"
                               if "wim_broker_cpu_pct" in results else ""))
                        m1 = scrape(port)
                        # the anatomy of the latency, from the worker's own histograms: a reading's wait before
                        # its batch starts, the batch's size and its transaction, its publication
                        anat = {"wim_wait_ms_mean": _hist_mean(m0, m1, "roadwatch_wim_wait_seconds", 1000),
                                "wim_batch_readings_mean": _hist_mean(m0, m1, "roadwatch_wim_batch_readings"),
                                "wim_batch_store_ms_mean": _hist_mean(m0, m1, 'roadwatch_wim_batch_seconds',
                                                                      1000, '{part="store"}'),
                                "wim_batch_publish_ms_mean": _hist_mean(m0, m1, 'roadwatch_wim_batch_seconds',
                                                                        1000, '{part="publish"}')}
                        results.update(anat)
                        say("    worker: " + ", ".join(f"{k[4:]} {v:.1f}" for k, v in anat.items() if v is not None))
                        lag = _lag_over(m0, m1)
                        if lag:
                            results["loop_lag_c"] = lag
                            say(f"    worker's event loop during (c): {results['loop_lag_c']} (a 50 ms timer "
                                "woke up later than that)")
                    results["peak_rss_mib"] = worker_rss_kib(wp.proc.pid) / 1024
                except Exception:
                    say("worker output (last lines):\n" + "\n".join(wp.lines[-40:]))
                    raise
                finally:
                    wp.stop()
            if "a" not in skip and "b" not in skip:
                results["baseline_rate_first"] = results["baseline_rate"]
                results["baseline_rate_again"] = part_a_again(st.bootstrap, args.pings)
                results["baseline_rate"] = (results["baseline_rate_first"] + results["baseline_rate_again"]) / 2
                results["baseline_rate_cpu"] = (results["baseline_rate_cpu"] + LAST_CPU_RATE[0]) / 2
                say(f"(a') baseline again: {results['baseline_rate_again']:,.0f} pings/s; the ratios use the mean "
                    f"{results['baseline_rate']:,.0f}")
        if args.workers > 1:
            say(f"(s) scale-out: {args.workers} workers sharing the partitions of a fresh copy of the feed…")
            sc = part_scale(getattr(args, "config", None), f, args.batch, parts, reg_path, tmp, args.workers,
                            archive_s, None if "c" in skip else (args.wim_rate, args.wim_seconds))
            results.update(scale_workers=args.workers, scale_rate=sc["rate"],
                           scale_per_worker_pings=sc["per_worker_pings"], scale_archived_pings=sc["archived_pings"])
            results.update({f"scale_{k}": v for k, v in sc.items() if k.startswith("wim_")})
            say(f"\n    {args.workers} workers: {sc['rate']:,.0f} pings/s together; pings per worker "
                f"{[int(x) for x in sc['per_worker_pings']]}; archive counts {sc['archived_pings']:,} of "
                f"{sc['expected_pings']:,} pings (no loss, no double counting)"
                if sc["archived_pings"] == sc["expected_pings"] else
                f"\n    MISMATCH: archive counts {sc['archived_pings']:,} of {sc['expected_pings']:,} pings")
            if "wim_p99_ms" in sc:
                say(f"    WIM through the {args.workers} workers while the fleet reports: reading→verdict p50 "
                    f"{sc['wim_p50_ms']:.1f} ms, p99 {sc['wim_p99_ms']:.1f} ms ({sc['wim_verdicts']} verdicts); "
                    f"the workers' CPU {sc['wim_cpu_ms_per_reading']:.2f} ms per reading (GPS included)")
        if "d" not in skip:
            say("(d) batch assess gps…")
            results.update(part_d(f, reg_path, cfg))
            for w in ("json", "arrow"):
                say(f"    batch path from {w}: {results[f'batch_rate_{w}']:,.0f} pings/s wall, "
                    f"{results[f'batch_rate_{w}_cpu']:,.0f} pings/s of CPU time")
    if results.get("ping_rate") and results.get("baseline_rate"):
        results["ratio"] = results["ping_rate"] / results["baseline_rate"]
    if results.get("ping_rate_cpu") and results.get("baseline_rate_cpu"):
        # per CPU second of each process: robust on a loaded machine (the broker's CPU is in neither)
        results["ratio_cpu"] = results["ping_rate_cpu"] / results["baseline_rate_cpu"]
    if results.get("scale_rate") and results.get("baseline_rate"):
        results["scale_ratio"] = results["scale_rate"] / results["baseline_rate"]
    results["load_avg_end"] = list(os.getloadavg())      # a shared machine says so in its figures
    _print_table(results)
    if args.json:
        print(orjson.dumps(results).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


def _print_table(r: dict) -> None:
    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) and v == v else "n/a"
    rows = [("baseline (a) raw consume, pings/s", fmt(r.get("baseline_rate"), ",.0f")),
            ("pipeline (b) live worker, pings/s", fmt(r.get("ping_rate"), ",.0f")),
            ("ratio (b)/(a)  [target ≥ 1.0]", fmt(r.get("ratio"), ".2f")),
            ("ratio per CPU second of each process (b)/(a)", fmt(r.get("ratio_cpu"), ".2f")),
            ("WIM p50 ms", fmt(r.get("wim_p50_ms"), ".1f")),
            ("WIM p99 ms  [target ≤ 200 at 500/s]", fmt(r.get("wim_p99_ms"), ".1f")),
            ("WIM p50 / p99 ms right after (b)'s burst",
             f"{fmt(r.get('wim_after_burst_p50_ms'), '.0f')} / {fmt(r.get('wim_after_burst_p99_ms'), '.0f')}"),
            ("(b)'s commits done after (c1), s", fmt(r.get("drain_after_b_s"), ".1f")),
            ("WIM worker CPU ms per reading", fmt(r.get("wim_cpu_ms_per_reading"), ".2f")),
            ("(c) cores busy / generator % / broker % of a core",
             f"{fmt(r.get('wim_machine_busy_cores'), '.2f')} / {fmt(r.get('wim_generator_cpu_pct'), '.0f')} / "
             f"{fmt(r.get('wim_broker_cpu_pct'), '.0f')}"),
            ("WIM p50 / p99 ms through the scale-out workers",
             f"{fmt(r.get('scale_wim_p50_ms'), '.0f')} / {fmt(r.get('scale_wim_p99_ms'), '.0f')}"),
            ("batch (d) assess gps from JSON lines, pings/s  [≥ 300 k]", fmt(r.get("batch_rate_json"), ",.0f")),
            ("batch (d) from JSON lines, per CPU second", fmt(r.get("batch_rate_json_cpu"), ",.0f")),
            ("batch (d) from Arrow IPC, pings/s", fmt(r.get("batch_rate_arrow"), ",.0f")),
            ("batch (d) from Arrow IPC, per CPU second", fmt(r.get("batch_rate_arrow_cpu"), ",.0f")),
            ("worker ready s  [≤ 5]", fmt(r.get("worker_ready_s"), ".1f")),
            ("publish rate (batcher + kafka-python), pings/s", fmt(r.get("publish_rate"), ",.0f")),
            ("live state bytes/vehicle  [≤ 1024]", fmt(r.get("bytes_per_vehicle"), ".0f")),
            ("(b) records per engine call, mean", fmt(r.get("engine_call_records"), ".2f")),
            ("worker peak RSS MiB", fmt(r.get("peak_rss_mib"), ".0f")),
            ("scale-out: workers together, pings/s", fmt(r.get("scale_rate"), ",.0f")),
            ("scale-out ratio / (a)  [all workers together]", fmt(r.get("scale_ratio"), ".2f")),
            ("archive backend", r.get("archive", "n/a")),
            ("wire format of (b) and (s)", r.get("wire_format", "n/a"))]
    w = max(len(a) for a, _ in rows)
    print("\n".join(f"{a:<{w}}  {b:>14}" for a, b in rows), file=sys.stderr)


