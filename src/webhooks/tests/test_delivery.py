"""Delivery against a real HTTP receiver: signing, retries, 410, disabling, leases, redirects."""

import base64
import json
import secrets
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from payouts import services
from payouts.models import ApiClient
from webhooks.delivery import (
    Outcome,
    delivery_attempt,
    delivery_replay,
    endpoint_disable,
    webhooks_sweep,
)
from webhooks.dispatch import event_dispatch
from webhooks.models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint

from .receiver import Receiver

LOCAL = {"PAYOUTS_WEBHOOKS_ALLOW_HTTP": True, "PAYOUTS_WEBHOOKS_ALLOW_PRIVATE": True}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class DeliveryFixtures:
    receiver: Receiver

    def make_endpoint(self, url: str, **fields: Any) -> WebhookEndpoint:
        return WebhookEndpoint.objects.create(
            client=self.client_account, url=url, secret=new_secret(), **fields
        )

    def setUpAccount(self) -> None:
        self.client_account = ApiClient.objects.create(name=f"merchant-{secrets.token_hex(4)}")

    def new_event(self, reference: str = "r1") -> Event:
        payout = services.payout_create(
            client=self.client_account,
            client_reference=reference,
            amount=Decimal("5.00"),
            currency="EUR",
            destination="sandbox:success",
            metadata={},
        ).payout
        return Event.objects.get(payout=payout, sequence=1)

    def delivery_to(self, endpoint: WebhookEndpoint, reference: str = "r1") -> WebhookDelivery:
        event = self.new_event(reference)
        Event.objects.filter(pk=event.pk).update(dispatched_at=None)
        (delivery,) = [d for d in event_dispatch(event.pk) if d.endpoint_id == endpoint.pk]
        return delivery

    def make_due(self, delivery: WebhookDelivery) -> None:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )


@override_settings(**LOCAL, PAYOUTS_WEBHOOK_RETRY_SCHEDULE=(0, 5, 300))
class DeliveryTests(DeliveryFixtures, TestCase):
    def setUp(self) -> None:
        self.setUpAccount()
        self.receiver = Receiver().__enter__()
        self.addCleanup(self.receiver.__exit__)

    def test_the_post_is_the_event_signed_per_standard_webhooks(self) -> None:
        endpoint = self.make_endpoint(self.receiver.url)
        delivery = self.delivery_to(endpoint)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.SUCCEEDED)

        (request,) = self.receiver.requests()
        body = Webhook(endpoint.secret).verify(request.body, request.headers)
        event = delivery.event
        self.assertEqual(request.headers["webhook-id"], str(event.id))
        self.assertEqual(request.headers["Content-Type"], "application/json")
        self.assertIn("payouts-webhooks", request.headers["User-Agent"])
        self.assertEqual(
            body,
            {
                "id": str(event.id),
                "type": "payout.created",
                "created_at": body["created_at"],
                "sequence": 1,
                "data": event.data,
            },
        )
        self.assertEqual(body["data"]["status"], "NEW")
        with self.assertRaises(WebhookVerificationError):
            Webhook(new_secret()).verify(request.body, request.headers)
        with self.assertRaises(WebhookVerificationError):  # the bytes are what was signed
            Webhook(endpoint.secret).verify(request.body + b" ", request.headers)

        delivery.refresh_from_db()
        self.assertEqual(delivery.status, DeliveryStatus.SUCCEEDED)
        self.assertIsNotNone(delivery.delivered_at)
        self.assertIsNone(delivery.next_attempt_at)
        self.assertEqual((delivery.attempts, delivery.last_status_code), (1, 200))
        attempt = WebhookAttempt.objects.get(delivery=delivery)
        self.assertEqual((attempt.number, attempt.status_code, attempt.error), (1, 200, ""))
        self.assertEqual(attempt.response_excerpt, "answer 200")
        self.assertIsNotNone(attempt.latency_ms)

    def test_during_a_rotation_both_secrets_sign_until_the_old_one_expires(self) -> None:
        old = new_secret()
        endpoint = self.make_endpoint(
            self.receiver.url,
            previous_secret=old,
            previous_secret_expires_at=timezone.now() + timedelta(hours=24),
        )
        delivery_attempt(self.delivery_to(endpoint, "a").pk)
        request = self.receiver.requests()[0]
        self.assertEqual(len(request.headers["webhook-signature"].split(" ")), 2)
        Webhook(endpoint.secret).verify(request.body, request.headers)
        Webhook(old).verify(request.body, request.headers)

        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
        )
        delivery_attempt(self.delivery_to(endpoint, "b").pk)
        request = self.receiver.requests()[1]
        Webhook(endpoint.secret).verify(request.body, request.headers)
        with self.assertRaises(WebhookVerificationError):
            Webhook(old).verify(request.body, request.headers)

    def test_failures_follow_the_schedule_then_fail_with_every_attempt_logged(self) -> None:
        self.receiver.then = 500
        endpoint = self.make_endpoint(self.receiver.url)
        delivery = self.delivery_to(endpoint)
        before = timezone.now()
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.RETRYING)
        delivery.refresh_from_db()
        assert delivery.next_attempt_at is not None
        self.assertAlmostEqual(
            (delivery.next_attempt_at - before).total_seconds(), 5, delta=2
        )  # schedule[1]
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.SKIPPED)  # not due yet
        self.make_due(delivery)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.RETRYING)
        delivery.refresh_from_db()
        assert delivery.next_attempt_at is not None
        self.assertAlmostEqual(
            (delivery.next_attempt_at - timezone.now()).total_seconds(), 300, delta=5
        )
        self.make_due(delivery)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.FAILED)

        delivery.refresh_from_db()
        self.assertEqual(delivery.status, DeliveryStatus.FAILED)
        self.assertEqual((delivery.attempts, delivery.last_status_code), (3, 500))
        self.assertEqual(delivery.last_error, "HTTP 500")
        self.assertIsNone(delivery.next_attempt_at)
        self.assertEqual(
            list(
                WebhookAttempt.objects.filter(delivery=delivery).values_list(
                    "number", "status_code"
                )
            ),
            [(1, 500), (2, 500), (3, 500)],
        )
        self.assertEqual(self.receiver.count(), 3)
        ids = {r.headers["webhook-id"] for r in self.receiver.requests()}
        self.assertEqual(ids, {str(delivery.event_id)})  # stable across retries
        endpoint.refresh_from_db()
        self.assertEqual(endpoint.failure_streak, 3)
        self.assertIsNotNone(endpoint.failing_since)
        self.assertTrue(endpoint.enabled)

        self.receiver.then = 204  # the merchant is back: a 2xx ends the streak
        delivery_attempt(self.delivery_to(endpoint, "r2").pk)
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.failure_streak, endpoint.failing_since), (0, None))

    def test_410_disables_the_endpoint_at_once_and_fails_its_pending_deliveries(self) -> None:
        self.receiver.answers = [410]
        endpoint = self.make_endpoint(self.receiver.url)
        gone = self.delivery_to(endpoint, "a")
        waiting = self.delivery_to(endpoint, "b")
        self.assertEqual(delivery_attempt(gone.pk), Outcome.FAILED)
        endpoint.refresh_from_db()
        self.assertFalse(endpoint.enabled)
        self.assertIn("410", endpoint.disabled_reason)
        gone.refresh_from_db()
        waiting.refresh_from_db()
        self.assertEqual((gone.status, gone.last_status_code), (DeliveryStatus.FAILED, 410))
        self.assertEqual(waiting.status, DeliveryStatus.FAILED)
        self.assertIn("endpoint disabled", waiting.last_error)
        self.assertEqual(self.receiver.count(), 1)
        # A disabled endpoint gets no new deliveries.
        self.assertEqual(event_dispatch(self.new_event("c").pk), [])

    def test_an_endpoint_failing_for_five_days_is_disabled(self) -> None:
        self.receiver.then = 503
        endpoint = self.make_endpoint(
            self.receiver.url,
            failing_since=timezone.now() - timedelta(days=4, hours=23),
            failure_streak=40,
        )
        delivery_attempt(self.delivery_to(endpoint, "a").pk)
        endpoint.refresh_from_db()
        self.assertTrue(endpoint.enabled)  # 4 days 23 hours: not yet
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            failing_since=timezone.now() - timedelta(days=5, seconds=1)
        )
        delivery = self.delivery_to(endpoint, "b")
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.RETRYING)
        endpoint.refresh_from_db()
        self.assertFalse(endpoint.enabled)
        self.assertIn("failing since", endpoint.disabled_reason)
        self.assertEqual(endpoint.failure_streak, 42)
        delivery.refresh_from_db()
        self.assertEqual(delivery.status, DeliveryStatus.FAILED)

    def test_a_redirect_is_not_followed_and_counts_as_a_failure(self) -> None:
        self.receiver.answers = [302]
        endpoint = self.make_endpoint(self.receiver.url)
        delivery = self.delivery_to(endpoint)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.RETRYING)
        self.assertEqual([r.path for r in self.receiver.requests()], ["/hooks"])  # not /moved
        delivery.refresh_from_db()
        self.assertEqual(delivery.last_status_code, 302)
        self.assertIn("redirects are not followed", delivery.last_error)

    def test_a_destination_refused_at_delivery_time_is_a_failed_attempt(self) -> None:
        endpoint = self.make_endpoint(self.receiver.url)  # registered while allowed
        delivery = self.delivery_to(endpoint)
        with override_settings(PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False):
            self.assertEqual(delivery_attempt(delivery.pk), Outcome.RETRYING)
        self.assertEqual(self.receiver.count(), 0)
        delivery.refresh_from_db()
        self.assertIsNone(delivery.last_status_code)
        self.assertTrue(
            delivery.last_error.startswith("destination refused: "), delivery.last_error
        )
        self.assertIn("127.0.0.1", delivery.last_error)
        attempt = WebhookAttempt.objects.get(delivery=delivery)
        self.assertEqual(attempt.error, delivery.last_error)

    def test_no_answer_within_the_timeout_is_a_failed_attempt(self) -> None:
        endpoint = self.make_endpoint("http://127.0.0.1:9/closed")  # discard port: refused
        delivery = self.delivery_to(endpoint)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.RETRYING)
        delivery.refresh_from_db()
        self.assertIsNone(delivery.last_status_code)
        self.assertIn("Connection", delivery.last_error)

    def test_a_message_attempts_only_while_it_holds_the_lease(self) -> None:
        endpoint = self.make_endpoint(self.receiver.url)
        delivery = self.delivery_to(endpoint)
        token = timezone.now() + timedelta(seconds=30)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=token)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.SKIPPED)  # leased, not due
        stale = token - timedelta(seconds=1)
        self.assertEqual(delivery_attempt(delivery.pk, queued_until=stale), Outcome.SKIPPED)
        self.assertEqual(delivery_attempt(delivery.pk, queued_until=token), Outcome.SUCCEEDED)
        self.assertEqual(delivery_attempt(delivery.pk, queued_until=token), Outcome.SKIPPED)
        self.assertEqual(self.receiver.count(), 1)

    def test_a_delivery_of_a_disabled_endpoint_fails_without_a_post(self) -> None:
        endpoint = self.make_endpoint(self.receiver.url)
        delivery = self.delivery_to(endpoint)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
        self.assertEqual(delivery_attempt(delivery.pk), Outcome.FAILED)
        self.assertEqual(self.receiver.count(), 0)

    def test_replay_sends_a_delivered_event_again_with_the_same_id(self) -> None:
        endpoint = self.make_endpoint(self.receiver.url)
        delivery = self.delivery_to(endpoint)
        delivery_attempt(delivery.pk)
        replayed = delivery_replay(delivery)
        self.assertEqual(replayed.status, DeliveryStatus.PENDING)
        assert replayed.next_attempt_at is not None
        # The replay published an attempt holding the delivery; that message's attempt runs it.
        self.assertEqual(
            delivery_attempt(delivery.pk, queued_until=replayed.next_attempt_at),
            Outcome.SUCCEEDED,
        )
        first, second = self.receiver.requests()
        self.assertEqual(first.headers["webhook-id"], second.headers["webhook-id"])
        self.assertEqual(json.loads(first.body), json.loads(second.body))
        replayed.refresh_from_db()
        self.assertEqual((replayed.status, replayed.attempts), (DeliveryStatus.SUCCEEDED, 2))

    def test_endpoint_disable_is_idempotent(self) -> None:
        endpoint = self.make_endpoint(self.receiver.url)
        self.assertTrue(endpoint_disable(endpoint.pk, reason="staff"))
        self.assertFalse(endpoint_disable(endpoint.pk, reason="again"))
        endpoint.refresh_from_db()
        self.assertEqual(endpoint.disabled_reason, "staff")


@override_settings(**LOCAL)
class SweepTests(DeliveryFixtures, TestCase):
    def setUp(self) -> None:
        self.setUpAccount()

    def test_the_sweep_dispatches_missed_events_and_publishes_due_deliveries(self) -> None:
        endpoint = self.make_endpoint("http://127.0.0.1:9/")
        event = self.new_event()  # on_commit never runs inside TestCase: the dispatch was missed
        self.assertIsNone(event.dispatched_at)
        result = webhooks_sweep()
        self.assertEqual(result.events_dispatched, 1)
        self.assertEqual(result.deliveries_published, 1)
        event.refresh_from_db()
        self.assertIsNotNone(event.dispatched_at)
        delivery = WebhookDelivery.objects.get(event=event, endpoint=endpoint)
        assert delivery.next_attempt_at is not None
        self.assertGreater(delivery.next_attempt_at, timezone.now())  # held by its message
        self.assertEqual(webhooks_sweep().deliveries_published, 0)  # not twice

        self.make_due(delivery)  # its message was lost
        self.assertEqual(webhooks_sweep().deliveries_published, 1)


@override_settings(**LOCAL)
class DuplicateMessageTests(DeliveryFixtures, TransactionTestCase):
    def test_concurrent_copies_of_one_message_post_once(self) -> None:
        self.setUpAccount()
        with Receiver() as receiver:
            self.make_endpoint(receiver.url)
            event = self.new_event()
            Event.objects.filter(pk=event.pk).update(dispatched_at=None)
            (delivery,) = event_dispatch(event.pk)
            token = timezone.now() + timedelta(seconds=30)
            WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=token)
            outcomes: list[Outcome] = []
            start = threading.Barrier(4)

            def copy() -> None:
                try:
                    start.wait()
                    outcomes.append(delivery_attempt(delivery.pk, queued_until=token))
                finally:
                    connection.close()

            threads = [threading.Thread(target=copy) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            self.assertEqual(sorted(outcomes), sorted([Outcome.SUCCEEDED] + [Outcome.SKIPPED] * 3))
            self.assertEqual(receiver.count(), 1)
            self.assertEqual(WebhookAttempt.objects.filter(delivery=delivery).count(), 1)
