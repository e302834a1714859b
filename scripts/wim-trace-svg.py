#!/usr/bin/env python3
"""A picture of `roadwatch bench --wim-trace` files: each timed WIM verdict of one part as a dot, seconds into
the part against reading → verdict ms, one colour per file, with the 200 ms goal as a line. Whether the slow
verdicts come together (a stall) or spread out (a backlog) is what the trace is for (docs/performance.md).

    .venv/bin/python scripts/wim-trace-svg.py --part c --out trace.svg "before=old.csv" "after=new.csv"
"""
from __future__ import annotations

import argparse
import csv
from html import escape

COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 420, 60, 150, 20, 45


def read(path: str, part: str) -> list[tuple[float, float]]:
    with open(path, encoding="utf-8") as fh:
        return [(float(r["sent_s"]), float(r["verdict_ms"])) for r in csv.DictReader(fh) if r["part"] == part]


def svg(series: list[tuple[str, list[tuple[float, float]]]], goal_ms: float = 200.0) -> str:
    xmax = max((x for _, pts in series for x, _ in pts), default=1.0) or 1.0
    ymax = max([goal_ms * 1.5] + [y for _, pts in series for _, y in pts])
    ymax = (int(ymax / 100) + 1) * 100
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + x / xmax * pw

    def py(y: float) -> float:
        return TOP + ph - y / ymax * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="12"><rect width="{W}" height="{H}" fill="white"/>']
    for y in range(0, ymax + 1, 100):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y}</text>')
    for x in range(0, int(xmax) + 1, max(1, int(xmax) // 10)):
        out.append(f'<text x="{px(x):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{x}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(goal_ms):.1f}" y2="{py(goal_ms):.1f}" stroke="#555" '
               f'stroke-dasharray="6 4"/><text x="{LEFT + pw + 6}" y="{py(goal_ms) + 4:.1f}">goal {goal_ms:.0f} ms'
               f'</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 8}" text-anchor="middle">seconds into the part (reading sent)'
               f'</text><text x="14" y="{TOP + ph / 2}" transform="rotate(-90 14 {TOP + ph / 2})" '
               f'text-anchor="middle">reading → verdict, ms</text>')
    for i, (label, pts) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{c}" fill-opacity="0.6"/>' for x, y in pts]
        over = sum(y > goal_ms for _, y in pts)
        out.append(f'<circle cx="{LEFT + pw + 12}" cy="{TOP + 30 + 34 * i}" r="5" fill="{c}"/>'
                   f'<text x="{LEFT + pw + 22}" y="{TOP + 34 + 34 * i}">{escape(label)}</text>'
                   f'<text x="{LEFT + pw + 22}" y="{TOP + 48 + 34 * i}" fill="#555">{over} of {len(pts)} '
                   f'over the goal</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="LABEL=FILE.csv (a --wim-trace file)")
    ap.add_argument("--part", default="c", help="c (default) or c1")
    ap.add_argument("--goal-ms", type=float, default=200.0, help="the line drawn (default 200: issue 19's WIM goal)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    series = []
    for spec in a.files:
        label, _, path = spec.partition("=")
        series.append((label, read(path or label, a.part)))
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write(svg(series, a.goal_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
