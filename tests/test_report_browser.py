"""report.html in real headless Chromium: the page renders (non-blank screenshot with the chart colours)
and loads nothing but itself. Screenshot saved under test-artifacts/."""
import base64
import subprocess
from pathlib import Path

import pytest

from roadwatch.models.config import Config
from roadwatch.streams.reports import build_monthly_report, write_report
from report_fixtures import fleet, make_registry, vd

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")]

# chart palette (streams/reports/charts.py) as RGB: blue line/bars, red, green
CHART_COLOURS = [(0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28), (0x2C, 0xA0, 0x2C)]

COUNT_COLOURS_JS = """async (src) => {
  const img = new Image(); img.src = src; await img.decode();
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data; const s = new Set();
  for (let i = 0; i < d.length; i += 4) s.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  return {width: img.width, height: img.height, colours: Array.from(s)};
}"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    vs = fleet({"客运班车": 30, "旅游包车": 20, "危险货物运输车辆": 50}, enterprise=lambda i: f"E{i % 6}",
               county=lambda i: ("黄石港区", "下陆区", "大冶市")[i % 3])
    rows = []
    for month, share in (("2020-05", 0.7), ("2020-06", 0.8), ("2020-07", 0.9)):
        for i, v in enumerate(vs[:int(len(vs) * share)]):
            rows.append(vd(v["plate"], f"{month}-10", pings=500, qualified=480 + i % 20, km_total=200.0,
                           km_incomplete=float(i % 30), drift_points=1 if i % 25 == 0 else 0,
                           overspeed_count=i % 4, fatigue_s=float(60 * (i % 5))))
    rep = build_monthly_report(rows, make_registry(vs), "2020-07", Config(), "2020-08-01T00:00:00+08:00")
    out = tmp_path_factory.mktemp("report")
    write_report(rep, out)
    return out


def test_report_html_renders_in_headless_chromium(report_dir, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "report_monthly.png"
    png.unlink(missing_ok=True)
    html = report_dir / "report.html"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1280,1600", html.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)

    # decode the PNG in the browser (no imaging library in the venv) and look at the pixels
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            info = page.evaluate(COUNT_COLOURS_JS, "data:image/png;base64," + base64.b64encode(data).decode())
        finally:
            browser.close()
    colours = {(c >> 16 & 255, c >> 8 & 255, c & 255) for c in info["colours"]}
    assert len(colours) >= 50, f"only {len(colours)} colours: blank page?"
    for rgb in CHART_COLOURS:
        assert rgb in colours, f"chart colour {rgb} not on screen: SVG charts did not render"


def test_report_html_requests_nothing_external(report_dir):
    playwright = pytest.importorskip("playwright.sync_api")
    requested = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("request", lambda r: requested.append(r.url))
            page.goto((report_dir / "report.html").as_uri())
            assert page.locator("svg").count() >= 6
            assert "月上线率为" in page.locator(".narrative").inner_text()
        finally:
            browser.close()
    assert requested == [(report_dir / "report.html").as_uri()]
