"""The dispatcher: turns committed events into deliveries, one per subscribed endpoint."""

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from payouts.services.queueing import BROKER_UNAVAILABLE_ERRORS

from .models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)


def event_dispatch_enqueue(event_id: uuid.UUID) -> bool:
    """Queue the dispatch of a committed event; False (logged) if the broker is down."""
    from .tasks import dispatch_event

    try:
        dispatch_event.apply_async(args=(str(event_id),), retry=False)
    except BROKER_UNAVAILABLE_ERRORS as exc:
        logger.warning("could not queue event %s (%s); the sweep will", event_id, exc)
        return False
    return True


def event_dispatch(event_id: uuid.UUID) -> list[WebhookDelivery]:
    """Create the event's deliveries (idempotently) and mark it dispatched; return the new ones."""
    with transaction.atomic():
        event = Event.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.dispatched_at is not None:
            return []
        endpoints = WebhookEndpoint.objects.filter(client_id=event.client_id, enabled=True)
        now = timezone.now()
        created = [
            WebhookDelivery.objects.create(
                endpoint=endpoint,
                event=event,
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
            )
            for endpoint in endpoints
            if endpoint.subscribes_to(event.type)
        ]
        Event.objects.filter(pk=event.pk).update(dispatched_at=now)
    return created
