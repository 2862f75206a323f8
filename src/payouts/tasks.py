"""Celery tasks: thin shells that call a service. Duplicate deliveries are harmless by design."""

import uuid

from celery import shared_task
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
        # Our own database is briefly unavailable: try again shortly. Nothing was recorded of
        # this attempt beyond what the database kept.
        raise self.retry(exc=exc, countdown=settings.PAYOUTS_RETRY_BACKOFF_SECONDS) from exc
    return status


@shared_task
def recover_stale_payouts() -> int:
    return payouts_recover_stale()
