"""Write use cases. Views, tasks and the admin call these; none of them touch status directly."""

from ..models import EventActor
from .cancellation import payout_cancel
from .creation import PayoutCreated, payout_create
from .processing import payout_process
from .queueing import (
    BROKER_UNAVAILABLE_ERRORS,
    REQUEUE_BACKOFF_MAX,
    payout_enqueue,
    payouts_recover_stale,
)

__all__ = (
    "BROKER_UNAVAILABLE_ERRORS",
    "REQUEUE_BACKOFF_MAX",
    "EventActor",
    "PayoutCreated",
    "payout_cancel",
    "payout_create",
    "payout_enqueue",
    "payout_process",
    "payouts_recover_stale",
)
