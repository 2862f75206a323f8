"""Input validation and output shapes. No business rules here: services decide."""

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import money
from ..models import PayoutEvent, PayoutRequest, PayoutStatus

METADATA_MAX_KEYS = 20
METADATA_KEY_MAX_LENGTH = 40
METADATA_VALUE_MAX_LENGTH = 500
# Digits with at most one decimal point: no sign, exponent, spaces, NaN or Infinity.
AMOUNT_TEXT = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")


class StrictCharField(serializers.CharField):
    """A CharField that takes strings only: DRF's coerces numbers, which hides client bugs."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# The schema lists the codes in their canonical upper case so that anything a client (or a
# schema fuzzer) picks from the enum is accepted; lower and mixed case are accepted too.
@extend_schema_field(
    {
        "type": "string",
        "enum": sorted(money.payable_currencies()),
        "description": "ISO 4217 alphabetic code; any case is accepted (rub -> RUB).",
    }
)
class CurrencyField(StrictCharField):
    """An active ISO 4217 code with a minor unit, in any case; returns it upper-case."""

    default_error_messages = {"invalid_currency": "Not a supported ISO 4217 currency code."}

    def to_internal_value(self, data: Any) -> str:
        try:
            return money.normalize_currency(super().to_internal_value(data))
        except money.UnknownCurrency:
            self.fail("invalid_currency")


# RFC 3339 date-time ("T" or a space; no offset means UTC) or a bare date (midnight UTC).
# Written out rather than datetime.fromisoformat, whose accepted forms differ between Python
# versions; [0-9], not \d, which matches any Unicode digit.
INSTANT_TEXT = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ](?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.(?P<fraction>[0-9]+))?)?)"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)
INSTANT_FORMATS = (
    "an ISO 8601 date-time such as 2026-01-10T12:00:00Z or 2026-01-10T15:00:00+03:00 "
    '(no offset means UTC; send "+" as %2B in a URL), or a date such as 2026-01-10 '
    "(midnight UTC)"
)


@extend_schema_field(
    {"type": "string", "format": "date-time", "description": f"Either {INSTANT_FORMATS}."}
)
class InstantField(serializers.Field):
    """A point in time for a filter, always aware and in UTC."""

    default_error_messages = {"invalid": f"Use {INSTANT_FORMATS}."}

    def to_internal_value(self, data: Any) -> datetime:
        match = INSTANT_TEXT.fullmatch(data) if isinstance(data, str) else None
        if match is None:
            self.fail("invalid")
        clock, fraction, offset = match["time"] or "00:00", match["fraction"], match["offset"]
        if fraction is not None:
            # Microseconds are the finest the database keeps; finer digits are dropped.
            clock = clock[: clock.index(".")] + "." + fraction[:6].ljust(6, "0")
        try:
            instant = datetime.fromisoformat(f"{match['date']}T{clock}")
            zone = timezone.utc
            if offset and offset not in "Zz":
                hours, minutes = int(offset[1:3]), int(offset[4:6])
                sign = -1 if offset[0] == "-" else 1
                zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
            return instant.replace(tzinfo=zone).astimezone(timezone.utc)
        except (ValueError, OverflowError):
            # Out-of-range fields (month 13, hour 25, offset +24:00), or an instant with no UTC
            # equivalent (year 1 at +14:00).
            self.fail("invalid")

    def to_representation(self, value: Any) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)


@extend_schema_field({"type": "string", "pattern": r"^\d+(\.\d+)?$", "example": "1500.00"})
class AmountField(serializers.Field):
    """A positive decimal given as a string ("1500.50"); a JSON number is taken exactly too."""

    default_error_messages = {
        "invalid": 'Must be a decimal number in a string, e.g. "1500.50".',
        "not_positive": "Must be greater than zero.",
        "too_large": f"Must not exceed {money.MAX_AMOUNT}.",
    }

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, str):
            text = data
        elif isinstance(data, (int, Decimal)) and not isinstance(data, bool):
            number = Decimal(data)
            exponent = number.as_tuple().exponent  # 'n', 'N' or 'F' when not finite
            # Check magnitude before formatting: "1e999999999" would expand to a gigabyte.
            if not isinstance(exponent, int) or exponent < -30 or number.adjusted() > 30:
                self.fail("invalid")
            text = format(number, "f")
        else:
            self.fail("invalid")
        if text.startswith("-") and AMOUNT_TEXT.fullmatch(text[1:]):
            self.fail("not_positive")
        if not AMOUNT_TEXT.fullmatch(text):
            self.fail("invalid")
        amount = Decimal(text)
        if amount == 0:
            self.fail("not_positive")
        if amount > money.MAX_AMOUNT:
            self.fail("too_large")
        return amount

    def to_representation(self, value: Any) -> str:
        return str(value)


class RejectUnknownFieldsMixin:
    """Name every field the serializer does not know, beside the other errors: a typo such as
    `ammount` or `?stauts=` must not be silently ignored by a payments API."""

    unknown_code = "unknown_field"
    unknown_message = "Unknown field."

    def to_internal_value(self, data: Any) -> Any:
        known = self.fields  # type: ignore[attr-defined]
        unknown = sorted(set(data) - set(known)) if isinstance(data, Mapping) else []
        errors = {
            name: [serializers.ErrorDetail(self.unknown_message, code=self.unknown_code)]
            for name in unknown
        }
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            if errors and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **errors}) from None
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


class PayoutCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    client_reference = StrictCharField(
        max_length=64,
        trim_whitespace=False,
        help_text="Your own id for this payout; creating twice with it is idempotent.",
    )
    amount = AmountField(help_text="Decimal string with at most the currency's minor-unit digits.")
    currency = CurrencyField(
        help_text="ISO 4217 alphabetic code: one of the enum's upper-case codes, in any case "
        "(rub -> RUB)."
    )
    destination = StrictCharField(
        max_length=255, trim_whitespace=False, help_text="Payout details, stored as given."
    )
    metadata = serializers.DictField(
        child=StrictCharField(
            max_length=METADATA_VALUE_MAX_LENGTH, allow_blank=True, trim_whitespace=False
        ),
        required=False,
        help_text=f"Up to {METADATA_MAX_KEYS} string keys (<= {METADATA_KEY_MAX_LENGTH} chars) "
        f"with string values (<= {METADATA_VALUE_MAX_LENGTH} chars).",
    )

    def validate_client_reference(self, value: str) -> str:
        if value != value.strip() or not value.isprintable():
            raise serializers.ValidationError(
                "Must be printable characters with no leading or trailing whitespace.",
                code="invalid_client_reference",
            )
        return value

    def validate_destination(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value

    def validate_metadata(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > METADATA_MAX_KEYS:
            raise serializers.ValidationError(
                f"At most {METADATA_MAX_KEYS} keys.", code="too_many_keys"
            )
        for key in value:
            if not 1 <= len(key) <= METADATA_KEY_MAX_LENGTH or "\x00" in key:
                raise serializers.ValidationError(
                    f"Keys must be 1-{METADATA_KEY_MAX_LENGTH} characters: {key[:50]!r}.",
                    code="invalid_key",
                )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        amount, currency = attrs["amount"], attrs["currency"]
        if not money.fits_minor_unit(amount, currency):
            raise serializers.ValidationError(
                {
                    "amount": serializers.ErrorDetail(
                        f"{currency} amounts take at most {money.exponent(currency)} "
                        "decimal places.",
                        code="too_many_decimal_places",
                    )
                }
            )
        attrs.setdefault("metadata", {})
        return attrs


class PayoutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    client_reference = serializers.CharField()
    amount = serializers.SerializerMethodField(
        help_text="With exactly the currency's minor-unit digits."
    )
    currency = serializers.CharField()
    destination = serializers.CharField()
    metadata = serializers.DictField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=PayoutStatus.choices)
    failure_code = serializers.CharField(help_text="Machine code when FAILED, else empty.")
    failure_reason = serializers.CharField(help_text="Human text when FAILED, else empty.")
    provider_reference = serializers.CharField(
        help_text="The provider's id of the executed payout when PAID, else empty."
    )
    attempts = serializers.IntegerField(
        help_text="Processing attempts so far, retries included (PAYOUTS_MAX_RETRIES bounds "
        "them; an outcome the provider has not told yet is looked up after that, never guessed)."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    processed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(OpenApiTypes.STR)
    def get_amount(self, payout: PayoutRequest) -> str:
        return money.format_amount(payout.amount, payout.currency)


class PayoutEventSerializer(serializers.Serializer):
    from_status = serializers.SerializerMethodField()
    to_status = serializers.ChoiceField(choices=PayoutStatus.choices)
    actor = serializers.CharField(help_text="api, worker, admin or recovery")
    reason = serializers.CharField()
    applied = serializers.BooleanField(
        help_text="False for a provider answer that contradicted a status already final (kept "
        "for reconciliation; the statuses are built so that this does not happen)."
    )
    created_at = serializers.DateTimeField()

    @extend_schema_field({"type": "string", "nullable": True, "enum": [*PayoutStatus.values, None]})
    def get_from_status(self, event: PayoutEvent) -> str | None:
        return event.from_status or None


class QueryStringSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """A list endpoint's query string: unknown, repeated and empty parameters are 400s."""

    unknown_code = "unknown_parameter"
    unknown_message = "Unknown query parameter."
    repeated_message = "Given more than once; give it once."

    def to_internal_value(self, data: Any) -> Any:
        # A QueryDict answers the last of repeated values: "?status=NEW&status=PAID" would
        # silently filter PAID only. The comma list is the documented form for several values.
        lists = data.lists() if hasattr(data, "lists") else ()
        if repeated := sorted(name for name, values in lists if len(values) > 1):
            raise serializers.ValidationError(
                {
                    name: [
                        serializers.ErrorDetail(self.repeated_message, code="repeated_parameter")
                    ]
                    for name in repeated
                }
            )
        # DRF reads "?status=" as if the parameter were absent; a filter that silently filters
        # nothing is a client bug worth reporting.
        if blank := sorted(name for name, value in data.items() if value == ""):
            raise serializers.ValidationError(
                {
                    name: [serializers.ErrorDetail("Must not be empty.", code="blank")]
                    for name in blank
                }
            )
        return super().to_internal_value(data)


class PayoutListQuerySerializer(QueryStringSerializer):
    repeated_message = (
        "Given more than once; give it once (status takes a comma list: status=NEW,PAID)."
    )

    status = serializers.CharField(
        required=False, help_text="One status or a comma list: NEW,PROCESSING"
    )
    currency = CurrencyField(
        required=False,
        help_text="ISO 4217 code: one of the enum's upper-case codes, in any case (rub).",
    )
    client_reference = serializers.CharField(required=False, max_length=64, trim_whitespace=False)
    created_after = InstantField(
        required=False,
        help_text=f"Created at or after this instant (inclusive): {INSTANT_FORMATS}.",
    )
    created_before = InstantField(
        required=False,
        help_text=f"Created before this instant (exclusive): {INSTANT_FORMATS}. So "
        "created_after=2026-01-01&created_before=2026-02-01 is all of January.",
    )
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=200, help_text="1-200, default 50."
    )
    cursor = serializers.CharField(required=False, help_text="From the `next`/`previous` links.")

    def validate_status(self, value: str) -> list[str]:
        statuses = [item.strip().upper() for item in value.split(",")]
        if invalid := [item for item in statuses if item not in PayoutStatus.values]:
            raise serializers.ValidationError(
                f"Unknown status {invalid[0]!r}; use {', '.join(PayoutStatus.values)}.",
                code="invalid_choice",
            )
        return statuses


class ProblemFieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="Dotted path of the failing field.")
    code = serializers.CharField()
    message = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, the body of every error."""

    type = serializers.CharField(help_text="urn:payouts:error:<code>")
    title = serializers.CharField()
    status = serializers.IntegerField()
    code = serializers.CharField(help_text="Stable machine-readable error code.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    # Shadows Serializer.errors; harmless, this serializer only describes the schema.
    errors = ProblemFieldErrorSerializer(  # type: ignore[assignment]
        many=True, required=False, help_text="Validation failures only."
    )
