"""``roadwatch scenario check``: exit 0 when the archive matches, 1 on any difference, 2 on bad input.

The archive rows are written by hand here as a correct system would produce them for the scenario (what
the regulation says should happen), not copied from our engine.
"""
import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.simulators.scenario import build, load_scenario
from roadwatch.streams import cases  # noqa: F401 - registers the case tables the archive gets
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.cli import main


def _alert(conn, typ, plate, start="2025-03-05T02:00:00+08:00"):
    conn.execute("INSERT INTO alerts (alert_id, type, plate, start_ts, severity, details, day, emitted_at) "
                 "VALUES (?, ?, ?, ?, 'high', '{}', ?, ?)", (f"{typ}|{plate}|{start}", typ, plate, start, start[:10], start))


@pytest.fixture
def curfew_archive(tmp_path):
    b = build(load_scenario("gps_curfew"), Config())
    path = tmp_path / "archive.sqlite"
    conn = open_archive(path)
    _alert(conn, "curfew", b.aliases["longdist"])        # the only vehicle the regulation stops at 02:00–05:00
    yield path, b, conn
    close_all()


def test_matching_archive_exits_0(curfew_archive, capsys):
    path, _, _ = curfew_archive
    assert main(["scenario", "check", "gps_curfew", "--archive", str(path), "--all"]) == 0
    out = capsys.readouterr()
    assert "ok" in out.out and "4 of 4 checks match" in out.err


def test_check_from_simulate_output_dir(curfew_archive, tmp_path):
    path, b, _ = curfew_archive
    out = tmp_path / "out"
    assert main(["simulate", "gps_curfew", "--out", str(out), "--no-publish"]) == 0
    assert main(["scenario", "check", "gps_curfew", "--archive", str(path), "--from", str(out)]) == 0
    assert main(["scenario", "check", "gps_curfew", "--archive", str(path), "--from", str(tmp_path / "nope")]) == 2


def test_wrong_expectation_exits_1(curfew_archive, tmp_path, capsys):
    path, _, _ = curfew_archive
    scn = (load_scenario("gps_curfew").path).read_text(encoding="utf-8")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(scn + '\n[[expect.alert]]\ntype = "curfew"\nvehicle = "longdist"\ncount = 2\n', encoding="utf-8")
    assert main(["scenario", "check", str(wrong), "--archive", str(path)]) == 1
    out = capsys.readouterr()
    assert "DIFF" in out.out and "1 difference" in out.err


def test_unexpected_and_missing_alerts_exit_1(curfew_archive, capsys):
    path, b, conn = curfew_archive
    _alert(conn, "overspeed", b.aliases["charter"])
    assert main(["scenario", "check", "gps_curfew", "--archive", str(path)]) == 1
    assert "unexpected alert" in capsys.readouterr().out
    conn.execute("DELETE FROM alerts")
    assert main(["scenario", "check", "gps_curfew", "--archive", str(path)]) == 1


def test_verdicts_and_unexpected_escalations(tmp_path, capsys):
    """Verdicts as the regulation gives them match; an Art. 66 escalation on a day the scenario asks about
    that no scripted decision leads to is a difference (strict)."""
    text = load_scenario("wim_escalation").path.read_text(encoding="utf-8")
    toml = tmp_path / "esc.toml"                  # the scenario without its officer script: no decision
    toml.write_text(text[:text.index("\n[[case_acts]]") + 1] + '[[expect.escalation]]\ntarget = "vehicle"\n'
                    'vehicle = "edge"\nat = "2025-03-18"\ncount = 0\n', encoding="utf-8")
    b = build(load_scenario(str(toml)), Config())
    path = tmp_path / "a.sqlite"
    conn = open_archive(path)
    exp = {e["plate"]: e["actions"] for e in b.expectations if e["kind"] == "verdicts"}
    n = 0
    for plate, acts in exp.items():
        v = b.registry.vehicles[plate]
        for i, (action, fine) in enumerate(acts):
            n += 1
            ts = f"2025-03-1{2 + i}T10:00:00+08:00"
            conn.execute("INSERT INTO wim_verdicts (passage_id, station_id, plate, ts, day, action, over_limit, "
                         "excess_kg, fine_yuan, review_reason, case_id, verdict) "
                         "VALUES (?,?,?,?,?,?,1,2500,?,NULL,?,'{}')",
                         (f"p{n}", "W001", plate, ts, ts[:10], action, fine, f"c{n}"))
            conn.execute("INSERT INTO cases (case_id, plate, station_id, ts, day, action, violation, excess_kg, "
                         "fine_yuan, enterprise_id, driver_id, status, manifest) VALUES (?,?,?,?,?,?,1,2500,?,?,?,"
                         "'detected','{}')", (f"c{n}", plate, "W001", ts, ts[:10], action, fine, v.enterprise_id,
                                              v.driver_id))
            conn.execute("INSERT INTO case_state (case_id, status, decided_on, driver_id, driver_source, "
                         "goods_vehicles, updated_at) VALUES (?, 'detected', NULL, ?, 'registry', 10, ?)",
                         (f"c{n}", v.driver_id, ts))
    try:
        assert main(["scenario", "check", str(toml), "--archive", str(path)]) == 0
        # five decided cases of another vehicle: an escalation nobody scripted
        edge = b.aliases["share_a"]
        for k in range(5):
            cid = f"x{k}"
            conn.execute("INSERT INTO cases (case_id, plate, station_id, ts, day, action, violation, excess_kg, "
                         "fine_yuan, enterprise_id, status, manifest) VALUES (?,?,'W001',?,?,'fine',1,2500,1000,"
                         "NULL,'decided','{}')", (cid, edge, f"2025-03-0{k + 1}T10:00:00+08:00",
                                                  f"2025-03-0{k + 1}"))
            conn.execute("INSERT INTO case_state (case_id, status, decided_on, driver_id, driver_source, "
                         "goods_vehicles, updated_at) VALUES (?, 'decided', '2025-03-10T00:00:00+08:00', NULL, "
                         "'unknown', NULL, '2025-03-10T00:00:00+08:00')", (cid,))
            for seq, (act, day) in enumerate((("confirm", 6), ("file", 6), ("notify", 6), ("decide", 10)), 1):
                at = f"2025-03-{day:02d}T00:00:00+08:00"
                conn.execute("INSERT INTO case_acts (act_id, case_id, seq, action, by_officer, at, entered_at) "
                             "VALUES (?,?,?,?,?,?,?)", (f"{cid}:{act}", cid, seq, act, "officer", at, at))
        assert main(["scenario", "check", str(toml), "--archive", str(path)]) == 1
        out = capsys.readouterr().out
        assert f"vehicle {edge} at 2025-03-18" in out and "unexpected Art. 66 escalation" in out
    finally:
        close_all()


def test_missing_archive_and_unknown_scenario_exit_2(tmp_path, capsys):
    assert main(["scenario", "check", "gps_curfew", "--archive", str(tmp_path / "nope.sqlite")]) == 2
    assert main(["scenario", "check", "no_such_scenario", "--archive", str(tmp_path / "x")]) == 2
    assert "scenario not found" in capsys.readouterr().err


def test_tolerated_extra_needs_a_reason_and_is_shown(curfew_archive, tmp_path, capsys):
    path, b, conn = curfew_archive
    _alert(conn, "overspeed", b.aliases["charter"])
    scn = (load_scenario("gps_curfew").path).read_text(encoding="utf-8")
    ok = tmp_path / "tolerant.toml"
    ok.write_text(scn + '\n[[expect.tolerate]]\ntype = "overspeed"\nvehicle = "charter"\n'
                  'reason = "the charter\'s speed is not scripted here"\n', encoding="utf-8")
    assert main(["scenario", "check", str(ok), "--archive", str(path), "--all"]) == 0
    assert "tolerated: the charter's speed is not scripted here" in capsys.readouterr().out
    other = tmp_path / "other.toml"            # tolerating another vehicle does not cover this one
    other.write_text(scn + '\n[[expect.tolerate]]\ntype = "overspeed"\nvehicle = "longdist"\nreason = "x"\n',
                     encoding="utf-8")
    assert main(["scenario", "check", str(other), "--archive", str(path)]) == 1
    bare = tmp_path / "bare.toml"
    bare.write_text(scn + '\n[[expect.tolerate]]\ntype = "overspeed"\n', encoding="utf-8")
    assert main(["scenario", "check", str(bare), "--archive", str(path)]) == 2
    lax = tmp_path / "lax.toml"
    lax.write_text(scn.replace("[expect]", "[expect]\nstrict_alerts = false", 1) if "[expect]" in scn
                   else scn + "\n[expect]\nstrict_alerts = false\n", encoding="utf-8")
    assert main(["scenario", "check", str(lax), "--archive", str(path)]) == 2


def test_a_case_in_a_scenario_without_passages_is_a_difference(curfew_archive, capsys):
    path, b, conn = curfew_archive
    conn.execute("INSERT INTO wim_verdicts (passage_id, station_id, plate, ts, day, action, over_limit, excess_kg, "
                 "fine_yuan, verdict) VALUES ('W001|x|1', 'W001', ?, '2025-03-05T10:00:00+08:00', '2025-03-05', "
                 "'fine', 1, 2500, 1000, '{}')", (b.aliases["charter"],))
    assert main(["scenario", "check", "gps_curfew", "--archive", str(path)]) == 1
    assert "unexpected WIM verdict" in capsys.readouterr().out
