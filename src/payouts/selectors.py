"""Read use cases, always scoped to the calling API client."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from django.db.models import QuerySet

from .errors import PayoutNotFound
from .models import ApiClient, PayoutEvent, PayoutRequest


def payout_get(*, client: ApiClient, payout_id: str | uuid.UUID) -> PayoutRequest:
    try:
        pk = payout_id if isinstance(payout_id, uuid.UUID) else uuid.UUID(payout_id)
        return PayoutRequest.objects.get(pk=pk, client=client)
    except (ValueError, PayoutRequest.DoesNotExist):
        raise PayoutNotFound(payout_id) from None


def payout_list(
    *,
    client: ApiClient,
    statuses: Sequence[str] = (),
    currency: str | None = None,
    client_reference: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[PayoutRequest]:
    """The client's payouts matching every given filter (unordered: the paginator orders)."""
    payouts = PayoutRequest.objects.filter(client=client)
    if statuses:
        payouts = payouts.filter(status__in=statuses)
    if currency:
        payouts = payouts.filter(currency=currency)
    if client_reference is not None:
        payouts = payouts.filter(client_reference=client_reference)
    if created_after:
        payouts = payouts.filter(created_at__gte=created_after)
    if created_before:
        payouts = payouts.filter(created_at__lt=created_before)
    return payouts


def payout_events(*, payout: PayoutRequest) -> QuerySet[PayoutEvent]:
    return payout.events.order_by("created_at", "id")
