"""``roadwatch simulate SCENARIO``: generate a scenario's feed and publish it through the stack.

Writes (with ``--out DIR``) ``registry.json``, ``feed.jsonl`` (the recording format; ``--gzip`` for
``feed.jsonl.gz``), ``expectations.json`` and ``images/``; then — unless ``--no-publish`` — starts the
stack (embedded broker + worker unless ``$ROADWATCH_KAFKA`` is set), publishes the feed paced by
``--speed`` — never more than ``--lead`` of event time ahead of what the worker has taken in on any topic
(simulators/replay.py ``EventTimeGate``) — and waits until the worker has consumed everything.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.streams.cli import UsageError

from .behaviours import ScenarioError
from .recording import write_records
from .replay import EventTimeGate, parse_speed, ping_count, publish, worker_intake
from .scenario import build, load_scenario


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario name (simulators/scenarios) or TOML path")
    p.add_argument("--speed", default="max", help="N × real time, or 'max' (default)")
    p.add_argument("--out", help="directory for registry.json, feed.jsonl, expectations.json, images/")
    p.add_argument("--gzip", action="store_true", help="write feed.jsonl.gz instead of feed.jsonl")
    p.add_argument("--no-publish", action="store_true", help="only generate (needs --out)")
    p.add_argument("--gateway", metavar="HOST:PORT",
                   help="send pings as JT/T 808 frames over TCP to this gateway instead of Kafka")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the worker to go idle")
    p.add_argument("--lead", type=float, default=None, metavar="S",
                   help="event-time lead: publish at most S simulated seconds ahead of what the worker has taken "
                        "in on every topic (default: the scenario's fair_lead_s, 1800; 0 = no gating)")
    p.add_argument("--platform-link", action="store_true",
                   help="forward the pings as JT/T 809 lower platforms (the scenario's [platform_link] block) "
                        "through an in-process platform-link server on the simulated clock")


def generate(args, cfg: Config):
    try:
        scn = load_scenario(args.scenario)
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="roadwatch-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        built = build(scn, cfg, images_dir=out / "images")
    except ScenarioError as e:
        raise UsageError(f"{scn.name}: {e}") from None
    reg_path = out / "registry.json"
    built.registry.dump(reg_path)
    t0 = time.perf_counter()
    feed_path = out / ("feed.jsonl.gz" if args.gzip else "feed.jsonl")
    write_records(feed_path, built.records)
    (out / "expectations.json").write_bytes(orjson.dumps(built.expectations, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    st = built.stats
    print(f"{scn.name}: {st['vehicles']} vehicles, {st['stations']} stations, {st['pings']:,} pings in "
          f"{st['ping_records']:,} batches, {st['wim_readings']:,} WIM readings, {st['driver_events']} driver events; "
          f"generated in {st['generate_s']} s, written in {time.perf_counter() - t0:.1f} s → {out}", file=sys.stderr)
    return scn, built, reg_path


def _metrics_url(lines: list[str]) -> str | None:
    """The metrics address our worker announced in its ready line (the real port, also with web.port = 0;
    never another process's)."""
    for line in reversed(list(lines)):
        m = re.search(r"metrics (http://\S+/metrics)", line)
        if m:
            return m.group(1)
    return None


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        speed = parse_speed(args.speed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.no_publish and not args.out:
        raise UsageError("--no-publish needs --out")
    scn, built, reg_path = generate(args, cfg)
    if args.no_publish:
        return 0
    if args.gateway:
        from .gateway_feed import send_to_gateway
        return send_to_gateway(built, args.gateway, speed)
    if args.platform_link:           # JT/T 809 (simulators/platform_scenario.py)
        from .platform_scenario import simulate_over_link
        return simulate_over_link(built, scn, cfg, reg_path, getattr(args, "config", None), args.timeout)
    from roadwatch.streams.batcher import make_producer
    from roadwatch.streams.runtime import stack
    with stack(cfg, registry_path=str(reg_path), config_path=getattr(args, "config", None)) as st:
        producer = make_producer(st.bootstrap)
        lead = args.lead if args.lead is not None else float(scn.raw["scenario"].get("fair_lead_s", 1800))
        gate = None
        url = _metrics_url(st.worker.lines) if lead > 0 and st.worker is not None else None
        if url:                                     # our own worker: its /metrics tells what it took in
            gate = EventTimeGate(lambda: worker_intake(url), int(lead * 1000), stall_s=args.timeout)
        elif lead > 0:
            print("roadwatch: no worker metrics address known: publishing without event-time gating",
                  file=sys.stderr)
        try:
            res = publish(built.records, producer, speed, total=len(built.records), on_sent=st.note_sent,
                          count_units=ping_count, settle=lambda: st.wait_idle(args.timeout), gate=gate)
        finally:
            producer.close(timeout=10)
        print(f"published {res['messages']:,} records ({res['units']:,} pings) in {res['seconds']} s: "
              f"{res['msg_per_s']:,} msg/s, {res['units_per_s']:,} pings/s"
              + (f" (plus {res['settle_s']} s waiting for the worker at barriers)" if res["settle_s"] else "")
              + (f"; {res['gate_s']} s of it keeping event-time step with the worker" if res.get("gate_s") else ""),
              file=sys.stderr)
        t0 = time.monotonic()
        ok = st.wait_idle(args.timeout)
        print(f"worker {'idle' if ok else 'NOT idle'} after {time.monotonic() - t0:.1f} s", file=sys.stderr)
        if ok and built.field_outcomes:        # the field teams act on the tasks the worker made
            from .field_teams import record_outcomes
            res = record_outcomes(cfg, built.registry, built.field_outcomes)
            print(f"field teams: {res['recorded']} outcome(s) recorded, {res['decided']} case(s) decided"
                  + (f", {len(res['missing'])} task(s) not found" if res["missing"] else ""), file=sys.stderr)
            ok = not res["missing"]
    return 0 if ok else 1
