"""Write use cases of webhook endpoints: register, change, rotate the secret, remove.

Every URL is checked by destinations.check_destination before it is stored. Changes to an
endpoint lock its row, so a PATCH, a rotation and the delivery worker disabling the endpoint
(410, five days failing) never overwrite one another.
"""

import base64
import secrets
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payouts.models import ApiClient

from .delivery import delivery_replay
from .destinations import check_destination
from .errors import WebhookEndpointDisabled, WebhookEndpointLimitReached
from .models import WebhookDelivery, WebhookEndpoint

# Stripe allows 16 per account; a handful covers production, staging and a debugging receiver.
MAX_ENDPOINTS_PER_CLIENT = 20
ALL_EVENTS = "*"
SECRET_PREFIX = "whsec_"
DISABLED_VIA_API = "disabled via the API"


def new_secret() -> str:
    """A signing secret as Standard Webhooks spells it: "whsec_" + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def subscribed_events(events: Sequence[str] | None) -> list[str]:
    """The stored form of a subscription: ["*"] for all (None, [] or "*"), else each type once."""
    if not events or ALL_EVENTS in events:
        return [ALL_EVENTS]
    return list(dict.fromkeys(events))


def endpoint_create(
    client: ApiClient, url: str, events: Sequence[str] | None = None
) -> tuple[WebhookEndpoint, str]:
    """Register `url` for the client's events (all when None); return it and its secret.

    Raises UnsafeDestination for a URL we will not send to, WebhookEndpointLimitReached past
    MAX_ENDPOINTS_PER_CLIENT. The secret is returned here and by a rotation, never again.
    """
    check_destination(url)
    with transaction.atomic():
        # The client's row serializes concurrent creates, so the limit holds under races.
        ApiClient.objects.select_for_update().filter(pk=client.pk).first()
        if WebhookEndpoint.objects.filter(client=client).count() >= MAX_ENDPOINTS_PER_CLIENT:
            raise WebhookEndpointLimitReached(MAX_ENDPOINTS_PER_CLIENT)
        secret = new_secret()
        endpoint = WebhookEndpoint.objects.create(
            client=client, url=url, events=subscribed_events(events), secret=secret
        )
    return endpoint, secret


def endpoint_update(
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given (None: unchanged); return the endpoint as stored.

    Re-enabling a disabled endpoint clears why it was disabled and its failure streak, so the
    five days of failures that disable an endpoint count afresh. Disabling stops its deliveries.
    """
    if url is not None:
        check_destination(url)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        changed = ["updated_at"]
        if url is not None:
            locked.url = url
            changed.append("url")
        if events is not None:
            locked.events = subscribed_events(events)
            changed.append("events")
        if enabled is True and not locked.enabled:
            locked.enabled = True
            locked.disabled_reason = ""
            locked.failure_streak = 0
            locked.failing_since = None
            locked.last_failure_at = None
            changed += [
                "enabled",
                "disabled_reason",
                "failure_streak",
                "failing_since",
                "last_failure_at",
            ]
        elif enabled is False and locked.enabled:
            locked.enabled = False
            locked.disabled_reason = DISABLED_VIA_API
            changed += ["enabled", "disabled_reason"]
        locked.save(update_fields=changed)
    return locked


def endpoint_rotate_secret(endpoint: WebhookEndpoint) -> str:
    """Give the endpoint a new secret and return it; the current one keeps signing beside it
    for PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS (a secret older than that stops at once)."""
    secret = new_secret()
    overlap = timedelta(seconds=settings.PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.previous_secret = locked.secret
        locked.previous_secret_expires_at = timezone.now() + overlap
        locked.secret = secret
        locked.save(
            update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"]
        )
    endpoint.refresh_from_db()
    return secret


def endpoint_delete(endpoint: WebhookEndpoint) -> None:
    """Remove the endpoint with its deliveries; attempts already queued find nothing to send."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def delivery_retry(delivery: WebhookDelivery) -> WebhookDelivery:
    """Send the delivery again (whatever its status), with the same event id and body.

    Raises WebhookEndpointDisabled if its endpoint is disabled: it would not be sent.
    """
    if not WebhookEndpoint.objects.filter(pk=delivery.endpoint_id, enabled=True).exists():
        raise WebhookEndpointDisabled(delivery.endpoint_id)
    return delivery_replay(delivery)
