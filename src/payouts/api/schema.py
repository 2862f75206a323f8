"""OpenAPI metadata for the views (drf-spectacular), kept beside them rather than inside them.

Error responses are built from the error table in api/errors.py: each documented status lists
the codes it can carry, and each example is the very body `errors.answer_problem` produces.
"""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

from ..models import PayoutStatus
from .errors import ANSWERS, PROBLEM_CONTENT_TYPE, answer_problem
from .export import COLUMNS, CONTENT_TYPE, PayoutExportQuerySerializer
from .serializers import (
    PayoutCreateSerializer,
    PayoutEventSerializer,
    PayoutListQuerySerializer,
    PayoutSerializer,
    ProblemSerializer,
)

# Example bodies beyond the code's defaults, for the codes whose answers carry more.
EXAMPLE_EXTRAS: dict[str, dict[str, Any]] = {
    "validation_error": {
        "errors": [
            {
                "field": "amount",
                "code": "too_many_decimal_places",
                "message": "JPY amounts take at most 0 decimal places.",
            }
        ]
    },
    "payout_not_cancelable": {
        "message": "The payout is PAID; only NEW or PROCESSING payouts can be canceled.",
        "payout_status": "PAID",
    },
    "provider_unavailable": {"payout_status": "PROCESSING"},
    "client_reference_conflict": {
        "payout_id": "6f1c2a4e-8d53-4b7e-9a51-2f0e6c3d9b10",
        "conflicting_fields": ["amount"],
    },
    "not_found": {"message": "No such payout request."},
    "method_not_allowed": {"message": 'Method "DELETE" not allowed.'},
    "unsupported_media_type": {"message": 'Unsupported media type "text/plain" in request.'},
}


def _example(code: str, extras: dict[str, dict[str, Any]]) -> OpenApiExample:
    extra = dict(extras.get(code, EXAMPLE_EXTRAS.get(code, {})))
    body = answer_problem(code, extra.pop("message", None), **extra)
    return OpenApiExample(
        code.replace("_", " ").capitalize(),
        value=body,
        response_only=True,
        status_codes=[str(body["status"])],
    )


def errors(
    *codes: str,
    body: type[ProblemSerializer] = ProblemSerializer,
    examples: dict[str, dict[str, Any]] | None = None,
) -> dict[tuple[int, str], OpenApiResponse]:
    """The problem responses for these codes, one per HTTP status, with an example per code
    (its extra members from `examples`, else from EXAMPLE_EXTRAS)."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ANSWERS[code].status, []).append(code)
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            body,
            description=" ".join(
                f"`{code}`: {ANSWERS[code].when}" if len(group) > 1 else ANSWERS[code].when
                for code in group
            ),
            examples=[_example(code, examples or {}) for code in group],
        )
        for status, group in sorted(by_status.items())
    }


# Every endpoint can answer these.
COMMON_ERRORS = (
    "not_authenticated",
    "authentication_failed",
    "rate_limited",
    "service_unavailable",
)

# api/ratelimit.py's headers, declared once (components.headers) and referenced from every
# operation by rate_limit_headers below.
RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Limit": {
        "description": "Requests per second of this budget (the client's reads or writes).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the budget right now.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the budget is full again.",
        "schema": {"type": "integer", "minimum": 0},
    },
}
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before retrying (at least 1).",
    "schema": {"type": "integer", "minimum": 1},
}


def rate_limit_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the RateLimit-* headers on every operation's
    success and 429 answers, and Retry-After on the 429s, so no operation can miss them."""
    headers = {**RATE_LIMIT_HEADERS, "Retry-After": RETRY_AFTER_HEADER}
    result.setdefault("components", {})["headers"] = headers
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status == "429":
                    response["headers"] = _header_refs(headers)
                elif status.startswith("2"):
                    response["headers"] = {
                        **response.get("headers", {}),
                        **_header_refs(RATE_LIMIT_HEADERS),
                    }
    return result


REQUEST_ID_DESCRIPTION = (
    "The request's id (config/request_id.py): the one sent, if it is 1-128 of "
    "`A-Z a-z 0-9 . _ : -`, else one generated. Every log line of the request carries it; "
    "quote it when asking about a request."
)


def request_id_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: X-Request-ID, accepted by every operation and
    echoed on every answer (the middleware sets it on all of them, errors included)."""
    components = result.setdefault("components", {})
    components.setdefault("headers", {})["X-Request-ID"] = {
        "description": REQUEST_ID_DESCRIPTION,
        "schema": {"type": "string", "maxLength": 128},
    }
    components.setdefault("parameters", {})["RequestId"] = {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": REQUEST_ID_DESCRIPTION,
        "schema": {"type": "string"},
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            operation.setdefault("parameters", []).append(
                {"$ref": "#/components/parameters/RequestId"}
            )
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = {
                    "$ref": "#/components/headers/X-Request-ID"
                }
    return result


def _header_refs(names: dict[str, Any]) -> dict[str, dict[str, str]]:
    # Fresh objects per response: shared ones would come out as YAML anchors.
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


PAYOUT_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The payout's id."
)

CANCEL_DESCRIPTION = (
    "Before any call to the provider, the payout is canceled at once. Once a call may have "
    "reached the provider, only the provider can stop it, so it is asked: it confirms (200, "
    "CANCELED), or it had already paid or declined the payout (400 `payout_not_cancelable`; "
    "the payout now has that outcome, `payout_status` says which), or it cannot be reached "
    "(503 `provider_unavailable` with `Retry-After`; nothing changed, the payout is still "
    "PROCESSING: retry the cancel). A CANCELED payout never moves money."
)
CANCEL_RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    description="Seconds to wait before retrying (5 when the provider must confirm a cancel).",
    response=[503],
)


class CancelProblemSerializer(ProblemSerializer):
    """A cancel's problem document: it says what the payout is now."""

    payout_status = serializers.ChoiceField(
        choices=PayoutStatus.choices,
        required=False,
        help_text="The payout's status now (`payout_not_cancelable`, `provider_unavailable`).",
    )


CREATE_EXAMPLE = OpenApiExample(
    "Payout",
    value={
        "client_reference": "invoice-2024-0042",
        "amount": "1500.00",
        "currency": "RUB",
        "destination": "40817810099910004312",
        "metadata": {"order_id": "42"},
    },
    request_only=True,
)

EXPORT_EXAMPLE = OpenApiExample(
    "Two payouts",
    value=(
        ",".join(COLUMNS) + "\r\n"
        "6f1c2a4e-8d53-4b7e-9a51-2f0e6c3d9b10,invoice-42,1500.00,RUB,PAID,,sbx_po_6f1c2a4e,"
        "2026-01-10T12:00:00.123456Z,2026-01-10T12:00:00.734012Z\r\n"
        "0b7d9e31-5c2a-4f6e-8d41-7a3b2c1e9f08,'=HYPERLINK(...),10,JPY,FAILED,insufficient_funds,,"
        "2026-01-10T12:05:00Z,2026-01-10T12:05:01.004000Z\r\n"
    ),
    response_only=True,
    status_codes=["200"],
)

# Keyed by viewset action, for extend_schema_view(**PAYOUT_REQUEST_OPERATIONS).
PAYOUT_REQUEST_OPERATIONS = {
    "list": extend_schema(
        summary="List payouts",
        operation_id="payout_requests_list",
        description="Your payouts, newest first, cursor-paginated.",
        parameters=[PayoutListQuerySerializer],
        responses={
            200: PayoutSerializer(many=True),
            **errors("validation_error", *COMMON_ERRORS),
        },
    ),
    "create": extend_schema(
        summary="Create a payout (idempotent by client_reference)",
        operation_id="payout_requests_create",
        request=PayoutCreateSerializer,
        examples=[CREATE_EXAMPLE],
        responses={
            201: OpenApiResponse(
                PayoutSerializer, description="Created and queued for processing."
            ),
            200: OpenApiResponse(
                PayoutSerializer,
                description=(
                    "A payout with this client_reference and the same data exists; "
                    "nothing new is queued."
                ),
            ),
            **errors(
                "validation_error",
                "malformed_json",
                *COMMON_ERRORS,
                "client_reference_conflict",
                "length_required",
                "request_too_large",
                "unsupported_media_type",
            ),
        },
    ),
    "retrieve": extend_schema(
        summary="Get a payout",
        operation_id="payout_requests_retrieve",
        parameters=[PAYOUT_ID],
        responses={
            200: PayoutSerializer,
            **errors(*COMMON_ERRORS, "not_found", "method_not_allowed"),
        },
    ),
    "cancel": extend_schema(
        summary="Cancel a NEW or PROCESSING payout",
        operation_id="payout_requests_cancel",
        description=CANCEL_DESCRIPTION,
        parameters=[PAYOUT_ID, CANCEL_RETRY_AFTER],
        request=None,
        responses={
            200: OpenApiResponse(
                PayoutSerializer,
                description="Canceled: the provider was never called, or it confirmed the "
                "cancellation. No money moved.",
            ),
            # In status order; the 400 and the 503 (with the provider's) say what the payout is now.
            **dict(
                sorted(
                    {
                        **errors(*COMMON_ERRORS, "not_found"),
                        **errors(
                            "payout_not_cancelable",
                            "service_unavailable",
                            "provider_unavailable",
                            body=CancelProblemSerializer,
                        ),
                    }.items()
                )
            ),
        },
    ),
    "events": extend_schema(
        summary="A payout's status history, oldest first",
        operation_id="payout_requests_events",
        parameters=[PAYOUT_ID],
        responses={
            200: inline_serializer(
                "PayoutEventList", {"results": PayoutEventSerializer(many=True)}
            ),
            **errors(*COMMON_ERRORS, "not_found"),
        },
    ),
    "export_csv": extend_schema(
        summary="Download your payouts as CSV",
        operation_id="payout_requests_export_csv",
        description=(
            "Every payout matching the list's filters (no pages: `limit` and `cursor` are "
            "unknown parameters here), oldest first by (`created_at`, `id`), streamed as UTF-8 "
            "CSV with a header row: " + ", ".join(f"`{column}`" for column in COLUMNS) + ". "
            "`amount` has exactly the currency's minor-unit digits; timestamps are ISO 8601 UTC "
            "as in the JSON answers; `processed_at` is empty while unfinished. A text value "
            "(`client_reference`, `failure_code`, `provider_reference`) that begins with `=`, "
            "`+`, `-`, `@`, a tab, a carriage return or `'` gets a leading `'` so a spreadsheet "
            "shows it rather than runs it; drop one leading `'` to get the stored value back. "
            "Errors are problem documents whatever the Accept header says. A download that "
            "breaks off mid-way ends without the final chunk (curl exits non-zero): retry it."
        ),
        parameters=[PayoutExportQuerySerializer],
        responses={
            (200, CONTENT_TYPE.split(";")[0]): OpenApiResponse(
                OpenApiTypes.STR,
                description="The CSV file (`Content-Disposition: attachment`).",
                examples=[EXPORT_EXAMPLE],
            ),
            **errors("validation_error", *COMMON_ERRORS),
        },
    ),
}
