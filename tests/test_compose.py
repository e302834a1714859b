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


def test_two_workers_share_only_kafka_and_the_postgresql_archive():
    from urllib.parse import urlparse
    s = load()["services"]
    pg = s["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.startswith("postgres-data:") for v in pg["volumes"])
    workers = [n for n, svc in s.items() if svc.get("command") == ["worker"]]
    assert len(workers) == 2, workers
    data_volumes = set()
    for n in workers + ["migrate"]:
        env = s[n]["environment"]
        url = urlparse(env["ROADWATCH_ARCHIVE"].replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD for the archive}", "pw"))
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432, n
        assert url.username == pg["environment"]["POSTGRES_USER"] and url.path == "/" + pg["environment"]["POSTGRES_DB"]
        if n == "migrate":
            continue
        assert env["ROADWATCH_KAFKA"] == "kafka:9092"
        assert s[n]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        data = [v.split(":")[0] for v in s[n].get("volumes", []) if v.split(":")[1] == "/data"]
        assert len(data) == 1, n
        data_volumes.add(data[0])
        assert "paths.archive" not in env["ROADWATCH_SET"]      # no SQLite file of their own
    assert len(data_volumes) == 2                               # each worker its own data directory
    assert s["migrate"]["command"] == ["archive", "migrate"]
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert {f"{n}:6066" for n in workers} <= targets


def test_gateway_descriptor_limit_and_health():
    g = load()["services"]["gateway"]
    nofile = g["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] >= 50_000 + 64          # 50 000 terminals + gateway.fd_reserve
    assert "--metrics-port" in g["command"] and "/healthz" in " ".join(g["healthcheck"]["test"])


def test_platform_link_serves_809_with_its_credentials_as_a_secret():
    from roadwatch.models.config import Config
    from roadwatch.streams.jt809.platforms import load_platforms
    c = load()
    s = c["services"]
    link = s["platform-link"]
    assert link["command"][0] == "platform-link"
    assert "7809:7809" in link["ports"] and Config()["jt809.port"] == 7809      # the port it listens on by default
    assert link["environment"]["ROADWATCH_KAFKA"] == "kafka:9092"
    assert link["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert link["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert link["environment"]["ROADWATCH_ARCHIVE"] == s["worker"]["environment"]["ROADWATCH_ARCHIVE"]   # shared archive
    # its health check asks the metrics port it was told to serve
    port = link["command"][link["command"].index("--metrics-port") + 1]
    assert f"localhost:{port}/" in " ".join(link["healthcheck"]["test"])
    # the credentials: a secret, mounted where jt809.platforms_file points — for the link and the console
    mount = '/run/secrets/jt809-platforms'
    for name in ("platform-link", "worker", "worker-2"):
        assert "jt809-platforms" in s[name]["secrets"], name
        assert f'jt809.platforms_file="{mount}"' in s[name]["environment"]["ROADWATCH_SET"], name
    src = c["secrets"]["jt809-platforms"]["file"]
    default = src.split(":-", 1)[1].rstrip("}") if ":-" in src else src
    assert (ROOT / default).exists()
    assert load_platforms(Config({"jt809.platforms_file": str(ROOT / default)}))    # the example parses
