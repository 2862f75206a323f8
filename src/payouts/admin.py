"""Back office. Staff see everything; status changes go through services, never direct writes."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from . import money
from .errors import CancelUnconfirmed, PayoutNotCancelable
from .models import ApiClient, ApiKey, EventActor, PayoutEvent, PayoutRequest, SandboxLedgerEntry
from .services import payout_cancel

# What merchants read in the payout's history (/events/); who canceled goes to the admin log.
ADMIN_CANCEL_REASON = "canceled by staff"


class FormattedAmountMixin:
    """The amount as people read money: with the currency's digits ("5.00" EUR, not "5.000")."""

    @admin.display(description="amount", ordering="amount")
    def formatted_amount(self, obj: PayoutRequest | SandboxLedgerEntry) -> str:
        return money.format_amount(obj.amount, obj.currency)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PayoutEventInline(ReadOnlyInline):
    model = PayoutEvent
    fields = ("created_at", "from_status", "to_status", "actor", "reason", "applied")
    readonly_fields = fields
    ordering = ("created_at", "id")


@admin.register(PayoutRequest)
class PayoutRequestAdmin(FormattedAmountMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "client",
        "client_reference",
        "formatted_amount",
        "currency",
        "status",
        "failure_code",
        "created_at",
    )
    list_filter = ("status", "currency", "client", "created_at")
    search_fields = ("=id", "client_reference", "client__name", "provider_reference")
    list_select_related = ("client",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False
    # Money, routing and status are never edited by hand: status moves only through services.
    # `fields` names them all so that the raw amount column never shows beside the formatted one.
    fields = readonly_fields = (
        "id",
        "client",
        "attempts",
        "lease_owner",
        "client_reference",
        "formatted_amount",
        "currency",
        "destination",
        "metadata",
        "status",
        "failure_code",
        "failure_reason",
        "provider_reference",
        "created_at",
        "updated_at",
        "processed_at",
        "lease_expires_at",
    )
    inlines = (PayoutEventInline,)
    actions = ("cancel_payouts",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # payouts come in through the API, where idempotency is enforced

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Never save the form: Model.save() writes every column back, status included, and
        # would undo a move the worker made meanwhile. Status changes go through services.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payouts.change_payoutrequest")

    @admin.action(
        description="Cancel selected payouts (NEW or PROCESSING only)", permissions=["cancel"]
    )
    def cancel_payouts(self, request: HttpRequest, queryset: QuerySet[PayoutRequest]) -> None:
        canceled, refused, unconfirmed = 0, [], []
        for payout in queryset:
            try:
                payout = payout_cancel(
                    payout=payout, actor=EventActor.ADMIN, reason=ADMIN_CANCEL_REASON
                )
                canceled += 1
                # Staff see who did it in the object's history (django.contrib.admin LogEntry).
                self.log_change(request, payout, "Canceled with the admin action.")
            except PayoutNotCancelable as exc:
                refused.append(f"{exc.payout.client_reference} ({exc.payout.status})")
            except CancelUnconfirmed as exc:
                unconfirmed.append(exc.payout.client_reference)
        if canceled:
            self.message_user(request, f"Canceled {canceled} payout(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request,
                f"Not canceled, already final: {', '.join(refused)}.",
                messages.WARNING,
            )
        if unconfirmed:
            self.message_user(
                request,
                "Not canceled, the provider did not confirm (try again): "
                f"{', '.join(unconfirmed)}.",
                messages.ERROR,
            )


class ApiKeyInline(ReadOnlyInline):
    model = ApiKey
    fields = ("name", "prefix", "created", "expiry_date", "revoked")
    readonly_fields = fields


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name",)
    inlines = (ApiKeyInline,)


# The library registers its own concrete key model, which nothing here uses: keys belong to
# API clients (ApiKey below).
admin.site.unregister(LibraryAPIKey)


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Creating a key here shows it once in a message; revoking is a checkbox."""

    list_display = (*APIKeyModelAdmin.list_display, "client")  # type: ignore[assignment]
    list_filter = (*APIKeyModelAdmin.list_filter, "client")  # type: ignore[assignment]
    search_fields = (*APIKeyModelAdmin.search_fields, "client__name")  # type: ignore[assignment]


@admin.register(SandboxLedgerEntry)
class SandboxLedgerEntryAdmin(FormattedAmountMixin, admin.ModelAdmin):
    list_display = (
        "idempotency_key",
        "outcome",
        "calls",
        "formatted_amount",
        "currency",
        "executed_at",
    )
    list_filter = ("outcome",)
    search_fields = ("=idempotency_key", "reference")
    fields = readonly_fields = (
        "idempotency_key",
        "formatted_amount",
        "currency",
        "destination",
        "calls",
        "outcome",
        "reference",
        "decline_code",
        "decline_reason",
        "created_at",
        "executed_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
