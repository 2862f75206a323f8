"""Write use cases. Views, tasks and the admin call these; none of them touch status directly."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from .errors import ClientReferenceConflict, PayoutNotCancelable
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


@dataclass(frozen=True)
class PayoutCreated:
    payout: PayoutRequest
    created: bool  # False: an identical payout with this client_reference already existed


def _lease_deadline() -> datetime:
    return timezone.now() + timedelta(seconds=settings.PAYOUTS_LEASE_SECONDS)


def payout_enqueue(
    payout_id: uuid.UUID, *, recovered: bool = False, task_id: str | None = None
) -> None:
    """Publish the processing task; a broker outage is logged, never raised.

    Runs after commit: the payout is already stored, so failing here would turn a stored payout
    into an error response. The recovery sweep queues whatever this could not.
    """
    from .tasks import process_payout  # tasks import services: keep the cycle out of import time

    try:
        process_payout.apply_async(
            args=(str(payout_id),), kwargs={"recovered": recovered}, task_id=task_id
        )
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
    # Insert first: the unique constraint, not a prior SELECT, decides who owns the reference,
    # and the common case (a new reference) costs no extra query.
    try:
        with transaction.atomic():
            payout = PayoutRequest.objects.create(
                client=client,
                client_reference=client_reference,
                lease_expires_at=_lease_deadline(),
                **data,
            )
            PayoutEvent.objects.create(
                payout=payout, to_status=PayoutStatus.NEW, actor=EventActor.API, reason="created"
            )
            transaction.on_commit(lambda: payout_enqueue(payout.pk))
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
    attempt_id: str,
    recovered: bool = False,
    provider: PayoutProvider | None = None,
) -> PayoutStatus | None:
    """One processing attempt: take the lease, call the provider, apply the outcome.

    `attempt_id` identifies the delivery (the Celery task id, which a retry keeps). Safe to run
    any number of times for the same payout: the claim NEW -> PROCESSING and the lease takeover
    are compare-and-set updates, so of concurrent deliveries only the lease holder calls the
    provider (keyed by payout id) until its lease expires; the others return at once. Raises
    ProviderTransientError when the attempt should be retried later; once the payout's
    PAYOUTS_MAX_RETRIES retries are spent it fails instead. Returns the status it is left in.
    """
    actor = EventActor.RECOVERY if recovered else EventActor.WORKER
    lease: dict[str, Any] = {
        "lease_owner": attempt_id,
        "lease_expires_at": _lease_deadline(),
        "attempts": F("attempts") + 1,
    }
    claimed: object = transition(
        payout_id, to=PayoutStatus.PROCESSING, actor=actor, reason="claimed", **lease
    )
    if not claimed:
        # Already PROCESSING: resume if the lease is ours (a retry, a redelivery of our message)
        # or has expired (its holder died); a live lease belongs to a delivery still at work.
        claimed = PayoutRequest.objects.filter(
            Q(lease_owner=attempt_id) | Q(lease_expires_at__lt=timezone.now()),
            pk=payout_id,
            status=PayoutStatus.PROCESSING,
        ).update(**lease)
    payout = PayoutRequest.objects.filter(pk=payout_id).first()
    if not claimed or payout is None or payout.status != PayoutStatus.PROCESSING:
        # Finished or canceled, or another delivery holds the lease: nothing to do here.
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
        # Under the prefork pool the task's time limit cut the call short: a provider timeout.
        exc = ProviderTransientError(
            "provider_timeout", "The provider call exceeded the time limit."
        )
        if not final_attempt:
            raise exc from None
        return _fail_after_retries(payout, exc, provider, actor=actor, attempt_id=attempt_id)
    except ProviderTransientError as exc:
        if not final_attempt:
            raise
        return _fail_after_retries(payout, exc, provider, actor=actor, attempt_id=attempt_id)
    except ProviderPermanentError as exc:
        result = PayoutDeclined(exc.code, exc.reason)
    return _apply_outcome(payout, result, actor=actor)


def _fail_after_retries(
    payout: PayoutRequest,
    exc: ProviderTransientError,
    provider: PayoutProvider,
    *,
    actor: EventActor,
    attempt_id: str,
) -> PayoutStatus:
    """FAILED provider_unavailable, unless the provider did execute the payout after all.

    A call that timed out may still have been executed, so the provider is asked first and its
    answer, if it has one, is applied instead. Giving up is not the provider's truth, so it
    happens only while this delivery still holds the lease: had the lease passed to another
    delivery (ours outlived it), that one may still get the payout paid.
    """
    try:
        known = provider.lookup(str(payout.pk))
    except ProviderTransientError:
        known = None  # as unreachable as before: give up, as the retry budget says
    if known is not None:
        logger.warning(
            "payout %s: calls failed (%s) but the provider has it: %s", payout.pk, exc, known
        )
        return _apply_outcome(payout, known, actor=actor)
    logger.warning("payout %s: provider unavailable, retries exhausted: %s", payout.pk, exc)
    result = PayoutDeclined(
        "provider_unavailable", f"The provider stayed unavailable after retries ({exc.reason})"
    )
    return _apply_outcome(payout, result, actor=actor, only_if=Q(lease_owner=attempt_id))


def _apply_outcome(
    payout: PayoutRequest, result: PayoutResult, *, actor: EventActor, only_if: Q | None = None
) -> PayoutStatus:
    if isinstance(result, PayoutDeclined):
        target, reason = PayoutStatus.FAILED, f"{result.code}: {result.reason}"
        fields = {"failure_code": result.code, "failure_reason": result.reason}
    else:
        target, reason = PayoutStatus.PAID, f"provider reference {result.reference}"
        fields = {"provider_reference": result.reference}
    if transition(payout.pk, to=target, actor=actor, reason=reason, only_if=only_if, **fields):
        return target
    payout.refresh_from_db()
    if payout.status in (target, PayoutStatus.PROCESSING):
        # The same outcome applied by another delivery, or our give-up lost the lease to a
        # delivery that is still trying: nothing to record.
        return PayoutStatus(payout.status)
    # The payout reached another final status first (a cancel while the provider worked):
    # that status stands, and the outcome is kept in the history for reconciliation.
    PayoutEvent.objects.create(
        payout=payout,
        from_status=payout.status,
        to_status=target,
        actor=actor,
        reason=f"not applied, payout already {payout.status}: {reason}",
        applied=False,
    )
    # Money may have moved on a payout our records call CANCELED or FAILED: someone must look.
    log = logger.error if target == PayoutStatus.PAID else logger.warning
    log("payout %s: provider said %s after it became %s", payout.pk, target, payout.status)
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
        # The lease passes to the task about to be published (by its id), so the dead or
        # stuck delivery that held it cannot fail the payout behind the new one's back.
        task_id = str(uuid.uuid4())
        renewed = PayoutRequest.objects.filter(
            pk=payout_id,
            lease_expires_at=lease,
            status__in=(PayoutStatus.NEW, PayoutStatus.PROCESSING),
        ).update(lease_expires_at=_lease_deadline(), lease_owner=task_id)
        if renewed:
            payout_enqueue(payout_id, recovered=True, task_id=task_id)
            queued += 1
    if queued:
        logger.info("recovery sweep queued %d stale payouts", queued)
    return queued
