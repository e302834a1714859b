"""Art. 3 limits (62号令 Art. 3, docs/legal-basis.md §1, values typed from the regulation) and axle findings."""
import pytest

from roadwatch.models.config import Config
from roadwatch.models.limits import axle_findings, axle_groups, exceeds, gross_limit

CFG = Config()

# (axles, kind, expected kg) straight from the Art. 3 ¶1 table of 62号令 (docs/legal-basis.md §1)
ART3 = [(2, "truck", 18000), (3, "truck", 25000), (3, "train", 27000), (4, "truck", 31000),
        (4, "train", 36000), (5, "train", 43000), (6, "train", 49000), (7, "train", 49000), (6, "truck", 49000)]


@pytest.mark.parametrize("axles,kind,kg", ART3)
def test_base_limits(axles, kind, kg):
    lim = gross_limit(axles, kind, CFG)
    assert lim.limit_kg == kg and lim.base_kg == kg and lim.adjustments == []
    assert "第三条第一款" in lim.basis and "62号" in lim.version


def test_six_axle_train_with_single_drive_axle_tractor_is_46t():
    assert gross_limit(6, "train", CFG, single_drive_axle=True).limit_kg == 46000
    assert gross_limit(8, "train", CFG, single_drive_axle=True).limit_kg == 46000
    # only the articulated train rule has the 46 t variant; a 5-axle train keeps 43 t
    assert gross_limit(5, "train", CFG, single_drive_axle=True).limit_kg == 43000


@pytest.mark.parametrize("n,expected", [(1, 40000), (2, 37000)])
def test_single_tyre_axles_reduce_3t_each(n, expected):
    lim = gross_limit(5, "train", CFG, single_tyre_axles=n)
    assert lim.limit_kg == expected
    assert lim.adjustments[0]["kind"] == "single_tyre_axles" and lim.adjustments[0]["delta_kg"] == -3000 * n


@pytest.mark.parametrize("axles,kind,expected", [(3, "truck", 26000), (4, "truck", 32000),
                                                   (3, "train", 27000), (2, "truck", 18000), (5, "train", 43000)])
def test_air_suspension_bonus_only_for_3_and_4_axle_trucks(axles, kind, expected):
    assert gross_limit(axles, kind, CFG, air_suspension=True).limit_kg == expected


@pytest.mark.parametrize("registered,expected", [(16000, 16000), (17999, 17999), (18000, 18000),
                                                  (20000, 18000), (0, 18000)])
def test_two_axle_truck_capped_by_registered_total(registered, expected):
    lim = gross_limit(2, "truck", CFG, registered_total_kg=registered)
    assert lim.limit_kg == expected
    assert any(a["kind"] == "registered_total_cap" for a in lim.adjustments) == (expected < 18000)


def test_registered_cap_does_not_apply_to_bigger_vehicles():
    assert gross_limit(3, "truck", CFG, registered_total_kg=20000).limit_kg == 25000


def test_adjustments_come_from_config():
    cfg = Config({"overlimit.single_tyre_reduction_kg": 2500, "overlimit.air_suspension_bonus_kg": 500})
    assert gross_limit(5, "train", cfg, single_tyre_axles=1).limit_kg == 40500
    assert gross_limit(4, "truck", cfg, air_suspension=True).limit_kg == 31500


def test_exceeds_is_strict():
    assert not exceeds(49000, 49000)
    assert exceeds(49001, 49000)
    assert exceeds(49000.1, 49000)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        gross_limit(1, "truck", CFG)
    with pytest.raises(ValueError):
        gross_limit(3, "bus", CFG)


# --- axle groups / findings (informational, [U] values from config) -------------------------------------

def test_axle_groups_split_at_group_max_spacing():
    assert axle_groups([3.0, 1.79, 1.8], 1.8) == [[0], [1, 2], [3]]
    assert axle_groups([], 1.8) == [[0]]


@pytest.mark.parametrize("spacing,limit", [(0.99, 11500), (1.0, 16000), (1.29, 16000), (1.3, 18000), (1.79, 18000)])
def test_tandem_band_edges(spacing, limit):
    loads = [6000, limit / 2, limit / 2]
    assert axle_findings(loads, [3.0, spacing], CFG) == []          # exactly at the limit: no finding
    loads = [6000, limit / 2, limit / 2 + 1]
    f = axle_findings(loads, [3.0, spacing], CFG)
    assert len(f) == 1 and f[0]["limit_kg"] == limit and f[0]["axles"] == [2, 3] and f[0]["excess_kg"] == 1


def test_steer_drive_and_tridem_limits():
    # steer 7000 (single tyres), drive 11500, tridem with spacing 1.3 → 21000, 1.31 → 24000
    assert axle_findings([7000, 11500, 7000, 7000, 7000], [3.0, 5.0, 1.3, 1.3], CFG) == []
    f = axle_findings([7001, 11501, 7000, 7000, 7001], [3.0, 5.0, 1.3, 1.3], CFG)
    assert [x["limit_kg"] for x in f] == [7000, 11500, 21000]
    assert axle_findings([7000, 11500, 8000, 8000, 8000], [3.0, 5.0, 1.31, 1.31], CFG) == []
    f = axle_findings([7000, 11500, 8000, 8000, 8001], [3.0, 5.0, 1.31, 1.31], CFG)
    assert f[0]["limit_kg"] == 24000


def test_axle_findings_can_be_disabled_and_handle_missing_spacings():
    assert axle_findings([9000, 20000], [3.0], Config({"axle.check_enabled": False})) == []
    f = axle_findings([9000, 20000], [], CFG)
    assert f[0]["kind"] == "no_spacings" and f[0]["over"] is False
