"""Write a report dict to disk: report.json / .html / .xlsx / .csv and the trace CSVs.

``write_report`` writes the files into a directory the caller names (the CLI's ``--out``);
``write_report_set`` (month close) writes the set as one unit: a temporary sibling directory, the files,
a completion marker written last, then one rename. ``report_complete`` is the test of "done": a directory
without the marker (a kill -9 mid-write under an older layout, a copy by hand) is rebuilt.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import orjson

from .render_csv import (render_case_review_csv, render_rates_csv, render_trace_excluded_csv,
                         render_trace_vehicles_csv)
from .render_html import render_html

REPORT_FILES = ("report.json", "report.html", "report.xlsx", "report.csv", "trace_vehicles.csv",
                "trace_excluded.csv", "case_review.csv")


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers (console, downloads) never see a half-written file: write aside, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def render_xlsx(report: dict) -> bytes:
    """report.xlsx (``render_xlsx.render_xlsx``): openpyxl is imported when a report is written, not with
    this module: it was a fifth of a second of every worker's start."""
    from .render_xlsx import render_xlsx as render
    return render(report)


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
        "case_review.csv": render_case_review_csv(report).encode("utf-8"),
    }
    paths = []
    for name in REPORT_FILES:
        p = out / name
        _write_atomic(p, contents[name])
        paths.append(p)
    return paths


COMPLETE_MARKER = "COMPLETE.json"


def report_complete(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir`` holds a whole report set: the marker and every file it lists, unchanged in size."""
    out = Path(out_dir)
    try:
        marker = orjson.loads((out / COMPLETE_MARKER).read_bytes())
        files = marker["files"]
        return set(files) == set(REPORT_FILES) and all((out / n).stat().st_size == files[n]["bytes"] for n in files)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_report_set(report: dict, out_dir: str | os.PathLike) -> Path:
    """Write the report files as one unit into ``out_dir`` (replacing an incomplete set there).

    The files and then ``COMPLETE.json`` (names, sizes, sha256) go into ``.<name>.tmp-<pid>`` beside
    ``out_dir``, are flushed to disk, and the directory is renamed into place: a crash at any point leaves
    either no set, the previous (incomplete, hence rebuilt) set, or the whole new set."""
    out = Path(out_dir)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{out.name}.tmp-*"):          # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        paths = write_report(report, tmp)
        files = {}
        for p in paths:
            data = p.read_bytes()
            files[p.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        _write_atomic(tmp / COMPLETE_MARKER, orjson.dumps({"files": files}, option=orjson.OPT_INDENT_2))
        _fsync_dir(tmp)
        if out.exists():                                       # an incomplete set: moved aside, then removed
            old = parent / f".{out.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
