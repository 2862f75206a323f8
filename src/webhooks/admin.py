"""Back office for notifications: endpoints, events and deliveries, read-only, and a replay.

Nothing here is edited through a form: a delivery's status, attempts and an endpoint's failure
streak are written by the delivery code as attempts finish, and a form's save() would write
every column back over them. Replay goes through the service the API's retry uses
(`services.delivery_retry`, which calls `delivery.delivery_replay`).
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from payouts.admin import ReadOnlyAdmin, ReadOnlyInline

from .errors import WebhookEndpointDisabled
from .models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .services import delivery_retry

# Enough of a secret to tell two apart (as API keys show their prefix), far too little to sign.
SECRET_SHOWN_CHARACTERS = len("whsec_") + 4


def masked(secret: str) -> str:
    return f"{secret[:SECRET_SHOWN_CHARACTERS]}…" if secret else "-"


def change_link(obj: Any, label: object) -> str:
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = (
        "url",
        "client",
        "enabled",
        "failure_streak",
        "failing_since",
        "disabled_reason",
        "created_at",
    )
    list_filter = ("enabled", "client")
    search_fields = ("url", "client__name")
    list_select_related = ("client",)
    ordering = ("-created_at",)
    fields = readonly_fields = (
        "id",
        "client",
        "url",
        "events",
        "enabled",
        "masked_secret",
        "masked_previous_secret",
        "previous_secret_expires_at",
        "failure_streak",
        "failing_since",
        "disabled_reason",
        "created_at",
        "updated_at",
    )

    @admin.display(description="secret")
    def masked_secret(self, obj: WebhookEndpoint) -> str:
        return masked(obj.secret)

    @admin.display(description="previous secret")
    def masked_previous_secret(self, obj: WebhookEndpoint) -> str:
        return masked(obj.previous_secret)


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = readonly_fields = (
        "number",
        "started_at",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    )
    ordering = ("number",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "event_link",
        "event_type",
        "endpoint_link",
        "client",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event__type", "endpoint__client", "endpoint")
    search_fields = ("=event__id", "=event__payout__id")
    search_help_text = "An event id or a payout id."
    list_select_related = ("event", "endpoint__client")
    ordering = ("-created_at",)
    fields = readonly_fields = (
        "id",
        "event_link",
        "event_type",
        "endpoint_link",
        "client",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "last_latency_ms",
        "created_at",
        "delivered_at",
    )
    inlines = (WebhookAttemptInline,)
    actions = ("replay_deliveries",)

    @admin.display(description="event")
    def event_link(self, obj: WebhookDelivery) -> str:
        return change_link(obj.event, obj.event_id)

    @admin.display(description="type", ordering="event__type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="endpoint")
    def endpoint_link(self, obj: WebhookDelivery) -> str:
        return change_link(obj.endpoint, obj.endpoint.url)

    @admin.display(description="client")
    def client(self, obj: WebhookDelivery) -> str:
        return str(obj.endpoint.client)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.change_webhookdelivery")

    @admin.action(description="Replay selected deliveries", permissions=["replay"])
    def replay_deliveries(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        replayed, disabled = 0, set()
        for delivery in queryset.select_related("event", "endpoint"):
            try:
                delivery_retry(delivery)  # the API's retry: delivery_replay, if enabled
            except WebhookEndpointDisabled:
                disabled.add(delivery.endpoint.url)  # re-enabling is the client's (PATCH)
                continue
            replayed += 1
            self.log_change(request, delivery, "Replayed with the admin action.")
        if replayed:
            self.message_user(request, f"Replayed {replayed} deliveries.", messages.SUCCESS)
        if disabled:
            self.message_user(
                request,
                "Not replayed, the endpoint is disabled (its client re-enables it with PATCH "
                f"enabled=true): {', '.join(sorted(disabled))}.",
                messages.WARNING,
            )


class WebhookDeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = readonly_fields = (
        "delivery_link",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    )
    ordering = ("created_at",)
    verbose_name_plural = "deliveries"

    @admin.display(description="delivery to")
    def delivery_link(self, obj: WebhookDelivery) -> str:
        return change_link(obj, obj.endpoint.url)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "type", "sequence", "payout_link", "client", "dispatched_at")
    list_filter = ("type", "client")
    search_fields = ("=payout__id", "=id")
    search_help_text = "A payout id or an event id."
    list_select_related = ("client",)
    # The retention index (event_created) serves this order.
    ordering = ("-created_at",)
    fields = readonly_fields = (
        "id",
        "type",
        "sequence",
        "payout_link",
        "client",
        "data",
        "created_at",
        "dispatched_at",
    )
    inlines = (WebhookDeliveryInline,)

    @admin.display(description="payout")
    def payout_link(self, obj: Event) -> str:
        url = reverse("admin:payouts_payoutrequest_change", args=[obj.payout_id])
        return format_html('<a href="{}">{}</a>', url, obj.payout_id)
