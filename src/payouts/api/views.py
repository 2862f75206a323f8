"""HTTP interface: validate input, call one service or selector, serialize the result."""

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import EventActor
from ..selectors import payout_events, payout_get, payout_list
from ..services import payout_cancel, payout_create
from .auth import request_client
from .errors import PROBLEM_CONTENT_TYPE, TITLES
from .negotiation import JSONOnlyContentNegotiation
from .pagination import PayoutCursorPagination
from .parsers import LengthRequired
from .serializers import (
    PayoutCreateSerializer,
    PayoutEventSerializer,
    PayoutListQuerySerializer,
    PayoutSerializer,
    ProblemSerializer,
)


def _problem(description: str, *examples: OpenApiExample) -> OpenApiResponse:
    return OpenApiResponse(ProblemSerializer, description=description, examples=list(examples))


def _example(name: str, code: str, status_code: int, message: str, **extra: Any) -> OpenApiExample:
    return OpenApiExample(
        name,
        value={
            "type": f"urn:payouts:error:{code}",
            "title": TITLES[status_code],
            "status": status_code,
            "code": code,
            "message": message,
            **extra,
        },
        response_only=True,
        status_codes=[str(status_code)],
    )


UNAUTHORIZED = _problem(
    "Missing or invalid API key.",
    _example(
        "Unauthorized", "not_authenticated", 401, "Authentication credentials were not provided."
    ),
)
UNAVAILABLE = _problem(
    "The database is briefly unavailable; nothing was stored. Retry (creation is idempotent).",
    _example(
        "Service unavailable",
        "service_unavailable",
        503,
        "The service is briefly unavailable; retry shortly.",
    ),
)
# Every endpoint can answer these.
COMMON_ERRORS = {
    (401, PROBLEM_CONTENT_TYPE): UNAUTHORIZED,
    (503, PROBLEM_CONTENT_TYPE): UNAVAILABLE,
}
NOT_FOUND = _problem(
    "Unknown id, not a UUID, or another client's payout.",
    _example("Not found", "not_found", 404, "No such payout request."),
)
METHOD_NOT_ALLOWED = _problem(
    "Method not allowed.",
    _example("Method not allowed", "method_not_allowed", 405, 'Method "DELETE" not allowed.'),
)
VALIDATION = _problem(
    "Invalid input: `errors` lists each failing field.",
    _example(
        "Validation error",
        "validation_error",
        400,
        "The request is invalid.",
        errors=[
            {
                "field": "amount",
                "code": "too_many_decimal_places",
                "message": "JPY amounts take at most 0 decimal places.",
            }
        ],
    ),
)
PAYOUT_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The payout's id."
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


@extend_schema_view(
    list=extend_schema(
        summary="List payouts",
        operation_id="payout_requests_list",
        description="Your payouts, newest first, cursor-paginated.",
        parameters=[PayoutListQuerySerializer],
        responses={
            200: PayoutSerializer(many=True),
            (400, PROBLEM_CONTENT_TYPE): VALIDATION,
            **COMMON_ERRORS,
        },
    ),
)
class PayoutRequestViewSet(viewsets.ViewSet):
    lookup_field = "id"
    pagination_class = PayoutCursorPagination
    content_negotiation_class = JSONOnlyContentNegotiation

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Django reads a body by its Content-Length only; a chunked body would look empty and
        # fail validation with misleading "required" errors.
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not request.META.get("CONTENT_LENGTH"):
            raise LengthRequired()

    @extend_schema(
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
            (400, PROBLEM_CONTENT_TYPE): VALIDATION,
            **COMMON_ERRORS,
            (409, PROBLEM_CONTENT_TYPE): _problem(
                "The client_reference exists with a different amount, currency, destination "
                "or metadata.",
                _example(
                    "Conflict",
                    "client_reference_conflict",
                    409,
                    "A payout with this client_reference already exists with different data.",
                    payout_id="6f1c2a4e-8d53-4b7e-9a51-2f0e6c3d9b10",
                    conflicting_fields=["amount"],
                ),
            ),
            (411, PROBLEM_CONTENT_TYPE): _problem(
                "A chunked body: send it with a Content-Length header.",
                _example(
                    "Length required",
                    "length_required",
                    411,
                    "Send the body with a Content-Length header (chunked bodies are not read).",
                ),
            ),
            (413, PROBLEM_CONTENT_TYPE): _problem("The body is larger than 64 KiB."),
            (415, PROBLEM_CONTENT_TYPE): _problem(
                "The body is not JSON.",
                _example(
                    "Unsupported media type",
                    "unsupported_media_type",
                    415,
                    'Unsupported media type "text/plain" in request.',
                ),
            ),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = PayoutCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = payout_create(client=request_client(request), **serializer.validated_data)
        body = PayoutSerializer(result.payout).data
        if not result.created:
            return Response(body, status=status.HTTP_200_OK)
        # The canonical URL ends with a slash (the routes accept both forms).
        detail = reverse("payout-request-detail", kwargs={"id": result.payout.pk})
        location = request.build_absolute_uri(detail.rstrip("/") + "/")
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    def list(self, request: Request) -> Response:
        query = PayoutListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        payouts = payout_list(
            client=request_client(request),
            statuses=filters.get("status", ()),
            currency=filters.get("currency"),
            client_reference=filters.get("client_reference"),
            created_after=filters.get("created_after"),
            created_before=filters.get("created_before"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(payouts, request, view=self)
        return paginator.get_paginated_response(PayoutSerializer(page, many=True).data)

    @extend_schema(
        summary="Get a payout",
        operation_id="payout_requests_retrieve",
        parameters=[PAYOUT_ID],
        responses={
            200: PayoutSerializer,
            **COMMON_ERRORS,
            (404, PROBLEM_CONTENT_TYPE): NOT_FOUND,
            (405, PROBLEM_CONTENT_TYPE): METHOD_NOT_ALLOWED,
        },
    )
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(
            PayoutSerializer(payout_get(client=request_client(request), payout_id=id)).data
        )

    @extend_schema(
        summary="Cancel a NEW or PROCESSING payout",
        operation_id="payout_requests_cancel",
        parameters=[PAYOUT_ID],
        request=None,
        responses={
            200: OpenApiResponse(PayoutSerializer, description="Canceled."),
            (400, PROBLEM_CONTENT_TYPE): _problem(
                "The payout is already PAID, FAILED or CANCELED.",
                _example(
                    "Not cancelable",
                    "payout_not_cancelable",
                    400,
                    "The payout is PAID; only NEW or PROCESSING payouts can be canceled.",
                    payout_status="PAID",
                ),
            ),
            **COMMON_ERRORS,
            (404, PROBLEM_CONTENT_TYPE): NOT_FOUND,
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, id: str) -> Response:
        payout = payout_get(client=request_client(request), payout_id=id)
        payout = payout_cancel(payout=payout, actor=EventActor.API, reason="canceled via API")
        return Response(PayoutSerializer(payout).data)

    @extend_schema(
        summary="A payout's status history, oldest first",
        operation_id="payout_requests_events",
        parameters=[PAYOUT_ID],
        responses={
            200: inline_serializer(
                "PayoutEventList", {"results": PayoutEventSerializer(many=True)}
            ),
            **COMMON_ERRORS,
            (404, PROBLEM_CONTENT_TYPE): NOT_FOUND,
        },
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, id: str) -> Response:
        payout = payout_get(client=request_client(request), payout_id=id)
        return Response(
            {"results": PayoutEventSerializer(payout_events(payout=payout), many=True).data}
        )
