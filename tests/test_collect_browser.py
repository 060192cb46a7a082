"""The HTML report in a real browser: Debian's headless Chromium loads it from a file with no console messages, every
embedded plot decodes, and the screenshot shows rendered plots (not blank, not broken images)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from helpers import run
from test_collect_report import make_run

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--enable-logging=stderr", "--v=0",
]  # fmt: skip


def chromium(profile, *args):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install chromium (make setup installs it)")
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, "--user-data-dir=%s" % profile, *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("results"))
    run([sys.executable, "-m", "collect", "report", run_dir], timeout=900)
    return run_dir / "report.html"


def test_report_renders_without_console_messages(report, tmp_path):
    shot = tmp_path / "report.png"
    proc = chromium(tmp_path / "profile", "--window-size=1200,2600", "--screenshot=%s" % shot, report.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The report has no scripts: any console line (error, warning, failed resource) is a defect.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    rgb = img[..., :3]
    ink = (rgb.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert ink > 0.02, "screenshot is nearly blank (%.3f of pixels drawn)" % ink
    colourful = ((rgb.max(axis=2) - rgb.min(axis=2)) > 0.25).mean()  # plot lines/bars, not only black text
    assert colourful > 0.002, "no coloured plot pixels in the screenshot (%.4f)" % colourful
    shutil.copy(shot, report.parent / "report.png")  # kept next to the report for a human look


def test_every_plot_decodes_in_the_browser(report, tmp_path):
    """A probe copy of the report records each <img>'s decoded width in the DOM (no DevTools needed)."""
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load',()=>document.body.setAttribute('data-imgs',"
        "[...document.images].map(i=>i.complete&&i.naturalWidth>0?i.naturalWidth:0).join(',')))</script>"
    )
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    proc = chromium(tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-imgs="([^"]*)"', proc.stdout)
    assert m, "the probe did not run: %s" % proc.stdout[:500]
    widths = [int(w) for w in m.group(1).split(",")]
    assert len(widths) == report.read_text().count("<img ")
    assert all(w > 300 for w in widths), widths
