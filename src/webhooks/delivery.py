"""Delivery: one event POSTed to one endpoint, signed per Standard Webhooks, retried on a schedule.

A delivery's `next_attempt_at` is its lease as well as its due time. Publishing a `deliver`
task first moves it forward by a compare-and-set on the value it had (so concurrent sweeps
publish a delivery once) and the task carries that new value: the attempt takes the delivery
only while it still holds it, moving it forward again by the attempt's timeout plus a margin.
A duplicate or stale message finds another value and stands aside; a lost message, or an
attempt whose worker died, leaves a value that passes, and the sweep publishes it again.
At-least-once: the receiver may see an event twice (the `webhook-id` is stable across
attempts), never zero times while the schedule lasts.
"""

import enum
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from payouts.observability.metrics import (
    SWEEP_REQUEUED,
    SWEEP_RUNS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_SECONDS,
)
from payouts.services.queueing import BROKER_UNAVAILABLE_ERRORS

from . import transport
from .destinations import UnsafeDestination, check_destination
from .dispatch import event_dispatch
from .models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .payloads import event_body

logger = logging.getLogger(__name__)

USER_AGENT = "payouts-webhooks/1.0 (+https://www.standardwebhooks.com/)"
# Past the attempt's own timeout: loading, signing, recording.
LEASE_MARGIN = timedelta(seconds=15)
# How long the sweep lets a never-attempted delivery's message wait in the queue at most before
# publishing it again (see _queued_until).
REQUEUE_BACKOFF_MAX = timedelta(hours=1)
RESPONSE_EXCERPT_CHARS = 1000
_READ_BYTES = 4 * RESPONSE_EXCERPT_CHARS  # UTF-8: at most 4 bytes a character


# --- What is sent -------------------------------------------------------------------------------


def payload_of(event: Event) -> bytes:  # the body of payloads.event_body, as sent
    """The exact bytes POSTed and signed (ASCII JSON: the str and the bytes sign the same)."""
    return json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=True).encode()


def signatures_for(endpoint: WebhookEndpoint, msg_id: str, timestamp: datetime, body: bytes) -> str:
    """The `webhook-signature` header: v1 with the secret, and with the previous one while valid."""
    secrets = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > timezone.now():
        secrets.append(endpoint.previous_secret)
    data = body.decode()
    return " ".join(Webhook(secret).sign(msg_id, timestamp, data) for secret in secrets)


# --- Publishing ---------------------------------------------------------------------------------


class Published(enum.Enum):
    YES = "published"
    TAKEN = "taken"  # another publisher (or an attempt) holds the delivery now
    BROKER_DOWN = "broker down"


def attempt_lease() -> timedelta:
    return timedelta(seconds=settings.PAYOUTS_WEBHOOK_TIMEOUT_SECONDS) + LEASE_MARGIN


def _queued_until(now: datetime, created_at: datetime, attempts: int) -> datetime:
    """How long a published message may wait before the sweep assumes it lost.

    A queued message cannot be told from a lost one, so the sweep publishes again any
    delivery whose lease passed. A never-attempted delivery may be behind a backlog: letting it
    wait as long as it already has (up to REQUEUE_BACKOFF_MAX) doubles the gap between
    re-publishes, as payouts do. A retried one waited out its delay in the database, not the
    queue, and gets one attempt lease.
    """
    lease = attempt_lease()
    if attempts:
        return now + lease
    return now + max(lease, min(now - created_at, REQUEUE_BACKOFF_MAX))


def delivery_publish(
    delivery_id: uuid.UUID, *, seen: datetime, created_at: datetime, attempts: int
) -> Published:
    """Queue an attempt of a pending delivery whose `next_attempt_at` was `seen`."""
    from .tasks import deliver  # tasks import this module

    now = timezone.now()
    queued_until = _queued_until(now, created_at, attempts)
    if not WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at=seen
    ).update(next_attempt_at=queued_until):
        return Published.TAKEN
    try:
        deliver.apply_async(args=(str(delivery_id), queued_until.isoformat()), retry=False)
    except BROKER_UNAVAILABLE_ERRORS as exc:
        logger.warning("could not queue delivery %s (%s); the sweep will", delivery_id, exc)
        # Due again at once, unless the message did get through and an attempt took it.
        WebhookDelivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at=queued_until
        ).update(next_attempt_at=now)
        return Published.BROKER_DOWN
    return Published.YES


def deliveries_publish(deliveries: list[WebhookDelivery]) -> tuple[int, bool]:
    """Queue the first attempt of new deliveries: (how many, False if the broker is down).

    A broker outage stops it; the deliveries left are due, and the sweep publishes them.
    """
    published = 0
    for delivery in deliveries:
        assert delivery.next_attempt_at is not None
        result = delivery_publish(
            delivery.pk,
            seen=delivery.next_attempt_at,
            created_at=delivery.created_at,
            attempts=delivery.attempts,
        )
        if result is Published.BROKER_DOWN:
            return published, False
        published += result is Published.YES
    return published, True


def delivery_replay(delivery: WebhookDelivery) -> WebhookDelivery:
    """Send the delivery again now, whatever its status; its attempts keep counting."""
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=now
    )
    delivery.refresh_from_db()
    delivery_publish(
        delivery.pk, seen=now, created_at=delivery.created_at, attempts=delivery.attempts
    )
    delivery.refresh_from_db()
    return delivery


# --- The attempt --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one POST came to: the receiver's status and excerpt, or why there was none."""

    started_at: datetime
    status_code: int | None = None
    latency_ms: int | None = None
    error: str = ""
    excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _post(endpoint: WebhookEndpoint, event: Event) -> Answer:
    started_at = timezone.now()
    try:
        check_destination(endpoint.url)  # again: DNS may have changed since registration
    except UnsafeDestination as exc:
        return Answer(started_at, error=f"destination refused: {exc.message}")
    body = payload_of(event)
    msg_id = str(event.id)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(started_at.timestamp())),
        "webhook-signature": signatures_for(endpoint, msg_id, started_at, body),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    clock = time.monotonic()
    try:
        status, answer_headers, data = transport.post(
            endpoint.url,
            body=body,
            headers=headers,
            deadline=clock + settings.PAYOUTS_WEBHOOK_TIMEOUT_SECONDS,
            read_bytes=_READ_BYTES,
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        latency = int((time.monotonic() - clock) * 1000)
        return Answer(started_at, latency_ms=latency, error=f"{type(exc).__name__}: {exc}"[:500])
    latency = int((time.monotonic() - clock) * 1000)
    error = ""
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed ({answer_headers.get('Location')})"
    elif not 200 <= status < 300:
        error = f"HTTP {status}"
    excerpt = data.decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS]
    return Answer(started_at, status, latency, error[:500], excerpt)


class Outcome(str, enum.Enum):
    SKIPPED = "skipped"  # not ours to attempt: another attempt holds it, or it is finished
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


def delivery_attempt(delivery_id: uuid.UUID, *, queued_until: datetime | None = None) -> Outcome:
    """One POST of the delivery, if it is still ours to make; logged as a WebhookAttempt.

    `queued_until` is the lease the message was published with; without one the delivery is
    attempted only if it is due. Taking it is a compare-and-set that moves the lease past this
    attempt's deadline, so a duplicate of the message stands aside.
    """
    now = timezone.now()
    lease_until = now + attempt_lease()
    pending = WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
    mine = (
        pending.filter(next_attempt_at=queued_until)
        if queued_until is not None
        else pending.filter(next_attempt_at__lte=now)
    )
    if not mine.update(next_attempt_at=lease_until, attempts=F("attempts") + 1):
        return Outcome.SKIPPED
    delivery = (
        WebhookDelivery.objects.select_related("endpoint", "event").filter(pk=delivery_id).first()
    )
    if delivery is None:  # pruned meanwhile
        return Outcome.SKIPPED
    if delivery.endpoint.enabled:
        answer = _post(delivery.endpoint, delivery.event)
    else:
        answer = Answer(timezone.now(), error="endpoint disabled")
    outcome = _record(delivery, lease_until, answer)
    WEBHOOK_DELIVERIES.labels(outcome=outcome.value).inc()
    if answer.latency_ms is not None:
        WEBHOOK_DELIVERY_SECONDS.observe(answer.latency_ms / 1000)
    return outcome


def _record(delivery: WebhookDelivery, lease_until: datetime, answer: Answer) -> Outcome:
    """Log the attempt; move the delivery on if this attempt still holds it; judge the endpoint."""
    now = timezone.now()
    endpoint = delivery.endpoint
    last = {
        "last_status_code": answer.status_code,
        "last_error": answer.error,
        "last_latency_ms": answer.latency_ms,
    }
    held = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, next_attempt_at=lease_until
    )
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=answer.started_at,
            status_code=answer.status_code,
            latency_ms=answer.latency_ms,
            error=answer.error,
            response_excerpt=answer.excerpt,
        )
        if answer.succeeded:
            held.update(
                status=DeliveryStatus.SUCCEEDED, delivered_at=now, next_attempt_at=None, **last
            )
            # Written only when there is a streak to end: most successes touch no endpoint row.
            WebhookEndpoint.objects.filter(
                Q(failure_streak__gt=0) | Q(failing_since__isnull=False), pk=endpoint.pk
            ).update(failure_streak=0, failing_since=None, last_failure_at=None)
            return Outcome.SUCCEEDED
        if answer.status_code == 410 or not endpoint.enabled:
            held.update(status=DeliveryStatus.FAILED, next_attempt_at=None, **last)
            if endpoint.enabled:
                endpoint_disable(endpoint.pk, reason=f"410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC")
            return Outcome.FAILED
        schedule = settings.PAYOUTS_WEBHOOK_RETRY_SCHEDULE
        outcome = Outcome.RETRYING
        if delivery.attempts >= len(schedule):
            held.update(status=DeliveryStatus.FAILED, next_attempt_at=None, **last)
            outcome = Outcome.FAILED
        else:
            delay = timedelta(seconds=schedule[delivery.attempts])
            held.update(next_attempt_at=now + delay, **last)
        quiet = timedelta(seconds=max(schedule)) + attempt_lease()
        WebhookEndpoint.objects.filter(pk=endpoint.pk, last_failure_at__lt=now - quiet).update(
            failure_streak=0, failing_since=None
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            failure_streak=F("failure_streak") + 1,
            failing_since=Coalesce("failing_since", now),
            last_failure_at=now,
        )
        limit = timedelta(seconds=settings.PAYOUTS_WEBHOOK_DISABLE_AFTER_SECONDS)
        if WebhookEndpoint.objects.filter(
            pk=endpoint.pk, enabled=True, failing_since__lt=now - limit
        ).exists():
            endpoint_disable(endpoint.pk, reason=f"failing since more than {limit}")
    return outcome


def endpoint_disable(endpoint_id: uuid.UUID, *, reason: str) -> bool:
    """Disable an endpoint and fail its pending deliveries; True if it was enabled."""
    with transaction.atomic():
        disabled = WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
            enabled=False, disabled_reason=reason[:200], updated_at=timezone.now()
        )
        WebhookDelivery.objects.filter(
            endpoint_id=endpoint_id, status=DeliveryStatus.PENDING
        ).update(
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
            last_error=f"endpoint disabled: {reason}"[:500],
        )
    if disabled:
        logger.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)
    return bool(disabled)


# --- The sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    events_dispatched: int
    deliveries_published: int


def webhooks_sweep(*, batch_size: int | None = None) -> SweepResult:
    """Dispatch the events on-commit missed, and publish the pending deliveries now due.

    Due are retries whose delay has passed, first attempts whose publish failed, messages lost
    or long queued, and attempts whose worker died (their lease passed). Stops publishing at
    the first broker failure; the next sweep goes on.
    """
    batch = batch_size or settings.PAYOUTS_WEBHOOK_SWEEP_BATCH_SIZE
    events = published = 0
    broker_up = True
    undispatched = Event.objects.filter(dispatched_at__isnull=True).order_by("created_at")
    for event_id in undispatched.values_list("pk", flat=True)[:batch]:
        events += 1
        count, broker_up = deliveries_publish(event_dispatch(event_id))
        published += count
        if not broker_up:
            break
    due = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lt=timezone.now()
    ).order_by("next_attempt_at")
    if broker_up:
        for delivery_id, seen, created_at, attempts in due.values_list(
            "pk", "next_attempt_at", "created_at", "attempts"
        )[:batch]:
            assert seen is not None  # next_attempt_at__lt never matches NULL
            result = delivery_publish(
                delivery_id, seen=seen, created_at=created_at, attempts=attempts
            )
            if result is Published.BROKER_DOWN:
                break
            published += result is Published.YES
    SWEEP_RUNS.labels(sweep="webhooks").inc()
    SWEEP_REQUEUED.labels(sweep="webhooks").inc(published)
    if events or published:
        logger.info("webhooks sweep: %d events dispatched, %d deliveries queued", events, published)
    return SweepResult(events, published)
