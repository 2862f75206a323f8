"""POST /payout-requests/{id}/cancel/ and GET /payout-requests/{id}/events/."""

import uuid

from django.test import override_settings

from payouts import services
from payouts.models import EventActor, PayoutEvent, PayoutRequest, PayoutStatus
from payouts.providers import SandboxProvider
from payouts.services.processing import AttemptDeferred

from .helpers import ApiTestCase, cancel_url, events_url


class CancelPayoutTests(ApiTestCase):
    def test_cancel_of_new_payout_returns_200_canceled(self) -> None:
        payout = self.created_payout()
        response = self.client.post(cancel_url(payout.pk))

        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(body["id"], str(payout.pk))
        self.assertEqual(body["status"], "CANCELED")
        self.assertRegex(body["processed_at"], r"^\d{4}-\d\d-\d\dT.*Z$")
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.CANCELED)
        self.assertIsNotNone(payout.processed_at)
        self.assertIsNone(payout.lease_expires_at)
        self.assertGreaterEqual(payout.updated_at, payout.created_at)
        event = PayoutEvent.objects.filter(payout=payout).latest("id")
        self.assertEqual(
            (event.from_status, event.to_status, event.actor, event.applied),
            (PayoutStatus.NEW, PayoutStatus.CANCELED, EventActor.API, True),
        )

    def test_cancel_moves_updated_at(self) -> None:
        payout = self.created_payout()
        before = payout.updated_at
        self.client.post(cancel_url(payout.pk))
        payout.refresh_from_db()
        self.assertGreater(payout.updated_at, before)

    def test_cancel_of_processing_payout_returns_200_canceled(self) -> None:
        payout = self.created_payout()
        self.move(payout, PayoutStatus.PROCESSING)
        response = self.client.post(cancel_url(payout.pk))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["status"], "CANCELED")
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.CANCELED)
        self.assertEqual(
            list(payout.events.order_by("id").values_list("from_status", "to_status")),
            [("", "NEW"), ("NEW", "PROCESSING"), ("PROCESSING", "CANCELED")],
        )

    def started_at_the_provider(self, destination: str, latency_ms: int) -> PayoutRequest:
        """A payout whose execute call reached the sandbox and timed out (answer unknown)."""
        payout = self.created_payout(destination=destination)
        provider = SandboxProvider(latency_ms=latency_ms, failure_rate=0.0)
        with (
            override_settings(PAYOUTS_PROVIDER_TIMEOUT_SECONDS=0.05),
            self.assertRaises(AttemptDeferred),
        ):
            services.payout_process(payout_id=payout.pk, attempt_id="task-1", provider=provider)
        return payout

    def test_cancel_after_the_call_started_is_confirmed_by_the_provider(self) -> None:
        payout = self.started_at_the_provider("sandbox:success", latency_ms=60_000)
        response = self.client.post(cancel_url(payout.pk))
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["status"], "CANCELED")

    def test_cancel_after_the_provider_executed_is_400_with_the_status_it_now_has(self) -> None:
        payout = self.started_at_the_provider("sandbox:lost", latency_ms=0)
        body = self.assertProblem(
            self.client.post(cancel_url(payout.pk)), 400, "payout_not_cancelable"
        )
        self.assertEqual(body["payout_status"], "PAID")
        self.assertIn("PAID", body["message"])
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.PAID)

    def test_cancel_the_provider_cannot_confirm_is_503_and_changes_nothing(self) -> None:
        payout = self.started_at_the_provider("sandbox:cancel-refused", latency_ms=60_000)
        response = self.client.post(cancel_url(payout.pk))
        body = self.assertProblem(response, 503, "provider_unavailable")
        self.assertEqual(response["Retry-After"], "5")
        self.assertEqual(body["payout_status"], "PROCESSING")
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.PROCESSING)

    def test_cancel_of_paid_payout_is_rejected(self) -> None:
        payout = self.created_payout()
        self.move(payout, PayoutStatus.PROCESSING, PayoutStatus.PAID)
        self.assertNotCancelable(payout, "PAID")

    def test_cancel_of_failed_payout_is_rejected(self) -> None:
        payout = self.created_payout()
        self.move(
            payout, PayoutStatus.PROCESSING, PayoutStatus.FAILED, failure_code="account_closed"
        )
        self.assertNotCancelable(payout, "FAILED")

    def test_cancel_of_canceled_payout_is_rejected(self) -> None:
        payout = self.created_payout()
        self.assertEqual(self.client.post(cancel_url(payout.pk)).status_code, 200)
        payout.refresh_from_db()
        self.assertNotCancelable(payout, "CANCELED")

    def assertNotCancelable(self, payout: PayoutRequest, status: str) -> None:
        events_before = payout.events.count()
        processed_at, updated_at = payout.processed_at, payout.updated_at
        response = self.client.post(cancel_url(payout.pk))
        body = self.assertProblem(response, 400, "payout_not_cancelable")
        self.assertEqual(body["payout_status"], status)
        payout.refresh_from_db()
        self.assertEqual(payout.status, status)
        self.assertEqual((payout.processed_at, payout.updated_at), (processed_at, updated_at))
        self.assertEqual(payout.events.count(), events_before)

    def test_cancel_of_unknown_or_malformed_id_is_404(self) -> None:
        self.assertProblem(self.client.post(cancel_url(uuid.uuid4())), 404, "not_found")
        self.assertProblem(self.client.post(cancel_url("not-a-uuid")), 404, "not_found")

    def test_cancel_ignores_a_request_body(self) -> None:
        payout = self.created_payout()
        response = self.client.post(cancel_url(payout.pk), {"status": "PAID"}, format="json")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["status"], "CANCELED")


class EventsTests(ApiTestCase):
    def test_events_of_a_new_payout_show_its_creation(self) -> None:
        payout = self.created_payout()
        response = self.client.get(events_url(payout.pk))
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(list(body), ["results"])
        self.assertEqual(len(body["results"]), 1)
        event = body["results"][0]
        self.assertEqual(
            set(event), {"from_status", "to_status", "actor", "reason", "applied", "created_at"}
        )
        self.assertIsNone(event["from_status"])
        self.assertEqual(event["to_status"], "NEW")
        self.assertEqual(event["actor"], "api")
        self.assertTrue(event["applied"])
        self.assertRegex(event["created_at"], r"Z$")

    def test_events_are_oldest_first(self) -> None:
        payout = self.created_payout()
        self.move(payout, PayoutStatus.PROCESSING, PayoutStatus.PAID)
        results = self.client.get(events_url(payout.pk)).json()["results"]
        self.assertEqual(
            [(e["from_status"], e["to_status"]) for e in results],
            [(None, "NEW"), ("NEW", "PROCESSING"), ("PROCESSING", "PAID")],
        )
        self.assertEqual([e["actor"] for e in results], ["api", "worker", "worker"])
        self.assertEqual(
            [e["created_at"] for e in results], sorted(e["created_at"] for e in results)
        )

    def test_events_show_an_api_cancel(self) -> None:
        payout = self.created_payout()
        self.client.post(cancel_url(payout.pk))
        results = self.client.get(events_url(payout.pk)).json()["results"]
        self.assertEqual(results[-1]["from_status"], "NEW")
        self.assertEqual(results[-1]["to_status"], "CANCELED")
        self.assertEqual(results[-1]["actor"], "api")

    def test_events_of_unknown_or_malformed_id_are_404(self) -> None:
        self.assertProblem(self.client.get(events_url(uuid.uuid4())), 404, "not_found")
        self.assertProblem(self.client.get(events_url("nope")), 404, "not_found")
