"""A simulated feed's ping records are slices of one conversion of each partition's columns
(``models.pingarrow.encode_arrow_slices``, ``simulators.feed.ping_records``): each must read back exactly as
the record ``encode_arrow`` writes for its own pings, and a value that needs a record of its own (a wider
type) must still reject only that record."""
import numpy as np
import pytest

from roadwatch.models.pingarrow import encode_arrow, encode_arrow_slices
from roadwatch.models.pingbatch import decode_batch
from roadwatch.models.pingschema import FIELDS
from roadwatch.models.records import InvalidRecord
from roadwatch.simulators.feed import ping_columns, ping_records

T0 = 1_741_000_000  # s


def _sim_columns(rng: np.random.Generator, n: int, vehicles: int) -> dict:
    """Columns as the scenario builder makes them (numpy, times in seconds), sorted by receipt time."""
    recv = np.sort(T0 + rng.integers(0, 3600, n))
    mileage = rng.uniform(0, 9999, n)
    mileage[rng.random(n) < 0.1] = np.nan               # no mileage reported: a null, as in the JSON form
    return {"vid": rng.integers(0, vehicles, n), "ts": recv - rng.integers(0, 30, n), "recv_ts": recv,
            "lat": rng.uniform(28, 29, n), "lon": rng.uniform(112, 113, n), "speed_kmh": rng.uniform(0, 99, n),
            "heading": rng.integers(0, 360, n).astype(np.float64), "altitude_m": rng.uniform(0, 500, n),
            "alarm_flags": rng.choice([0, 1, 2048], n), "status_flags": rng.choice([0, 1, 3], n),
            "reupload": rng.random(n) < 0.05, "mileage_km": mileage}


def _vehicles(k: int) -> list:
    # (plate, colour, terminal, driver): every third vehicle has no driver card (a null driver_id)
    return [(f"湘A{10000 + i}", 2, f"{10**11 + i}", None if i % 3 == 0 else f"43010019900101{i:04d}")
            for i in range(k)]


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            if x is not y:
                return False
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
                return False
        elif [v if v == v else "nan" for v in x] != [v if v == v else "nan" for v in y]:
            return False
    return True


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_slice_reads_back_as_its_own_record(seed):
    rng = np.random.default_rng(seed)
    vehicles = _vehicles(40)
    sim = _sim_columns(rng, 900, len(vehicles))
    idx = np.arange(900)
    cuts = np.sort(rng.choice(np.arange(1, 900), 60, replace=False))
    bounds = list(zip([0, *cuts.tolist()], [*cuts.tolist(), 900]))
    sliced = encode_arrow_slices(ping_columns(sim, idx, vehicles), bounds)
    assert sliced is not None and len(sliced) == len(bounds)
    for (a, b), raw in zip(bounds, sliced):
        own = encode_arrow(ping_columns(sim, idx[a:b], vehicles))
        assert _same(decode_batch(raw), decode_batch(own)), (a, b)


def test_a_value_needing_a_wider_type_is_not_sliced():
    rng = np.random.default_rng(4)
    vehicles = _vehicles(5)
    sim = _sim_columns(rng, 50, len(vehicles))
    sim["heading"][17] = 1.5                             # not a whole degree: the reader refuses its record
    assert encode_arrow_slices(ping_columns(sim, np.arange(50), vehicles), [(0, 25), (25, 50)]) is None


def test_the_feed_rejects_only_the_record_holding_a_bad_value():
    rng = np.random.default_rng(5)
    vehicles = _vehicles(30)
    sim = _sim_columns(rng, 2000, len(vehicles))
    good = ping_records(sim, vehicles, 4, max_pings=40, flush_s=5.0)
    sim["alarm_flags"] = sim["alarm_flags"].astype(np.int64)
    sim["alarm_flags"][1234] = 2**33                    # does not fit the 32-bit flag word
    bad = ping_records(sim, vehicles, 4, max_pings=40, flush_s=5.0)
    assert [(r.partition, r.key, r.ts_ms) for r in good] == [(r.partition, r.key, r.ts_ms) for r in bad]
    rejected = 0
    for g, b in zip(good, bad):
        try:
            got = decode_batch(b.value)
        except InvalidRecord:
            rejected += 1
            continue
        assert _same(got, decode_batch(g.value))
    assert rejected == 1
