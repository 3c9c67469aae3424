"""The dashboard in a real browser (issue 13): headless Chromium opens a running job's page, sees it
update live, and shows the job's real numbers (compared with the listener's events).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (scripts/test.sh installs them)
and selenium (dev extra). Missing ones fail this test with what to install; it never skips.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.scheduler._events import iso_ms
from streamkeep.testing import ManualClock, key_count_of

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1500",
]


def _browser(profile: Path) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[dev]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("headless Chromium is missing: apt-get install chromium chromium-driver (scripts/test.sh does this)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(pred: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # an element being re-rendered
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Events(sk.StreamingListener):
    def __init__(self) -> None:
        self.batches: list[sk.BatchInfo] = []
        self.started: list[sk.JobStarted] = []

    def on_job_started(self, event: sk.JobStarted) -> None:
        self.started.append(event)

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.batches.append(info)


def _add(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def _fmt(n: int) -> str:
    return f"{n:,}"


def test_dashboard_shows_the_running_jobs_real_numbers(tmp_path: Path) -> None:
    now = int(time.time() * 1000) // 1000 * 1000
    clock = ManualClock(start_ms=now)
    ev = Events()
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ck"), clock=clock, ui_port=0, snapshot_every=4)
    pairs = ssc.rate_stream(120, name="events").map(lambda r: (f"user-{(r[0] * 7919) % 37}", 1))
    pairs.update_state_by_key(_add, name="clicks_per_user").foreach_batch(lambda b: None)
    ssc.add_listener(ev)
    browser = _browser(tmp_path / "chromium-profile")
    try:
        ssc.start()
        url = ssc.ui_url
        assert url is not None
        _wait(lambda: len(ev.batches) >= 1, "the first batch (start() runs it at once)")

        def run_batches(n: int) -> None:
            for _ in range(n):
                target = len(ev.batches) + 1
                clock.set(ev.batches[-1].batch_time_ms + 1000)  # the clock reaches the next batch time
                _wait(lambda: len(ev.batches) >= target, f"batch {target}")  # noqa: B023

        run_batches(2)
        browser.get(url)
        find = browser.find_element
        _wait(lambda: find("id", "batches-completed").text == "3", "the page to show 3 batches")
        first_updates = int(find("id", "updated").get_attribute("data-updates"))

        # live: more batches appear without reloading the page
        run_batches(5)
        _wait(lambda: find("id", "batches-completed").text == "8", "the page to update to 8 batches")
        assert int(find("id", "updated").get_attribute("data-updates")) > first_updates
        assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1  # no reload

        total = sum(i.num_records for i in ev.batches)
        assert total == 8 * 120
        assert find("id", "records-total").text == _fmt(total)
        last = ev.batches[-1]
        assert find("id", "last-batch").get_attribute("data-t") == str(last.batch_time_ms)
        # charts: one point per batch; the input-rate chart's last point is the last batch's records/s
        for chart in ("input", "sched", "proc", "total"):
            assert find("id", f"chart-{chart}").get_attribute("data-points") == "8"
        assert float(find("id", "chart-input").get_attribute("data-last")) == last.num_records / 1.0
        assert float(find("id", "chart-proc").get_attribute("data-last")) == last.processing_delay_ms
        # table rows = the listener's batches, newest first
        want = [(i.batch_time_ms, _fmt(i.num_records)) for i in reversed(ev.batches)]

        def table_rows() -> list[tuple[int, str]]:  # read again if a live update re-rendered the rows meanwhile (stale)
            rows = browser.find_elements("css selector", "tr.batch-row")
            return [(int(r.get_attribute("data-t")), r.find_element("css selector", "td.records").text) for r in rows]

        _wait(lambda: table_rows() == want, "the batch table to list the listener's batches, newest first")
        # state per operator: the real key count
        keys = key_count_of(ssc, "clicks_per_user")
        assert keys == 37 == last.state["clicks_per_user"].keys
        keys_cell = 'tr[data-operator="clicks_per_user"] td.keys'
        _wait(lambda: find("css selector", keys_cell).text == _fmt(keys), "the state panel's key count")
        # a panel whose figures did not change keeps its elements across live updates (no re-render)
        cell = find("css selector", keys_cell)
        seen = int(find("id", "updated").get_attribute("data-updates"))
        _wait(lambda: int(find("id", "updated").get_attribute("data-updates")) >= seen + 2, "two more live updates")
        assert cell.text == _fmt(keys)  # a stale element raises here
        # checkpoint panel (its ages re-render it every second: read in bounded waits): last commit and pending plans
        _wait(lambda: find("id", "ck-pending").text == "0", "no pending plans")
        last_commit_iso = iso_ms(last.batch_time_ms)[11:23]
        _wait(lambda: find("id", "ck-last-commit").text.startswith(last_commit_iso), "the last commit's time")
        _wait(lambda: "snapshot + " in find("id", "ck-restart-bytes").text and find("id", "ck-restart").text, "the restart estimate")
        # drill-down into one batch: per operator and per source
        pick = ev.batches[2]
        row = f'tr.batch-row[data-t="{pick.batch_time_ms}"]'
        _wait(lambda: browser.find_element("css selector", row).click() or True, "a click on the batch's row")  # again if re-rendered
        _wait(lambda: find("id", "detail-time").get_attribute("data-t") == str(pick.batch_time_ms), "the batch detail")
        # read again while a live update re-renders the panel (a stale element); a wrong figure still times out
        _wait(lambda: find("id", "detail-records").text == _fmt(pick.num_records), "the batch's record count")
        _wait(lambda: find("css selector", "#detail td.src-records").text == _fmt(pick.records_per_source["events"]), "the source's records")
        detail = _wait(lambda: find("id", "detail").text, "the batch detail's text")
        assert "clicks_per_user" in detail and "foreach_batch#" in detail
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("STREAMKEEP_SCREENSHOT"):
            shutil.copy(shot, os.environ["STREAMKEEP_SCREENSHOT"])
    finally:
        browser.quit()
        ssc.stop()
