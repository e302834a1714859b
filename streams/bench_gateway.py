"""``roadwatch bench gateway``: the JT/T 808 gateway under N simulated terminals on loopback.

A real ``roadwatch gateway`` process (its own archive, the embedded broker) and K client processes (one
per ``--per-client`` terminals: one process cannot hold 20 000 sockets and the replies' timing on 2 cores)
that each open their terminals' TCP connections from spread 127.0.0.x source addresses, register (0x0100)
and authenticate (0x0102), then:

1. steady: every terminal sends a 0x0200 every ``--interval`` s (phases spread evenly) for ``--duration``
   s; the client measures each reply's latency (write → 0x8001 parsed); the gateway's CPU (utime + stime
   from /proc) and its ``roadwatch_gateway_pings_total`` over the window give the CPU per position;
2. burst: every terminal re-uploads ``--burst`` 0x0704 frames of 30 fixes at once (a fleet back from a
   network outage); catch-up time = until ``roadwatch_gateway_published_pings_total`` (confirmed by Kafka)
   has them all.

With ``--baseline``, the same clients then run (steady phase only) against a do-nothing uvloop server
(``_echo_server``: the gateway's accept path and coalescing nap, one prebuilt reply per read): its CPU per
message is the floor of one ``recv`` + one ``send`` per position on this host, and the result carries the
ratio gateway / baseline.

Reported as JSON: accepted connections, RSS, CPU, reply p50/p99/max, published/s, burst catch-up time.
The machine may be shared: run it more than once and quote medians.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import orjson

from roadwatch.models.config import Config

BATCH_ITEMS = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bench gateway")
    g.add_argument("--terminals", type=int, default=1000, help="simulated terminals (default 1000)")
    g.add_argument("--interval", type=float, default=30.0, help="seconds between positions per terminal (default 30)")
    g.add_argument("--duration", type=float, default=60.0, help="steady-state measuring window, s (default 60)")
    g.add_argument("--burst", type=int, default=1, help="0x0704 frames of 30 fixes per terminal in the burst (0 = none)")
    g.add_argument("--per-client", type=int, default=5000, help="terminals per client process (default 5000)")
    g.add_argument("--profile", metavar="FILE", help="have the gateway write a pyinstrument profile to FILE")
    g.add_argument("--baseline", action="store_true",
                   help="also run the same clients against a do-nothing uvloop server (one prebuilt reply per read, "
                   "the same coalescing nap) and report its CPU per message: the floor of recv + send per position")
    g.add_argument("--gateway-cmd", help="command that starts a gateway instead of this installation's "
                   "(to compare builds); it gets the usual `gateway` arguments appended")


# --- the client side (runs in its own processes) -------------------------------------------------------

def _client(idx: int, port: int, terminals: list[tuple[str, str]], interval: float, burst: int,
            ready_q, steady_ev, burst_ev, stop_ev, result_q) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        res = asyncio.run(_client_main(idx, port, terminals, interval, burst, ready_q, steady_ev, burst_ev, stop_ev))
    except BaseException as e:     # report, never hang the parent
        res = {"error": f"{type(e).__name__}: {e}"}
        ready_q.put((idx, 0, len(terminals), res["error"]))
    result_q.put((idx, res))


async def _client_main(idx, port, terminals, interval, burst, ready_q, steady_ev, burst_ev, stop_ev) -> dict:
    from roadwatch.streams.jt808 import codec as c
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    burst_pending = [0]
    burst_done = loop.create_future()

    class T(asyncio.Protocol):
        def __init__(self, phone: str, plate: str):
            self.phone, self.plate, self.serial = phone, plate, 0
            self.buf = bytearray()
            self.sent: list[float] = []
            self.ready = loop.create_future()
            self.transport = None
            self.state = "reg"
            self.lost = False

        def frame(self, msg_id: int, body: bytes) -> bytes:
            self.serial = (self.serial + 1) & 0xFFFF
            return c.build_frame(msg_id, self.phone, self.serial, body)

        def connection_made(self, tr):
            self.transport = tr
            tr.write(self.frame(c.REGISTRATION, c.encode_registration(self.plate, 2)))

        def connection_lost(self, exc):
            self.lost = True
            if not self.ready.done():
                self.ready.set_exception(ConnectionError("closed by the gateway"))

        def data_received(self, data):
            self.buf += data
            frames = c.split_frames(self.buf)
            if self.state == "steady":
                now = time.monotonic()
                k = min(len(frames), len(self.sent))
                lat.extend(now - t for t in self.sent[:k])
                del self.sent[:k]
                return
            if self.state == "burst":
                burst_pending[0] -= len(frames)
                if burst_pending[0] <= 0 and not burst_done.done():
                    burst_done.set_result(time.monotonic())
                return
            for f in frames:
                m = c.parse_frame(f)
                if self.state == "reg" and m.msg_id == c.REGISTRATION_RESPONSE:
                    if m.fields["result"] != 0:
                        self.ready.set_exception(ConnectionError(f"registration refused: {m.fields['result']}"))
                        return
                    self.state = "auth"
                    self.transport.write(self.frame(c.AUTHENTICATION, c.encode_authentication(m.fields["auth_code"])))
                elif self.state == "auth" and m.msg_id == c.PLATFORM_RESPONSE:
                    if m.fields["result"] != 0:
                        self.ready.set_exception(ConnectionError("authentication refused"))
                        return
                    self.state = "steady"
                    self.ready.set_result(True)

    conns: list[T] = []
    failed = 0
    sem = asyncio.Semaphore(100)                   # connects in flight per client

    async def login(i: int, phone: str, plate: str) -> None:
        nonlocal failed
        async with sem:
            t = T(phone, plate)
            try:
                await loop.create_connection(lambda: t, "127.0.0.1", port,
                                             local_addr=(f"127.0.0.{2 + (i % 250)}", 0))
                await asyncio.wait_for(t.ready, 60)
                conns.append(t)
            except (OSError, asyncio.TimeoutError, ConnectionError):
                failed += 1
                if t.transport is not None:
                    t.transport.close()

    t0 = time.monotonic()
    await asyncio.gather(*(login(i, ph, pl) for i, (ph, pl) in enumerate(terminals)))
    ready_q.put((idx, len(conns), failed, time.monotonic() - t0))
    while not steady_ev.is_set():
        await asyncio.sleep(0.05)

    # steady: terminal k of n sends at t0 + r·interval + k/n·interval
    def loc(i: int) -> bytes:
        return c.encode_location({"lat": 31.0 + (i % 1000) * 1e-4, "lon": 120.0, "speed_kmh": 50.0, "heading": 90,
                                  "status_flags": 3, "ts": int(time.time() * 1000), "mileage_km": 1000.0})
    n = max(1, len(conns))
    start = time.monotonic()
    sent = 0
    k = 0
    while not burst_ev.is_set():
        due = start + (k // n) * interval + (k % n) / n * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(min(delay, 0.05))
            continue
        t = conns[k % n] if conns else None
        if t is not None and not t.lost:
            t.sent.append(time.monotonic())
            t.transport.write(t.frame(c.LOCATION, loc(k)))
            sent += 1
        k += 1
    await asyncio.sleep(0.5)                      # last replies of the steady phase
    steady_lat = lat[:]
    t_burst = None
    if burst:
        batch = c.encode_batch_upload([{"lat": 31.0, "lon": 120.0 + j * 1e-4, "speed_kmh": 40.0, "status_flags": 3,
                                        "ts": int(time.time() * 1000) - 3_600_000 + j * 30_000}
                                       for j in range(BATCH_ITEMS)], True)
        live = [t for t in conns if not t.lost]
        for t in live:
            t.state = "burst"
            t.buf.clear()
        burst_pending[0] = len(live) * burst
        tb = time.monotonic()
        for t in live:
            t.transport.write(b"".join(t.frame(c.BATCH_LOCATION, batch) for _ in range(burst)))
        try:
            t_burst = await asyncio.wait_for(burst_done, 600) - tb
        except asyncio.TimeoutError:
            t_burst = None
    while not stop_ev.is_set():
        await asyncio.sleep(0.05)
    for t in conns:
        if t.transport is not None:
            t.transport.close()
    return {"latencies": steady_lat, "sent": sent, "lost": sum(t.lost for t in conns), "burst_acked_s": t_burst,
            "burst_pings": burst * BATCH_ITEMS * len(conns)}


# --- the baseline: a do-nothing uvloop server under the same clients -----------------------------------

def _echo_server(port: int, coalesce_ms: float, count, ready_ev, stop_ev) -> None:
    """Answers every read with one prebuilt frame — a 0x8100 (result 0) to a registration, else a 0x8001
    (result 0) — with the gateway's coalescing nap and nothing else: what one recv + one send per position
    cost through uvloop on this host. ``count`` (shared) is the number of reads, updated every 0.1 s."""
    import uvloop

    from roadwatch.streams.jt808 import codec as c

    from .jt808.listener import Listener, listen_socket, raise_nofile
    raise_nofile()
    reg = c.build_frame(c.REGISTRATION_RESPONSE, "1", 1, c.encode_registration_response(1, 0, "baseline"))
    ack = c.build_frame(c.PLATFORM_RESPONSE, "1", 1, c.encode_general_response(1, c.LOCATION, 0))
    nap_s = coalesce_ms / 1000.0
    n = [0]
    napping = [False]

    def nap(since: float) -> None:
        wait = since + nap_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        napping[0] = False

    class Echo(asyncio.Protocol):
        __slots__ = ("transport",)

        def connection_made(self, transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            n[0] += 1
            if nap_s and not napping[0]:
                napping[0] = True
                asyncio.get_running_loop().call_soon(nap, time.monotonic())
            self.transport.write(reg if data[1:3] == b"\x01\x00" else ack)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def admit(sock: socket.socket, addr: tuple) -> None:       # the gateway's accept path, as it is
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loop.create_task(loop.connect_accepted_socket(Echo, sock))
        listener = Listener(listen_socket("127.0.0.1", port, 65535), admit, lambda: False, 1.0)
        ready_ev.set()
        while not stop_ev.is_set():
            await asyncio.sleep(0.1)
            count.value = n[0]
        count.value = n[0]
        listener.close()

    uvloop.run(main())


def _baseline(args: argparse.Namespace, cfg: Config, terms: list[tuple[str, str]]) -> dict:
    """The clients of the gateway run, against ``_echo_server``: CPU per message and reply latencies."""
    from .broker import free_port
    ctx = mp.get_context("spawn")
    port = free_port()
    count, ready, stop = ctx.Value("Q", 0, lock=False), ctx.Event(), ctx.Event()
    srv = ctx.Process(target=_echo_server, args=(port, cfg["gateway.coalesce_ms"], count, ready, stop), daemon=True)
    srv.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("baseline server did not start")
        res = _drive(args, port, terms, 0, srv.pid, lambda: float(count.value))
    finally:
        stop.set()
        srv.join(timeout=10)
        if srv.is_alive():
            srv.kill()
    return {k: res[k] for k in ("accepted_connections", "cpu_user_us_per_position", "cpu_sys_us_per_position",
                                "cpu_us_per_position", "positions_per_s", "reply_p50_ms", "reply_p99_ms",
                                "reply_max_ms", "rss_mib")}


# --- the gateway side --------------------------------------------------------------------------------

def _proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def _proc_cpu_s(pid: int) -> float:
    return sum(_proc_cpu(pid))


def _proc_rss_mib(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, val = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(val)
    return total


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_registry(n: int, path: Path) -> list[tuple[str, str]]:
    terms = [(f"1{k:010d}", f"苏{'ABCDEFGHJK'[(k // 100000) % 10]}{k % 100000:05d}") for k in range(n)]
    path.write_bytes(orjson.dumps({"vehicles": [{"plate": pl, "plate_color": 2, "category": "危险货物运输车辆",
                                                 "enterprise_id": "", "terminal_id": ph} for ph, pl in terms]}))
    return terms


def _drive(args: argparse.Namespace, port: int, terms: list[tuple[str, str]], burst: int, pid: int,
           positions: Callable[[], float], published: Callable[[], float] | None = None,
           after_login: Callable[[], dict] | None = None) -> dict:
    """The client processes against the server on ``port`` (process ``pid``): log in, the steady window
    (CPU of ``pid``; ``positions()`` counts what it took), the burst (until ``published()`` has it), the
    replies' latencies."""
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    n = len(terms)
    res: dict = {}
    procs = []
    published = published or (lambda: float("nan"))
    try:
        ctx = mp.get_context("spawn")
        ready_q, result_q = ctx.Queue(), ctx.Queue()
        steady_ev, burst_ev, stop_ev = ctx.Event(), ctx.Event(), ctx.Event()
        chunks = [terms[i:i + args.per_client] for i in range(0, n, args.per_client)]
        say(f"roadwatch bench gateway: {n:,} terminals in {len(chunks)} client process(es); connecting…")
        t0 = time.monotonic()
        for i, ch in enumerate(chunks):
            p = ctx.Process(target=_client, args=(i, port, ch, args.interval, burst, ready_q, steady_ev,
                                                  burst_ev, stop_ev, result_q), daemon=True)
            p.start()
            procs.append(p)
        ok = failed = 0
        for _ in chunks:
            _, a, b, _t = ready_q.get(timeout=900)
            ok, failed = ok + a, failed + (b if isinstance(b, int) else len(chunks[0]))
        res.update(accepted_connections=ok, refused_connections=failed, connect_s=round(time.monotonic() - t0, 1),
                   **(after_login() if after_login else {}))
        say(f"  {ok:,} terminals authenticated, {failed:,} refused, in {res['connect_s']} s")
        steady_ev.set()
        time.sleep(min(args.interval, 10.0))            # every phase started once before measuring
        (u0, s0), p0, q0, w0 = _proc_cpu(pid), positions(), published(), time.monotonic()
        time.sleep(args.duration)
        (u1, s1), p1, q1, w1 = _proc_cpu(pid), positions(), published(), time.monotonic()
        c0, c1 = u0 + s0, u1 + s1
        npos = p1 - p0
        # on loopback the kernel time includes delivering the replies into the clients' sockets
        res.update(cpu_user_us_per_position=round(1e6 * (u1 - u0) / npos, 1) if npos else None,
                   cpu_sys_us_per_position=round(1e6 * (s1 - s0) / npos, 1) if npos else None)
        res.update(rss_mib=round(_proc_rss_mib(pid), 1), cpu_pct_one_core=round(100 * (c1 - c0) / (w1 - w0), 1),
                   positions_per_s=round(npos / (w1 - w0), 1),
                   published_per_s=round((q1 - q0) / (w1 - w0), 1),
                   cpu_us_per_position=round(1e6 * (c1 - c0) / npos, 1) if npos else None)
        say(f"  steady: {res['positions_per_s']:,} positions/s, gateway CPU {res['cpu_pct_one_core']} % of a core, "
            f"{res['cpu_us_per_position']} µs per position, RSS {res['rss_mib']} MiB")
        published_before = published()
        burst_ev.set()
        tb = time.monotonic()
        target = published_before + (burst * BATCH_ITEMS * ok if burst else 0)
        cb = _proc_cpu_s(pid)
        if burst:
            deadline = tb + 900
            while published() < target - 1e-9:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            res["burst_positions"] = burst * BATCH_ITEMS * ok
            res["burst_catch_up_s"] = round(time.monotonic() - tb, 2)
            res["burst_positions_per_cpu_s"] = round(res["burst_positions"] / max(1e-9, _proc_cpu_s(pid) - cb))
        stop_ev.set()
        lat: list[float] = []
        sent = lost = 0
        acked = []
        for _ in chunks:
            _, r = result_q.get(timeout=120)
            if "error" in r:
                raise RuntimeError(f"client failed: {r['error']}")
            lat += r["latencies"]
            sent += r["sent"]
            lost += r["lost"]
            if r["burst_acked_s"] is not None:
                acked.append(r["burst_acked_s"])
        res.update(replies=len(lat), reply_p50_ms=round(1000 * _pct(lat, 0.50), 2),
                   reply_p99_ms=round(1000 * _pct(lat, 0.99), 2), reply_max_ms=round(1000 * max(lat), 2) if lat else None,
                   connections_lost=lost, burst_acked_s=round(max(acked), 2) if acked else None,
                   published_total=published())
        say(f"  replies p50 {res['reply_p50_ms']} ms, p99 {res['reply_p99_ms']} ms, max {res['reply_max_ms']} ms; "
            f"burst caught up in {res.get('burst_catch_up_s')} s")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return res


def run(args: argparse.Namespace, cfg: Config) -> int:
    from .broker import EmbeddedBroker, create_topics, free_port
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    n = args.terminals
    if n < 1 or args.interval <= 0 or args.duration <= 0:
        from .cli import UsageError
        raise UsageError("--terminals, --interval and --duration must be positive")
    res: dict = {"terminals": n, "interval_s": args.interval, "duration_s": args.duration,
                 "event_loop": cfg["gateway.event_loop"], "producer": cfg["gateway.producer"]}
    with tempfile.TemporaryDirectory(prefix="roadwatch-bench-gw-") as tmp, EmbeddedBroker() as broker:
        tmp = Path(tmp)
        terms = bench_registry(n, tmp / "registry.json")
        create_topics(broker.bootstrap, cfg)
        port, mport = free_port(), free_port()
        outer = os.environ.get("ROADWATCH_SET", "")          # the caller's overrides come first, ours win
        env = dict(os.environ, ROADWATCH_SET=(f'{outer};' if outer else '') + (
                                              f'paths.data_dir="{tmp / "data"}";gateway.max_connections={n + 100};'
                                              f'gateway.max_unauthenticated={min(n + 100, 100_000)};'
                                              f'gateway.max_pending_per_address={n + 100};'
                                              f'gateway.event_loop="{cfg["gateway.event_loop"]}"'))
        if cfg["gateway.producer"] != "aiokafka":      # (only then: builds before the key still start)
            env["ROADWATCH_SET"] += f';gateway.producer="{cfg["gateway.producer"]}"'
        res["front_end"] = cfg["gateway.front_end"]
        if cfg["gateway.front_end"] != "auto":         # (likewise)
            env["ROADWATCH_SET"] += f';gateway.front_end="{cfg["gateway.front_end"]}"'
        res["coalesce_ms"] = cfg["gateway.coalesce_ms"]
        cmd = (args.gateway_cmd.split() if args.gateway_cmd else [sys.executable, "-m", "roadwatch.streams.cli"])
        cmd += ["gateway", "--host", "127.0.0.1", "--port", str(port), "--registry", str(tmp / "registry.json"),
                "--bootstrap", broker.bootstrap, "--metrics-port", str(mport)]
        if args.profile:
            cmd += ["--profile", str(Path(args.profile).resolve())]
        log = open(tmp / "gateway.log", "w+")
        gw = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while math.isnan(_metric(mport, "roadwatch_gateway_connections")):       # not listening yet
                if time.monotonic() > deadline or gw.poll() is not None:
                    raise RuntimeError("gateway did not start")
                time.sleep(0.2)
            metric = (lambda name: (lambda: _metric(mport, name)))
            res.update(_drive(args, port, terms, args.burst, gw.pid, metric("roadwatch_gateway_pings_total"),
                              metric("roadwatch_gateway_published_pings_total"),
                              lambda: dict(gateway_connections=_metric(mport, "roadwatch_gateway_connections"),
                                           accept_pauses=_metric(mport, "roadwatch_gateway_accept_pauses_total"),
                                           # which front end ran (NaN: a build from before gateway.front_end)
                                           native_front_end=_metric(
                                               mport, 'roadwatch_gateway_front_end{front_end="native"}'))))
            res["gateway_log_lines"] = sum(1 for _ in open(tmp / "gateway.log"))
            if args.baseline:
                gw.terminate()                          # its descriptors and CPU out of the way
                gw.wait(15)
                say("roadwatch bench gateway: the same clients against a do-nothing uvloop server (baseline)…")
                res["baseline"] = base = _baseline(args, cfg, terms)
                if res.get("cpu_us_per_position") and base.get("cpu_us_per_position"):
                    res["gateway_to_baseline_cpu"] = round(res["cpu_us_per_position"] / base["cpu_us_per_position"], 2)
        finally:
            gw.terminate()
            try:
                gw.wait(15)
            except subprocess.TimeoutExpired:
                gw.kill()
    print(orjson.dumps(res).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0
