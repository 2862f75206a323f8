"""Retention: events past PAYOUTS_EVENT_RETENTION_DAYS go, with their deliveries and attempts."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.test import SimpleTestCase, TestCase, override_settings
from django.utils import timezone

from config.celery import app
from payouts import services
from payouts.models import ApiClient, EventActor, PayoutRequest, PayoutStatus
from payouts.tests.unit.test_deployment_settings import manage, setting
from payouts.transitions import transition
from webhooks import tasks
from webhooks.dispatch import event_dispatch
from webhooks.models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.retention import events_prune


class RetentionTests(TestCase):
    def setUp(self) -> None:
        self.shop = ApiClient.objects.create(name="shop")
        self.endpoint = WebhookEndpoint.objects.create(
            client=self.shop, url="https://shop.example.com/hooks", secret="whsec_x"
        )

    def paid_payout(self, reference: str, age: timedelta) -> PayoutRequest:
        """A paid payout whose three events were delivered (one after a retry), `age` ago."""
        payout = services.payout_create(
            client=self.shop,
            client_reference=reference,
            amount=Decimal("5.00"),
            currency="EUR",
            destination="sandbox:success",
            metadata={},
        ).payout
        transition(payout.pk, to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        transition(payout.pk, to=PayoutStatus.PAID, actor=EventActor.WORKER)
        for event in Event.objects.filter(payout=payout):
            (delivery,) = event_dispatch(event.pk)
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.save()
            for number in (1, 2):
                WebhookAttempt.objects.create(
                    delivery=delivery, number=number, started_at=timezone.now()
                )
        Event.objects.filter(payout=payout).update(created_at=timezone.now() - age)
        return payout

    def test_events_past_retention_go_with_their_deliveries_and_attempts(self) -> None:
        old = self.paid_payout("old", timedelta(days=30, minutes=1))
        recent = self.paid_payout("recent", timedelta(days=29, hours=23))
        self.assertEqual((Event.objects.count(), WebhookAttempt.objects.count()), (6, 12))

        self.assertEqual(events_prune(), 3)

        self.assertFalse(Event.objects.filter(payout=old).exists())
        self.assertEqual(Event.objects.filter(payout=recent).count(), 3)
        self.assertFalse(WebhookDelivery.objects.filter(event__payout=old).exists())
        self.assertEqual(WebhookDelivery.objects.count(), 3)
        self.assertEqual(WebhookAttempt.objects.count(), 6)
        # The payout itself and its status history stay: only the notifications expire.
        old.refresh_from_db()
        self.assertEqual(old.status, PayoutStatus.PAID)
        self.assertEqual(old.events.count(), 3)

    @override_settings(PAYOUTS_EVENT_RETENTION_DAYS=2)
    def test_the_retention_is_the_setting(self) -> None:
        self.paid_payout("three-days", timedelta(days=3))
        self.paid_payout("one-day", timedelta(days=1))
        self.assertEqual(events_prune(), 3)
        self.assertEqual(
            set(Event.objects.values_list("payout__client_reference", flat=True)), {"one-day"}
        )

    def test_an_event_still_on_its_way_is_kept_whatever_its_age(self) -> None:
        payout = self.paid_payout("old", timedelta(days=40))
        _created, processing, paid = Event.objects.filter(payout=payout).order_by("sequence")
        Event.objects.filter(pk=processing.pk).update(dispatched_at=None)
        WebhookDelivery.objects.filter(event=paid).update(
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now()
        )
        self.assertEqual(events_prune(), 1)
        self.assertEqual(set(Event.objects.values_list("pk", flat=True)), {processing.pk, paid.pk})
        self.assertEqual(WebhookAttempt.objects.filter(delivery__event=paid).count(), 2)

    def test_a_run_deletes_in_bounded_batches_and_the_next_run_goes_on(self) -> None:
        for n in range(3):
            self.paid_payout(f"old-{n}", timedelta(days=31))  # 9 events
        # Per batch: its ids; the delete's collect of those events (rechecked) and of their
        # deliveries; the attempts', deliveries' and events' DELETEs. Two batches, then stop.
        with self.assertNumQueries(2 * 6):
            deleted = events_prune(batch_size=4, max_batches=2)
        self.assertEqual(deleted, 8)
        self.assertEqual(Event.objects.count(), 1)
        self.assertEqual(events_prune(batch_size=4, max_batches=2), 1)
        self.assertEqual(Event.objects.count(), 0)
        self.assertEqual(events_prune(), 0)

    def test_beat_prunes_hourly_on_the_webhooks_queue(self) -> None:
        entry = settings.CELERY_BEAT_SCHEDULE["webhooks-prune-events"]
        self.assertEqual(entry["task"], tasks.prune_events.name)
        self.assertEqual(entry["schedule"], 3600)
        route = app.amqp.router.route({}, tasks.prune_events.name)
        self.assertEqual(route["queue"].name, settings.PAYOUTS_WEBHOOKS_QUEUE)
        self.paid_payout("old", timedelta(days=31))
        self.assertEqual(tasks.prune_events.apply().get(), 3)  # the task body, in process
        self.assertEqual(Event.objects.count(), 0)


class RetentionSettingTests(SimpleTestCase):
    def test_thirty_days_by_default_and_less_than_a_day_refused_at_start(self) -> None:
        local = {"DJANGO_ENV": "local"}
        self.assertEqual(setting("PAYOUTS_EVENT_RETENTION_DAYS", **local), "30")
        self.assertEqual(
            setting("PAYOUTS_EVENT_RETENTION_DAYS", PAYOUTS_EVENT_RETENTION_DAYS="7", **local), "7"
        )
        refused = manage("check", PAYOUTS_EVENT_RETENTION_DAYS="0", **local)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("PAYOUTS_EVENT_RETENTION_DAYS must be at least 1", refused.stderr)
