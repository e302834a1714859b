"""The batch path merges a feed's JSON ping records before validating them (streams/feed_input.py,
``models.pingbatch.decode_json_batches``): the merged columns must be exactly what decoding each record on
its own gives, and a defect must still reject only its own record, as on the topic."""
import io
import random

import numpy as np

from roadwatch.models.pingbatch import decode_batch, decode_json_batches, encode_columns
from roadwatch.models.pingschema import concat
from roadwatch.simulators.feed import FeedRecord
from roadwatch.simulators.recording import encode_line
from roadwatch.streams.feed_input import PINGS, InputCheck, read_lines

T0 = 1_741_000_000_000


def _record(rng: random.Random, n: int, recv: bool = True, drivers: bool = True) -> dict:
    ts = [T0 + rng.randrange(0, 86_400_000) for _ in range(n)]
    cols = {"plate": [f"湘A{rng.randrange(10000, 99999)}" for _ in range(n)],
            "plate_color": [rng.choice([1, 2]) for _ in range(n)],
            "terminal_id": [f"{rng.randrange(10**11, 10**12)}" for _ in range(n)],
            "ts": ts, "lat": [28 + rng.random() for _ in range(n)], "lon": [112 + rng.random() for _ in range(n)],
            "speed_kmh": [rng.choice([0, 0.0, 45.5, 80, 99.9]) for _ in range(n)],
            "heading": [rng.randrange(0, 360) for _ in range(n)], "altitude_m": [rng.randrange(0, 500) for _ in range(n)],
            "alarm_flags": [rng.choice([0, 0, 1, 2048]) for _ in range(n)],
            "status_flags": [rng.choice([0, 1, 3]) for _ in range(n)], "reupload": [rng.choice([0, 1]) for _ in range(n)],
            "driver_id": [rng.choice([None, "430100199001011234", "430100199001015678"]) if drivers else None
                          for _ in range(n)],
            "mileage_km": [rng.choice([None, 1234.5, 7]) for _ in range(n)]}
    if recv:
        cols["recv_ts"] = [t + rng.randrange(0, 60_000) for t in ts]
    return cols


def _feed(values: list[bytes]) -> io.BufferedReader:
    lines = b"".join(encode_line(FeedRecord(PINGS, 0, b"k", v, T0 + i)) for i, v in enumerate(values))
    return io.BufferedReader(io.BytesIO(lines))


def _same(a, b) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x == y, name


def test_merged_json_records_are_the_records_decoded_one_by_one():
    rng = random.Random(7)
    values = [encode_columns(_record(rng, n), "json") for n in (1, 5, 150, 37, 2)]
    merged = decode_json_batches(values)
    assert merged is not None and len(merged) == 195
    _same(merged, concat([decode_batch(v) for v in values]))
    # through the feed reader: one merged batch, the same columns
    chk = InputCheck("t", PINGS, 0.5)
    out = list(read_lines(_feed(values), PINGS, chk, columns=True, batch_pings=10_000))
    assert len(out) == 1 and chk.units == 195 and chk.rejected == 0
    _same(out[0], merged)


def test_records_that_differ_in_their_columns_are_decoded_one_by_one():
    rng = random.Random(8)
    values = [encode_columns(_record(rng, 20, recv=False), "json"), encode_columns(_record(rng, 30), "json")]
    assert decode_json_batches(values) is None       # recv_ts in one record only: not merged at once
    chk = InputCheck("t", PINGS, 0.5)
    out = list(read_lines(_feed(values), PINGS, chk, columns=True, batch_pings=10_000))
    assert chk.units == 50 and chk.rejected == 0
    one = [decode_batch(v) for v in values]
    _same(out[0], concat(one))
    np.testing.assert_array_equal(out[0].recv_ts[:20], one[0].ts)   # absent receipt time: the fix time


def test_a_defect_rejects_only_its_own_record():
    rng = random.Random(9)
    bad = _record(rng, 40)
    bad["plate_color"][17] = 300                 # out of range: the whole record is refused, as on the topic
    values = [encode_columns(_record(rng, 10), "json"), encode_columns(bad, "json"),
              encode_columns(_record(rng, 25), "json"), b'{"schema": "roadwatch.pings/1", "plate": "x"}']
    assert decode_json_batches(values) is None
    chk = InputCheck("t", PINGS, 0.9)
    out = list(read_lines(_feed(values), PINGS, chk, columns=True, batch_pings=10_000))
    assert chk.units == 35 and chk.rejected == 2
    assert chk.reasons[0].startswith("line 2: gps-pings record rejected: out_of_range")
    assert chk.reasons[1].startswith("line 4: gps-pings record rejected: bad_type")
    _same(out[0], concat([decode_batch(values[0]), decode_batch(values[2])]))


def test_json_and_arrow_records_keep_their_order():
    rng = random.Random(10)
    recs = [_record(rng, n) for n in (30, 12, 40, 8)]
    values = [encode_columns(r, w) for r, w in zip(recs, ("json", "arrow", "json", "json"))]
    chk = InputCheck("t", PINGS, 0.5)
    out = list(read_lines(_feed(values), PINGS, chk, columns=True, batch_pings=10_000))
    assert chk.units == 90
    _same(out[0], concat([decode_batch(v) for v in values]))


def test_records_that_disagree_on_optional_columns_merge_with_their_fallbacks():
    """One record carries ``jt808_version`` and receipt times, its neighbours of the other encoding do
    not: the merged batch takes each optional column's fallback (version 0, the fix time), as the engine
    would have seen the records one by one — it never fails on the mix."""
    rng = random.Random(11)
    with_version = _record(rng, 30)
    with_version["jt808_version"] = [2019] * 30
    values = [encode_columns(with_version, "arrow"), encode_columns(_record(rng, 20, recv=False), "json"),
              encode_columns(_record(rng, 10, recv=False), "arrow")]
    chk = InputCheck("t", PINGS, 0.5)
    (merged,) = list(read_lines(_feed(values), PINGS, chk, columns=True, batch_pings=10_000))
    assert chk.rejected == 0 and len(merged) == 60
    parts = [decode_batch(v) for v in values]
    assert merged.jt808_version.tolist() == [2019] * 30 + [0] * 30
    assert merged.recv_ts.tolist() == parts[0].recv_ts.tolist() + parts[1].ts.tolist() + parts[2].ts.tolist()
    assert merged.plate == parts[0].plate + parts[1].plate + parts[2].plate
