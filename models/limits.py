"""Statutory gross-mass limits (超限认定, 62号令 Art. 3) and informational axle-load findings.

Pure functions: no registry lookups, no I/O. The caller passes the vehicle facts (from the reading and the
registry) and gets back the applied limit with its legal basis and every adjustment, so that the verdict and
the evidence package can show how the figure was reached (docs/legal-basis.md §1).

Art. 3 figures are [V] and stay literal here; adjustments whose source is [S]/[U] come from config keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config

LIMIT_VERSION = "交通运输部令2016年第62号（2021年第12号修订）第三条"
_REG = "《超限运输车辆行驶公路管理规定》"

# (axle count, kind) → (kg, Art. 3 ¶1 item). Axle count = physical axles (Art. 3 ¶2(1)). [V]
_BASE: dict[tuple[int, str], tuple[int, str]] = {
    (2, "truck"): (18_000, "第四项 二轴货车"),
    (2, "train"): (18_000, "第四项 二轴货车"),
    (3, "truck"): (25_000, "第五项 三轴货车"),
    (3, "train"): (27_000, "第五项 三轴汽车列车"),
    (4, "truck"): (31_000, "第六项 四轴货车"),
    (4, "train"): (36_000, "第六项 四轴汽车列车"),
    (5, "truck"): (43_000, "第七项 五轴汽车列车"),
    (5, "train"): (43_000, "第七项 五轴汽车列车"),
}
_SIX_PLUS = (49_000, "第八项 六轴及六轴以上汽车列车")
_SIX_PLUS_SINGLE_DRIVE = (46_000, "第八项 六轴及六轴以上汽车列车（牵引车驱动轴为单轴）")


@dataclass(frozen=True)
class Limit:
    limit_kg: int
    base_kg: int
    basis: str                      # legal basis text of the base figure
    version: str                    # regulation version the figures come from
    adjustments: list = field(default_factory=list)   # [{kind, delta_kg | cap_kg, basis}]

    def as_dict(self) -> dict:
        return {"limit_kg": self.limit_kg, "base_kg": self.base_kg, "basis": self.basis,
                "version": self.version, "adjustments": list(self.adjustments)}


def gross_limit(axle_count: int, vehicle_kind: str, cfg: Config, *, single_drive_axle: bool = False,
                single_tyre_axles: int = 0, air_suspension: bool = False,
                registered_total_kg: float = 0.0) -> Limit:
    """Art. 3 gross limit for one vehicle. ``vehicle_kind`` is ``truck`` (货车) or ``train`` (汽车列车).

    Adjustments: −``overlimit.single_tyre_reduction_kg`` per non-drive axle with single tyres (Art. 3 ¶2(2));
    +``overlimit.air_suspension_bonus_kg`` for trucks with ``overlimit.air_suspension_axles`` axles and air
    suspension (124号 note 4); a 2-axle truck is also capped by its 行驶证 total mass (173号).
    """
    if axle_count < 2:
        raise ValueError(f"axle_count must be ≥ 2, got {axle_count}")
    if vehicle_kind not in ("truck", "train"):
        raise ValueError(f"vehicle_kind must be truck or train, got {vehicle_kind!r}")
    if axle_count >= 6:
        base, item = _SIX_PLUS_SINGLE_DRIVE if (vehicle_kind == "train" and single_drive_axle) else _SIX_PLUS
    else:
        base, item = _BASE[(axle_count, vehicle_kind)]
    limit = base
    adjustments: list[dict] = []
    if single_tyre_axles > 0:
        delta = -int(cfg["overlimit.single_tyre_reduction_kg"]) * int(single_tyre_axles)
        limit += delta
        adjustments.append({"kind": "single_tyre_axles", "axles": int(single_tyre_axles), "delta_kg": delta,
                            "basis": f"{_REG}第三条第二款第（二）项；交公路发〔2016〕124号 注2"})
    if air_suspension and vehicle_kind == "truck" and axle_count in cfg["overlimit.air_suspension_axles"]:
        delta = int(cfg["overlimit.air_suspension_bonus_kg"])
        limit += delta
        adjustments.append({"kind": "air_suspension", "delta_kg": delta,
                            "basis": "交公路发〔2016〕124号 注4；GB 1589-2016（驱动轴双胎+空气悬架）"})
    if axle_count == 2 and vehicle_kind == "truck" and registered_total_kg and registered_total_kg < limit:
        cap = int(registered_total_kg) if float(registered_total_kg).is_integer() else registered_total_kg
        adjustments.append({"kind": "registered_total_cap", "cap_kg": cap, "delta_kg": cap - limit,
                            "basis": "交公路发〔2017〕173号：二轴货车不得超过行驶证核定总质量"})
        limit = cap
    return Limit(limit_kg=limit, base_kg=base, basis=f"{_REG}第三条第一款{item}",
                 version=LIMIT_VERSION, adjustments=adjustments)


def exceeds(gross_kg: float, limit_kg: float) -> bool:
    """Art. 3 says 超过: strictly greater."""
    return gross_kg > limit_kg


# --- axle loads: informational only (docs/legal-basis.md §1: unverified; Art. 43 fines gross mass only) ----------

def axle_groups(spacings_m: list[float], max_spacing_m: float) -> list[list[int]]:
    """Indices of axles grouped by spacing < ``max_spacing_m`` (spacing i is between axle i and i+1)."""
    groups = [[0]]
    for i, s in enumerate(spacings_m):
        if s < max_spacing_m:
            groups[-1].append(i + 1)
        else:
            groups.append([i + 1])
    return groups


def _group_limit(group: list[int], spacings_m: list[float], is_steer: bool, is_drive: bool,
                 cfg: Config) -> tuple[float | None, str]:
    n = len(group)
    if n == 1:
        if is_steer:
            return cfg["axle.single_single_tyre_kg"], "single axle, single tyres (steer)"
        if is_drive:
            return cfg["axle.drive_axle_kg"], "single drive axle"
        return cfg["axle.single_dual_tyre_kg"], "single axle, dual tyres"
    inner = [spacings_m[i] for i in group[:-1]]
    if n == 2:
        s = inner[0]
        edges, kgs = cfg["axle.tandem_spacings_m"], cfg["axle.tandem_kg"]
        for edge, kg in zip(edges, kgs):
            if s < edge:
                return kg, f"tandem, spacing {s:g} m < {edge:g} m"
        return None, f"tandem, spacing {s:g} m outside the table"
    if n == 3:
        s = max(inner)
        lo, hi = cfg["axle.tridem_spacings_m"]
        if s <= lo:
            return cfg["axle.tridem_kg"][0], f"tridem, spacing ≤ {lo:g} m"
        if s <= hi:
            return cfg["axle.tridem_kg"][1], f"tridem, spacing {lo:g}–{hi:g} m"
        return None, f"tridem, spacing {s:g} m outside the table"
    return None, f"group of {n} axles: no table value"


def axle_findings(loads_kg: list[float], spacings_m: list[float], cfg: Config) -> list[dict]:
    """Axle groups whose load exceeds the (unverified) GB 1589 axle-load table. Never a fine.

    Assumes the first axle is the steer axle and the first group behind it carries the drive axle; the
    reading does not say which axles are driven, so these findings are hints for the reviewer.
    """
    if not cfg["axle.check_enabled"] or not loads_kg:
        return []
    if len(spacings_m) != len(loads_kg) - 1:
        return [{"kind": "no_spacings", "detail": "axle spacings missing: axle groups unknown", "over": False}]
    groups = axle_groups(spacings_m, cfg["axle.group_max_spacing_m"])
    out = []
    for gi, group in enumerate(groups):
        limit, desc = _group_limit(group, spacings_m, gi == 0, gi == 1, cfg)
        load = float(sum(loads_kg[i] for i in group))
        if limit is not None and load > limit:
            out.append({"kind": "axle_group_over", "axles": [i + 1 for i in group], "group": desc,
                        "load_kg": load, "limit_kg": limit, "excess_kg": round(load - limit, 1),
                        "over": True, "basis": "GB 1589-2016 轴荷限值（未经核实，仅供参考，不处罚）"})
    return out
