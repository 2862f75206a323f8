"""Read use cases of the notifications, always scoped to the calling API client."""

import uuid

from django.db.models import Prefetch, QuerySet

from payouts.models import ApiClient

from .errors import WebhookDeliveryNotFound, WebhookEndpointNotFound
from .models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def endpoint_get(*, client: ApiClient, endpoint_id: str | uuid.UUID) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(pk=_uuid(endpoint_id), client=client)
    except (ValueError, WebhookEndpoint.DoesNotExist):
        raise WebhookEndpointNotFound(endpoint_id) from None


def endpoint_list(*, client: ApiClient) -> QuerySet[WebhookEndpoint]:
    """The client's endpoints (unordered: the paginator orders)."""
    return WebhookEndpoint.objects.filter(client=client)


def delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries with their event and attempts (unordered: the paginator orders)."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related(
            Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number"))
        )
    )


def delivery_get(*, endpoint: WebhookEndpoint, delivery_id: str | uuid.UUID) -> WebhookDelivery:
    try:
        return delivery_list(endpoint=endpoint).get(pk=_uuid(delivery_id))
    except (ValueError, WebhookDelivery.DoesNotExist):
        raise WebhookDeliveryNotFound(delivery_id) from None


def event_list(
    *,
    client: ApiClient,
    event_type: str | None = None,
    payout_id: uuid.UUID | None = None,
) -> QuerySet[Event]:
    """The client's events matching every given filter (unordered: the paginator orders)."""
    events = Event.objects.filter(client=client)
    if event_type:
        events = events.filter(type=event_type)
    if payout_id:
        events = events.filter(payout_id=payout_id)
    return events
