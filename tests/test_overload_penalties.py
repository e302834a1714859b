"""Art. 43 road-administration fines and the police 超载 assessment, at and around every edge."""
import pytest

from roadwatch.models.config import Config
from roadwatch.models.penalties import police_assessment, road_penalty

FLOOR = Config()
CEIL = Config({"overlimit.tonne_rounding": "ceil"})


@pytest.mark.parametrize("excess,action,floor_fine,ceil_fine", [
    (0, "none", 0, 0), (-5, "none", 0, 0), (0.5, "warning", 0, 0),
    (1000, "warning", 0, 0),                 # "未超过1000千克的，予以警告"
    (1001, "fine", 500, 1000),               # 1.001 t: floor 1 t, ceil 2 t
    (1500, "fine", 500, 1000),               # the ambiguous case of §2.1
    (1999, "fine", 500, 1000), (2000, "fine", 1000, 1000), (2001, "fine", 1000, 1500),
    (59999, "fine", 29500, 30000), (60000, "fine", 30000, 30000),
    (60001, "fine", 30000, 30000),           # ceil → 61 t → capped
    (61000, "fine", 30000, 30000), (90000, "fine", 30000, 30000),
])
def test_art43_schedule(excess, action, floor_fine, ceil_fine):
    f, c = road_penalty(excess, FLOOR), road_penalty(excess, CEIL)
    assert f["action"] == c["action"] == action
    assert f["fine_yuan"] == floor_fine and c["fine_yuan"] == ceil_fine


def test_cap_is_flagged():
    assert road_penalty(60000, FLOOR)["capped"] is False
    assert road_penalty(61000, FLOOR)["capped"] is True and road_penalty(61000, FLOOR)["tonnes"] == 61


# rated load 10 000 kg, curb 5 000 kg, registered total 20 000 kg (hand-picked round numbers)
def police(gross):
    return police_assessment(gross, 10000, 5000, 20000, Config())


@pytest.mark.parametrize("gross,lo,hi", [
    (15000, 0, 0),            # load = rated: not over
    (15001, 200, 500),
    (18000, 200, 500),        # exactly 30 % over: "超过…30%" is strict
    (18001, 500, 2000),
])
def test_art92_fine_tiers(gross, lo, hi):
    p = police(gross)
    assert (p["fine_min_yuan"], p["fine_max_yuan"]) == (lo, hi)


@pytest.mark.parametrize("gross,points", [
    (20000, 0), (20001, 1), (25999, 1),
    (26000, 3),               # 30 % over 最大允许总质量: "30%以上" includes 30 %
    (29999, 3), (30000, 6),   # 50 %
])
def test_points_bands(gross, points):
    assert police(gross)["points"] == points


def test_police_with_unknown_masses_gives_reasons_not_errors():
    p = police_assessment(30000, 0, 0, 0, Config())
    assert p["points"] == 0 and p["fine_max_yuan"] == 0
    assert p["fine_reason"] == "rated_load_or_curb_unknown" and p["points_reason"] == "registered_total_unknown"
