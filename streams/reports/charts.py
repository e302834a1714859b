"""Static inline-SVG charts for the HTML report (no JavaScript, no external assets)."""
from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def line_chart(x_labels: list[str], series: dict[str, list], title: str, unit: str = "%",
               width: int = 560, height: int = 300) -> str:
    """Lines over months; a None value breaks the line (no data that month)."""
    left, right, top, bottom = 50, 150, 34, 40
    pw, ph = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    lo = min(values) if values else 0.0
    hi = max(values) if values else 100.0
    if hi <= 0:
        lo, hi = 0.0, 1.0
    elif unit == "%" and lo >= 40 and hi <= 100:     # high rates: zoom in below, keep the 100 % line
        lo, hi = max(0.0, math.floor(lo / 10) * 10 - 10), 100.0
    else:                                             # small rates or averages: 0 to a round top
        step = 10 ** math.floor(math.log10(hi * 1.2))
        lo, hi = 0.0, math.ceil(hi * 1.2 / step) * step
    n = len(x_labels)
    x = lambda i: left + (pw * i / (n - 1) if n > 1 else pw / 2)  # noqa: E731
    y = lambda v: top + ph - (v - lo) / (hi - lo) * ph  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="20" font-size="15" font-weight="bold">{escape(title)}</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        yy = y(v)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#dddddd"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">{_fmt(v)}{unit}</text>')
    for i, lab in enumerate(x_labels):
        out.append(f'<text x="{x(i):.1f}" y="{top + ph + 18}" font-size="11" text-anchor="middle">{escape(lab)}</text>')
    for si, (name, vs) in enumerate(series.items()):
        color = PALETTE[si % len(PALETTE)]
        segs, cur = [], []
        for i, v in enumerate(vs):
            if v is None:
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append((x(i), y(v)))
        if cur:
            segs.append(cur)
        for seg in segs:
            pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2.5"/>')
            for a, b in seg:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{color}"/>')
        ly = top + 14 + si * 20
        out.append(f'<rect x="{left + pw + 14}" y="{ly - 9}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{left + pw + 32}" y="{ly + 1}" font-size="12">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbar_chart(items: list[tuple[str, float | None]], title: str, max_value: float, unit: str = "",
               color: str = PALETTE[0], width: int = 560, bar_h: int = 22) -> str:
    """Horizontal bars (rankings). None draws no bar and says 无数据."""
    left, right, top = 190, 70, 32
    height = top + max(1, len(items)) * (bar_h + 6) + 10
    pw = width - left - right
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="8" y="20" font-size="15" font-weight="bold">{escape(title)}</text>']
    for i, (label, v) in enumerate(items):
        yy = top + i * (bar_h + 6)
        out.append(f'<text x="{left - 8}" y="{yy + bar_h * 0.7:.1f}" font-size="12" text-anchor="end">'
                   f'{escape(label[:24])}</text>')
        if v is None:
            out.append(f'<text x="{left + 4}" y="{yy + bar_h * 0.7:.1f}" font-size="12" fill="#888">无数据</text>')
            continue
        w = 0 if max_value <= 0 else max(1.0, pw * min(v, max_value) / max_value)
        out.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(f'<text x="{left + w + 5:.1f}" y="{yy + bar_h * 0.7:.1f}" font-size="12">{_fmt(v)}{unit}</text>')
    out.append("</svg>")
    return "".join(out)


def grouped_bars(groups: list[str], series: dict[str, list], title: str, unit: str = "%",
                 max_value: float = 100.0, width: int = 560, height: int = 320) -> str:
    """Vertical bars: one group per category, one bar per rate."""
    left, right, top, bottom = 50, 150, 34, 44
    pw, ph = width - left - right, height - top - bottom
    ng, ns = max(1, len(groups)), max(1, len(series))
    gw = pw / ng
    bw = gw * 0.8 / ns
    y = lambda v: top + ph - min(v, max_value) / max_value * ph  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="20" font-size="15" font-weight="bold">{escape(title)}</text>']
    for k in range(5):
        v = max_value * k / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#dddddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{_fmt(v)}{unit}</text>')
    for gi, g in enumerate(groups):
        gx = left + gi * gw + gw * 0.1
        out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 18}" font-size="12" '
                   f'text-anchor="middle">{escape(g)}</text>')
        for si, (name, vs) in enumerate(series.items()):
            v = vs[gi]
            if v is None:
                continue
            color = PALETTE[si % len(PALETTE)]
            out.append(f'<rect x="{gx + si * bw:.1f}" y="{y(v):.1f}" width="{bw * 0.9:.1f}" '
                       f'height="{top + ph - y(v):.1f}" fill="{color}"><title>{escape(name)} {_fmt(v)}{unit}'
                       f'</title></rect>')
    for si, name in enumerate(series):
        ly = top + 14 + si * 20
        out.append(f'<rect x="{left + pw + 14}" y="{ly - 9}" width="12" height="12" '
                   f'fill="{PALETTE[si % len(PALETTE)]}"/>')
        out.append(f'<text x="{left + pw + 32}" y="{ly + 1}" font-size="12">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
