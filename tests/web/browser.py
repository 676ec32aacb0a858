"""Debian's headless chromium driven through /usr/bin/chromedriver (selenium), for the page's
tests: one browser per module, a fresh profile, no network beyond the page's own origin; its
processes end with the module (driver.quit, then the chromedriver's process group)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")
TIMEOUT_FACTOR = float(os.environ.get("PERPDEX_TEST_TIMEOUT_FACTOR", "3"))


def missing_browser() -> str | None:
    """Why the browser cannot start, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return (f"{path} is missing: the browser test needs Debian's chromium and chromium-driver "
                    "(`make test` installs them with apt-get when run as root; else `sudo apt-get install chromium chromium-driver`)")
    return None


def start_browser(profile: Path):
    """A headless chromium with a fresh profile in `profile`, driven by chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), popen_kw={"start_new_session": True})
    return webdriver.Chrome(service=service, options=options)


def stop_browser(driver) -> None:
    """Quit the browser, then kill whatever is left of chromedriver's process group."""
    process = driver.service.process
    try:
        driver.quit()
    finally:
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `check` (exceptions count as not yet) until truthy; fail naming `what` after
    `timeout` s times PERPDEX_TEST_TIMEOUT_FACTOR."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as err:  # an element being redrawn by the page's refresh
            last = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout * TIMEOUT_FACTOR:.0f} s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


__all__ = ["missing_browser", "start_browser", "stop_browser", "wait_for", "shutil"]
