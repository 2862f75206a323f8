"""Back office. Staff see everything; status changes go through services, never direct writes."""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from . import money, ops
from .api import ratelimit
from .errors import CancelUnconfirmed, PayoutNotCancelable
from .models import (
    ApiClient,
    ApiKey,
    EventActor,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    SandboxLedgerEntry,
)
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


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record of what happened: staff read it, nobody adds, edits or deletes a row here."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PayoutEventInline(ReadOnlyInline):
    model = PayoutEvent
    fields = ("created_at", "from_status", "to_status", "actor", "reason", "applied")
    readonly_fields = fields
    ordering = ("created_at", "id")


PROVIDER_CALL_FIELDS = (
    "kind",
    "attempt",
    "requested_by",
    "started_at",
    "finished_at",
    "outcome",
    "code",
    "detail",
    "latency_ms",
)


class ProviderCallInline(ReadOnlyInline):
    model = ProviderCall
    fields = readonly_fields = PROVIDER_CALL_FIELDS
    ordering = ("started_at", "id")
    verbose_name_plural = "provider calls"


class UnderReviewFilter(admin.SimpleListFilter):
    """Payouts a person must look at: flagged, and still waiting for the provider's answer."""

    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("flagged", "under review")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "flagged":
            # The partial index payout_under_review serves exactly this.
            return queryset.filter(review_flagged_at__isnull=False, status=PayoutStatus.PROCESSING)
        return queryset


@admin.register(PayoutRequest)
class PayoutRequestAdmin(FormattedAmountMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "client",
        "client_reference",
        "formatted_amount",
        "currency",
        "status",
        "under_review",
        "failure_code",
        "created_at",
    )
    list_filter = (UnderReviewFilter, "status", "currency", "client", "created_at")
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
        "execute_started_at",
        "outcome_unknown_since",
        "review_flagged_at",
        "review_reason",
    )
    inlines = (PayoutEventInline, ProviderCallInline)
    actions = ("cancel_payouts",)

    @admin.display(description="under review", boolean=True)
    def under_review(self, obj: PayoutRequest) -> bool:
        return obj.review_flagged_at is not None and obj.status == PayoutStatus.PROCESSING

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
    list_display = ("name", "is_active", "reads_per_second", "writes_per_second", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "is_active")}),
        (
            "Rate limits (requests per second; empty: the default, 0: unlimited)",
            {"fields": ("rate_limit_reads_per_second", "rate_limit_writes_per_second")},
        ),
    )
    inlines = (ApiKeyInline,)

    # The limit in force, the default spelled out: staff see what a client gets at a glance.
    @admin.display(description="reads/s")
    def reads_per_second(self, obj: ApiClient) -> str:
        return _limit_shown(ratelimit.READS.limit_of(obj), obj.rate_limit_reads_per_second)

    @admin.display(description="writes/s")
    def writes_per_second(self, obj: ApiClient) -> str:
        return _limit_shown(ratelimit.WRITES.limit_of(obj), obj.rate_limit_writes_per_second)


def _limit_shown(limit: int, override: int | None) -> str:
    shown = str(limit) if limit else "unlimited"
    return shown if override is not None else f"{shown} (default)"


# The library registers its own concrete key model, which nothing here uses: keys belong to
# API clients (ApiKey below).
admin.site.unregister(LibraryAPIKey)


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Creating a key here shows it once in a message; revoking is a checkbox."""

    list_display = (*APIKeyModelAdmin.list_display, "client")  # type: ignore[assignment]
    list_filter = (*APIKeyModelAdmin.list_filter, "client")  # type: ignore[assignment]
    search_fields = (*APIKeyModelAdmin.search_fields, "client__name")  # type: ignore[assignment]


@admin.register(ProviderCall)
class ProviderCallAdmin(ReadOnlyAdmin):
    """Every call made to the provider, newest first: read-only, a record of what was asked."""

    list_display = (
        "started_at",
        "payout_link",
        *PROVIDER_CALL_FIELDS[:3],
        *PROVIDER_CALL_FIELDS[4:],
    )
    list_filter = ("kind", "outcome", "requested_by")
    search_fields = ("=payout__id",)
    # By primary key, not started_at: the same order (rows are written as calls start) served
    # by the primary key's index, where started_at alone has none.
    ordering = ("-id",)
    fields = readonly_fields = ("payout_link", *PROVIDER_CALL_FIELDS)

    @admin.display(description="payout")
    def payout_link(self, obj: ProviderCall) -> str:
        url = reverse("admin:payouts_payoutrequest_change", args=[obj.payout_id])
        return format_html('<a href="{}">{}</a>', url, obj.payout_id)


@admin.register(SandboxLedgerEntry)
class SandboxLedgerEntryAdmin(FormattedAmountMixin, admin.ModelAdmin):
    list_display = (
        "idempotency_key",
        "outcome",
        "calls",
        "lookup_calls",
        "cancel_calls",
        "formatted_amount",
        "currency",
        "settles_at",
        "executed_at",
        "canceled_at",
    )
    list_filter = ("outcome",)
    search_fields = ("=idempotency_key", "reference")
    fields = readonly_fields = (
        "idempotency_key",
        "formatted_amount",
        "currency",
        "destination",
        "calls",
        "lookup_calls",
        "cancel_calls",
        "outcome",
        "reference",
        "decline_code",
        "decline_reason",
        "created_at",
        "settles_at",
        "executed_at",
        "canceled_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# The admin index links the operations page, in a module above the apps.
admin.site.index_template = "admin/payouts/index.html"


def operations_view(request: HttpRequest) -> HttpResponse:
    """/admin/operations/: is it healthy, is anything stuck, who must look (payouts.ops).

    config/urls.py wraps it in admin.site.admin_view: staff only, anyone else is sent to the
    admin login. Staff who may not view payouts may not see their numbers either.
    """
    if not request.user.has_perm("payouts.view_payoutrequest"):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "overview": ops.operations_overview(),
        "list_limit": ops.LIST_LIMIT,
        "latency_sample": f"{ops.LATENCY_SAMPLE:,}",
    }
    return TemplateResponse(request, "admin/payouts/operations.html", context)
