"""JSON lines of pings read in blocks by Arrow's JSON reader (models/pingjson.py, streams/feed_input.py):
the same columns, the same rejected lines (reason, detail, file line number) and the same alerts as the
per-line path, for clean input, input with every kind of bad line, and blocks that the guards refuse."""
from __future__ import annotations

import dataclasses
import io
import sys

import numpy as np
import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.pingjson import LineErrors, block_table, parse_lines
from roadwatch.models.records import epoch_ms_to_iso
from roadwatch.streams import feed_input
from roadwatch.streams.assess_gps import run_pings
from roadwatch.streams.cli import main
from test_gps_support import T0, north, ping

NOW = T0 + 86_400_000


def _feed(n: int = 1200) -> list[dict]:
    """Four vehicles driving north, some over the limit; optional fields present on some pings only."""
    out = []
    for k in range(n):
        v = k % 4
        p = ping(T0 + k * 5_000, lat=north(22.5, 0.03 * k), speed=95.0 if v == 1 else 50.0 + v,
                 plate=f"粤B1234{v}", alarm_flags=0, status_flags=3, reupload=False)
        if k % 3 == 0:
            p["recv_ts"] = p["ts"] + 700
        if k % 5 == 0:
            p.update(driver_id="D-1", mileage_km=1000.5 + k, jt808_version=2013, extra={"nested": [1, {"x": None}]})
        out.append(p)
    return out


BAD = [b"not json", b"[1,2]", b"null", b"{}", b'{"plate": 1}', b"   ", b"", b'{"plate":"\xff\xfe"}',
       b'{"lat": NaN}']


def _bad_lines(good: dict) -> list[bytes]:
    d = orjson.dumps
    return BAD + [d(dict(good, lat="north")), d(dict(good, speed_kmh=9999.0)), d(dict(good, ts=1)),
                  d(dict(good, plate="")), d(dict(good, reupload="yes")), d(dict(good, heading=1.5)),
                  d(dict(good, ts="2026-02-30T00:00:00+08:00")), d(dict(good, ts="2026-03-02 10:00:00")),
                  d(good) + b" " + d(good), d(dict(good, plate_color=None)),
                  # what a laxer reader would turn into text (Polars' NDJSON reader does: docs/performance.md,
                  # round 12): a number, a list or an object where a string belongs, a lone surrogate escape
                  d(dict(good, plate=5)), d(dict(good, terminal_id=["T1"])), d(dict(good, terminal_id={"k": 1})),
                  d(dict(good, plate="X")).replace(b'"X"', b'"\\ud800"')]


def _variants() -> dict[str, bytes]:
    feed = _feed()
    plain = [orjson.dumps(p) for p in feed]
    iso = [orjson.dumps(dict(p, ts=epoch_ms_to_iso(p["ts"]), **({"recv_ts": epoch_ms_to_iso(p["recv_ts"])}
                                                               if "recv_ts" in p else {}))) for p in feed]
    out = {"epoch": plain, "iso": iso, "crlf": [x + b"\r" for x in plain],
           "heading_as_float": [orjson.dumps(dict(p, heading=90.0)) for p in feed]}
    rng = np.random.default_rng(5)
    for name in list(out):
        mixed = list(out[name])
        for b in _bad_lines(feed[7]):
            mixed.insert(int(rng.integers(1, len(mixed))), b)
        out[name + "+bad"] = mixed
    return {k: b"\n".join(v) + b"\n" for k, v in out.items()} | {"no_final_newline": b"\n".join(plain[:50])}


def _per_line(data: bytes, batch: int):
    """The reference: the per-line parser over batches of non-blank lines, numbered in the file."""
    nos = [i for i, ln in enumerate(io.BytesIO(data), 1) if ln.strip()]
    lines = [ln for ln in io.BytesIO(data) if ln.strip()]
    out, errors = [], LineErrors()
    for s in range(0, len(lines), batch):
        c = parse_lines(lines[s:s + batch], s + 1, errors)
        if c is not None:
            out.append(c)
    return out, sorted((dict(e, line=nos[e["line"] - 1]) for e in errors), key=lambda e: e["line"])


def _blocks(data: bytes, batch: int):
    chk = feed_input.InputCheck("t", feed_input.PINGS, 1.0)
    got = list(feed_input.read_lines(io.BufferedReader(io.BytesIO(data)), feed_input.PINGS, chk, columns=True,
                                     json_batch=batch))
    return got, chk


def _same(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x is None or y is None:
            assert x is None and y is None, f.name
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        else:
            assert list(x) == list(y) and list(map(type, x)) == list(map(type, y)), f.name


@pytest.mark.parametrize("block_bytes", [4 << 20, 20_000, 3_000])
@pytest.mark.parametrize("batch", [8000, 7, 250])
def test_blocks_give_the_columns_and_rejects_of_the_per_line_path(monkeypatch, block_bytes, batch):
    monkeypatch.setattr(feed_input, "JSON_BLOCK_BYTES", block_bytes)
    for name, data in _variants().items():
        want, want_errors = _per_line(data, batch)
        got, chk = _blocks(data, batch)
        assert sorted(chk.errors, key=lambda e: e["line"]) == want_errors, name
        assert chk.rejected == len(want_errors) and chk.units == sum(map(len, want)), name
        assert len(got) == len(want), name
        for a, b in zip(got, want):
            _same(a, b)
        if name.endswith("+bad"):
            assert len(want_errors) == len(_bad_lines({})) - 2, name     # the two blank lines are no error


def test_the_block_path_is_taken_and_each_guard_refuses_what_arrow_reads_laxly():
    good = [orjson.dumps(p) for p in _feed(20)]
    assert block_table(b"\n".join(good) + b"\n").num_rows == 20
    assert block_table(b"\r\n".join(good) + b"\r\n").num_rows == 20
    iso = dict(_feed(1)[0], ts="2026-03-02T10:00:00+08:00")
    assert block_table(orjson.dumps(iso) + b"\n") is not None                    # ISO fix time, epoch receipt time
    assert block_table(orjson.dumps(dict(iso, recv_ts="2026-03-02T10:00:01+08:00")) + b"\n") is not None
    for bad in (good[0] + b" " + good[1],                  # two objects on one line (Arrow: two rows)
                b'{"x": NaN, ' + good[0][1:], b'{"x": Infinity, ' + good[0][1:],   # not JSON
                b'{"x": "\xff", ' + good[0][1:],           # invalid UTF-8 in a field Arrow ignores
                b'{"x": ' + b"[" * 1100 + b"]" * 1100 + b", " + good[0][1:],   # nested deeper than JSON parsers allow
                b"", b" " + good[0], good[0][:-1] + b"\n}", b"null"):
        assert block_table(b"\n".join([good[0], bad, good[1]]) + b"\n") is None, bad


def test_assess_gps_reports_each_bad_line_with_its_line_number_and_the_same_alerts(monkeypatch, capsysbinary):
    feed = _feed()
    lines = [orjson.dumps(p) for p in feed]
    data = b"\n".join(lines[:10] + [b"", b"not json", orjson.dumps(dict(feed[3], speed_kmh=9999.0))] + lines[10:]) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    monkeypatch.setenv("ROADWATCH_SET", "input.max_rejected_share=0.5")
    assert main(["assess", "gps", "--batch", "100"]) == 2
    cap = capsysbinary.readouterr()
    errors = [orjson.loads(x) for x in cap.err.splitlines() if x.startswith(b"{")]
    assert [(e["line"], e["reason"]) for e in errors] == [(12, "bad_json"), (13, "out_of_range")]
    alerts = [orjson.loads(x) for x in cap.out.splitlines()]
    want, _, _ = run_pings(lines, None, None, Config(), batch=100)
    assert any(a["type"] == "overspeed" for a in alerts) and alerts == want


def test_assess_gps_refuses_json_lines_with_too_many_bad_lines(monkeypatch, capsysbinary):
    lines = [orjson.dumps(p) for p in _feed(40)] + [b'{"plate": 1}'] * 10
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n")))
    assert main(["assess", "gps"]) == 2
    err = capsysbinary.readouterr().err
    assert b"10 of 50 GPS pings rejected (20.0% > input.max_rejected_share" in err
    assert err.count(b'"reason":"bad_type"') == 10 and b"first: line 41: bad_type" in err
