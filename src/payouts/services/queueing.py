"""Getting payouts onto the queue: the publish after a create, and the recovery sweep."""

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..models import PayoutRequest, PayoutStatus
from ..observability.metrics import SWEEP_REQUEUED, SWEEP_RUNS
from ..transitions import (
    lease_expire_after_failed_publish,
    lease_extend_after_publish,
    lease_renew_for_sweep,
)

logger = logging.getLogger(__name__)


def lease_deadline() -> datetime:
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
    from ..tasks import process_payout  # tasks import services: keep the cycle out of import time

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

    The re-lease before the publish lasts one sweep interval only; the backed-off lease is
    recorded once the broker took the message. A sweep that dies in between (a worker killed
    mid-sweep) leaves its payout due for the next sweep, not for up to REQUEUE_BACKOFF_MAX.
    """
    now = timezone.now()
    stale = PayoutRequest.objects.filter(
        status__in=(PayoutStatus.NEW, PayoutStatus.PROCESSING), lease_expires_at__lt=now
    ).order_by("lease_expires_at")
    publishing = timedelta(seconds=settings.PAYOUTS_SWEEP_INTERVAL_SECONDS)
    queued = 0
    for payout_id, lease, created_at in stale.values_list("pk", "lease_expires_at", "created_at")[
        : batch_size or settings.PAYOUTS_SWEEP_BATCH_SIZE
    ]:
        assert lease is not None  # lease_expires_at__lt never matches NULL
        task_id, publishing_until = str(uuid.uuid4()), timezone.now() + publishing
        if not lease_renew_for_sweep(
            payout_id, seen_expires_at=lease, owner=task_id, expires_at=publishing_until
        ):
            continue  # another sweep or a delivery got there first
        if not payout_enqueue(
            payout_id, task_id=task_id, lease_expires_at=publishing_until, recovered=True
        ):
            # The broker is down: every other publish would fail too, each after a timeout.
            # Their leases stay expired (this one's was expired again), so the next sweep
            # tries them all once more.
            logger.warning("recovery sweep stopped: the broker is unavailable")
            break
        lease_extend_after_publish(
            payout_id,
            owner=task_id,
            seen_expires_at=publishing_until,
            expires_at=_requeue_deadline(now, created_at),
        )
        queued += 1
    SWEEP_RUNS.labels(sweep="payouts").inc()
    SWEEP_REQUEUED.labels(sweep="payouts").inc(queued)
    if queued:
        logger.info("recovery sweep queued %d stale payouts", queued)
    return queued
