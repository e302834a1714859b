"""Dependency audit: ``pip-audit`` over the installed environment (the venv running the tests).

Fails on any known vulnerability. Skips — with the reason — only when no vulnerability service can actually
audit the environment: unreachable (no network), or answering without data for every package (a registry
mirror without the JSON API makes pip-audit report "No known vulnerabilities found" after auditing nothing;
that must not count as a pass).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = ("ConnectionError", "NameResolutionError", "Max retries exceeded", "Temporary failure in name resolution",
               "timed out", "Network is unreachable", "ProxyError")


def _pip_audit() -> list[str]:
    exe = Path(sys.executable).parent / "pip-audit"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pip-audit")
    if found is None:
        pytest.fail("pip-audit is not installed (it is a dev dependency in pyproject.toml)")
    return [found]


def _run(service: str, tmp_path: Path) -> tuple[str, dict | str]:
    out = tmp_path / f"audit-{service}.json"
    try:
        r = subprocess.run(_pip_audit() + ["--skip-editable", "--progress-spinner", "off", "-s", service,
                                           "-f", "json", "-o", str(out)],
                           capture_output=True, text=True, timeout=150, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "unreachable", f"{service}: no answer within 150 s"
    if not out.exists():
        err = r.stderr.strip().splitlines()
        if any(s in r.stderr for s in UNREACHABLE):
            return "unreachable", f"{service}: {err[-1][:200] if err else 'no output'}"
        pytest.fail(f"pip-audit ({service}) failed with exit {r.returncode}:\n{r.stderr[-2000:]}")
    return "ok", json.loads(out.read_text())


def test_installed_dependencies_have_no_known_vulnerabilities(tmp_path, capsys):
    reasons = []
    for service in ("pypi", "osv"):
        status, res = _run(service, tmp_path)
        if status != "ok":
            reasons.append(res)
            continue
        deps = res["dependencies"]
        audited = [d for d in deps if "skip_reason" not in d]
        if not audited:
            reasons.append(f"{service}: reachable but returned no data for any of {len(deps)} packages "
                           f"(e.g. {deps[0]['skip_reason'] if deps else 'no packages'})")
            continue
        vulns = [(d["name"], d["version"], v["id"], v.get("fix_versions")) for d in audited for v in d["vulns"]]
        with capsys.disabled():
            print(f"\n[audit] {service}: {len(audited)} of {len(deps)} packages audited, {len(vulns)} known "
                  f"vulnerabilities")
        assert vulns == [], "\n".join(f"{n} {ver}: {vid} (fixed in {fix})" for n, ver, vid, fix in vulns)
        return
    pytest.skip("no vulnerability service could audit the environment: " + "; ".join(reasons))
