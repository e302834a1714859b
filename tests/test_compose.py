"""docker-compose.yml is not run here (no Docker engine); check its structure and wiring instead."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present_and_wired_by_name():
    c = load()
    s = c["services"]
    for name in ("kafka", "worker", "gateway", "simulator", "prometheus", "grafana"):
        assert name in s, name
    assert s["worker"]["environment"]["ROADWATCH_KAFKA"] == "kafka:9092"
    assert s["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    k = s["kafka"]["environment"]
    assert "controller" in k["KAFKA_PROCESS_ROLES"] and "broker" in k["KAFKA_PROCESS_ROLES"]   # KRaft
    assert "ZOOKEEPER" not in " ".join(k)
    assert k["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"


def test_every_service_has_an_image_or_build_and_volumes_exist():
    c = load()
    for name, svc in c["services"].items():
        assert "image" in svc or "build" in svc, name
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} missing"
            else:
                assert src in c.get("volumes", {}), f"{name}: named volume {src} not declared"


def test_prometheus_scrapes_the_worker_metrics():
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert "worker:6066" in targets
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in prom["scrape_configs"])


def test_grafana_dashboard_is_provisioned():
    prov = list((ROOT / "grafana" / "provisioning").rglob("*.y*ml"))
    assert prov, "no grafana provisioning files"
    dash = list((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert dash, "no dashboard json"
    import json
    d = json.loads(dash[0].read_text())
    exprs = " ".join(t.get("expr", "") for p in d["panels"] for t in p.get("targets", []))
    for metric in ("roadwatch_messages_total", "roadwatch_dead_letters_total", "roadwatch_alerts_total",
                   "roadwatch_processing_latency_seconds", "roadwatch_consumer_lag", "roadwatch_vehicles_online"):
        assert metric in exprs, metric


def test_dockerfile_entrypoint_is_the_cli():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["roadwatch"]' in text


def test_gateway_descriptor_limit_and_health():
    g = load()["services"]["gateway"]
    nofile = g["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] >= 50_000 + 64          # 50 000 terminals + gateway.fd_reserve
    assert "--metrics-port" in g["command"] and "/healthz" in " ".join(g["healthcheck"]["test"])
