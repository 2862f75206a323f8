"""HTTP interface: validate input, call one service or selector, serialize the result."""

from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import EventActor, PayoutRequest
from ..selectors import payout_events, payout_get, payout_list
from ..services import payout_cancel, payout_create
from . import export
from .auth import request_client
from .negotiation import JSONOnlyContentNegotiation
from .pagination import NewestFirstCursorPagination
from .parsers import LengthRequired
from .schema import PAYOUT_REQUEST_OPERATIONS
from .serializers import (
    PayoutCreateSerializer,
    PayoutEventSerializer,
    PayoutListQuerySerializer,
    PayoutSerializer,
)


# What every viewset of the API shares: JSON only, and no chunked bodies. (A comment, not a
# docstring: drf-spectacular would print a docstring as every operation's description.)
class ApiViewSet(viewsets.ViewSet):
    content_negotiation_class = JSONOnlyContentNegotiation

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Django reads a body by its Content-Length only; a chunked body would look empty and
        # fail validation with misleading "required" errors.
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not request.META.get("CONTENT_LENGTH"):
            raise LengthRequired()


@extend_schema_view(**PAYOUT_REQUEST_OPERATIONS)
class PayoutRequestViewSet(ApiViewSet):
    lookup_field = "id"
    pagination_class = NewestFirstCursorPagination

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
        payouts = _filtered_payouts(request, PayoutListQuerySerializer)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(payouts, request, view=self)
        return paginator.get_paginated_response(PayoutSerializer(page, many=True).data)

    def retrieve(self, request: Request, id: str) -> Response:
        return Response(
            PayoutSerializer(payout_get(client=request_client(request), payout_id=id)).data
        )

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, id: str) -> Response:
        payout = payout_get(client=request_client(request), payout_id=id)
        payout = payout_cancel(payout=payout, actor=EventActor.API, reason="canceled via API")
        return Response(PayoutSerializer(payout).data)

    @action(detail=True, methods=["get"])
    def events(self, request: Request, id: str) -> Response:
        payout = payout_get(client=request_client(request), payout_id=id)
        return Response(
            {"results": PayoutEventSerializer(payout_events(payout=payout), many=True).data}
        )

    @action(detail=False, methods=["get"], url_path=r"export\.csv")
    def export_csv(self, request: Request) -> StreamingHttpResponse:
        payouts = _filtered_payouts(request, export.PayoutExportQuerySerializer)
        # HEAD gets the headers without running the query.
        chunks = iter(()) if request.method == "HEAD" else export.payout_csv(payouts)
        response = StreamingHttpResponse(chunks, content_type=export.CONTENT_TYPE)
        filename = export.attachment_filename(timezone.now())
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


def _filtered_payouts(
    request: Request, query_serializer: type[PayoutListQuerySerializer]
) -> QuerySet[PayoutRequest]:
    """The caller's payouts matching the list filters of the query string (400 if bad)."""
    query = query_serializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    filters = query.validated_data
    return payout_list(
        client=request_client(request),
        statuses=filters.get("status", ()),
        currency=filters.get("currency"),
        client_reference=filters.get("client_reference"),
        created_after=filters.get("created_after"),
        created_before=filters.get("created_before"),
    )
