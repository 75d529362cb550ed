"""Debian's headless Chromium, driven by selenium through Debian's chromedriver, for the web console's tests.

Nothing is downloaded: the driver's path is given, so Selenium Manager never runs (and ``SE_OFFLINE`` forbids it
the network should anything call it). The browser is offline too: every request that is not to loopback goes to a
proxy on a closed port, so a page that fetched anything from another host would fail visibly as well as be caught
by :func:`foreign_requests`. Chromium's fake microphone plays a WAV file into ``getUserMedia``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from unittest import mock
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile
import soxr
from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Chromium's fake capture device takes its file as it is, and loops it unless told "%noloop".
FAKE_CAPTURE_RATE = 48_000
DESKTOP = (1200, 1400)
PHONE = (390, 844)
POLL_S = 0.05
T = TypeVar("T")


def require_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing; the console tests need Debian's browser and driver: "
            "apt-get install -y chromium chromium-driver (scripts/setup.sh does)"
        )


def microphone_file(audio: np.ndarray, path: Path, *, before_s: float = 0.5, after_s: float = 3.0) -> Path:
    """A WAV for the fake microphone: 16 kHz ``audio`` between silences, at the rate a sound card runs (48 kHz), so
    the page's worklet really resamples. The trailing silence lets the server's VAD end the utterance."""
    padded = np.concatenate(
        [np.zeros(int(before_s * 16_000), np.float32), audio, np.zeros(int(after_s * 16_000), np.float32)]
    )
    soundfile.write(path, soxr.resample(padded, 16_000, FAKE_CAPTURE_RATE), FAKE_CAPTURE_RATE, subtype="PCM_16")
    return path


@contextlib.contextmanager
def chromium(*, microphone: Path | None = None, size: tuple[int, int] = DESKTOP) -> Iterator[WebDriver]:
    """A headless Chromium that grants the microphone (fake, playing ``microphone`` once, else a beep) and logs
    every network request (read them with :func:`requested_urls`)."""
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    arguments = [
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={size[0]},{size[1]}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        # Offline: anything not on loopback (which Chromium never proxies) goes to a closed port.
        "--proxy-server=http://127.0.0.1:9",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    if microphone is not None:
        arguments.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    for argument in arguments:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    with mock.patch.dict(os.environ, {"SE_OFFLINE": "true"}):
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        assert driver.service.path == CHROMEDRIVER, "selenium chose another driver than Debian's"
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the browser requested or opened a WebSocket to since the last call (from the DevTools log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def foreign_requests(urls: list[str], base_url: str) -> list[str]:
    """The URLs that went anywhere but the server at ``base_url`` (data: and blob: URLs stay in the page)."""
    server = urlsplit(base_url).netloc
    return [url for url in urls if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != server]


def screenshot(driver: WebDriver, directory: Path, name: str) -> Path:
    """Save the whole page (not just the viewport), from its top, as ``directory/name.png``."""
    driver.execute_script("window.scrollTo(0, 0)")
    width, height, chrome = driver.execute_script(
        """return [document.documentElement.scrollWidth, Math.ceil(document.body.getBoundingClientRect().bottom) + 16,
                   window.outerHeight - window.innerHeight]"""
    )
    driver.set_window_size(max(width, driver.get_window_size()["width"]), height + chrome)
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def copy_screenshot_for_docs(png: Path) -> None:
    """Copy ``png`` to the path ``SPEECH_CONSOLE_SCREENSHOT`` names (the README's image is taken this way)."""
    target = os.environ.get("SPEECH_CONSOLE_SCREENSHOT")
    if target:
        shutil.copyfile(png, target)


def poll(condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """``condition()``'s first truthy value, polled every ``POLL_S``; a clear failure after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:g} s for {what}")
        time.sleep(POLL_S)
    return value


def download(driver: WebDriver, link: WebElement, directory: Path) -> str:
    """Click a download link and return the text of the file the browser saved under ``directory``."""
    directory.mkdir(exist_ok=True)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(directory)})
    saved = directory / (link.get_attribute("download") or "download")
    saved.unlink(missing_ok=True)
    link.click()
    poll(lambda: saved.is_file() and not list(directory.glob("*.crdownload")), 30, f"the download of {saved.name}")
    return saved.read_text(encoding="utf-8")


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def open_console(driver: WebDriver, base_url: str) -> None:
    """Load the page and wait until its module has wired the controls."""
    driver.get(base_url + "/")
    poll(lambda: driver.execute_script("return document.body.dataset.console === 'ready'"), 30, "the console's script")
