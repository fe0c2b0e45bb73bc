"""report.html in a real browser: headless Chromium renders it from another folder, offline, with the
gallery filled, no script error, and hostile names shown as text (never run).

Skips, with the reason, where no Chromium can be found (.ci/run installs Debian's `chromium`).
"""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from detkit.report.run_report import write_report
from tests.report.conftest import HOSTILE_CLASS, write_hostile_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)}; Debian: apt-get install chromium)")


def _chromium(page, *flags, cwd) -> subprocess.CompletedProcess:
    # No network at all: every host name resolves to nothing, so a page that fetched anything would break.
    command = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000",
               "--enable-logging=stderr", "--v=0", f"--user-data-dir={cwd / 'profile'}", *flags, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory):
    """The report of the hand-made hostile run, moved to a folder of its own."""
    root = tmp_path_factory.mktemp("browser")
    run = write_hostile_run(root / "data")
    page = root / "elsewhere" / "report.html"
    page.parent.mkdir()
    write_report(str(run), str(page), log=lambda *_: None)
    return page


def test_report_renders_with_its_gallery_and_no_script_error(hostile_page, tmp_path):
    done = _chromium(hostile_page, "--dump-dom", cwd=tmp_path)
    dom = done.stdout
    root = re.search(r"<html[^>]*>", dom)  # the scripts leave their marks on the root element
    assert root, done.stderr[-2000:]
    assert 'data-report-ready="1"' in root.group(), done.stderr[-2000:]
    assert 'data-gallery-shown="3"' in root.group()  # the filter script ran over the three cards
    assert "data-js-errors" not in root.group() and "data-pwned" not in root.group()
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "Error" in line or "Uncaught" in line], console
    # The class name is in the page as text (escaped again by the serialiser), in the class filter too.
    escaped = HOSTILE_CLASS.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert re.search(r"<option [^>]*>" + re.escape(escaped) + "</option>", dom)


def test_report_is_not_blank(hostile_page, tmp_path):
    shot = tmp_path / "shot.png"
    _chromium(hostile_page, f"--screenshot={shot}", "--window-size=1200,2000", cwd=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # text, tables and images, not one colour
