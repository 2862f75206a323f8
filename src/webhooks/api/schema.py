"""OpenAPI metadata of the webhooks API (drf-spectacular), kept beside the views.

Error responses come from the one error table (payouts/api/errors.py) as for payouts.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

from payouts.api.schema import COMMON_ERRORS, errors

from .. import destinations
from .serializers import (
    EventListQuerySerializer,
    EventSerializer,
    PageQuerySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookSecretSerializer,
)

ENDPOINT_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The webhook endpoint's id."
)
DELIVERY_ID = OpenApiParameter(
    "delivery_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The delivery's id."
)
NOT_FOUND = {"not_found": {"message": "No such webhook endpoint."}}
URL_ERRORS = destinations.CODES
URL_EXAMPLES = {
    **NOT_FOUND,
    destinations.PRIVATE: {
        "message": "localhost resolves to 127.0.0.1, which is a loopback address; webhooks are "
        "sent to public addresses only."
    },
    destinations.UNRESOLVABLE: {"message": "hooks.example does not resolve to an address."},
}
URL_RULES = (
    "The URL must be an absolute https URL (at most 2048 characters, no `user:password@`) whose "
    "host resolves only to public addresses: private, loopback, link-local, multicast and "
    "reserved ones are refused (`webhook_url_private`), so are hosts that do not resolve "
    "(`webhook_url_unresolvable`). It is checked again before each delivery, since what a name "
    "resolves to can change. PAYOUTS_WEBHOOKS_ALLOW_HTTP and PAYOUTS_WEBHOOKS_ALLOW_PRIVATE "
    "relax this for local receivers."
)
SIGNING = (
    "Each delivery is a POST of the event's JSON (as `GET /api/v1/events/` shows it) with the "
    "Standard Webhooks headers `webhook-id` (the event id, stable across retries), "
    "`webhook-timestamp` and `webhook-signature`, verifiable with any Standard Webhooks library "
    "and the endpoint's `secret`."
)

CREATE_EXAMPLE = OpenApiExample(
    "Paid and failed payouts",
    value={"url": "https://merchant.example/webhooks", "events": ["payout.paid", "payout.failed"]},
    request_only=True,
)

# Keyed by viewset action, for extend_schema_view(**WEBHOOK_ENDPOINT_OPERATIONS).
WEBHOOK_ENDPOINT_OPERATIONS = {
    "create": extend_schema(
        summary="Register a webhook endpoint",
        operation_id="webhook_endpoints_create",
        description=f"{SIGNING}\n\n{URL_RULES} An endpoint receives the events written after "
        "it was registered. The answer carries the signing `secret`: it is shown here and by a "
        "rotation only.",
        request=WebhookEndpointCreateSerializer,
        examples=[CREATE_EXAMPLE],
        responses={
            201: OpenApiResponse(
                WebhookEndpointWithSecretSerializer, description="Registered; store the secret."
            ),
            **errors(
                "validation_error",
                *URL_ERRORS,
                "malformed_json",
                *COMMON_ERRORS,
                "webhook_endpoint_limit_reached",
                "length_required",
                "request_too_large",
                "unsupported_media_type",
                examples=URL_EXAMPLES,
            ),
        },
    ),
    "list": extend_schema(
        summary="List your webhook endpoints",
        operation_id="webhook_endpoints_list",
        description="Newest first, cursor-paginated; without their secrets.",
        parameters=[PageQuerySerializer],
        responses={
            200: WebhookEndpointSerializer(many=True),
            **errors("validation_error", *COMMON_ERRORS),
        },
    ),
    "retrieve": extend_schema(
        summary="Get a webhook endpoint",
        operation_id="webhook_endpoints_retrieve",
        description="Without its secret.",
        parameters=[ENDPOINT_ID],
        responses={
            200: WebhookEndpointSerializer,
            **errors(*COMMON_ERRORS, "not_found", "method_not_allowed", examples=NOT_FOUND),
        },
    ),
    "partial_update": extend_schema(
        summary="Change a webhook endpoint's URL, events or enabled",
        operation_id="webhook_endpoints_partial_update",
        description=f"Fields not given are unchanged. {URL_RULES} `enabled: true` re-enables an "
        "endpoint, also one disabled for a 410 or five days of failures, and clears its failure "
        "streak; `enabled: false` stops its deliveries.",
        parameters=[ENDPOINT_ID],
        request=WebhookEndpointUpdateSerializer,
        responses={
            200: WebhookEndpointSerializer,
            **errors(
                "validation_error",
                *URL_ERRORS,
                "malformed_json",
                *COMMON_ERRORS,
                "not_found",
                "length_required",
                "request_too_large",
                "unsupported_media_type",
                examples=URL_EXAMPLES,
            ),
        },
    ),
    "destroy": extend_schema(
        summary="Delete a webhook endpoint",
        operation_id="webhook_endpoints_destroy",
        description="With its deliveries; nothing more is sent to it.",
        parameters=[ENDPOINT_ID],
        responses={
            204: OpenApiResponse(description="Deleted."),
            **errors(*COMMON_ERRORS, "not_found", examples=NOT_FOUND),
        },
    ),
    "rotate_secret": extend_schema(
        summary="Rotate a webhook endpoint's signing secret",
        operation_id="webhook_endpoints_rotate_secret",
        description="Returns a new secret, shown only here. For PAYOUTS_WEBHOOK_SECRET_OVERLAP_"
        "SECONDS (24 h) the previous secret keeps signing beside it: `webhook-signature` then "
        "carries both signatures, space-separated, and a receiver holding either secret "
        "verifies. Rotating again within that time drops the oldest secret at once.",
        parameters=[ENDPOINT_ID],
        request=None,
        responses={
            200: WebhookSecretSerializer,
            **errors(*COMMON_ERRORS, "not_found", examples=NOT_FOUND),
        },
    ),
    "deliveries": extend_schema(
        summary="List a webhook endpoint's deliveries",
        operation_id="webhook_endpoints_deliveries",
        description="One delivery per event sent to this endpoint, newest first, "
        "cursor-paginated, each with its attempts (status code, latency, error, the start of "
        "the answer) and when the next is due.",
        parameters=[ENDPOINT_ID, PageQuerySerializer],
        responses={
            200: WebhookDeliverySerializer(many=True),
            **errors("validation_error", *COMMON_ERRORS, "not_found", examples=NOT_FOUND),
        },
    ),
    "retry_delivery": extend_schema(
        summary="Send a delivery again",
        operation_id="webhook_endpoints_delivery_retry",
        description="Whatever its status (a failed one, or a succeeded one your receiver lost): "
        "it is due now, with the same `webhook-id` and body, and its attempts go on in its "
        "log. The endpoint must be enabled.",
        parameters=[ENDPOINT_ID, DELIVERY_ID],
        request=None,
        responses={
            202: OpenApiResponse(WebhookDeliverySerializer, description="Queued."),
            **errors(
                *COMMON_ERRORS,
                "not_found",
                "webhook_endpoint_disabled",
                examples={"not_found": {"message": "No such delivery."}},
            ),
        },
    ),
}

EVENT_OPERATIONS = {
    "list": extend_schema(
        summary="List your events",
        operation_id="events_list",
        description="Every status change of your payouts (and their creation), newest first, "
        "cursor-paginated: the same ids and bodies the webhooks carry, for clients that poll or "
        "missed deliveries. Kept PAYOUTS_EVENT_RETENTION_DAYS (30) days.",
        parameters=[EventListQuerySerializer],
        responses={
            200: EventSerializer(many=True),
            **errors("validation_error", *COMMON_ERRORS),
        },
    ),
}
