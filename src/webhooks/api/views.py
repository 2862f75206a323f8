"""HTTP interface of the notifications: validate input, call one service or selector, serialize."""

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from payouts.api.auth import request_client
from payouts.api.pagination import NewestFirstCursorPagination
from payouts.api.views import ApiViewSet

from .. import selectors, services
from ..models import WebhookEndpoint
from ..payloads import event_body
from .schema import EVENT_OPERATIONS, WEBHOOK_ENDPOINT_OPERATIONS
from .serializers import (
    EventListQuerySerializer,
    PageQuerySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookSecretSerializer,
)


def _validated(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _paginated(request: Request, rows: Any, render: Any) -> Response:
    """One page of `rows`, newest first, each row rendered by `render`."""
    paginator = NewestFirstCursorPagination()
    page = paginator.paginate_queryset(rows, request)
    return paginator.get_paginated_response(render(page))


@extend_schema_view(**WEBHOOK_ENDPOINT_OPERATIONS)
class WebhookEndpointViewSet(ApiViewSet):
    lookup_field = "id"
    pagination_class = NewestFirstCursorPagination  # also tells the schema which lists page

    def _endpoint(self, request: Request, id: str) -> WebhookEndpoint:
        return selectors.endpoint_get(client=request_client(request), endpoint_id=id)

    def create(self, request: Request) -> Response:
        fields = _validated(WebhookEndpointCreateSerializer, request.data)
        endpoint, secret = services.endpoint_create(
            request_client(request), fields["url"], fields.get("events")
        )
        # The only answers with the secret: this one and a rotation's.
        body = {**WebhookEndpointSerializer(endpoint).data, "secret": secret}
        detail = reverse("webhook-endpoint-detail", kwargs={"id": endpoint.pk})
        location = request.build_absolute_uri(detail.rstrip("/") + "/")
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    def list(self, request: Request) -> Response:
        _validated(PageQuerySerializer, request.query_params)
        endpoints = selectors.endpoint_list(client=request_client(request))
        return _paginated(
            request, endpoints, lambda page: WebhookEndpointSerializer(page, many=True).data
        )

    def retrieve(self, request: Request, id: str) -> Response:
        return Response(WebhookEndpointSerializer(self._endpoint(request, id)).data)

    def partial_update(self, request: Request, id: str) -> Response:
        endpoint = self._endpoint(request, id)
        fields = _validated(WebhookEndpointUpdateSerializer, request.data)
        endpoint = services.endpoint_update(endpoint, **fields)
        return Response(WebhookEndpointSerializer(endpoint).data)

    def destroy(self, request: Request, id: str) -> Response:
        services.endpoint_delete(self._endpoint(request, id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, id: str) -> Response:
        endpoint = self._endpoint(request, id)
        secret = services.endpoint_rotate_secret(endpoint)
        expires_at = endpoint.previous_secret_expires_at
        return Response(
            WebhookSecretSerializer(
                {"secret": secret, "previous_secret_expires_at": expires_at}
            ).data
        )

    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, id: str) -> Response:
        endpoint = self._endpoint(request, id)
        _validated(PageQuerySerializer, request.query_params)
        return _paginated(
            request,
            selectors.delivery_list(endpoint=endpoint),
            lambda page: WebhookDeliverySerializer(page, many=True).data,
        )

    @action(
        detail=True,
        methods=["post"],
        url_path=r"deliveries/(?P<delivery_id>[^/.]+)/retry",
        url_name="delivery-retry",
    )
    def retry_delivery(self, request: Request, id: str, delivery_id: str) -> Response:
        endpoint = self._endpoint(request, id)
        delivery = selectors.delivery_get(endpoint=endpoint, delivery_id=delivery_id)
        services.delivery_retry(delivery)
        delivery = selectors.delivery_get(endpoint=endpoint, delivery_id=delivery_id)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(**EVENT_OPERATIONS)
class EventViewSet(ApiViewSet):
    pagination_class = NewestFirstCursorPagination

    def list(self, request: Request) -> Response:
        filters = _validated(EventListQuerySerializer, request.query_params)
        events = selectors.event_list(
            client=request_client(request),
            event_type=filters.get("type"),
            payout_id=filters.get("payout_id"),
        )
        return _paginated(request, events, lambda page: [event_body(event) for event in page])
