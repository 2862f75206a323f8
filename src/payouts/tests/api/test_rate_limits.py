"""Per-client rate limits over a real Redis, and the admin login lockout (django-axes)."""

import re
import socket
import time
import unittest
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, TestCase, override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from prometheus_client import REGISTRY

from payouts.api.errors import answer_problem
from payouts.api.ratelimit import ApiClientRateThrottle
from payouts.models import PayoutRequest

from .helpers import LIST_URL, ApiTestCase

REAL_REDIS = str(settings.CELERY_BROKER_URL).startswith("redis://")
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@unittest.skipUnless(REAL_REDIS, "rate limits need a Redis broker: run them with `make test`")
class RateLimitTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.forget_budgets()
        self.addCleanup(self.redis.close)
        # Budgets this test spent must not limit the next one (SQLite reuses client ids).
        self.addCleanup(self.forget_budgets)

    def forget_budgets(self) -> None:
        # This run's keys only: the runner gives every run a queue name of its own.
        pattern = f"{settings.CELERY_TASK_DEFAULT_QUEUE}:ratelimit:*"
        for key in self.redis.scan_iter(match=pattern):
            self.redis.delete(key)

    def list(self, client: Any = None) -> Any:
        return (client or self.client).get(LIST_URL)

    def assertHeaders(self, response: Any, limit: int, remaining: int) -> None:
        self.assertEqual(response["RateLimit-Limit"], str(limit))
        self.assertEqual(response["RateLimit-Remaining"], str(remaining))
        self.assertEqual(response["RateLimit-Reset"], "1")

    def assertRateLimited(self, response: Any, limit: int) -> None:
        body = self.assertProblem(response, 429, "rate_limited")
        self.assertEqual(body, answer_problem("rate_limited"))
        self.assertEqual(response["Retry-After"], "1")
        self.assertHeaders(response, limit, 0)

    @override_settings(PAYOUTS_RATE_LIMIT_READS_PER_SECOND=5)
    def test_a_request_under_the_limit_passes_with_the_rate_limit_headers(self) -> None:
        response = self.list()
        self.assertEqual(response.status_code, 200)
        self.assertHeaders(response, limit=5, remaining=4)
        self.assertNotIn("Retry-After", response)

    @override_settings(PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND=1)
    def test_a_write_over_the_limit_is_a_429_problem_and_does_nothing(self) -> None:
        refused_before = metric("payouts_rate_limited_total", budget="write")
        self.assertEqual(self.create(client_reference="first").status_code, 201)
        response, published = self.create_counting(client_reference="second")
        self.assertRateLimited(response, limit=1)
        self.assertEqual(published, 0)
        references = PayoutRequest.objects.filter(client=self.merchant)
        self.assertEqual(list(references.values_list("client_reference", flat=True)), ["first"])
        self.assertEqual(metric("payouts_rate_limited_total", budget="write"), refused_before + 1)

    @override_settings(
        PAYOUTS_RATE_LIMIT_READS_PER_SECOND=1, PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND=1
    )
    def test_reads_and_writes_have_budgets_of_their_own(self) -> None:
        self.assertEqual(self.create().status_code, 201)
        self.assertEqual(self.list().status_code, 200)  # the write spent nothing of the reads
        self.assertRateLimited(self.list(), limit=1)
        self.assertRateLimited(self.create(client_reference="inv-2"), limit=1)
        # HEAD and OPTIONS are reads too.
        self.assertEqual(self.client.head(LIST_URL).status_code, 429)
        self.assertEqual(self.client.options(LIST_URL).status_code, 429)

    @override_settings(PAYOUTS_RATE_LIMIT_READS_PER_SECOND=1)
    def test_two_clients_have_budgets_of_their_own(self) -> None:
        self.assertEqual(self.list().status_code, 200)
        self.assertRateLimited(self.list(), limit=1)
        other = self.list(self.other)
        self.assertEqual(other.status_code, 200)
        self.assertHeaders(other, limit=1, remaining=0)

    def test_a_clients_own_limits_win_over_the_defaults(self) -> None:
        self.merchant.rate_limit_reads_per_second = 1
        self.merchant.save(update_fields=["rate_limit_reads_per_second"])
        self.assertEqual(self.list().status_code, 200)
        self.assertRateLimited(self.list(), limit=1)
        # Its writes, and the other client, keep the defaults.
        writes = settings.PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND
        self.assertHeaders(self.create(), limit=writes, remaining=writes - 1)
        reads = settings.PAYOUTS_RATE_LIMIT_READS_PER_SECOND
        self.assertHeaders(self.list(self.other), limit=reads, remaining=reads - 1)

    def test_a_limit_saved_in_the_admin_applies_from_the_next_request(self) -> None:
        staff = User.objects.create_superuser("ops", "ops@example.com", "s3cret-pass!")
        browser = Client()
        browser.force_login(staff)
        url = f"/admin/payouts/apiclient/{self.merchant.pk}/change/"
        page = browser.get(url)
        self.assertContains(page, 'name="rate_limit_reads_per_second"')
        response = browser.post(
            url,
            {
                "name": self.merchant.name,
                "is_active": "on",
                "rate_limit_reads_per_second": "1",
                "rate_limit_writes_per_second": "",
                **inline_management_form(page),
            },
        )
        self.assertEqual(response.status_code, 302, response.content[:3000])
        self.merchant.refresh_from_db()
        self.assertEqual(self.merchant.rate_limit_reads_per_second, 1)
        self.assertIsNone(self.merchant.rate_limit_writes_per_second)
        self.assertEqual(self.list().status_code, 200)
        self.assertRateLimited(self.list(), limit=1)
        changelist = browser.get("/admin/payouts/apiclient/")
        default = settings.PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND
        self.assertContains(changelist, f"{default} (default)")  # the writes, and merchant-b

    def test_a_client_whose_limit_is_0_is_unlimited_whatever_the_default(self) -> None:
        self.merchant.rate_limit_writes_per_second = 0
        self.merchant.save(update_fields=["rate_limit_writes_per_second"])
        with override_settings(PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND=1):
            for n in range(3):
                response = self.create(client_reference=f"inv-{n}")
                self.assertEqual(response.status_code, 201)
                self.assertNotIn("RateLimit-Limit", response)

    @override_settings(PAYOUTS_RATE_LIMIT_READS_PER_SECOND=0)
    def test_a_default_of_0_turns_the_limit_off(self) -> None:
        for _ in range(3):
            response = self.list()
            self.assertEqual(response.status_code, 200)
            for header in HEADERS:
                self.assertNotIn(header, response)
        self.assertEqual(list(self.redis.scan_iter(match=f"*:ratelimit:{self.merchant.pk}:*")), [])

    @override_settings(PAYOUTS_RATE_LIMIT_READS_PER_SECOND=1)
    def test_requests_without_a_valid_key_are_not_limited_here(self) -> None:
        anonymous = self.client_for("")
        anonymous.credentials()
        for _ in range(3):
            response = anonymous.get(LIST_URL)
            self.assertProblem(response, 401, "not_authenticated")
            self.assertNotIn("RateLimit-Limit", response)

    @override_settings(PAYOUTS_RATE_LIMIT_READS_PER_SECOND=1)
    def test_redis_down_lets_requests_through_counted_and_warned_once(self) -> None:
        errors_before = metric("payouts_rate_limit_backend_errors_total")
        with (
            closed_port() as port,
            override_settings(PAYOUTS_RATE_LIMIT_REDIS_URL=f"redis://127.0.0.1:{port}/0"),
            self.assertLogs("payouts.api.ratelimit", "WARNING") as logs,
        ):
            for _ in range(3):
                response = self.list()
                self.assertEqual(response.status_code, 200)
                self.assertNotIn("RateLimit-Limit", response)
        self.assertEqual(metric("payouts_rate_limit_backend_errors_total"), errors_before + 3)
        self.assertEqual(len(logs.records), 1, logs.output)
        self.assertIn("fail open", logs.output[0])
        # Redis again: the limits are back.
        self.assertEqual(self.list().status_code, 200)
        self.assertRateLimited(self.list(), limit=1)

    @override_settings(
        PAYOUTS_RATE_LIMIT_READS_PER_SECOND=1, PAYOUTS_RATE_LIMIT_TIMEOUT_SECONDS=0.3
    )
    def test_a_redis_that_does_not_answer_costs_one_timeout_not_one_per_request(self) -> None:
        # Listening but never reading: connects succeed, commands time out.
        with socket.socket() as hung:
            hung.bind(("127.0.0.1", 0))
            hung.listen(16)
            url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
            with (
                override_settings(PAYOUTS_RATE_LIMIT_REDIS_URL=url),
                self.assertLogs("payouts.api.ratelimit", "WARNING"),
            ):
                started = time.monotonic()
                self.assertEqual(self.list().status_code, 200)
                first = time.monotonic() - started
                started = time.monotonic()
                for _ in range(3):
                    self.assertEqual(self.list().status_code, 200)
                rest = time.monotonic() - started
        self.assertGreaterEqual(first, 0.3)
        self.assertLess(first, 2.0)
        self.assertLess(rest, 0.3)  # left alone for a while after the timeout


def inline_management_form(page: Any) -> dict[str, str]:
    """The hidden management fields of the page's inline formsets, as the browser sends them."""
    fields = re.findall(
        r'<input type="hidden" name="([^"]*-(?:TOTAL|INITIAL|MIN_NUM|MAX_NUM)_FORMS)"'
        r' value="([^"]*)"',
        page.content.decode(),
    )
    return dict(fields)


class RateLimitCoverageTests(TestCase):
    def test_every_api_view_uses_the_rate_limit_throttle(self) -> None:
        views = list(api_views(get_resolver().url_patterns))
        self.assertGreaterEqual(len(views), 5)
        for route, view in views:
            with self.subTest(route=route):
                self.assertEqual(view.throttle_classes, [ApiClientRateThrottle])


def api_views(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(route, view class) of every URL under /api/v1/."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from api_views(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
            yield route, pattern.callback.cls  # type: ignore[attr-defined]


class AdminLoginLockoutTests(TestCase):
    password = "correct-horse-battery"

    @classmethod
    def setUpTestData(cls) -> None:
        User.objects.create_superuser("ops", "ops@example.com", cls.password)

    def login(self, password: str, address: str = "198.51.100.7") -> Any:
        return self.client.post(
            "/admin/login/?next=/admin/",
            {"username": "ops", "password": password},
            REMOTE_ADDR=address,
        )

    def assertLoggedIn(self, response: Any) -> None:
        self.assertRedirects(response, "/admin/", fetch_redirect_response=False)

    def test_five_failed_logins_lock_out_even_the_right_password(self) -> None:
        for _ in range(4):
            self.assertEqual(self.login("wrong").status_code, 200)  # the form again
        self.login("wrong")
        response = self.login(self.password)
        self.assertEqual(response.status_code, 429)
        self.assertNotIn("_auth_user_id", self.client.session)
        # The lockout is the username from that address: the same user elsewhere gets in.
        self.assertLoggedIn(self.login(self.password, address="203.0.113.9"))

    def test_a_success_before_the_limit_resets_the_count(self) -> None:
        for _ in range(4):
            self.login("wrong")
        self.assertLoggedIn(self.login(self.password))
        self.client.logout()
        for _ in range(4):
            self.login("wrong")
        self.assertLoggedIn(self.login(self.password))

    @override_settings(BEHIND_TLS_PROXY=True)
    def test_behind_the_proxy_the_address_it_appended_is_the_one_locked_out(self) -> None:
        def through_proxy(password: str, forwarded_for: str) -> Any:
            return self.client.post(
                "/admin/login/?next=/admin/",
                {"username": "ops", "password": password},
                REMOTE_ADDR="10.0.0.2",
                HTTP_X_FORWARDED_FOR=forwarded_for,
            )

        # A client that makes up a new left-hand address each time is still one address.
        for n in range(5):
            through_proxy("wrong", f"192.0.2.{n}, 198.51.100.7")
        self.assertEqual(through_proxy(self.password, "192.0.2.99, 198.51.100.7").status_code, 429)
        self.assertLoggedIn(through_proxy(self.password, "203.0.113.9"))
