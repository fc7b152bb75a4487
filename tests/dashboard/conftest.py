"""A real headless Chromium (Debian's `chromium` package) driven by Playwright.

Playwright's own browser downloads are never used (`playwright install` fetches builds from the
internet): the fixture launches /usr/bin/chromium, installing the package with apt when it is
missing and the tests run as root."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _apt_install() -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                          env=env, timeout=900, check=False)


def ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            "the dashboard tests need headless Chromium at /usr/bin/chromium: install Debian's package with"
            " `sudo apt-get install -y chromium` (the tests install it themselves only when run as root)"
        )
    done = _apt_install()
    if done.returncode != 0:  # stale package lists on a fresh machine: refresh once and retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, timeout=900, check=False)
        done = _apt_install()
    if done.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(f"`apt-get install -y chromium` failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return ensure_chromium()


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def shot_path(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / f"dashboard-{name}.png")
