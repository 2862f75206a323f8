"""Payout requests, their status history, the API clients that own them, the sandbox ledger.

Invariants live in the database as well as in code: one payout per (client, client_reference),
amount > 0, status one of five values, an unfinished payout always has a lease deadline.
"""

import uuid
from typing import ClassVar

from django.db import models
from django.db.models import Q
from rest_framework_api_key.models import AbstractAPIKey

from .money import format_amount


class ApiClient(models.Model):
    """A merchant using the API. Its keys authenticate requests; its payouts are its own."""

    name = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(
        default=True, help_text="Inactive clients cannot authenticate, whatever their keys."
    )
    # Empty: the deployment's default (PAYOUTS_RATE_LIMIT_*_PER_SECOND); 0: unlimited.
    rate_limit_reads_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="GET/HEAD/OPTIONS requests per second, all keys together. Empty: the default "
        "(PAYOUTS_RATE_LIMIT_READS_PER_SECOND); 0: unlimited.",
    )
    rate_limit_writes_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="POST/PATCH/DELETE requests per second, all keys together. Empty: the default "
        "(PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND); 0: unlimited.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # DRF treats whatever the authentication class returns as request.user.
    is_authenticated = True

    class Meta:
        verbose_name = "API client"

    def __str__(self) -> str:
        return self.name


class ApiKey(AbstractAPIKey):
    """A hashed, revocable key of an API client (the plain key is shown once, at creation)."""

    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"


class PayoutStatus(models.TextChoices):
    NEW = "NEW"
    PROCESSING = "PROCESSING"
    PAID = "PAID"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


FINAL_STATUSES = frozenset({PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.CANCELED})
UNFINISHED_STATUSES = (PayoutStatus.NEW, PayoutStatus.PROCESSING)


class PayoutRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: every lookup by client is served by the composites below (the unique
    # reference, the list), and each index is one more B-tree write per create.
    client = models.ForeignKey(
        ApiClient, on_delete=models.PROTECT, related_name="payouts", db_index=False
    )
    client_reference = models.CharField(max_length=64)
    # Three decimal places hold every payable currency's minor unit (KWD, BHD...); money.py
    # enforces the currency's own exponent and the upper bound (10^12).
    amount = models.DecimalField(max_digits=16, decimal_places=3)
    currency = models.CharField(max_length=3)
    destination = models.CharField(max_length=255)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=PayoutStatus.choices, default=PayoutStatus.NEW)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    provider_reference = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Status changes use QuerySet.update(), which skips auto_now: transitions set it explicitly.
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # While NEW or PROCESSING (never NULL then, a check constraint says so): when the recovery
    # sweep may assume the payout was lost (task never published, worker died) and queue it
    # again. Cleared when the payout reaches a final status.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The task delivery that holds the lease (a Celery task id): only it may work on a
    # PROCESSING payout until the lease expires, so duplicate deliveries stand aside.
    lease_owner = models.CharField(max_length=64, blank=True)
    # Provider calls started, counted on the payout rather than on a task message so the retry
    # budget survives worker restarts and sweep re-queues.
    attempts = models.PositiveIntegerField(default=0)
    # When the first execute call was about to be sent (set by a compare-and-set, never
    # cleared). Until then a cancel is a conditional UPDATE; from then on the provider decides.
    execute_started_at = models.DateTimeField(null=True, blank=True)
    # Since when the provider's outcome is unknown (a call timed out or its answer was lost):
    # the payout is looked up before anything else, and never finished on a guess. Cleared
    # when the provider answers.
    outcome_unknown_since = models.DateTimeField(null=True, blank=True)
    # Set when a person must look: unknown for longer than PAYOUTS_REVIEW_AFTER_SECONDS, or the
    # retry budget spent without an answer of the provider. Lookups go on meanwhile.
    review_flagged_at = models.DateTimeField(null=True, blank=True)
    review_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(
                fields=["client", "client_reference"], name="payout_unique_client_reference"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=PayoutStatus.values), name="payout_status_valid"
            ),
            # An unfinished payout without a lease deadline would never be swept: if its
            # message were lost it would stay NEW or PROCESSING forever.
            models.CheckConstraint(
                condition=~Q(status__in=UNFINISHED_STATUSES) | Q(lease_expires_at__isnull=False),
                name="payout_unfinished_has_lease",
            ),
        ]
        indexes: ClassVar = [
            # The client's list, newest first (the cursor orders by created_at, then id).
            models.Index(fields=["client", "-created_at", "-id"], name="payout_client_created"),
            models.Index(
                fields=["client", "status", "-created_at"], name="payout_client_status_created"
            ),
            # The recovery sweep only ever looks at unfinished payouts.
            models.Index(
                fields=["review_flagged_at"],
                name="payout_under_review",
                condition=Q(review_flagged_at__isnull=False, status=PayoutStatus.PROCESSING),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="payout_open_lease",
                condition=Q(status__in=[PayoutStatus.NEW, PayoutStatus.PROCESSING]),
            ),
            # The oldest unprocessed payout (/metrics, the operations page), in one probe.
            models.Index(
                fields=["created_at"],
                name="payout_open_created",
                condition=Q(status__in=[PayoutStatus.NEW, PayoutStatus.PROCESSING]),
            ),
        ]

    def __str__(self) -> str:
        amount = format_amount(self.amount, self.currency)
        return f"{self.client_reference} ({amount} {self.currency}, {self.status})"


class EventActor(models.TextChoices):
    API = "api"
    WORKER = "worker"
    ADMIN = "admin"
    RECOVERY = "recovery"
    RECONCILE = "reconcile"  # the reconcile command's lookups (provider calls only)


class PayoutEvent(models.Model):
    """One row of a payout's status history: written in the transaction that made the move.

    `from_status` is empty for the creation event. An outcome that arrived after the payout was
    canceled is recorded with `applied=False` and leaves the status untouched.
    """

    # Served by event_payout_created (payout, created_at, id); no single-column index beside it.
    payout = models.ForeignKey(
        PayoutRequest, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    from_status = models.CharField(max_length=10, choices=PayoutStatus.choices, blank=True)
    to_status = models.CharField(max_length=10, choices=PayoutStatus.choices)
    actor = models.CharField(max_length=10, choices=EventActor.choices)
    reason = models.CharField(max_length=500, blank=True)
    applied = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes: ClassVar = [
            models.Index(fields=["payout", "created_at", "id"], name="event_payout_created"),
        ]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status} by {self.actor}"


class ProviderCallKind(models.TextChoices):
    EXECUTE = "execute"
    LOOKUP = "lookup"
    CANCEL = "cancel"


class ProviderCallOutcome(models.TextChoices):
    EXECUTED = "executed"
    DECLINED = "declined"
    CANCELED = "canceled"
    NOT_EXECUTED = "not_executed"
    PENDING = "pending"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"
    ERROR = "error"  # the adapter raised: a bug, treated as unknown


class ProviderCall(models.Model):
    """One call to the payment provider about a payout, written before it is sent.

    A row without `finished_at` is a call in flight, or one whose process died during it. The
    payout's retry budget counts attempts (`attempt` is the payout's attempt number the call
    belongs to); a cancel asked by a client or staff carries `requested_by` instead.
    """

    payout = models.ForeignKey(
        PayoutRequest, on_delete=models.CASCADE, related_name="provider_calls", db_index=False
    )
    kind = models.CharField(max_length=10, choices=ProviderCallKind.choices)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    requested_by = models.CharField(max_length=10, choices=EventActor.choices)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=ProviderCallOutcome.choices, blank=True)
    code = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes: ClassVar = [
            models.Index(fields=["payout", "started_at"], name="provider_call_payout_started"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.outcome or 'in flight'}"


class SandboxOutcome(models.TextChoices):
    RECEIVED = "", "received"  # calls arrived, none accepted yet (refused with a 503)
    PENDING = "pending"  # accepted; settles at settles_at unless canceled before
    PAID = "paid"
    DECLINED = "declined"
    CANCELED = "canceled"


class SandboxLedgerEntry(models.Model):
    """The sandbox provider's own book: one row per payout id (its idempotency key).

    `calls` counts every execute request the provider received (`lookup_calls`, `cancel_calls`
    the others). An accepted payout is PENDING until `settles_at`, when it becomes PAID or
    DECLINED (the outcome decided at acceptance: `reference` or `decline_code`), unless a cancel
    came first (CANCELED). Each move is a compare-and-set, so the outcome is written once: a
    row that shows PAID was executed exactly once however often it was called.
    """

    idempotency_key = models.CharField(max_length=64, unique=True)
    amount = models.DecimalField(max_digits=16, decimal_places=3)
    currency = models.CharField(max_length=3)
    destination = models.CharField(max_length=255)
    calls = models.PositiveIntegerField(default=0)
    lookup_calls = models.PositiveIntegerField(default=0)
    cancel_calls = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=10, choices=SandboxOutcome.choices, blank=True)
    reference = models.CharField(max_length=64, blank=True)
    decline_code = models.CharField(max_length=64, blank=True)
    decline_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    settles_at = models.DateTimeField(null=True, blank=True)
    # When it settled as PAID or DECLINED (money moved, or was refused, at that moment).
    executed_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "sandbox ledger entry"
        verbose_name_plural = "sandbox ledger"

    def __str__(self) -> str:
        return f"{self.idempotency_key}: {self.get_outcome_display()} ({self.calls} calls)"
