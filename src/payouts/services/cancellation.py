"""Canceling a payout."""

from ..errors import PayoutNotCancelable
from ..models import EventActor, PayoutRequest, PayoutStatus
from ..transitions import transition


def payout_cancel(*, payout: PayoutRequest, actor: EventActor, reason: str = "") -> PayoutRequest:
    """Cancel a NEW or PROCESSING payout; PayoutNotCancelable once it is final."""
    if transition(payout.pk, to=PayoutStatus.CANCELED, actor=actor, reason=reason or "canceled"):
        payout.refresh_from_db()
        return payout
    payout.refresh_from_db()
    raise PayoutNotCancelable(payout)
