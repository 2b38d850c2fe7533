"""`sweeper ui` in a real browser: headless Debian Chromium driven by Selenium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT_ENV = "SWEEPER_UI_SCREENSHOT"  # where to save the page (README image), if set


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(recorded):
    port = _free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "ui", "--port", str(port)], cwd=recorded,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        url = None
        deadline = time.time() + 120
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if line.startswith("MLflow UI: "):
                url = line.split()[2]
            elif not line and proc.poll() is not None:
                break
        assert url is not None, "sweeper ui printed no URL"
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("SWEEPER_REQUIRE_BROWSER"):  # set by .ci/run: CI must not skip this
            pytest.fail("/usr/bin/chromium or /usr/bin/chromedriver is missing")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1500,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_ui_lands_on_the_study_runs_and_shows_its_trials(ui, browser, recorded):
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, proc = ui
    base = url.split("/#")[0]
    assert base.startswith("http://127.0.0.1:")  # loopback by default
    assert "/runs?viewStateShareKey=" in url  # the runs table, not the GenAI overview

    browser.get(f"{base}/health")  # same origin first: keep the assistant panel closed
    browser.execute_script(
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
    )
    browser.get(url)
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    WebDriverWait(browser, 120).until(lambda _: "beta" in body() and "alpha" in body())
    page = body()
    assert "Training runs" in page
    for column in ("best/val/acc", "optimizer.lr", "data.batch_size", "state"):
        assert column in page, column

    # the latest study's parent run expands to its trials, each with its state
    row = browser.find_element(
        By.XPATH, "//*[normalize-space(text())='beta']/ancestor::*[@role='row'][1]"
    )
    row.find_element(By.XPATH, ".//button").click()
    WebDriverWait(browser, 30).until(lambda _: "trial-0001" in body())
    assert body().count("COMPLETE") >= 2
    if os.environ.get(SCREENSHOT_ENV):
        shot = Path(os.environ[SCREENSHOT_ENV])
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)), shot

    # a plot artifact of the study opens: MLflow serves artifacts as downloads, and its run
    # page renders an HTML artifact in a sandboxed frame, which is where a user sees the plot
    client = MlflowClient(f"sqlite:///{recorded / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeper")
    (parent,) = client.search_runs([exp.experiment_id], "tags.study = 'beta' and tags.`sweeper.role` = 'parent'")
    artifact = f"{base}/get-artifact?path=plots/optimization_history.html&run_uuid={parent.info.run_id}"
    with urllib.request.urlopen(artifact, timeout=30) as response:
        assert response.status == 200
    browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}"
                "/artifacts/plots/optimization_history.html")
    frame = WebDriverWait(browser, 60).until(lambda _: browser.find_elements(By.TAG_NAME, "iframe"))[0]
    browser.switch_to.frame(frame)
    WebDriverWait(browser, 60).until(
        lambda _: browser.execute_script("return document.querySelectorAll('.plotly .main-svg').length") > 0
    )
    assert "Optimization History" in browser.page_source
    browser.switch_to.default_content()
    assert "plots/optimization_history.html" in body()

    # Ctrl-C stops the server cleanly
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 0
