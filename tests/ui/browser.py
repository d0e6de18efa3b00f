"""Headless Chromium for UI tests: Debian's `chromium` driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ops.core.paths import REPO_ROOT

# Where to copy the README's screenshots, relative to the repository: QLORA_SCREENSHOTS=docs/screenshots.
SCREENSHOTS_ENV = "QLORA_SCREENSHOTS"


def chromium_or_skip() -> str:
    """The chromium executable; skips the test when it (or Playwright) is missing, fails instead under CI=true."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path, why = None, "the playwright package is not installed (pip install -e '.[dev]')"
    else:
        why = "no chromium on PATH (apt-get install chromium)"
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test under CI: {why}")
        pytest.skip(why)
    return path


@contextmanager
def browser_page(executable: str, width: int = 1920, height: int = 1080) -> Iterator:
    """A Playwright page in headless Chromium at the given viewport size (CSS pixels)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)  # the UI's first GraphQL answers take a while on a loaded 2-core machine
            yield page
        finally:
            browser.close()


def publish_screenshots(shots: dict[str, Path]) -> list[Path]:
    """Copy the chosen screenshots to $QLORA_SCREENSHOTS (relative to the repository) when it is set."""
    target = os.environ.get(SCREENSHOTS_ENV)
    if not target:
        return []
    folder = (REPO_ROOT / target).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, folder / f"{name}.png")) for name, path in shots.items()]
