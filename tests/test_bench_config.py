"""`roadwatch bench`: its workers start with the user's configuration (a single-key override given in
``ROADWATCH_SET`` reaches them; the bench adds its own data directory and ports, which win), and what part (c)
reports of the machine's other load reads the right processes and counters."""
from __future__ import annotations

from roadwatch.models.config import load_config
from roadwatch.streams import bench


def test_bench_workers_keep_the_users_single_key_overrides(monkeypatch):
    monkeypatch.setattr(bench, "_USER_SET", "stream.gps_coalesce_pings=1;web.port=9")
    cfg = load_config(None, env={"ROADWATCH_SET": bench._set_for('paths.data_dir="/tmp/x";web.port=7001')})
    assert cfg["stream.gps_coalesce_pings"] == 1
    assert cfg["web.port"] == 7001 and str(cfg["paths.data_dir"]) == "/tmp/x"
    monkeypatch.setattr(bench, "_USER_SET", " ")
    assert bench._set_for("web.port=7001") == "web.port=7001"


def test_the_machine_cpu_reader_counts_busy_cores():
    """``machine_cpu_s`` (part (c)'s "cores busy"): with every core spinning, the busy time grows at least by
    the CPU time the spinners used (the kernel's count of them, ``getrusage``), and idle time hardly at all."""
    import os
    import resource
    import subprocess
    import sys
    spin = "import time\ne = time.process_time() + 0.4\nwhile time.process_time() < e: pass"
    r0, (busy0, all0) = resource.getrusage(resource.RUSAGE_CHILDREN), bench.machine_cpu_s()
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count())]
    for p in procs:
        p.wait()
    r1, (busy1, all1) = resource.getrusage(resource.RUSAGE_CHILDREN), bench.machine_cpu_s()
    spent = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    assert spent >= 0.4 * os.cpu_count() * 0.9
    assert busy1 - busy0 >= 0.9 * spent          # tick resolution (10 ms) aside
    assert all1 - all0 >= busy1 - busy0 - 0.02    # float rounding of the two differences


def test_the_embedded_broker_is_found_as_this_process_child():
    from roadwatch.streams.broker import EmbeddedBroker
    assert bench.embedded_broker_pid() is None
    with EmbeddedBroker() as broker:
        assert bench.embedded_broker_pid() == broker.proc.pid


def test_part_c_times_each_overloaded_readings_verdict_and_the_trace_lists_them(tmp_path):
    """Part (c) against a stand-in for the worker on the embedded broker, which answers each overloaded
    reading with a verdict 60 ms after it arrived: one timed verdict per overloaded reading, each at least
    that late; ``--wim-trace`` writes exactly those, in the order they were sent."""
    import csv
    import threading
    import time
    import orjson
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from roadwatch.models.config import Config
    from roadwatch.streams import topics as T
    from roadwatch.streams.broker import EmbeddedBroker, create_topics
    delay_s = 0.06
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, Config({"stream.partitions": 2}))
        stop, ready = threading.Event(), threading.Event()

        def worker_stand_in():
            # its partitions assigned, not joined as a group: a group's join took ~20 s on the embedded broker
            cons = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest",
                                 fetch_max_wait_ms=20)
            cons.assign([TopicPartition(T.WIM_READINGS, p) for p in range(2)])
            prod = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
            cons.poll(timeout_ms=200)
            ready.set()
            while not stop.is_set():
                for recs in cons.poll(timeout_ms=50).values():
                    for r in recs:
                        reading = orjson.loads(r.value)
                        if reading["gross_kg"] > 18_000:        # the bench's overloaded trucks
                            time.sleep(max(0.0, r.timestamp / 1000 + delay_s - time.time()))
                            prod.send(T.OVERLOAD_CASES, orjson.dumps({"plate": reading["plate"]}))
                prod.flush()
            cons.close()
            prod.close()

        th = threading.Thread(target=worker_stand_in, daemon=True)
        th.start()
        assert ready.wait(30)
        try:
            c = bench.part_c(broker.bootstrap, rate=100, seconds=2.0, fetch_wait_ms=20)
        finally:
            stop.set()
            th.join(10)
    assert c.verdicts == len(c.samples) == 20                # one reading in ten is overloaded
    sent = [s[0] for s in c.samples]
    assert sent == sorted(sent) and sent[0] == 0.0 and 1.7 < sent[-1] < 2.0
    assert all(lat >= delay_s * 1000 - 1 for _, lat, _ in c.samples)
    assert all(delay_s * 1000 - 1 <= pub <= lat for _, lat, pub in c.samples)
    assert c.p99 >= c.p50 >= delay_s * 1000 - 1
    trace = tmp_path / "trace.csv"
    bench.write_trace(trace, "c", c)
    rows = list(csv.DictReader(trace.open(encoding="utf-8")))
    assert [(float(r["sent_s"]), float(r["verdict_ms"])) for r in rows] == \
        [(round(s[0], 4), round(s[1], 2)) for s in c.samples]
    assert {r["part"] for r in rows} == {"c"}


def test_the_trace_picture_has_a_dot_per_verdict_and_counts_those_over_the_goal(tmp_path):
    """scripts/wim-trace-svg.py: one dot per timed verdict of the chosen part, and per file how many were over
    the 200 ms goal."""
    import importlib.util
    import re
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "wim_trace_svg", Path(__file__).resolve().parents[1] / "scripts" / "wim-trace-svg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    f = tmp_path / "t.csv"
    f.write_text("part,sent_s,verdict_ms,sent_by_worker_ms\n"
                 "c1,0.0,900.0,800.0\nc,0.0,120.0,90.0\nc,0.5,250.0,200.0\nc,1.0,199.0,150.0\n", encoding="utf-8")
    pts = mod.read(str(f), "c")
    assert pts == [(0.0, 120.0), (0.5, 250.0), (1.0, 199.0)]
    out = mod.svg([("run", pts), ("again", pts[:1])])
    assert len(re.findall(r'<circle [^>]*r="2"', out)) == 4
    assert "1 of 3 over the goal" in out and "0 of 1 over the goal" in out
