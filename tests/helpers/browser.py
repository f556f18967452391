"""Headless Chromium for the report tests: load a page and read what its own image check found.

The report's index.html carries a small script that, once the page has loaded, writes into
``<p id="image-check">`` how many images it has and how many failed to load.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def image_check(index: Path) -> dict[str, str]:
    """``{"status": "checked", "total": N, "broken": K}`` from the page rendered in Chromium.

    Skips the test when no Chromium is installed (scripts/setup.sh installs Debian's ``chromium``).
    """
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom", index.as_uri()]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<p id="image-check"([^>]*)>', result.stdout)
    assert match, f"no image-check element in the rendered page:\n{result.stdout[:2000]}"
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', match.group(1)))
