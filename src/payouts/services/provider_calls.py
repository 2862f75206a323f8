"""Calling the provider on a payout's behalf: every call recorded, every settled answer applied.

Both the worker (execute, lookup, and cancel to void a key) and the cancel use case (cancel)
go through `call_provider`, so no call escapes the record, and through `apply_settled`, so the
provider's answer is the only thing that finishes a payout after a call may have reached it.
"""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.utils import timezone

from ..models import (
    EventActor,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    ProviderCallKind,
    ProviderCallOutcome,
)
from ..observability.metrics import PROVIDER_CALL_SECONDS, UNKNOWN_OUTCOMES
from ..providers import (
    Canceled,
    Declined,
    Executed,
    NotExecuted,
    NotFound,
    Pending,
    ProviderAnswer,
    Settled,
    Unknown,
    release_database_connection,
)
from ..transitions import transition

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=ProviderAnswer)

# The code of the Unknown that stands for an adapter that raised (a bug, not the provider).
ADAPTER_ERROR = "adapter_error"

OUTCOMES: dict[type, ProviderCallOutcome] = {
    Executed: ProviderCallOutcome.EXECUTED,
    Declined: ProviderCallOutcome.DECLINED,
    Canceled: ProviderCallOutcome.CANCELED,
    NotExecuted: ProviderCallOutcome.NOT_EXECUTED,
    Pending: ProviderCallOutcome.PENDING,
    NotFound: ProviderCallOutcome.NOT_FOUND,
    Unknown: ProviderCallOutcome.UNKNOWN,
}


def call_provider(
    payout: PayoutRequest,
    kind: ProviderCallKind,
    call: Callable[[float], Answer],
    *,
    timeout: float,
    requested_by: EventActor,
    attempt: int | None = None,
) -> Answer | Unknown:
    """Make one provider call with a deadline `timeout` seconds away, recorded as it goes.

    The row is written before the call (a call whose process dies stays visible, unfinished)
    and completed after it. An exception out of the adapter is a bug: it is logged with its
    traceback and answered Unknown, the worst a call can have meant (an execute that raised may
    have been sent).
    """
    record = ProviderCall.objects.create(
        payout=payout,
        kind=kind,
        attempt=attempt,
        requested_by=requested_by,
        started_at=timezone.now(),
    )
    release_database_connection()
    started = time.monotonic()
    answer: Answer | Unknown
    try:
        answer = call(started + timeout)
        outcome = OUTCOMES[type(answer)]
    except Exception as exc:
        logger.exception("payout %s: the provider's %s call raised", payout.pk, kind)
        answer = Unknown(ADAPTER_ERROR, f"{type(exc).__name__}: {exc}"[:500])
        outcome = ProviderCallOutcome.ERROR
    elapsed = time.monotonic() - started
    PROVIDER_CALL_SECONDS.labels(kind=kind, outcome=outcome).observe(elapsed)
    if outcome in (ProviderCallOutcome.UNKNOWN, ProviderCallOutcome.ERROR):
        UNKNOWN_OUTCOMES.labels(kind=kind).inc()
    ProviderCall.objects.filter(pk=record.pk).update(
        finished_at=timezone.now(),
        outcome=outcome,
        code=getattr(answer, "code", "")[:64],
        detail=getattr(answer, "reason", "")[:500],
        latency_ms=round(elapsed * 1000),
    )
    return answer


def apply_settled(payout: PayoutRequest, answer: Settled, *, actor: EventActor) -> PayoutStatus:
    """Finish the payout as the provider says it ended; return the status it is left in."""
    # An adapter's strings are the provider's: cut them to what the columns hold.
    match answer:
        case Executed(reference=reference):
            reference = reference[:64]
            target, reason = PayoutStatus.PAID, f"provider reference {reference}"
            moved = transition(
                payout.pk, to=target, actor=actor, reason=reason, provider_reference=reference
            )
        case Declined(code=code, reason=why):
            code, why = code[:64], why[:500]
            target, reason = PayoutStatus.FAILED, f"{code}: {why}"[:500]
            moved = transition(
                payout.pk,
                to=target,
                actor=actor,
                reason=reason,
                failure_code=code,
                failure_reason=why,
            )
        case Canceled():
            target, reason = PayoutStatus.CANCELED, "canceled at the provider"
            moved = transition(payout.pk, to=target, actor=actor, reason=reason)
    if moved:
        return target
    payout.refresh_from_db()
    if payout.status in (target, PayoutStatus.PROCESSING):
        # The same outcome applied by another actor first; or a lease we no longer hold.
        return PayoutStatus(payout.status)
    # Another final status first: the statuses promise this cannot happen (a cancel after a
    # call started waits for the provider). Should the provider contradict itself, keep its
    # answer in the history and make noise: someone must reconcile by hand.
    PayoutEvent.objects.create(
        payout=payout,
        from_status=payout.status,
        to_status=target,
        actor=actor,
        reason=f"not applied, payout already {payout.status}: {reason}",
        applied=False,
    )
    logger.error(
        "payout %s: the provider says %s but the payout is already %s: reconcile it",
        payout.pk,
        target,
        payout.status,
    )
    return PayoutStatus(payout.status)


def cancel_requested(payout: PayoutRequest) -> bool:
    """Has a client or staff asked the provider to cancel this payout (not the worker's void)?"""
    return ProviderCall.objects.filter(
        payout=payout,
        kind=ProviderCallKind.CANCEL,
        requested_by__in=(EventActor.API, EventActor.ADMIN),
    ).exists()
