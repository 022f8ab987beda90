"""Locust's web UI with the gate, driven in a real browser (headless
Chromium through Playwright): START shows the run at once and keeps
updating through the pre-flight, the KPIs tab colours its results, RESET
resets the KPI figures, STOP and a new run behave.

Playwright's own browser download is not reachable here: the test uses the
system's Chromium (Debian: ``apt-get install chromium``) and skips, saying
so, only when none is installed."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import SEED_PASSWORD, free_port
from tests.test_locust_e2e import ROOT, write_thresholds

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
GREEN, RED, ORANGE = "rgb(46, 125, 50)", "rgb(198, 40, 40)", "rgb(239, 108, 0)"   # kpi/templates/locust_ui_extra.html
WARMUP_S = 8
# The header shows the runner state in lower case (upper case only by CSS).
RUNNING, STOPPED = re.compile(r"Status\s*running", re.IGNORECASE), re.compile(r"Status\s*stopped", re.IGNORECASE)
# Load reaches the page: users and requests per second above zero.
LOAD_SHOWN = re.compile(r"Status\s*running\s*Users\s*[1-9]\d*\s*RPS\s*[1-9]", re.IGNORECASE)


def system_chromium() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name) or ""
    pytest.skip("no Chromium on this machine (apt-get install chromium); Playwright's download is not used")


@pytest.fixture()
def web_ui(tmp_path: Path, gateway_url: str):  # type: ignore[no-untyped-def]
    """A Locust web UI (not headless) on the session's stack, kpi profile at
    a target of 20 req/s (5 users), with the pre-flight: the pre-flight is
    what held the runner in "ready" and froze the page."""
    thresholds = write_thresholds(tmp_path / "ui.yaml", {
        "http_req_duration": ["p(95) < 60000"], "http_reqs": ["rps > 20"], "http_req_failed": ["rate < 0.5"],
        "wasm_hot_us": ["med < 0.001"]}, warmup_s=WARMUP_S,   # the last one fails: a red cell
        # A machine budget no run can keep: the validity row reads INCONCLUSIVE, in orange.
        validity={"generator_cpu_percent": None, "generator_loop_lag_ms": None, "machine_cpu_percent": 0.001})
    port = free_port()
    argv = [sys.executable, "-m", "locust", "--host", gateway_url, "--web-host", "127.0.0.1", "--web-port", str(port),
            "--thresholds", str(thresholds), "--run-time", "300s", "--report-dir", str(tmp_path / "reports")]
    log = (tmp_path / "locust.log").open("w")   # closed after the process, below
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "APPRUN_SEED_PASSWORD": SEED_PASSWORD})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/", timeout=2)
            break
        except requests.RequestException:
            time.sleep(0.5)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def kpi_cell(page, kpi: str, column: int):  # type: ignore[no-untyped-def]
    """A cell of the KPIs tab's row for ``kpi`` (0 KPI, 1 threshold, 2 measured, 3 result)."""
    return page.locator("tr", has=page.locator("td", has_text=kpi)).first.locator("td").nth(column)


def test_a_whole_run_in_the_browser(web_ui, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, proc = web_ui
    shots = Path(os.environ.get("APPRUN_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    polls: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=system_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("response", lambda r: polls.append(time.monotonic()) if r.url.endswith("/stats/requests") else None)
            page.goto(base + "/")
            header = page.locator("header")
            # The profile sets users and ramp-up: the form says so instead of showing them at 0.
            expect(page.locator("#apprun-profile-note")).to_contain_text("load profile sets them")
            expect(page.locator('input[name="userCount"]')).to_be_hidden()
            page.screenshot(path=shots / "1-form.png")

            page.get_by_role("button", name="Start").click()
            # The pre-flight runs first (seconds): the page must follow the run, not stay on the form.
            expect(header).to_contain_text(LOAD_SHOWN, timeout=30_000)
            polled = len(polls)
            page.wait_for_timeout(5000)
            assert len(polls) >= polled + 2, "the page stopped polling /stats/requests"
            expect(page.get_by_text("Start new load test")).to_have_count(0)
            page.screenshot(path=shots / "2-running.png")

            page.get_by_role("tab", name="KPIs").click()
            expect(kpi_cell(page, "http_reqs", 3)).to_have_text("PASS", timeout=(WARMUP_S + 15) * 1000)
            assert kpi_cell(page, "http_reqs", 3).evaluate("e => getComputedStyle(e).color") == GREEN
            expect(kpi_cell(page, "wasm_hot_us", 3)).to_have_text("FAIL")
            assert kpi_cell(page, "wasm_hot_us", 3).evaluate("e => getComputedStyle(e).color") == RED
            validity = kpi_cell(page, "(measurement validity)", 3)
            expect(validity).to_have_text("INCONCLUSIVE")
            assert validity.evaluate("e => getComputedStyle(e).color") == ORANGE
            expect(kpi_cell(page, "(measurement validity)", 2)).to_contain_text("machine_cpu_percent (machine)")
            page.screenshot(path=shots / "3-kpis.png")

            # RESET: Locust's statistics and the KPI figures start again (the warm-up too).
            page.get_by_role("button", name="Reset").click()
            expect(kpi_cell(page, "http_req_duration", 2)).to_have_text("no samples", timeout=WARMUP_S * 1000)
            page.screenshot(path=shots / "4-reset.png")
            expect(kpi_cell(page, "http_req_duration", 3)).to_have_text("PASS", timeout=(WARMUP_S + 15) * 1000)

            page.get_by_role("button", name="Stop").click()
            expect(header).to_contain_text(STOPPED, timeout=15_000)
            page.screenshot(path=shots / "5-stopped.png")

            # A new run from the same page: the pre-flight again, then the run.
            page.get_by_role("button", name="New").click()
            page.get_by_role("button", name="Start").click()
            expect(header).to_contain_text(LOAD_SHOWN, timeout=30_000)
            polled = len(polls)
            page.wait_for_timeout(5000)
            assert len(polls) >= polled + 2, "the second run's page stopped polling"
            page.screenshot(path=shots / "6-second-run.png")
            page.get_by_role("button", name="Stop").click()
            expect(header).to_contain_text(STOPPED, timeout=15_000)
        finally:
            browser.close()
    assert proc.poll() is None, "locust exited during the run"
