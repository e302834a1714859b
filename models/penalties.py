"""Penalties for one weighing: road administration (超限, 62号令 Art. 43) and traffic police (超载, 道交法 Art. 92
+ 公安部令第163号 points). Two different tests against two different reference masses (docs/legal-basis.md §3,
§3.3); both are shown in the verdict, only the first is this system's case.

Percent thresholds are compared in exact integer-ish arithmetic (``a * 100 > pct * b``) rather than via a
rounded percentage, so a value just above a band edge is never rounded onto it.
"""
from __future__ import annotations

import math

from .config import Config

ART43_BASIS = "《超限运输车辆行驶公路管理规定》第四十三条第（二）项；《公路安全保护条例》第六十四条"
ART92_BASIS = "《道路交通安全法》第九十二条"
POINTS_BASIS = "《道路交通安全违法行为记分管理办法》（公安部令第163号）"


def road_penalty(excess_kg: float, cfg: Config) -> dict:
    """Art. 43(二): ≤ ``warning_max_kg`` over → warning; else ``fine_per_tonne_yuan`` per 1000 kg over
    (partial tonne per ``overlimit.tonne_rounding``), capped at ``fine_cap_yuan``."""
    if excess_kg <= 0:
        return {"action": "none", "fine_yuan": 0, "tonnes": 0, "basis": ART43_BASIS,
                "computation": "not over the limit"}
    warn = cfg["overlimit.warning_max_kg"]
    if excess_kg <= warn:
        return {"action": "warning", "fine_yuan": 0, "tonnes": 0, "basis": ART43_BASIS,
                "computation": f"excess {excess_kg:g} kg ≤ {warn:g} kg → 警告"}
    rounding = cfg["overlimit.tonne_rounding"]
    ratio = excess_kg / 1000.0
    tonnes = math.floor(ratio) if rounding == "floor" else math.ceil(ratio)
    per, cap = cfg["overlimit.fine_per_tonne_yuan"], cfg["overlimit.fine_cap_yuan"]
    raw = per * tonnes
    fine = min(raw, cap)
    comp = f"{excess_kg:g} kg → {tonnes} t ({rounding}) × {per} yuan = {raw} yuan"
    if raw > cap:
        comp += f", capped at {cap} yuan"
    return {"action": "fine", "fine_yuan": int(fine), "tonnes": tonnes, "rounding": rounding,
            "capped": raw > cap, "basis": ART43_BASIS, "computation": comp}


def police_assessment(gross_kg: float, rated_load_kg: float, curb_kg: float, registered_total_kg: float,
                      cfg: Config) -> dict:
    """Police 超载 test. Fine range vs 核定载质量 (load = gross − curb, tier edge strictly greater);
    points vs 最大允许总质量 (band edges inclusive, "以上"). Missing registry masses leave that part at 0
    with a ``*_reason``."""
    out: dict = {"fine_min_yuan": 0, "fine_max_yuan": 0, "points": 0,
                 "basis": f"{ART92_BASIS}；{POINTS_BASIS}"}
    if rated_load_kg > 0 and curb_kg > 0:
        over = gross_kg - curb_kg - rated_load_kg
        out["load_kg"] = round(gross_kg - curb_kg, 1)
        out["over_rated_load_pct"] = round(max(over, 0.0) * 100.0 / rated_load_kg, 2)
        if over > 0:
            high = cfg["police.high_tier_pct"]
            rng = cfg["police.fine_high_yuan"] if over * 100.0 > high * rated_load_kg else cfg["police.fine_low_yuan"]
            out["fine_min_yuan"], out["fine_max_yuan"] = int(rng[0]), int(rng[1])
    else:
        out["fine_reason"] = "rated_load_or_curb_unknown"
    if registered_total_kg > 0:
        over_total = gross_kg - registered_total_kg
        out["over_total_pct"] = round(max(over_total, 0.0) * 100.0 / registered_total_kg, 2)
        if over_total > 0:
            edges, points = cfg["police.points_pct"], cfg["police.points"]
            pts = points[0]
            for edge, p in zip(edges, points[1:]):
                if over_total * 100.0 >= edge * registered_total_kg:
                    pts = p
            out["points"] = int(pts)
    else:
        out["points_reason"] = "registered_total_unknown"
    return out
