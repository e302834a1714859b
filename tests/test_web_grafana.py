"""Grafana dashboard + provisioning and the Prometheus scrape config are consistent with each other and
with the metric names the worker exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASH = json.loads((ROOT / "grafana/dashboards/roadwatch.json").read_text(encoding="utf-8"))
PANELS = [p for p in DASH["panels"] if p["type"] != "row"]
EXPRS = [t["expr"] for p in PANELS for t in p["targets"]]

# metric → labels the brief names for it (each must be aggregated "by" those labels somewhere)
REQUIRED = {
    "roadwatch_messages_total": {"topic", "direction"},
    "roadwatch_dead_letters_total": {"source", "reason"},
    "roadwatch_alerts_total": {"type"},
    "roadwatch_cases_total": {"action"},
    "roadwatch_processing_latency_seconds_bucket": {"le"},
    "roadwatch_consumer_lag": {"topic", "partition"},
    "roadwatch_vehicles_online": set(),
    "roadwatch_intercept_rate_ratio": {"station"},          # 拦截率 (docs/intercept.md)
    "roadwatch_enforcement_rate_ratio": {"station"},        # 查处率
    "roadwatch_intercept_month_tasks": {"station", "status"},
    "roadwatch_archive_log_uncopied_frames": set(),          # SQLite's log (docs/operations.md)
    "roadwatch_archive_log_frames": set(),
}


def _by_labels(expr: str) -> set[str]:
    return {lab.strip() for m in re.finditer(r"by \(([^)]*)\)", expr) for lab in m.group(1).split(",")}


def test_every_required_metric_has_a_panel_with_its_labels():
    for metric, labels in REQUIRED.items():
        using = [e for e in EXPRS if re.search(rf"\b{metric}\b", e)]
        assert using, metric
        assert any(labels <= _by_labels(e) for e in using), (metric, labels)
    # latency is shown as quantiles from the histogram
    assert any("histogram_quantile(0.95" in e for e in EXPRS)


def test_exprs_are_balanced_and_counters_use_rate_or_increase():
    for e in EXPRS:
        for o, c in ("()", "[]", "{}"):
            depth = 0
            for ch in e:
                depth += (ch == o) - (ch == c)
                assert depth >= 0, e
            assert depth == 0, e
        for counter in re.findall(r"\b(roadwatch_\w+_total)\b", e):
            assert re.search(rf"(rate|increase)\(\s*{counter}", e), e


def test_layout_ids_and_datasource():
    ids = [p["id"] for p in DASH["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in DASH["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (src,) = ds["datasources"]
    assert all(p["datasource"]["uid"] == src["uid"] for p in PANELS)
    assert src["type"] == "prometheus" and src["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/roadwatch.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DASH["uid"] == "roadwatch"


def test_prometheus_scrapes_the_worker():
    cfg = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert all(j["metrics_path"] == "/metrics" for j in jobs.values())
    targets = {t for j in jobs.values() for sc in j["static_configs"] for t in sc["targets"]}
    assert "worker:6066" in targets or {"worker-a:6066", "worker-b:6066"} <= targets
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for t in targets:     # every scrape target is a compose service
        assert t.split(":")[0] in compose["services"], t
