"""The operations page in a real browser: Debian's chromium, driven through its chromedriver.

A staff session made by the test client is handed to the browser as its cookie; the page is
served by a live server with the admin's static files, and the assertions read the DOM the
browser built. Outside CI a machine without chromium, chromium-driver or selenium skips this
(`apt-get install chromium chromium-driver`); in CI (CI=true) that is a failure.

PAYOUTS_OPERATIONS_SCREENSHOT=docs/operations.png writes the screenshot the README shows.
"""

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, ClassVar
from unittest import SkipTest

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles.testing import StaticLiveServerTestCase

from payouts.models import ApiClient, PayoutStatus
from payouts.tests.operations_data import SeededDay, seed_day

SCREENSHOT_ENV = "PAYOUTS_OPERATIONS_SCREENSHOT"
WIDTH = 1280


def browser_parts() -> tuple[str, str]:
    """chromium's and chromedriver's paths, or why they cannot be had (SkipTest, or failure)."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401 - only whether it is installed
    except ImportError:
        missing.append("selenium (requirements-dev.txt)")
    if missing:
        reason = f"needs {', '.join(missing)} (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI must run the browser test: {reason}")
        raise SkipTest(reason)
    return shutil.which("chromium") or "", shutil.which("chromedriver") or ""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


class OperationsPageInBrowserTests(StaticLiveServerTestCase):
    driver: ClassVar[Any]
    profile: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        chromium, chromedriver = browser_parts()
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        super().setUpClass()
        cls.profile = tempfile.mkdtemp(prefix="payouts-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in (
            "--headless=new",
            "--no-sandbox",  # the tests may run as root (CI does)
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={WIDTH},1200",
            f"--user-data-dir={cls.profile}",
        ):
            options.add_argument(argument)
        try:
            # An explicit driver path: Selenium Manager (which downloads drivers) never runs.
            cls.driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        except BaseException:
            shutil.rmtree(cls.profile, ignore_errors=True)
            super().tearDownClass()
            raise
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.driver.quit()
            shutil.rmtree(cls.profile, ignore_errors=True)
        finally:
            super().tearDownClass()

    def setUp(self) -> None:
        self.day: SeededDay = seed_day(ApiClient.objects.create(name="acme-shop"))
        staff = User.objects.create_superuser("ops", "ops@example.com", "unused-pass!")
        self.client.force_login(staff)
        # The cookie is set on the live server's origin, then the page is opened with it.
        self.driver.get(f"{self.live_server_url}/admin/login/")
        self.driver.add_cookie(
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": self.client.cookies[settings.SESSION_COOKIE_NAME].value,
                "path": "/",
            }
        )

    def open_page(self) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(f"{self.live_server_url}/admin/operations/")
        self.assertEqual(self.driver.find_element(By.TAG_NAME, "h1").text, "Operations")

    def test_page_shows_the_day_at_a_glance(self) -> None:
        from selenium.webdriver.common.by import By

        self.open_page()
        find, find_all = self.driver.find_element, self.driver.find_elements
        chart = find(By.CSS_SELECTOR, "#payouts-chart svg.ops-chart")
        self.assertGreater(chart.size["height"], 200, "the browser laid the chart out")

        # One rectangle per (hour, status), each with a hover title; their counts add up to the
        # day, status by status, and the legend says the same.
        drawn = dict.fromkeys(PayoutStatus.values, 0)
        for segment in chart.find_elements(By.CSS_SELECTOR, "rect.segment"):
            status, count = (
                segment.get_attribute("data-status"),
                segment.get_attribute("data-count"),
            )
            drawn[status] += int(count)
            title = segment.find_element(By.TAG_NAME, "title").get_attribute("textContent")
            self.assertIn(f": {count} {status}", title)
            self.assertGreater(segment.size["height"], 0)
        self.assertEqual(drawn, self.day.totals)
        legend = {
            item.get_attribute("data-status"): int(item.get_attribute("data-total"))
            for item in chart.find_elements(By.CSS_SELECTOR, "g.legend-item")
        }
        self.assertEqual(legend, self.day.totals)

        codes = find(By.ID, "failure-codes").text
        for code, count in self.day.failure_codes.items():
            self.assertIn(f"{code} {count}", codes)

        assert self.day.under_review is not None and self.day.oldest is not None
        review = find(By.CSS_SELECTOR, "#under-review tbody a")
        self.assertEqual(review.text, self.day.under_review.client_reference)
        self.assertTrue(
            review.get_attribute("href").endswith(
                f"/admin/payouts/payoutrequest/{self.day.under_review.pk}/change/"
            )
        )
        oldest = find(By.CSS_SELECTOR, "#card-oldest a")
        self.assertEqual(oldest.text, self.day.oldest.client_reference)

        # percentile_cont of 100..199 ms and of 20..39 ms, rounded to the millisecond.
        execute = find(By.CSS_SELECTOR, '#provider-latency tr[data-kind="execute"]')
        self.assertEqual(execute.find_element(By.CLASS_NAME, "p50").text, "150 ms")
        self.assertEqual(execute.find_element(By.CLASS_NAME, "p99").text, "198 ms")
        lookup = find(By.CSS_SELECTOR, '#provider-latency tr[data-kind="lookup"]')
        self.assertEqual(lookup.find_element(By.CLASS_NAME, "p50").text, "30 ms")
        self.assertEqual(lookup.find_element(By.CLASS_NAME, "p99").text, "39 ms")

        endpoints = [a.text for a in find_all(By.CSS_SELECTOR, "#failing-endpoints tbody a")]
        assert self.day.failing_endpoint is not None and self.day.disabled_endpoint is not None
        self.assertEqual(endpoints, [self.day.failing_endpoint.url, self.day.disabled_endpoint.url])
        self.assertIn(
            "disabled: failing for more than 3 days", find(By.ID, "failing-endpoints").text
        )

        # The admin's own stylesheet styled it (served by the live server, nothing external).
        header = find(By.ID, "header").value_of_css_property("background-color")
        self.assertNotIn(header, ("rgba(0, 0, 0, 0)", "transparent"))
        self.take_screenshot()

    def take_screenshot(self) -> None:
        # The whole page in one image: a viewport as tall as the document.
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        png = self.driver.get_screenshot_as_png()
        width, shot_height = png_size(png)
        self.assertEqual(width, WIDTH)
        self.assertGreaterEqual(shot_height, 800)
        if target := os.environ.get(SCREENSHOT_ENV):
            Path(target).write_bytes(png)

    def test_anonymous_browser_lands_on_the_admin_login(self) -> None:
        from selenium.webdriver.common.by import By

        self.driver.delete_all_cookies()
        self.driver.get(f"{self.live_server_url}/admin/operations/")
        self.assertIn("/admin/login/?next=/admin/operations/", self.driver.current_url)
        self.assertTrue(self.driver.find_elements(By.ID, "login-form"))
