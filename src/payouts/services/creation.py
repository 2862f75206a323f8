"""Creating a payout, idempotently per (client, client_reference)."""

import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction

from webhooks.outbox import record_payout_event

from ..errors import ClientReferenceConflict
from ..models import ApiClient, EventActor, PayoutEvent, PayoutRequest, PayoutStatus
from ..observability.metrics import PAYOUTS_CREATED
from .queueing import lease_deadline, payout_enqueue


@dataclass(frozen=True)
class PayoutCreated:
    payout: PayoutRequest
    created: bool  # False: an identical payout with this client_reference already existed


def payout_create(
    *,
    client: ApiClient,
    client_reference: str,
    amount: Decimal,
    currency: str,
    destination: str,
    metadata: dict[str, str],
) -> PayoutCreated:
    """Create and queue a payout, idempotently per (client, client_reference).

    Same reference and same data: the existing payout, nothing queued. Same reference and
    different data: ClientReferenceConflict. Inputs must already be normalized (money.py).
    """
    data = {
        "amount": amount,
        "currency": currency,
        "destination": destination,
        "metadata": metadata,
    }
    # Insert first: the unique constraint, not a prior SELECT, decides who owns the reference,
    # and the common case (a new reference) costs no extra query.
    try:
        with transaction.atomic():
            # The lease goes to the task about to be published: should the publish fail, only
            # that task's lease is expired (for the sweep), never a later delivery's.
            task_id, lease_expires_at = str(uuid.uuid4()), lease_deadline()
            payout = PayoutRequest.objects.create(
                client=client,
                client_reference=client_reference,
                lease_owner=task_id,
                lease_expires_at=lease_expires_at,
                **data,
            )
            PayoutEvent.objects.create(
                payout=payout, to_status=PayoutStatus.NEW, actor=EventActor.API, reason="created"
            )
            record_payout_event(payout.pk)  # payout.created, in the same transaction

            def enqueue_created_payout() -> None:
                PAYOUTS_CREATED.inc()  # committed: a payout exists
                payout_enqueue(payout.pk, task_id=task_id, lease_expires_at=lease_expires_at)

            # robust: the payout is stored and the client must get its 201 whatever happens
            # here. A bug in the publish path (not a broker outage: that payout_enqueue handles)
            # is logged at ERROR with its traceback by Django; once the lease runs out the sweep
            # tries again (and fails as loudly while the bug lasts).
            transaction.on_commit(enqueue_created_payout, robust=True)
        return PayoutCreated(payout, created=True)
    except IntegrityError:
        # The reference exists: a repeat, a conflict, or a concurrent request that won.
        existing = PayoutRequest.objects.filter(
            client=client, client_reference=client_reference
        ).first()
        if existing is None:
            raise
    differing = [field for field, value in data.items() if getattr(existing, field) != value]
    if differing:
        raise ClientReferenceConflict(existing, differing)
    return PayoutCreated(existing, created=False)
