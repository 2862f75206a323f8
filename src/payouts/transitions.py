"""The allowed status moves and the one function that applies a move.

Every move is a compare-and-set: ``UPDATE ... WHERE id = %s AND status = <expected>``. The
database serializes concurrent updates of a row, so of two actors racing for the same move
exactly one sees a row count of 1; the other learns it lost and changes nothing.
"""

import uuid
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import FINAL_STATUSES, EventActor, PayoutEvent, PayoutRequest, PayoutStatus

S = PayoutStatus

# target status -> the statuses it may be reached from, in lifecycle order.
ALLOWED_SOURCES: dict[PayoutStatus, tuple[PayoutStatus, ...]] = {
    S.PROCESSING: (S.NEW,),
    S.PAID: (S.PROCESSING,),
    S.FAILED: (S.PROCESSING,),
    S.CANCELED: (S.NEW, S.PROCESSING),
}


def can_move(source: PayoutStatus | str, target: PayoutStatus | str) -> bool:
    return source in ALLOWED_SOURCES.get(PayoutStatus(target), ())


def transition(
    payout_id: uuid.UUID,
    *,
    to: PayoutStatus,
    actor: EventActor,
    reason: str = "",
    only_if: Q | None = None,
    **fields: Any,
) -> PayoutStatus | None:
    """Move the payout to `to` if its current status allows it; return the status it left.

    Returns None (and writes nothing) when the payout is not in an allowed source status,
    including when a concurrent actor got there first. The history row is written in the same
    transaction as the move. `only_if` adds a condition to the compare-and-set (e.g. who holds
    the processing lease); extra `fields` (failure_code, ...) are set by the same UPDATE.
    """
    now = timezone.now()
    values: dict[str, Any] = {"status": to, "updated_at": now, **fields}
    if to in FINAL_STATUSES:
        values |= {"processed_at": now, "lease_expires_at": None}
    with transaction.atomic():
        # Statuses only move forward, so trying the sources in lifecycle order is exact: each
        # attempt is one atomic compare-and-set, and a payout that moved on between attempts is
        # caught by the next one (or by none, if it reached a status `to` cannot come from).
        for source in ALLOWED_SOURCES[to]:
            payout = PayoutRequest.objects.filter(pk=payout_id, status=source)
            if only_if is not None:
                payout = payout.filter(only_if)
            updated = payout.update(**values)
            if updated:
                PayoutEvent.objects.create(
                    payout_id=payout_id,
                    from_status=source,
                    to_status=to,
                    actor=actor,
                    reason=reason,
                )
                return source
    return None
