"""The sessions page in a real headless Chromium (Debian's chromium + chromedriver, Selenium)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerGroup, wait_for
from tests.test_web import HEADERS, web_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)),
                                reason="chromium and chromium-driver are not installed "
                                       "(.ci/run installs them)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    # Basic auth on every request the page makes, its own polling included.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": HEADERS})
    yield driver
    driver.quit()


def test_sessions_page_in_a_browser(browser: webdriver.Chrome, tmp_path: Path,
                                    workers: Callable[..., WorkerGroup]) -> None:
    """Lists a created session, shows a sent action, and a new event within 2 s."""
    group = workers(1)
    c = group.client
    sid = c.create_session(metadata={"user": "<b>ann</b>"}).id
    c.call(sid, "test.append", {"value": "first"})
    with web_server(group.settings) as web:
        browser.get(f"{web.base}/sessions")
        link = browser.find_element(By.LINK_TEXT, sid)
        row = link.find_element(By.XPATH, "./ancestor::tr")
        assert "active" in row.text
        assert "<b>ann</b>" in row.text  # escaped: shown as text, not markup
        assert not browser.find_elements(By.CSS_SELECTOR, "#sessions b")

        link.click()
        wait_for(lambda: browser.find_elements(By.ID, "actions"), 5, message="session page")
        actions = browser.find_element(By.ID, "actions").text
        assert "test.append" in actions and "succeeded" in actions
        assert '"first"' in browser.find_element(By.ID, "state").text

        before = len(browser.find_elements(By.CSS_SELECTOR, "#events tr.event"))
        c.send(sid, "test.fail", {"message": "page-visible failure"})
        sent = time.monotonic()
        wait_for(lambda: "page-visible failure" in browser.find_element(By.ID, "events").text,
                 2.0, 0.05, "the new event on the page")
        assert time.monotonic() - sent <= 2.0
        assert len(browser.find_elements(By.CSS_SELECTOR, "#events tr.event")) > before
        browser.save_screenshot(str(tmp_path / "session.png"))
        if os.environ.get("JIDO_TASKS_SCREENSHOT_DIR"):
            shutil.copy(tmp_path / "session.png",
                        Path(os.environ["JIDO_TASKS_SCREENSHOT_DIR"]) / "session.png")
