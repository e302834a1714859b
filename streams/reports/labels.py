"""Chinese wording for the codes the report data carries (``trace`` and the review queue keep the codes, for
machines and for trace_*.csv); the pages people read show these labels instead."""
from __future__ import annotations

REASONS = {
    "unknown_plate": "车牌未在登记库中",
    "not_in_population": "非“两客一危”车辆（不参与统计）",
    "not_in_network": "登记为未入网但有数据",
    "duplicate_row": "同一车辆同一日的重复记录",
    "calibration_invalid": "计量检定证书不在有效期内",
    "calibration_missing": "无计量检定证书记录",
    "low_plate_confidence": "车牌识别置信度偏低",
    "device_legal_review_missing": "设备未经法制审核",
    "device_technical_review_missing": "设备未经技术审核",
    "device_signage_missing": "设备未设置明显标志",
    "device_announcement_missing": "设备设置地点未向社会公布",
}
BASIS = {"rounded": "按公布的（四舍五入后的）百分比计分", "exact": "按精确比率计分"}


def reason_label(code: str) -> str:
    """The reader's wording of an exclusion or review reason (record-format errors share one label)."""
    return REASONS.get(code, "记录格式不合格")


def basis_label(basis: str) -> str:
    return BASIS.get(basis, basis)
