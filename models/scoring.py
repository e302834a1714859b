"""联网联控 assessment scores (docs/legal-basis.md §8, 交运发〔2016〕160号 annex as transcribed).

Two tables, every weight and zero-score threshold a ``score.*`` key (provinces deviate):

- 道路运输管理机构 (agency): 入网 rate×5 (< 90 % → 0); 上线 rate×10; 漂移 15 − rate×15 (> 5 % → 0);
  轨迹 rate×40 (< 70 % → 0); 合格 rate×30 (< 80 % → 0).
- 道路运输企业 (enterprise): 入网 5, 上线 5, 轨迹 15, 合格 15, 漂移 10, plus 平均超速次数 20 and 平均疲劳驾驶
  时长 20 scored against the region average A — x ≤ A: 10 + (A−x)/A×10; A < x < 2A: (2A−x)/A×10;
  x ≥ 2A: 0 — and 平台查岗响应率 10: the 查岗响应率 of the JT/T 809 platform that forwards the enterprise's
  vehicles (not assessed, and out of max_points, when none does or it was not inspected).

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


# The five rate items both 2016 tables share: (config-key stem, rule text, points function kind).
_RATE_ITEMS = {
    "network_rate": ("network", "入网率×{w:g}; <{z:.0%}→0", "linear_zero"),
    "online_rate": ("online", "上线率×{w:g}", "linear"),
    "drift_rate": ("drift", "{w:g}−漂移率×{w:g}; >{z:.0%}→0", "drift"),
    "track_integrity_rate": ("track", "轨迹完整率×{w:g}; <{z:.0%}→0", "linear_zero"),
    "data_qualified_rate": ("quality", "数据合格率×{w:g}; <{z:.0%}→0", "linear_zero"),
}


def _rate_components(rates: dict[str, dict], cfg, prefix: str, order: tuple) -> dict:
    """The rate items of one table; ``prefix`` selects its keys (``score.`` agency, ``score.ent_`` enterprise)."""
    b, dec = cfg["score.rate_basis"], cfg["report.decimals"]
    comps = {}
    for name in order:
        stem, rule, kind = _RATE_ITEMS[name]
        w_key = f"{prefix}{stem}_weight"
        z_key = f"{prefix}{stem}_zero_above" if kind == "drift" else f"{prefix}{stem}_zero_below"
        w = to_decimal(cfg[w_key])
        z = to_decimal(cfg[z_key]) if kind != "linear" else None
        if kind == "drift":
            points = (lambda r, w=w, z=z: drift_points(r, w, z))
        elif kind == "linear_zero":
            points = (lambda r, w=w, z=z: linear_points(r, w, z))
        else:
            points = (lambda r, w=w: linear_points(r, w))
        text = rule.format(w=cfg[w_key], z=cfg[z_key] if z is not None else 0)
        comps[name] = _component(name, rates[name], b, cfg[w_key], points, dec, text)
    return comps


def agency_score(rates: dict[str, dict], cfg) -> dict | None:
    """道路运输管理机构 table over one population's rates (None when the population is empty)."""
    if to_decimal(rates["network_rate"]["denominator"]) == 0:
        return None
    b, dec = cfg["score.rate_basis"], cfg["report.decimals"]
    comps = _rate_components(rates, cfg, "score.", ("network_rate", "online_rate", "drift_rate",
                                                   "track_integrity_rate", "data_qualified_rate"))
    total, max_pts = _total(comps, dec)
    return {"table": "道路运输管理机构", "total": total, "max_points": max_pts, "basis": b, "components": comps}


def _check_component(check_rate: dict | None, cfg, basis: str, dec: int) -> dict:
    """平台查岗响应率 × weight, from the 查岗响应率 of the platform that forwards the enterprise's vehicles
    (JT/T 809, models/platform_rates.py). Not assessed (and out of max_points) when its vehicles reach us
    through no platform, or that platform was not inspected in the month."""
    w = cfg["score.ent_check_weight"]
    rule = "查岗响应次数/查岗次数×{:g}".format(w)
    if check_rate is None or to_decimal(check_rate["denominator"]) == 0:
        why = ("未考核：企业车辆未经JT/T 809平台转发 (no platform forwards this enterprise's vehicles)"
               if check_rate is None else "未考核：本月未对其平台查岗 (its platform was not inspected this month)")
        return {"label": "平台查岗响应率", "rate": None, "weight": float(w), "points": 0.0, "rule": rule,
                "assessed": False, "reason": why + "; excluded from max_points"}
    comp = _component("check_response_rate", check_rate, basis, w, lambda r: linear_points(r, to_decimal(w)), dec, rule)
    comp["label"] = "平台查岗响应率"
    comp["platform"] = check_rate.get("center_id")
    return comp


def enterprise_score(rates: dict[str, dict], region_rates: dict[str, dict], cfg,
                     check_rate: dict | None = None) -> dict | None:
    """道路运输企业 table; speeding and fatigue relative to the region averages in ``region_rates``;
    ``check_rate`` is the 查岗响应率 record of the enterprise's platform (None: not assessed)."""
    if to_decimal(rates["network_rate"]["denominator"]) == 0:
        return None
    b, dec = cfg["score.rate_basis"], cfg["report.decimals"]
    k = lambda n: to_decimal(cfg[n])  # noqa: E731
    comps = _rate_components(rates, cfg, "score.ent_", ("network_rate", "online_rate", "track_integrity_rate",
                                                       "data_qualified_rate", "drift_rate"))
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
    comps["check_response_rate"] = _check_component(check_rate, cfg, b, dec)
    total, max_pts = _total(comps, dec)
    return {"table": "道路运输企业", "total": total, "max_points": max_pts, "basis": b, "components": comps}
