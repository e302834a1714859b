"""The JT/T 809 part of a scenario: a ``[platform_link]`` block → simulated lower platforms forwarding the
scenario's positions to an in-process ``platform-link`` server on a simulated clock, and the exact
平台连通率 / 查岗响应率 that ``scenario check`` expects (docs/jt809.md, docs/scenarios.md)::

    [[platform_link.platform]]
    center_id = 20180920          # user_id defaults to it, password to "pw" + last 6 digits
    protocol = 2011               # 2011 | 2019
    encrypt = false               # cipher 30000000,20000000,20000000 when true
    escape = true                 # false: a sender that does not escape
    answer_delay_s = 300          # simulated seconds before it answers a 查岗
    miss_rate = 0.0               # share of 查岗 never answered (seeded)
    seed = 1
    offline = [["08:00", "09:30"]]   # link lost at 08:00, back at 09:30 (times of the scenario's first day,
                                     # or ISO-8601); login at the scenario start, logout at its end
    [[platform_link.inspection]]
    at = "10:00"
    platform = "all"              # or a centre id
    minutes = 10                  # answer deadline

Vehicle ``vid`` of the registry is forwarded by platform ``vid mod n``. The expected figures are computed
here from the schedule alone (independently of the server's archive): online = scenario span minus the
offline windows; the denominator is the whole month in minutes (the month of the scenario start); an
inspection counts as answered when the platform is online when asked, does not miss it, answers within the
deadline and before its link is lost.
"""
from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from roadwatch.models.config import Config
from roadwatch.streams.jt809 import codec as c

from .behaviours import ScenarioError
from .lower_platform import Event, LowerPlatform, PlatformSpec, SimClock, plan_feed, play_many

CIPHER = c.Cipher(30000000, 20000000, 20000000)


@dataclass
class PlannedPlatform:
    spec: PlatformSpec
    online: list[tuple[float, float]]          # link-up intervals, epoch seconds


@dataclass
class LinkPlan:
    platforms: list[PlannedPlatform]
    inspections: list[tuple[float, int, int]]  # (t, centre, minutes)
    month: str
    start: float
    end: float


def _when(scn, v) -> float:
    if not isinstance(v, str):
        raise ScenarioError(f"platform_link: time {v!r} must be 'HH:MM' or ISO-8601")
    try:
        if len(v) <= 5 and ":" in v:
            hh, mm = v.split(":")
            return (scn.start.replace(hour=0, minute=0, second=0, microsecond=0)
                    + timedelta(hours=int(hh), minutes=int(mm))).timestamp()
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ScenarioError(f"platform_link: time {v!r} must be 'HH:MM' or ISO-8601") from None
    if dt.tzinfo is None:
        raise ScenarioError(f"platform_link: time {v!r} needs a UTC offset")
    return dt.timestamp()


def parse_plan(scn, cfg: Config) -> LinkPlan | None:
    block = scn.raw.get("platform_link")
    if block is None:
        return None
    if not isinstance(block, dict) or not block.get("platform"):
        raise ScenarioError("[platform_link] needs at least one [[platform_link.platform]]")
    start, end = scn.start.timestamp(), scn.end.timestamp()
    plats = []
    for i, p in enumerate(block["platform"], 1):
        try:
            ctr = int(p["center_id"])
            spec = PlatformSpec(ctr, int(p.get("user_id", ctr)), str(p.get("password", f"pw{ctr % 1000000:06d}")),
                                int(p.get("protocol", 2011)), CIPHER if p.get("encrypt") else None,
                                bool(p.get("encrypt", False)), bool(p.get("escape", True)),
                                float(p.get("answer_delay_s", 60)), float(p.get("miss_rate", 0.0)),
                                int(p.get("seed", i)), str(p.get("name", f"平台{ctr}")))
        except (KeyError, TypeError, ValueError) as e:
            raise ScenarioError(f"platform_link platform #{i}: {e}") from None
        if spec.protocol not in (2011, 2019) or not 0 <= spec.miss_rate <= 1 or spec.answer_delay_s < 0:
            raise ScenarioError(f"platform_link platform #{i}: protocol 2011|2019, miss_rate in [0, 1], delay ≥ 0")
        cuts = sorted((_when(scn, a), _when(scn, b)) for a, b in p.get("offline", []))
        online, t = [], start
        for a, b in cuts:
            if not start <= a < b <= end or a < t:
                raise ScenarioError(f"platform_link platform #{i}: offline windows must be ordered, disjoint and "
                                    f"inside the scenario")
            if a > t:
                online.append((t, a))
            t = b
        if t < end:
            online.append((t, end))
        plats.append(PlannedPlatform(spec, online))
    centers = [p.spec.center_id for p in plats]
    ins = []
    for j, q in enumerate(block.get("inspection", []), 1):
        t = _when(scn, q.get("at"))
        if not start <= t < end:
            raise ScenarioError(f"platform_link inspection #{j}: outside the scenario")
        target = q.get("platform", "all")
        targets = centers if target == "all" else [int(target)]
        if not set(targets) <= set(centers):
            raise ScenarioError(f"platform_link inspection #{j}: unknown platform {target!r}")
        mins = int(q.get("minutes", cfg["jt809.inspection_answer_minutes"]))
        ins += [(t, ctr, mins) for ctr in targets]
    return LinkPlan(plats, sorted(ins), scn.start.strftime("%Y-%m"), start, end)


# --- expectations (from the schedule alone) ---------------------------------------------------------------

def _round(x: Decimal, places: int) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def expected_rates(plan: LinkPlan, decimals: int) -> dict[int, dict]:
    """centre → {"connectivity": (numerator min, denominator min, percent), "inspection": (n, d, percent)}."""
    y, mo = (int(x) for x in plan.month.split("-"))
    first = datetime.fromisoformat(f"{plan.month}-01T00:00:00+08:00").timestamp()
    nxt = datetime.fromisoformat(f"{y + mo // 12:04d}-{mo % 12 + 1:02d}-01T00:00:00+08:00").timestamp()
    month_min = Decimal(int(nxt - first)) / 60
    out = {}
    for p in plan.platforms:
        clipped = [(max(a, first), min(b, nxt)) for a, b in p.online if b > first and a < nxt]
        up = sum(Decimal(repr(b)) - Decimal(repr(a)) for a, b in clipped) / 60
        num, den = _round(up, 2), _round(month_min, 2)
        conn = (float(num), float(den), float(_round(num * 100 / den, decimals)))
        rng = random.Random(p.spec.seed)           # the same draws as LowerPlatform.decide_delay
        answered = asked = 0
        for t, ctr, mins in plan.inspections:
            if ctr != p.spec.center_id:
                continue
            asked += 1
            span = next(((a, b) for a, b in p.online if a <= t < b), None)
            if span is None:
                continue                           # offline: undeliverable
            miss = rng.random() < p.spec.miss_rate
            t_ans = t + p.spec.answer_delay_s
            if not miss and p.spec.answer_delay_s <= mins * 60 and t_ans < span[1]:
                answered += 1
        insp = (answered, asked, None if not asked else float(_round(Decimal(answered * 100) / asked, decimals)))
        out[p.spec.center_id] = {"name": p.spec.name, "connectivity": conn, "inspection": insp}
    return out


def check_rows(scn, conn, registry, cfg: Config) -> list[dict]:
    """``scenario check`` rows for 平台连通率 and 查岗响应率 (none when the scenario has no [platform_link])."""
    plan = parse_plan(scn, cfg)
    if plan is None:
        return []
    from roadwatch.streams.reports.platforms import platform_section
    y, mo = (int(x) for x in plan.month.split("-"))
    snapshot = f"{y + mo // 12:04d}-{mo % 12 + 1:02d}-01T00:00:00+08:00"      # the month closed
    got = {p["center_id"]: p for p in platform_section(conn, plan.month, snapshot, cfg, registry)["items"]}
    rows = []
    for ctr, exp in expected_rates(plan, cfg["report.decimals"]).items():
        g = got.get(ctr)
        for key, name, label in (("connectivity", "connectivity_rate", "平台连通率"),
                                 ("inspection", "inspection_response_rate", "查岗响应率")):
            actual = None if g is None else (g[name]["numerator"], g[name]["denominator"], g[name]["percent"])
            want = exp[key]
            ok = actual is not None and tuple(float(x) if x is not None else None for x in actual) == want
            rows.append({"ok": ok, "kind": "platform", "subject": f"{label} {ctr}",
                         "expected": f"{want[0]:g}/{want[1]:g} = {want[2]}%", "actual":
                         None if actual is None else f"{actual[0]:g}/{actual[1]:g} = {actual[2]}%",
                         "why": "JT/T 809 schedule of the scenario ([platform_link])"})
    return rows


# --- running it -------------------------------------------------------------------------------------------

def timeline(plan: LinkPlan, built) -> list[Event]:
    """Logins, losses, positions and inspections of every platform, on the scenario's own clock."""
    n = len(plan.platforms)
    evs: list[Event] = []
    k = 0

    def add(t, kind, payload, center):
        nonlocal k
        k += 1
        evs.append(Event(t, k, kind, payload, center))
    for p in plan.platforms:
        ctr = p.spec.center_id
        for i, (a, b) in enumerate(p.online):
            add(a, "login", None, ctr)
            add(b, "logout" if b >= plan.end else "drop", None, ctr)
    for t, vid, kind, ps in plan_feed(built, 0):
        add(max(t, plan.start), kind, ps, plan.platforms[vid % n].spec.center_id)
    for t, ctr, mins in plan.inspections:
        add(t, "inspect", mins, ctr)
    # an event at the very end of a link comes before its loss; a login before anything at the same time
    prio = {"login": 0, "pings": 1, "reupload": 1, "inspect": 2, "answer": 2, "drop": 3, "logout": 3}
    evs.sort(key=lambda e: (e.t, prio[e.kind], e.order))
    return [Event(e.t, i, e.kind, e.payload, e.center) for i, e in enumerate(evs)]


async def run_link(plan: LinkPlan, built, cfg: Config, publisher) -> dict:
    """An in-process link server on a ``SimClock`` and the plan's lower platforms."""
    from roadwatch.streams.archive import platforms as store
    from roadwatch.streams.jt809.link import LinkServer
    from roadwatch.streams.jt809.platforms import Platform
    clock = SimClock(plan.start)
    platforms = {p.spec.center_id: Platform(p.spec.center_id, p.spec.name, p.spec.user_id, p.spec.password,
                                            p.spec.protocol, p.spec.cipher, p.spec.encrypt) for p in plan.platforms}
    srv = LinkServer(cfg, platforms, publisher, clock)
    await srv.start("127.0.0.1", 0)
    lowers = {p.spec.center_id: LowerPlatform(p.spec, clock) for p in plan.platforms}
    minutes = {(t, ctr): m for t, ctr, m in plan.inspections}
    try:
        stats = await play_many(srv, clock, lowers, timeline(plan, built), "127.0.0.1", srv.port,
                                lambda t, ctr: store.queue_inspection(srv.conn, ctr, "请报告值班人员及在岗情况", t,
                                                                      "scenario", minutes[(t, ctr)]))
    finally:
        for lp in lowers.values():
            await lp.close()
        await srv.aclose()
    return stats


def simulate_over_link(built, scn, cfg: Config, reg_path, config_path, timeout: float) -> int:
    """``roadwatch simulate SCENARIO --platform-link``: broker + worker, the scenario's positions through
    JT/T 809 on the simulated clock, then wait until the worker has processed them."""
    from kafka import KafkaConsumer, TopicPartition

    from roadwatch.streams.batcher import KafkaPublisher
    from roadwatch.streams.runtime import stack, wait_consumed
    from roadwatch.streams.topics import GPS_PINGS
    plan = parse_plan(scn, cfg)
    if plan is None:
        from roadwatch.streams.cli import UsageError
        raise UsageError(f"scenario {scn.name} has no [platform_link] block")
    with stack(cfg, registry_path=str(reg_path), config_path=config_path) as st:
        pub = KafkaPublisher(bootstrap=st.bootstrap)
        t0 = time.monotonic()
        try:
            stats = asyncio.run(run_link(plan, built, cfg, pub))
        finally:
            pub.close()
        cons = KafkaConsumer(bootstrap_servers=st.bootstrap, group_id=None)
        try:
            parts = [TopicPartition(GPS_PINGS, p) for p in cons.partitions_for_topic(GPS_PINGS) or []]
            ends = {(tp.topic, tp.partition): off for tp, off in cons.end_offsets(parts).items()}
        finally:
            cons.close()
        print(f"platform link: {len(plan.platforms)} platform(s), {stats['logins']} login(s), {stats['frames']:,} "
              f"frames, {stats['inspections']} inspection(s), {stats['answered']} answered in "
              f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
        ok = wait_consumed(st.bootstrap, ends, timeout)
        print(f"worker {'idle' if ok else 'NOT idle'}", file=sys.stderr)
    return 0 if ok else 1
