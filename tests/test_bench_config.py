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
