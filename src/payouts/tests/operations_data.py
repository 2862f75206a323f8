"""A day of payouts for the operations page's tests: rows as the services leave them.

Each payout gets the outbox events its moves write (the creation, and its final status for
finished ones) at the times given, so the 24 h window reads them as it reads real ones.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from payouts.models import (
    ApiClient,
    EventActor,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    ProviderCallKind,
    ProviderCallOutcome,
)
from webhooks.models import Event, EventType, WebhookEndpoint
from webhooks.outbox import EVENT_OF_STATUS


@dataclass
class SeededDay:
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PayoutStatus.values, 0))
    failure_codes: dict[str, int] = field(default_factory=dict)
    oldest: PayoutRequest | None = None
    under_review: PayoutRequest | None = None
    failing_endpoint: WebhookEndpoint | None = None
    disabled_endpoint: WebhookEndpoint | None = None
    payouts: list[PayoutRequest] = field(default_factory=list)


def payout_at(
    client: ApiClient,
    reference: str,
    created_at: datetime,
    status: str = PayoutStatus.PAID,
    *,
    failure_code: str = "",
    finished_after: timedelta = timedelta(seconds=3),
) -> PayoutRequest:
    """A payout created at `created_at` and now in `status`, with the events that took it there."""
    unfinished = status in (PayoutStatus.NEW, PayoutStatus.PROCESSING)
    finished_at = created_at + finished_after
    payout = PayoutRequest.objects.create(
        client=client,
        client_reference=reference,
        amount="125.00",
        currency="EUR",
        destination="sandbox:success",
        status=status,
        failure_code=failure_code,
        failure_reason=f"declined: {failure_code}" if failure_code else "",
        lease_expires_at=timezone.now() + timedelta(minutes=3) if unfinished else None,
        processed_at=None if unfinished else finished_at,
    )
    # created_at is auto_now_add: set the past through an UPDATE, as a day of traffic left it.
    PayoutRequest.objects.filter(pk=payout.pk).update(created_at=created_at)
    payout.created_at = created_at
    moves = [(EventType.PAYOUT_CREATED, created_at)]
    if status != PayoutStatus.NEW:
        moves.append((EVENT_OF_STATUS[status], finished_at))
    for sequence, (event_type, at) in enumerate(moves, start=1):
        Event.objects.create(
            client=client,
            payout=payout,
            type=event_type,
            sequence=sequence,
            data={"id": str(payout.pk), "status": status},
            created_at=at,
            dispatched_at=at,
        )
    return payout


def provider_call(payout: PayoutRequest, kind: str, latency_ms: int, started_at: datetime) -> None:
    ProviderCall.objects.create(
        payout=payout,
        kind=kind,
        attempt=1,
        requested_by=EventActor.WORKER,
        started_at=started_at,
        finished_at=started_at + timedelta(milliseconds=latency_ms),
        outcome=ProviderCallOutcome.EXECUTED,
        latency_ms=latency_ms,
    )


# Payouts created per hour, oldest hour first: a working day's shape.
HOURLY_VOLUME = (4, 3, 2, 2, 2, 3, 5, 8, 12, 15, 16, 14, 13, 15, 17, 16, 14, 12, 10, 9, 8, 7, 6, 5)
DECLINES = ("insufficient_funds", "account_closed", "insufficient_funds", "invalid_account_number")


def seed_day(client: ApiClient, *, now: datetime | None = None) -> SeededDay:
    """Payouts over the last 24 hours in every status, with provider calls and two endpoints.

    Mostly paid; every ninth failed (codes from DECLINES in turn), every 23rd canceled; the last
    hour's newest still PROCESSING (one of them under review) or NEW; latencies known per kind.
    """
    now = now or timezone.now()
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    day = SeededDay()
    number = 0
    for hour, volume in enumerate(HOURLY_VOLUME):
        start = first_hour + timedelta(hours=hour)
        # Spread over the hour, or over what has passed of the current one: distinct times.
        span = min(timedelta(hours=1), now - start)
        for i in range(volume):
            number += 1
            created_at = start + span * i / volume
            status, code = PayoutStatus.PAID, ""
            if number % 9 == 0:
                status, code = PayoutStatus.FAILED, DECLINES[(number // 9) % len(DECLINES)]
            elif number % 23 == 0:
                status = PayoutStatus.CANCELED
            elif hour == len(HOURLY_VOLUME) - 1 and i >= volume - 3:
                status = PayoutStatus.PROCESSING if i < volume - 1 else PayoutStatus.NEW
            payout = payout_at(client, f"order-{number:04d}", created_at, status, failure_code=code)
            day.payouts.append(payout)
            day.totals[status] += 1
            if code:
                day.failure_codes[code] = day.failure_codes.get(code, 0) + 1
    unfinished = [p for p in day.payouts if p.status in (PayoutStatus.NEW, PayoutStatus.PROCESSING)]
    day.oldest = min(unfinished, key=lambda p: p.created_at)
    day.under_review = next(p for p in unfinished if p.status == PayoutStatus.PROCESSING)
    PayoutRequest.objects.filter(pk=day.under_review.pk).update(
        review_flagged_at=now - timedelta(minutes=1),
        review_reason="outcome unknown for longer than the review delay",
    )
    # Latencies 100..199 ms for execute, 20..39 ms for lookup: percentiles known in advance.
    for n, latency in enumerate(range(100, 200)):
        provider_call(day.payouts[n % len(day.payouts)], ProviderCallKind.EXECUTE, latency, now)
    for n, latency in enumerate(range(20, 40)):
        provider_call(day.payouts[n], ProviderCallKind.LOOKUP, latency, now)
    day.failing_endpoint = WebhookEndpoint.objects.create(
        client=client,
        url="https://hooks.merchant.example/payouts",
        secret="whsec_seed",
        failing_since=now - timedelta(hours=2),
        last_failure_at=now - timedelta(minutes=4),
        failure_streak=7,
    )
    day.disabled_endpoint = WebhookEndpoint.objects.create(
        client=client,
        url="https://old.merchant.example/hook",
        secret="whsec_seed",
        enabled=False,
        disabled_reason="failing for more than 3 days",
    )
    WebhookEndpoint.objects.create(
        client=client, url="https://ok.merchant.example/hook", secret="whsec_seed"
    )
    return day
