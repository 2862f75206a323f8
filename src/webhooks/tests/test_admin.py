"""The back office for notifications: read-only records, filters, and the replay action."""

import re
from datetime import timedelta
from decimal import Decimal

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import TestCase
from django.utils import timezone

from payouts import services
from payouts.models import ApiClient, EventActor, PayoutRequest, PayoutStatus
from payouts.transitions import transition
from webhooks.dispatch import event_dispatch
from webhooks.models import (
    DeliveryStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

ENDPOINTS = "/admin/webhooks/webhookendpoint/"
DELIVERIES = "/admin/webhooks/webhookdelivery/"
EVENTS = "/admin/webhooks/event/"
SECRET = "whsec_c2VjcmV0LW9mLXNob3AtYS1vbmx5LWZvci10ZXN0cw=="
PREVIOUS_SECRET = "whsec_b2xkLXNlY3JldC1vZi1zaG9wLWEtcm90YXRlZA=="


def rows(page: str) -> list[str]:
    return page.split("<tr")[1:]


class WebhooksAdminTests(TestCase):
    staff: User
    shop_a: ApiClient
    shop_b: ApiClient
    healthy: WebhookEndpoint
    failing: WebhookEndpoint
    other_client: WebhookEndpoint
    paid: PayoutRequest
    new: PayoutRequest
    succeeded: WebhookDelivery
    failed: WebhookDelivery

    @classmethod
    def setUpTestData(cls) -> None:
        cls.staff = User.objects.create_superuser("ops", "ops@example.com", "s3cret-pass!")
        cls.shop_a = ApiClient.objects.create(name="shop-a")
        cls.shop_b = ApiClient.objects.create(name="shop-b")
        now = timezone.now()
        cls.healthy = WebhookEndpoint.objects.create(
            client=cls.shop_a,
            url="https://a.example.com/healthy",
            secret=SECRET,
            previous_secret=PREVIOUS_SECRET,
            previous_secret_expires_at=now + timedelta(hours=20),
        )
        cls.failing = WebhookEndpoint.objects.create(
            client=cls.shop_a,
            url="https://a.example.com/gone",
            secret="whsec_Z29uZS1lbmRwb2ludC1zZWNyZXQtZm9yLXRlc3Q=",
            enabled=False,
            failure_streak=7,
            failing_since=now - timedelta(days=5, hours=1),
            disabled_reason="answered 410 Gone",
        )
        cls.other_client = WebhookEndpoint.objects.create(
            client=cls.shop_b, url="https://b.example.com/hooks", secret="whsec_Yi1zZWNyZXQ="
        )
        cls.paid = cls.payout(cls.shop_a, "paid-1")
        transition(cls.paid.pk, to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        transition(
            cls.paid.pk, to=PayoutStatus.PAID, actor=EventActor.WORKER, provider_reference="p1"
        )
        cls.new = cls.payout(cls.shop_b, "new-1")
        # The failing endpoint was enabled when these events were dispatched.
        WebhookEndpoint.objects.filter(pk=cls.failing.pk).update(enabled=True)
        for event in Event.objects.all():
            event_dispatch(event.pk)
        WebhookEndpoint.objects.filter(pk=cls.failing.pk).update(enabled=False)
        paid_event = Event.objects.get(payout=cls.paid, type="payout.paid")
        cls.succeeded = WebhookDelivery.objects.get(event=paid_event, endpoint=cls.healthy)
        cls.failed = WebhookDelivery.objects.get(event=paid_event, endpoint=cls.failing)
        WebhookDelivery.objects.filter(pk=cls.succeeded.pk).update(
            status=DeliveryStatus.SUCCEEDED,
            attempts=2,
            next_attempt_at=None,
            last_status_code=204,
            delivered_at=now,
        )
        WebhookDelivery.objects.filter(pk=cls.failed.pk).update(
            status=DeliveryStatus.FAILED,
            attempts=1,
            next_attempt_at=None,
            last_status_code=410,
            last_error="HTTP 410",
        )
        WebhookAttempt.objects.create(
            delivery=cls.succeeded,
            number=1,
            started_at=now - timedelta(seconds=5),
            status_code=500,
            latency_ms=12,
            response_excerpt="upstream exploded",
        )
        WebhookAttempt.objects.create(
            delivery=cls.succeeded,
            number=2,
            started_at=now,
            status_code=204,
            latency_ms=3,
        )
        WebhookAttempt.objects.create(
            delivery=cls.failed,
            number=1,
            started_at=now,
            status_code=410,
            latency_ms=4,
            response_excerpt="endpoint retired",
        )

    @classmethod
    def payout(cls, client: ApiClient, reference: str) -> PayoutRequest:
        return services.payout_create(
            client=client,
            client_reference=reference,
            amount=Decimal("5.00"),
            currency="EUR",
            destination="sandbox:success",
            metadata={},
        ).payout

    def setUp(self) -> None:
        self.client.force_login(self.staff)

    def test_the_fixture_has_the_deliveries_the_tests_read(self) -> None:
        # shop-a: 3 events x 2 endpoints; shop-b: 1 event x 1 endpoint.
        self.assertEqual(Event.objects.count(), 4)
        self.assertEqual(WebhookDelivery.objects.count(), 7)

    def test_endpoint_list_shows_health_and_filters_by_enabled_and_client(self) -> None:
        response = self.client.get(ENDPOINTS)
        self.assertEqual(response.status_code, 200)
        text = response.content.decode()
        for shown in ("a.example.com/healthy", "b.example.com/hooks", "answered 410 Gone"):
            self.assertIn(shown, text)
        (gone,) = [row for row in rows(text) if "a.example.com/gone" in row]
        self.assertIn(">7<", gone)  # the failure streak
        self.assertIn('alt="False"', gone)
        disabled = self.client.get(ENDPOINTS, {"enabled__exact": "0"}).content.decode()
        self.assertIn("a.example.com/gone", disabled)
        self.assertNotIn("a.example.com/healthy", disabled)
        of_b = self.client.get(ENDPOINTS, {"client__id__exact": self.shop_b.pk}).content.decode()
        self.assertIn("b.example.com/hooks", of_b)
        self.assertNotIn("a.example.com", of_b)

    def test_an_endpoint_page_never_shows_a_secret_in_full_and_cannot_be_edited(self) -> None:
        url = f"{ENDPOINTS}{self.healthy.pk}/change/"
        page = self.client.get(url)
        self.assertEqual(page.status_code, 200)
        text = page.content.decode()
        self.assertIn(SECRET[:10] + "…", text)
        self.assertIn(PREVIOUS_SECRET[:10] + "…", text)
        for secret in (SECRET, PREVIOUS_SECRET):
            self.assertNotIn(secret[:11], text)
        self.assertNotIn('name="url"', text)
        listing = self.client.get(ENDPOINTS).content.decode()
        self.assertNotIn(SECRET[:11], listing)
        self.assertEqual(self.client.post(url, {"url": "https://evil.example"}).status_code, 403)
        self.assertEqual(self.client.get(f"{ENDPOINTS}add/").status_code, 403)
        self.assertEqual(self.client.get(f"{url[: -len('change/')]}delete/").status_code, 403)
        self.healthy.refresh_from_db()
        self.assertEqual(self.healthy.url, "https://a.example.com/healthy")

    def test_deliveries_filter_by_status_endpoint_event_type_and_client(self) -> None:
        everything = self.client.get(DELIVERIES)
        self.assertEqual(everything.status_code, 200)
        self.assertEqual(len(re.findall(r'name="_selected_action"', everything.text)), 7)

        def listed(**query: str | int) -> set[str]:
            text = self.client.get(DELIVERIES, query).content.decode()
            return set(re.findall(r'name="_selected_action" value="([0-9a-f-]+)"', text))

        self.assertEqual(listed(status__exact="failed"), {str(self.failed.pk)})
        self.assertEqual(
            listed(status__exact="succeeded", event__type__exact="payout.paid"),
            {str(self.succeeded.pk)},
        )
        self.assertEqual(len(listed(event__type__exact="payout.created")), 3)
        self.assertEqual(len(listed(endpoint__id__exact=str(self.failing.pk))), 3)
        of_b = listed(endpoint__client__id__exact=self.shop_b.pk)
        self.assertEqual(
            of_b, {str(d.pk) for d in WebhookDelivery.objects.filter(endpoint=self.other_client)}
        )
        self.assertEqual(len(of_b), 1)

    def test_deliveries_are_found_by_event_id_and_by_payout_id(self) -> None:
        def found(q: str) -> set[str]:
            response = self.client.get(DELIVERIES, {"q": q})
            self.assertEqual(response.status_code, 200)
            return set(re.findall(r'name="_selected_action" value="([0-9a-f-]+)"', response.text))

        self.assertEqual(
            found(str(self.succeeded.event_id)), {str(self.succeeded.pk), str(self.failed.pk)}
        )
        self.assertEqual(len(found(str(self.paid.pk))), 6)
        self.assertEqual(len(found(str(self.new.pk))), 1)
        self.assertEqual(found("not-a-uuid"), set())

    def test_a_delivery_page_shows_its_attempts_in_order_read_only(self) -> None:
        url = f"{DELIVERIES}{self.succeeded.pk}/change/"
        page = self.client.get(url)
        self.assertEqual(page.status_code, 200)
        text = page.content.decode()
        for shown in ("upstream exploded", "a.example.com/healthy", "payout.paid", "shop-a"):
            self.assertIn(shown, text)
        self.assertEqual(re.findall(r'<tr[^>]*id="attempt_log-(\d+)"', text), ["0", "1"])
        self.assertNotIn("endpoint retired", text)  # another delivery's attempt
        self.assertNotIn('name="attempt_log-0-status_code"', text)
        self.assertNotIn("attempt_log-0-DELETE", text)
        self.assertNotIn('name="status"', text)
        self.assertEqual(self.client.post(url, {"status": "pending"}).status_code, 403)
        self.succeeded.refresh_from_db()
        self.assertEqual(self.succeeded.status, DeliveryStatus.SUCCEEDED)

    def test_events_are_read_only_and_filter_by_type_and_client_and_search_by_payout(
        self,
    ) -> None:
        listing = self.client.get(EVENTS)
        self.assertEqual(listing.status_code, 200)
        self.assertEqual(len(re.findall(r'name="_selected_action"', listing.text)), 0)  # no action
        paid_only = self.client.get(EVENTS, {"type__exact": "payout.paid"}).content.decode()
        self.assertIn(str(self.paid.pk), paid_only)
        self.assertNotIn(str(self.new.pk), paid_only)
        of_b = self.client.get(EVENTS, {"client__id__exact": self.shop_b.pk}).content.decode()
        self.assertIn(str(self.new.pk), of_b)
        self.assertNotIn(str(self.paid.pk), of_b)
        found = self.client.get(EVENTS, {"q": str(self.new.pk)}).content.decode()
        self.assertIn("payout.created", found)
        self.assertNotIn(str(self.paid.pk), found)
        self.assertEqual(self.client.get(EVENTS, {"q": "nope"}).status_code, 200)
        event = Event.objects.get(payout=self.paid, type="payout.paid")
        url = f"{EVENTS}{event.pk}/change/"
        page = self.client.get(url)
        self.assertEqual(page.status_code, 200)
        for shown in ("payout.paid", "a.example.com/healthy", "a.example.com/gone", "p1"):
            self.assertContains(page, shown)
        self.assertEqual(self.client.post(url, {"type": "payout.failed"}).status_code, 403)
        self.assertEqual(self.client.get(f"{EVENTS}add/").status_code, 403)

    def test_replay_makes_the_selected_deliveries_due_again_and_logs_who_did_it(self) -> None:
        created_event = Event.objects.get(payout=self.paid, type="payout.created")
        gave_up = WebhookDelivery.objects.get(event=created_event, endpoint=self.healthy)
        WebhookDelivery.objects.filter(pk=gave_up.pk).update(
            status=DeliveryStatus.FAILED, attempts=8, next_attempt_at=None, last_status_code=503
        )
        before = timezone.now()
        response = self.client.post(
            DELIVERIES,
            {
                "action": "replay_deliveries",
                "_selected_action": [self.succeeded.pk, gave_up.pk, self.failed.pk],
            },
            follow=True,
        )
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Replayed 2 deliveries.")
        self.assertContains(
            response,
            "Not replayed, the endpoint is disabled (its client re-enables it with PATCH "
            "enabled=true): https://a.example.com/gone.",
        )
        for delivery, attempts in ((self.succeeded, 2), (gave_up, 8)):
            delivery.refresh_from_db()
            self.assertEqual(delivery.status, DeliveryStatus.PENDING)
            # Due now (or, once published, leased to the attempt that is queued).
            assert delivery.next_attempt_at is not None
            self.assertGreaterEqual(delivery.next_attempt_at, before)
            self.assertEqual(delivery.attempts, attempts)  # a replay adds to the count
            entry = LogEntry.objects.get(object_id=str(delivery.pk))
            self.assertEqual((entry.user, entry.action_flag), (self.staff, CHANGE))
        # The attempts so far are kept: a replay adds attempts, it does not rewrite history.
        self.assertEqual(WebhookAttempt.objects.filter(delivery=self.succeeded).count(), 2)
        # The disabled endpoint's delivery is left as it was, and no one is logged for it.
        self.failed.refresh_from_db()
        self.assertEqual(self.failed.status, DeliveryStatus.FAILED)
        self.assertFalse(LogEntry.objects.filter(object_id=str(self.failed.pk)).exists())
        replayed = [str(self.succeeded.pk), str(gave_up.pk)]
        self.assertEqual(LogEntry.objects.exclude(object_id__in=replayed).count(), 0)

    def test_staff_who_may_only_view_cannot_replay(self) -> None:
        viewer = User.objects.create_user("viewer", password="s3cret-pass!", is_staff=True)
        viewer.user_permissions.add(
            *Permission.objects.filter(
                codename__in=["view_webhookdelivery", "view_webhookendpoint", "view_event"]
            )
        )
        self.client.force_login(viewer)
        listing = self.client.get(DELIVERIES)
        self.assertEqual(listing.status_code, 200)
        self.assertNotContains(listing, "replay_deliveries")
        self.client.post(
            DELIVERIES, {"action": "replay_deliveries", "_selected_action": [self.succeeded.pk]}
        )
        self.succeeded.refresh_from_db()
        self.assertEqual(self.succeeded.status, DeliveryStatus.SUCCEEDED)
