"""Canceling a payout: CANCELED only when no money moved (SPEC, "The money invariant").

Before any execute call was sent, a cancel is a compare-and-set; the worker's own
compare-and-set that marks the call as started (transitions.mark_execute_started) races with
it on the same row, so exactly one of them wins and the provider is then never called. Once a
call may have reached the provider, only the provider can cancel: its confirmation is CANCELED,
its "already settled" is applied instead (and the cancel refused), and no answer changes
nothing (the client retries).
"""

from django.conf import settings
from django.db.models import Q

from ..errors import CancelUnconfirmed, PayoutNotCancelable
from ..models import EventActor, PayoutRequest, PayoutStatus, ProviderCallKind
from ..providers import Canceled, Declined, Executed, PayoutProvider, Unknown, get_provider
from ..transitions import transition
from .provider_calls import apply_settled, call_provider


def payout_cancel(
    *,
    payout: PayoutRequest,
    actor: EventActor,
    reason: str = "",
    provider: PayoutProvider | None = None,
) -> PayoutRequest:
    """Cancel a NEW or PROCESSING payout and return it, CANCELED.

    PayoutNotCancelable when it is final, or when the provider had already settled it (the
    payout then carries that outcome); CancelUnconfirmed when the provider must confirm and
    gives no answer (nothing changed).
    """
    reason = reason or "canceled"
    not_started = Q(execute_started_at__isnull=True)
    if transition(
        payout.pk, to=PayoutStatus.CANCELED, actor=actor, reason=reason, only_if=not_started
    ):
        payout.refresh_from_db()
        return payout
    payout.refresh_from_db()
    if payout.status != PayoutStatus.PROCESSING:
        raise PayoutNotCancelable(payout)

    provider = provider or get_provider()
    answer = call_provider(
        payout,
        ProviderCallKind.CANCEL,
        lambda deadline: provider.cancel(str(payout.pk), deadline=deadline),
        timeout=settings.PAYOUTS_PROVIDER_CANCEL_TIMEOUT_SECONDS,
        requested_by=actor,
    )
    match answer:
        case Canceled():
            transition(
                payout.pk,
                to=PayoutStatus.CANCELED,
                actor=actor,
                reason=f"{reason} (confirmed by the provider)",
            )
        case Executed() | Declined():
            apply_settled(payout, answer, actor=actor)
        case Unknown():
            raise CancelUnconfirmed(payout, f"{answer.code}: {answer.reason}")
    payout.refresh_from_db()
    if payout.status != PayoutStatus.CANCELED:
        # Settled at the provider first (or, with Canceled, the worker applied it already).
        raise PayoutNotCancelable(payout)
    return payout
