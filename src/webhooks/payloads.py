"""The body of an event, one shape for both ways a client gets it: a webhook and the feed.

`event_body` is the one definition: the delivery serializes it as the POST body
(webhooks.delivery.payload_of), GET /api/v1/events/ answers it per event, so a client that
missed a delivery reads the very same JSON from the feed.
"""

from typing import Any

from rest_framework import serializers

from .models import Event

# Formats an instant as the rest of the API does (ISO 8601, UTC, "Z").
_INSTANT = serializers.DateTimeField()


def event_body(event: Event) -> dict[str, Any]:
    """{"id", "type", "created_at", "sequence", "data"}: data is the payout as the API showed it
    at that moment; sequence counts the payout's events from 1 (a higher one is newer)."""
    return {
        "id": str(event.pk),
        "type": event.type,
        "created_at": _INSTANT.to_representation(event.created_at),
        "sequence": event.sequence,
        "data": event.data,
    }
