"""Deliveries of an endpoint, their retry, and the events feed (same bodies as the webhooks)."""

import json
import uuid

from django.utils import timezone

from payouts.models import PayoutRequest, PayoutStatus
from webhooks.models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint
from webhooks.payloads import event_body

from .helpers import EVENTS_URL, WebhookApiTestCase, deliveries_url, retry_url


class DeliveriesTests(WebhookApiTestCase):
    def test_deliveries_list_newest_first_with_their_attempts(self) -> None:
        endpoint = self.registered()
        payout = self.payout_with_events()
        self.moved(payout, PayoutStatus.PROCESSING)
        created, processing = WebhookDelivery.objects.filter(endpoint=endpoint).order_by(
            "event__sequence"
        )
        self.attempted(created, (500, "HTTP 500", "oops"), (200, "", "ok"))
        WebhookDelivery.objects.filter(pk=created.pk).update(
            status=DeliveryStatus.SUCCEEDED, delivered_at=timezone.now()
        )
        response = self.client.get(deliveries_url(endpoint.pk))
        self.assertEqual(response.status_code, 200, response.content)
        rows = response.json()["results"]
        self.assertEqual([row["id"] for row in rows], [str(processing.pk), str(created.pk)])
        newest, oldest = rows
        self.assertEqual(newest["event_type"], "payout.processing")
        self.assertEqual(newest["status"], "pending")
        self.assertIsNotNone(newest["next_attempt_at"])
        self.assertEqual(newest["attempt_log"], [])
        self.assertEqual(oldest["event_id"], str(created.event_id))
        self.assertEqual(oldest["event_type"], "payout.created")
        self.assertEqual(oldest["status"], "succeeded")
        self.assertIsNone(oldest["next_attempt_at"])
        self.assertEqual((oldest["attempts"], oldest["last_status_code"]), (2, 200))
        self.assertEqual(oldest["last_response"], "ok")
        self.assertEqual(
            [
                (a["number"], a["status_code"], a["error"], a["response_excerpt"])
                for a in oldest["attempt_log"]
            ],
            [(1, 500, "HTTP 500", "oops"), (2, 200, "", "ok")],
        )

    def test_deliveries_paginate_and_are_scoped_to_the_endpoint(self) -> None:
        endpoint = self.registered()
        other_endpoint = self.registered(events=["payout.created"])
        for number in range(3):
            self.payout_with_events(client_reference=f"inv-{number}")
        self.assertEqual(WebhookDelivery.objects.filter(endpoint=other_endpoint).count(), 3)
        seen, url = [], f"{deliveries_url(endpoint.pk)}?limit=2"
        while url:
            page = self.client.get(url).json()
            seen += [row["id"] for row in page["results"]]
            url = page["next"]
        expected = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-id")
        self.assertEqual(seen, [str(d.pk) for d in expected])
        self.assertValidationError(
            self.client.get(f"{deliveries_url(endpoint.pk)}?status=failed"),
            ("status", "unknown_parameter"),
        )

    def test_retry_makes_a_delivery_due_again(self) -> None:
        endpoint = self.registered()
        self.payout_with_events()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        self.attempted(delivery, (500, "HTTP 500", ""))
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, next_attempt_at=None
        )
        before = timezone.now()
        response = self.client.post(retry_url(endpoint.pk, delivery.pk))
        self.assertEqual(response.status_code, 202, response.content)
        self.assertEqual(response.json()["status"], "pending")
        self.assertEqual(response.json()["attempts"], 1)  # the log goes on
        delivery.refresh_from_db()
        self.assertEqual(delivery.status, DeliveryStatus.PENDING)
        assert delivery.next_attempt_at is not None
        self.assertGreaterEqual(delivery.next_attempt_at, before)

    def test_retry_of_a_disabled_endpoints_delivery_is_409(self) -> None:
        endpoint = self.registered()
        self.payout_with_events()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILED)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
        self.assertProblem(
            self.client.post(retry_url(endpoint.pk, delivery.pk)), 409, "webhook_endpoint_disabled"
        )
        delivery.refresh_from_db()
        self.assertEqual(delivery.status, DeliveryStatus.FAILED)

    def test_retry_of_unknown_or_foreign_deliveries_is_404(self) -> None:
        endpoint = self.registered()
        theirs = self.registered(self.other)
        self.payout_with_events(self.other)
        their_delivery = WebhookDelivery.objects.get(endpoint=theirs)
        for url, message in (
            (retry_url(endpoint.pk, their_delivery.pk), "No such delivery."),
            (retry_url(endpoint.pk, uuid.uuid4()), "No such delivery."),
            (retry_url(endpoint.pk, "nope"), "No such delivery."),
            (retry_url(theirs.pk, their_delivery.pk), "No such webhook endpoint."),
        ):
            with self.subTest(url=url):
                body = self.assertProblem(self.client.post(url), 404, "not_found")
                self.assertEqual(body["message"], message)
        self.assertProblem(
            self.client.get(retry_url(endpoint.pk, their_delivery.pk)), 405, "method_not_allowed"
        )


class EventsFeedTests(WebhookApiTestCase):
    def test_feed_bodies_are_the_webhook_bodies(self) -> None:
        response = self.create()
        payout_at_creation = response.json()
        payout = self.moved_payout(payout_at_creation["id"])
        feed = self.client.get(EVENTS_URL)
        self.assertEqual(feed.status_code, 200, feed.content)
        rows = feed.json()["results"]
        events = Event.objects.filter(payout_id=payout.pk).order_by("-created_at", "-id")
        self.assertEqual(rows, [json.loads(json.dumps(event_body(e))) for e in events])
        self.assertEqual(
            [row["type"] for row in rows], ["payout.paid", "payout.processing", "payout.created"]
        )
        self.assertEqual([row["sequence"] for row in rows], [3, 2, 1])
        created = rows[-1]
        self.assertEqual(set(created), {"id", "type", "created_at", "sequence", "data"})
        self.assertEqual(created["data"], payout_at_creation)  # the payout as the API showed it
        self.assertEqual(
            rows[0]["data"], self.client.get(f"/api/v1/payout-requests/{payout.pk}/").json()
        )
        self.assertEqual(rows[0]["created_at"], rows[0]["data"]["updated_at"])

    def moved_payout(self, payout_id: str) -> PayoutRequest:
        payout = PayoutRequest.objects.get(pk=payout_id)
        self.moved(payout, PayoutStatus.PROCESSING, PayoutStatus.PAID)
        return payout

    def test_feed_filters_by_type_and_payout_and_is_scoped(self) -> None:
        first = self.payout_with_events(client_reference="a")
        second = self.payout_with_events(client_reference="b")
        self.moved(second, PayoutStatus.CANCELED)
        self.payout_with_events(self.other, client_reference="theirs")
        all_mine = self.client.get(EVENTS_URL).json()["results"]
        self.assertEqual(len(all_mine), 3)
        self.assertEqual({row["data"]["client_reference"] for row in all_mine}, {"a", "b"})
        canceled = self.client.get(f"{EVENTS_URL}?type=payout.canceled").json()["results"]
        self.assertEqual([row["data"]["id"] for row in canceled], [str(second.pk)])
        of_first = self.client.get(f"{EVENTS_URL}?payout_id={first.pk}").json()["results"]
        self.assertEqual([row["type"] for row in of_first], ["payout.created"])
        theirs = Event.objects.get(client=self.other_merchant)
        self.assertEqual(
            self.client.get(f"{EVENTS_URL}?payout_id={theirs.payout_id}").json()["results"], []
        )

    def test_feed_walks_every_page_both_ways(self) -> None:
        for number in range(5):
            self.payout_with_events(client_reference=f"inv-{number}")
        expected = [
            str(e.pk)
            for e in Event.objects.filter(client=self.merchant).order_by("-created_at", "-id")
        ]
        pages, url = [], f"{EVENTS_URL}?limit=2"
        while url:
            page = self.client.get(url).json()
            pages.append(page)
            url = page["next"]
        self.assertEqual([row["id"] for page in pages for row in page["results"]], expected)
        back = self.client.get(pages[-1]["previous"]).json()
        self.assertEqual(back["results"], pages[-2]["results"])

    def test_bad_feed_queries_are_validation_errors(self) -> None:
        for query, pair in (
            ("type=payout.nope", ("type", "invalid_choice")),
            ("payout_id=123", ("payout_id", "invalid")),
            ("type=", ("type", "blank")),
            ("limit=abc", ("limit", "invalid")),
            ("cursor=Zm9v", ("cursor", "invalid_cursor")),
            ("status=PAID", ("status", "unknown_parameter")),
            ("type=payout.paid&type=payout.failed", ("type", "repeated_parameter")),
        ):
            with self.subTest(query=query):
                self.assertValidationError(self.client.get(f"{EVENTS_URL}?{query}"), pair)

    def test_feed_needs_a_key(self) -> None:
        self.client.credentials()
        self.assertProblem(self.client.get(EVENTS_URL), 401, "not_authenticated")
