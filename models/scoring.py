"""联网联控 assessment scores (domain-rules.md §5.3 [S], 交运发〔2016〕160号 annex as transcribed).

Two tables, every weight and zero-score threshold a ``score.*`` key (provinces deviate):

- 道路运输管理机构 (agency): 入网 rate×5 (< 90 % → 0); 上线 rate×10; 漂移 15 − rate×15 (> 5 % → 0);
  轨迹 rate×40 (< 70 % → 0); 合格 rate×30 (< 80 % → 0).
- 道路运输企业 (enterprise): 入网 5, 上线 5, 轨迹 15, 合格 15, 漂移 10, plus 平均超速次数 20 and 平均疲劳驾驶
  时长 20 scored against the region average A — x ≤ A: 10 + (A−x)/A×10; A < x < 2A: (2A−x)/A×10;
  x ≥ 2A: 0 — and 平台查岗响应率 10, which the archive has no data for (reported as not assessed).

"< 90 % → 0" is strict: exactly 90 % scores. Rates enter as fractions taken from the published (rounded)
percent or the exact ratio (``score.rate_basis``); points are rounded half-up to ``report.decimals``.
A component whose rate is null (denominator 0) scores 0 with a reason; a population with no vehicles has
no score at all.
"""
from __future__ import annotations

from decimal import Decimal

from .rates import LABELS, round_half_up, to_decimal

ZERO = Decimal(0)


def rate_fraction(record: dict, basis: str) -> Decimal | None:
    """The rate as a fraction (0.9948), or an average as its value; None when the denominator is 0."""
    if to_decimal(record["denominator"]) == 0:
        return None
    if basis == "exact":
        return to_decimal(record["numerator"]) / to_decimal(record["denominator"])
    if "percent" in record:
        return to_decimal(record["percent"]) / 100
    return to_decimal(record["value"])


def linear_points(rate: Decimal, weight: Decimal, zero_below: Decimal | None = None) -> Decimal:
    """rate × weight; 0 when rate is strictly below ``zero_below``."""
    if zero_below is not None and rate < zero_below:
        return ZERO
    return rate * weight


def drift_points(rate: Decimal, weight: Decimal, zero_above: Decimal) -> Decimal:
    """weight − rate × weight; 0 when the drift rate is strictly above ``zero_above``."""
    if rate > zero_above:
        return ZERO
    return weight - rate * weight


def relative_points(x: Decimal, region_avg: Decimal, weight: Decimal) -> Decimal:
    """§5.3 speeding/fatigue curve with half = weight/2: x ≤ A → half + (A−x)/A·half; A < x < 2A →
    (2A−x)/A·half; x ≥ 2A → 0. With A = 0 the region had none: x = 0 scores full, anything else 0."""
    half = weight / 2
    if region_avg == 0:
        return weight if x == 0 else ZERO
    if x <= region_avg:
        return half + (region_avg - x) / region_avg * half
    if x < 2 * region_avg:
        return (2 * region_avg - x) / region_avg * half
    return ZERO


def _component(name, record, basis, weight, fn, decimals, rule) -> dict:
    frac = rate_fraction(record, basis) if record is not None else None
    w = to_decimal(weight)
    if frac is None:
        pts, reason = ZERO, (record or {}).get("reason") or "no data"
    else:
        pts, reason = fn(frac), None
    return {"label": LABELS.get(name, name), "rate": None if frac is None else float(frac),
            "weight": float(w), "points": float(round_half_up(pts, decimals)), "rule": rule, "reason": reason}


def _total(components: dict, decimals: int) -> tuple[float, float]:
    total = sum((to_decimal(c["points"]) for c in components.values() if c.get("assessed", True)), ZERO)
    max_pts = sum((to_decimal(c["weight"]) for c in components.values() if c.get("assessed", True)), ZERO)
    return float(round_half_up(total, decimals)), float(max_pts)


def agency_score(rates: dict[str, dict], cfg) -> dict | None:
    """道路运输管理机构 table over one population's rates (None when the population is empty)."""
    if to_decimal(rates["network_rate"]["denominator"]) == 0:
        return None
    b, dec = cfg["score.rate_basis"], cfg["report.decimals"]
    k = lambda n: to_decimal(cfg[n])  # noqa: E731
    comps = {
        "network_rate": _component("network_rate", rates["network_rate"], b, cfg["score.network_weight"],
                                   lambda r: linear_points(r, k("score.network_weight"), k("score.network_zero_below")),
                                   dec, f"入网率×{cfg['score.network_weight']:g}; <{cfg['score.network_zero_below']:.0%}→0"),
        "online_rate": _component("online_rate", rates["online_rate"], b, cfg["score.online_weight"],
                                  lambda r: linear_points(r, k("score.online_weight")),
                                  dec, f"上线率×{cfg['score.online_weight']:g}"),
        "drift_rate": _component("drift_rate", rates["drift_rate"], b, cfg["score.drift_weight"],
                                 lambda r: drift_points(r, k("score.drift_weight"), k("score.drift_zero_above")),
                                 dec, f"{cfg['score.drift_weight']:g}−漂移率×{cfg['score.drift_weight']:g}; "
                                      f">{cfg['score.drift_zero_above']:.0%}→0"),
        "track_integrity_rate": _component("track_integrity_rate", rates["track_integrity_rate"], b,
                                           cfg["score.track_weight"],
                                           lambda r: linear_points(r, k("score.track_weight"), k("score.track_zero_below")),
                                           dec, f"轨迹完整率×{cfg['score.track_weight']:g}; "
                                                f"<{cfg['score.track_zero_below']:.0%}→0"),
        "data_qualified_rate": _component("data_qualified_rate", rates["data_qualified_rate"], b,
                                          cfg["score.quality_weight"],
                                          lambda r: linear_points(r, k("score.quality_weight"), k("score.quality_zero_below")),
                                          dec, f"数据合格率×{cfg['score.quality_weight']:g}; "
                                               f"<{cfg['score.quality_zero_below']:.0%}→0"),
    }
    total, max_pts = _total(comps, dec)
    return {"table": "道路运输管理机构", "total": total, "max_points": max_pts, "basis": b, "components": comps}


def enterprise_score(rates: dict[str, dict], region_rates: dict[str, dict], cfg) -> dict | None:
    """道路运输企业 table; speeding and fatigue relative to the region averages in ``region_rates``."""
    if to_decimal(rates["network_rate"]["denominator"]) == 0:
        return None
    b, dec = cfg["score.rate_basis"], cfg["report.decimals"]
    k = lambda n: to_decimal(cfg[n])  # noqa: E731
    comps = {
        "network_rate": _component("network_rate", rates["network_rate"], b, cfg["score.ent_network_weight"],
                                   lambda r: linear_points(r, k("score.ent_network_weight"),
                                                           k("score.ent_network_zero_below")),
                                   dec, f"入网率×{cfg['score.ent_network_weight']:g}; "
                                        f"<{cfg['score.ent_network_zero_below']:.0%}→0"),
        "online_rate": _component("online_rate", rates["online_rate"], b, cfg["score.ent_online_weight"],
                                  lambda r: linear_points(r, k("score.ent_online_weight")),
                                  dec, f"上线率×{cfg['score.ent_online_weight']:g}"),
        "track_integrity_rate": _component("track_integrity_rate", rates["track_integrity_rate"], b,
                                           cfg["score.ent_track_weight"],
                                           lambda r: linear_points(r, k("score.ent_track_weight"),
                                                                   k("score.ent_track_zero_below")),
                                           dec, f"轨迹完整率×{cfg['score.ent_track_weight']:g}; "
                                                f"<{cfg['score.ent_track_zero_below']:.0%}→0"),
        "data_qualified_rate": _component("data_qualified_rate", rates["data_qualified_rate"], b,
                                          cfg["score.ent_quality_weight"],
                                          lambda r: linear_points(r, k("score.ent_quality_weight"),
                                                                  k("score.ent_quality_zero_below")),
                                          dec, f"数据合格率×{cfg['score.ent_quality_weight']:g}; "
                                               f"<{cfg['score.ent_quality_zero_below']:.0%}→0"),
        "drift_rate": _component("drift_rate", rates["drift_rate"], b, cfg["score.ent_drift_weight"],
                                 lambda r: drift_points(r, k("score.ent_drift_weight"), k("score.ent_drift_zero_above")),
                                 dec, f"{cfg['score.ent_drift_weight']:g}−漂移率×{cfg['score.ent_drift_weight']:g}; "
                                      f">{cfg['score.ent_drift_zero_above']:.0%}→0"),
    }
    for name, key in (("avg_overspeed_count", "score.ent_overspeed_weight"),
                      ("avg_fatigue_seconds", "score.ent_fatigue_weight")):
        region_avg = rate_fraction(region_rates[name], b)
        w = k(key)
        if region_avg is None:
            comps[name] = {"label": LABELS[name], "rate": None, "weight": float(w), "points": 0.0,
                           "region_average": None, "rule": "相对全区平均值A", "reason": "全区无上线车辆 (no region average)"}
            continue
        comp = _component(name, rates[name], b, cfg[key], lambda x, a=region_avg, w=w: relative_points(x, a, w),
                          dec, f"x≤A: {w / 2:g}+(A−x)/A×{w / 2:g}; A<x<2A: (2A−x)/A×{w / 2:g}; x≥2A: 0")
        comp["region_average"] = float(region_avg)
        comps[name] = comp
    comps["check_response_rate"] = {
        "label": "平台查岗响应率", "rate": None, "weight": float(cfg["score.ent_check_weight"]), "points": 0.0,
        "rule": "查岗响应次数/查岗次数", "assessed": False,
        "reason": "未考核：归档中无查岗记录 (no 查岗 data in the archive; excluded from max_points)"}
    total, max_pts = _total(comps, dec)
    return {"table": "道路运输企业", "total": total, "max_points": max_pts, "basis": b, "components": comps}
