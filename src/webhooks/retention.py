"""Retention: events older than PAYOUTS_EVENT_RETENTION_DAYS are deleted, with what hangs off them.

Deleting an event deletes its deliveries and their attempts (on_delete=CASCADE). Work is done in
batches, each its own short transaction, so pruning a large backlog never holds locks for long or
builds one huge DELETE; a run stops after `max_batches` and the next run (hourly) continues.
An event not yet dispatched, or with a delivery still pending (a replay, say), is kept until it
is done, whatever its age: retention never drops a notification still on its way. The events
of a payout not yet final are kept too: a payout's events are numbered, and its history in the
feed must stay whole while more of it is to come.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from payouts.models import FINAL_STATUSES

from .models import DeliveryStatus, Event, WebhookDelivery

logger = logging.getLogger(__name__)

PRUNE_BATCH_SIZE = 1000
PRUNE_MAX_BATCHES = 100


def events_prune(
    *,
    retention_days: int | None = None,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int = PRUNE_MAX_BATCHES,
) -> int:
    """Delete events past retention (and their deliveries and attempts); return how many."""
    days = settings.PAYOUTS_EVENT_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = timezone.now() - timedelta(days=days)
    pending = WebhookDelivery.objects.filter(event_id=OuterRef("pk"), status=DeliveryStatus.PENDING)
    expired = (
        Event.objects.filter(
            created_at__lt=cutoff,
            dispatched_at__isnull=False,
            payout__status__in=FINAL_STATUSES,
        )
        .exclude(Exists(pending))
        .order_by("created_at")  # oldest first, on the event_created index
    )
    deleted = 0
    for _ in range(max_batches):
        batch = list(expired.values_list("pk", flat=True)[:batch_size])
        if batch:
            # The conditions again, at delete time: a delivery replayed meanwhile keeps its event.
            # only("pk"): the delete's collector loads each event, and `data` is what weighs.
            _, by_model = expired.filter(pk__in=batch).only("pk").delete()
            deleted += by_model.get(Event._meta.label, 0)
        if len(batch) < batch_size:
            break
    else:
        logger.info("pruned %d events; more remain past retention, the next run goes on", deleted)
    return deleted
