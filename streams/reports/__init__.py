"""Monthly regulator report: ``build_monthly_report`` (archive rows → dict) and ``write_report`` (dict →
report.json / .html / .xlsx / .csv + trace CSVs). See docs/reports.md."""
from .build import build_monthly_report
from .write import REPORT_FILES, write_report

__all__ = ["build_monthly_report", "write_report", "REPORT_FILES"]
