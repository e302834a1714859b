"""Engine internals the batch path made cheaper (models/ping_state.py): they must not change a result.

- the replay window's samples are compacted in arrival order and sorted only when a replay or a snapshot
  reads them: the same feed gives the same rows and alerts as with the store sorted after every batch
  (a snapshot round trip sorts it);
- driver codes of a batch are assigned in order of first appearance, as one ping at a time would."""
import numpy as np
import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingbatch import decode_batch, encode_columns
from roadwatch.models.registry import Registry, parse_registry

T0 = 1_741_000_000_000        # 2025-03-03
N_VEHICLES = 240


def _registry() -> Registry:
    return parse_registry({"vehicles": [{"plate": f"湘A{10000 + v}", "plate_color": 2, "category": "旅游包车",
                                         "enterprise_id": "E1"} for v in range(N_VEHICLES)],
                           "enterprises": [{"enterprise_id": "E1", "name": "E1"}]})


def _batch(rows: list[tuple]) -> object:
    """(vehicle, ts, lon, speed, reupload) rows → PingColumns through the wire encoding."""
    cols = {"plate": [f"湘A{10000 + v}" for v, *_ in rows], "plate_color": [2] * len(rows),
            "terminal_id": [f"{10**11 + v}" for v, *_ in rows], "ts": [t for _, t, *_ in rows],
            "lat": [28.0 + v * 0.01 for v, *_ in rows], "lon": [lon for _, _, lon, *_ in rows],
            "speed_kmh": [s for *_, s, _ in rows], "heading": [90] * len(rows), "altitude_m": [50] * len(rows),
            "alarm_flags": [0] * len(rows), "status_flags": [3] * len(rows),     # ACC on, positioned
            "reupload": [r for *_, r in rows], "driver_id": [None] * len(rows), "mileage_km": [None] * len(rows)}
    return decode_batch(encode_columns(cols, "json"))


def _feed() -> list:
    """Every vehicle drives east at 72 km/h, a fix every 30 s for 40 min (> 4 096 held samples, so the store
    is compacted), every third vehicle in a blind area for 5 min whose fixes it re-uploads later — at 130 km/h, an
    overspeed only the replay finds —, then drives on."""
    rng = np.random.default_rng(3)
    batches = []
    for step in range(80):
        t = T0 + step * 30_000
        rows = [(v, t, 112.0 + step * 0.006, 72.0, 0) for v in rng.permutation(N_VEHICLES).tolist()
                if not (60 <= step < 70 and v % 3 == 0)]     # a blind area for every third vehicle
        batches.append(_batch(rows))
    late = [(v, T0 + k * 30_000, 112.0 + k * 0.006, 130.0, 1) for v in range(0, N_VEHICLES, 3) for k in range(60, 70)]
    batches.append(_batch(late))
    for step in range(80, 90):
        t = T0 + step * 30_000
        batches.append(_batch([(v, t, 112.0 + step * 0.006, 72.0, 0) for v in range(N_VEHICLES)]))
    return batches


def _run(round_trip: bool):
    cfg, reg = Config(), _registry()
    p = PingProcessor(cfg, reg)
    alerts, compacted = [], False
    for b in _feed():
        alerts += p.process(b, now_ms=T0 + 86_400_000).alerts
        compacted |= not p._hist_sorted
        if round_trip:       # a snapshot sorts the held samples; restoring gives the processor back
            p = PingProcessor.restore(cfg, reg, None, p.snapshot())
    return p.day_rows(dirty_only=False), alerts, compacted


def test_compacted_replay_window_gives_what_a_sorted_one_gives():
    rows, alerts, compacted = _run(False)
    rows_rt, alerts_rt, _ = _run(True)
    assert compacted                             # the store was held unsorted between batches
    for r in rows + rows_rt:
        r.pop("updated_at")
    assert rows == rows_rt
    assert alerts == alerts_rt
    assert [a for a in alerts if a["type"] == "overspeed" and a["late"]]     # the replay found them


def test_driver_codes_follow_first_appearance():
    p = PingProcessor(Config(), Registry())
    p._driver_code("B")
    drivers = [None, "A", "", "B", "C", "A", None, "C", "D"]
    codes = p._driver_codes(drivers).tolist()
    q = PingProcessor(Config(), Registry())
    q._driver_code("B")
    assert codes == [q._driver_code(d) for d in drivers]
    assert p.drivers == q.drivers == ["B", "A", "C", "D"]


def test_skipping_output_only_steps_changes_no_row_and_no_alert():
    """The batch paths leave out track sampling and stop events (``skip_output_steps``): on goods
    vehicles, which both steps work on, every row and alert is the same, replays included — and the outputs
    really are not made."""
    reg = parse_registry({"vehicles": [{"plate": f"湘A{10000 + v}", "plate_color": 2, "category": "普通货车",
                                        "enterprise_id": "E1"} for v in range(N_VEHICLES)],
                          "enterprises": [{"enterprise_id": "E1", "name": "E1"}]})
    full, lean = PingProcessor(Config(), reg), PingProcessor(Config(), reg)
    lean.skip_output_steps({"track_sampling", "stops"})
    got = {id(full): [], id(lean): []}
    for b in _feed():
        for p in (full, lean):
            got[id(p)] += p.process(b, now_ms=T0 + 86_400_000).alerts
    assert got[id(full)] == got[id(lean)] and [a for a in got[id(full)] if a["late"]]
    assert full.day_rows(dirty_only=False) == lean.day_rows(dirty_only=False)
    assert full.sample_track() and not lean.sample_track()
    with pytest.raises(ValueError):
        lean.skip_output_steps({"day_counters"})
