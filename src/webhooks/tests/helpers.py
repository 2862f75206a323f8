"""Shared fixtures of the webhooks API tests (on top of the payouts API's)."""

from typing import Any
from unittest import mock

from django.utils import timezone

from payouts.models import PayoutRequest
from payouts.tests.api.helpers import ApiTestCase
from webhooks.dispatch import event_dispatch
from webhooks.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.tasks import dispatch_event

ENDPOINTS_URL = "/api/v1/webhook-endpoints/"
EVENTS_URL = "/api/v1/events/"
# The test runner allows local receivers; these tests register ones that need no network.
RECEIVER_URL = "http://127.0.0.1:9/hooks"


def endpoint_url(endpoint_id: Any) -> str:
    return f"{ENDPOINTS_URL}{endpoint_id}/"


def deliveries_url(endpoint_id: Any) -> str:
    return f"{endpoint_url(endpoint_id)}deliveries/"


def retry_url(endpoint_id: Any, delivery_id: Any) -> str:
    return f"{deliveries_url(endpoint_id)}{delivery_id}/retry/"


def rotate_url(endpoint_id: Any) -> str:
    return f"{endpoint_url(endpoint_id)}rotate-secret/"


class WebhookApiTestCase(ApiTestCase):
    def register(self, client: Any = None, **body: Any) -> Any:
        body.setdefault("url", RECEIVER_URL)
        return (client or self.client).post(ENDPOINTS_URL, body, format="json")

    def registered(self, client: Any = None, **body: Any) -> WebhookEndpoint:
        response = self.register(client, **body)
        self.assertEqual(response.status_code, 201, response.content)
        return WebhookEndpoint.objects.get(pk=response.json()["id"])

    def payout_with_events(self, client: Any = None, **overrides: Any) -> PayoutRequest:
        """A payout created over the API, its event dispatched here (the real event_dispatch);
        only the broker publish of the dispatch task is a mock, so no message leaves the test."""
        with mock.patch.object(dispatch_event, "apply_async"):
            payout = self.created_payout(client, **overrides)
        for event in Event.objects.filter(payout=payout, dispatched_at__isnull=True):
            event_dispatch(event.pk)
        return payout

    def moved(self, payout: PayoutRequest, *statuses: Any) -> None:
        with (
            mock.patch.object(dispatch_event, "apply_async"),
            self.captureOnCommitCallbacks(execute=True),
        ):
            self.move(payout, *statuses)
        for event in Event.objects.filter(payout=payout, dispatched_at__isnull=True):
            event_dispatch(event.pk)

    @staticmethod
    def attempted(delivery: WebhookDelivery, *answers: tuple[int | None, str, str]) -> None:
        """Record attempts as the delivery worker does: (status code, error, response)."""
        for status_code, error, response in answers:
            delivery.attempts += 1
            WebhookAttempt.objects.create(
                delivery=delivery,
                number=delivery.attempts,
                started_at=timezone.now(),
                status_code=status_code,
                latency_ms=12,
                error=error,
                response_excerpt=response,
            )
            delivery.last_status_code = status_code
            delivery.last_error = error
            delivery.last_latency_ms = 12
        delivery.save()
