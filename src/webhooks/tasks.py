"""Celery tasks of the notifications (the webhooks queue): thin shells over the services."""

import uuid
from datetime import datetime

from celery import shared_task

from .delivery import deliveries_publish, delivery_attempt, webhooks_sweep
from .dispatch import event_dispatch
from .retention import events_prune


@shared_task
def dispatch_event(event_id: str) -> int:
    deliveries = event_dispatch(uuid.UUID(event_id))
    deliveries_publish(deliveries)  # a broker outage leaves them due: the sweep publishes them
    return len(deliveries)


@shared_task
def deliver(delivery_id: str, queued_until: str | None = None) -> str:
    lease = datetime.fromisoformat(queued_until) if queued_until else None
    return delivery_attempt(uuid.UUID(delivery_id), queued_until=lease).value


@shared_task
def sweep_webhooks() -> int:
    result = webhooks_sweep()
    return result.events_dispatched + result.deliveries_published


@shared_task
def prune_events() -> int:
    """Beat, hourly: delete events past PAYOUTS_EVENT_RETENTION_DAYS (webhooks.retention)."""
    return events_prune()
