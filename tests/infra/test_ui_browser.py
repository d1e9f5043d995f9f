"""The UI in a real browser: headless Chromium, driven by selenium, logs in as the admin
with the password first boot made, sees the DAG list, and opens a task's log.

It runs from the machine that runs the suite, so the API port must be reachable from
there (the local cloud's instances are; on AWS, `--allow-cidr` or an SSM port
forward). Deselect it with `-m "not browser"`. Screenshots go to build/ui/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from airflow_ami.driver.instance import ADMIN_PASSWORD, FANOUT_DAG, Instance, expect, journal

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui"
WAIT = 60
# What the task SDK logs when the fan-out DAG's `plan` task returns.
LOG_TEXT = "Returned value was"


def ui_url(instance: Instance) -> str:
    """The API server's URL as this machine reaches the instance."""
    address = instance.host.backend.hostname
    scheme = "https" if instance.settings["api_tls"] == "self-signed" else "http"
    return f"{scheme}://{address}:{instance.api_port}"


@pytest.fixture(scope="module")
def browser(instance: Instance) -> Iterator[webdriver.Chrome]:
    # Debian's chromium, or the Google Chrome that CI runners ship.
    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "chromium and chromedriver are not installed: ./bake installs them (apt chromium chromium-driver)"
        )
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    # The instance's own certificate is in no trust store here; test_network.py checks TLS.
    options.accept_insecure_certs = instance.settings["api_tls"] == "self-signed"
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(WAIT)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield chrome
    finally:
        chrome.quit()


def shows(browser: webdriver.Chrome, text: str, name: str) -> None:
    """Wait until the page's text holds `text`; a screenshot either way."""
    try:
        WebDriverWait(browser, WAIT).until(lambda b: text in b.find_element(By.TAG_NAME, "body").text)
    except TimeoutException:
        browser.save_screenshot(str(SCREENSHOTS / f"{name}-failed.png"))
        body = browser.find_element(By.TAG_NAME, "body").text[:500]
        raise AssertionError(
            expect(f"{text!r} on {browser.current_url}", body, journal("airflow-api-server.service"))
        ) from None
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def log_in(browser: webdriver.Chrome, base: str, user: str, password: str) -> None:
    try:
        browser.get(f"{base}/auth/login/")
    except WebDriverException as exc:
        raise AssertionError(
            f"the UI at {base} is not reachable from this machine ({exc.msg}): open the API port to it"
            " (launch --allow-cidr) or deselect the browser check with -m 'not browser'"
        ) from None
    browser.find_element(By.NAME, "username").send_keys(user)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    WebDriverWait(browser, WAIT).until(lambda b: "/auth/login" not in b.current_url)


def test_the_admin_logs_in_sees_the_dags_and_reads_a_task_log(
    instance: Instance, browser: webdriver.Chrome, settings: dict[str, Any]
) -> None:
    run_id = instance.trigger(FANOUT_DAG, {"n": 1, "seconds": 1})
    run = instance.wait_run(FANOUT_DAG, run_id)
    assert run["state"] == "success", instance.run_summary(run)
    base = ui_url(instance)
    user = settings["admin_username"]
    log_in(browser, base, user, instance.read_text(ADMIN_PASSWORD).strip())
    browser.get(f"{base}/dags")
    shows(browser, FANOUT_DAG, "dag-list")
    browser.get(f"{base}/dags/{FANOUT_DAG}/runs/{run_id}/tasks/plan")
    shows(browser, LOG_TEXT, "task-log")
