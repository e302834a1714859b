"""`roadwatch bench` starts its workers with the user's configuration: a single-key override given in
``ROADWATCH_SET`` reaches them (the bench adds its own data directory and ports, which win)."""
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
