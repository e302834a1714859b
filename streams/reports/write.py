"""Write a report dict to disk: report.json / .html / .xlsx / .csv and the trace CSVs."""
from __future__ import annotations

import os
from pathlib import Path

import orjson

from .render_csv import render_rates_csv, render_trace_excluded_csv, render_trace_vehicles_csv
from .render_html import render_html
from .render_xlsx import render_xlsx

REPORT_FILES = ("report.json", "report.html", "report.xlsx", "report.csv", "trace_vehicles.csv",
                "trace_excluded.csv")


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers (console, downloads) never see a half-written file: write aside, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write every report file into ``out_dir`` (created if missing); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contents = {
        "report.json": orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS),
        "report.html": render_html(report).encode("utf-8"),
        "report.xlsx": render_xlsx(report),
        "report.csv": render_rates_csv(report).encode("utf-8"),
        "trace_vehicles.csv": render_trace_vehicles_csv(report).encode("utf-8"),
        "trace_excluded.csv": render_trace_excluded_csv(report).encode("utf-8"),
    }
    paths = []
    for name in REPORT_FILES:
        p = out / name
        _write_atomic(p, contents[name])
        paths.append(p)
    return paths
