"""The allowed status moves, and every compare-and-set on a payout: status moves and leases.

Every write here is a compare-and-set: ``UPDATE ... WHERE id = %s AND <expected state>``. The
database serializes concurrent updates of a row, so of two actors racing for the same change
exactly one sees a row count of 1; the other learns it lost and changes nothing. Nothing outside
this module updates a payout's status or lease.

The lease (``lease_expires_at`` + ``lease_owner``) says until when, and for which task delivery,
an unfinished (NEW or PROCESSING) payout is spoken for. Once it expires, the recovery sweep may
assume the payout's message was lost and queue it again; the database refuses an unfinished
payout without a lease deadline (``payout_unfinished_has_lease``).
"""

import uuid
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from webhooks.outbox import record_payout_event

from .models import (
    FINAL_STATUSES,
    UNFINISHED_STATUSES,
    EventActor,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
)
from .observability.metrics import PAYOUTS_FINISHED, REVIEW_FLAGGED, failure_code_label

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
    lease_owner: str | None = None,
    lease_expires_at: datetime | None = None,
    count_attempt: bool = False,
    failure_code: str | None = None,
    failure_reason: str | None = None,
    provider_reference: str | None = None,
) -> PayoutStatus | None:
    """Move the payout to `to` if its current status allows it; return the status it left.

    Returns None (and writes nothing) when the payout is not in an allowed source status,
    including when a concurrent actor got there first. The history row is written in the same
    transaction as the move. `only_if` adds a condition to the compare-and-set (e.g. who holds
    the processing lease). The named fields are the only ones a move may set besides the status
    (so the row can never disagree with its history): the lease and an attempt count when
    claiming (PROCESSING), failure_* with FAILED, provider_reference with PAID. A final status
    clears the lease itself. Anything else is a TypeError (unknown keyword) or a ValueError.
    """
    to = PayoutStatus(to)
    if to not in ALLOWED_SOURCES:
        raise ValueError(f"no move leads to {to}")
    lease_given = lease_owner is not None or lease_expires_at is not None or count_attempt
    if lease_given and to != S.PROCESSING:
        raise ValueError(f"a move to {to} cannot set the lease (final statuses clear it)")
    if (failure_code is not None or failure_reason is not None) and to != S.FAILED:
        raise ValueError(f"failure_code/failure_reason belong to FAILED, not {to}")
    if provider_reference is not None and to != S.PAID:
        raise ValueError(f"provider_reference belongs to PAID, not {to}")

    now = timezone.now()
    values: dict[str, object] = {"status": to, "updated_at": now}
    optional = {
        "lease_owner": lease_owner,
        "lease_expires_at": lease_expires_at,
        "failure_code": failure_code,
        "failure_reason": failure_reason,
        "provider_reference": provider_reference,
    }
    values |= {name: value for name, value in optional.items() if value is not None}
    if count_attempt:
        values["attempts"] = F("attempts") + 1
    if to in FINAL_STATUSES:
        values |= {"processed_at": now, "lease_expires_at": None, "outcome_unknown_since": None}
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
                record_payout_event(payout_id)  # the client's notification, same transaction
                if to in FINAL_STATUSES:
                    finished = PAYOUTS_FINISHED.labels(
                        status=to, failure_code=failure_code_label(failure_code or "")
                    )
                    transaction.on_commit(finished.inc)
                return source
    return None


def lease_take_over(payout_id: uuid.UUID, *, owner: str, expires_at: datetime) -> bool:
    """A delivery resumes a PROCESSING payout: True if it now holds the lease.

    Compare-and-set on "PROCESSING, and the lease is `owner`'s already (a retry or redelivery of
    the same task) or has expired (its holder died)". A live lease of another delivery wins:
    that delivery is still at work. Winning renews the lease and counts a provider attempt.
    """
    return bool(
        PayoutRequest.objects.filter(
            Q(lease_owner=owner) | Q(lease_expires_at__lt=timezone.now()),
            pk=payout_id,
            status=S.PROCESSING,
        ).update(
            lease_owner=owner,
            lease_expires_at=expires_at,
            attempts=F("attempts") + 1,
            updated_at=timezone.now(),
        )
    )


def lease_renew_for_sweep(
    payout_id: uuid.UUID, *, seen_expires_at: datetime, owner: str, expires_at: datetime
) -> bool:
    """The recovery sweep hands an expired lease to the task it is about to publish.

    Compare-and-set on "still unfinished, and the lease deadline is the expired one the sweep
    read": of concurrent sweeps exactly one wins and publishes, and a payout that moved on or
    was taken over meanwhile is left alone. The dead or stuck delivery that held the lease can
    no longer fail the payout behind the new one's back (giving up needs the lease).
    """
    return bool(
        PayoutRequest.objects.filter(
            pk=payout_id, status__in=UNFINISHED_STATUSES, lease_expires_at=seen_expires_at
        ).update(lease_owner=owner, lease_expires_at=expires_at)
    )


def lease_extend_after_publish(
    payout_id: uuid.UUID, *, owner: str, seen_expires_at: datetime, expires_at: datetime
) -> bool:
    """The sweep's publish of `owner`'s task succeeded: its lease now lasts until `expires_at`.

    Compare-and-set on "unfinished, and the lease is still the short one the sweep gave `owner`
    before publishing". If the delivery has claimed the payout meanwhile, its claim set a lease
    of its own, and that one stands.
    """
    return bool(
        PayoutRequest.objects.filter(
            pk=payout_id,
            status__in=UNFINISHED_STATUSES,
            lease_owner=owner,
            lease_expires_at=seen_expires_at,
        ).update(lease_expires_at=expires_at)
    )


def lease_expire_after_failed_publish(
    payout_id: uuid.UUID, *, owner: str, expires_at: datetime
) -> bool:
    """The publish of `owner`'s task failed: expire its lease now, so the next sweep retries.

    Compare-and-set on "unfinished, and the lease is still the one given to `owner` when it was
    about to be published (same owner, same deadline)". A publish reported failed may still
    have reached the broker (a timeout after Redis took the message): if that delivery has
    claimed the payout meanwhile, its claim renewed the lease, and that live lease stands.
    """
    return bool(
        PayoutRequest.objects.filter(
            pk=payout_id,
            status__in=UNFINISHED_STATUSES,
            lease_owner=owner,
            lease_expires_at=expires_at,
        ).update(lease_expires_at=timezone.now())
    )


def mark_execute_started(payout_id: uuid.UUID, *, owner: str) -> bool:
    """The lease holder is about to send an execute call: True if it may.

    Compare-and-set on "PROCESSING, and the lease is `owner`'s". It races with a cancel's
    "not started yet" compare-and-set on the same row, so the database, not timing, decides
    whether a cancel may skip the provider: once this has won, only the provider can cancel.
    The first start is kept.
    """
    now = timezone.now()
    return bool(
        PayoutRequest.objects.filter(pk=payout_id, status=S.PROCESSING, lease_owner=owner).update(
            execute_started_at=Coalesce(F("execute_started_at"), now), updated_at=now
        )
    )


def lease_extend(payout_id: uuid.UUID, *, owner: str, until: datetime) -> bool:
    """The lease holder keeps the payout until `until` (a retry's backoff, a later re-check)."""
    return bool(
        PayoutRequest.objects.filter(pk=payout_id, status=S.PROCESSING, lease_owner=owner).update(
            lease_expires_at=until
        )
    )


def leases_renew(held: list[tuple[uuid.UUID, str]], *, until: datetime) -> int:
    """The heartbeat: extend to `until` each lease still held by its owner, never shorten one."""
    if not held:
        return 0
    owned = Q()
    for payout_id, owner in held:
        owned |= Q(pk=payout_id, lease_owner=owner)
    return PayoutRequest.objects.filter(
        owned, status=S.PROCESSING, lease_expires_at__lt=until
    ).update(lease_expires_at=until)


def outcome_unknown_mark(payout_id: uuid.UUID) -> None:
    """An execute call got no answer: the payout must be looked up (the first moment is kept)."""
    now = timezone.now()
    PayoutRequest.objects.filter(pk=payout_id, status=S.PROCESSING).update(
        outcome_unknown_since=Coalesce(F("outcome_unknown_since"), now), updated_at=now
    )


def outcome_unknown_clear(payout_id: uuid.UUID) -> None:
    """The provider answered that it never accepted the payout: no outcome is pending."""
    PayoutRequest.objects.filter(pk=payout_id, status=S.PROCESSING).update(
        outcome_unknown_since=None, updated_at=timezone.now()
    )


def review_flag(payout_id: uuid.UUID, *, reason: str) -> bool:
    """Flag an unfinished payout for a person to look at; True the first time only."""
    now = timezone.now()
    flagged = bool(
        PayoutRequest.objects.filter(
            pk=payout_id, status=S.PROCESSING, review_flagged_at__isnull=True
        ).update(review_flagged_at=now, review_reason=reason[:500], updated_at=now)
    )
    if flagged:
        transaction.on_commit(REVIEW_FLAGGED.inc)
    return flagged
