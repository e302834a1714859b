"""The monthly report computed from the live stream (the worker's archive) equals the report computed in batch
from the same pings (`report monthly --pings`): the same rates, numerators, denominators, breakdowns."""
from __future__ import annotations

import os

import orjson
import pytest
from kafka import KafkaProducer

from roadwatch.models.config import load_config
from roadwatch.streams import topics as T
from roadwatch.streams.broker import free_port
from roadwatch.streams.cli import main
from roadwatch.streams.runtime import stack
from tests.test_reliability_feed import (PARTITIONS, T0, build_gps_feed, build_registry, gps_records,
                                         override_string)

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")),
                                                          reason="uses the embedded broker")]
SNAPSHOT = "2026-12-01T00:00:00+08:00"


def _report(out_dir) -> dict:
    r = orjson.loads((out_dir / "report.json").read_bytes())
    return {k: r[k] for k in ("rates", "by_category", "by_enterprise", "by_county") if k in r}


def _strip(obj):
    """Drop what legitimately differs between the two runs (where the rows were read from)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("trace", "source")}
    if isinstance(obj, list):
        return [_strip(x) for x in obj]
    return obj


def test_stream_and_batch_reports_are_identical(tmp_path, monkeypatch):
    registry = build_registry(120)
    reg_path = tmp_path / "registry.json"
    registry.dump(reg_path)
    pings = build_gps_feed(120)
    month = T0.strftime("%Y-%m")
    settings = override_string() + f';paths.data_dir="{tmp_path / "var"}";web.port={free_port()}'
    monkeypatch.setenv("ROADWATCH_SET", settings)
    cfg = load_config(None)
    assert cfg["stream.partitions"] == PARTITIONS
    with stack(cfg, registry_path=str(reg_path)) as st:
        prod = KafkaProducer(bootstrap_servers=st.bootstrap, linger_ms=5)
        for p, key, value in gps_records(pings):
            md = prod.send(T.GPS_PINGS, key=key, value=value, partition=p).get(30)
            st.note_sent(md.topic, md.partition, md.offset)
        prod.close()
        assert st.wait_idle(120), "the worker did not consume the feed"
    # stream: the archive the worker wrote
    assert main(["report", "monthly", "--month", month, "--registry", str(reg_path), "--archive",
                 str(cfg.archive_path), "--out", str(tmp_path / "stream"), "--snapshot", SNAPSHOT]) == 0
    # batch: the same pings as JSON lines through the same engine
    pings_file = tmp_path / "pings.jsonl"
    pings_file.write_bytes(b"\n".join(orjson.dumps(p) for p in pings) + b"\n")
    assert main(["report", "monthly", "--month", month, "--registry", str(reg_path), "--pings",
                 str(pings_file), "--out", str(tmp_path / "batch"), "--snapshot", SNAPSHOT]) == 0
    stream, batch = _strip(_report(tmp_path / "stream")), _strip(_report(tmp_path / "batch"))
    population = set(cfg["report.categories"])      # 两客一危 only: 普通货车 are not in these rates
    expected = sum(1 for p in pings if registry.vehicles[p["plate"]].category in population)
    assert 0 < expected < len(pings)
    assert stream["rates"]["data_qualified_rate"]["denominator"] == expected
    assert stream == batch
