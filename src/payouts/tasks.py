"""Celery tasks: thin shells that call a service. Duplicate deliveries are harmless by design."""

import uuid

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .services import payout_process, payouts_recover_stale
from .services.processing import AttemptDeferred


# No max_retries: the retry budget is the payout's own (PAYOUTS_MAX_RETRIES, counted in
# PayoutRequest.attempts), and payout_process stops deferring once it is spent.
@shared_task(bind=True, max_retries=None)
def process_payout(self, payout_id: str, recovered: bool = False) -> str | None:
    try:
        status = payout_process(
            payout_id=uuid.UUID(payout_id), attempt_id=self.request.id, recovered=recovered
        )
    except AttemptDeferred as exc:
        # Should even the retry fail to publish, the payout's lease runs out and the sweep
        # re-queues it.
        raise self.retry(exc=exc, countdown=exc.countdown) from exc
    except (OperationalError, InterfaceError) as exc:
        # Our own database is unavailable: try again later, backing off while it stays down.
        countdown = get_exponential_backoff_interval(
            factor=settings.PAYOUTS_RETRY_BACKOFF_SECONDS,
            retries=self.request.retries,
            maximum=settings.PAYOUTS_RETRY_BACKOFF_MAX_SECONDS,
            full_jitter=True,
        )
        raise self.retry(exc=exc, countdown=countdown) from exc
    return status


@shared_task
def recover_stale_payouts() -> int:
    return payouts_recover_stale()
