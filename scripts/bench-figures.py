#!/usr/bin/env python3
"""The README's figures table from `roadwatch bench --json` output.

    .venv/bin/roadwatch bench --json --workers 2 --out bench.json
    .venv/bin/roadwatch bench --json --workers 2 --skip a,c,d --archive postgresql://… --out bench-pg.json
    .venv/bin/python scripts/bench-figures.py bench.json [--pg bench-pg.json] [--readme README.md]

Prints the table rows; with ``--readme`` replaces the block between ``<!-- bench-figures:begin -->`` and
``<!-- bench-figures:end -->`` in that file. The machine's load average at the start and the end of the run is
stated in the table: figures from a machine others were using (load ≥ 1.5 at the start) say so.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- bench-figures:begin -->", "<!-- bench-figures:end -->"


def _k(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1000:,.0f} k"


def table(r: dict, pg: dict | None = None) -> str:
    # whether others used the machine is judged by the load before the run: at its end the one-minute load
    # average is mostly the bench's own processes (worker, broker, load generator)
    start, end = (r.get(k)[0] if r.get(k) else None for k in ("load_avg_start", "load_avg_end"))
    load = start if start is not None else end
    quiet = load is not None and load < 1.5
    head = (f"`roadwatch bench --json --workers {r.get('scale_workers', 1)}`, {r.get('pings', 0):,} pings from "
            f"{r.get('vehicles', 0):,} vehicles, wire format `{r.get('wire_format', '?')}`, archive "
            f"{r.get('archive', '?')}; load average {load:.1f} at the start"
            + (f", {end:.1f} at the end (the bench's own processes)" if start is not None and end is not None
               else "")
            + ("" if quiet else " — **a shared, loaded machine: ratios are indicative, absolute rates are not**")
            if load is not None else "")
    rows = [("full ping pipeline, one worker / raw consumer of the naive one-ping feed",
             f"{_k(r.get('ping_rate'))} / {_k(r.get('baseline_rate'))} pings/s = **{r['ratio']:.2f}**"
             if r.get("ratio") else "n/a")]
    if r.get("ratio_cpu"):
        rows.append(("the same per CPU second of each process (robust on a loaded machine)",
                     f"{_k(r.get('ping_rate_cpu'))} / {_k(r.get('baseline_rate_cpu'))} pings per CPU second = "
                     f"**{r['ratio_cpu']:.2f}**"))
    if r.get("scale_ratio"):
        ok = r.get("scale_archived_pings") == r.get("pings")
        rows.append((f"{r['scale_workers']} workers sharing the partitions",
                     f"{_k(r['scale_rate'])} pings/s = **{r['scale_ratio']:.2f} ×** the raw consumer"
                     + (", every ping counted exactly once" if ok else ", ARCHIVE COUNT MISMATCH")))
    if pg:
        # the PostgreSQL run skips the baseline (--skip a): its ratios are against this run's raw consumer
        pg = dict(pg)
        for rate, base, ratio in (("ping_rate", "baseline_rate", "ratio"), ("ping_rate_cpu", "baseline_rate_cpu",
                                                                          "ratio_cpu"),
                                  ("scale_rate", "baseline_rate", "scale_ratio")):
            if pg.get(rate) and not pg.get(ratio) and r.get(base):
                pg[ratio] = pg[rate] / r[base]
        parts = []
        if pg.get("ratio"):
            parts.append(f"one worker {_k(pg['ping_rate'])} pings/s = {pg['ratio']:.2f} (per CPU second "
                         f"{pg.get('ratio_cpu', float('nan')):.2f})")
        if pg.get("scale_rate"):
            parts.append(f"{pg.get('scale_workers')} workers {_k(pg['scale_rate'])} pings/s = "
                         f"{pg.get('scale_ratio', float('nan')):.2f} ×"
                         + (", every ping counted exactly once" if pg.get("scale_archived_pings") == pg.get("pings")
                            else ", ARCHIVE COUNT MISMATCH"))
        rows.append(("the same on the PostgreSQL archive (separate run)", "; ".join(parts) or "n/a"))
    if r.get("wim_p99_ms") is not None:
        live = (f", while {r['gps_live_rate']:,.0f} GPS pings/s come in" if r.get("gps_live_rate") else "")
        rows.append((f"WIM reading → verdict at 500 readings/s{live}",
                     f"p50 {r['wim_p50_ms']:,.0f} ms, p99 {r['wim_p99_ms']:,.0f} ms"
                     + (f" (verdict sent by the worker: p50 {r['wim_published_p50_ms']:,.0f} ms, "
                        f"p99 {r['wim_published_p99_ms']:,.0f} ms)"
                        if r.get("wim_published_p99_ms") is not None else "")
                     + (f"; worker CPU {r['wim_cpu_ms_per_reading']:.2f} ms per reading"
                        if r.get("wim_cpu_ms_per_reading") is not None else "")
                     + ("" if quiet else " (the machine was saturated)")))
    if r.get("wim_machine_busy_cores") is not None:
        rows.append(("what the WIM part shared the machine with (the bench's own processes)",
                     f"{r['wim_machine_busy_cores']:.2f} cores busy; load generator "
                     f"{r.get('wim_generator_cpu_pct', float('nan')):.0f} % of a core"
                     + (f", embedded broker {r['wim_broker_cpu_pct']:.0f} %" if r.get("wim_broker_cpu_pct") is not None
                        else "")))
    if r.get("scale_wim_p99_ms") is not None:
        rows.append((f"the same through the {r.get('scale_workers')} workers of the scale-out part (one per core)",
                     f"p50 {r['scale_wim_p50_ms']:,.0f} ms, p99 {r['scale_wim_p99_ms']:,.0f} ms; the workers' CPU "
                     f"{r['scale_wim_cpu_ms_per_reading']:.2f} ms per reading"))
    if r.get("wim_after_burst_p99_ms") is not None:
        rows.append(("the same right after the 1 M-ping burst of the first line, while the worker commits it",
                     f"p50 {r['wim_after_burst_p50_ms']:,.0f} ms, p99 {r['wim_after_burst_p99_ms']:,.0f} ms"))
    if r.get("batch_rate_json_cpu"):
        rows.append(("batch `assess gps` from JSON lines (per CPU second; wall)",
                     f"{_k(r['batch_rate_json_cpu'])} ({_k(r['batch_rate_json'])}) pings/s"))
        rows.append(("batch `assess gps` from an Arrow IPC stream (per CPU second; wall)",
                     f"{_k(r['batch_rate_arrow_cpu'])} ({_k(r['batch_rate_arrow'])}) pings/s"))
    if r.get("worker_ready_s") is not None:
        rows.append(("worker ready on the embedded broker", f"{r['worker_ready_s']:.1f} s"))
    if r.get("bytes_per_vehicle"):
        rows.append(("live state per vehicle in the worker's heap (bench feed: 100 fixes a vehicle, late-data "
                     "window on; its held samples and replay checkpoints are in mapped files beside it)",
                     f"{r['bytes_per_vehicle']:,.0f} B"))
    out = [head, "", "| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="JSON written by roadwatch bench --out")
    ap.add_argument("--pg", help="the same with --archive postgresql://…")
    ap.add_argument("--readme", help="replace the figures block in this file")
    a = ap.parse_args(argv)
    r = json.loads(Path(a.bench).read_text())
    pg = json.loads(Path(a.pg).read_text()) if a.pg else None
    text = table(r, pg)
    if a.readme:
        p = Path(a.readme)
        doc = p.read_text(encoding="utf-8")
        if BEGIN not in doc or END not in doc:
            print(f"{p}: no {BEGIN} … {END} block", file=sys.stderr)
            return 2
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: f"{BEGIN}\n{text}\n{END}", doc,
                     flags=re.S)
        p.write_text(doc, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
