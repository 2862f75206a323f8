"""Write use cases. Views, tasks and the admin call these; none of them touch status directly."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
from .transitions import (
    lease_expire_after_failed_publish,
    lease_renew_for_sweep,
    lease_take_over,
    transition,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PayoutCreated:
    payout: PayoutRequest
    created: bool  # False: an identical payout with this client_reference already existed


def _lease_deadline() -> datetime:
    return timezone.now() + timedelta(seconds=settings.PAYOUTS_LEASE_SECONDS)


# What a failed publish can raise: kombu's wrapper, redis-py's own connection and timeout
# errors, and socket errors (OSError covers refused, reset, unreachable and socket.timeout).
# Anything else is a bug in our code or configuration and must not pass for a broker outage.
BROKER_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    KombuOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)


def payout_enqueue(
    payout_id: uuid.UUID, *, task_id: str, lease_expires_at: datetime, recovered: bool = False
) -> bool:
    """Publish the processing task `task_id`; True if the broker took it.

    `task_id` and `lease_expires_at` are the lease the payout was given for this task. A broker
    outage is logged (one line) and answered False, after expiring that lease so the next
    recovery sweep publishes again. Any other exception is a bug and propagates.
    The publish is bounded: no retries here (the request thread or the sweep waits for it) and
    the transport's socket timeouts (settings) cap each attempt, so a frozen broker costs a
    create about a second, not tens.
    """
    from .tasks import process_payout  # tasks import services: keep the cycle out of import time

    try:
        process_payout.apply_async(
            args=(str(payout_id),), kwargs={"recovered": recovered}, task_id=task_id, retry=False
        )
    except BROKER_UNAVAILABLE_ERRORS as exc:
        # One line, no traceback: during a broker outage every create lands here.
        logger.warning(
            "could not queue payout %s (%s: %s); the recovery sweep will",
            payout_id,
            type(exc).__name__,
            exc,
        )
        lease_expire_after_failed_publish(payout_id, owner=task_id, expires_at=lease_expires_at)
        return False
    return True


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
            task_id, lease_expires_at = str(uuid.uuid4()), _lease_deadline()
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

            def enqueue_created_payout() -> None:
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
    claimed = transition(
        payout_id,
        to=PayoutStatus.PROCESSING,
        actor=actor,
        reason="claimed",
        lease_owner=attempt_id,
        lease_expires_at=_lease_deadline(),
        count_attempt=True,
    ) is not None or lease_take_over(
        # Already PROCESSING: resume if the lease is ours (a retry, a redelivery of our message)
        # or has expired (its holder died); a live lease belongs to a delivery still at work.
        payout_id,
        owner=attempt_id,
        expires_at=_lease_deadline(),
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


# How long the sweep waits before publishing a recovered payout once more, at most.
REQUEUE_BACKOFF_MAX = timedelta(hours=1)


def _requeue_deadline(now: datetime, created_at: datetime) -> datetime:
    """The lease the sweep gives a payout it re-queues: one lease, or as long as it has waited.

    A message the broker holds cannot be told from a lost one (Redis offers no cheap "is this
    message still queued?"), so the sweep re-queues any payout whose lease expired. Under a
    backlog that re-queue is a duplicate (harmless, but load). Waiting as long as the payout
    has already waited doubles the gap between re-queues: a payout behind a backlog of W
    seconds is re-published about log2(W / lease) times instead of W / lease, and a payout whose
    message really was lost is still re-queued within REQUEUE_BACKOFF_MAX.
    """
    waited = now - created_at
    lease = timedelta(seconds=settings.PAYOUTS_LEASE_SECONDS)
    return now + max(lease, min(waited, REQUEUE_BACKOFF_MAX))


def payouts_recover_stale(*, batch_size: int | None = None) -> int:
    """Queue again the unfinished payouts whose lease expired; return how many were published.

    Those are NEW ones whose publish failed or never happened (payout_enqueue expires the lease
    of a failed publish, so the next sweep retries it), PROCESSING ones whose worker died, and
    ones whose message was lost in the broker or is still waiting behind a backlog (the new
    lease backs off, see _requeue_deadline). Each is re-leased by a compare-and-set first, so
    concurrent sweeps never queue one payout twice. Only publishes the broker took count, and
    the sweep stops at the first failed one (the broker is down; the next sweep retries).
    """
    now = timezone.now()
    stale = PayoutRequest.objects.filter(
        status__in=(PayoutStatus.NEW, PayoutStatus.PROCESSING), lease_expires_at__lt=now
    ).order_by("lease_expires_at")
    queued = 0
    for payout_id, lease, created_at in stale.values_list("pk", "lease_expires_at", "created_at")[
        : batch_size or settings.PAYOUTS_SWEEP_BATCH_SIZE
    ]:
        assert lease is not None  # lease_expires_at__lt never matches NULL
        task_id, expires_at = str(uuid.uuid4()), _requeue_deadline(now, created_at)
        if not lease_renew_for_sweep(
            payout_id, seen_expires_at=lease, owner=task_id, expires_at=expires_at
        ):
            continue  # another sweep or a delivery got there first
        if not payout_enqueue(
            payout_id, task_id=task_id, lease_expires_at=expires_at, recovered=True
        ):
            # The broker is down: every other publish would fail too, each after a timeout.
            # Their leases stay expired (this one's was expired again), so the next sweep
            # tries them all once more.
            logger.warning("recovery sweep stopped: the broker is unavailable")
            break
        queued += 1
    if queued:
        logger.info("recovery sweep queued %d stale payouts", queued)
    return queued
