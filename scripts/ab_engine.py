"""A/B equivalence of two builds of the engine (a script, not a test): the same feed — the bench's
``synth_pings`` with 3 % of the fixes 1–80 batches late (half marked re-uploads), 1 % sent twice, drivers
changing, alarm words — through ``PingProcessor`` with the window in memory and in files, a capture every 12
batches (full every sixth), then a restore from the last capture that goes on. Dumps every batch's output, the
drains (day rows, track points, stops) and digests of every snapshot blob and segment.

    git worktree add ../roadwatch-ref main            # the build to compare against
    mkdir -p /tmp/ref /tmp/new && ln -s "$PWD/../roadwatch-ref" /tmp/ref/roadwatch && ln -s "$PWD" /tmp/new/roadwatch
    .venv/bin/python scripts/ab_engine.py run /tmp/ref ref.pkl 2500 600000
    .venv/bin/python scripts/ab_engine.py run /tmp/new new.pkl 2500 600000
    .venv/bin/python scripts/ab_engine.py compare ref.pkl new.pkl

(``ROOT/roadwatch`` must be the package to test: ROOT goes first on ``sys.path``.)
"""
import hashlib
import pickle
import sys
import tempfile
import time


def run(root, out, V, N):
    sys.path.insert(0, root)
    import numpy as np
    import roadwatch
    assert roadwatch.__path__[0].startswith(root), roadwatch.__path__
    from roadwatch.streams import bench
    bench.time.time = lambda: 1_790_000_000.0
    from roadwatch.models.config import Config
    from roadwatch.models.ping_state import PingProcessor
    from roadwatch.models.pingschema import PingColumns
    from roadwatch.models.registry import load_registry
    from pathlib import Path
    B = 2000
    f = bench.synth_pings(N, V, seed=11)
    rng = np.random.default_rng(11)
    n = len(f["ts"]); key = np.arange(n, dtype=np.float64)
    late = rng.random(n) < 0.03
    key[late] += rng.integers(B, 80 * B, late.sum())
    dup = np.flatnonzero(rng.random(n) < 0.01)
    idx = np.concatenate([np.arange(n), dup]); key = np.concatenate([key, dup + rng.integers(B, 20 * B, len(dup))])
    srt = np.argsort(key, kind="stable"); order = idx[srt]
    reup = np.concatenate([late & (rng.random(n) < 0.5), np.zeros(len(dup), bool)])[srt]
    drv = np.array([None, "D1", "D2"], dtype=object)
    def cols(lo, hi):
        o = order[lo:hi]; m = len(o)
        return PingColumns(plate=[f["plate"][i] for i in o.tolist()], terminal_id=["T"] * m,
            plate_color=np.full(m, 2, np.int64), ts=f["ts"][o], lat=f["lat"][o], lon=f["lon"][o],
            speed_kmh=np.round(f["speed"][o], 1), heading=np.full(m, 90), altitude_m=np.full(m, 20.0),
            alarm_flags=(o % 997 == 0).astype(np.int64) * 3, status_flags=np.full(m, 3, np.int64),
            reupload=reup[lo:hi], driver_id=drv[(f["vid"][o] // 7 + o // 400000) % 3].tolist(), mileage_km=[None] * m)
    res = {}
    t_all = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        bench.bench_registry(f, Path(tmp) / "r.json"); reg = load_registry(Path(tmp) / "r.json")
        for mode in ("mem", "disk"):
            pr = PingProcessor(Config(), reg, spill_dir=(Path(tmp) / "w") if mode == "disk" else None)
            outs, snaps, segs, k = [], [], [], 0
            cut = len(order) * 3 // 4
            t0 = time.process_time()
            for lo in range(0, cut, B):
                o = pr.process(cols(lo, lo + B))
                outs.append(pickle.dumps(vars(o)))
                k += 1
                if k % 12 == 0:
                    cap = pr.snapshot_capture(segments="full" if k % 72 == 12 else "delta")
                    blob, seg = cap.encode(compress=False), cap.segment()
                    if k % 72 == 12: segs = []
                    segs.append(seg)
                    snaps.append((hashlib.sha256(blob).hexdigest(), hashlib.sha256(seg).hexdigest()))
                    outs.append(pickle.dumps((pr.day_rows(), pr.sample_track(), pr.stop_events())))
                    last_blob, last_segs, last_lo = blob, list(segs), lo + B
            t_all += time.process_time() - t0
            whole = pr.snapshot(compress=False)
            snaps.append(hashlib.sha256(whole).hexdigest())
            back = PingProcessor.restore(Config(), reg, None, last_blob, last_segs,
                                         spill_dir=(Path(tmp) / "r") if mode == "disk" else None)
            for lo in range(last_lo, len(order), B):
                o = back.process(cols(lo, lo + B)); outs.append(pickle.dumps(vars(o)))
            outs.append(pickle.dumps((back.day_rows(dirty_only=False), back.sample_track())))
            snaps.append(hashlib.sha256(back.snapshot(compress=False)).hexdigest())
            res[mode] = (outs, snaps, sum(len(pickle.loads(x).get("alerts", [])) for x in outs[:5]))
            print(mode, "batches", k, "live B/veh", round(pr.live_bytes_per_vehicle()), "replayed",
                  sum(pickle.loads(x)["replayed"] for x in outs if isinstance(pickle.loads(x), dict)), file=sys.stderr)
    print("engine CPU", round(t_all, 2), file=sys.stderr)
    pickle.dump(res, open(out, "wb"))


def compare(pa, pb):
    a, b = (pickle.load(open(p, "rb")) for p in (pa, pb))
    for mode in a:
        oa, sa, _ = a[mode]; ob, sb, _ = b[mode]
        print(mode, "outputs", len(oa), "identical" if oa == ob else "DIFFER", "| snapshots", len(sa),
              "identical" if sa == sb else "DIFFER")
        if oa != ob:
            print(" first differing output", next(i for i, (x, y) in enumerate(zip(oa, ob)) if x != y))
    print("in memory vs in files (second build):", b["mem"][0] == b["disk"][0], b["mem"][1] == b["disk"][1])


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        compare(sys.argv[2], sys.argv[3])
