"""Notifications: the events a payout's life emits (a transactional outbox), and their delivery.

An `Event` is written in the same transaction as the status change it reports (and the
creation), so a committed change always has its event and a rolled-back one never does. Nothing
is sent inside that transaction: a dispatcher turns undispatched events into one
`WebhookDelivery` per subscribed endpoint, and each delivery is attempted (and retried) on its
own, every attempt logged as a `WebhookAttempt`.
"""

import uuid
from typing import ClassVar

from django.db import models
from django.db.models import Q
from django.utils import timezone

from payouts.models import ApiClient, PayoutRequest


class EventType(models.TextChoices):
    PAYOUT_CREATED = "payout.created"
    PAYOUT_PROCESSING = "payout.processing"
    PAYOUT_PAID = "payout.paid"
    PAYOUT_FAILED = "payout.failed"
    PAYOUT_CANCELED = "payout.canceled"


class Event(models.Model):
    """One thing that happened to a payout, as its client is told: by webhook and by the feed.

    `data` is the payout as the API showed it at that moment; `sequence` counts the payout's
    events from 1, so a receiver can tell a stale delivery from a newer one.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Served by event_client_created; no index of its own.
    client = models.ForeignKey(
        ApiClient, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    # Served by event_payout_sequence.
    payout = models.ForeignKey(
        PayoutRequest, on_delete=models.CASCADE, related_name="notifications", db_index=False
    )
    type = models.CharField(max_length=32, choices=EventType.choices)
    sequence = models.PositiveIntegerField()
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    # Outbox: set once the event's deliveries exist (or it had no endpoint to go to).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["payout", "sequence"], name="event_payout_sequence"),
        ]
        indexes: ClassVar = [
            # The feed, newest first (the cursor orders by created_at, then id).
            models.Index(fields=["client", "-created_at", "-id"], name="event_client_created"),
            models.Index(
                fields=["client", "type", "-created_at"], name="event_client_type_created"
            ),
            # The dispatcher's sweep only looks at what on-commit missed.
            models.Index(
                fields=["created_at"],
                name="event_undispatched",
                condition=Q(dispatched_at__isnull=True),
            ),
            # Retention pruning.
            models.Index(fields=["created_at"], name="event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.sequence} of {self.payout_id}"


class WebhookEndpoint(models.Model):
    """A client's URL that receives its events, signed per Standard Webhooks with `secret`.

    After a rotation the previous secret signs alongside the new one until
    `previous_secret_expires_at`. `events` empty means every event type.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(
        ApiClient, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2048)
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # The current run of failed attempts: when it began and how long it is (reset on a 2xx).
    failing_since = models.DateTimeField(null=True, blank=True)
    # The last failed attempt: a streak ends with a 2xx, or with a quiet spell longer than the
    # retry schedule (no failure since), so idle days never count as "failing".
    last_failure_at = models.DateTimeField(null=True, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return not self.events or "*" in self.events or event_type in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # an attempt is due at next_attempt_at
    SUCCEEDED = "succeeded"  # a 2xx answered
    FAILED = "failed"  # the schedule is spent, or the endpoint was disabled


class WebhookDelivery(models.Model):
    """One event to one endpoint: attempted until a 2xx, on the retry schedule."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Served by delivery_endpoint_created.
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # Served by delivery_event_endpoint (unique).
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # While PENDING: when the next attempt is due; the sweep publishes it once it has passed
    # (and, while an attempt is queued or running, serves as its lease).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="delivery_event_endpoint"),
        ]
        indexes: ClassVar = [
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_created"),
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=Q(status=DeliveryStatus.PENDING),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the receiver answered, or why there was no answer."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=1000, blank=True)

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_delivery_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
