"""End to end: simulate a library scenario through the embedded broker and the real worker, then check.

Marked ``integration`` (~20 s): it starts Tansu and a ``roadwatch worker`` child.
"""
import os

import pytest

from roadwatch.streams.archive import close_all
from roadwatch.streams.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")), reason="uses the embedded broker")
def test_simulate_then_check_gps_curfew(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}";web.port=0')
    assert main(["simulate", "gps_curfew", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "feed.jsonl").stat().st_size > 0
    assert main(["scenario", "check", "gps_curfew"]) == 0
    assert "4 of 4 checks match" in capsys.readouterr().err
    close_all()


def test_record_then_replay_round_trip(tmp_path):
    import threading

    from roadwatch.models.config import Config
    from roadwatch.simulators.recording import read_records
    from roadwatch.simulators.record_cmd import record
    from roadwatch.simulators.replay import publish
    from roadwatch.simulators.scenario import build, load_scenario
    from roadwatch.streams.batcher import make_producer
    from roadwatch.streams.broker import EmbeddedBroker, create_topics

    built = build(load_scenario("wim_review"), Config())
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, Config())
        ready, stop, out = threading.Event(), threading.Event(), tmp_path / "rec.jsonl.gz"
        n = {}
        t = threading.Thread(target=lambda: n.setdefault("n", record(
            broker.bootstrap, ["wim-readings"], str(out), 30, False, stop=stop.is_set, ready=ready.set)))
        t.start()
        assert ready.wait(20)
        prod = make_producer(broker.bootstrap)
        publish(built.records, prod, None, progress=False)
        prod.close()
        import time
        time.sleep(3)                                  # the recorder polls every 200 ms
        stop.set()
        t.join(30)
    got = list(read_records(out))
    sent = [(r.topic, r.partition, r.key, r.value) for r in built.records]
    assert sorted((r.topic, r.partition, r.key, r.value) for r in got) == sorted(sent)


@pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")), reason="uses the embedded broker")
def test_a_broken_rule_makes_scenario_check_fail(tmp_path, monkeypatch, capsys):
    """The worker runs with a deviating Art. 43 rounding (ceil instead of the floor the scenario's
    expectations are written for): `scenario check` must notice and exit 1."""
    data = f'paths.data_dir="{tmp_path / "var"}";web.port=0'   # any free port: a demo may hold 6066
    monkeypatch.setenv("ROADWATCH_SET", data + ';overlimit.tonne_rounding="ceil"')
    assert main(["simulate", "wim_limits", "--out", str(tmp_path / "out")]) == 0
    monkeypatch.setenv("ROADWATCH_SET", data)
    capsys.readouterr()
    assert main(["scenario", "check", "wim_limits"]) == 1
    close_all()


@pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")), reason="uses the embedded broker")
def test_wim_escalation_officer_acts_give_the_escalations(tmp_path, monkeypatch, capsys):
    """The scenario officer signs in to the worker's console and takes the scripted cases to a decision on
    their legal dates; the Art. 66 escalations `roadwatch escalations` derives from those decisions match
    the scenario's derivation strictly. Withdrawing one of the repeat vehicle's decided cases (撤销) takes
    its escalation away, and the check says so."""
    import orjson
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}";web.port=0')
    assert main(["simulate", "wim_escalation", "--out", str(tmp_path / "out")]) == 0
    assert "scripted act(s) on 7 case(s)" in capsys.readouterr().err
    assert main(["scenario", "check", "wim_escalation"]) == 0
    assert "difference" not in capsys.readouterr().err
    archive = str(tmp_path / "var" / "archive.sqlite")
    assert main(["escalations", "--archive", archive, "--at", "2025-03-25"]) == 0
    esc = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sorted((e["target"], e["count"]) for e in esc) == [("driver", 4), ("enterprise", 2), ("vehicle", 4)]
    vehicle = next(e for e in esc if e["target"] == "vehicle")
    from officers import enrol
    enrol(monkeypatch, archive, "reviewer")          # a CLI act proves its officer (streams/officer_cli.py)
    assert main(["case", "act", vehicle["case_ids"][0], "withdraw", "--archive", archive, "--by", "reviewer",
                 "--reason", "撤销: wrong plate read", "--at", "2025-03-26"]) == 0
    capsys.readouterr()
    assert main(["scenario", "check", "wim_escalation"]) == 1
    out = capsys.readouterr().out
    assert f"vehicle {vehicle['subject']} at 2025-03-21" in out and "DIFF" in out
    close_all()


@pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")), reason="uses the embedded broker")
def test_province_week_passes_strictly_and_the_feed_reports_like_the_archive(tmp_path, monkeypatch, capsys):
    """The CI stand-in for the province month: 400 vehicles for a week with the province's settings
    through the real worker. No alert is expected and none may appear (strict); the derived rates, case
    totals and drift counts match; and the monthly report built from the feed file equals the one built
    from the archive (the GPS part — the feed path has no overload or JT/T 809 platform section)."""
    import orjson
    port = _free_port()
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}";web.port={port}')
    out = tmp_path / "out"
    assert main(["simulate", "province_week", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["scenario", "check", "province_week", "--from", str(out)]) == 0
    assert "difference" not in capsys.readouterr().err
    reports = []
    for src in (["--pings", str(out / "feed.jsonl")], ["--archive", str(tmp_path / "var" / "archive.sqlite")]):
        rep = tmp_path / f"rep{len(reports)}"
        assert main(["report", "monthly", "--month", "2025-03", "--registry", str(out / "registry.json"), *src,
                     "--out", str(rep), "--snapshot", "2025-04-01T00:00:00+08:00"]) == 0
        reports.append(orjson.loads((rep / "report.json").read_bytes()))
    archive_only = ("overload", "platforms", "case_review", "narrative")   # sections only an archive can fill, and the text
    feed, archive = ({k: v for k, v in r.items() if k not in archive_only} for r in reports)
    assert feed == archive
    assert feed["rates"]["online_rate"]["percent"] > 90
    close_all()


def _free_port() -> int:
    """A free port outside the ephemeral range (a port picked by bind(0) is soon reused by some client)."""
    import random
    import socket
    for _ in range(200):
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000–30000")
