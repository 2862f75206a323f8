"""Processing a payout: one attempt of the worker, through the provider."""

import logging
import uuid

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db.models import Q

from ..models import EventActor, PayoutEvent, PayoutRequest, PayoutStatus
from ..providers import (
    PayoutDeclined,
    PayoutInstruction,
    PayoutProvider,
    PayoutResult,
    ProviderPermanentError,
    ProviderTransientError,
    get_provider,
)
from ..transitions import lease_take_over, transition
from .queueing import lease_deadline

logger = logging.getLogger(__name__)


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
    claimed = transition(
        payout_id,
        to=PayoutStatus.PROCESSING,
        actor=actor,
        reason="claimed",
        lease_owner=attempt_id,
        lease_expires_at=lease_deadline(),
        count_attempt=True,
    ) is not None or lease_take_over(
        # Already PROCESSING: resume if the lease is ours (a retry, a redelivery of our message)
        # or has expired (its holder died); a live lease belongs to a delivery still at work.
        payout_id,
        owner=attempt_id,
        expires_at=lease_deadline(),
    )
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
    """FAILED provider_unavailable once the provider confirms it never executed the payout.

    A call that timed out may still have been executed, so the provider is asked first and its
    answer, if it has one, is applied instead. If even that lookup cannot reach the provider,
    the outcome is unknown and the payout stays PROCESSING (SPEC: no final status on a guess):
    its lease runs out and the recovery sweep re-queues it, each later delivery asking again.
    Giving up happens only while this delivery still holds the lease: had the lease passed to
    another delivery (ours outlived it), that one may still get the payout paid.
    """
    try:
        known = provider.lookup(str(payout.pk))
    except ProviderTransientError as lookup_exc:
        logger.warning(
            "payout %s: calls failed (%s) and the lookup too (%s): outcome unknown, it stays "
            "PROCESSING until the provider answers",
            payout.pk,
            exc,
            lookup_exc,
        )
        return PayoutStatus.PROCESSING
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
        moved = transition(
            payout.pk,
            to=target,
            actor=actor,
            reason=reason,
            only_if=only_if,
            failure_code=result.code,
            failure_reason=result.reason,
        )
    else:
        target, reason = PayoutStatus.PAID, f"provider reference {result.reference}"
        moved = transition(
            payout.pk,
            to=target,
            actor=actor,
            reason=reason,
            only_if=only_if,
            provider_reference=result.reference,
        )
    if moved:
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
