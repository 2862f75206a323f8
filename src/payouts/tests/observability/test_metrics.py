"""/metrics in-process: who may read it, the gauges computed on scrape, the counters' sources."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.test import Client, SimpleTestCase, TestCase, override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from payouts import transitions
from payouts.models import EventActor, PayoutRequest, PayoutStatus
from payouts.observability import exposition, metrics
from payouts.tests.api.helpers import ApiTestCase
from webhooks.models import WebhookEndpoint

TOKEN = "test-metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels (a real parser)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@override_settings(PAYOUTS_METRICS_TOKEN=TOKEN)
class MetricsAccessTests(TestCase):
    def test_without_a_token_configured_it_is_not_served(self) -> None:
        with override_settings(PAYOUTS_METRICS_TOKEN=""):
            response = self.client.get("/metrics", headers=AUTH)
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json()["code"], "not_found")

    def test_no_or_a_wrong_token_is_401_with_a_bearer_challenge(self) -> None:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            with self.subTest(headers=headers):
                response = self.client.get("/metrics", headers=headers)
                self.assertEqual(response.status_code, 401)
                self.assertEqual(response.json()["code"], "authentication_failed")
                self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="metrics"')
                self.assertNotIn(b"payouts_", response.content)

    def test_a_non_ascii_token_is_a_401_not_a_500(self) -> None:
        response = self.client.get("/metrics", HTTP_AUTHORIZATION="Bearer t\u00e9st-\u00ff")
        self.assertEqual(response.status_code, 401)

    def test_only_get_and_head(self) -> None:
        response = self.client.post("/metrics", headers=AUTH)
        self.assertEqual(response.status_code, 405)
        self.assertEqual(response["Allow"], "GET, HEAD")

    def test_the_token_reads_the_prometheus_text_format(self) -> None:
        response = self.client.get("/metrics", headers=AUTH)
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/plain; version="))
        names = {name for name, _ in samples(response.content)}
        for name in (
            "payouts_created_total",
            "payouts_retries_total",
            "payouts_review_flagged_total",
            "payouts_rate_limit_backend_errors_total",
            "django_http_requests_total_by_method_total",
        ):
            self.assertIn(name, names)


@override_settings(PAYOUTS_METRICS_TOKEN=TOKEN)
class ScrapeGaugeTests(ApiTestCase):
    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = Client().get("/metrics", headers=AUTH)  # self.client carries the API key
        self.assertEqual(response.status_code, 200)
        return samples(response.content)

    def test_unfinished_oldest_under_review_failing_endpoints_and_queues(self) -> None:
        old = self.create(client_reference="old").json()
        self.create(client_reference="new")
        paid = self.create(client_reference="paid").json()
        PayoutRequest.objects.filter(pk=old["id"]).update(
            created_at=timezone.now() - timedelta(hours=2)
        )
        moved = transitions.transition(
            old["id"], to=PayoutStatus.PROCESSING, actor=EventActor.WORKER
        )
        self.assertEqual(moved, PayoutStatus.NEW)
        self.assertTrue(transitions.review_flag(old["id"], reason="test"))
        transitions.transition(paid["id"], to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        transitions.transition(paid["id"], to=PayoutStatus.PAID, actor=EventActor.WORKER)
        WebhookEndpoint.objects.create(
            client=self.merchant,
            url="https://example.com/h",
            secret="s",
            failing_since=timezone.now(),
        )
        WebhookEndpoint.objects.create(
            client=self.merchant, url="https://example.com/ok", secret="s"
        )

        got = self.scrape()

        self.assertEqual(got["payouts_unfinished", (("status", "NEW"),)], 1)
        self.assertEqual(got["payouts_unfinished", (("status", "PROCESSING"),)], 1)
        self.assertEqual(got["payouts_under_review", ()], 1)
        self.assertEqual(got["payouts_webhook_endpoints_failing", ()], 1)
        oldest = got["payouts_oldest_unprocessed_age_seconds", ()]
        self.assertGreaterEqual(oldest, 7200)
        self.assertLess(oldest, 7300)
        self.assertEqual(got["payouts_scrape_source_up", (("source", "database"),)], 1)
        self.assertEqual(got["payouts_scrape_source_up", (("source", "broker"),)], 1)
        for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.PAYOUTS_WEBHOOKS_QUEUE):
            self.assertIn(("payouts_queue_depth", (("queue", queue),)), got)

    def test_nothing_unprocessed_is_an_age_of_zero(self) -> None:
        self.assertEqual(self.scrape()["payouts_oldest_unprocessed_age_seconds", ()], 0)

    def test_a_broker_outage_leaves_the_queue_gauges_out_not_the_scrape(self) -> None:
        exposition._broker_client = None
        try:
            with (
                override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0"),
                self.assertLogs("payouts.observability.exposition", "WARNING"),
            ):
                got = self.scrape()
        finally:
            exposition._broker_client = None
        self.assertEqual(got["payouts_scrape_source_up", (("source", "broker"),)], 0)
        self.assertFalse(any(name == "payouts_queue_depth" for name, _ in got))
        self.assertIn(("payouts_unfinished", (("status", "NEW"),)), got)


class CounterSourceTests(ApiTestCase):
    """Each counter moves where the thing happened, once, and only after the commit."""

    def test_created_counts_a_new_payout_not_its_repeat(self) -> None:
        before = counter("payouts_created_total")
        self.assertEqual(self.create(client_reference="c-1").status_code, 201)
        self.assertEqual(self.create(client_reference="c-1").status_code, 200)
        self.assertEqual(counter("payouts_created_total"), before + 1)

    def test_finished_counts_the_winning_move_with_its_failure_code(self) -> None:
        payout = self.create(client_reference="f-1").json()
        labels = {"status": "FAILED", "failure_code": "insufficient_funds"}
        before = counter("payouts_finished_total", **labels)
        transitions.transition(payout["id"], to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        with self.captureOnCommitCallbacks(execute=True):
            for _ in range(2):  # the second move loses: nothing more is counted
                transitions.transition(
                    payout["id"],
                    to=PayoutStatus.FAILED,
                    actor=EventActor.WORKER,
                    failure_code="insufficient_funds",
                    failure_reason="no funds",
                )
        self.assertEqual(counter("payouts_finished_total", **labels), before + 1)

    def test_a_rolled_back_move_counts_nothing(self) -> None:
        payout = self.create(client_reference="r-1").json()
        labels = {"status": "CANCELED", "failure_code": ""}
        before = counter("payouts_finished_total", **labels)

        class Abort(Exception):
            pass

        with self.captureOnCommitCallbacks(execute=True):
            try:
                with transaction.atomic():
                    transitions.transition(
                        payout["id"], to=PayoutStatus.CANCELED, actor=EventActor.API
                    )
                    raise Abort
            except Abort:
                pass
        self.assertEqual(counter("payouts_finished_total", **labels), before)


class HttpMetricsTests(TestCase):
    def test_made_up_methods_share_one_label_and_a_bad_length_is_no_500(self) -> None:
        for method in ("BREW", "PROPFIND-1", "X" * 40):
            response = self.client.generic(method, "/healthz", HTTP_HOST="localhost")
            self.assertEqual(response.status_code, 405)
        response = self.client.generic(
            "POST", "/api/v1/payout-requests/", b"{}", CONTENT_LENGTH="abc"
        )
        self.assertLess(response.status_code, 500)
        methods = {
            sample.labels["method"]
            for family in REGISTRY.collect()
            if family.name.startswith("django_http_")
            for sample in family.samples
            if "method" in sample.labels
        }
        self.assertIn("<invalid method>", methods)
        self.assertFalse(methods & {"BREW", "PROPFIND-1", "X" * 40})


class FailureCodeLabelTests(SimpleTestCase):
    def test_past_the_cap_codes_are_counted_as_other(self) -> None:
        seen = set(metrics._failure_codes_seen)
        try:
            metrics._failure_codes_seen.clear()
            labels = [metrics.failure_code_label(f"code_{n}") for n in range(60)]
            self.assertEqual(labels[:50], [f"code_{n}" for n in range(50)])
            self.assertEqual(set(labels[50:]), {"other"})
            self.assertEqual(metrics.failure_code_label("code_7"), "code_7")  # seen before
        finally:
            metrics._failure_codes_seen.clear()
            metrics._failure_codes_seen.update(seen)
