"""/metrics from the real processes: gunicorn's workers summed, the Celery worker's own server."""

import unittest
import urllib.error
import urllib.request
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families

from .base import FAST_WORKER_ENV, StackTestCase
from .support import E2E_AVAILABLE, E2E_SKIP_REASON, free_port, wait_for, wait_for_status

TOKEN = "e2e-metrics-token-0123456789"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str = TOKEN) -> Samples:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class MetricsOverHttpTests(StackTestCase):
    worker_port: ClassVar[int] = free_port()
    worker_env: ClassVar[dict[str, str]] = {
        **FAST_WORKER_ENV,
        "PAYOUTS_METRICS_TOKEN": TOKEN,
        "PAYOUTS_WORKER_METRICS_PORT": str(worker_port),
    }

    def test_the_tours_payouts_show_on_the_web_and_the_worker(self) -> None:
        paid = self.create("m-paid", "sandbox:success")
        failed = self.create("m-failed", "sandbox:decline:insufficient_funds")
        # The same request again: a repeat, not a second payout.
        status, _ = self.request(
            "POST",
            "/api/v1/payout-requests/",
            {
                "client_reference": "m-paid",
                "amount": "100.00",
                "currency": "RUB",
                "destination": "sandbox:success",
            },
        )
        self.assertEqual(status, 200)
        wait_for_status(paid, "PAID")
        wait_for_status(failed, "FAILED")

        worker_url = f"http://127.0.0.1:{self.worker_port}/metrics"
        # The worker counts a finish once its transaction committed, just after the status.
        worker = wait_for(
            lambda: (
                got
                if value(
                    got := scrape(worker_url),
                    "payouts_finished_total",
                    status="FAILED",
                    failure_code="insufficient_funds",
                )
                else None
            ),
            "the worker's counters",
        )
        self.assertEqual(value(worker, "payouts_finished_total", status="PAID", failure_code=""), 1)
        self.assertEqual(
            value(
                worker,
                "payouts_finished_total",
                status="FAILED",
                failure_code="insufficient_funds",
            ),
            1,
        )
        self.assertEqual(
            value(
                worker,
                "payouts_provider_call_duration_seconds_count",
                kind="execute",
                outcome="executed",
            ),
            1,
        )
        self.assertEqual(
            value(
                worker,
                "payouts_provider_call_duration_seconds_count",
                kind="execute",
                outcome="declined",
            ),
            1,
        )

        # gunicorn runs two workers: /metrics sums what each served (three creates, two new).
        web = scrape(f"{self.base_url}/metrics")
        self.assertEqual(value(web, "payouts_created_total"), 2)
        posts = value(
            web,
            "django_http_responses_total_by_status_view_method_total",
            method="POST",
            status="201",
            view="payout-request-list",
        )
        self.assertEqual(posts, 2)
        self.assertEqual(value(web, "payouts_unfinished", status="NEW"), 0)
        self.assertEqual(value(web, "payouts_oldest_unprocessed_age_seconds"), 0)
        self.assertEqual(value(web, "payouts_scrape_source_up", source="database"), 1)

    def test_both_refuse_a_wrong_token(self) -> None:
        for url in (f"{self.base_url}/metrics", f"http://127.0.0.1:{self.worker_port}/metrics"):
            with self.subTest(url=url), self.assertRaises(urllib.error.HTTPError) as caught:
                scrape(url, token="wrong-token-0123456789")
            self.assertEqual(caught.exception.code, 401)
