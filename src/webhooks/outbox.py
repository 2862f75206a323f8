"""Writing events: called inside the transaction of the change they report, never after.

`record_payout_event` is the only writer. It reads the payout as it now is (the row the caller
has just updated, locked by that update until commit, so events of one payout are numbered
without gaps or duplicates) and schedules the dispatch for after the commit.
"""

import uuid

from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery

from payouts.models import PayoutRequest, PayoutStatus

from .models import Event, EventType, WebhookEndpoint

EVENT_OF_STATUS: dict[str, EventType] = {
    PayoutStatus.NEW: EventType.PAYOUT_CREATED,
    PayoutStatus.PROCESSING: EventType.PAYOUT_PROCESSING,
    PayoutStatus.PAID: EventType.PAYOUT_PAID,
    PayoutStatus.FAILED: EventType.PAYOUT_FAILED,
    PayoutStatus.CANCELED: EventType.PAYOUT_CANCELED,
}


def record_payout_event(payout_id: uuid.UUID) -> Event:
    """The event of the payout's current status, written in the caller's transaction."""
    from payouts.api.serializers import PayoutSerializer  # the payout as the API shows it

    assert transaction.get_connection().in_atomic_block, "events are written with their change"
    # One read: the payout, its last event's number, and whether its client has an enabled
    # endpoint. A client without one has nothing to deliver: the event is dispatched as it is
    # written (it is still in the feed), and costs no message. An endpoint receives the events
    # written after it was created.
    payout = PayoutRequest.objects.annotate(
        last_sequence=Subquery(
            Event.objects.filter(payout_id=OuterRef("pk"))
            .order_by("-sequence")
            .values("sequence")[:1]
        ),
        listening=Exists(
            WebhookEndpoint.objects.filter(client_id=OuterRef("client_id"), enabled=True)
        ),
    ).get(pk=payout_id)
    sequence = (payout.last_sequence or 0) + 1
    listening = payout.listening
    event = Event.objects.create(
        client_id=payout.client_id,
        payout=payout,
        type=EVENT_OF_STATUS[payout.status],
        sequence=sequence,
        data=PayoutSerializer(payout).data,
        created_at=payout.updated_at,
        dispatched_at=None if listening else payout.updated_at,
    )
    if listening:
        transaction.on_commit(lambda: dispatch_after_commit(event.pk), robust=True)
    return event


def dispatch_after_commit(event_id: uuid.UUID) -> None:
    """Hand the committed event to the dispatcher; if that fails, the sweep will."""
    from .dispatch import event_dispatch_enqueue

    event_dispatch_enqueue(event_id)
