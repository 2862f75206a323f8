"""Write use cases. Views, tasks and the admin call these; none of them touch status directly."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import ApiClient, EventActor, PayoutEvent, PayoutRequest, PayoutStatus
from .providers import (
    PayoutDeclined,
    PayoutInstruction,
    PayoutProvider,
    PayoutResult,
    ProviderPermanentError,
    ProviderTransientError,
    get_provider,
)
from .transitions import transition

logger = logging.getLogger(__name__)


class PayoutError(Exception):
    """Base of the domain errors; api/errors.py maps each to an HTTP answer."""


class ClientReferenceConflict(PayoutError):
    def __init__(self, existing: PayoutRequest, fields: list[str]) -> None:
        super().__init__(f"client_reference {existing.client_reference!r} differs in {fields}")
        self.existing = existing
        self.fields = fields


class PayoutNotCancelable(PayoutError):
    def __init__(self, payout: PayoutRequest) -> None:
        super().__init__(f"payout {payout.pk} is {payout.status}")
        self.payout = payout


@dataclass(frozen=True)
class PayoutCreated:
    payout: PayoutRequest
    created: bool  # False: an identical payout with this client_reference already existed


def _lease_deadline() -> datetime:
    return timezone.now() + timedelta(seconds=settings.PAYOUTS_LEASE_SECONDS)


def payout_enqueue(payout_id: uuid.UUID, *, recovered: bool = False) -> None:
    """Publish the processing task; a broker outage is logged, never raised.

    Runs after commit: the payout is already stored, so failing here would turn a stored payout
    into an error response. The recovery sweep queues whatever this could not.
    """
    from .tasks import process_payout  # tasks import services: keep the cycle out of import time

    try:
        process_payout.apply_async(args=(str(payout_id),), kwargs={"recovered": recovered})
    except Exception as exc:
        # One line, no traceback: during a broker outage every create lands here.
        logger.warning(
            "could not queue payout %s (%s: %s); the recovery sweep will",
            payout_id,
            type(exc).__name__,
            exc,
        )


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
    existing = PayoutRequest.objects.filter(
        client=client, client_reference=client_reference
    ).first()
    if existing is None:
        try:
            with transaction.atomic():
                payout = PayoutRequest.objects.create(
                    client=client,
                    client_reference=client_reference,
                    lease_expires_at=_lease_deadline(),
                    **data,
                )
                PayoutEvent.objects.create(
                    payout=payout,
                    to_status=PayoutStatus.NEW,
                    actor=EventActor.API,
                    reason="created",
                )
                transaction.on_commit(lambda: payout_enqueue(payout.pk))
            return PayoutCreated(payout, created=True)
        except IntegrityError:
            # A concurrent request with the same reference won the unique constraint.
            existing = PayoutRequest.objects.filter(
                client=client, client_reference=client_reference
            ).first()
            if existing is None:
                raise
    differing = [field for field, value in data.items() if getattr(existing, field) != value]
    if differing:
        raise ClientReferenceConflict(existing, differing)
    return PayoutCreated(existing, created=False)


def payout_cancel(*, payout: PayoutRequest, actor: EventActor, reason: str = "") -> PayoutRequest:
    """Cancel a NEW or PROCESSING payout; PayoutNotCancelable once it is final."""
    if transition(payout.pk, to=PayoutStatus.CANCELED, actor=actor, reason=reason or "canceled"):
        payout.refresh_from_db()
        return payout
    payout.refresh_from_db()
    raise PayoutNotCancelable(payout)


def payout_process(
    *,
    payout_id: uuid.UUID,
    recovered: bool = False,
    provider: PayoutProvider | None = None,
) -> PayoutStatus | None:
    """One processing attempt: claim, call the provider, apply the outcome from PROCESSING only.

    Safe to run any number of times for the same payout (duplicate deliveries, retries): the
    claim and the outcome are compare-and-set moves, and the provider is keyed by payout id.
    Raises ProviderTransientError when the attempt should be retried later; the payout's
    attempt after PAYOUTS_MAX_RETRIES retries fails it instead. Returns the status it is left in.
    """
    actor = EventActor.RECOVERY if recovered else EventActor.WORKER
    lease = {"lease_expires_at": _lease_deadline(), "attempts": F("attempts") + 1}
    if not transition(
        payout_id, to=PayoutStatus.PROCESSING, actor=actor, reason="claimed", **lease
    ):
        # Already PROCESSING (a retry, or a redelivery after a worker died): renew its lease.
        PayoutRequest.objects.filter(pk=payout_id, status=PayoutStatus.PROCESSING).update(**lease)
    payout = PayoutRequest.objects.filter(pk=payout_id).first()
    if payout is None or payout.status != PayoutStatus.PROCESSING:
        # Canceled before we got to it, or finished by an earlier delivery: nothing to do.
        return PayoutStatus(payout.status) if payout else None
    final_attempt = payout.attempts > settings.PAYOUTS_MAX_RETRIES

    provider = provider or get_provider()
    instruction = PayoutInstruction(
        idempotency_key=str(payout.pk),
        amount=payout.amount,
        currency=payout.currency,
        destination=payout.destination,
    )
    try:
        result: PayoutResult = provider.execute(instruction)
    except SoftTimeLimitExceeded:
        # The task's time limit cut a provider call short: as retryable as a provider timeout.
        exc = ProviderTransientError(
            "provider_timeout", "The provider call exceeded the time limit."
        )
        if not final_attempt:
            raise exc from None
        result = _retries_exhausted(payout_id, exc)
    except ProviderTransientError as exc:
        if not final_attempt:
            raise
        result = _retries_exhausted(payout_id, exc)
    except ProviderPermanentError as exc:
        result = PayoutDeclined(exc.code, exc.reason)
    return _apply_outcome(payout, result, actor=actor)


def _retries_exhausted(payout_id: uuid.UUID, exc: ProviderTransientError) -> PayoutDeclined:
    logger.warning("payout %s: provider unavailable, retries exhausted: %s", payout_id, exc)
    return PayoutDeclined(
        "provider_unavailable", f"The provider stayed unavailable after retries ({exc.reason})"
    )


def _apply_outcome(
    payout: PayoutRequest, result: PayoutResult, *, actor: EventActor
) -> PayoutStatus:
    if isinstance(result, PayoutDeclined):
        target, reason = PayoutStatus.FAILED, f"{result.code}: {result.reason}"
        fields = {"failure_code": result.code, "failure_reason": result.reason}
    else:
        target, reason = PayoutStatus.PAID, f"provider reference {result.reference}"
        fields = {"provider_reference": result.reference}
    if transition(payout.pk, to=target, actor=actor, reason=reason, **fields):
        return target
    payout.refresh_from_db()
    if payout.status == target:
        return target  # a duplicate delivery; the first one applied this same outcome
    # Canceled while the provider was working: the cancel stands, the outcome is only recorded.
    PayoutEvent.objects.create(
        payout=payout,
        from_status=payout.status,
        to_status=target,
        actor=actor,
        reason=f"not applied, payout already {payout.status}: {reason}",
        applied=False,
    )
    logger.warning(
        "payout %s: provider said %s after it became %s", payout.pk, target, payout.status
    )
    return PayoutStatus(payout.status)


def payouts_recover_stale(*, batch_size: int | None = None) -> int:
    """Queue again the unfinished payouts whose lease expired; return how many.

    NEW ones whose task never reached the broker and PROCESSING ones whose worker died. Each is
    re-leased with a compare-and-set first, so concurrent sweeps never queue one payout twice.
    """
    now = timezone.now()
    stale = PayoutRequest.objects.filter(
        status__in=(PayoutStatus.NEW, PayoutStatus.PROCESSING), lease_expires_at__lt=now
    ).order_by("lease_expires_at")
    queued = 0
    for payout_id, lease in stale.values_list("pk", "lease_expires_at")[
        : batch_size or settings.PAYOUTS_SWEEP_BATCH_SIZE
    ]:
        renewed = PayoutRequest.objects.filter(
            pk=payout_id,
            lease_expires_at=lease,
            status__in=(PayoutStatus.NEW, PayoutStatus.PROCESSING),
        ).update(lease_expires_at=_lease_deadline())
        if renewed:
            payout_enqueue(payout_id, recovered=True)
            queued += 1
    if queued:
        logger.info("recovery sweep queued %d stale payouts", queued)
    return queued
