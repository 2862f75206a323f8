"""The operations page: who may read it, and the numbers it shows for a known day."""

from datetime import timedelta

from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from payouts import ops
from payouts.models import ApiClient, PayoutStatus, ProviderCallKind
from payouts.tests.operations_data import payout_at, provider_call, seed_day
from webhooks.models import WebhookEndpoint

PAGE = "/admin/operations/"
LOGIN = "/admin/login/"


class OperationsAccessTests(TestCase):
    def test_anonymous_is_sent_to_the_admin_login(self) -> None:
        response = self.client.get(PAGE)
        self.assertRedirects(response, f"{LOGIN}?next={PAGE}", fetch_redirect_response=False)

    def test_non_staff_user_is_sent_to_the_admin_login(self) -> None:
        user = User.objects.create_user("merchant", password="not-staff-pass!")
        user.user_permissions.add(Permission.objects.get(codename="view_payoutrequest"))
        self.client.force_login(user)
        response = self.client.get(PAGE)
        self.assertRedirects(response, f"{LOGIN}?next={PAGE}", fetch_redirect_response=False)

    def test_staff_without_the_payout_view_permission_is_refused(self) -> None:
        self.client.force_login(User.objects.create_user("intern", is_staff=True))
        self.assertEqual(self.client.get(PAGE).status_code, 403)

    def test_staff_with_the_view_permission_reads_it(self) -> None:
        user = User.objects.create_user("support", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_payoutrequest"))
        self.client.force_login(user)
        response = self.client.get(PAGE)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Payouts created per hour")
        self.assertContains(response, "Nothing is waiting for a person.")

    def test_admin_index_links_the_page(self) -> None:
        self.client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
        response = self.client.get("/admin/")
        self.assertContains(response, f'href="{PAGE}"')
        # The app list is still there below it.
        self.assertContains(response, "/admin/payouts/payoutrequest/")


class OperationsOverviewTests(TestCase):
    def setUp(self) -> None:
        self.merchant = ApiClient.objects.create(name="merchant-ops")
        self.now = timezone.now()
        self.day = seed_day(self.merchant, now=self.now)

    def test_chart_counts_each_hour_by_current_status(self) -> None:
        overview = ops.operations_overview(now=self.now)
        self.assertEqual(len(overview.hours), ops.HOURS)
        self.assertEqual(overview.totals, self.day.totals)
        self.assertEqual([hour.total for hour in overview.hours][:3], [4, 3, 2])
        # One rectangle per non-empty (hour, status), each as tall as its count says.
        segments = overview.chart.segments
        self.assertEqual(sum(s.count for s in segments), len(self.day.payouts))
        per_payout = {round(s.height / s.count, 6) for s in segments}
        self.assertEqual(len(per_payout), 1, per_payout)
        self.assertEqual({s.status for s in segments}, set(PayoutStatus.values))

    def test_payouts_before_the_window_are_left_out(self) -> None:
        since = ops.window_start(self.now)
        payout_at(self.merchant, "yesterday", since - timedelta(minutes=1), PayoutStatus.FAILED)
        self.assertEqual(ops.operations_overview(now=self.now).totals, self.day.totals)

    def test_failure_codes_are_counted_most_frequent_first(self) -> None:
        codes = ops.failure_codes(since=ops.window_start(self.now))
        self.assertEqual(dict(codes), self.day.failure_codes)
        self.assertEqual(codes[0][0], "insufficient_funds")

    def test_oldest_unprocessed_and_under_review(self) -> None:
        self.assertEqual(ops.oldest_unprocessed(), self.day.oldest)
        self.assertEqual(ops.payouts_under_review(), [self.day.under_review])

    def test_a_finished_payout_is_no_longer_under_review(self) -> None:
        assert self.day.under_review is not None
        type(self.day.under_review).objects.filter(pk=self.day.under_review.pk).update(
            status=PayoutStatus.PAID, lease_expires_at=None
        )
        self.assertEqual(ops.payouts_under_review(), [])

    def test_latency_percentiles_per_kind(self) -> None:
        latency = {row.kind: row for row in ops.provider_latency(since=self.now)}
        execute, lookup = latency[ProviderCallKind.EXECUTE], latency[ProviderCallKind.LOOKUP]
        self.assertEqual((execute.calls, lookup.calls), (100, 20))
        # percentile_cont: linear interpolation between the closest ranks.
        self.assertAlmostEqual(execute.p50_ms, 149.5)
        self.assertAlmostEqual(execute.p99_ms, 198.01)
        self.assertAlmostEqual(lookup.p50_ms, 29.5)
        self.assertAlmostEqual(lookup.p99_ms, 38.81)

    def test_python_percentiles_agree_with_the_database(self) -> None:
        if connection.vendor != "postgresql":
            self.skipTest("percentile_cont is PostgreSQL's")
        payout = self.day.payouts[0]
        for latency in (7, 7, 9, 30, 31, 250, 1200):
            provider_call(payout, ProviderCallKind.CANCEL, latency, self.now)
        in_database = ops.provider_latency(since=self.now)
        in_python = ops.provider_latency_in_python(since=self.now)
        self.assertEqual(len(in_database), 3)
        for db_row, py_row in zip(in_database, in_python, strict=True):
            self.assertEqual((db_row.kind, db_row.calls), (py_row.kind, py_row.calls))
            self.assertAlmostEqual(db_row.p50_ms, py_row.p50_ms)
            self.assertAlmostEqual(db_row.p99_ms, py_row.p99_ms)

    def test_calls_older_than_the_window_do_not_count(self) -> None:
        provider_call(self.day.payouts[0], ProviderCallKind.CANCEL, 900, self.now - timedelta(1))
        kinds = {row.kind for row in ops.provider_latency(since=self.now - timedelta(hours=1))}
        self.assertNotIn(ProviderCallKind.CANCEL, kinds)

    def test_failing_and_disabled_endpoints_are_listed_healthy_ones_not(self) -> None:
        self.assertEqual(
            ops.webhook_endpoints_failing(),
            [self.day.failing_endpoint, self.day.disabled_endpoint],
        )
        self.assertEqual(WebhookEndpoint.objects.count(), 3)

    def test_page_shows_the_day_in_a_bounded_number_of_queries(self) -> None:
        self.client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
        # Session, user, and one query per section, whatever the number of rows.
        with self.assertNumQueries(8):
            response = self.client.get(PAGE)
        self.assertEqual(response.status_code, 200)
        assert self.day.under_review is not None and self.day.failing_endpoint is not None
        self.assertContains(
            response, f"/admin/payouts/payoutrequest/{self.day.under_review.pk}/change/"
        )
        self.assertContains(
            response, f"/admin/webhooks/webhookendpoint/{self.day.failing_endpoint.pk}/change/"
        )
        self.assertContains(response, 'data-status="FAILED"')
        self.assertContains(response, "insufficient_funds")


class ChartGeometryTests(TestCase):
    def test_nice_ceiling(self) -> None:
        self.assertEqual(
            [ops.nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 17, 48, 120)],
            [1, 1, 5, 10, 10, 20, 20, 50, 200],
        )

    def test_empty_day_draws_axes_and_no_bars(self) -> None:
        hours = ops.payouts_by_hour(since=ops.window_start(timezone.now()))
        chart = ops.status_chart(hours, dict.fromkeys(ops.STATUS_ORDER, 0))
        self.assertEqual(chart.segments, [])
        self.assertEqual(len(chart.x_ticks), 8)
        self.assertEqual(chart.y_ticks[-1].label, "1")
