"""`roadwatch simulate platform_link --platform-link` forwards a scenario's day through simulated JT/T 809
lower platforms (2011, 2019 encrypted, one that does not escape) into the real worker, with links lost
and 查岗 answered, late and missed; `roadwatch scenario check` then finds 平台连通率 and 查岗响应率 exactly as
the schedule implies — and reports a difference when the schedule it is given differs from what ran."""
from __future__ import annotations

import os

import pytest

from roadwatch.simulators.scenario import resolve
from roadwatch.streams.broker import free_port
from roadwatch.streams.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")),
                                                          reason="uses the embedded broker")]


def test_simulated_platforms_give_exact_connectivity_and_inspection_rates(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}";web.port={free_port()}')
    assert main(["simulate", "platform_link", "--platform-link"]) == 0
    capsys.readouterr()
    assert main(["scenario", "check", "platform_link", "--all"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.split()[1:2] == ["platform"]]
    assert len(rows) == 6 and all(ln.startswith("ok") for ln in rows), out
    assert "1350/44640 = 3.02%" in out and "2/3 = 66.67%" in out          # platform 20180920
    assert "0/3 = 0.0%" in out                                              # 20190708 answers late
    # the same archive checked against a schedule in which 20180920 was never lost: a difference
    other = tmp_path / "other.toml"
    other.write_text(resolve("platform_link").read_text(encoding="utf-8").replace(
        'offline = [["08:00", "09:30"]]', "offline = []"), encoding="utf-8")
    assert main(["scenario", "check", str(other)]) == 1
    out = capsys.readouterr().out
    assert "DIFF  platform" in out and "平台连通率 20180920" in out
