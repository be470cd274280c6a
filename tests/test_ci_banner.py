"""`make test` without Chromium ends with a loud banner saying the page was not tested."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import PAGE_NOT_TESTED_BANNER

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_browser_test(chromium: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *("tests/test_page_browser.py", "tests/test_progress.py"),
        ],
        env={**os.environ, "NERKIT_CHROMIUM": chromium},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_skipped_browser_test_ends_the_run_with_a_banner(tmp_path: Path) -> None:
    run = run_browser_test(str(tmp_path / "no-chromium"))
    assert run.returncode == 0, run.stdout[-2000:]
    tail = run.stdout.rstrip().splitlines()
    # At the very end, after pytest's own summary line.
    assert tail[-len(PAGE_NOT_TESTED_BANNER) :] == PAGE_NOT_TESTED_BANNER
    assert "skipped" in tail[-len(PAGE_NOT_TESTED_BANNER) - 1]
    assert f"no Chromium at {tmp_path / 'no-chromium'}" in run.stdout


def test_no_banner_when_the_page_was_tested_or_not_selected() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_progress.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0
    assert PAGE_NOT_TESTED_BANNER[1] not in run.stdout
