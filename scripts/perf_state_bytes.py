"""Live state per vehicle of the worker's engines on the bench's feed (a script, not a test).

The feed of ``roadwatch bench`` (``streams.bench.synth_pings``: 10 000 vehicles, 1 M pings) cut as the worker
gets it: by Kafka's partitioner into ``stream.partitions`` partitions, 2 000-ping batches per partition, one
engine per partition with its replay window in files (``spill_dir``), a commit (snapshot capture, every
``stream.snapshot_full_every``-th one full) every 12 batches. Prints ``live_bytes_per_vehicle`` of each engine
(the bench's ``bytes_per_vehicle`` is the gauge of the last engine that committed), what makes it up, and the
CPU time of the loop. Run: ``.venv/bin/python scripts/perf_state_bytes.py [--pings N] [--vehicles V]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roadwatch.models.config import Config  # noqa: E402
from roadwatch.models.ping_state import PingProcessor  # noqa: E402
from roadwatch.models.pingschema import PingColumns  # noqa: E402
from roadwatch.models.registry import load_registry  # noqa: E402
from roadwatch.streams.batcher import partition_for  # noqa: E402
from roadwatch.streams.bench import _arrow_cols, bench_registry, synth_pings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pings", type=int, default=1_000_000)
    ap.add_argument("--vehicles", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--commit-every", type=int, default=12)
    ap.add_argument("--detail", action="store_true", help="bytes of every state array")
    args = ap.parse_args()
    cfg = Config()
    parts = int(cfg["stream.partitions"])
    full_every = int(cfg["stream.snapshot_full_every"])
    f = synth_pings(args.pings, args.vehicles)
    with tempfile.TemporaryDirectory(prefix="rw-state-bytes-") as tmp:
        reg_path = Path(tmp) / "registry.json"
        bench_registry(f, reg_path)
        reg = load_registry(reg_path)
        # the batches of each partition, in feed order (what the batcher sends)
        part = np.array([partition_for(p, parts) for p in f["plates"]])[f["vid"]]
        batches = []
        for p in range(parts):
            rows = np.flatnonzero(part == p)
            for lo in range(0, len(rows), args.batch):
                r = rows[lo:lo + args.batch]
                batches.append((p, r[0], r))
        batches.sort(key=lambda b: b[1])          # interleaved as they would arrive
        sub = {k: (v if not isinstance(v, list) else np.array(v, dtype=object))
               for k, v in _arrow_cols(f, 0, len(f["ts"])).items()}
        cols = [(p, PingColumns(**{k: (v[r].tolist() if v.dtype == object else v[r]) for k, v in sub.items()}))
                for p, _, r in batches]
        procs = {p: PingProcessor(cfg, reg, spill_dir=Path(tmp) / f"w{p}") for p in range(parts)}
        n_batches = dict.fromkeys(procs, 0)
        commits = dict.fromkeys(procs, 0)
        alerts = 0
        cpu_proc = cpu_commit = 0.0
        t0 = time.perf_counter()
        for p, c in cols:
            pr = procs[p]
            t = time.process_time()
            alerts += len(pr.process(c).alerts)
            cpu_proc += time.process_time() - t
            n_batches[p] += 1
            if n_batches[p] % args.commit_every == 0:
                t = time.process_time()
                cap = pr.snapshot_capture(segments="delta" if commits[p] % full_every else "full")
                cap.encode()
                cap.segment()
                pr.day_table(dirty_only=True)
                pr.sample_track()
                pr.stop_events()
                commits[p] += 1
                cpu_commit += time.process_time() - t
        wall = time.perf_counter() - t0
        total = sum(len(c) for _, c in cols)
        print(f"{total:,} pings, {args.vehicles:,} vehicles, {parts} partitions, batch {args.batch}: engine CPU "
              f"{cpu_proc:.2f} s ({total / cpu_proc:,.0f} pings/CPU s), commits CPU {cpu_commit:.2f} s, wall "
              f"{wall:.2f} s, alerts {alerts}")
        for p, pr in procs.items():
            ck = getattr(pr, "checkpoint_bytes_on_disk", lambda: 0)()
            arrays = sum(a.nbytes for a in pr.a.values() if not isinstance(a.base, np.memmap)
                         and not isinstance(a, np.memmap))
            plates = sys.getsizeof(pr.plates) + sum(sys.getsizeof(x) for x in pr.plates) + sys.getsizeof(pr.index)
            print(f"  partition {p}: {pr.n} vehicles, capacity {pr.cap}, row {pr.state_bytes_per_vehicle()} B; "
                  f"live {pr.live_bytes_per_vehicle():.0f} B/vehicle (arrays {arrays / pr.n:.0f}, plates+index "
                  f"{plates / pr.n:.0f}, held-sample heap {pr._spill.heap_bytes() / pr.n:.0f}); in files: held "
                  f"samples {pr.held_bytes_on_disk() / pr.n:.0f}, checkpoints {ck / pr.n:.0f} B/vehicle")
        if args.detail:
            pr = procs[0]
            rows = sorted(((a.nbytes / pr.cap, name, a.dtype, a.shape[1:]) for name, a in pr.a.items()),
                          reverse=True)
            for b, name, dt, shape in rows:
                print(f"    {name:18s} {str(dt):8s} {str(shape):10s} {b:7.1f}")
        for pr in procs.values():
            pr.close()


if __name__ == "__main__":
    main()
