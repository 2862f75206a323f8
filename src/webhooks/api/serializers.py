"""Input validation and output shapes of the webhooks API. No business rules here: services decide.

A URL is only checked to be a string here: whether we may send to it is the destination
check's to say (webhooks/destinations.py), with its own error codes.
"""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from payouts.api.serializers import (
    PayoutSerializer,
    QueryStringSerializer,
    RejectUnknownFieldsMixin,
    StrictCharField,
)

from ..models import DeliveryStatus, EventType, WebhookDelivery
from ..services import ALL_EVENTS

EVENT_CHOICES = [ALL_EVENTS, *EventType.values]
EVENTS_HELP = (
    "Event types to receive: any of " + ", ".join(EventType.values) + ', or ["*"] (the '
    "default) for all, including types added later."
)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's also takes "yes", "0" and 1, which hides client bugs."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class EventTypesField(serializers.ListField):
    """A non-empty list of event types, or ["*"] for all of them."""

    child = serializers.ChoiceField(choices=EVENT_CHOICES)
    default_error_messages = {
        "all_alone": '"*" already means every event type: give it alone, or list the types.',
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            allow_empty=False, max_length=len(EVENT_CHOICES), help_text=EVENTS_HELP, **kwargs
        )

    def to_internal_value(self, data: Any) -> list[str]:
        events: list[str] = super().to_internal_value(data)
        if ALL_EVENTS in events and len(set(events)) > 1:
            self.fail("all_alone")
        return events


class WebhookEndpointCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    url = StrictCharField(
        trim_whitespace=False,
        help_text="Absolute https URL (at most 2048 characters, no user:password@) whose host "
        "resolves to public addresses only.",
    )
    events = EventTypesField(required=False)


class WebhookEndpointUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    url = StrictCharField(
        required=False, trim_whitespace=False, help_text="As when creating; checked again."
    )
    events = EventTypesField(required=False)
    enabled = StrictBooleanField(
        required=False,
        help_text="false stops deliveries; true re-enables an endpoint (also one the service "
        "disabled) and clears its failure streak.",
    )


class WebhookEndpointSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES))
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField(
        help_text='Why it is disabled ("disabled via the API", a 410 answer, five days of '
        "failures); empty while enabled."
    )
    failure_streak = serializers.IntegerField(help_text="Failed attempts since the last 2xx.")
    failing_since = serializers.DateTimeField(
        allow_null=True, help_text="When the current run of failures began; null if none."
    )
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True,
        help_text="After a rotation: until when the previous secret still signs beside the "
        "new one.",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        help_text="The signing secret (whsec_...), shown only when created and when rotated: "
        "store it now."
    )


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(
        help_text="The new signing secret (whsec_...), shown only here. The previous one "
        "keeps signing beside it until `previous_secret_expires_at`."
    )
    previous_secret_expires_at = serializers.DateTimeField()


class WebhookAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="1 for the first attempt.")
    started_at = serializers.DateTimeField()
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The receiver's HTTP status; null if it did not answer."
    )
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="Why there was no 2xx (timeout, refused, ...).")
    response_excerpt = serializers.CharField(
        help_text="The start of the receiver's answer (at most 1000 characters)."
    )


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    event_id = serializers.UUIDField(help_text="The `webhook-id` header: stable across tries.")
    event_type = serializers.ChoiceField(choices=EventType.choices, source="event.type")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField(help_text="Attempts so far.")
    last_status_code = serializers.IntegerField(allow_null=True)
    last_latency_ms = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    last_response = serializers.SerializerMethodField(
        help_text="The start of the last answer (at most 1000 characters)."
    )
    next_attempt_at = serializers.SerializerMethodField(
        help_text="When the next attempt is due while pending; null otherwise."
    )
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    attempt_log = WebhookAttemptSerializer(
        many=True, source="attempt_log.all", help_text="Every attempt, oldest first."
    )

    @extend_schema_field(serializers.CharField())
    def get_last_response(self, delivery: WebhookDelivery) -> str:
        attempts = list(delivery.attempt_log.all())  # prefetched, in order
        return attempts[-1].response_excerpt if attempts else ""

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_attempt_at(self, delivery: WebhookDelivery) -> str | None:
        if delivery.status != DeliveryStatus.PENDING or delivery.next_attempt_at is None:
            return None
        return serializers.DateTimeField().to_representation(delivery.next_attempt_at)


class EventSerializer(serializers.Serializer):
    """An event as webhooks.payloads.event_body gives it (the webhook's body); schema only."""

    id = serializers.UUIDField(help_text="The event's id, also the webhooks' `webhook-id`.")
    type = serializers.ChoiceField(choices=EventType.choices)
    created_at = serializers.DateTimeField(help_text="When the change happened.")
    sequence = serializers.IntegerField(
        help_text="The payout's events counted from 1: of two events of one payout, the higher "
        "is the newer (drop a webhook older than one you already have)."
    )
    # Shadows Serializer.data; harmless, this serializer only describes the schema.
    data = PayoutSerializer(  # type: ignore[assignment]
        help_text="The payout as the API showed it just after the change."
    )


def limit_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False, min_value=1, max_value=200, help_text="1-200, default 50."
    )


def cursor_field() -> serializers.CharField:
    return serializers.CharField(required=False, help_text="From the `next`/`previous` links.")


class PageQuerySerializer(QueryStringSerializer):
    limit = limit_field()
    cursor = cursor_field()


class EventListQuerySerializer(QueryStringSerializer):
    type = serializers.ChoiceField(
        choices=EventType.choices, required=False, help_text="Only events of this type."
    )
    payout_id = serializers.UUIDField(required=False, help_text="Only this payout's events.")
    limit = limit_field()
    cursor = cursor_field()
