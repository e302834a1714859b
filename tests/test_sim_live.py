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
