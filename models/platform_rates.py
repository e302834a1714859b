"""The two platform indicators of the 联网联控 assessment (docs/legal-basis.md §8).

- 平台连通率 = 累计在线时间 / 总时间, in minutes: the union of a platform's main-link sessions (login to
  logout or loss of the link) within the period, over the period's length. The period is the month, or
  the month up to the snapshot while it is still running. A link is counted online until the last frame
  received on it when it is lost without a logout (conservative: the gap to the loss is not credited).
- 平台查岗响应率 = 查岗响应次数 / 查岗次数: inspections (0x9301) sent in the period, answered (0x1301) by
  their deadline. A late answer is archived and shown as late but is not a response; an inspection that
  could not be delivered (platform offline) counts in the denominator.

Pure: sessions and inspections in, rate records out (numerator, denominator, percent, labels, snapshot),
rounded half-up with ``decimal`` like every other rate (models/rates.py).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from .rates import _num_out, percent

CONNECTIVITY = "platform_connectivity_rate"
INSPECTION = "inspection_response_rate"
LABELS = {CONNECTIVITY: "平台连通率", INSPECTION: "平台查岗响应率"}
TERMS = {CONNECTIVITY: ("累计在线时间(分钟)", "总时间(分钟)", "%"), INSPECTION: ("查岗响应次数", "查岗次数", "%")}


def online_seconds(sessions: Iterable[tuple[float, float]], start: float, end: float) -> Decimal:
    """Length of the union of ``(begin, end)`` intervals (epoch seconds) clipped to ``[start, end)``."""
    spans = sorted((max(a, start), min(b, end)) for a, b in sessions if b > start and a < end)
    total = Decimal(0)
    cur_a = cur_b = None
    for a, b in spans:
        if b <= a:
            continue
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += Decimal(repr(cur_b)) - Decimal(repr(cur_a))
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += Decimal(repr(cur_b)) - Decimal(repr(cur_a))
    return total


def _record(name: str, num: Decimal | int, den: Decimal | int, decimals: int, snapshot: str, reason: str) -> dict:
    num_label, den_label, unit = TERMS[name]
    p = percent(num, den, decimals)
    return {"name": name, "label": LABELS[name], "numerator": _num_out(num), "denominator": _num_out(den),
            "numerator_label": num_label, "denominator_label": den_label, "unit": unit, "snapshot": snapshot,
            "percent": None if p is None else float(p), "reason": None if p is not None else reason}


def connectivity_rate(sessions: Iterable[tuple[float, float]], start: float, end: float, decimals: int,
                      snapshot: str) -> dict:
    """平台连通率 over ``[start, end)``; numerator and denominator in minutes rounded to 0.01 (the percent is
    computed from them, so the published figures reproduce; exact seconds are kept in ``trace``)."""
    secs = online_seconds(sessions, start, end)
    total = Decimal(repr(max(0.0, end - start)))
    num = (secs / 60).quantize(Decimal("0.01"))
    den = (total / 60).quantize(Decimal("0.01"))
    rec = _record(CONNECTIVITY, num, den, decimals, snapshot, "分母为0：统计期长度为0 (empty period)")
    rec["trace"] = {"online_s": float(secs), "period_s": float(total)}
    return rec


def inspection_rate(inspections: Iterable[dict], decimals: int, snapshot: str) -> dict:
    """平台查岗响应率 over the inspections of the period (dicts with ``status``: answered | late | missed |
    pending | undeliverable). Pending ones (deadline not yet passed) are left out of both counts."""
    counts: dict[str, int] = {}
    for i in inspections:
        counts[i["status"]] = counts.get(i["status"], 0) + 1
    den = sum(n for s, n in counts.items() if s != "pending")
    rec = _record(INSPECTION, counts.get("answered", 0), den, decimals, snapshot,
                  "分母为0：统计期内未查岗 (no inspection sent in the period)")
    rec["trace"] = {k: counts.get(k, 0) for k in ("answered", "late", "missed", "undeliverable", "pending")}
    return rec


def inspection_status(sent_ts: float | None, deadline_ts: float | None, answered_ts: float | None,
                      delivered: bool, now: float) -> str:
    """queued (not sent yet) | undeliverable | answered (by the deadline) | late | pending | missed."""
    if sent_ts is None:
        return "queued"
    if not delivered:
        return "undeliverable"
    if answered_ts is not None:
        return "answered" if deadline_ts is None or answered_ts <= deadline_ts else "late"
    return "pending" if deadline_ts is not None and now <= deadline_ts else "missed"
