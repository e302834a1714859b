"""The binary wire form of a ping batch (models/pingarrow.py, docs/formats.md): the same engine output as the
JSON form, the same refusals, and nothing but ``InvalidRecord`` out of a malformed record."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from roadwatch.models.config import Config
from roadwatch.models.pingarrow import MAGIC, arrow_lists, decode_arrow, encode_arrow, encode_arrow_rows
from roadwatch.models.pingbatch import decode_batch, encode_batch
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.records import InvalidRecord
from roadwatch.simulators.scenario import build, load_scenario
from roadwatch.streams.batcher import PingBatcher, encode_rows
from roadwatch.streams.feed_input import ping_lines

T0 = 1_762_740_000_000   # 2025-11-10


def _ping(i=0, **kw):
    d = {"plate": "苏A12345", "plate_color": 2, "terminal_id": "013300000001", "ts": T0 + i * 1000,
         "lat": 32.0 + i * 1e-4, "lon": 118.8, "speed_kmh": 55.0, "heading": 90, "altitude_m": 12.0,
         "alarm_flags": 0, "status_flags": 3, "reupload": False, "driver_id": "D1", "mileage_km": 1234.5}
    d.update(kw)
    return d


def _same(a, b):
    for k in a.__dataclass_fields__:
        x, y = getattr(a, k), getattr(b, k)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), k
        else:
            assert x == y, k


@pytest.fixture(scope="module", params=["gps_quality", "gps_overspeed"])
def scenario_cfgs(request):
    """A scenario built twice, once per wire format (the simulators write what ``stream.wire_format`` says):
    bad values, drift and re-uploads (gps_quality); overspeed episodes (gps_overspeed)."""
    scn = load_scenario(request.param)
    out = {}
    for wire in ("json", "arrow"):
        cfg = Config({"stream.wire_format": wire})
        out[wire] = build(scn, cfg)
    return out


def test_simulators_write_the_configured_form(scenario_cfgs):
    firsts = {w: next(r.value for r in b.records if r.topic == "gps-pings") for w, b in scenario_cfgs.items()}
    assert firsts["arrow"][:4] == MAGIC
    assert firsts["json"][:1] == b"{"


def test_round_trip_gives_identical_engine_output(scenario_cfgs, request):
    """A whole scenario through the engine from each form: the same alerts (if any) and day rows."""
    recs = {w: [r for r in b.records if r.topic == "gps-pings"] for w, b in scenario_cfgs.items()}
    assert len(recs["json"]) == len(recs["arrow"])
    procs = {w: PingProcessor(Config(), b.registry) for w, b in scenario_cfgs.items()}
    alerts: dict = {w: [] for w in procs}
    for rj, ra in zip(recs["json"], recs["arrow"]):
        # each record decoded once: record by record the decoded columns are the same, types included
        # (compared before the engine sees them), then each form goes through its own engine
        bj, ba = decode_batch(rj.value), decode_batch(ra.value)
        _same(bj, ba)
        alerts["json"] += procs["json"].process(bj, now_ms=rj.ts_ms).alerts
        alerts["arrow"] += procs["arrow"].process(ba, now_ms=ra.ts_ms).alerts
    results = {w: (alerts[w] + p.check_offline(), p.day_rows()) for w, p in procs.items()}
    assert results["arrow"][1] and sum(r["pings"] for r in results["arrow"][1]) > 1000
    assert results["arrow"][0] or "gps_quality" in request.node.callspec.id
    assert results["arrow"] == results["json"]


def test_batcher_writes_arrow_by_default_and_json_when_configured():
    sent = {}
    for wire in ("arrow", "json"):
        b = PingBatcher(lambda p, k, v, w=wire: sent.setdefault(w, []).append(v), 1, max_pings=3,
                        wire=wire)
        for i in range(3):
            b.add(_ping(i, recv_ts=T0 + i * 1000 + 700, driver_id=None if i else "D1"))
        assert len(sent[wire]) == 1
    assert PingBatcher.from_config(Config(), lambda *a: None).wire == "arrow"
    assert sent["arrow"][0][:4] == MAGIC and sent["json"][0][:1] == b"{"
    _same(decode_batch(sent["arrow"][0]), decode_batch(sent["json"][0]))


@pytest.mark.parametrize("change", [
    {}, {"heading": 1.5}, {"heading": 70000}, {"alarm_flags": 2 ** 33}, {"reupload": 2}, {"reupload": 1},
    {"plate": ""}, {"plate": "x" * 17}, {"ts": 5}, {"ts": "2025-11-10T10:00:00+08:00"}, {"speed_kmh": -1.0},
    {"plate_color": 256}, {"driver_id": None, "mileage_km": None}, {"recv_ts": T0 + 500}, {"jt808_version": 2019},
    # lengths count characters, not UTF-8 bytes (the Arrow reader checks bytes first, characters when needed)
    {"plate": "苏" * 16}, {"plate": "苏" * 17}, {"terminal_id": "终" * 20}, {"terminal_id": "终" * 21},
    {"driver_id": "驾" * 64}, {"driver_id": "驾" * 65}, {"driver_id": ""}, {"mileage_km": None},
])
def test_both_forms_accept_and_refuse_alike(change):
    pings = [_ping(0, **change), _ping(1)]
    out = {}
    for wire in ("json", "arrow"):
        raw = encode_batch(pings, wire)
        try:
            out[wire] = decode_batch(raw)
        except InvalidRecord as e:
            out[wire] = (e.code, e.detail)
    if isinstance(out["json"], tuple):
        assert out["arrow"] == out["json"]
    else:
        _same(out["arrow"], out["json"])


def test_values_are_never_narrowed_on_the_way():
    """A value that does not fit the column's wire type keeps a wider type: the reader refuses it (as the
    JSON form is refused), it is never silently truncated."""
    raw = encode_arrow({**{k: [v] for k, v in _ping().items()}, "heading": [1.5]})
    with pytest.raises(InvalidRecord, match="heading must be an integer"):
        decode_arrow(raw)


def _write(batch: pa.RecordBatch, n_batches=1, metadata=None) -> bytes:
    schema = batch.schema if metadata is None else batch.schema.with_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        for _ in range(n_batches):
            w.write_batch(batch.replace_schema_metadata(schema.metadata))
    return sink.getvalue().to_pybytes()


def _good_batch() -> pa.RecordBatch:
    return pa.ipc.open_stream(encode_batch([_ping(i) for i in range(4)], "arrow")).read_next_batch()


def _with(batch, name, arr):
    i = batch.schema.get_field_index(name)
    return batch.set_column(i, pa.field(name, arr.type), arr) if i >= 0 else batch.append_column(name, arr)


@pytest.mark.parametrize("make,code", [
    (lambda b: _write(b)[:40], "bad_arrow"),
    (lambda b: _write(b)[:-9], "bad_arrow"),
    (lambda b: MAGIC + b"\x00" * 12, "bad_arrow"),
    (lambda b: _write(b, 2), "bad_arrow"),
    (lambda b: _write(b, 0), "bad_arrow"),
    (lambda b: _write(b, metadata={b"roadwatch.schema": b"roadwatch.pings/9"}), "bad_schema"),
    (lambda b: _write(b.slice(0, 0)), "empty_batch"),
    (lambda b: _write(b.drop_columns(["lat"])), "missing_field"),
    (lambda b: _write(_with(b, "lat", pa.array(["x"] * 4))), "bad_type"),
    (lambda b: _write(_with(b, "plate", pa.array([1, 2, 3, 4]))), "bad_type"),
    (lambda b: _write(_with(b, "lat", pa.array([1.0, None, 2.0, 3.0]))), "missing_field"),
    (lambda b: _write(_with(b, "lon", pa.array([1.0, float("inf"), 2.0, 3.0]))), "out_of_range"),
    (lambda b: _write(_with(b, "ts", pa.array([T0] * 4, pa.timestamp("ms")))), "bad_timestamp"),
    (lambda b: _write(_with(b, "ts", pa.array([2 ** 62] * 4, pa.timestamp("s", tz="UTC")))), "bad_timestamp"),
    (lambda b: _write(_with(b, "reupload", pa.array([0, 1, 2, 0]))), "bad_type"),
    (lambda b: _write(_with(b, "status_flags", pa.array([2 ** 64 - 1] * 4, pa.uint64()))), "out_of_range"),
])
def test_malformed_arrow_is_refused_with_a_reason(make, code):
    raw = make(_good_batch())
    with pytest.raises(InvalidRecord) as e:
        decode_batch(raw)
    assert e.value.code == code, e.value.detail


def test_other_producers_types_are_read():
    """Analysts' tools write wider types, timestamps in other units, dictionary-encoded strings."""
    b = _good_batch()
    b = _with(b, "plate", b.column("plate").dictionary_encode())
    b = _with(b, "heading", b.column("heading").cast(pa.int64()))
    b = _with(b, "lat", b.column("lat").cast(pa.float32()).cast(pa.float64()))
    b = _with(b, "ts", pa.array([(T0 + i * 1000) * 1000 for i in range(4)], pa.timestamp("us", tz="Asia/Shanghai")))
    c = decode_batch(_write(b))
    assert c.plate == ["苏A12345"] * 4 and c.ts.tolist() == [T0 + i * 1000 for i in range(4)]
    assert c.heading.dtype == np.int64


def test_feed_tools_read_both_forms():
    pings = [_ping(i) for i in range(3)]
    assert ping_lines(encode_batch(pings, "arrow")) == ping_lines(encode_batch(pings, "json"))
    assert arrow_lists(encode_rows([(p["plate"], p["terminal_id"], p["ts"], p["lat"], p["lon"], p["speed_kmh"],
                                     p["heading"], p["altitude_m"], p["plate_color"], 0, 3, 0, None, None, None, 0)
                                    for p in pings]))["plate"] == ["苏A12345"] * 3


_ROW_LAYOUT = ("plate", "terminal_id", "ts", "lat", "lon", "speed_kmh", "heading", "altitude_m", "plate_color",
               "alarm_flags", "status_flags", "reupload", "driver_id", "mileage_km", "recv_ts", "jt808_version")


def _rows(n: int, version: str, recv: str, plates: list[str]) -> list[tuple]:
    """``n`` rows in ``_ROW_LAYOUT`` order (as the gateway builds them)."""
    rows = []
    for i in range(n):
        p = _ping(i, plate=plates[i % len(plates)], driver_id=None if i % 2 else "司机D1",
                  mileage_km=None if i % 3 else 1000.5 + i, reupload=i % 5 == 0)
        v = {"none": 0, "all": 2019, "some": 2019 if i % 2 else 0}[version]
        r = {"none": None, "all": p["ts"] + 500, "some": p["ts"] + 500 if i % 2 else None}[recv]
        rows.append(tuple(int(p[f]) if f == "reupload" else p[f] for f in _ROW_LAYOUT[:14]) + (r, v))
    return rows


def _columns(rows: list[tuple]) -> dict:
    """The columns ``encode_arrow`` takes for the same pings (optional columns as docs/formats.md says)."""
    cols = {f: [row[j] for row in rows] for j, f in enumerate(_ROW_LAYOUT)}
    cols["reupload"] = [bool(x) for x in cols["reupload"]]
    cols["jt808_version"] = cols["jt808_version"] if any(cols["jt808_version"]) else None
    cols["recv_ts"] = (None if all(x is None for x in cols["recv_ts"])
                       else [x if x is not None else t for x, t in zip(cols["recv_ts"], cols["ts"])])
    return cols


def _table(raw: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(raw)).read_all()


@pytest.mark.parametrize("version", ["none", "all", "some"])
@pytest.mark.parametrize("recv", ["none", "all", "some"])
@pytest.mark.parametrize("plates", [["苏A12345", "冀D7788挂", "新AX1234"], ["A1", "foobar"]], ids=["hanzi", "ascii"])
def test_fast_row_encoder_writes_what_encode_arrow_writes(version, recv, plates):
    """``encode_arrow_rows`` (the gateway's per-tick encoder) and ``encode_arrow`` (every other producer)
    yield the same Arrow record — schema with its metadata and every value — with the optional columns
    absent or present, whatever the plates' characters."""
    rows = _rows(7, version, recv, plates)
    fast, = encode_arrow_rows([rows], _ROW_LAYOUT)
    general = encode_arrow(_columns(rows))
    assert fast[:4] == MAGIC
    a, b = _table(fast), _table(general)
    assert a.schema.equals(b.schema, check_metadata=True) and a.equals(b)
    assert ("jt808_version" in a.schema.names) == (version != "none")
    assert ("recv_ts" in a.schema.names) == (recv != "none")
    assert a.column("plate").to_pylist() == [plates[i % len(plates)] for i in range(7)]
    # rows the caller vouches for (the gateway's): the same bytes without the per-value type checks
    assert encode_arrow_rows([rows], _ROW_LAYOUT, typed=True) == [fast]


def test_typed_rows_keep_nan_as_null_where_the_checked_path_does():
    """``typed`` skips the type checks and pandas' NaN-is-null reading outside float columns only: a NaN
    position still reads back as the checked encoder writes it."""
    rows = _rows(4, "some", "some", ["苏A12345"])
    rows[1] = rows[1][:3] + (float("nan"),) + rows[1][4:]
    assert encode_arrow_rows([rows], _ROW_LAYOUT, typed=True) == encode_arrow_rows([rows], _ROW_LAYOUT)


@pytest.mark.parametrize("split", [[3, 4], [1, 5, 1]])
def test_fast_row_encoder_splits_groups_into_their_own_records(split):
    """Several groups at once: each record equals ``encode_arrow`` of that group alone — also when the
    groups differ in their optional columns."""
    rows = _rows(sum(split), "some", "some", ["粤B8K2Q1", "琼A00001"])
    groups, start = [], 0
    for k in split:
        groups.append(rows[start:start + k])
        start += k
    groups[0] = [r[:-2] + (None, 0) for r in groups[0]]        # first group: no optional column at all
    out = encode_arrow_rows(groups, _ROW_LAYOUT)
    assert out is not None and len(out) == len(groups)
    for g, raw in zip(groups, out):
        alone, = encode_arrow_rows([g], _ROW_LAYOUT)
        assert _table(raw).equals(_table(alone))
        ref = _table(encode_arrow(_columns(g)))
        assert _table(raw).schema.equals(ref.schema, check_metadata=True) and _table(raw).equals(ref)


def test_joined_batches_read_as_one_and_leave_unread_text_unmade():
    """``concat`` of decoded Arrow batches (the ping agent joins the batches already waiting): every column
    equals the decoding of all their pings as one batch, optional columns included (one part without
    ``recv_ts``), and a text column nobody reads (``terminal_id``) is made only when it is read."""
    from roadwatch.models.pingschema import concat
    first = [_ping(i) for i in range(5)]
    second = [_ping(5 + i, plate="苏B54321", terminal_id="013300000002", driver_id=None, recv_ts=T0 + 9_000 + i)
              for i in range(3)]
    parts = [decode_batch(encode_batch(first, "arrow")), decode_batch(encode_batch(second, "arrow"))]
    given = list(parts)
    joined = concat(given)
    given.clear()           # callers reuse their list (the JSON lines path of `assess gps` does)
    assert "terminal_id" not in joined.__dict__ and "mileage_km" not in joined.__dict__
    whole = decode_batch(encode_batch([dict(p, recv_ts=p["ts"]) for p in first] + second, "arrow"))
    _same(joined, whole)
    assert joined.terminal_id == ["013300000001"] * 5 + ["013300000002"] * 3
    # the same engine output as the batches one after the other
    a, b = PingProcessor(Config()), PingProcessor(Config())
    out_joined = a.process(joined)
    outs = [b.process(p) for p in parts]
    assert out_joined.qualified == sum(o.qualified for o in outs) == 8
    assert a.day_table().rows == b.day_table().rows
