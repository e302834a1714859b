"""Readings are append-only (issue 13 item 4): the same reading (same time and reading id) re-sent with other
values — 30 t, then 18 t — is kept beside the first and flagged as a conflict for review; the 6 000-yuan verdict
and case stay as they were (2-axle truck: limit 18 000 kg, 12 000 kg over → 12 × 500 yuan)."""
import io
import sys

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.cases import CaseStore
from roadwatch.streams.cli import main

from test_overload_helpers import registry_dict, vehicle

PLATE = "豫A11111"


def reading(gross, **kw):
    d = {"station_id": "S1", "lane": 1, "ts": "2025-03-10T10:00:00+08:00", "plate": PLATE, "plate_color": 2,
         "plate_confidence": 0.97, "vehicle_kind": "truck", "axle_count": 2,
         "axle_loads_kg": [7000, gross - 7000], "axle_spacings_m": [4.5], "gross_kg": gross, "speed_kmh": 60,
         "device_id": "W1", "reading_id": "R-0001"}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


@pytest.fixture
def run(tmp_path, monkeypatch, capsys, archive_target):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}"')
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(registry_dict(vehicles=[vehicle(PLATE, vehicle_kind="truck", axle_count=2,
                                                                 registered_total_kg=18000.0)])))
    arch = archive_target               # SQLite and PostgreSQL: the reading lookup is one query on both

    def assess(*readings):
        stdin = b"".join(orjson.dumps(r) + b"\n" for r in readings)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        assert main(["assess", "wim", "--registry", str(reg), "--archive", str(arch), "--evidence-dir",
                     str(tmp_path / "var" / "evidence")]) == 0
        return [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]

    yield assess, arch, tmp_path
    close_all()


def test_30t_then_18t_keeps_the_case_and_flags_the_conflict(run, capsys):
    assess, arch, tmp = run
    first, second = assess(reading(30000), reading(18000))
    assert first["action"] == "fine" and first["fine_yuan"] == 6000 and "conflict" not in first
    assert second["conflict"]["first"] == {"gross_kg": 30000.0, "action": "fine", "fine_yuan": 6000,
                                           "case_id": first["case_id"]}
    assert second["conflict"]["second"]["gross_kg"] == 18000.0
    conn = open_archive(arch)
    # the verdict is not overwritten, both readings are kept
    assert [tuple(r) for r in conn.execute("SELECT action, fine_yuan, case_id FROM wim_verdicts")] == [
        ("fine", 6000, first["case_id"])]
    kept = conn.execute("SELECT reading, conflict_of FROM wim_readings ORDER BY received_at").fetchall()
    assert [orjson.loads(r["reading"])["gross_kg"] for r in kept] == [30000.0, 18000.0]
    assert kept[0]["conflict_of"] is None and kept[1]["conflict_of"] is not None
    case = CaseStore(conn, Config()).show(first["case_id"])
    assert case["status"] == "detected" and case["fine_yuan"] == 6000
    assert [h["act"] for h in case["history"]] == ["detect", "conflict"]
    assert "30000.0 kg then 18000.0 kg" in case["history"][1]["reason"]
    assert case["conflicts"][0]["second"]["gross_kg"] == 18000.0
    # the case's evidence records the conflict as a signed chain entry, and still verifies
    capsys.readouterr()
    assert main(["evidence", "verify", str(tmp / "var" / "evidence")]) == 0
    # replaying both readings changes nothing
    again = assess(reading(30000), reading(18000))
    assert "conflict" not in again[0] and again[1]["conflict"]["conflict_of"] == second["conflict"]["conflict_of"]
    assert "first" not in again[1]["conflict"]          # known as the conflict received before, not a new one
    assert conn.execute("SELECT COUNT(*) FROM wim_readings").fetchone()[0] == 2
    assert len(CaseStore(conn, Config()).show(first["case_id"])["history"]) == 2


def test_18t_then_30t_opens_no_case_silently(run):
    assess, arch, _ = run
    first, second = assess(reading(18000), reading(30000))
    assert first["action"] == "none" and second["conflict"]["first"]["action"] == "none"
    conn = open_archive(arch)
    assert conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 0
    assert [r[0] for r in conn.execute("SELECT action FROM wim_verdicts")] == ["none"]
    (c,) = CaseStore(conn, Config()).conflicts()
    assert c["first"]["gross_kg"] == 18000.0 and c["second"]["gross_kg"] == 30000.0 and c["case_id"] is None


def test_without_a_reading_id_the_identity_is_station_plate_and_time(run):
    assess, arch, _ = run
    out = assess(reading(30000, reading_id=None), reading(18000, reading_id=None),
                 reading(30000, reading_id=None, ts="2025-03-10T11:00:00+08:00"))
    assert "conflict" in out[1] and "conflict" not in out[2] and out[2]["case_id"] != out[0]["case_id"]
