"""Batch inputs: a scenario feed and JSON lines of the same pings give the same result; input that cannot
honestly support a result is refused with exit 2 and one line saying why (streams/feed_input.py)."""
import gzip
import io
import sys

import orjson
import pytest

from roadwatch.simulators.recording import read_records
from roadwatch.streams.cli import main
from roadwatch.streams.feed_input import ping_lines


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "gps_track", "--out", str(out), "--no-publish"]) == 0
    lines = [ln for r in read_records(out / "feed.jsonl") if r.topic == "gps-pings" for ln in ping_lines(r.value)]
    (out / "pings.jsonl").write_bytes(b"".join(lines))
    return out


def _report(tmp_path, sim, pings, *extra):
    out = tmp_path / "rep"
    code = main(["report", "monthly", "--month", "2025-03", "--registry", str(sim / "registry.json"),
                 "--pings", str(pings), "--out", str(out), "--snapshot", "2025-04-01T00:00:00+08:00", *extra])
    return code, (orjson.loads((out / "report.json").read_bytes()) if code == 0 else None)


def test_feed_and_json_lines_give_the_same_report(sim, tmp_path, capsys):
    code_f, rep_f = _report(tmp_path / "a", sim, sim / "feed.jsonl")
    code_l, rep_l = _report(tmp_path / "b", sim, sim / "pings.jsonl")
    assert code_f == code_l == 0
    assert rep_f == rep_l
    assert rep_f["rates"]["online_rate"]["percent"] > 0
    gz = tmp_path / "feed.jsonl.gz"                    # a gzipped feed (simulate --gzip) reads the same
    gz.write_bytes(gzip.compress((sim / "feed.jsonl").read_bytes()))
    assert _report(tmp_path / "c", sim, gz)[1] == rep_f


@pytest.mark.parametrize("wrong", ["registry.json", "expectations.json", "empty"])
def test_a_wrong_file_is_refused_with_exit_2_and_a_reason(sim, tmp_path, capsys, wrong):
    path = sim / wrong if wrong != "empty" else tmp_path / "empty.jsonl"
    if wrong == "empty":
        path.write_bytes(b"\n")
    code, _ = _report(tmp_path, sim, path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "rejected" in err[-1] or "no GPS pings could be read" in err[-1]
    assert not (tmp_path / "rep" / "report.json").exists()


def test_a_feed_without_pings_is_refused(sim, tmp_path, capsys):
    wim_only = tmp_path / "wim.jsonl"
    wim_only.write_bytes(b"".join(ln for ln in (sim / "feed.jsonl").read_bytes().splitlines(keepends=True)
                                  if b'"gps-pings"' not in ln))
    code, _ = _report(tmp_path, sim, wim_only)
    assert code == 2
    assert "no GPS pings could be read from this feed" in capsys.readouterr().err


def test_a_feed_of_another_month_is_refused(sim, tmp_path, capsys):
    """Every ping reads fine but none lies in the month asked for: no report built on nothing."""
    out = tmp_path / "rep"
    code = main(["report", "monthly", "--month", "2025-04", "--registry", str(sim / "registry.json"),
                 "--pings", str(sim / "feed.jsonl"), "--out", str(out), "--snapshot", "2025-05-01T00:00:00+08:00"])
    assert code == 2
    assert "no ping of it lies in 2025-04 (its data covers 2025-03-07" in capsys.readouterr().err
    assert not (out / "report.json").exists()


def test_rejected_share_is_configurable(sim, tmp_path, monkeypatch, capsys):
    lines = (sim / "pings.jsonl").read_bytes().splitlines(keepends=True)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"".join(lines[:20] + [b'{"plate": 1}\n'] * 5))       # 5 of 25 rejected = 20 %
    code, _ = _report(tmp_path / "a", sim, mixed)
    assert code == 2 and "5 of 25 GPS pings rejected (20.0% > input.max_rejected_share 1.0%)" in capsys.readouterr().err
    monkeypatch.setenv("ROADWATCH_SET", "input.max_rejected_share=0.25")
    code, rep = _report(tmp_path / "b", sim, mixed)
    assert code == 0 and rep["rates"]["online_rate"]["percent"] > 0


def test_assess_gps_reads_a_feed_on_stdin(sim, monkeypatch, capsysbinary):
    outs = []
    for f in ("feed.jsonl", "pings.jsonl"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((sim / f).read_bytes())))
        assert main(["assess", "gps", "--registry", str(sim / "registry.json")]) == 0
        outs.append(capsysbinary.readouterr().out)
    assert outs[0] == outs[1]
    assert b'"offline"' in outs[0]                 # gps_track scripts one offline terminal
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((sim / "registry.json").read_bytes())))
    assert main(["assess", "gps", "--registry", str(sim / "registry.json")]) == 2


def test_assess_wim_reads_a_feed_on_stdin(tmp_path, monkeypatch, capsysbinary):
    out = tmp_path / "wim"
    assert main(["simulate", "wim_source_site", "--out", str(out), "--no-publish"]) == 0
    n = sum(1 for r in read_records(out / "feed.jsonl") if r.topic == "wim-readings")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((out / "feed.jsonl").read_bytes())))
    assert main(["assess", "wim", "--registry", str(out / "registry.json"), "--pings", str(out / "feed.jsonl")]) == 0
    verdicts = [orjson.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    assert n > 0 and len(verdicts) == n and all("action" in v for v in verdicts)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["assess", "wim", "--registry", str(out / "registry.json")]) == 2
    assert b"no WIM readings could be read" in capsysbinary.readouterr().err


def _arrow_stream_files(sim, tmp_path):
    """The feed's ping records as binary files: their values concatenated (one IPC stream per record, as
    on the topic), and one IPC stream holding every batch (what pyarrow's or polars' writers produce)."""
    import pyarrow as pa
    vals = [r.value for r in read_records(sim / "feed.jsonl") if r.topic == "gps-pings"]
    assert vals and all(v[:4] == b"\xff\xff\xff\xff" for v in vals)      # simulate writes the Arrow form
    concat = tmp_path / "concat.arrows"
    concat.write_bytes(b"".join(vals))
    batches = [pa.ipc.open_stream(v).read_next_batch() for v in vals]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as w:
        for b in batches:
            w.write_batch(b)
    one = tmp_path / "one.arrows"
    one.write_bytes(sink.getvalue().to_pybytes())
    return concat, one


def test_an_arrow_ipc_stream_file_gives_the_same_report_and_alerts(sim, tmp_path, monkeypatch, capsysbinary):
    concat, one = _arrow_stream_files(sim, tmp_path)
    rep_f = _report(tmp_path / "f", sim, sim / "feed.jsonl")[1]
    for i, path in enumerate((concat, one)):
        code, rep = _report(tmp_path / f"r{i}", sim, path)
        assert code == 0 and rep == rep_f
    capsysbinary.readouterr()
    outs = []
    for data in ((sim / "feed.jsonl").read_bytes(), one.read_bytes()):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert main(["assess", "gps", "--registry", str(sim / "registry.json")]) == 0
        outs.append(capsysbinary.readouterr().out)
    assert outs[0] == outs[1] and b'"offline"' in outs[0]


def test_a_broken_arrow_stream_is_refused(sim, tmp_path, capsys):
    concat, one = _arrow_stream_files(sim, tmp_path)
    cut = tmp_path / "cut.arrows"
    cut.write_bytes(one.read_bytes()[: one.stat().st_size // 2])     # a copy taken while it was written
    code, _ = _report(tmp_path / "a", sim, cut)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Arrow IPC stream cannot be read to its end" in err[-1]
    trailing = tmp_path / "trailing.arrows"
    trailing.write_bytes(concat.read_bytes() + b"\xff\xff\xff\xffjunk")
    assert _report(tmp_path / "b", sim, trailing)[0] == 2
