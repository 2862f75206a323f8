"""Delivery of webhooks (W1's module; this is only the placeholder the admin's replay needs).

`delivery_replay` makes a delivery due again; the webhooks sweep publishes it.
"""

from django.utils import timezone

from .models import DeliveryStatus, WebhookDelivery


def delivery_replay(delivery: WebhookDelivery) -> WebhookDelivery:
    """Make the delivery PENDING and due now, whatever its status; the sweep sends it."""
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=now
    )
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now
    return delivery
